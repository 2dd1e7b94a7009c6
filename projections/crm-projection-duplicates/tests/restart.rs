//! A restart loads the Matcher from the serving tree only when the build resumes from that
//! tree's checkpoint: a tree left by a crash in the middle of a chunked commit is built again
//! from position 0, with an empty Matcher, and ends equal to a fold from scratch.

use std::collections::BTreeMap;

use crm_domain::Rules;
use crm_projection_duplicates::DuplicatesProjector;
use crm_projection_runtime::fixtures::{Generator, GeneratorConfig};
use crm_projection_runtime::testing::{all_events, append_all, dump, fold_all, interrupt_commit, settle, TempLog};
use crm_projection_runtime::{spawn, ProjectionDb};

/// Opens the projector as the server does, follows the log to its head, stops, and returns
/// the serving tree's contents with a fold of the whole log from scratch.
async fn follow(db: &ProjectionDb, log: &TempLog) -> (BTreeMap<Vec<u8>, Vec<u8>>, BTreeMap<Vec<u8>, Vec<u8>>) {
    let projector = DuplicatesProjector::open(db).unwrap();
    let handle = spawn(db, log.store.clone(), projector.clone()).unwrap();
    settle(&handle, &projector, &log.store).await;
    handle.stop().await;
    let expected = fold_all(&DuplicatesProjector::new(), &Rules::default(), &all_events(&log.store));
    (dump(&db.serving_tree("duplicates").unwrap().expect("a serving tree")), expected)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tree_left_by_an_interrupted_commit_is_built_again_with_an_empty_matcher() {
    let log = TempLog::new();
    let mut g = Generator::new(GeneratorConfig { seed: 21, users: 4, ..Default::default() });
    let commands: Vec<_> = (0..3000).map(|_| g.next_command()).collect();
    append_all(&log.store, &commands).await;
    let db = ProjectionDb::temporary().unwrap();
    let (built, expected) = follow(&db, &log).await;
    assert_eq!(built, expected, "the first build");

    // As a crash in a chunked commit leaves it: the marker and every customer record (a
    // Matcher loaded from them would know customers the log creates later).
    interrupt_commit(&db.serving_tree("duplicates").unwrap().expect("a serving tree"));
    let (built, expected) = follow(&db, &log).await;
    assert_eq!(built, expected, "built again from position 0");

    // A clean restart resumes from the checkpoint with the loaded Matcher.
    append_all(&log.store, &(0..300).map(|_| g.next_command()).collect::<Vec<_>>()).await;
    let (built, expected) = follow(&db, &log).await;
    assert_eq!(built, expected, "resumed");
}
