//! One build of one projection: a sled tree, its checkpoint, and the fold that advances it.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crm_domain::{DecodeError, Event, Rules};
use crm_eventlog::{RecordedEvent, SledEventStore};
use serde::{Deserialize, Serialize};

use crate::projector::{
    decode_value, encode_value, hash_key, Cache, KeyHasher, Projector, Warm, Written, CACHE_BYTES, META_KEY, SPILL_KEY,
};

/// Commits of more keys than this, by a build that serves nothing yet, go to sled as single
/// inserts between a [`SPILL_KEY`] marker and the checkpoint instead of one atomic batch.
const SPILL_ABOVE: usize = 16_384;

/// Events read from the log per call: what the log reserves room for at once (4,096), so the
/// buffer never grows by copying into freshly faulted memory.
const READ_CHUNK: usize = 4_096;

/// The event type of [`Event::RulesChanged`].
const RULES_CHANGED: &str = "RulesChanged";

/// Steps over more events than this read the log on other threads (see [`Builder::step`]).
const PIPELINE_FROM: u64 = 2 * READ_CHUNK as u64;

/// Chunks each reader of a pipelined step may hold ready beyond the one being applied.
const CHUNKS_AHEAD: usize = 2;

/// Threads that read and decode the log for a pipelined step, each every `READERS`th chunk.
/// One was the fold's bottleneck in a rebuild from a cold page cache: it waited on the disk
/// for each of sled's pages in turn, and the fold waited on it for a third of its time
/// (`perf` of a customers rebuild, 2026-12-07: the fold's threads busy 59 to 78% of the
/// fold, reading at 290 MB/s from a disk that reads 0.8 to 1.0 GB/s in order).
const READERS: usize = 2;

/// Events read from the log, each with its decoded payload (`Ok(None)`: not decoded, see
/// [`Projector::decodes`]; `Err`: it failed to decode, reported when its turn comes).
struct Chunk {
    events: Vec<RecordedEvent>,
    decoded: Vec<Result<Option<Event>, String>>,
    hints: Hints,
}

/// The cache's hashes of the keys [`Projector::first_keys`] lists for a chunk's events (none
/// unless its reader was given the cache's hasher).
#[derive(Default)]
struct Hints {
    /// Event after event.
    hashes: Vec<u32>,
    /// Where each event's hashes end.
    ends: Vec<u32>,
}

impl Hints {
    /// The hashes of event `n`'s first keys (none past the chunk's end).
    fn of(&self, n: usize) -> &[u32] {
        match self.ends.get(n) {
            Some(&end) => &self.hashes[n.checked_sub(1).map_or(0, |m| self.ends[m] as usize)..end as usize],
            None => &[],
        }
    }
}

/// How many events ahead of the fold the place, the entry and the value of each event's
/// first keys are brought in (each step reads what the step before brought in). An event
/// the read model changes takes the fold a microsecond or two, one it ignores a tenth of
/// one, about as long as a load from memory: two events between steps.
const WARM_AHEAD: [(usize, Warm); 3] = [(6, Warm::Place), (4, Warm::Entry), (2, Warm::Value)];

/// The payload of `recorded` as a build of `projector` sees it: decoded when the projector
/// reads its type (and for every rules change: the runner needs them), `None` otherwise and
/// for types the domain does not define (the auth subsystem's token events, say), an error
/// for a payload of a read type that fails to decode.
pub(crate) fn decode_for<P: Projector>(projector: &P, recorded: &RecordedEvent) -> Result<Option<Event>, String> {
    if recorded.event_type != RULES_CHANGED && !projector.decodes(&recorded.event_type) {
        return Ok(None);
    }
    match Event::decode(&recorded.event_type, recorded.schema_version, &recorded.payload) {
        Ok(event) => Ok(Some(event)),
        Err(DecodeError::UnknownEventType(_)) => Ok(None),
        Err(e) => Err(format!("decoding {}: {e}", recorded.event_type)),
    }
}

/// Reads up to [`READ_CHUNK`] events from position `from`, none past `end`, and decodes them
/// as [`decode_for`] does; with the cache's `hasher`, also hashes the keys each event names
/// first ([`Projector::first_keys`]).
fn read_chunk<P: Projector>(
    store: &SledEventStore,
    projector: &P,
    from: u64,
    end: u64,
    hasher: Option<&KeyHasher>,
) -> Result<Chunk, String> {
    let want = (end + 1 - from).min(READ_CHUNK as u64) as usize;
    let events = store.read_all_blocking(from, want).map_err(|e| e.to_string())?;
    let decoded: Vec<_> = events.iter().map(|recorded| decode_for(projector, recorded)).collect();
    let mut hints = Hints::default();
    if let Some(hasher) = hasher {
        let mut keys = Vec::new();
        hints.ends.reserve(events.len());
        for (recorded, event) in events.iter().zip(&decoded) {
            if let Ok(event) = event {
                projector.first_keys(recorded, event.as_ref(), &mut keys);
                hints.hashes.extend(keys.drain(..).map(|key| hash_key(hasher, &key)));
            }
            hints.ends.push(u32::try_from(hints.hashes.len()).unwrap_or(u32::MAX));
        }
    }
    Ok(Chunk { events, decoded, hints })
}

/// Most threads a chunked commit writes on.
const MAX_WRITE_THREADS: usize = 4;

/// Writes `entries` to `tree` as single inserts and removes, stopping when `abandon` is set.
/// The caller's [`SPILL_KEY`] marker stays either way: an abandoned tree is dropped, or
/// emptied when reopened.
fn insert_all(tree: &sled::Tree, entries: &[Written], abandon: &AtomicBool) -> Result<(), String> {
    for (n, (key, value)) in entries.iter().enumerate() {
        if n % 4096 == 0 && abandon.load(Ordering::Relaxed) {
            return Err("abandoned: the runner stopped".into());
        }
        match value {
            Some(bytes) => tree.insert(key.as_slice(), bytes.as_slice()).map(drop),
            None => tree.remove(key.as_slice()).map(drop),
        }
        .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Where a step is: the last applied position, its `recorded_at`, and the events applied.
struct Progress {
    position: u64,
    last_recorded: i64,
    applied: u64,
}

/// Stored under [`META_KEY`] in every projection tree, in the same batch as the state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Meta {
    /// Last applied position (0: nothing applied).
    pub(crate) position: u64,
    pub(crate) version: u32,
    pub(crate) fingerprint: u64,
    /// The rules this build runs with.
    pub(crate) rules: Rules,
    /// `recorded_at` of the event at `position`.
    pub(crate) last_recorded_at_micros: i64,
}

/// Why a build stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The position of the event that could not be applied (or read).
    pub position: u64,
    pub detail: String,
}

#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct StepOutcome {
    pub(crate) applied: u64,
}

/// When a step writes what it applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Commit {
    /// At the end of every step (a live build: queries see each event soon).
    EveryStep,
    /// Only when the build reaches its target or its cache is full (a rebuild, a
    /// verification, a catch-up from far behind): each key is written once per commit, in
    /// key order, however many events changed it.
    WhenDone,
}

/// The position a build over `tree` resumes after: its checkpoint, or 0 when it has none or
/// holds the marker of an interrupted chunked commit (then [`Builder::open`] empties it and
/// builds from position 0). For projectors that keep in-memory state beside the tree and
/// load it before the runner starts: what they load must be what the build resumes from.
pub fn resume_position(tree: &sled::Tree) -> crate::Result<u64> {
    if tree.get(SPILL_KEY)?.is_some() {
        return Ok(0);
    }
    Ok(match tree.get(META_KEY)? {
        Some(bytes) => decode_value::<Meta>(META_KEY, &bytes)?.position,
        None => 0,
    })
}

/// The memory the caches of builds far behind share ([`crate::ProjectionDb::set_build_cache_bytes`]).
/// Each may hold an even share of the total among those in progress, plus an even part of
/// what the others leave of theirs unused: one rebuild after a rules change may hold all of
/// it; of seven first builds at once, the large ones use what the small ones do not need.
/// Builds that each hold no more than their bound hold no more than the total together. Each
/// checks at every chunk, against what the others held at their last check: a build that
/// grew into room another left finds that room claimed back at its own next check (its next
/// chunk, or its next step), and until then the total can be passed by up to that room.
pub(crate) struct BuildBudget {
    total: AtomicU64,
    /// What each build far behind held at its last check, one entry per share.
    held: Mutex<Vec<Arc<AtomicU64>>>,
}

impl BuildBudget {
    pub(crate) fn new(total: u64) -> Self {
        BuildBudget { total: AtomicU64::new(total), held: Mutex::default() }
    }

    pub(crate) fn set_total(&self, total: u64) {
        self.total.store(total, Ordering::Relaxed);
    }

    pub(crate) fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    /// Counts one more build far behind until the returned share is dropped.
    pub(crate) fn share(self: &Arc<Self>) -> BudgetShare {
        let held = Arc::new(AtomicU64::new(0));
        self.held.lock().expect("budget lock").push(held.clone());
        BudgetShare { budget: self.clone(), held }
    }

    /// The builds far behind now.
    pub(crate) fn building(&self) -> usize {
        self.held.lock().expect("budget lock").len()
    }

    /// The even share of each build far behind now (all of it when none is).
    pub(crate) fn per_build(&self) -> u64 {
        self.total() / self.building().max(1) as u64
    }

    /// The bound of the build holding `share`: its even share, plus its even part (among
    /// itself and the others at or past their even share) of what the others below theirs
    /// leave unused.
    pub(crate) fn bound_of(&self, share: &BudgetShare) -> u64 {
        let held = self.held.lock().expect("budget lock");
        let even = self.total() / held.len().max(1) as u64;
        let (mut unused, mut hungry) = (0, 1);
        for other in held.iter().filter(|h| !Arc::ptr_eq(h, &share.held)) {
            match even.checked_sub(other.load(Ordering::Relaxed)) {
                Some(left) if left > 0 => unused += left,
                _ => hungry += 1,
            }
        }
        even + unused / hungry
    }
}

/// One build's claim on a [`BuildBudget`], released when dropped.
pub(crate) struct BudgetShare {
    budget: Arc<BuildBudget>,
    /// What this build held at its last check.
    held: Arc<AtomicU64>,
}

impl BudgetShare {
    /// Records what this build holds now, for the others' bounds.
    pub(crate) fn publish(&self, bytes: u64) {
        self.held.store(bytes, Ordering::Relaxed);
    }
}

impl Drop for BudgetShare {
    fn drop(&mut self) {
        // Not `expect`: a panic while dropping during a panic would abort.
        let mut held = self.budget.held.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        held.retain(|h| !Arc::ptr_eq(h, &self.held));
    }
}

pub(crate) struct Builder<P: Projector> {
    pub(crate) projector: Arc<P>,
    pub(crate) tree: sled::Tree,
    /// The committed checkpoint: what the tree holds.
    pub(crate) meta: Meta,
    /// The newest rules seen in a `RulesChanged` event during the last step.
    pub(crate) seen_rules: Option<Rules>,
    /// Last applied position and its `recorded_at`, committed or not (ahead of `meta` while a
    /// [`Commit::WhenDone`] build holds its state in memory).
    applied: (u64, i64),
    /// This build serves no query (a shadow, or a first build that started on an empty
    /// tree): a large commit may go to sled as single inserts, bracketed by [`SPILL_KEY`].
    chunked: bool,
    cache: Cache<P::Value>,
    /// The memory this build shares with the others far behind ([`Builder::with_budget`]).
    budget: Arc<BuildBudget>,
    /// Held while this build is far behind (its steps commit when done): one of the builds
    /// the budget is split among.
    share: Option<BudgetShare>,
    /// Set by the runner when it stops while a step of this build is in flight (a shadow
    /// nobody will use): the step ends at its next read of the log, or within its chunked
    /// write, instead of applying and writing the rest.
    abandon: Arc<AtomicBool>,
    /// How the last commit reached sled.
    written: WrittenAs,
}

/// How a commit reached sled ([`Builder::write`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WrittenAs {
    /// Nothing committed yet.
    Nothing,
    /// One atomic batch.
    Batch,
    /// Single inserts on several threads, after the [`SPILL_KEY`] marker.
    Inserted,
    /// One [`sled::Tree::bulk_load`] of an empty tree, the marker with them.
    Loaded,
}

impl<P: Projector> Builder<P> {
    /// A build over `tree`, resuming from its stored checkpoint, or starting empty with `rules`.
    /// `shadow`: nothing reads the tree until the build is complete. A tree left with
    /// [`SPILL_KEY`] (a crash in the middle of a chunked commit) is emptied and built again.
    pub(crate) fn open(projector: Arc<P>, tree: sled::Tree, rules: Rules, shadow: bool) -> Result<Self, Failure> {
        let storage = |e: sled::Error| Failure { position: 0, detail: e.to_string() };
        if tree.get(SPILL_KEY).map_err(storage)?.is_some() {
            tracing::warn!(tree = %String::from_utf8_lossy(&tree.name()), "interrupted chunked commit: building again from position 0");
            tree.clear().map_err(storage)?;
        }
        let stored = tree.get(META_KEY).map_err(storage)?;
        let fresh = stored.is_none() && tree.is_empty();
        let meta = match stored {
            Some(bytes) => {
                decode_value::<Meta>(META_KEY, &bytes).map_err(|e| Failure { position: 0, detail: e.to_string() })?
            }
            None => Meta {
                position: 0,
                version: projector.version(),
                fingerprint: projector.fingerprint(&rules),
                rules,
                last_recorded_at_micros: 0,
            },
        };
        let applied = (meta.position, meta.last_recorded_at_micros);
        let chunked = shadow || fresh;
        let abandon = Arc::new(AtomicBool::new(false));
        Ok(Builder {
            projector,
            tree,
            meta,
            seen_rules: None,
            applied,
            chunked,
            cache: Cache::new(fresh),
            budget: Arc::new(BuildBudget::new(CACHE_BYTES as u64)),
            share: None,
            abandon,
            written: WrittenAs::Nothing,
        })
    }

    /// Shares `budget` with the other builds that use it: while far behind, this build's
    /// cache is bounded by [`BuildBudget::bound_of`] (see
    /// [`crate::ProjectionDb::set_build_cache_bytes`]); following live it keeps at most
    /// [`CACHE_BYTES`] (or a build far behind's even share, if smaller).
    pub(crate) fn with_budget(mut self, budget: Arc<BuildBudget>) -> Self {
        self.budget = budget;
        self
    }

    /// The bound of the cache now, for a step that commits as `commit` says: it changes as
    /// other builds start, grow, commit or finish.
    fn cache_bound(&self, commit: Commit) -> usize {
        let bytes = match (&self.share, commit) {
            (Some(share), Commit::WhenDone) => share.budget.bound_of(share),
            // Live (no share): at most a build far behind's even share, and 1 GiB.
            _ => self.budget.per_build().min(CACHE_BYTES as u64),
        };
        usize::try_from(bytes).unwrap_or(usize::MAX)
    }

    /// Whether the cache is past its bound (read again: other builds may have started,
    /// grown or finished since the last check), telling the budget what it holds.
    fn cache_full(&mut self, commit: Commit) -> bool {
        let bound = self.cache_bound(commit);
        self.cache.set_limit(bound);
        let estimated = self.cache.estimated_bytes();
        if let Some(share) = &self.share {
            share.publish(estimated as u64);
        }
        estimated > bound
    }

    /// The flag that makes a step of this build stop early (set by the runner as it stops).
    pub(crate) fn abandon_flag(&self) -> Arc<AtomicBool> {
        self.abandon.clone()
    }

    /// The last applied position, committed or not.
    pub(crate) fn applied_position(&self) -> u64 {
        self.applied.0
    }

    /// Forgets everything applied since the last commit.
    fn roll_back(&mut self) {
        self.cache.clear();
        self.applied = (self.meta.position, self.meta.last_recorded_at_micros);
    }

    /// Applies events after the last applied one up to `up_to` (and never past the committed
    /// head), at most about `max_events`, then commits state and checkpoint in one sled batch
    /// as `commit` says. On failure nothing uncommitted is kept: the stored state stays at the
    /// last checkpoint, and the failing position is returned.
    ///
    /// A step over more than [`PIPELINE_FROM`] events reads and decodes the log on
    /// [`READERS`] other threads, chunks ahead of the fold, so a catch-up or rebuild uses
    /// both cores and does not wait on one thread's reads from the disk.
    pub(crate) fn step(
        &mut self,
        store: &SledEventStore,
        up_to: u64,
        max_events: u64,
        commit: Commit,
    ) -> Result<StepOutcome, Failure> {
        let outcome = self.step_inner(store, up_to, max_events, commit);
        if outcome.is_err() {
            // A failed build steps no more until it is replaced: its share goes back.
            self.share = None;
        }
        outcome
    }

    fn step_inner(
        &mut self,
        store: &SledEventStore,
        up_to: u64,
        max_events: u64,
        commit: Commit,
    ) -> Result<StepOutcome, Failure> {
        self.seen_rules = None;
        // A live read model's clean entries stay cached between steps up to the bound: a
        // larger bound for builds far behind is not kept for good by seven live read models,
        // and a live one does not take a share of what the builds far behind split.
        match commit {
            Commit::EveryStep => self.share = None,
            Commit::WhenDone => {
                if self.share.is_none() {
                    self.share = Some(self.budget.share());
                }
            }
        }
        self.cache.set_limit(self.cache_bound(commit));
        let target = up_to.min(store.committed_head());
        let mut progress = Progress { position: self.applied.0, last_recorded: self.applied.1, applied: 0 };
        // The last position this step may apply.
        let end = target.min(progress.position.saturating_add(max_events));
        if end > progress.position {
            if end - progress.position > PIPELINE_FROM {
                self.apply_pipelined(store, end, commit, &mut progress)?;
            } else {
                let projector = self.projector.clone();
                while progress.position < end {
                    let chunk = read_chunk(store, &*projector, progress.position + 1, end, None);
                    if !self.apply_chunk(chunk, commit, &mut progress)? {
                        break;
                    }
                }
            }
        }
        let Progress { position, last_recorded, applied } = progress;
        self.applied = (position, last_recorded);
        let due = match commit {
            Commit::EveryStep => true,
            Commit::WhenDone => position >= target || self.cache_full(commit),
        };
        if position > self.meta.position && due {
            let mut meta = self.meta.clone();
            meta.position = position;
            meta.last_recorded_at_micros = last_recorded;
            if let Err(e) = self.write(&meta) {
                let failed_at = self.meta.position + 1;
                self.roll_back();
                return Err(Failure { position: failed_at, detail: format!("writing the batch: {e}") });
            }
            self.meta = meta;
            if commit == Commit::EveryStep {
                // Live from here on: commits are single atomic batches.
                self.chunked = false;
            }
            if let Some(share) = &self.share {
                // A commit past the bound emptied the cache: the others may use the room now.
                share.publish(self.cache.estimated_bytes() as u64);
            }
        } else if self.meta.position == 0 && applied == 0 && self.tree.get(META_KEY).ok().flatten().is_none() {
            // Record the build's version and rules even before the first event.
            let _ = self.tree.insert(META_KEY, encode_value(&self.meta));
        }
        if commit == Commit::WhenDone && position >= target {
            // Caught up with what was asked: no longer one of the builds far behind (it
            // takes a share again at its next step far behind).
            self.share = None;
        }
        Ok(StepOutcome { applied })
    }

    /// The events up to `end` applied chunk by chunk as [`READERS`] other threads read them,
    /// each every [`READERS`]th chunk: each reader stays at most [`CHUNKS_AHEAD`] chunks
    /// ahead, and they stop when the fold stops taking chunks (a failure, a full cache, or an
    /// abandoned build).
    fn apply_pipelined(
        &mut self,
        store: &SledEventStore,
        end: u64,
        commit: Commit,
        progress: &mut Progress,
    ) -> Result<(), Failure> {
        let first = progress.position + 1;
        let hasher = self.cache.key_hasher();
        std::thread::scope(|scope| {
            let readers: Vec<_> = (0..READERS as u64)
                .map(|reader| {
                    let (sender, chunks) = std::sync::mpsc::sync_channel::<Result<Chunk, String>>(CHUNKS_AHEAD);
                    let (projector, abandon, hasher) = (self.projector.clone(), self.abandon.clone(), hasher);
                    scope.spawn(move || {
                        // Chunk `k` starts `k` chunks after `first`: every chunk of a
                        // committed range reads whole (a short one shows as a gap the fold
                        // reports).
                        let mut from = first + reader * READ_CHUNK as u64;
                        while from <= end && !abandon.load(Ordering::Relaxed) {
                            let chunk = read_chunk(store, &*projector, from, end, hasher.as_ref());
                            let read = chunk.as_ref().map_or(0, |c| c.events.len() as u64);
                            // A failed or empty read is the last one: the fold stops there.
                            if sender.send(chunk).is_err() || read == 0 {
                                break;
                            }
                            from += READERS as u64 * READ_CHUNK as u64;
                        }
                    });
                    chunks
                })
                .collect();
            // Returning drops the receivers, so a reader blocked on a full channel ends too.
            // A reader past `end` closes its channel: the chunks before were the last.
            for chunk in readers.iter().cycle().map_while(|chunks| chunks.recv().ok()) {
                if !self.apply_chunk(chunk, commit, progress)? {
                    break;
                }
            }
            if self.abandon.load(Ordering::Relaxed) && progress.position < end {
                self.roll_back();
                return Err(Failure {
                    position: progress.position + 1,
                    detail: "abandoned: the runner stopped".into(),
                });
            }
            Ok(())
        })
    }

    /// Applies one chunk, read from the position after `progress`. Returns whether the step
    /// goes on (false: the log returned nothing, or a [`Commit::WhenDone`] build's cache is
    /// full). On failure everything uncommitted is rolled back.
    fn apply_chunk(
        &mut self,
        chunk: Result<Chunk, String>,
        commit: Commit,
        progress: &mut Progress,
    ) -> Result<bool, Failure> {
        let from = progress.position + 1;
        if self.abandon.load(Ordering::Relaxed) {
            self.roll_back();
            return Err(Failure { position: from, detail: "abandoned: the runner stopped".into() });
        }
        let Chunk { events, decoded, hints } = match chunk {
            Ok(chunk) => chunk,
            Err(e) => {
                self.roll_back();
                return Err(Failure { position: from, detail: format!("reading the log: {e}") });
            }
        };
        if events.is_empty() {
            return Ok(false);
        }
        let projector = self.projector.clone();
        let readable: Vec<(&RecordedEvent, Option<&Event>)> = events
            .iter()
            .zip(&decoded)
            .map_while(|(recorded, event)| event.as_ref().ok().map(|event| (recorded, event.as_ref())))
            .collect();
        let started = std::time::Instant::now();
        let read_ahead = match self.cache.prefetch(&*projector, &self.meta.rules, &self.tree, &readable) {
            Ok(keys) => keys,
            Err(detail) => {
                self.roll_back();
                return Err(Failure { position: from, detail: format!("reading ahead: {detail}") });
            }
        };
        let read_ahead_seconds = started.elapsed().as_secs_f64();
        let mut state = self.cache.state(&self.tree);
        for (n, (recorded, event)) in events.iter().zip(decoded).enumerate() {
            for (ahead, what) in WARM_AHEAD {
                for &hash in hints.of(n + ahead) {
                    state.warm(hash, what, &*projector);
                }
            }
            let fail = |detail: String| Failure { position: recorded.position, detail };
            if recorded.position != progress.position + 1 {
                self.roll_back();
                return Err(fail(format!(
                    "expected position {}, the log returned {}",
                    progress.position + 1,
                    recorded.position
                )));
            }
            let event = match event {
                Ok(event) => event,
                Err(detail) => {
                    self.roll_back();
                    return Err(fail(detail));
                }
            };
            if let Err(detail) = projector.apply(&mut state, &self.meta.rules, recorded, event.as_ref()) {
                self.roll_back();
                return Err(fail(detail));
            }
            if let Some(Event::RulesChanged(changed)) = &event {
                self.seen_rules = Some(changed.rules.clone());
            }
            progress.position = recorded.position;
            progress.last_recorded = recorded.recorded_at_micros;
            progress.applied += 1;
        }
        // Taken whether or not the trace is on (its fields are evaluated only when it is).
        let misses = self.cache.take_misses();
        tracing::trace!(
            tree = %String::from_utf8_lossy(&self.tree.name()),
            from,
            events = events.len(),
            read_ahead,
            read_ahead_seconds,
            misses,
            seconds = started.elapsed().as_secs_f64(),
            "applied a chunk"
        );
        Ok(!(commit == Commit::WhenDone && self.cache_full(commit)))
    }

    /// A build's first commit into a tree that holds nothing yet (or only the checkpoint
    /// written before the first event) goes to sled as one [`sled::Tree::bulk_load`] (the
    /// vendored sled's patch 5), which builds the tree's nodes from the sorted entries
    /// instead of inserting them one by one: 4.6 M keys in 4.4 to 6.8 s (measured) where the
    /// inserts took 15 to 20 s on two threads. The [`SPILL_KEY`] marker is loaded with them, so a crash
    /// before the checkpoint's batch is detected as for single inserts. `false`, with
    /// `entries` untouched, when the tree holds anything else or is not in the shape sled
    /// loads ([`sled::Tree::bulk_loadable`]); a checkpoint written before the first event
    /// is gone by then, and the commit's batch writes it again. Once the load starts it
    /// takes `entries` (freeing them as the tree grows), so a refusal then (a bug: they are
    /// sorted and the tree was checked) fails the commit.
    fn load_first(&self, entries: &mut Vec<Written>) -> Result<bool, String> {
        let storage = |e: sled::Error| e.to_string();
        let mut held = self.tree.iter().keys();
        match (held.next().transpose().map_err(storage)?, held.next()) {
            (None, _) => {}
            (Some(key), None) if key == META_KEY => {
                // Written again by the checkpoint's batch.
                self.tree.remove(META_KEY).map_err(storage)?;
            }
            _ => return Ok(false),
        }
        if !self.tree.bulk_loadable().map_err(storage)? {
            // Emptied by removals that left its old leaves (`Builder::open` after a crash).
            return Ok(false);
        }
        let mut sorted: Vec<(Vec<u8>, Vec<u8>)> = Vec::with_capacity(entries.len() + 1);
        let mut marker = Some((SPILL_KEY.to_vec(), Vec::new()));
        // Removals are no-ops in an empty tree.
        for (key, value) in std::mem::take(entries).into_iter().filter_map(|(k, v)| Some((k, v?))) {
            if marker.as_ref().is_some_and(|(spill, _)| spill < &key) {
                sorted.extend(marker.take());
            }
            sorted.push((key, value));
        }
        sorted.extend(marker);
        self.tree.bulk_load(sorted).map_err(|e| format!("loading the first commit: {e}"))?;
        Ok(true)
    }

    /// Writes the dirty state and `meta` in key order (a fresh build's first commit adds the
    /// keys its projector derives, [`Projector::derive_fresh`]): one atomic batch, or, for a large
    /// commit of a build nobody reads yet, single inserts after a [`SPILL_KEY`] marker that a
    /// last batch removes with the checkpoint (so a crash in between is detected by
    /// [`Builder::open`]: sled recovers a prefix of the operations, so any key written after
    /// the marker comes back with it). Single inserts cost sled about half of what the same
    /// inserts cost inside batches (a 1,000,000-key microbenchmark: 7.9 against 15.0 s), and
    /// no epoch guard is held across millions of replaced pages. Those inserts run on one
    /// thread per core, each over its own range of keys (the marker is written before any of
    /// them starts, the checkpoint after all of them ended).
    fn write(&mut self, meta: &Meta) -> Result<(), String> {
        let storage = |e: sled::Error| e.to_string();
        let started = std::time::Instant::now();
        let derived = self.cache.derive_fresh(&*self.projector, &self.tree).map_err(|e| format!("deriving: {e}"))?;
        let (derived_keys, derived_seconds) = (derived.len(), started.elapsed().as_secs_f64());
        let entries = self.cache.drain_with(derived)?;
        let cache_estimate = self.cache.drained_estimate();
        let drained = started.elapsed().as_secs_f64() - derived_seconds;
        let count = entries.len();
        // Also the last commit of such a build, made as a live step once it is near the head.
        let chunked = self.chunked && count > SPILL_ABOVE;
        let mut batch = sled::Batch::default();
        let mut paged_in = 0.0;
        let mut entries = entries;
        let loaded = chunked && self.load_first(&mut entries)?;
        if loaded {
            batch.remove(SPILL_KEY);
        } else if chunked {
            self.tree.insert(SPILL_KEY, &[]).map_err(storage)?;
            // Disjoint key ranges on as many threads as there are cores: nothing reads the
            // tree until the checkpoint, so the order between ranges does not matter.
            let threads = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
            let part = entries.len().div_ceil(threads.clamp(1, MAX_WRITE_THREADS)).max(SPILL_ABOVE);
            let (tree, abandon) = (&self.tree, &*self.abandon);
            std::thread::scope(|scope| {
                let writers: Vec<_> =
                    entries.chunks(part).map(|part| scope.spawn(move || insert_all(tree, part, abandon))).collect();
                // Every thread is joined before the first error is returned.
                let results: Vec<_> = writers.into_iter().map(|w| w.join()).collect();
                results.into_iter().try_for_each(|r| r.map_err(|_| "a commit thread panicked".to_owned())?)
            })?;
            batch.remove(SPILL_KEY);
        } else {
            // Off sled's exclusive lock: see `page_in`.
            crate::projector::page_in(&self.tree, &entries)?;
            paged_in = started.elapsed().as_secs_f64() - derived_seconds - drained;
            for (key, value) in entries {
                match value {
                    Some(bytes) => batch.insert(key, bytes),
                    None => batch.remove(key),
                }
            }
        }
        batch.insert(META_KEY, encode_value(meta));
        self.tree.apply_batch(batch).map_err(storage)?;
        self.written = match (loaded, chunked) {
            (true, _) => WrittenAs::Loaded,
            (false, true) => WrittenAs::Inserted,
            (false, false) => WrittenAs::Batch,
        };
        tracing::debug!(
            tree = %String::from_utf8_lossy(&self.tree.name()),
            position = meta.position,
            keys = count,
            cache_estimate,
            written = ?self.written,
            derived_keys,
            derive_seconds = derived_seconds,
            drain_seconds = drained,
            page_in_seconds = paged_in,
            seconds = started.elapsed().as_secs_f64(),
            "committed"
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{Generator, GeneratorConfig};
    use crate::testing::{all_events, append_all, dump, fold_all, Counting, TempLog};
    use std::collections::BTreeMap;

    /// A log of `commands` generated commands (`seed`), its head, a counting projector and a
    /// temporary database for its trees.
    async fn generated(seed: u64, commands: usize) -> (TempLog, u64, Arc<Counting>, sled::Db) {
        let log = TempLog::new();
        let mut g = Generator::new(GeneratorConfig { seed, ..Default::default() });
        let commands: Vec<_> = (0..commands).map(|_| g.next_command()).collect();
        append_all(&log.store, &commands).await;
        let head = log.store.committed_head();
        let db = sled::Config::new().temporary(true).open().unwrap();
        (log, head, Arc::new(Counting::new("counting")), db)
    }

    /// The bound set for builds far behind holds while a step commits when done; a step that
    /// commits every time (following live) keeps at most the default, so a large bound for
    /// rebuilds is not held for good by every live read model.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_live_step_caps_the_cache_at_the_default_bound() {
        let (log, head, projector, db) = generated(6, 40).await;
        let tree = db.open_tree("counting/1").unwrap();
        for (bound, far, live) in [(4 * CACHE_BYTES, 4 * CACHE_BYTES, CACHE_BYTES), (1 << 20, 1 << 20, 1 << 20)] {
            let mut builder = Builder::open(projector.clone(), tree.clone(), Rules::default(), false)
                .unwrap()
                .with_budget(Arc::new(BuildBudget::new(bound as u64)));
            builder.step(&log.store, head / 2, u64::MAX, Commit::WhenDone).unwrap();
            assert_eq!(builder.cache.limit(), far, "far behind, bound {bound}");
            builder.step(&log.store, head, u64::MAX, Commit::EveryStep).unwrap();
            assert_eq!(builder.cache.limit(), live, "live, bound {bound}");
        }
    }

    /// A build's bound is its even share plus its part of what the others leave unused; builds
    /// that each hold no more than their bound hold no more than the total together.
    #[test]
    fn a_build_far_behind_may_use_what_the_others_leave() {
        let total = 6_000u64;
        let budget = Arc::new(BuildBudget::new(total));
        let a = budget.share();
        assert_eq!(budget.bound_of(&a), total, "alone: all of it");
        let (b, c) = (budget.share(), budget.share());
        assert_eq!(budget.building(), 3);
        assert_eq!(budget.bound_of(&a), total, "the others hold nothing yet");
        b.publish(1_500);
        c.publish(100);
        // Even share 2,000: b leaves 500 of it and c 1,900; a may use both.
        assert_eq!(budget.bound_of(&a), 2_000 + 500 + 1_900);
        a.publish(4_000);
        // For b: c leaves 1,900, split between a (past its share) and b.
        assert_eq!(budget.bound_of(&b), 2_000 + 1_900 / 2);
        let steps = [0, 500, 1_000, 1_500, 1_999, 2_000, 2_500, 3_000, 4_000, 5_000, 6_000];
        let mut within = 0;
        for ha in steps {
            for hb in steps {
                for hc in steps {
                    for (share, held) in [(&a, ha), (&b, hb), (&c, hc)] {
                        share.publish(held);
                    }
                    let bounds = [budget.bound_of(&a), budget.bound_of(&b), budget.bound_of(&c)];
                    assert!(bounds.iter().all(|b| *b >= total / 3), "never under the even share");
                    if [ha, hb, hc].iter().zip(bounds).all(|(held, bound)| *held <= bound) {
                        within += 1;
                        assert!(ha + hb + hc <= total, "{ha} + {hb} + {hc}, each within its bound");
                    }
                }
            }
        }
        assert!(within > 100, "{within}");
        drop((b, c));
        assert_eq!(budget.building(), 1);
        assert_eq!(budget.bound_of(&a), total, "the others gone: all of it again");
    }

    /// A builder takes a share for its steps far behind and gives it back when it catches up,
    /// goes live, fails or is dropped; it reads its bound again at every check and tells the
    /// budget what it holds.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn builds_far_behind_take_and_give_back_a_share() {
        let (log, head, projector, db) = generated(8, 60).await;
        let total: usize = 6 << 30;
        let budget = Arc::new(BuildBudget::new(total as u64));
        let open = |name: &str| {
            Builder::open(projector.clone(), db.open_tree(name).unwrap(), Rules::default(), true)
                .unwrap()
                .with_budget(budget.clone())
        };
        // Steps of 5 events towards the head: each ends far behind.
        let far = |builder: &mut Builder<Counting>| {
            builder.step(&log.store, head, 5, Commit::WhenDone).unwrap();
            assert!(builder.applied_position() < head);
            builder.cache.limit()
        };
        let (mut a, mut b, mut c) = (open("a/1"), open("b/1"), open("c/1"));
        assert_eq!(far(&mut a), total, "alone far behind: all of it");
        far(&mut b);
        far(&mut c);
        assert_eq!(budget.building(), 3);
        far(&mut a);
        assert_eq!(budget.building(), 3, "a build takes one share however many steps it runs");
        let held = a.share.as_ref().unwrap().held.load(Ordering::Relaxed);
        assert!(held > 0 && held == a.cache.estimated_bytes() as u64, "a build publishes what it holds");

        c.step(&log.store, head, u64::MAX, Commit::EveryStep).unwrap();
        assert_eq!(budget.building(), 2, "live: no share");
        assert_eq!(c.cache.limit(), CACHE_BYTES, "live: at most 1 GiB (or an even share)");
        drop(b);
        assert_eq!(budget.building(), 1, "dropped: its share goes back");
        a.step(&log.store, head, u64::MAX, Commit::WhenDone).unwrap();
        assert_eq!(a.applied_position(), head);
        assert_eq!(budget.building(), 0, "caught up: no share");

        // A failed step gives its share back.
        append_pings(&log.store, 3, 2).await;
        let failing = Arc::new(Counting { fail_on: Some("Odd".into()), ..Counting::new("counting") });
        let mut e = Builder::open(failing, db.open_tree("e/1").unwrap(), Rules::default(), true)
            .unwrap()
            .with_budget(budget.clone());
        far(&mut e);
        assert_eq!(budget.building(), 1);
        e.step(&log.store, u64::MAX, u64::MAX, Commit::WhenDone).unwrap_err();
        assert_eq!(budget.building(), 0, "failed: no share");

        // The bound is read again at every check, not only when a step starts, from what the
        // others hold.
        let mut d = open("d/1");
        assert_eq!(far(&mut d), total);
        let other = budget.share();
        assert!(!d.cache_full(Commit::WhenDone));
        assert_eq!(d.cache.limit(), total, "another build started but holds nothing yet");
        other.publish(total as u64);
        assert!(!d.cache_full(Commit::WhenDone));
        assert_eq!(d.cache.limit(), total / 2, "the other holds its share and more");
        drop(other);

        // A commit past the bound empties the cache and tells the budget.
        let tiny = Arc::new(BuildBudget::new(1));
        let mut f = Builder::open(projector.clone(), db.open_tree("f/1").unwrap(), Rules::default(), true)
            .unwrap()
            .with_budget(tiny.clone());
        f.step(&log.store, head, 5, Commit::WhenDone).unwrap();
        assert_eq!(f.meta.position, 5, "committed past its bound of 1 byte");
        assert_eq!(f.share.as_ref().unwrap().held.load(Ordering::Relaxed), 0, "emptied, and said so");
    }

    /// A fresh build leaves its derived keys to its first commit, also when that commit comes
    /// early (past a bound of one byte), and keeps them in step from then on: the tree ends
    /// as one fold from scratch, which derives them at its end.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_fresh_build_derives_at_its_first_commit_and_keeps_in_step_after() {
        let (log, head, projector, db) = generated(9, 60).await;
        let tree = db.open_tree("counting/1").unwrap();
        let mut builder = Builder::open(projector.clone(), tree.clone(), Rules::default(), true)
            .unwrap()
            .with_budget(Arc::new(BuildBudget::new(1)));
        assert!(builder.cache.state(&builder.tree).fresh());
        builder.step(&log.store, head, 5, Commit::WhenDone).unwrap();
        assert_eq!(builder.meta.position, 5);
        assert_eq!(tree.get(b"total").unwrap().map(|v| decode_value::<u64>(b"total", &v).unwrap()), Some(5));
        assert!(!builder.cache.state(&builder.tree).fresh(), "fresh until the first commit only");
        while builder.applied_position() < head {
            builder.step(&log.store, head, 7, Commit::WhenDone).unwrap();
        }
        assert_eq!(dump(&tree), fold_all(&*projector, &Rules::default(), &all_events(&log.store)));

        // Over a tree that holds something, a build is never fresh.
        let resumed = Builder::open(projector.clone(), tree, Rules::default(), false).unwrap();
        let mut cache = resumed.cache;
        assert!(!cache.state(&resumed.tree).fresh());
    }

    /// A build that resumes over a stored tree reads the listed keys ahead (on several
    /// threads) and ends with what one fold from scratch gives.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn keys_listed_for_prefetch_are_read_ahead_and_change_nothing() {
        let log = TempLog::new();
        let mut g = Generator::new(GeneratorConfig { seed: 5, ..Default::default() });
        let commands: Vec<_> = (0..400).map(|_| g.next_command()).collect();
        append_all(&log.store, &commands).await;
        let events = all_events(&log.store);
        let projector = Arc::new(Counting::new("counting"));
        let expected = fold_all(&*projector, &Rules::default(), &events);

        let db = sled::Config::new().temporary(true).open().unwrap();
        let tree = db.open_tree("counting/1").unwrap();
        let half = events.len() as u64 / 2;
        let mut first = Builder::open(projector.clone(), tree.clone(), Rules::default(), false).unwrap();
        first.step(&log.store, half, u64::MAX, Commit::EveryStep).unwrap();

        // Reopened: nothing in memory, the tree is not empty, so reads go to it.
        let mut builder = Builder::open(projector.clone(), tree.clone(), Rules::default(), false).unwrap();
        let rest: Vec<(&RecordedEvent, Option<&Event>)> = events[half as usize..].iter().map(|e| (e, None)).collect();
        let read = builder.cache.prefetch(&*projector, &Rules::default(), &tree, &rest).unwrap();
        let streams: std::collections::BTreeSet<_> = events[half as usize..].iter().map(|e| &e.stream).collect();
        assert_eq!(read, streams.len() + rest.len(), "each stream key once, and every never-read key");
        let cached = builder.cache.cached();
        let seen_before =
            events[..half as usize].iter().find(|e| streams.contains(&e.stream)).expect("a stream in both halves");
        assert!(cached.get(format!("stream/{}", seen_before.stream).as_bytes()).is_some(), "read from the tree");
        assert_eq!(
            builder.cache.prefetch(&*projector, &Rules::default(), &tree, &rest).unwrap(),
            0,
            "nothing is read twice"
        );

        builder.step(&log.store, u64::MAX, u64::MAX, Commit::EveryStep).unwrap();
        assert_eq!(dump(&tree), expected);
    }

    /// Appends `n` events, each to a stream of its own, of type `Ping` (not a domain type: the
    /// projector sees it undecoded), except the event at position `odd_one_at`, of type `Odd`.
    async fn append_pings(store: &SledEventStore, n: u64, odd_one_at: u64) {
        use crm_eventlog::{Durability, EventStore, ExpectedVersion, Metadata, NewEvent, StreamAppend};
        let mut appends = Vec::new();
        for position in 1..=n {
            let event_type = if position == odd_one_at { "Odd" } else { "Ping" };
            let event = NewEvent {
                id: uuid::Uuid::now_v7(),
                event_type: event_type.into(),
                schema_version: 1,
                metadata: Metadata::default(),
                payload: Vec::new(),
            };
            appends.push(StreamAppend {
                stream: format!("s-{position}"),
                expected: ExpectedVersion::NoStream,
                events: vec![event],
            });
            if appends.len() == 1000 || position == n {
                store.append_many(std::mem::take(&mut appends), Durability::Buffered).await.expect("append");
            }
        }
    }

    /// A step over many events reads the log ahead on two other threads, each every other
    /// chunk; a fresh build loads its first large commit into the empty tree and writes the
    /// next on several threads. The tree ends as one fold from scratch.
    #[tokio::test]
    async fn a_long_step_reads_ahead_loads_then_writes_in_parallel_and_equals_a_fold() {
        let log = TempLog::new();
        let n = 40_000;
        append_pings(&log.store, n, n + 1).await;
        let events = all_events(&log.store);
        let projector = Arc::new(Counting::new("counting"));
        let expected = fold_all(&*projector, &Rules::default(), &events);
        assert!(expected.len() > 2 * SPILL_ABOVE, "a commit large enough to be split: {}", expected.len());

        let db = sled::Config::new().temporary(true).open().unwrap();
        let tree = db.open_tree("counting/1").unwrap();
        let mut builder = Builder::open(projector.clone(), tree.clone(), Rules::default(), false).unwrap();
        // A bound that is not a multiple of the chunk size: the step stops exactly there.
        let outcome = builder.step(&log.store, u64::MAX, 3 * READ_CHUNK as u64 + 5, Commit::WhenDone).unwrap();
        assert_eq!(outcome.applied, 3 * READ_CHUNK as u64 + 5);
        assert_eq!(builder.meta.position, 0, "nothing committed before the target");
        assert_eq!(builder.written, WrittenAs::Nothing);
        let half = n / 2;
        builder.step(&log.store, half, u64::MAX, Commit::WhenDone).unwrap();
        assert_eq!((builder.meta.position, builder.written), (half, WrittenAs::Loaded));
        assert_eq!(dump(&tree), fold_all(&*projector, &Rules::default(), &events[..half as usize]));
        let outcome = builder.step(&log.store, u64::MAX, u64::MAX, Commit::WhenDone).unwrap();
        assert_eq!(outcome.applied, n - half);
        assert_eq!((builder.meta.position, builder.written), (n, WrittenAs::Inserted));
        assert_eq!(dump(&tree), expected);
        assert!(tree.get(SPILL_KEY).unwrap().is_none(), "the marker of the chunked commit is gone");
    }

    /// A fresh build's reader hashes the keys each event names first, event by event, with
    /// the cache's own hasher (the fold finds their entries by those hashes); a build whose
    /// cache does not hold everything gets no hints.
    #[tokio::test]
    async fn a_fresh_builds_reader_hashes_each_events_first_keys_with_the_caches_hasher() {
        let log = TempLog::new();
        append_pings(&log.store, 10, 11).await;
        let events = all_events(&log.store);
        let projector = Counting::new("counting");
        let cache = Cache::<u64>::new(true);
        let hasher = cache.key_hasher().expect("a fresh build's cache holds everything");
        let chunk = read_chunk(&log.store, &projector, 3, 8, Some(&hasher)).unwrap();
        assert_eq!(chunk.events.len(), 6);
        for (n, recorded) in chunk.events.iter().enumerate() {
            let mut keys = Vec::new();
            projector.first_keys(recorded, None, &mut keys);
            let hashes: Vec<u32> = keys.iter().map(|key| hash_key(&hasher, key)).collect();
            assert_eq!(chunk.hints.of(n), hashes, "event {}", recorded.position);
        }
        assert!(chunk.hints.of(6).is_empty(), "none past the chunk's end");
        assert_eq!(events[2].position, chunk.events[0].position);

        assert!(read_chunk(&log.store, &projector, 3, 8, None).unwrap().hints.of(0).is_empty());
        assert!(Cache::<u64>::new(false).key_hasher().is_none(), "a cache over a tree that holds keys");
    }

    /// A first commit is loaded into a tree that holds nothing or only the checkpoint written
    /// before the first event, with the [`SPILL_KEY`] marker: a crash before the checkpoint's
    /// batch leaves a tree that is emptied and built again. A tree that holds anything else,
    /// or that removals emptied but left in a shape sled does not load, is left alone.
    #[test]
    fn a_first_commit_is_loaded_only_into_an_empty_tree_and_with_the_marker() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let projector = Arc::new(Counting::new("counting"));
        let entries: Vec<Written> =
            (0..100u32).map(|i| (format!("k{i:03}").into_bytes(), (i % 7 != 0).then(|| vec![1]))).collect();
        let stored: BTreeMap<Vec<u8>, Vec<u8>> =
            entries.iter().filter_map(|(k, v)| Some((k.clone(), v.clone()?))).collect();

        for checkpoint_first in [false, true] {
            let tree = db.open_tree(format!("counting/{checkpoint_first}")).unwrap();
            let builder = Builder::open(projector.clone(), tree.clone(), Rules::default(), true).unwrap();
            if checkpoint_first {
                tree.insert(META_KEY, encode_value(&builder.meta)).unwrap();
            }
            let mut taken = entries.clone();
            assert!(builder.load_first(&mut taken).unwrap());
            assert!(taken.is_empty(), "taken by the load");
            let mut expected = stored.clone();
            expected.insert(SPILL_KEY.to_vec(), Vec::new());
            assert_eq!(dump(&tree), expected, "the entries and the marker, no checkpoint");
            // The process dies here, before the checkpoint's batch.
            Builder::open(projector.clone(), tree.clone(), Rules::default(), true).unwrap();
            assert!(tree.is_empty(), "the half-written tree is emptied");
        }

        // Emptied by removals after its index grew (as `Builder::open` empties a tree a crash
        // left half-written): sled kept its nodes, so the commit is inserted.
        let tree = db.open_tree("counting/emptied").unwrap();
        for i in 0..20_000u32 {
            tree.insert(i.wrapping_mul(2_654_435_761).to_be_bytes(), &[1]).unwrap();
        }
        tree.clear().unwrap();
        let builder = Builder::open(projector.clone(), tree.clone(), Rules::default(), true).unwrap();
        let mut kept = entries.clone();
        assert!(!builder.load_first(&mut kept).unwrap());
        assert_eq!(kept, entries, "left to the inserts");
        assert!(tree.is_empty());

        let tree = db.open_tree("counting/held").unwrap();
        tree.insert(b"total", encode_value(&3u64)).unwrap();
        let builder = Builder::open(projector, tree.clone(), Rules::default(), true).unwrap();
        let mut kept = entries.clone();
        assert!(!builder.load_first(&mut kept).unwrap());
        assert_eq!(kept, entries, "left to the inserts");
        assert_eq!(dump(&tree).into_keys().collect::<Vec<_>>(), vec![b"total".to_vec()]);
    }

    /// A failure in the middle of a step that reads ahead names the failing event and keeps
    /// nothing of what the step applied; the reader threads end with the step.
    #[tokio::test]
    async fn a_failure_in_a_long_step_names_its_position_and_keeps_nothing() {
        let log = TempLog::new();
        let (n, odd) = (20_000, 12_345);
        append_pings(&log.store, n, odd).await;
        let projector = Arc::new(Counting { fail_on: Some("Odd".into()), ..Counting::new("counting") });
        let db = sled::Config::new().temporary(true).open().unwrap();
        let tree = db.open_tree("counting/1").unwrap();
        let mut builder = Builder::open(projector, tree.clone(), Rules::default(), false).unwrap();
        let failure = builder.step(&log.store, u64::MAX, u64::MAX, Commit::WhenDone).unwrap_err();
        assert_eq!(failure.position, odd);
        assert_eq!(failure.detail, "refusing Odd");
        assert_eq!(builder.applied_position(), 0, "rolled back to the checkpoint");
        assert!(dump(&tree).is_empty(), "nothing written");

        // An abandoned build stops at once, with nothing applied either.
        builder.abandon_flag().store(true, Ordering::Relaxed);
        let failure = builder.step(&log.store, u64::MAX, u64::MAX, Commit::WhenDone).unwrap_err();
        assert_eq!(failure.position, 1);
        assert!(failure.detail.starts_with("abandoned"), "{}", failure.detail);
        assert_eq!(builder.applied_position(), 0);
    }

    #[test]
    fn a_tree_left_with_the_spill_marker_is_emptied_and_built_again() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let tree = db.open_tree("counting/1").unwrap();
        let projector = Arc::new(Counting::new("counting"));
        let half_written = Meta {
            position: 40,
            version: projector.version(),
            fingerprint: 0,
            rules: Rules::default(),
            last_recorded_at_micros: 7,
        };
        tree.insert(META_KEY, encode_value(&half_written)).unwrap();
        tree.insert(b"total", encode_value(&41u64)).unwrap();
        tree.insert(SPILL_KEY, &[]).unwrap();

        let builder = Builder::open(projector.clone(), tree.clone(), Rules::default(), false).unwrap();
        assert_eq!(builder.meta.position, 0);
        assert_eq!(builder.applied_position(), 0);
        assert!(tree.is_empty(), "the half-written state is gone");

        // Without the marker the checkpoint is trusted.
        tree.insert(META_KEY, encode_value(&half_written)).unwrap();
        let builder = Builder::open(projector, tree, Rules::default(), false).unwrap();
        assert_eq!(builder.meta.position, 40);
    }
}
