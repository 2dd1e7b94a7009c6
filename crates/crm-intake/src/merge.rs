//! Per-field conflict rules for synced records.
//!
//! - A value replaces the stored one only when the record was modified strictly later than
//!   the stored value was last changed (by our own edit or by any source).
//! - **Ties go to the stored value**: a record modified at exactly the time of the stored
//!   value's last change does not replace it. A human edit in the CRM is never overwritten by
//!   a sync record that is not provably newer, and a replayed record is a no-op.
//! - NULL or empty never clears a stored value unless the field is configured clearable; a
//!   clearable field is cleared only under the same "strictly later" rule.

use serde::{Deserialize, Serialize};

/// Who last changed a field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Origin {
    /// An edit made in the CRM itself (a command), by this actor.
    Crm { actor: String },
    /// A synced record.
    Sync { source: String, external_id: String },
}

/// When and by whom a field was last changed: its provenance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldMeta {
    /// For CRM edits, the time the event was recorded; for synced values, the record's
    /// modified-at.
    pub at_micros: i64,
    pub origin: Origin,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MergeDecision {
    /// Write this value.
    Set(String),
    /// Clear the field (clearable fields only).
    Clear,
    /// The stored value equals the incoming one, or both are empty.
    Unchanged,
    /// NULL/empty for a non-clearable field: ignored.
    KeepNullIgnored,
    /// The stored value was changed at or after the record's modified-at: it stays.
    KeepStoredNewer,
}

/// Decides one field.
pub fn merge_field(
    stored: Option<&str>,
    meta: Option<&FieldMeta>,
    incoming: Option<&str>,
    modified_at_micros: i64,
    clearable: bool,
) -> MergeDecision {
    let incoming = incoming.map(str::trim).filter(|v| !v.is_empty());
    let stored_newer = meta.is_some_and(|m| m.at_micros >= modified_at_micros);
    match (stored, incoming) {
        (None, None) => MergeDecision::Unchanged,
        (Some(_), None) if !clearable => MergeDecision::KeepNullIgnored,
        (Some(_), None) if stored_newer => MergeDecision::KeepStoredNewer,
        (Some(_), None) => MergeDecision::Clear,
        (Some(s), Some(v)) if s == v => MergeDecision::Unchanged,
        (_, Some(_)) if stored_newer => MergeDecision::KeepStoredNewer,
        (_, Some(v)) => MergeDecision::Set(v.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ours(at: i64) -> FieldMeta {
        FieldMeta { at_micros: at, origin: Origin::Crm { actor: "u".into() } }
    }

    #[test]
    fn null_and_empty_never_clear_a_non_clearable_field() {
        for incoming in [None, Some(""), Some("   ")] {
            assert_eq!(merge_field(Some("x"), Some(&ours(1)), incoming, 10, false), MergeDecision::KeepNullIgnored);
        }
    }

    #[test]
    fn clearable_fields_clear_only_when_newer() {
        assert_eq!(merge_field(Some("x"), Some(&ours(1)), None, 10, true), MergeDecision::Clear);
        assert_eq!(merge_field(Some("x"), Some(&ours(10)), None, 10, true), MergeDecision::KeepStoredNewer);
    }

    #[test]
    fn later_modification_wins_and_ties_keep_the_stored_value() {
        assert_eq!(merge_field(Some("a"), Some(&ours(5)), Some("b"), 6, false), MergeDecision::Set("b".into()));
        assert_eq!(merge_field(Some("a"), Some(&ours(5)), Some("b"), 5, false), MergeDecision::KeepStoredNewer);
        assert_eq!(merge_field(Some("a"), Some(&ours(5)), Some("b"), 4, false), MergeDecision::KeepStoredNewer);
        assert_eq!(merge_field(None, None, Some("b"), 0, false), MergeDecision::Set("b".into()));
        assert_eq!(merge_field(Some("b"), Some(&ours(9)), Some("b"), 1, false), MergeDecision::Unchanged);
    }
}
