//! Operation-log queries over the audit tree, and customer history and as-of states read
//! from the log.

use crm_domain::{Aggregate, Customer, CustomerId, Event, OpportunityId};
use crm_eventlog::{Direction, RecordedEvent, SledEventStore};
use crm_projection_runtime::{Error, Reader, Result};
use uuid::Uuid;

use crate::projector::{block_key, block_of, index_prefix, merged_prefix, opportunities_prefix, Operation, Value};

/// Most entries one page may scan before it returns with a cursor.
const MAX_SCAN: usize = 20_000;
/// `recorded_at` is taken when an append is requested, so it is close to but not strictly
/// monotonic in position order; a time search starts this much earlier and filters exactly.
const CLOCK_SLACK_MICROS: i64 = 10_000_000;

/// Operation-log filters; every set filter must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OperationFilter {
    pub actor: Option<String>,
    pub event_type: Option<String>,
    pub stream: Option<String>,
    /// `recorded_at` range in microseconds, inclusive from, exclusive to.
    pub from_micros: Option<i64>,
    pub to_micros: Option<i64>,
}

impl OperationFilter {
    fn matches(&self, op: &Operation) -> bool {
        self.actor.as_deref().is_none_or(|a| op.actor == a)
            && self.event_type.as_deref().is_none_or(|t| op.event_type == t)
            && self.stream.as_deref().is_none_or(|s| op.stream == s)
            && self.from_micros.is_none_or(|f| op.recorded_at_micros >= f)
            && self.to_micros.is_none_or(|t| op.recorded_at_micros < t)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperationPage {
    /// In position order.
    pub operations: Vec<Operation>,
    /// Pass as `after_position` for the next page; `None` at the end.
    pub next_after_position: Option<u64>,
}

/// Reads operations by position, one stored block at a time.
struct Operations<'a> {
    reader: &'a Reader,
    block: Option<(u64, Vec<Operation>)>,
}

impl<'a> Operations<'a> {
    fn new(reader: &'a Reader) -> Self {
        Operations { reader, block: None }
    }

    fn get(&mut self, position: u64) -> Result<Option<Operation>> {
        let block = block_of(position);
        if self.block.as_ref().is_none_or(|(b, _)| *b != block) {
            let ops = match self.reader.get::<Value>(&block_key(block))? {
                Some(Value::Operations(ops)) => ops,
                _ => Vec::new(),
            };
            self.block = Some((block, ops));
        }
        let ops = &self.block.as_ref().expect("just loaded").1;
        Ok(ops.binary_search_by_key(&position, |op| op.position).ok().map(|i| ops[i].clone()))
    }
}

/// The first position whose operation was recorded at or after `micros` (give or take the
/// clock slack), by binary search over positions.
fn first_position_at(reader: &Reader, micros: i64) -> Result<u64> {
    let mut operations = Operations::new(reader);
    let (mut lo, mut hi) = (1u64, reader.position + 1);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        match operations.get(mid)? {
            Some(op) if op.recorded_at_micros < micros - CLOCK_SLACK_MICROS => lo = mid + 1,
            _ => hi = mid,
        }
    }
    Ok(lo)
}

/// The operation log, filtered, in position order, after `after_position`.
///
/// A stream filter is answered from the log's stream index (`store`), up to the reader's
/// position; actor and operation type from this read model's postings.
pub fn operations(
    store: &SledEventStore,
    reader: &Reader,
    filter: &OperationFilter,
    after_position: u64,
    limit: usize,
) -> Result<OperationPage> {
    let limit = limit.max(1);
    let mut page = OperationPage { operations: Vec::new(), next_after_position: None };
    let index = [('a', &filter.actor), ('t', &filter.event_type)]
        .into_iter()
        .find_map(|(kind, value)| value.as_ref().map(|v| index_prefix(kind, v)));
    let mut scanned = 0;
    let mut stored = Operations::new(reader);
    let mut visit = |page: &mut OperationPage, position: u64| -> Result<bool> {
        scanned += 1;
        if let Some(op) = stored.get(position)? {
            if filter.to_micros.is_some_and(|to| op.recorded_at_micros >= to + CLOCK_SLACK_MICROS) {
                return Ok(false);
            }
            if filter.matches(&op) {
                page.operations.push(op);
            }
        }
        if page.operations.len() >= limit || scanned >= MAX_SCAN {
            page.next_after_position = Some(position);
            return Ok(false);
        }
        Ok(true)
    };
    if let Some(stream) = &filter.stream {
        // Never more positions than one page may scan: past them the page ends with a cursor.
        for position in store.stream_positions_blocking(stream, after_position, MAX_SCAN)? {
            if position > reader.position || !visit(&mut page, position)? {
                break;
            }
        }
        return Ok(page);
    }
    match index {
        Some(prefix) => {
            // Closed blocks in order of their first position, then the open block.
            'blocks: for entry in reader.tree.scan_prefix(&prefix) {
                let (key, value) = entry?;
                if key.len() != prefix.len() + 8 {
                    continue;
                }
                let Value::Postings(positions) = crm_projection_runtime::decode_value::<Value>(&key, &value)? else {
                    continue;
                };
                if positions.last().is_none_or(|last| *last <= after_position) {
                    continue;
                }
                for position in positions {
                    if position <= after_position {
                        continue;
                    }
                    if position > reader.position || !visit(&mut page, position)? {
                        break 'blocks;
                    }
                }
            }
        }
        None => {
            let mut position = after_position + 1;
            if let Some(from) = filter.from_micros {
                position = position.max(first_position_at(reader, from)?);
            }
            while position <= reader.position {
                if !visit(&mut page, position)? {
                    break;
                }
                position += 1;
            }
        }
    }
    Ok(page)
}

fn suffix_ids(reader: &Reader, prefix: &[u8]) -> Result<Vec<Uuid>> {
    let mut ids = Vec::new();
    for entry in reader.tree.scan_prefix(prefix) {
        let (key, _) = entry?;
        if let Some(id) = std::str::from_utf8(&key[prefix.len()..]).ok().and_then(|s| Uuid::parse_str(s).ok()) {
            ids.push(id);
        }
    }
    Ok(ids)
}

fn read_stream(store: &SledEventStore, stream: &str, up_to: u64) -> Result<Vec<RecordedEvent>> {
    let mut events = store.read_stream_blocking(stream, None, Direction::Forwards, usize::MAX)?;
    events.retain(|e| e.position <= up_to);
    Ok(events)
}

/// A customer's full history up to the reader's position: its own stream, the streams of
/// every customer ever merged into it, and the streams of their opportunities, in position
/// order.
pub fn customer_history(store: &SledEventStore, reader: &Reader, customer: Uuid) -> Result<Vec<RecordedEvent>> {
    let mut customers = vec![customer];
    customers.extend(suffix_ids(reader, &merged_prefix(&customer))?);
    let mut streams = Vec::new();
    for c in &customers {
        streams.push(CustomerId(*c).stream());
        for o in suffix_ids(reader, &opportunities_prefix(c))? {
            streams.push(OpportunityId(o).stream());
        }
    }
    streams.sort();
    streams.dedup();
    let mut events = Vec::new();
    for stream in &streams {
        events.extend(read_stream(store, stream, reader.position)?);
    }
    events.sort_by_key(|e| e.position);
    Ok(events)
}

/// A point in the log's history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AsOf {
    /// Every event up to and including this position.
    Position(u64),
    /// Every event recorded at or before this time (microseconds since the epoch).
    Time(i64),
}

/// A customer as it was.
#[derive(Debug, Clone, PartialEq)]
pub struct CustomerAsOf {
    /// `None` when the customer did not exist yet.
    pub customer: Option<Customer>,
    /// The position of the last event folded (0: none).
    pub position: u64,
    pub recorded_at_micros: i64,
}

/// Folds the customer's stream up to `as_of` from the log.
pub fn customer_as_of(store: &SledEventStore, customer: Uuid, as_of: AsOf) -> Result<CustomerAsOf> {
    let head = store.committed_head();
    let events = read_stream(store, &CustomerId(customer).stream(), head)?;
    let mut state = Customer::default();
    let mut result = CustomerAsOf { customer: None, position: 0, recorded_at_micros: 0 };
    for recorded in events {
        let included = match as_of {
            AsOf::Position(p) => recorded.position <= p,
            AsOf::Time(t) => recorded.recorded_at_micros <= t,
        };
        if !included {
            continue;
        }
        let event = Event::decode(&recorded.event_type, recorded.schema_version, &recorded.payload)
            .map_err(|e| Error::Log(format!("decoding position {}: {e}", recorded.position)))?;
        state.apply(&event);
        result.position = recorded.position;
        result.recorded_at_micros = recorded.recorded_at_micros;
    }
    if result.position > 0 {
        result.customer = Some(state);
    }
    Ok(result)
}
