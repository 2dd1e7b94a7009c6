//! Errors of the projection runtime.

/// Everything that can go wrong while projecting or reading a read model.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The event log failed to deliver events.
    #[error("event log: {0}")]
    Log(String),

    /// The projection store (sled) failed.
    #[error("projection storage failure: {0}")]
    Storage(String),

    /// An event could not be decoded or a projector refused it; the projector stops here.
    #[error("projector `{projector}` failed at position {position}: {detail}")]
    Apply { projector: String, position: u64, detail: String },

    /// A stored read-model value could not be decoded.
    #[error("corrupt read-model value under key {key}: {detail}")]
    Corrupt { key: String, detail: String },

    /// No projection of that name is registered.
    #[error("no projection named `{0}`")]
    UnknownProjection(String),

    /// The runner of the projection has stopped (server shutting down).
    #[error("projection `{0}` is not running")]
    NotRunning(String),

    /// The serving build was made by an older version of the read model, whose stored
    /// layout this version cannot answer from; the rebuild started at the upgrade replaces
    /// it (see `ListProjections`).
    #[error("read model `{projection}` is being rebuilt after an upgrade: {detail}; ask again once it is live")]
    Upgrading { projection: String, detail: String },

    /// The read model did not reach the requested position in time.
    #[error("read model `{projection}` reached position {reached}, not {wanted}, before the deadline")]
    NotReached { projection: String, wanted: u64, reached: u64 },
}

impl From<sled::Error> for Error {
    fn from(e: sled::Error) -> Self {
        Error::Storage(e.to_string())
    }
}

impl From<crm_eventlog::Error> for Error {
    fn from(e: crm_eventlog::Error) -> Self {
        Error::Log(e.to_string())
    }
}

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
