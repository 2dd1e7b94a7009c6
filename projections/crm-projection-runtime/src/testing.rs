//! Folding a projector over events in memory, without a log or a runner: the reference a
//! property test compares the runner's incremental result with.

use std::collections::BTreeMap;

use crm_domain::{Event, Rules};
use crm_eventlog::RecordedEvent;

use crate::projector::{encode_value, Cache, Projector, META_KEY, SPILL_KEY};

/// Applies `events` to a fresh temporary tree in one batch and returns every key and encoded
/// value (the checkpoint excluded).
///
/// # Panics
/// When an event fails to decode or apply, or sled fails: test input only.
pub fn fold_all<P: Projector>(projector: &P, rules: &Rules, events: &[RecordedEvent]) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let db = sled::Config::new().temporary(true).open().expect("temporary sled");
    let tree = db.open_tree("fold").expect("tree");
    fold_into(projector, rules, events, &tree);
    dump(&tree)
}

/// Applies `events` to the empty `tree` in one batch, every payload decoded (so a type
/// missing from [`Projector::decodes`] shows as a difference from the runner's build).
fn fold_into<P: Projector>(projector: &P, rules: &Rules, events: &[RecordedEvent], tree: &sled::Tree) {
    let mut cache = Cache::<P::Value>::new(true);
    let mut state = cache.state(tree);
    for recorded in events {
        let event = match Event::decode(&recorded.event_type, recorded.schema_version, &recorded.payload) {
            Ok(event) => Some(event),
            Err(crm_domain::DecodeError::UnknownEventType(_)) => None,
            Err(e) => panic!("undecodable event at {}: {e}", recorded.position),
        };
        projector.apply(&mut state, rules, recorded, event.as_ref()).expect("applies");
    }
    let derived = cache.derive_fresh(projector, tree).expect("derives");
    let mut batch = sled::Batch::default();
    cache.drain_into(&mut batch, derived).expect("drains");
    tree.apply_batch(batch).expect("batch");
}

/// What [`Projector::prefetch`] spares a live build after a restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Coverage {
    /// Keys read ahead.
    pub read_ahead: u64,
    /// Keys the fold still read from the tree itself, one at a time.
    pub misses: u64,
    /// Keys the fold reads from the tree when nothing is read ahead.
    pub needed: u64,
}

/// Measures [`Coverage`]: `events[..split]` are folded and written to a tree first (deriving
/// what the projector derives, [`Projector::derive_fresh`]); the rest are then applied
/// `chunk` events at a time by a build whose memory starts empty (reads go to the tree), as
/// the runner does: each chunk decoded as the runner decodes it (`builder::decode_for`), the
/// keys `prefetch` lists read ahead, the chunk applied and committed. Run twice, with and
/// without the read-ahead; each run must end as one fold of all the events.
///
/// # Panics
/// When an event fails to decode or apply, or sled fails: test input only.
pub fn prefetch_coverage<P: Projector>(
    projector: &P,
    rules: &Rules,
    events: &[RecordedEvent],
    split: usize,
    chunk: usize,
) -> Coverage {
    let decode = |recorded: &RecordedEvent| {
        crate::builder::decode_for(projector, recorded)
            .unwrap_or_else(|e| panic!("undecodable event at {}: {e}", recorded.position))
    };
    let run = |read_ahead: bool| -> (u64, u64) {
        let db = sled::Config::new().temporary(true).open().expect("temporary sled");
        let tree = db.open_tree("fold").expect("tree");
        let (before, after) = events.split_at(split);
        fold_into(projector, rules, before, &tree);
        let (mut listed_read, mut misses) = (0, 0);
        let mut cache = Cache::<P::Value>::new(false);
        for part in after.chunks(chunk.max(1)) {
            let decoded: Vec<Option<Event>> = part.iter().map(decode).collect();
            let listed: Vec<(&RecordedEvent, Option<&Event>)> =
                part.iter().zip(&decoded).map(|(r, e)| (r, e.as_ref())).collect();
            if read_ahead {
                listed_read += cache.prefetch(projector, rules, &tree, &listed).expect("read ahead") as u64;
            }
            let mut state = cache.state(&tree);
            for (recorded, event) in &listed {
                projector.apply(&mut state, rules, recorded, *event).expect("applies");
            }
            misses += cache.take_misses();
            let mut batch = sled::Batch::default();
            cache.drain_into(&mut batch, Vec::new()).expect("drains");
            tree.apply_batch(batch).expect("batch");
        }
        // The first half derived what its projector derives, the rest kept it in step.
        assert!(dump(&tree) == fold_all(projector, rules, events), "kept in step after a derived half != one fold");
        (listed_read, misses)
    };
    let (read_ahead, misses) = run(true);
    let (_, needed) = run(false);
    Coverage { read_ahead, misses, needed }
}

/// The events of `commands` generated commands (`seed`, 20 users), appended to a temporary
/// log.
fn generated_events(seed: u64, commands: usize) -> Vec<RecordedEvent> {
    let mut g =
        crate::fixtures::Generator::new(crate::fixtures::GeneratorConfig { seed, users: 20, ..Default::default() });
    let commands: Vec<_> = (0..commands).map(|_| g.next_command()).collect();
    let log = TempLog::new();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    rt.block_on(append_all(&log.store, &commands));
    all_events(&log.store)
}

/// The check a read model with a [`Projector::prefetch`] runs: over 3,000 generated commands
/// (half folded and stored first, the rest applied by a build whose memory starts empty, as
/// after a restart), the fold still reads itself at most one key in 20 of those it reads
/// without any read-ahead, and the read-ahead reads at most three times that many keys.
///
/// # Panics
/// When it reads more: that is the test.
pub fn assert_live_reads_are_read_ahead<P: Projector>(projector: &P) {
    let events = generated_events(11, 3000);
    let c = prefetch_coverage(projector, &Rules::default(), &events, events.len() / 2, 512);
    assert!(c.needed > 0, "the fold reads nothing from the tree: {c:?}");
    assert!(c.misses * 20 <= c.needed, "the fold still reads keys one at a time: {c:?}");
    assert!(c.read_ahead <= 3 * c.needed, "the read-ahead reads keys the fold does not need: {c:?}");
}

/// The check a read model with [`Projector::first_keys`] runs: 3,000 generated commands
/// folded by a fresh build (everything in memory, as the runner's fresh builds fold), where
/// every key listed for an event holds a value once the event is applied (a key `apply`
/// read or wrote, not a misspelt one), and at least `min_permille` of the decoded events
/// list one.
///
/// # Panics
/// When a listed key is not held, or too few events list one: that is the test.
pub fn assert_first_keys_are_held<P: Projector>(projector: &P, min_permille: usize) {
    let db = sled::Config::new().temporary(true).open().expect("temporary sled");
    let tree = db.open_tree("fold").expect("tree");
    let mut cache = Cache::<P::Value>::new(true);
    let (mut decoded, mut listing, mut keys) = (0, 0, Vec::new());
    for recorded in generated_events(12, 3000) {
        let event = crate::builder::decode_for(projector, &recorded)
            .unwrap_or_else(|e| panic!("undecodable event at {}: {e}", recorded.position));
        projector.first_keys(&recorded, event.as_ref(), &mut keys);
        let mut state = cache.state(&tree);
        projector.apply(&mut state, &Rules::default(), &recorded, event.as_ref()).expect("applies");
        decoded += usize::from(event.is_some());
        listing += usize::from(!keys.is_empty());
        for key in keys.drain(..) {
            assert!(
                state.get(&key).expect("in memory").is_some(),
                "{} at {} lists {}, which holds nothing after it",
                recorded.event_type,
                recorded.position,
                crate::printable_key(&key)
            );
        }
    }
    assert!(listing * 1000 >= decoded * min_permille, "{listing} of {decoded} decoded events list a first key");
}

/// Checks that every name in `event_types` is an event type of the domain (a misspelt name
/// in a projector's [`Projector::decodes`] list would leave that type undecoded).
///
/// # Panics
/// On a name the domain does not define: that is the test.
pub fn assert_event_types_exist(event_types: &[&str]) {
    for name in event_types {
        let unknown = matches!(Event::decode(name, 1, &[]), Err(crm_domain::DecodeError::UnknownEventType(_)));
        assert!(!unknown, "{name} is not an event type of the domain");
    }
}

/// Every key and value of a projection tree, the checkpoint excluded.
///
/// # Panics
/// When sled fails: test input only.
pub fn dump(tree: &sled::Tree) -> BTreeMap<Vec<u8>, Vec<u8>> {
    tree.iter()
        .map(|r| r.expect("iterate"))
        .filter(|(k, _)| k.as_ref() != META_KEY)
        .map(|(k, v)| (k.to_vec(), v.to_vec()))
        .collect()
}

/// Leaves `tree` as a crash in the middle of a chunked commit does: with its marker.
///
/// # Panics
/// When sled fails: test input only.
pub fn interrupt_commit(tree: &sled::Tree) {
    tree.insert(SPILL_KEY, &[]).expect("insert the marker");
}

/// The encoded form of a value, to compare dumps with expectations.
pub fn encoded<V: serde::Serialize>(value: &V) -> Vec<u8> {
    encode_value(value)
}

/// A projector that counts events: `total`, per event type (`type/<t>`) and per stream
/// (`stream/<s>`). Applying an event twice or skipping one shows in `total` against the head.
/// With `fail_on` set, it refuses every event of that type.
#[derive(Debug, Clone, Default)]
pub struct Counting {
    pub version: u32,
    pub fail_on: Option<String>,
    pub name: &'static str,
    /// Whether it follows a stored build of an older version during the rebuild
    /// ([`Projector::follows`]); its values mean the same in every version.
    pub follows_older: bool,
    /// Whether its fingerprint is the rules' version (so every rules change rebuilds it);
    /// 0 otherwise.
    pub fingerprints_rules: bool,
}

impl Counting {
    pub fn new(name: &'static str) -> Self {
        Counting { version: 1, fail_on: None, name, follows_older: false, fingerprints_rules: false }
    }
}

impl Projector for Counting {
    type Value = u64;

    fn name(&self) -> &'static str {
        self.name
    }

    fn version(&self) -> u32 {
        self.version
    }

    fn follows(&self, stored_version: u32) -> bool {
        self.follows_older && stored_version < self.version
    }

    fn fingerprint(&self, rules: &Rules) -> u64 {
        if self.fingerprints_rules {
            rules.version
        } else {
            0
        }
    }

    /// Two keys `apply` writes, and one it never does (a wrong hint costs a lookup, nothing else).
    fn first_keys(&self, recorded: &RecordedEvent, _: Option<&Event>, keys: &mut Vec<Vec<u8>>) {
        keys.push(b"total".to_vec());
        keys.push(format!("type/{}", recorded.event_type).into_bytes());
        keys.push(format!("never-read/{}", recorded.position).into_bytes());
    }

    /// The keys `apply` reads, and one it never does (a wrong hint costs a read, nothing else).
    fn prefetch(
        &self,
        _rules: &Rules,
        recorded: &RecordedEvent,
        _: Option<&Event>,
        _: &crate::Cached<'_, u64>,
        keys: &mut Vec<Vec<u8>>,
    ) {
        keys.push(format!("stream/{}", recorded.stream).into_bytes());
        keys.push(format!("never-read/{}", recorded.position).into_bytes());
    }

    fn apply(
        &self,
        state: &mut crate::State<'_, u64>,
        _rules: &Rules,
        recorded: &RecordedEvent,
        _event: Option<&Event>,
    ) -> Result<(), String> {
        if self.fail_on.as_deref() == Some(recorded.event_type.as_str()) {
            return Err(format!("refusing {}", recorded.event_type));
        }
        // A fresh build derives `total` at its first commit ([`Projector::derive_fresh`]).
        let total = (!state.fresh()).then(|| b"total".to_vec());
        for key in
            [format!("type/{}", recorded.event_type).into_bytes(), format!("stream/{}", recorded.stream).into_bytes()]
                .into_iter()
                .chain(total)
        {
            *state.get_or_insert_with(&key, || 0)? += 1;
        }
        Ok(())
    }

    /// `total`, the sum of the counts per type: so every test that compares a build with
    /// [`fold_all`], or checks `total` against the head, covers both ways of keeping a key.
    fn derive_fresh(&self, state: &crate::State<'_, u64>) -> Result<crate::Derived<u64>, String> {
        let total: u64 = state.held().filter(|(key, _)| key.starts_with(b"type/")).map(|(_, n)| n).sum();
        Ok(if total > 0 { vec![(b"total".to_vec(), total)] } else { Vec::new() })
    }
}

/// A log in a fresh temporary directory, removed on drop.
pub struct TempLog {
    pub store: crm_eventlog::SledEventStore,
    pub dir: std::path::PathBuf,
}

impl TempLog {
    /// # Panics
    /// When the store cannot be opened: test input only.
    pub fn new() -> Self {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("crm-projection-test-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store =
            crm_eventlog::SledEventStore::open(crm_eventlog::Config::new(dir.join("eventlog"))).expect("open log");
        TempLog { store, dir }
    }
}

impl Default for TempLog {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TempLog {
    fn drop(&mut self) {
        self.store.close();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Appends every generated command, one atomic append each (buffered durability: tests).
///
/// # Panics
/// When an append fails: test input only.
pub async fn append_all(store: &crm_eventlog::SledEventStore, commands: &[crate::fixtures::Generated]) {
    use crm_eventlog::EventStore;
    for command in commands {
        let mut ids = uuid::Uuid::now_v7;
        let appends = command.to_appends(&mut ids);
        store.append_many(appends, crm_eventlog::Durability::Buffered).await.expect("append");
    }
}

/// Every event of the log.
///
/// # Panics
/// When the log cannot be read: test input only.
pub fn all_events(store: &crm_eventlog::SledEventStore) -> Vec<RecordedEvent> {
    store.read_all_blocking(1, usize::MAX).expect("read log")
}

/// Waits until `handle` serves a live build at the log's head whose fingerprint matches the
/// current rules (any rebuild a rule change triggered has swapped in).
///
/// # Panics
/// After 120 seconds, or when the projection fails: test input only.
pub async fn settle<P: Projector>(
    handle: &crate::ProjectionHandle,
    projector: &P,
    store: &crm_eventlog::SledEventStore,
) -> Rules {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let head = store.committed_head();
        let rules = crate::current_rules(store).expect("rules");
        let status = handle.status();
        assert_ne!(status.state, crate::RunState::Failed, "projection failed: {status:?}");
        if status.state == crate::RunState::Live
            && status.position == head
            && status.fingerprint == projector.fingerprint(&rules)
            && status.version == projector.version()
        {
            return rules;
        }
        assert!(std::time::Instant::now() < deadline, "projection did not settle: {status:?}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// The model-based check every read model runs: append `commands` in chunks of the given
/// sizes while the runner follows (waiting for it after each chunk, restarting it halfway),
/// then compare the incrementally built read model, key by key, with a fold of the whole log
/// from scratch. Returns the log and the running handle for further checks.
///
/// # Panics
/// When they differ: that is the test.
pub async fn assert_incremental_equals_rebuild<P: Projector + Clone>(
    projector: P,
    commands: &[crate::fixtures::Generated],
    chunks: &[usize],
) -> (TempLog, crate::ProjectionHandle, crate::ProjectionDb) {
    let log = TempLog::new();
    let db_dir = log.dir.join("projections");
    let mut db = crate::ProjectionDb::open(&db_dir).expect("projection db");
    let mut handle = crate::spawn(&db, log.store.clone(), projector.clone()).expect("spawn");
    let mut rest = commands;
    let mut chunk_sizes = chunks.iter().copied().cycle();
    let mut restarted = false;
    while !rest.is_empty() {
        let n = chunk_sizes.next().unwrap_or(1).clamp(1, rest.len());
        append_all(&log.store, &rest[..n]).await;
        rest = &rest[n..];
        if !restarted && rest.len() <= commands.len() / 2 {
            restarted = true;
            handle.stop().await;
            drop(handle);
            drop(db);
            db = reopen(&db_dir).await;
            handle = crate::spawn(&db, log.store.clone(), projector.clone()).expect("respawn");
        }
        let head = log.store.committed_head();
        handle.wait_for(head, std::time::Duration::from_secs(60)).await.expect("caught up");
    }
    let rules = settle(&handle, &projector, &log.store).await;
    let rebuilt = fold_all(&projector, &rules, &all_events(&log.store));
    let incremental = dump(&handle.reader().tree);
    if incremental != rebuilt {
        let only_incremental: Vec<_> = incremental
            .iter()
            .filter(|(k, v)| rebuilt.get(*k) != Some(*v))
            .map(|(k, _)| crate::printable_key(k))
            .take(10)
            .collect();
        let only_rebuilt: Vec<_> = rebuilt
            .iter()
            .filter(|(k, v)| incremental.get(*k) != Some(*v))
            .map(|(k, _)| crate::printable_key(k))
            .take(10)
            .collect();
        panic!("incremental != rebuilt; differing keys: incremental {only_incremental:?}, rebuilt {only_rebuilt:?}");
    }
    (log, handle, db)
}

/// Opens the projection database again once every handle of the previous opening is gone
/// (the runner task drops its handle just after answering `stop`).
///
/// # Panics
/// After 5 seconds.
pub async fn reopen(dir: &std::path::Path) -> crate::ProjectionDb {
    for _ in 0..500 {
        match crate::ProjectionDb::open(dir) {
            Ok(db) => return db,
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(10)).await,
        }
    }
    crate::ProjectionDb::open(dir).expect("projection db reopens")
}
