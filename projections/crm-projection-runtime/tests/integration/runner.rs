use std::time::Duration;

use crm_eventlog::EventStore;
use crm_projection_runtime::fixtures::{Generator, GeneratorConfig};
use crm_projection_runtime::testing::{all_events, append_all, dump, fold_all, reopen, settle, Counting, TempLog};
use crm_projection_runtime::{spawn, spawn_with, ProjectionDb, RunState, SpawnOptions};

fn commands(seed: u64, n: usize) -> Vec<crm_projection_runtime::fixtures::Generated> {
    let mut g = Generator::new(GeneratorConfig { seed, ..Default::default() });
    (0..n).map(|_| g.next_command()).collect()
}

fn total(handle: &crm_projection_runtime::ProjectionHandle) -> u64 {
    handle.reader().get::<u64>(b"total").unwrap().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_resumes_after_the_checkpoint_without_double_counting() {
    let log = TempLog::new();
    let db_dir = log.dir.join("projections");
    append_all(&log.store, &commands(1, 300)).await;
    {
        let db = ProjectionDb::open(&db_dir).unwrap();
        let handle = spawn(&db, log.store.clone(), Counting::new("counting")).unwrap();
        settle(&handle, &Counting::new("counting"), &log.store).await;
        assert_eq!(total(&handle), log.store.committed_head());
        handle.stop().await;
    }
    append_all(&log.store, &commands(2, 300)).await;
    let db = reopen(&db_dir).await;
    let handle = spawn(&db, log.store.clone(), Counting::new("counting")).unwrap();
    settle(&handle, &Counting::new("counting"), &log.store).await;
    let head = log.store.committed_head();
    assert_eq!(total(&handle), head);
    assert_eq!(handle.status().rebuilds_completed, 0, "a restart resumes, it does not rebuild");
    let rebuilt = fold_all(&Counting::new("counting"), &Default::default(), &all_events(&log.store));
    assert_eq!(dump(&handle.reader().tree), rebuilt);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_event_stops_that_projector_only_and_names_the_position() {
    let log = TempLog::new();
    append_all(&log.store, &commands(3, 200)).await;
    let events = all_events(&log.store);
    let first_customer = events.iter().find(|e| e.event_type == "CustomerCreated").unwrap().position;
    let db = ProjectionDb::temporary().unwrap();
    let failing = Counting { fail_on: Some("CustomerCreated".into()), ..Counting::new("failing") };
    let bad = spawn(&db, log.store.clone(), failing).unwrap();
    let good = spawn(&db, log.store.clone(), Counting::new("good")).unwrap();
    settle(&good, &Counting::new("good"), &log.store).await;
    let mut status = bad.status();
    for _ in 0..500 {
        if status.state == RunState::Failed {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        status = bad.status();
    }
    assert_eq!(status.state, RunState::Failed);
    let failure = status.failure.expect("failure recorded");
    assert_eq!(failure.position, first_customer);
    assert!(failure.detail.contains("refusing CustomerCreated"), "{}", failure.detail);
    // Nothing after the last committed checkpoint, and nothing skipped: the failed build
    // stays strictly before the failing event.
    assert!(status.position < first_customer);
    assert_eq!(total(&bad), status.position);
    assert_eq!(total(&good), log.store.committed_head());
    // It stays stopped while the log grows.
    append_all(&log.store, &commands(4, 20)).await;
    settle(&good, &Counting::new("good"), &log.store).await;
    assert_eq!(bad.status().position, status.position);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_under_concurrent_writes_serves_throughout_and_ends_caught_up() {
    let log = TempLog::new();
    append_all(&log.store, &commands(5, 3000)).await;
    let db = ProjectionDb::temporary().unwrap();
    let projector = Counting::new("counting");
    let handle = spawn(&db, log.store.clone(), projector.clone()).unwrap();
    settle(&handle, &projector, &log.store).await;

    let writer = {
        let store = log.store.clone();
        tokio::spawn(async move {
            for seed in 10..30 {
                append_all(&store, &commands(seed, 50)).await;
            }
        })
    };
    let rebuild = handle.start_rebuild().unwrap();
    let reader = {
        let handle = handle.clone();
        tokio::spawn(async move {
            let mut reads = 0u64;
            let mut saw_rebuilding = false;
            loop {
                let r = handle.reader();
                let total = r.get::<u64>(b"total").unwrap().unwrap_or(0);
                // Never a half-built read model: the serving build has everything up to its
                // position (the shadow is not visible).
                assert!(total >= r.position, "served {total} events at position {}", r.position);
                saw_rebuilding |= handle.status().state == RunState::Rebuilding;
                reads += 1;
                if handle.status().rebuilds_completed == 1 {
                    return (reads, saw_rebuilding);
                }
                tokio::task::yield_now().await;
            }
        })
    };
    let summary = rebuild.await.unwrap().unwrap();
    writer.await.unwrap();
    let (reads, saw_rebuilding) = reader.await.unwrap();
    assert!(reads > 0 && saw_rebuilding);
    assert!(summary.position >= 3000);
    settle(&handle, &projector, &log.store).await;
    assert_eq!(total(&handle), log.store.committed_head());
    let rebuilt = fold_all(&projector, &Default::default(), &all_events(&log.store));
    assert_eq!(dump(&handle.reader().tree), rebuilt);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_version_rebuilds_in_a_shadow_and_swaps() {
    let log = TempLog::new();
    let db_dir = log.dir.join("projections");
    append_all(&log.store, &commands(6, 500)).await;
    {
        let db = ProjectionDb::open(&db_dir).unwrap();
        let handle = spawn(&db, log.store.clone(), Counting::new("counting")).unwrap();
        settle(&handle, &Counting::new("counting"), &log.store).await;
        handle.stop().await;
    }
    let v2 = Counting { version: 2, ..Counting::new("counting") };
    let db = reopen(&db_dir).await;
    let handle = spawn(&db, log.store.clone(), v2.clone()).unwrap();
    // The old build serves at once, complete, while the new one is built.
    let first = handle.reader();
    assert_eq!(first.get::<u64>(b"total").unwrap(), Some(first.position));
    assert_eq!(first.position, log.store.committed_head());
    settle(&handle, &v2, &log.store).await;
    let status = handle.status();
    assert_eq!((status.version, status.rebuilds_completed), (2, 1));
    assert_eq!(total(&handle), log.store.committed_head());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_reports_a_damaged_entry_and_nothing_else() {
    let log = TempLog::new();
    append_all(&log.store, &commands(7, 400)).await;
    let db = ProjectionDb::temporary().unwrap();
    let projector = Counting::new("counting");
    let handle = spawn(&db, log.store.clone(), projector.clone()).unwrap();
    settle(&handle, &projector, &log.store).await;
    let clean = handle.verify().await.unwrap();
    assert_eq!(clean.total_differences, 0, "{clean:?}");
    assert_eq!(clean.position, log.store.committed_head());

    // Damage one entry behind the runner's back, and add one that should not exist.
    let tree = handle.reader().tree;
    let actual: u64 = handle.reader().get(b"type/CustomerCreated").unwrap().unwrap();
    tree.insert(b"type/CustomerCreated", crm_projection_runtime::encode_value(&(actual + 5))).unwrap();
    tree.insert(b"zz/stray", crm_projection_runtime::encode_value(&1u64)).unwrap();
    let report = handle.verify().await.unwrap();
    assert_eq!(report.total_differences, 2, "{report:?}");
    assert_eq!(report.differences[0].key, "type/CustomerCreated");
    assert_eq!(report.differences[0].expected.as_deref(), Some(actual.to_string().as_str()));
    assert_eq!(report.differences[0].actual.as_deref(), Some((actual + 5).to_string().as_str()));
    assert_eq!((report.differences[1].key.as_str(), report.differences[1].expected.as_ref()), ("zz/stray", None));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_for_returns_once_the_position_is_applied() {
    let log = TempLog::new();
    let db = ProjectionDb::temporary().unwrap();
    let handle = spawn(&db, log.store.clone(), Counting::new("counting")).unwrap();
    let waiter = {
        let handle = handle.clone();
        tokio::spawn(async move { handle.wait_for(150, Duration::from_secs(60)).await })
    };
    append_all(&log.store, &commands(8, 200)).await;
    let reached = waiter.await.unwrap().unwrap();
    assert!(reached >= 150);
    let head = log.store.head().await.unwrap();
    let err = handle.wait_for(head + 10, Duration::from_millis(50)).await.unwrap_err();
    assert!(matches!(err, crm_projection_runtime::Error::NotReached { wanted, .. } if wanted == head + 10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_interval_delays_steps_but_never_strands_the_last_events() {
    let log = TempLog::new();
    let db = ProjectionDb::temporary().unwrap();
    let options = SpawnOptions { live_interval: Duration::from_millis(300) };
    let handle = spawn_with(&db, log.store.clone(), Counting::new("counting"), options).unwrap();
    // Appends in quick succession: after the first step the runner holds back, and no head
    // change comes after the last append to wake it; the interval's own timer must.
    for seed in 0..5 {
        append_all(&log.store, &commands(20 + seed, 3)).await;
    }
    let head = log.store.head().await.unwrap();
    handle.wait_for(head, Duration::from_secs(30)).await.unwrap();
    assert_eq!(total(&handle), head);
    let rebuilt = fold_all(&Counting::new("counting"), &Default::default(), &all_events(&log.store));
    assert_eq!(dump(&handle.reader().tree), rebuilt);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_outside_the_domain_reach_projectors_undecoded_and_bad_domain_payloads_stop_them() {
    let log = TempLog::new();
    append_all(&log.store, &commands(9, 20)).await;
    let foreign = |event_type: &str| crm_eventlog::NewEvent {
        id: uuid::Uuid::now_v7(),
        event_type: event_type.into(),
        schema_version: 1,
        metadata: Default::default(),
        payload: b"not bincode of any domain event".to_vec(),
    };
    log.store.append("tokens", crm_eventlog::ExpectedVersion::Any, vec![foreign("TokenIssued")]).await.unwrap();
    let db = ProjectionDb::temporary().unwrap();
    let projector = Counting::new("counting");
    let handle = spawn(&db, log.store.clone(), projector.clone()).unwrap();
    settle(&handle, &projector, &log.store).await;
    assert_eq!(total(&handle), log.store.committed_head(), "the token event is counted, not skipped");

    // A domain type whose payload does not decode is a failure at its position.
    let bad =
        log.store.append("customer-x", crm_eventlog::ExpectedVersion::Any, vec![foreign("CustomerCreated")]).await;
    let bad_position = bad.unwrap().first_position;
    for _ in 0..500 {
        if handle.status().state == RunState::Failed {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let status = handle.status();
    assert_eq!(status.failure.map(|f| f.position), Some(bad_position));
    assert_eq!(status.position, bad_position - 1);
}

/// A log of `commands` generated commands (`seed`), each creating a customer.
async fn new_customers_log(seed: u64, commands: usize) -> TempLog {
    let log = TempLog::new();
    let mut g = Generator::new(GeneratorConfig { seed, new_customer_permille: Some(1000), ..Default::default() });
    let generated: Vec<_> = (0..commands).map(|_| g.next_command()).collect();
    append_all(&log.store, &generated).await;
    log
}

/// A first build and a shadow rebuild far behind the head hold their state in memory and
/// write more keys than one sled batch takes (16,384) in chunks: the result still equals a
/// fold of the log, and the marker of the chunked write is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn builds_written_in_chunks_equal_a_fold_of_the_log() {
    // One new customer stream per command: a `stream/<s>` key each.
    let log = new_customers_log(9, 17_000).await;
    let db = ProjectionDb::open(&log.dir.join("projections")).unwrap();
    let projector = Counting::new("counting");
    let handle = spawn(&db, log.store.clone(), projector.clone()).unwrap();
    settle(&handle, &projector, &log.store).await;
    let rebuilt = fold_all(&projector, &Default::default(), &all_events(&log.store));
    assert!(rebuilt.len() > 16_384, "{} keys: too few to need chunks", rebuilt.len());
    assert_eq!(dump(&handle.reader().tree), rebuilt);
    assert_eq!(handle.reader().tree.get(b"\x00spill").unwrap(), None);

    let summary = handle.rebuild().await.unwrap();
    assert_eq!(summary.position, log.store.committed_head());
    assert_eq!(dump(&handle.reader().tree), rebuilt);
    assert_eq!(handle.reader().tree.get(b"\x00spill").unwrap(), None);
    let serving = handle.reader().tree.clone();
    handle.stop().await;

    // A crash in the middle of a chunked commit leaves the marker: the next start builds
    // the read model again from position 0, in a new tree (the old one is dropped, not
    // emptied key by key), and ends equal to the fold.
    serving.insert(b"\x00spill", b"".as_slice()).unwrap();
    serving.insert(b"stream/left-over", b"half-written".as_slice()).unwrap();
    let handle = spawn(&db, log.store.clone(), projector.clone()).unwrap();
    assert!(serving.get(b"stream/left-over").is_err(), "the half-written tree is dropped");
    settle(&handle, &projector, &log.store).await;
    assert_eq!(dump(&handle.reader().tree), rebuilt);
    assert_eq!(handle.reader().tree.get(b"\x00spill").unwrap(), None);
    handle.stop().await;
}

/// A build holds what it changes in memory up to its bound (alone, the whole of the
/// database's build budget), then commits and goes on: held at the last event of a first
/// build, a build with a 16 KiB bound has already committed (and serves) part of the log,
/// while one with the default bound has committed nothing. Both end equal to a fold of the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_build_commits_when_it_passes_the_build_cache_bound() {
    // Far behind (over 16,384 events: a build nearer the head commits at every step), and
    // several chunks of 4,096 events (a build checks its bound after each).
    let log = new_customers_log(12, 20_000).await;
    let head = log.store.committed_head();
    for (bound, committed_before_the_end) in [(Some(16u64 << 10), true), (None, false)] {
        let gate: Gate = std::sync::Arc::new((std::sync::Mutex::new((false, false)), std::sync::Condvar::new()));
        let opener = OpenOnDrop(gate.clone());
        let projector = Gated {
            counting: Counting::new("counting"),
            hold: head..=head,
            gate: gate.clone(),
            held: Default::default(),
        };
        let db = ProjectionDb::temporary().unwrap();
        if let Some(bytes) = bound {
            db.set_build_cache_bytes(bytes);
        }
        assert_eq!(db.build_cache_bytes(), bound.unwrap_or(crm_projection_runtime::DEFAULT_BUILD_CACHE_BYTES));
        let handle = spawn(&db, log.store.clone(), projector.clone()).unwrap();
        until_held(&gate).await;
        let (position, reader) = (handle.status().position, handle.reader());
        drop(opener);
        if committed_before_the_end {
            assert!(0 < position && position < head, "{bound:?}: committed up to {position} of {head}");
            assert_eq!(reader.get::<u64>(b"total").unwrap(), Some(position), "the committed part serves");
        } else {
            assert_eq!(position, 0, "{bound:?}: everything held in memory until the end");
        }
        settle(&handle, &projector, &log.store).await;
        let rebuilt = fold_all(&projector, &Default::default(), &all_events(&log.store));
        assert_eq!(dump(&handle.reader().tree), rebuilt, "{bound:?}");
        handle.stop().await;
    }
}

type Gate = std::sync::Arc<(std::sync::Mutex<(bool, bool)>, std::sync::Condvar)>;

/// Counts like [`Counting`], but applying an event at a position in `hold` waits until the
/// gate opens (at most a minute). The serving build resumes after its checkpoint, so only a
/// rebuild's pass over the history is held.
#[derive(Clone)]
struct Gated {
    counting: Counting,
    hold: std::ops::RangeInclusive<u64>,
    /// (open, a rebuild step is waiting)
    gate: Gate,
    /// Events in `hold` applied so far.
    held: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

/// Opens the gate when dropped, so a failing test never leaves a step waiting.
struct OpenOnDrop(Gate);

impl Drop for OpenOnDrop {
    fn drop(&mut self) {
        if let Ok(mut gate) = self.0 .0.lock() {
            gate.0 = true;
        }
        self.0 .1.notify_all();
    }
}

impl crm_projection_runtime::Projector for Gated {
    type Value = u64;

    fn name(&self) -> &'static str {
        self.counting.name()
    }

    fn version(&self) -> u32 {
        self.counting.version()
    }

    fn follows(&self, stored_version: u32) -> bool {
        self.counting.follows(stored_version)
    }

    fn fingerprint(&self, rules: &crm_domain::Rules) -> u64 {
        self.counting.fingerprint(rules)
    }

    fn apply(
        &self,
        state: &mut crm_projection_runtime::State<'_, u64>,
        rules: &crm_domain::Rules,
        recorded: &crm_eventlog::RecordedEvent,
        event: Option<&crm_domain::Event>,
    ) -> Result<(), String> {
        if self.hold.contains(&recorded.position) {
            self.held.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let (lock, opened) = &*self.gate;
            let mut gate = lock.lock().unwrap();
            gate.1 = true;
            let _ = opened.wait_timeout_while(gate, Duration::from_secs(60), |(open, _)| !*open).unwrap();
        }
        self.counting.apply(state, rules, recorded, event)
    }

    fn derive_fresh(
        &self,
        state: &crm_projection_runtime::State<'_, u64>,
    ) -> Result<crm_projection_runtime::Derived<u64>, String> {
        self.counting.derive_fresh(state)
    }
}

/// A rebuild far behind the serving build steps beside it: while the rebuild is held inside a
/// step, the serving build still follows the log (before, each rebuild step held the serving
/// build back for the whole step, seconds on a large log), and the swap still comes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_serving_build_keeps_following_the_log_while_a_rebuild_steps() {
    a_held_rebuild_keeps_the_serving_build_live(20, None).await;
}

/// A new version that does not [follow](crm_projection_runtime::Projector::follows) the
/// stored one never folds events into the old build: it serves, frozen at its position and
/// saying so, while the rebuild runs, and the swap brings it to the head.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_version_the_new_code_does_not_follow_serves_frozen_until_the_swap() {
    let v1 = Counting::new("gated");
    let FrozenUpgrade { log, handle, opener, v2, built } = a_frozen_upgrade(&v1).await;
    append_all(&log.store, &commands(11, 50)).await;
    let head = log.store.committed_head();
    let waited = handle.wait_for(head, Duration::from_millis(500)).await;
    let (status, reader) = (handle.status(), handle.reader());
    drop(opener);
    assert!(
        matches!(waited, Err(crm_projection_runtime::Error::Upgrading { .. })),
        "the old build was not followed, and a wait past it is refused at once: {waited:?}"
    );
    assert_eq!((status.state, status.version, status.position, status.frozen), (RunState::Rebuilding, 1, built, true));
    assert_eq!((reader.position, reader.get::<u64>(b"total").unwrap()), (built, Some(built)));

    settle(&handle, &v2, &log.store).await;
    let status = handle.status();
    assert_eq!((status.state, status.version, status.rebuilds_completed, status.frozen), (RunState::Live, 2, 1, false));
    assert_eq!(total(&handle), log.store.committed_head());
    let rebuilt = fold_all(&v1, &Default::default(), &all_events(&log.store));
    assert_eq!(dump(&handle.reader().tree), rebuilt);
    handle.stop().await;
}

/// The same when the held step has few events left to apply but commits a long stretch held
/// in memory: here the first step applies a full shadow batch (262,144 events) without
/// committing, and the second, with 7,856 events left, commits everything. It is far behind
/// by what it commits, so it too runs beside the serving build.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_step_that_commits_a_long_stretch_runs_beside_the_serving_build() {
    a_held_rebuild_keeps_the_serving_build_live(270, Some(262_145)).await;
}

/// Appends `thousands` x 1,000 events, builds them, then rebuilds with a new version held at
/// the events from `hold_from` (default: the first) to the end of that history.
async fn a_held_rebuild_keeps_the_serving_build_live(thousands: usize, hold_from: Option<u64>) {
    let v1 = Counting { follows_older: true, ..Counting::new("gated") };
    let (log, db_dir) = a_log_built_by(&v1, thousands).await;
    let hold = hold_from.unwrap_or(1)..=log.store.committed_head();
    let gate: Gate = std::sync::Arc::new((std::sync::Mutex::new((false, false)), std::sync::Condvar::new()));
    let opener = OpenOnDrop(gate.clone());
    let v2 = Gated {
        counting: Counting { version: 2, ..v1.clone() },
        hold: hold.clone(),
        gate: gate.clone(),
        held: Default::default(),
    };
    let db = reopen(&db_dir).await;
    let handle = spawn(&db, log.store.clone(), v2).unwrap();
    // The rebuild (version 1 -> 2) starts at once and is held in its first step.
    until_held(&gate).await;
    append_all(&log.store, &commands(10, 50)).await;
    let head = log.store.committed_head();
    let reached = handle.wait_for(head, Duration::from_secs(30)).await;
    let status = handle.status();
    drop(opener);
    assert_eq!(reached.unwrap(), head, "the serving build followed the log while the rebuild was held");
    assert_eq!(
        (status.state, status.version, status.rebuilds_completed, status.frozen),
        (RunState::Rebuilding, 1, 0, false)
    );
    assert_eq!(total(&handle), head);

    let v2 = Gated { counting: Counting { version: 2, ..v1.clone() }, hold, gate, held: Default::default() };
    settle(&handle, &v2, &log.store).await;
    let status = handle.status();
    assert_eq!((status.version, status.rebuilds_completed), (2, 1));
    assert_eq!(total(&handle), log.store.committed_head());
    let rebuilt = fold_all(&v1, &Default::default(), &all_events(&log.store));
    assert_eq!(dump(&handle.reader().tree), rebuilt);
    handle.stop().await;
}

/// A rebuild for a new version that fails leaves the frozen build `Failed` with the
/// rebuild's failure (nothing else will move it on), still serving; a verify of it is
/// refused, since it would compare two versions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_upgrade_rebuild_leaves_the_frozen_build_failed_and_unverifiable() {
    let log = TempLog::new();
    let db_dir = log.dir.join("projections");
    append_all(&log.store, &commands(13, 300)).await;
    let v1 = Counting::new("counting");
    {
        let db = ProjectionDb::open(&db_dir).unwrap();
        let handle = spawn(&db, log.store.clone(), v1.clone()).unwrap();
        settle(&handle, &v1, &log.store).await;
        handle.stop().await;
    }
    let built = log.store.committed_head();
    let v2 = Counting { version: 2, fail_on: Some("CustomerCreated".into()), ..v1.clone() };
    let db = reopen(&db_dir).await;
    let handle = spawn(&db, log.store.clone(), v2).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while handle.status().state != RunState::Failed {
        assert!(std::time::Instant::now() < deadline, "the rebuild never failed: {:?}", handle.status());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let status = handle.status();
    assert_eq!((status.version, status.position, status.frozen), (1, built, true));
    assert!(status.failure.is_some_and(|f| f.detail.contains("CustomerCreated")), "{:?}", handle.status());
    assert_eq!(total(&handle), built, "the old build still serves");
    let verified = handle.verify().await;
    assert!(matches!(verified, Err(crm_projection_runtime::Error::Upgrading { .. })), "{verified:?}");
    handle.stop().await;
}

/// Rules that change the fingerprint, appended while the serving build is frozen for a
/// version change, are not lost: the rebuild swaps in at the frozen build's position, the
/// new build meets the change as it follows the log and rebuilds again, so the read model
/// ends on the new rules and at the head.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_changed_during_a_frozen_upgrade_rebuild_again_after_the_swap() {
    let v1 = Counting { fingerprints_rules: true, ..Counting::new("gated") };
    let FrozenUpgrade { log, handle, opener, v2, .. } = a_frozen_upgrade(&v1).await;
    let mut rules = crm_projection_runtime::current_rules(&log.store).unwrap();
    rules.version += 1;
    let change =
        crm_domain::Event::RulesChanged(crm_domain::RulesChanged { rules, reason: "阶段时限调整".into() });
    append_all(
        &log.store,
        &[crm_projection_runtime::fixtures::Generated { actor: "admin".into(), events: vec![change] }],
    )
    .await;
    assert!(handle.status().frozen);
    drop(opener);

    let rules = settle(&handle, &v2, &log.store).await;
    let status = handle.status();
    assert_eq!((status.version, status.fingerprint, status.rebuilds_completed), (2, rules.version, 2));
    assert_eq!(total(&handle), log.store.committed_head());
    handle.stop().await;
}

/// Stopping while a rebuild step runs in the background tells the step to stop: it ends at its
/// next read of the log (4,096 events) instead of applying the rest of its batch and writing
/// it, and the serving build is left as it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_during_a_rebuild_step_abandons_the_step() {
    let v1 = Counting::new("gated");
    let (log, db_dir) = a_log_built_by(&v1, 20).await;
    let head = log.store.committed_head();
    let gate: Gate = std::sync::Arc::new((std::sync::Mutex::new((false, false)), std::sync::Condvar::new()));
    let opener = OpenOnDrop(gate.clone());
    let held = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let v2 = Gated {
        counting: Counting { version: 2, ..v1.clone() },
        hold: 1..=head,
        gate: gate.clone(),
        held: held.clone(),
    };
    let db = reopen(&db_dir).await;
    let handle = spawn(&db, log.store.clone(), v2).unwrap();
    until_held(&gate).await;
    let stopping = {
        let handle = handle.clone();
        tokio::spawn(async move { handle.stop().await })
    };
    // The runner takes the stop at once (the step runs beside it); give it ample time to
    // flag the step before the step may go on.
    tokio::time::sleep(Duration::from_secs(2)).await;
    drop(opener);
    tokio::time::timeout(Duration::from_secs(60), stopping).await.expect("the stop returns").unwrap();
    let applied = held.load(std::sync::atomic::Ordering::Relaxed);
    assert!(applied <= 4096, "the abandoned step applied {applied} of {head} events");
    assert_eq!(total(&handle), head, "the serving build is as it was");
    let status = handle.status();
    assert_eq!((status.version, status.rebuilds_completed), (1, 0), "nothing was swapped in");
}

/// A log of `thousands` x 1,000 events outside the domain (appends of 1,000), and the
/// projection database (its directory) holding `projector`'s complete build of them.
async fn a_log_built_by(projector: &Counting, thousands: usize) -> (TempLog, std::path::PathBuf) {
    let log = TempLog::new();
    let db_dir = log.dir.join("projections");
    let event = |n: usize| crm_eventlog::NewEvent {
        id: uuid::Uuid::now_v7(),
        event_type: "BenchNoise".into(),
        schema_version: 1,
        metadata: Default::default(),
        payload: n.to_le_bytes().to_vec(),
    };
    for chunk in 0..thousands {
        let events = (0..1000).map(|i| event(chunk * 1000 + i)).collect();
        let stream = format!("noise-{chunk}");
        log.store.append(&stream, crm_eventlog::ExpectedVersion::Any, events).await.unwrap();
    }
    let db = ProjectionDb::open(&db_dir).unwrap();
    let handle = spawn(&db, log.store.clone(), projector.clone()).unwrap();
    settle(&handle, projector, &log.store).await;
    handle.stop().await;
    (log, db_dir)
}

/// A log `v1` has built, reopened with version 2 of `v1` (which does not follow version 1),
/// whose rebuild is held at its first event: the serving build is frozen at `built`.
struct FrozenUpgrade {
    log: TempLog,
    handle: crm_projection_runtime::ProjectionHandle,
    /// Opens the gate when dropped.
    opener: OpenOnDrop,
    v2: Gated,
    built: u64,
}

async fn a_frozen_upgrade(v1: &Counting) -> FrozenUpgrade {
    let (log, db_dir) = a_log_built_by(v1, 20).await;
    let built = log.store.committed_head();
    let gate: Gate = std::sync::Arc::new((std::sync::Mutex::new((false, false)), std::sync::Condvar::new()));
    let opener = OpenOnDrop(gate.clone());
    let v2 = Gated {
        counting: Counting { version: 2, ..v1.clone() },
        hold: 1..=built,
        gate: gate.clone(),
        held: Default::default(),
    };
    let db = reopen(&db_dir).await;
    let handle = spawn(&db, log.store.clone(), v2.clone()).unwrap();
    until_held(&gate).await;
    FrozenUpgrade { log, handle, opener, v2, built }
}

/// Waits (at most a minute) until a step of the gated rebuild waits at the gate.
async fn until_held(gate: &Gate) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !gate.0.lock().unwrap().1 {
        assert!(std::time::Instant::now() < deadline, "the rebuild never reached a held event");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A directory that is one sled database of every read model (the layout before one
/// database per read model) is converted at open: the serving build comes back from its own
/// database with its checkpoint, so the runner resumes (no rebuild, nothing counted twice);
/// a build that was not serving is not copied, and the old database's files are gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_database_directory_is_converted_and_resumed() {
    let log = TempLog::new();
    append_all(&log.store, &commands(11, 200)).await;
    let built = {
        let db = ProjectionDb::temporary().unwrap();
        let handle = spawn(&db, log.store.clone(), Counting::new("counting")).unwrap();
        settle(&handle, &Counting::new("counting"), &log.store).await;
        let tree = handle.reader().tree;
        let all: Vec<(sled::IVec, sled::IVec)> = tree.iter().map(|e| e.unwrap()).collect();
        handle.stop().await;
        all
    };
    let path = log.dir.join("projections");
    {
        let old = sled::Config::new().path(&path).open().unwrap();
        old.insert("active/counting", &3u64.to_be_bytes()).unwrap();
        let tree = old.open_tree("counting/3").unwrap();
        for (key, value) in &built {
            tree.insert(key, value).unwrap();
        }
        old.open_tree("counting/4").unwrap().insert("a shadow", "not copied").unwrap();
        old.flush().unwrap();
    }
    append_all(&log.store, &commands(12, 100)).await;
    let db = reopen(&path).await;
    let leftovers: Vec<_> = std::fs::read_dir(&path)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n == "db" || n == "conf" || n == "blobs" || n.starts_with("snap.") || n.contains("converted"))
        .collect();
    assert!(leftovers.is_empty(), "the old files are removed: {leftovers:?}");
    let serving = db.serving_tree("counting").unwrap().expect("a serving build");
    assert_eq!(serving.name(), "counting/3");
    let copied: Vec<(sled::IVec, sled::IVec)> = serving.iter().map(|e| e.unwrap()).collect();
    assert_eq!(copied, built, "the build is copied whole, checkpoint included");
    assert!(db.serving_tree("shadow").unwrap().is_none(), "a name that never ran has no build");
    assert!(!path.join("shadow").exists(), "and gets no database");
    let handle = spawn(&db, log.store.clone(), Counting::new("counting")).unwrap();
    settle(&handle, &Counting::new("counting"), &log.store).await;
    assert_eq!(handle.status().rebuilds_completed, 0, "the copied checkpoint is resumed");
    assert_eq!(total(&handle), log.store.committed_head());
    let rebuilt = fold_all(&Counting::new("counting"), &Default::default(), &all_events(&log.store));
    assert_eq!(dump(&handle.reader().tree), rebuilt);
    handle.stop().await;
    drop((handle, serving, db));
    let db = reopen(&path).await;
    let trees = db.serving_tree("counting").unwrap().map(|t| t.name());
    assert_eq!(trees.as_deref(), Some(&b"counting/3"[..]));
}

/// A conversion interrupted while it removed the old files (its marker written: every copy
/// is complete) goes on removing them at the next open, without opening what is left of the
/// old database (which sled could not open).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_removal_of_the_single_database_goes_on_at_the_next_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("projections");
    {
        let db = ProjectionDb::open(&path).unwrap();
        let log = TempLog::new();
        append_all(&log.store, &commands(13, 50)).await;
        let handle = spawn(&db, log.store.clone(), Counting::new("counting")).unwrap();
        settle(&handle, &Counting::new("counting"), &log.store).await;
        handle.stop().await;
    }
    // What a crash after the marker and the removal of `db` leaves.
    std::fs::write(path.join("single-database-converted"), b"").unwrap();
    std::fs::write(path.join("conf"), b"segment_size: 524288").unwrap();
    std::fs::write(path.join("snap.00000000000A0000"), b"not a snapshot").unwrap();
    std::fs::create_dir(path.join("blobs")).unwrap();
    let db = reopen(&path).await;
    let left: Vec<_> = std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(left, vec![std::ffi::OsString::from("counting")], "only the read model's database is left");
    assert!(db.serving_tree("counting").unwrap().is_some());
}

/// Warming reads each read model's data file whole, the named ones first and the others
/// smallest first, within the budget, and stops when asked; a temporary store has no files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warming_reads_the_read_models_files_within_the_budget() {
    use std::sync::atomic::AtomicBool;
    let log = TempLog::new();
    let db_dir = log.dir.join("projections");
    append_all(&log.store, &commands(4, 200)).await;
    let db = ProjectionDb::open(&db_dir).unwrap();
    for name in ["small", "large"] {
        let handle = spawn(&db, log.store.clone(), Counting::new(name)).unwrap();
        settle(&handle, &Counting::new(name), &log.store).await;
        handle.stop().await;
    }
    // Make one file clearly larger than the other.
    let large = db.serving_tree("large").unwrap().unwrap();
    for i in 0..2_000u32 {
        large.insert(format!("pad/{i}"), vec![7u8; 512]).unwrap();
    }
    db.flush().unwrap();
    let size = |name: &str| std::fs::metadata(db_dir.join(name).join("db")).unwrap().len();
    let (small, large) = (size("small"), size("large"));
    assert!(small < large, "{small} < {large}");
    let (go, none) = (AtomicBool::new(false), &[] as &[&str]);
    assert_eq!(db.warm_files(none, u64::MAX, &|_| {}, &go).unwrap(), small + large);
    let budget = small + large - 1;
    assert_eq!(db.warm_files(none, budget, &|_| {}, &go).unwrap(), small, "the larger file would pass the budget");
    assert_eq!(db.warm_files(&["large"], budget, &|_| {}, &go).unwrap(), large, "named first, the other skipped");
    assert_eq!(db.warm_files(none, large, &|_| {}, &go).unwrap(), small, "the large one skipped, the small one read");
    assert_eq!(db.warm_files(none, u64::MAX, &|_| {}, &AtomicBool::new(true)).unwrap(), 0);
    assert_eq!(ProjectionDb::temporary().unwrap().warm_files(none, u64::MAX, &|_| {}, &go).unwrap(), 0);
}

/// Warming the trees walks every entry of every read model's serving tree, whatever is named
/// first, and stops when asked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warming_the_trees_walks_every_entry_of_every_serving_tree() {
    use std::sync::atomic::AtomicBool;
    let log = TempLog::new();
    append_all(&log.store, &commands(4, 200)).await;
    let db = ProjectionDb::open(&log.dir.join("projections")).unwrap();
    for name in ["one", "two"] {
        let handle = spawn(&db, log.store.clone(), Counting::new(name)).unwrap();
        settle(&handle, &Counting::new(name), &log.store).await;
        handle.stop().await;
    }
    let one = db.serving_tree("one").unwrap().unwrap();
    for i in 0..5_000u32 {
        one.insert(format!("pad/{i}"), vec![7u8; 16]).unwrap();
    }
    let walked = |names: &[&str]| {
        let (mut entries, mut bytes) = (0u64, 0u64);
        for name in names {
            for item in db.serving_tree(name).unwrap().unwrap().iter() {
                let (k, v) = item.unwrap();
                (entries, bytes) = (entries + 1, bytes + (k.len() + v.len()) as u64);
            }
        }
        (entries, bytes)
    };
    let go = AtomicBool::new(false);
    let all = db.warm_trees(&["two"], &|_| {}, &go);
    assert_eq!(all, walked(&["one", "two"]));
    assert!(all.0 > 5_000, "{all:?}");
    let reported = std::sync::Mutex::new(Vec::new());
    assert_eq!(db.warm_trees(&[], &|n| reported.lock().unwrap().push(n), &go), all);
    assert!(reported.lock().unwrap().is_empty(), "progress comes per 2^20 entries");
    assert_eq!(db.warm_trees(&["one"], &|_| {}, &AtomicBool::new(true)), (0, 0));
}
