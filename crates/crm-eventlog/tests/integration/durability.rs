//! What a barrier covers, and idempotency across the id index's buckets and a reopen.

use crm_eventlog::{Durability, Error, EventStore, ExpectedVersion, StreamAppend};

use crate::support::{event, open};

#[tokio::test]
async fn a_durable_retry_of_a_buffered_append_waits_for_a_barrier() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let first = event("bulk row");
    let append = |durability| {
        let events = vec![first.clone()];
        let store = store.clone();
        async move {
            let appends = vec![StreamAppend { stream: "import-1".into(), expected: ExpectedVersion::Any, events }];
            store.append_many(appends, durability).await.unwrap().remove(0)
        }
    };
    let syncs = || store.stats().fdatasyncs;

    let before = syncs();
    let buffered = append(Durability::Buffered).await;
    assert_eq!(syncs(), before, "a buffered append runs no barrier");
    let retried = append(Durability::Durable).await;
    assert!(retried.deduplicated);
    assert_eq!(retried.first_position, buffered.first_position);
    assert_eq!(syncs(), before + 1, "the durable retry made the buffered original durable");
    // Nothing left unsynced: another durable retry needs no barrier.
    append(Durability::Durable).await;
    assert_eq!(syncs(), before + 1);
    store.close();
}

#[tokio::test]
async fn ids_beyond_a_full_bucket_deduplicate_across_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    // 600 ids of one millisecond (what a fast importer makes): more than a bucket holds.
    let millisecond = uuid::Uuid::now_v7().into_bytes();
    let events: Vec<_> = (0..600u16)
        .map(|i| {
            let mut id = millisecond;
            id[14..].copy_from_slice(&i.to_be_bytes());
            crm_eventlog::NewEvent { id: uuid::Uuid::from_bytes(id), ..event(format!("row {i}")) }
        })
        .collect();
    let original = {
        let store = open(dir.path());
        let r = store.append("bulk", ExpectedVersion::NoStream, events.clone()).await.unwrap();
        store.close();
        r
    };
    let store = open(dir.path());
    let again = store.append("bulk", ExpectedVersion::NoStream, events.clone()).await.unwrap();
    assert!(again.deduplicated);
    assert_eq!((again.first_position, again.last_position), (original.first_position, original.last_position));
    // Each id alone is known, whether its bucket held it or it overflowed.
    for (i, e) in events.iter().enumerate().step_by(37) {
        let r = store.append("bulk", ExpectedVersion::Any, vec![e.clone()]).await.unwrap();
        assert!(r.deduplicated, "event {i}");
        assert_eq!(r.first_position, original.first_position + i as u64, "event {i}");
    }
    // A request mixing one of them with a new id is refused and writes nothing.
    let head = store.head().await.unwrap();
    let err = store.append("bulk", ExpectedVersion::Any, vec![events[599].clone(), event("new")]).await.unwrap_err();
    assert!(matches!(err, Error::IdempotencyConflict { .. }), "{err}");
    assert_eq!(store.head().await.unwrap(), head);
}
