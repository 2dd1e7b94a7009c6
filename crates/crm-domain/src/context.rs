use chrono::{DateTime, Utc};
use uuid::Uuid;

/// Who sends a command, why, and when. The event log stores these as event metadata; the
/// payloads do not repeat them. Time is an input: the domain never reads a clock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandContext {
    /// The principal, usually a user id or a system name such as `"import:erp"`.
    pub actor: String,
    pub correlation_id: Uuid,
    pub causation_id: Option<Uuid>,
    /// The channel that delivered the command: `"grpc"`, `"web-form"`, `"badge-scanner"`, ...
    pub source: String,
    pub now: DateTime<Utc>,
}
