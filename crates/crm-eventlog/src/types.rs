use std::fmt;

use uuid::Uuid;

/// Optimistic concurrency expectation for an append, as in EventStoreDB.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExpectedVersion {
    /// Append whatever the stream's state.
    Any,
    /// The stream must not exist yet.
    NoStream,
    /// The stream must exist (at any version).
    Exists,
    /// The stream's last event must have exactly this version (versions start at 0).
    Exact(u64),
}

impl fmt::Display for ExpectedVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExpectedVersion::Any => f.write_str("any"),
            ExpectedVersion::NoStream => f.write_str("no stream"),
            ExpectedVersion::Exists => f.write_str("stream exists"),
            ExpectedVersion::Exact(v) => write!(f, "{v}"),
        }
    }
}

impl ExpectedVersion {
    /// Whether a stream whose last version is `current` satisfies this expectation.
    pub fn accepts(self, current: Option<u64>) -> bool {
        match self {
            ExpectedVersion::Any => true,
            ExpectedVersion::NoStream => current.is_none(),
            ExpectedVersion::Exists => current.is_some(),
            ExpectedVersion::Exact(v) => current == Some(v),
        }
    }
}

/// How much durability an append waits for before it is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// Acknowledged after sled's flush and an `fdatasync` of sled's data file: survives a
    /// process crash and a power loss.
    #[default]
    Durable,
    /// Acknowledged after sled's flush only (`sync_file_range`): survives a process crash, may
    /// be lost on power loss. Meant for explicit bulk imports that can be re-run.
    Buffered,
}

/// Who caused an event, and why: carried with every event, outside the payload.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Metadata {
    /// The principal that issued the command (user id, or `system:<component>`).
    pub actor: String,
    /// Groups every event caused by one user intent.
    pub correlation_id: Uuid,
    /// The event or command that directly caused this one.
    pub causation_id: Option<Uuid>,
    /// The source channel (web form, phone, exhibition scan, import, api, ...).
    pub source: String,
}

/// An event to append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    /// Unique id (UUID v7); re-sending the same id makes the append idempotent.
    pub id: Uuid,
    /// Stable type name, e.g. `LeadCaptured`.
    pub event_type: String,
    /// Version of the payload's schema, for upcasting on read.
    pub schema_version: u16,
    pub metadata: Metadata,
    /// The encoded domain event (bincode of the domain type); opaque to the log.
    pub payload: Vec<u8>,
}

/// One appended to a stream, as part of an atomic multi-stream append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamAppend {
    pub stream: String,
    pub expected: ExpectedVersion,
    pub events: Vec<NewEvent>,
}

/// An event as recorded in the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedEvent {
    /// Global, gapless, commit-ordered position; the first event is at position 1.
    pub position: u64,
    pub stream: String,
    /// Version of the event inside its stream; the first event is version 0.
    pub version: u64,
    pub id: Uuid,
    pub event_type: String,
    pub schema_version: u16,
    /// Microseconds since the Unix epoch at which the append was requested.
    pub recorded_at_micros: i64,
    pub metadata: Metadata,
    pub payload: Vec<u8>,
}

/// The outcome of appending to one stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendResult {
    /// Position of the first appended event.
    pub first_position: u64,
    /// Position of the last appended event.
    pub last_position: u64,
    /// Stream version of the last appended event: the `Exact` to expect next.
    pub last_version: u64,
    /// True when every event id had been appended before and nothing was written.
    pub deduplicated: bool,
}

/// Direction of a stream read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Direction {
    #[default]
    Forwards,
    Backwards,
}
