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

/// An InvalidArgument status naming `field` and the `rule` it broke.
pub fn invalid(field: &str, rule: impl std::fmt::Display) -> Status {
    Status::invalid_argument(format!("invalid argument `{field}`: {rule}"))
}
