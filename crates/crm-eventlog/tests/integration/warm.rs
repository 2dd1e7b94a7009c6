//! Warming the stream index: every entry is read exactly once, over the ranges the index is
//! split into, and a stop request ends it.

use std::sync::atomic::AtomicBool;

use crm_eventlog::{Durability, EventStore, ExpectedVersion, StreamAppend};

use crate::support::{event, open};

#[tokio::test]
async fn warming_reads_every_stream_index_entry_once_and_stops_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    // Names as the domain makes them (random ids under a few kinds) and a kind with short
    // numbered names, so the key range has dense groups with empty space between them.
    let streams: Vec<String> = (0..1_500)
        .map(|i| match i % 3 {
            0 => format!("lead-{}", uuid::Uuid::new_v4()),
            1 => format!("customer-{}", uuid::Uuid::new_v4()),
            _ => format!("task-{i}"),
        })
        .collect();
    for part in streams.chunks(100) {
        let appends = part
            .iter()
            .map(|s| StreamAppend { stream: s.clone(), expected: ExpectedVersion::NoStream, events: vec![event("x")] })
            .collect();
        store.append_many(appends, Durability::Buffered).await.unwrap();
    }
    // A second append to 100 streams adds an entry each (the index keeps one per append).
    let again = streams
        .iter()
        .step_by(15)
        .map(|s| StreamAppend { stream: s.clone(), expected: ExpectedVersion::Exact(0), events: vec![event("y")] })
        .collect::<Vec<_>>();
    assert_eq!(again.len(), 100);
    store.append_many(again, Durability::Durable).await.unwrap();

    let warmed = store.warm_stream_index(&|_| {}, &AtomicBool::new(false)).unwrap();
    assert_eq!(warmed.entries, 1_600, "each entry once: no range overlaps another or is left out");
    assert!(warmed.bytes >= 1_600 * (12 + 10), "keys and values counted: {} bytes", warmed.bytes);

    let stopped = store.warm_stream_index(&|_| {}, &AtomicBool::new(true)).unwrap();
    assert_eq!(stopped.entries, 0);
    // A closed store has nothing to warm, and says so.
    store.close();
    assert!(store.warm_stream_index(&|_| {}, &AtomicBool::new(false)).is_err());
}
