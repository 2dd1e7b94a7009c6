//! The positions of one stream's events, read from the stream index alone (what the audit
//! operation log filtered by stream uses).

use crm_eventlog::{Direction, EventStore, ExpectedVersion};

use crate::support::{event, open};

#[tokio::test]
async fn stream_positions_agree_with_read_stream_with_paging() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    // Interleaved appends of one to three events, so the stream index holds several runs.
    for round in 0..12u64 {
        let count = 1 + (round % 3) as usize;
        store.append("a", ExpectedVersion::Any, (0..count).map(|_| event("a")).collect()).await.unwrap();
        if round % 2 == 0 {
            store.append("b", ExpectedVersion::Any, vec![event("b")]).await.unwrap();
        }
    }
    let expected: Vec<u64> = store
        .read_stream("a", None, Direction::Forwards, usize::MAX)
        .await
        .unwrap()
        .iter()
        .map(|e| e.position)
        .collect();
    assert_eq!(expected.len(), 24);
    assert_eq!(store.stream_positions_blocking("a", 0, usize::MAX).unwrap(), expected);

    // Pages of 5 after the last position seen give the same positions.
    let mut paged = Vec::new();
    let mut after = 0;
    loop {
        let page = store.stream_positions_blocking("a", after, 5).unwrap();
        assert!(page.len() <= 5);
        match page.last() {
            Some(last) => after = *last,
            None => break,
        }
        paged.extend(page);
    }
    assert_eq!(paged, expected);

    // After a position in the middle of a run.
    let middle = expected[10];
    assert_eq!(store.stream_positions_blocking("a", middle, usize::MAX).unwrap(), expected[11..].to_vec());
    assert!(store.stream_positions_blocking("missing", 0, 10).unwrap().is_empty());
    store.close();
}
