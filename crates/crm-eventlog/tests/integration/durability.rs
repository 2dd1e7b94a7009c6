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

/// After a reopen (no stream's version in memory), one group appending to many existing
/// streams reads their versions ahead on several threads: the expected versions are checked
/// against what is stored, exactly as when the writer reads them one by one.
#[tokio::test]
async fn a_group_over_many_streams_after_a_reopen_checks_every_expected_version() {
    let dir = tempfile::tempdir().unwrap();
    let streams: Vec<String> = (0..40).map(|i| format!("customer-{i}")).collect();
    let appends = |expected: &dyn Fn(usize) -> ExpectedVersion| {
        streams
            .iter()
            .enumerate()
            .map(|(i, s)| StreamAppend { stream: s.clone(), expected: expected(i), events: vec![event("x")] })
            .collect::<Vec<_>>()
    };
    {
        let store = open(dir.path());
        // Streams 0..20 get one event, 20..40 two.
        store.append_many(appends(&|_| ExpectedVersion::NoStream), Durability::Durable).await.unwrap();
        let more: Vec<_> = appends(&|_| ExpectedVersion::Exact(0)).into_iter().skip(20).collect();
        store.append_many(more, Durability::Durable).await.unwrap();
        store.close();
    }
    let store = open(dir.path());
    // One stream expected one version too low: the whole request is refused, nothing written.
    let head = store.committed_head();
    let wrong = appends(&|i| ExpectedVersion::Exact(if i < 20 || i == 33 { 0 } else { 1 }));
    match store.append_many(wrong, Durability::Durable).await {
        Err(Error::WrongExpectedVersion { stream, current, .. }) => {
            assert_eq!((stream.as_str(), current), ("customer-33", Some(1)));
        }
        other => panic!("expected a version conflict, got {other:?}"),
    }
    assert_eq!(store.committed_head(), head);
    let right = appends(&|i| ExpectedVersion::Exact(if i < 20 { 0 } else { 1 }));
    let results = store.append_many(right, Durability::Durable).await.unwrap();
    assert!(results.iter().enumerate().all(|(i, r)| r.last_version == if i < 20 { 1 } else { 2 }));
    store.close();
}
