//! Intake events: configuration, submissions, alerts, sync outcomes and the breaker, stored
//! in the log like every other change (so configuration is audited). Payloads are JSON
//! (self-describing, schema version 1), one type name per variant.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::health::AlertKind;
use crate::mapping::{FieldObservation, LeadField};
use crate::validate::{SourceConfig, ValidationError};

/// Form mappings and source configurations.
pub const INTAKE_CONFIG_STREAM: &str = "intake-config";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FormMappingSet {
    pub form_id: String,
    pub fields: BTreeMap<String, LeadField>,
}

/// A raw submission, recorded before the lead is captured: even a submission the lead
/// rules refuse is kept here (with `lead_id = None` and the refusal).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FormSubmitted {
    pub form_id: String,
    pub source: String,
    pub values: BTreeMap<String, String>,
    pub observations: Vec<FieldObservation>,
    pub lead_id: Option<String>,
    pub refused: Option<String>,
    pub at_micros: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FieldHealthAlerted {
    pub form_id: String,
    pub field: String,
    pub kind: AlertKind,
    pub rate: f64,
    pub samples: usize,
    pub at_micros: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceConfigured {
    pub config: SourceConfig,
}

/// One record taken into a customer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordApplied {
    pub external_id: String,
    pub modified_at_micros: i64,
    pub customer_id: String,
    /// Customer fields this record wrote (set or cleared).
    pub fields: Vec<String>,
    /// Fields whose stored value was newer or whose NULL was ignored.
    pub kept: Vec<String>,
}

/// A record that failed validation, held for an operator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuarantinedRecord {
    /// `<source>/<external id>/<modified-at micros>`.
    pub id: String,
    pub source: String,
    pub external_id: String,
    pub modified_at_micros: i64,
    pub fields: Vec<(String, Option<String>)>,
    pub errors: Vec<ValidationError>,
    pub at_micros: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SyncBatchApplied {
    pub source: String,
    pub batch_id: String,
    pub applied: Vec<RecordApplied>,
    pub quarantined: Vec<QuarantinedRecord>,
    /// Records skipped as already applied (same or older modified-at).
    pub duplicates: usize,
    pub latency_micros: u64,
    pub at_micros: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SyncBatchFailed {
    pub source: String,
    pub batch_id: String,
    pub reason: String,
    pub latency_micros: u64,
    pub at_micros: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourcePaused {
    pub source: String,
    pub reason: String,
    pub at_micros: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceResumed {
    pub source: String,
    pub by: String,
    pub at_micros: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuarantineReleased {
    pub id: String,
    pub by: String,
    /// The record as released (possibly corrected), and what it did.
    pub applied: RecordApplied,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuarantineRejected {
    pub id: String,
    pub by: String,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum IntakeEvent {
    FormMappingSet(FormMappingSet),
    FormSubmitted(FormSubmitted),
    FieldHealthAlerted(FieldHealthAlerted),
    SourceConfigured(SourceConfigured),
    SyncBatchApplied(SyncBatchApplied),
    SyncBatchFailed(SyncBatchFailed),
    SourcePaused(SourcePaused),
    SourceResumed(SourceResumed),
    QuarantineReleased(QuarantineReleased),
    QuarantineRejected(QuarantineRejected),
}

impl IntakeEvent {
    pub const SCHEMA_VERSION: u16 = 1;

    /// Every type name, for readers that filter by type.
    pub const TYPES: [&'static str; 10] = [
        "FormMappingSet",
        "FormSubmitted",
        "FieldHealthAlerted",
        "SourceConfigured",
        "SyncBatchApplied",
        "SyncBatchFailed",
        "SourcePaused",
        "SourceResumed",
        "QuarantineReleased",
        "QuarantineRejected",
    ];

    pub fn event_type(&self) -> &'static str {
        match self {
            IntakeEvent::FormMappingSet(_) => "FormMappingSet",
            IntakeEvent::FormSubmitted(_) => "FormSubmitted",
            IntakeEvent::FieldHealthAlerted(_) => "FieldHealthAlerted",
            IntakeEvent::SourceConfigured(_) => "SourceConfigured",
            IntakeEvent::SyncBatchApplied(_) => "SyncBatchApplied",
            IntakeEvent::SyncBatchFailed(_) => "SyncBatchFailed",
            IntakeEvent::SourcePaused(_) => "SourcePaused",
            IntakeEvent::SourceResumed(_) => "SourceResumed",
            IntakeEvent::QuarantineReleased(_) => "QuarantineReleased",
            IntakeEvent::QuarantineRejected(_) => "QuarantineRejected",
        }
    }

    /// The payload: JSON of the variant's struct.
    pub fn encode(&self) -> Vec<u8> {
        let r = match self {
            IntakeEvent::FormMappingSet(e) => serde_json::to_vec(e),
            IntakeEvent::FormSubmitted(e) => serde_json::to_vec(e),
            IntakeEvent::FieldHealthAlerted(e) => serde_json::to_vec(e),
            IntakeEvent::SourceConfigured(e) => serde_json::to_vec(e),
            IntakeEvent::SyncBatchApplied(e) => serde_json::to_vec(e),
            IntakeEvent::SyncBatchFailed(e) => serde_json::to_vec(e),
            IntakeEvent::SourcePaused(e) => serde_json::to_vec(e),
            IntakeEvent::SourceResumed(e) => serde_json::to_vec(e),
            IntakeEvent::QuarantineReleased(e) => serde_json::to_vec(e),
            IntakeEvent::QuarantineRejected(e) => serde_json::to_vec(e),
        };
        r.expect("intake events serialise")
    }

    /// Decodes a payload by type name; `None` for a type that is not an intake event.
    pub fn decode(event_type: &str, payload: &[u8]) -> Option<Result<IntakeEvent, serde_json::Error>> {
        fn d<T: serde::de::DeserializeOwned>(
            p: &[u8],
            f: fn(T) -> IntakeEvent,
        ) -> Result<IntakeEvent, serde_json::Error> {
            serde_json::from_slice(p).map(f)
        }
        Some(match event_type {
            "FormMappingSet" => d(payload, IntakeEvent::FormMappingSet),
            "FormSubmitted" => d(payload, IntakeEvent::FormSubmitted),
            "FieldHealthAlerted" => d(payload, IntakeEvent::FieldHealthAlerted),
            "SourceConfigured" => d(payload, IntakeEvent::SourceConfigured),
            "SyncBatchApplied" => d(payload, IntakeEvent::SyncBatchApplied),
            "SyncBatchFailed" => d(payload, IntakeEvent::SyncBatchFailed),
            "SourcePaused" => d(payload, IntakeEvent::SourcePaused),
            "SourceResumed" => d(payload, IntakeEvent::SourceResumed),
            "QuarantineReleased" => d(payload, IntakeEvent::QuarantineReleased),
            "QuarantineRejected" => d(payload, IntakeEvent::QuarantineRejected),
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_by_type_name() {
        let e = IntakeEvent::SourcePaused(SourcePaused { source: "erp".into(), reason: "r".into(), at_micros: 5 });
        let back = IntakeEvent::decode(e.event_type(), &e.encode()).unwrap().unwrap();
        assert_eq!(back, e);
        assert!(IntakeEvent::decode("LeadCaptured", b"{}").is_none());
        assert!(IntakeEvent::TYPES.contains(&e.event_type()));
    }
}
