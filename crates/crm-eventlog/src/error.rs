use uuid::Uuid;

use crate::ExpectedVersion;

/// Everything that can go wrong in the event log. Expected outcomes (a version conflict, an
/// idempotency mismatch) are their own variants so callers can act on them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The request is malformed; `field` names the offending input.
    #[error("invalid argument `{field}`: {rule}")]
    InvalidArgument { field: String, rule: String },

    /// The request exceeds a size limit; `field` names the offending input.
    #[error("`{field}` is too large: {actual} exceeds the limit of {limit}")]
    TooLarge { field: String, limit: usize, actual: usize },

    /// Optimistic concurrency: the stream is not at the expected version. Nothing was written.
    #[error("wrong expected version for stream `{stream}`: expected {expected}, current {}", display_version(*.current))]
    WrongExpectedVersion { stream: String, expected: ExpectedVersion, current: Option<u64> },

    /// Some event ids of the request were already appended and some were not, or the known ids
    /// belong to a different append. Nothing was written.
    #[error("idempotency conflict on event {event_id}: {detail}")]
    IdempotencyConflict { event_id: Uuid, detail: String },

    /// A stored record failed its checksum or could not be decoded.
    #[error("corruption at position {position}: {detail}")]
    Corruption { position: u64, detail: String },

    /// The storage engine or the file system failed.
    #[error("storage failure: {0}")]
    Storage(String),

    /// The store is closed or stopped accepting writes after a failed durability barrier.
    #[error("event store unavailable: {0}")]
    Unavailable(String),
}

fn display_version(v: Option<u64>) -> String {
    match v {
        Some(v) => v.to_string(),
        None => "no stream".to_owned(),
    }
}

impl From<sled::Error> for Error {
    fn from(e: sled::Error) -> Self {
        Error::Storage(e.to_string())
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::Storage(e.to_string())
    }
}

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
