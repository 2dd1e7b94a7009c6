//! A full disk (a small tmpfs): appends fail with Unavailable, nothing acknowledged is lost,
//! reads keep working, and the log accepts writes again once space returns.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crm_eventlog::{Error, EventStore, ExpectedVersion};

use crate::support::{event, open};

/// A tmpfs mounted for the test; unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Tmpfs {
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .status()
            .expect("run mount");
        assert!(status.success(), "mounting a tmpfs needs root (CI and the dev machines run as root)");
        Tmpfs(at.to_owned())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Fills the file system holding `path` until a write fails.
fn fill(path: &Path) {
    let mut f = std::fs::File::create(path).unwrap();
    let block = vec![0xffu8; 256 * 1024];
    while f.write_all(&block).is_ok() {}
    let _ = f.sync_all();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_gives_unavailable_loses_nothing_and_recovers_when_space_returns() {
    let mount_point = tempfile::tempdir().unwrap();
    let _tmpfs = Tmpfs::mount(mount_point.path(), "64m");
    let dir = mount_point.path().join("log");
    let filler = mount_point.path().join("filler");
    let store = open(&dir);

    let mut acked = Vec::new();
    for i in 0..50 {
        let r = store.append("disk", ExpectedVersion::Any, vec![event(format!("before {i}"))]).await.unwrap();
        acked.push((r.first_position, format!("before {i}")));
    }

    fill(&filler);
    let mut failure = None;
    for i in 0..20_000 {
        let payload = format!("filling {i} {}", "x".repeat(4000));
        match store.append("disk", ExpectedVersion::Any, vec![event(payload.clone())]).await {
            Ok(r) => acked.push((r.first_position, payload)),
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    let failure = failure.expect("a full disk makes appends fail");
    assert!(matches!(failure, Error::Unavailable(_)), "{failure}");
    assert!(store.failure().is_some());
    let again = store.append("disk", ExpectedVersion::Any, vec![event("while full")]).await.unwrap_err();
    assert!(matches!(again, Error::Unavailable(_)), "{again}");

    // Reads keep answering while the disk is full, with everything acknowledged.
    let head = store.head().await.unwrap();
    assert!(head >= acked.len() as u64);

    // Space returns: the log reopens itself and accepts writes again.
    std::fs::remove_file(&filler).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let recovered = loop {
        match store.append("disk", ExpectedVersion::Any, vec![event("after")]).await {
            Ok(r) => break r,
            Err(Error::Unavailable(_)) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(e) => panic!("the log did not recover: {e}"),
        }
    };
    assert!(store.failure().is_none());
    acked.push((recovered.first_position, "after".into()));

    let acked = &acked;
    let check = |store: crm_eventlog::SledEventStore| async move {
        let all = store.read_all(1, 100_000).await.unwrap();
        assert!(all.iter().enumerate().all(|(i, e)| e.position == i as u64 + 1), "gapless");
        for (position, payload) in acked {
            assert_eq!(all[*position as usize - 1].payload, payload.as_bytes(), "acknowledged event at {position}");
        }
        let verification = store.verify_log(|_, _| {}).unwrap();
        assert_eq!(verification.first_broken, None);
        store.close();
    };
    check(store.clone()).await;
    drop(store);
    check(open(&dir)).await;
}
