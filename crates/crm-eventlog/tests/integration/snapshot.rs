//! A half-written sled snapshot (`snap.<lsn>.generating`, what a crash or a full disk leaves
//! when sled's open is cut short while it writes one) does not stop the log from opening:
//! sled reads its last complete snapshot, or none, and the log after it
//! (vendor/sled/PATCHES.md, patch 3). Upstream sled 0.34.7 picks the half-written file,
//! fails its checksum and refuses to open (sled issue 1527), as this machine's 14.8 M-event
//! log did after its disk ran full (docs/PERFORMANCE.md, twelfth session).

use std::path::{Path, PathBuf};

use crm_eventlog::{EventStore, ExpectedVersion};

use crate::support::{event, open};

/// Appends `n` events to stream `c` in a store opened on `dir`, then closes it.
async fn append_and_close(dir: &Path, from: u32, n: u32) {
    let store = open(dir);
    for i in from..from + n {
        store.append("c", ExpectedVersion::Any, vec![event(format!("event {i}"))]).await.unwrap();
    }
    store.close();
}

fn snapshots(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("snap."))
        .collect();
    files.sort();
    files
}

async fn assert_reads_all(dir: &Path, n: u64) {
    let store = open(dir);
    let events = store.read_all(1, 1000).await.unwrap();
    assert_eq!(events.iter().map(|e| e.position).collect::<Vec<_>>(), (1..=n).collect::<Vec<u64>>());
    assert_eq!(events.last().unwrap().payload, format!("event {}", n - 1).into_bytes());
    store.close();
}

#[tokio::test]
async fn a_half_written_snapshot_is_passed_over_and_removed_by_the_open_that_skips_it() {
    let dir = tempfile::tempdir().unwrap();
    append_and_close(dir.path(), 0, 20).await;
    // Sorts after every snapshot sled could have written, so upstream would read it first.
    let torn = dir.path().join("snap.FFFFFFFFFFFFFFFF.generating");
    std::fs::write(&torn, vec![0xabu8; 4096]).unwrap();
    assert_reads_all(dir.path(), 20).await;
    assert!(!torn.exists(), "the snapshot this open wrote removes the half-written one");
}

/// The case the disk-full incident left: a complete snapshot and a newer half-written one.
#[tokio::test]
async fn a_half_written_snapshot_beside_a_complete_one_falls_back_to_the_complete_one() {
    let dir = tempfile::tempdir().unwrap();
    append_and_close(dir.path(), 0, 10).await;
    // This open writes a complete snapshot, since the log moved on.
    append_and_close(dir.path(), 10, 10).await;
    let complete = snapshots(dir.path());
    assert_eq!(complete.len(), 1, "{complete:?}");
    assert!(!complete[0].to_string_lossy().ends_with(".generating"));
    let torn = dir.path().join("snap.FFFFFFFFFFFFFFFF.generating");
    std::fs::write(&torn, vec![0xabu8; 4096]).unwrap();
    assert_reads_all(dir.path(), 20).await;
    append_and_close(dir.path(), 20, 1).await;
    assert_reads_all(dir.path(), 21).await;
    let left = snapshots(dir.path());
    assert!(!left.contains(&torn) && left.len() == 1, "{left:?}");
}
