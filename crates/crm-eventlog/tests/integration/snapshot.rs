//! A half-written sled snapshot (`snap.<lsn>.generating`, what a crash or a full disk leaves
//! when sled's open is cut short while it writes one) does not stop the log from opening:
//! sled reads its last complete snapshot and the log after it (vendor/sled/PATCHES.md,
//! patch 3). Upstream sled 0.34.7 picks the half-written file, fails its checksum and
//! refuses to open (sled issue 1527), as this machine's 14.8 M-event log did after its disk
//! ran full (docs/PERFORMANCE.md, twelfth session).

use crm_eventlog::{EventStore, ExpectedVersion};

use crate::support::{event, open};

#[tokio::test]
async fn a_half_written_snapshot_is_passed_over_and_removed_by_the_next_one() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        for i in 0..20 {
            store.append("c", ExpectedVersion::Any, vec![event(format!("event {i}"))]).await.unwrap();
        }
        store.close();
    }
    // Sorts after every snapshot sled could have written, so upstream would read it first.
    let torn = dir.path().join("snap.FFFFFFFFFFFFFFFF.generating");
    std::fs::write(&torn, vec![0xabu8; 4096]).unwrap();
    {
        let store = open(dir.path());
        let events = store.read_all(1, 100).await.unwrap();
        assert_eq!(events.iter().map(|e| e.position).collect::<Vec<_>>(), (1..=20).collect::<Vec<u64>>());
        assert_eq!(events[19].payload, b"event 19");
        store.append("c", ExpectedVersion::Any, vec![event("event 20")]).await.unwrap();
        store.close();
    }
    // Each open writes a snapshot when the log moved on, and clears out the others.
    let store = open(dir.path());
    assert_eq!(store.head().await.unwrap(), 21);
    assert!(!torn.exists(), "a completed snapshot removes the half-written one");
}
