//! Folding a projector over events in memory, without a log or a runner: the reference a
//! property test compares the runner's incremental result with.

use std::collections::BTreeMap;

use crm_domain::{Event, Rules};
use crm_eventlog::RecordedEvent;

use crate::projector::{encode_value, Cache, Projector, META_KEY};

/// Applies `events` to a fresh temporary tree in one batch and returns every key and encoded
/// value (the checkpoint excluded).
///
/// # Panics
/// When an event fails to decode or apply, or sled fails: test input only.
pub fn fold_all<P: Projector>(projector: &P, rules: &Rules, events: &[RecordedEvent]) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let db = sled::Config::new().temporary(true).open().expect("temporary sled");
    let tree = db.open_tree("fold").expect("tree");
    let mut cache = Cache::<P::Value>::new();
    let mut state = cache.state(&tree);
    for recorded in events {
        let event = Event::decode(&recorded.event_type, recorded.schema_version, &recorded.payload).expect("decodable");
        projector.apply(&mut state, rules, recorded, &event).expect("applies");
    }
    let mut batch = sled::Batch::default();
    cache.drain_into(&mut batch);
    tree.apply_batch(batch).expect("batch");
    dump(&tree)
}

/// Every key and value of a projection tree, the checkpoint excluded.
///
/// # Panics
/// When sled fails: test input only.
pub fn dump(tree: &sled::Tree) -> BTreeMap<Vec<u8>, Vec<u8>> {
    tree.iter()
        .map(|r| r.expect("iterate"))
        .filter(|(k, _)| k.as_ref() != META_KEY)
        .map(|(k, v)| (k.to_vec(), v.to_vec()))
        .collect()
}

/// The encoded form of a value, to compare dumps with expectations.
pub fn encoded<V: serde::Serialize>(value: &V) -> Vec<u8> {
    encode_value(value)
}
