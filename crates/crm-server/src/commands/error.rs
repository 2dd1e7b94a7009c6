//! Errors of the command path and their one mapping to gRPC statuses.
//!
//! | error                                        | gRPC code          | metadata                       |
//! |----------------------------------------------|--------------------|--------------------------------|
//! | domain InvalidArgument / malformed request   | InvalidArgument    | `crm-field`, `crm-rule`        |
//! | domain FailedPrecondition                    | FailedPrecondition | `crm-rule`, `crm-missing`      |
//! | domain NotFound                              | NotFound           | `crm-kind`, `crm-id`           |
//! | domain AlreadyExists                         | AlreadyExists      | `crm-kind`, `crm-id`           |
//! | expected version mismatch                    | Aborted            | `crm-current-version`          |
//! | too many items in one command                | ResourceExhausted  | `crm-field`                    |
//! | stored event that cannot be decoded          | DataLoss           |                                |
//! | duplicates read model behind the log (10 s)  | Unavailable        |                                |
//! | event log errors                             | see `crate::status`|                                |
//!
//! Metadata values are only set when ASCII (gRPC headers); the message always carries them.

use crm_domain::{DecodeError, DomainError};
use tonic::metadata::MetadataValue;
use tonic::{Code, Status};

#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error(transparent)]
    Domain(#[from] DomainError),
    /// The request cannot be turned into a command (bad id, unknown enum value, ...).
    #[error("invalid argument `{field}`: {message}")]
    Request { field: String, message: String },
    /// The caller's `expected_version` does not match the primary stream.
    #[error("wrong expected version for stream `{stream}`: expected {expected}, current {}", display(*.current))]
    Conflict { stream: String, expected: u64, current: Option<u64> },
    /// A collection in the request has more items than one command may carry.
    #[error("`{field}` has {actual} items; one command may carry at most {limit}")]
    TooMany { field: String, limit: usize, actual: usize },
    #[error(transparent)]
    Log(#[from] crm_eventlog::Error),
    #[error("cannot decode an event of stream `{stream}`: {source}")]
    Decode { stream: String, source: DecodeError },
    /// A dependency of the command (the duplicates read model) cannot answer now.
    #[error("{what} unavailable: {reason}")]
    Unavailable { what: String, reason: String },
}

fn display(v: Option<u64>) -> String {
    v.map_or_else(|| "no stream".to_owned(), |v| v.to_string())
}

impl CommandError {
    pub fn request(field: impl Into<String>, message: impl Into<String>) -> Self {
        CommandError::Request { field: field.into(), message: message.into() }
    }
}

fn put(status: &mut Status, key: &'static str, value: &str) {
    if value.is_ascii() {
        if let Ok(v) = MetadataValue::try_from(value) {
            status.metadata_mut().insert(key, v);
        }
    }
}

impl From<CommandError> for Status {
    fn from(e: CommandError) -> Status {
        let message = e.to_string();
        match e {
            CommandError::Domain(DomainError::InvalidArgument { field, rule, .. }) => {
                let mut s = Status::new(Code::InvalidArgument, message);
                put(&mut s, "crm-field", &field);
                put(&mut s, "crm-rule", &rule);
                s
            }
            CommandError::Request { field, .. } => {
                let mut s = Status::new(Code::InvalidArgument, message);
                put(&mut s, "crm-field", &field);
                s
            }
            CommandError::Domain(DomainError::FailedPrecondition { rule, missing, .. }) => {
                let mut s = Status::new(Code::FailedPrecondition, message);
                put(&mut s, "crm-rule", &rule);
                put(&mut s, "crm-missing", &missing.join(","));
                s
            }
            CommandError::Domain(DomainError::NotFound { kind, id }) => {
                let mut s = Status::new(Code::NotFound, message);
                put(&mut s, "crm-kind", &kind);
                put(&mut s, "crm-id", &id);
                s
            }
            CommandError::Domain(DomainError::AlreadyExists { kind, id }) => {
                let mut s = Status::new(Code::AlreadyExists, message);
                put(&mut s, "crm-kind", &kind);
                put(&mut s, "crm-id", &id);
                s
            }
            CommandError::Conflict { current, .. } => {
                let mut s = Status::new(Code::Aborted, message);
                if let Some(v) = current {
                    put(&mut s, "crm-current-version", &v.to_string());
                }
                s
            }
            CommandError::TooMany { field, .. } => {
                let mut s = Status::new(Code::ResourceExhausted, message);
                put(&mut s, "crm-field", &field);
                s
            }
            CommandError::Log(e) => crate::status::from_eventlog(e),
            CommandError::Decode { .. } => Status::new(Code::DataLoss, message),
            CommandError::Unavailable { .. } => Status::new(Code::Unavailable, message),
        }
    }
}
