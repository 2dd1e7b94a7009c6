//! Intake rules, pure: how a web form's fields map onto a lead, how healthy each form field
//! is, how an external system's records are validated and merged into customers, and when a
//! source's circuit breaker opens.
//!
//! Nothing here does I/O, keeps a clock or knows the wire: time comes in as microseconds since
//! the Unix epoch, and `crm-server` stores every decision as an event.
//!
//! Invariants this crate keeps:
//! - a form submission is never refused: unknown fields become custom attributes and invalid
//!   values are kept raw and flagged ([`map_submission`]);
//! - a NULL or empty incoming value never clears a stored value unless the field is
//!   configured clearable ([`merge_field`]);
//! - an incoming value replaces a stored one only when its modification time is strictly
//!   later than the stored value's; on a tie the stored value stays.
//!
//! ```
//! use crm_intake::{merge_field, FieldMeta, MergeDecision, Origin};
//!
//! let ours = FieldMeta { at_micros: 2_000, origin: Origin::Crm { actor: "li.lei".into() } };
//! // The ERP sends NULL for a field we have: nothing is cleared.
//! let d = merge_field(Some("华东"), Some(&ours), None, 3_000, false);
//! assert_eq!(d, MergeDecision::KeepNullIgnored);
//! // The ERP's value was modified after our edit: it wins.
//! let d = merge_field(Some("华东"), Some(&ours), Some("华南"), 3_000, false);
//! assert_eq!(d, MergeDecision::Set("华南".into()));
//! // A tie: ours stays.
//! let d = merge_field(Some("华东"), Some(&ours), Some("华南"), 2_000, false);
//! assert_eq!(d, MergeDecision::KeepStoredNewer);
//! ```

mod breaker;
mod events;
mod health;
mod mapping;
mod merge;
mod validate;

pub use breaker::{BatchOutcome, Breaker, BreakerConfig, Trip};
pub use events::{
    FieldHealthAlerted, FormMappingSet, FormSubmitted, IntakeEvent, QuarantineRejected, QuarantineReleased,
    QuarantinedRecord, RecordApplied, SourceConfigured, SourcePaused, SourceResumed, SyncBatchApplied, SyncBatchFailed,
    INTAKE_CONFIG_STREAM,
};
pub use health::{AlertKind, FieldHealth, FieldHealthReport, FormHealth, HealthAlert, HealthConfig};
pub use mapping::{map_submission, FieldObservation, FormMapping, LeadField, MappedForm, ObservationOutcome};
pub use merge::{merge_field, FieldMeta, MergeDecision, Origin};
pub use validate::{default_target, FieldRule, FieldType, SourceConfig, Validated, ValidationError, Validator};

/// Microseconds in an hour.
pub const HOUR_MICROS: i64 = 3_600_000_000;
