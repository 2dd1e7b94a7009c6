//! The event log and the projections live in separate sled databases of one process. sled
//! 0.34.7 isolates batches and transactions from readers with one lock for the whole
//! process, so a large projection commit stalled the event log's writer (vendor/sled/PATCHES.md
//! has the numbers). The vendored sled holds that lock per database; this checks it.

use std::sync::mpsc;
use std::time::Duration;

/// While a transaction in one database holds its write lock, reads, inserts and batches in
/// another database still complete.
#[test]
fn a_transaction_in_one_database_does_not_block_another() {
    let dir = tempfile::tempdir().unwrap();
    let a = sled::open(dir.path().join("a")).unwrap();
    let b = sled::open(dir.path().join("b")).unwrap();
    b.insert(b"k", b"v".to_vec()).unwrap();

    let (inside_tx, inside_rx) = mpsc::channel::<()>();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let holder = std::thread::spawn(move || {
        // sled takes the write lock before it runs the closure (`TransactionalTrees::stage`).
        a.transaction(|tx| {
            tx.insert(&b"held"[..], &b"1"[..])?;
            let _ = inside_tx.send(());
            let _ = release_rx.recv_timeout(Duration::from_secs(30));
            Ok::<_, sled::transaction::ConflictableTransactionError<()>>(())
        })
        .unwrap();
        a
    });
    inside_rx.recv().unwrap();

    let (done_tx, done_rx) = mpsc::channel();
    let worker = std::thread::spawn(move || {
        let got = b.get(b"k").unwrap();
        b.insert(b"k2", b"w".to_vec()).unwrap();
        let mut batch = sled::Batch::default();
        batch.insert(&b"k3"[..], &b"x"[..]);
        b.apply_batch(batch).unwrap();
        let scanned = b.iter().count();
        let _ = done_tx.send((got, scanned));
    });
    // A liveness check, not a timing one: with one lock for the process this waits for the
    // release below and never gets its answer first.
    let answered = done_rx.recv_timeout(Duration::from_secs(10));
    release_tx.send(()).unwrap();
    let a = holder.join().unwrap();
    worker.join().unwrap();
    let (got, scanned) = answered.expect("database b answered while a transaction held database a");
    assert_eq!(got.as_deref(), Some(&b"v"[..]));
    assert_eq!(scanned, 3);
    assert_eq!(a.get(b"held").unwrap().as_deref(), Some(&b"1"[..]));
}
