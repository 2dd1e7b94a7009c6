//! The one place where errors become gRPC statuses.
//!
//! | error                                   | gRPC code          |
//! |-----------------------------------------|--------------------|
//! | invalid argument (names the field)      | InvalidArgument    |
//! | too large (names the field and limit)   | ResourceExhausted  |
//! | wrong expected version (current version)| Aborted            |
//! | idempotency conflict                    | AlreadyExists      |
//! | corruption at a position                | DataLoss           |
//! | storage failure                         | Internal           |
//! | store closed or barrier failed          | Unavailable        |

use tonic::{Code, Status};

/// Converts an event-log error into a status whose message names the field, rule or position.
pub fn from_eventlog(e: crm_eventlog::Error) -> Status {
    use crm_eventlog::Error as E;
    let code = match &e {
        E::InvalidArgument { .. } => Code::InvalidArgument,
        E::TooLarge { .. } => Code::ResourceExhausted,
        E::WrongExpectedVersion { .. } => Code::Aborted,
        E::IdempotencyConflict { .. } => Code::AlreadyExists,
        E::Corruption { .. } => Code::DataLoss,
        E::Storage(_) => Code::Internal,
        E::Unavailable(_) => Code::Unavailable,
    };
    let mut status = Status::new(code, e.to_string());
    if let E::WrongExpectedVersion { current, .. } = &e {
        let current = current.map_or_else(|| "none".to_owned(), |v| v.to_string());
        if let Ok(v) = current.parse() {
            status.metadata_mut().insert("crm-current-version", v);
        }
    }
    status
}

/// Converts a read-model error: a position not reached in time is DeadlineExceeded (naming
/// the position reached), an unknown projection NotFound, a stopped runner or a serving build
/// of an older layout (during the rebuild after an upgrade) Unavailable, a
/// failed projector FailedPrecondition (naming the failing position), storage Internal and a
/// corrupt stored value DataLoss.
pub fn from_projection(e: crm_projection_runtime::Error) -> Status {
    use crm_projection_runtime::Error as E;
    let code = match &e {
        E::NotReached { .. } => Code::DeadlineExceeded,
        E::UnknownProjection(_) => Code::NotFound,
        E::NotRunning(_) | E::Log(_) | E::Upgrading { .. } => Code::Unavailable,
        E::Apply { .. } => Code::FailedPrecondition,
        E::Storage(_) => Code::Internal,
        E::Corrupt { .. } => Code::DataLoss,
    };
    Status::new(code, e.to_string())
}

/// An InvalidArgument status naming `field` and the `rule` it broke.
pub fn invalid(field: &str, rule: impl std::fmt::Display) -> Status {
    Status::invalid_argument(format!("invalid argument `{field}`: {rule}"))
}
