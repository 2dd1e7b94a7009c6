//! The crate's errors: [`DomainError`] for refused commands, [`DecodeError`] for payloads
//! that cannot be read back.

/// Why a command was refused. Every variant is machine-readable: `field` names the argument,
/// `rule` names the business rule (a stable dotted id such as `stage.evidence_required`),
/// `missing` lists what the caller has to supply. A refused command emits no events.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    /// The command itself is malformed, whatever the state.
    #[error("invalid argument `{field}` ({rule}): {message}")]
    InvalidArgument { field: String, rule: String, message: String },
    /// The command is well-formed but the current state or the rules do not allow it.
    #[error("failed precondition {rule}: {detail}{}", missing_suffix(missing))]
    FailedPrecondition { rule: String, missing: Vec<String>, detail: String },
    /// A referenced aggregate does not exist.
    #[error("{kind} {id} not found")]
    NotFound { kind: String, id: String },
    /// The aggregate to create exists already.
    #[error("{kind} {id} already exists")]
    AlreadyExists { kind: String, id: String },
}

fn missing_suffix(missing: &[String]) -> String {
    if missing.is_empty() {
        String::new()
    } else {
        format!(" (missing: {})", missing.join(", "))
    }
}

impl DomainError {
    pub fn invalid(field: impl Into<String>, rule: impl Into<String>, message: impl Into<String>) -> Self {
        DomainError::InvalidArgument { field: field.into(), rule: rule.into(), message: message.into() }
    }

    pub fn precondition(rule: impl Into<String>, detail: impl Into<String>) -> Self {
        DomainError::FailedPrecondition { rule: rule.into(), missing: Vec::new(), detail: detail.into() }
    }

    pub fn missing(rule: impl Into<String>, missing: Vec<String>, detail: impl Into<String>) -> Self {
        DomainError::FailedPrecondition { rule: rule.into(), missing, detail: detail.into() }
    }

    pub fn not_found(kind: impl Into<String>, id: impl ToString) -> Self {
        DomainError::NotFound { kind: kind.into(), id: id.to_string() }
    }

    pub fn already_exists(kind: impl Into<String>, id: impl ToString) -> Self {
        DomainError::AlreadyExists { kind: kind.into(), id: id.to_string() }
    }
}

/// A stored payload that cannot be turned back into an [`crate::Event`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("unknown event type `{0}`")]
    UnknownEventType(String),
    #[error("event type `{event_type}` has no schema version {version}")]
    UnsupportedVersion { event_type: String, version: u16 },
    #[error("cannot decode `{event_type}` v{version}: {message}")]
    Payload { event_type: String, version: u16, message: String },
}
