use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use crm_projection_runtime::testing::{all_events, dump, fold_all, settle, Counting};
use crm_projection_runtime::{spawn, ProjectionDb};

/// kill -9 a process that appends while the counting projector follows; after a restart the
/// projection equals a fold of the log from scratch: nothing applied twice, nothing skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_kill_9_every_count_is_exact() {
    let dir = tempfile::tempdir().unwrap();
    for round in 0..3 {
        let mut child = Command::new(env!("CARGO_BIN_EXE_crm-projection-crash"))
            .arg(dir.path())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        assert_eq!(lines.next().unwrap().unwrap(), "ready", "round {round}");
        std::thread::sleep(std::time::Duration::from_millis(150 + 100 * round));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
    }
    let store = crm_eventlog::SledEventStore::open(crm_eventlog::Config::new(dir.path().join("eventlog"))).unwrap();
    let db = ProjectionDb::open(&dir.path().join("projections")).unwrap();
    let projector = Counting::new("counting");
    let handle = spawn(&db, store.clone(), projector.clone()).unwrap();
    settle(&handle, &projector, &store).await;
    let head = store.committed_head();
    assert!(head > 0);
    assert_eq!(handle.reader().get::<u64>(b"total").unwrap(), Some(head));
    let rebuilt = fold_all(&projector, &Default::default(), &all_events(&store));
    assert_eq!(dump(&handle.reader().tree), rebuilt);
    handle.stop().await;
    store.close();
}
