use crm_domain::{Event, Rules};
use crm_eventlog::RecordedEvent;
use crm_projection_runtime::{Projector, State};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// One entry of the operation log: an event, without its payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Operation {
    pub position: u64,
    pub stream: String,
    pub event_type: String,
    pub actor: String,
    pub source: String,
    pub correlation_id: Uuid,
    pub recorded_at_micros: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Value {
    Operation(Operation),
    Indexed,
}

pub(crate) fn position_key(position: u64) -> Vec<u8> {
    format!("p/{position:020}").into_bytes()
}

pub(crate) fn index_prefix(kind: char, value: &str) -> Vec<u8> {
    let mut key = format!("{kind}/{value}").into_bytes();
    key.push(0);
    key
}

pub(crate) fn index_key(kind: char, value: &str, position: u64) -> Vec<u8> {
    let mut key = index_prefix(kind, value);
    key.extend_from_slice(&position.to_be_bytes());
    key
}

pub(crate) fn merged_prefix(survivor: &Uuid) -> Vec<u8> {
    format!("m/{survivor}/").into_bytes()
}

pub(crate) fn opportunities_prefix(customer: &Uuid) -> Vec<u8> {
    format!("c/{customer}/").into_bytes()
}

/// The audit projector. It reads no rule.
#[derive(Debug, Clone, Copy, Default)]
pub struct AuditProjector;

impl Projector for AuditProjector {
    type Value = Value;

    fn name(&self) -> &'static str {
        "audit"
    }

    fn version(&self) -> u32 {
        1
    }

    fn fingerprint(&self, _rules: &Rules) -> u64 {
        0
    }

    fn apply(
        &self,
        state: &mut State<'_, Value>,
        _rules: &Rules,
        recorded: &RecordedEvent,
        event: Option<&Event>,
    ) -> Result<(), String> {
        let p = recorded.position;
        let actor = if recorded.metadata.actor.is_empty() { "-" } else { recorded.metadata.actor.as_str() };
        state.put(index_key('a', actor, p), Value::Indexed);
        state.put(index_key('t', &recorded.event_type, p), Value::Indexed);
        state.put(index_key('s', &recorded.stream, p), Value::Indexed);
        state.put(
            position_key(p),
            Value::Operation(Operation {
                position: p,
                stream: recorded.stream.clone(),
                event_type: recorded.event_type.clone(),
                actor: actor.to_owned(),
                source: recorded.metadata.source.clone(),
                correlation_id: recorded.metadata.correlation_id,
                recorded_at_micros: recorded.recorded_at_micros,
            }),
        );
        match event {
            Some(Event::CustomersMerged(e)) => {
                let mut key = merged_prefix(&e.survivor_id.0);
                key.extend_from_slice(e.absorbed_id.0.to_string().as_bytes());
                state.put(key, Value::Indexed);
            }
            Some(Event::OpportunityOpened(e)) => {
                let mut key = opportunities_prefix(&e.customer_id.0);
                key.extend_from_slice(e.opportunity_id.0.to_string().as_bytes());
                state.put(key, Value::Indexed);
            }
            _ => {}
        }
        Ok(())
    }
}
