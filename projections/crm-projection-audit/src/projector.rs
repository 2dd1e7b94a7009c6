use crm_domain::{Event, Rules};
use crm_eventlog::RecordedEvent;
use crm_projection_runtime::{Cached, Projector, State};
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
    /// The operations of one block of [`OPERATIONS_PER_BLOCK`] positions, in position order.
    Operations(Vec<Operation>),
    /// Positions of one index value (actor or operation type), ascending: a closed
    /// block of [`POSTINGS_PER_BLOCK`] or the open block the next position goes to.
    Postings(Vec<u64>),
    /// A link (merged customer, opportunity); the key says it all.
    Indexed,
}

/// Operations per stored block: block `b` holds the positions `64 b ..= 64 b + 63`, so a
/// rebuild writes one key per 64 events instead of one per event.
pub(crate) const OPERATIONS_PER_BLOCK: u64 = 64;

/// Positions per closed postings block.
pub(crate) const POSTINGS_PER_BLOCK: usize = 256;

/// The suffix of the open postings block of an index value (after every closed block's
/// first position, so a prefix scan meets the blocks in position order).
pub(crate) const OPEN_BLOCK: u64 = u64::MAX;

pub(crate) fn block_of(position: u64) -> u64 {
    position / OPERATIONS_PER_BLOCK
}

pub(crate) fn block_key(block: u64) -> Vec<u8> {
    format!("p/{block:020}").into_bytes()
}

pub(crate) fn index_prefix(kind: char, value: &str) -> Vec<u8> {
    let mut key = format!("{kind}/{value}").into_bytes();
    key.push(0);
    key
}

/// A postings block: the first position of a closed block, or [`OPEN_BLOCK`].
pub(crate) fn index_key(kind: char, value: &str, first: u64) -> Vec<u8> {
    let mut key = index_prefix(kind, value);
    key.extend_from_slice(&first.to_be_bytes());
    key
}

/// Appends `position` to the open postings block of `kind`/`value`, closing it when full.
fn post(state: &mut State<'_, Value>, kind: char, value: &str, position: u64) -> Result<(), String> {
    let open = index_key(kind, value, OPEN_BLOCK);
    let full = match state.get_or_insert_with(&open, || Value::Postings(Vec::new()))? {
        Value::Postings(list) => {
            list.push(position);
            (list.len() >= POSTINGS_PER_BLOCK).then(|| std::mem::take(list))
        }
        other => return Err(format!("audit key {kind}/{value} holds {other:?}, not postings")),
    };
    if let Some(list) = full {
        state.put(index_key(kind, value, list[0]), Value::Postings(list));
        state.remove(open);
    }
    Ok(())
}

pub(crate) fn merged_prefix(survivor: &Uuid) -> Vec<u8> {
    format!("m/{survivor}/").into_bytes()
}

pub(crate) fn opportunities_prefix(customer: &Uuid) -> Vec<u8> {
    format!("c/{customer}/").into_bytes()
}

/// The actor an operation is listed under (`-` when the event names none).
fn actor_of(recorded: &RecordedEvent) -> &str {
    if recorded.metadata.actor.is_empty() {
        "-"
    } else {
        recorded.metadata.actor.as_str()
    }
}

/// The event types `apply` reads the payload of (see [`Projector::decodes`]).
pub(crate) const DECODED: &[&str] = &["CustomersMerged", "OpportunityOpened"];

/// The audit projector. It reads no rule.
#[derive(Debug, Clone, Copy, Default)]
pub struct AuditProjector;

impl Projector for AuditProjector {
    type Value = Value;

    fn name(&self) -> &'static str {
        "audit"
    }

    fn version(&self) -> u32 {
        // 2: operations and index postings stored in blocks. 3: no stream postings (the
        // log's stream index answers them).
        3
    }

    fn fingerprint(&self, _rules: &Rules) -> u64 {
        0
    }

    fn decodes(&self, event_type: &str) -> bool {
        DECODED.contains(&event_type)
    }

    /// The open postings blocks of the event's actor and type, and its operations block:
    /// after a restart none is in memory, and reading them one at a time inside the fold
    /// held the live build behind (docs/PERFORMANCE.md).
    fn prefetch(
        &self,
        _: &Rules,
        recorded: &RecordedEvent,
        _: Option<&Event>,
        _: &Cached<'_, Value>,
        keys: &mut Vec<Vec<u8>>,
    ) {
        keys.push(index_key('a', actor_of(recorded), OPEN_BLOCK));
        keys.push(index_key('t', &recorded.event_type, OPEN_BLOCK));
        keys.push(block_key(block_of(recorded.position)));
    }

    fn apply(
        &self,
        state: &mut State<'_, Value>,
        _rules: &Rules,
        recorded: &RecordedEvent,
        event: Option<&Event>,
    ) -> Result<(), String> {
        let p = recorded.position;
        let actor = actor_of(recorded);
        post(state, 'a', actor, p)?;
        post(state, 't', &recorded.event_type, p)?;
        let operation = Operation {
            position: p,
            stream: recorded.stream.clone(),
            event_type: recorded.event_type.clone(),
            actor: actor.to_owned(),
            source: recorded.metadata.source.clone(),
            correlation_id: recorded.metadata.correlation_id,
            recorded_at_micros: recorded.recorded_at_micros,
        };
        match state.get_or_insert_with(&block_key(block_of(p)), || Value::Operations(Vec::new()))? {
            Value::Operations(ops) => ops.push(operation),
            other => return Err(format!("audit block of position {p} holds {other:?}, not operations")),
        }
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

#[cfg(test)]
mod decoded_tests {
    #[test]
    fn every_decoded_event_type_exists() {
        crm_projection_runtime::testing::assert_event_types_exist(super::DECODED);
    }
}
