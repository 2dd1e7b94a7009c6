//! The runner: one tokio task per projection that follows the log from the checkpoint
//! (catch-up, then live), rebuilds into a shadow tree and swaps, and verifies.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use crm_domain::{Event, Rules, RULES_STREAM};
use crm_eventlog::{Direction, SledEventStore};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::builder::{BuildBudget, Builder, Commit, Failure, StepOutcome};
use crate::error::{Error, Result};
use crate::projector::{decode_value, printable_key, Projector, META_KEY};

/// Most events a live step applies before committing.
const LIVE_BATCH: u64 = 16_384;
/// Most events a step applies while far behind the head (catching up) before returning to
/// the runner's loop; it commits only when it reaches the head or its cache is full.
const CATCH_UP_BATCH: u64 = 262_144;
/// The same for a shadow (rebuild or verify) step, which commits only when it reaches the
/// serving build's position or its cache is full.
const SHADOW_BATCH: u64 = 262_144;
/// How long a replaced tree stays readable for queries that still hold it.
const RETIRE_AFTER: Duration = Duration::from_secs(10);
/// Most differences a verification reports one by one (all are counted).
const MAX_REPORTED_DIFFERENCES: usize = 1000;

/// The default page cache of each read model's database: sled's own default, 1 GiB.
pub const DEFAULT_CACHE_BYTES: u64 = 1024 * 1024 * 1024;

/// The default total of the memory the builds far behind (a rebuild, a verification, a
/// first build or a long catch-up) hold before they commit, shared among those in progress
/// (`BuildBudget` in builder.rs): 2 GiB, estimated. One customers rebuild at 11 M events
/// holds its whole state in it (estimated at 1.45 GB); seven first builds at once get at
/// least 293 MiB each, and the large ones what the small ones leave unused
/// (docs/PERFORMANCE.md, fifteenth session).
pub const DEFAULT_BUILD_CACHE_BYTES: u64 = 2 * crate::projector::CACHE_BYTES as u64;

/// The read models' storage, apart from the event log: a directory holding one sled
/// database per read model (`<path>/<name>`), each with its builds' trees (`<name>/<generation>`)
/// and its catalog entry (`active/<name>`) in its default tree.
///
/// One database per read model, because sled applies a batch under its database's exclusive
/// lock (patch 1 in vendor/sled/PATCHES.md; a lock per tree deadlocks): with every read model
/// in one database, each one's commits and reads waited for the others' (docs/PERFORMANCE.md,
/// ninth session: at 3,300 commands/s the seven read models spent 15 to 28 s of a 30 s run in
/// their commits).
#[derive(Clone)]
pub struct ProjectionDb {
    inner: Arc<DbInner>,
}

struct DbInner {
    /// The directory; `None` for a temporary store (each database removed when dropped).
    root: Option<std::path::PathBuf>,
    cache_bytes: u64,
    /// See [`ProjectionDb::set_build_cache_bytes`].
    budget: Arc<BuildBudget>,
    dbs: Mutex<std::collections::BTreeMap<String, sled::Db>>,
}

fn storage(e: impl std::fmt::Display) -> Error {
    Error::Storage(e.to_string())
}

impl ProjectionDb {
    /// Opens (or creates) the read models' directory `path` (the server uses
    /// `<data-dir>/projections`), with sled's page cache at [`DEFAULT_CACHE_BYTES`] for each
    /// read model's database.
    pub fn open(path: &Path) -> Result<Self> {
        Self::open_with_cache(path, DEFAULT_CACHE_BYTES)
    }

    /// [`Self::open`] with a page cache of `cache_bytes` per read model (sled's
    /// `cache_capacity`): pages beyond it are read back from the files when used again.
    ///
    /// Each read model's database has its own page cache bound of `cache_bytes`: seven read
    /// models may hold up to seven times it (an upper bound, filled with pages read).
    ///
    /// A directory that is itself one sled database holding every read model (the layout
    /// before one database per read model) is converted first: each serving build is copied
    /// into its read model's database, then the old database's files are removed. A
    /// conversion interrupted while copying runs again whole at the next open (each copy
    /// starts from an empty tree); one interrupted while removing the old files (a marker
    /// file says the copies are complete) goes on removing them. A build that was not
    /// serving is not copied (a rebuild starts again).
    pub fn open_with_cache(path: &Path, cache_bytes: u64) -> Result<Self> {
        std::fs::create_dir_all(path).map_err(storage)?;
        let db = ProjectionDb {
            inner: Arc::new(DbInner {
                root: Some(path.to_owned()),
                cache_bytes,
                budget: Arc::new(BuildBudget::new(DEFAULT_BUILD_CACHE_BYTES)),
                dbs: Mutex::default(),
            }),
        };
        db.convert_single_database(path)?;
        // Open the read models that exist now, so an open that races the previous opening's
        // last handle fails here (and can be retried) rather than at the first spawn.
        for entry in std::fs::read_dir(path).map_err(storage)? {
            let entry = entry.map_err(storage)?;
            if entry.file_type().map_err(storage)?.is_dir() && entry.path().join("conf").is_file() {
                if let Some(name) = entry.file_name().to_str().filter(|n| valid_name(n)) {
                    db.db(name)?;
                }
            }
        }
        Ok(db)
    }

    /// A temporary store, removed when dropped (tests).
    pub fn temporary() -> Result<Self> {
        Ok(ProjectionDb {
            inner: Arc::new(DbInner {
                root: None,
                cache_bytes: DEFAULT_CACHE_BYTES,
                budget: Arc::new(BuildBudget::new(DEFAULT_BUILD_CACHE_BYTES)),
                dbs: Mutex::default(),
            }),
        })
    }

    /// Bounds the memory that the builds far behind (a rebuild, a verification, a first
    /// build or a catch-up) share, from their next check on (default
    /// [`DEFAULT_BUILD_CACHE_BYTES`]). A build far behind keeps the state it changes in memory
    /// and writes it when it reaches its target or passes its bound (estimated from the
    /// values' encoded size); past it, it commits, forgets what it held, and reads its tree
    /// for keys it needs again. Its bound is an even share of this among the builds far
    /// behind at the time plus its part of what the others leave unused: one rebuild after
    /// a rules change may hold all of it, seven read models building at once (a first start
    /// on a large log) at least a seventh each, more as others finish (docs/OPERATIONS.md).
    /// A build following live keeps at most 1 GiB (or a build far behind's share, if
    /// smaller) between steps, and takes no share.
    pub fn set_build_cache_bytes(&self, bytes: u64) {
        self.inner.budget.set_total(bytes);
    }

    /// The total [`Self::set_build_cache_bytes`] set.
    pub fn build_cache_bytes(&self) -> u64 {
        self.inner.budget.total()
    }

    /// What the builds of this store's read models share.
    pub(crate) fn budget(&self) -> Arc<BuildBudget> {
        self.inner.budget.clone()
    }

    /// The database of read model `name`, opened (and created) on first use.
    pub(crate) fn db(&self, name: &str) -> Result<sled::Db> {
        if !valid_name(name) {
            return Err(Error::Storage(format!("`{name}` cannot name a read model's database")));
        }
        let mut dbs = self.inner.dbs.lock().expect("databases lock");
        if let Some(db) = dbs.get(name) {
            return Ok(db.clone());
        }
        let config = match &self.inner.root {
            Some(root) => sled::Config::new()
                .path(root.join(name))
                .mode(sled::Mode::HighThroughput)
                .cache_capacity(self.inner.cache_bytes),
            None => sled::Config::new().temporary(true),
        };
        let db = config.open()?;
        dbs.insert(name.to_owned(), db.clone());
        Ok(db)
    }

    /// The database of read model `name` if it has one (open, or on disk), without creating
    /// one: a lookup of a name that never ran finds nothing.
    fn existing_db(&self, name: &str) -> Result<Option<sled::Db>> {
        let known = self.inner.dbs.lock().expect("databases lock").contains_key(name);
        let on_disk = self.inner.root.as_ref().is_some_and(|root| root.join(name).join("conf").is_file());
        if known || on_disk {
            self.db(name).map(Some)
        } else {
            Ok(None)
        }
    }

    /// Flushes every buffered write of read model `name`.
    pub(crate) fn flush_one(&self, name: &str) -> Result<()> {
        if let Some(db) = self.existing_db(name)? {
            db.flush()?;
        }
        Ok(())
    }

    /// Flushes every buffered write of every read model.
    pub fn flush(&self) -> Result<()> {
        let dbs: Vec<sled::Db> = self.inner.dbs.lock().expect("databases lock").values().cloned().collect();
        for db in dbs {
            db.flush()?;
        }
        Ok(())
    }

    /// Reads every read model's data file once from start to end so that the OS page cache
    /// holds them: after a start with cold caches, each page a live step or a query needs was
    /// otherwise a random disk read (docs/PERFORMANCE.md, eleventh session). The read models
    /// named in `first` go first, in that order, then the others smallest first. Skips a file
    /// that would take the bytes read past `budget` (see the server's
    /// `warm::read_model_budget`): reading more than the page cache can hold only pushes out
    /// what was read before. The read models are those this store has opened (every one on
    /// disk is opened with it); one without a data file is passed over. `progress` is called
    /// with the bytes read so far each time they pass a multiple of a GiB. Setting `stop` ends
    /// it early (within a MiB). Returns the bytes read; a temporary store reads nothing.
    pub fn warm_files(&self, first: &[&str], budget: u64, progress: &dyn Fn(u64), stop: &AtomicBool) -> Result<u64> {
        use std::io::Read;
        let Some(root) = &self.inner.root else { return Ok(0) };
        let (mut read, mut buffer) = (0u64, vec![0u8; 1 << 20]);
        for (name, len) in self.warm_order(first) {
            if len.is_none_or(|len| read + len > budget) {
                continue;
            }
            let mut file = std::fs::File::open(root.join(&name).join(SLED_DATA)).map_err(storage)?;
            loop {
                if stop.load(Ordering::Relaxed) {
                    return Ok(read);
                }
                let n = file.read(&mut buffer).map_err(storage)?;
                if n == 0 {
                    break;
                }
                read += n as u64;
                if read % (1 << 30) < n as u64 {
                    progress(read);
                }
            }
        }
        Ok(read)
    }

    /// The read models this store has opened, in the order the warm-up takes them: those
    /// named in `first` in that order, then the others smallest data file first; each with
    /// its data file's length (`None` without one, as in a temporary store).
    fn warm_order(&self, first: &[&str]) -> Vec<(String, Option<u64>)> {
        let names: Vec<String> = self.inner.dbs.lock().expect("databases lock").keys().cloned().collect();
        let mut order: Vec<(usize, Option<u64>, String)> = names
            .into_iter()
            .map(|name| {
                let file = self.inner.root.as_ref().map(|root| root.join(&name).join(SLED_DATA));
                let len = file.and_then(|file| std::fs::metadata(file).ok()).map(|m| m.len());
                let rank = first.iter().position(|f| *f == name).unwrap_or(first.len());
                (rank, len, name)
            })
            .collect();
        order.sort();
        order.into_iter().map(|(_, len, name)| (name, len)).collect()
    }

    /// Walks the serving tree of every read model this store has opened, those named in
    /// `first` first, then the others smallest file first (as [`Self::warm_files`]), so that
    /// their pages are in sled's own page cache before the first query or live step needs
    /// them: reading the files fills only the kernel's cache, and each page sled has not yet
    /// materialised still costs a read and a decode on first use. So each database's cache
    /// fills up to its capacity at start instead of with use; a tree larger than that keeps
    /// its last part (the measured runs walked whole trees, docs/PERFORMANCE.md, twelfth
    /// session). A tree that cannot be read (dropped by a rebuild's swap while it was
    /// walked, say) is logged and passed over. `progress` is called with the entries walked
    /// so far each time they pass a multiple of 2^20. Setting `stop` ends it early (before
    /// the next tree, or within 4,096 entries). Returns the entries and bytes (keys and
    /// values) walked.
    pub fn warm_trees(&self, first: &[&str], progress: &dyn Fn(u64), stop: &AtomicBool) -> (u64, u64) {
        let (mut entries, mut bytes) = (0u64, 0u64);
        for (name, _) in self.warm_order(first) {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            let tree = match self.serving_tree(&name) {
                Ok(Some(tree)) => tree,
                Ok(None) => continue,
                Err(e) => {
                    tracing::warn!(projection = %name, error = %e, "not warmed: its serving tree cannot be opened");
                    continue;
                }
            };
            let mut tree_bytes = 0u64;
            for item in tree.iter() {
                let (key, value) = match item {
                    Ok(entry) => entry,
                    Err(e) => {
                        tracing::warn!(projection = %name, error = %e, "warming stopped for this tree: it cannot be read");
                        break;
                    }
                };
                entries += 1;
                tree_bytes += (key.len() + value.len()) as u64;
                if entries % (1 << 12) == 0 && stop.load(Ordering::Relaxed) {
                    return (entries, bytes + tree_bytes);
                }
                if entries % (1 << 20) == 0 {
                    progress(entries);
                }
            }
            bytes += tree_bytes;
        }
        (entries, bytes)
    }

    /// The serving tree of projection `name`, for operators' repair tools and tests; writing
    /// to it behind the runner's back is exactly what `verify` detects.
    pub fn serving_tree(&self, name: &str) -> Result<Option<sled::Tree>> {
        match self.active_generation(name)? {
            Some(generation) => Ok(Some(self.tree(name, generation)?)),
            None => Ok(None),
        }
    }

    fn active_key(name: &str) -> Vec<u8> {
        format!("active/{name}").into_bytes()
    }

    fn active_generation(&self, name: &str) -> Result<Option<u64>> {
        let Some(db) = self.existing_db(name)? else { return Ok(None) };
        Ok(db.get(Self::active_key(name))?.map(|v| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&v[..8]);
            u64::from_be_bytes(b)
        }))
    }

    fn set_active_generation(&self, name: &str, generation: u64) -> Result<()> {
        let db = self.db(name)?;
        db.insert(Self::active_key(name), &generation.to_be_bytes())?;
        db.flush()?;
        Ok(())
    }

    fn tree(&self, name: &str, generation: u64) -> Result<sled::Tree> {
        Ok(self.db(name)?.open_tree(format!("{name}/{generation}"))?)
    }

    /// An empty tree `tree_name` of read model `name` (dropped first if it exists).
    fn fresh_tree(&self, name: &str, tree_name: &str) -> Result<sled::Tree> {
        let db = self.db(name)?;
        db.drop_tree(tree_name)?;
        Ok(db.open_tree(tree_name)?)
    }

    /// Drops tree `tree_name` of read model `name`.
    fn drop_tree(&self, name: &str, tree_name: &[u8]) -> Result<()> {
        self.db(name)?.drop_tree(tree_name)?;
        Ok(())
    }

    fn verify_tree(&self, name: &str) -> Result<sled::Tree> {
        self.fresh_tree(name, &format!("{name}/verify"))
    }

    /// Drops every tree of `name` but the generation `keep`.
    fn drop_other_trees(&self, name: &str, keep: u64) -> Result<()> {
        let keep = format!("{name}/{keep}");
        let prefix = format!("{name}/");
        let db = self.db(name)?;
        for tree_name in db.tree_names() {
            let text = String::from_utf8_lossy(&tree_name);
            if text.starts_with(&prefix) && text != keep {
                db.drop_tree(&tree_name)?;
            }
        }
        Ok(())
    }

    /// Converts a directory that is one sled database of every read model (see
    /// [`Self::open_with_cache`]); nothing to do for any other directory.
    fn convert_single_database(&self, path: &Path) -> Result<()> {
        let marker = path.join(CONVERTED);
        if marker.is_file() {
            // Copied and flushed before: only the old files' removal was interrupted.
            return remove_single_database(path, &marker);
        }
        if !SLED_FILES.iter().any(|f| path.join(f).is_file()) {
            return Ok(());
        }
        tracing::info!(path = %path.display(), "converting the read models' single database to one database per read model");
        let old = sled::Config::new().path(path).open()?;
        let active: Vec<(String, u64)> = old
            .scan_prefix(b"active/")
            .map(|entry| {
                let (key, value) = entry?;
                let name = String::from_utf8_lossy(&key[b"active/".len()..]).into_owned();
                let generation = value.get(..8).map_or(0, |b| u64::from_be_bytes(b.try_into().expect("8 bytes")));
                Ok((name, generation))
            })
            .collect::<Result<_>>()?;
        for (name, generation) in active {
            if !valid_name(&name) {
                tracing::warn!(projection = %name, "not converted: the name cannot name a database (rebuilt if it runs)");
                continue;
            }
            let tree_name = format!("{name}/{generation}");
            let (from, to) = (old.open_tree(&tree_name)?, self.fresh_tree(&name, &tree_name)?);
            let mut copied = 0u64;
            let mut batch = sled::Batch::default();
            for entry in from.iter() {
                let (key, value) = entry?;
                batch.insert(key, value);
                copied += 1;
                if copied.is_multiple_of(65_536) {
                    to.apply_batch(std::mem::take(&mut batch))?;
                    tracing::info!(projection = %name, keys = copied, "converting: copied");
                }
            }
            to.apply_batch(batch)?;
            self.set_active_generation(&name, generation)?;
            tracing::info!(projection = %name, generation, keys = copied, "converted");
        }
        self.flush()?;
        drop(old);
        // Past this marker the copies are complete: an interruption while the old files are
        // removed (after which sled could not open what is left) resumes with the removal.
        std::fs::File::create(&marker).and_then(|f| f.sync_all()).map_err(storage)?;
        std::fs::File::open(path).and_then(|d| d.sync_all()).map_err(storage)?;
        remove_single_database(path, &marker)
    }
}

/// The files sled keeps at the top of a database's directory (besides `snap.*`), and its
/// directory of blobs: what a single database of every read model leaves in the read models'
/// directory, and names no read model may take.
const SLED_FILES: [&str; 2] = ["conf", SLED_DATA];

/// sled's data file in a database's directory.
const SLED_DATA: &str = "db";
const SLED_BLOBS: &str = "blobs";

/// Marks a converted single database whose files are being removed (see
/// [`ProjectionDb::open_with_cache`]).
const CONVERTED: &str = "single-database-converted";

/// Removes the files of the single database in `path` (sled's `conf`, `db`, `snap.*` and
/// `blobs/`), then `marker`.
fn remove_single_database(path: &Path, marker: &Path) -> Result<()> {
    for entry in std::fs::read_dir(path).map_err(storage)? {
        let entry = entry.map_err(storage)?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if SLED_FILES.contains(&name.as_str()) || name.starts_with("snap.") {
            std::fs::remove_file(entry.path()).map_err(storage)?;
        } else if name == SLED_BLOBS {
            std::fs::remove_dir_all(entry.path()).map_err(storage)?;
        }
    }
    std::fs::remove_file(marker).map_err(storage)?;
    tracing::info!(path = %path.display(), "removed the read models' single database");
    Ok(())
}

/// Read models' names as directory names: lower-case letters, digits, `-` and `_`, and not
/// a name of sled's own files (a directory of a converted single database holds them).
fn valid_name(name: &str) -> bool {
    let chars = name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    chars && !name.is_empty() && !SLED_FILES.contains(&name) && name != SLED_BLOBS
}

/// The rules in force at the log's committed head (the defaults when never changed).
pub fn current_rules(store: &SledEventStore) -> Result<Rules> {
    let events = store.read_stream_blocking(RULES_STREAM, None, Direction::Backwards, 1)?;
    match events.first() {
        None => Ok(Rules::default()),
        Some(e) => match Event::decode(&e.event_type, e.schema_version, &e.payload) {
            Ok(Event::RulesChanged(changed)) => Ok(changed.rules),
            Ok(other) => Err(Error::Log(format!("unexpected {} in the rules stream", other.event_type()))),
            Err(err) => Err(Error::Log(format!("decoding the rules at position {}: {err}", e.position))),
        },
    }
}

/// Whether a projection is serving from a complete build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunState {
    /// Following the log.
    Live,
    /// A shadow build runs; the old build keeps serving (following the log, or, after a
    /// version change the code does not [follow](Projector::follows), frozen at its position).
    Rebuilding,
    /// Stopped at a failing event; still serving what it had.
    Failed,
}

/// Progress of a rebuild (or of the build behind a verification).
#[derive(Debug, Clone, PartialEq)]
pub struct RebuildProgress {
    /// `rebuild` or `verify`.
    pub purpose: &'static str,
    /// Why it started: `requested`, `version changed`, `rules fingerprint changed`.
    pub reason: String,
    pub done: u64,
    pub total: u64,
    pub events_per_second: f64,
    pub eta_seconds: f64,
    pub elapsed_seconds: f64,
    pub failure: Option<Failure>,
}

/// What [`ProjectionHandle::status`] reports.
#[derive(Debug, Clone, PartialEq)]
pub struct ProjectionStatus {
    pub name: String,
    /// Version and fingerprint of the serving build.
    pub version: u32,
    pub fingerprint: u64,
    pub rules_version: u64,
    pub state: RunState,
    /// Last applied position of the serving build.
    pub position: u64,
    pub last_recorded_at_micros: i64,
    pub failure: Option<Failure>,
    /// The shadow build running now, or the last one.
    pub shadow: Option<RebuildProgress>,
    pub rebuilds_completed: u64,
    /// The serving build is of a version the code does not [follow](Projector::follows):
    /// it stays at its position until its rebuild swaps in.
    pub frozen: bool,
}

/// One key on which the stored read model and a fresh rebuild disagree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
    pub key: String,
    /// What a rebuild from the log gives (`None`: the key should not exist).
    pub expected: Option<String>,
    /// What is stored (`None`: the key is missing).
    pub actual: Option<String>,
}

/// The outcome of [`ProjectionHandle::verify`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// The position both builds had reached when compared.
    pub position: u64,
    pub keys_compared: u64,
    pub total_differences: u64,
    /// The first differences in key order, at most 1000.
    pub differences: Vec<Difference>,
}

/// The outcome of a completed rebuild.
#[derive(Debug, Clone, PartialEq)]
pub struct RebuildSummary {
    pub position: u64,
    pub events: u64,
    pub seconds: f64,
}

/// A consistent view for one query: the serving tree and the position it reflects at least.
#[derive(Clone)]
pub struct Reader {
    pub tree: sled::Tree,
    /// Every event up to this position is applied (later ones may be too).
    pub position: u64,
}

impl Reader {
    /// The value under `key`, decoded.
    pub fn get<V: serde::de::DeserializeOwned>(&self, key: &[u8]) -> Result<Option<V>> {
        match self.tree.get(key)? {
            Some(bytes) => Ok(Some(decode_value(key, &bytes)?)),
            None => Ok(None),
        }
    }
}

enum Command {
    Rebuild(oneshot::Sender<Result<RebuildSummary>>),
    Verify(oneshot::Sender<Result<VerifyReport>>),
    Stop(oneshot::Sender<()>),
}

struct Shared {
    name: &'static str,
    status: Mutex<ProjectionStatus>,
    serving: RwLock<sled::Tree>,
    serving_rules: RwLock<Arc<Rules>>,
    position_tx: watch::Sender<u64>,
    commands: mpsc::UnboundedSender<Command>,
}

/// The query and admin side of one running projection. Cheap to clone.
#[derive(Clone)]
pub struct ProjectionHandle {
    shared: Arc<Shared>,
}

impl ProjectionHandle {
    pub fn name(&self) -> &'static str {
        self.shared.name
    }

    /// The serving tree and the position it reflects.
    pub fn reader(&self) -> Reader {
        let tree = self.shared.serving.read().expect("serving lock").clone();
        let position = *self.shared.position_tx.borrow();
        Reader { tree, position }
    }

    /// The rules the serving build was made with.
    pub fn rules(&self) -> Arc<Rules> {
        self.shared.serving_rules.read().expect("rules lock").clone()
    }

    /// The last applied position of the serving build.
    pub fn position(&self) -> u64 {
        *self.shared.position_tx.borrow()
    }

    /// Waits until the read model has applied `min_position`, at most `timeout`.
    pub async fn wait_for(&self, min_position: u64, timeout: Duration) -> Result<u64> {
        let status = self.status();
        if status.frozen && status.position < min_position {
            // It would wait for the whole rebuild (minutes on a long log): say so at once.
            return Err(Error::Upgrading {
                projection: self.shared.name.to_owned(),
                detail: format!(
                    "the version {} build serves frozen at position {} until the rebuild swaps in, not yet at {min_position}",
                    status.version, status.position
                ),
            });
        }
        let mut rx = self.shared.position_tx.subscribe();
        let reached = tokio::time::timeout(timeout, rx.wait_for(|p| *p >= min_position)).await;
        match reached {
            Ok(Ok(p)) => Ok(*p),
            _ => Err(Error::NotReached {
                projection: self.shared.name.to_owned(),
                wanted: min_position,
                reached: self.position(),
            }),
        }
    }

    pub fn status(&self) -> ProjectionStatus {
        self.shared.status.lock().expect("status lock").clone()
    }

    /// Rebuilds from position 0 into a shadow tree while the current one serves, then swaps.
    /// Resolves when the swap is done. Progress is in [`ProjectionHandle::status`].
    pub async fn rebuild(&self) -> Result<RebuildSummary> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::Rebuild(tx))?;
        rx.await.map_err(|_| Error::NotRunning(self.shared.name.to_owned()))?
    }

    /// Like [`ProjectionHandle::rebuild`], but returns once the rebuild is queued.
    pub fn start_rebuild(&self) -> Result<oneshot::Receiver<Result<RebuildSummary>>> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::Rebuild(tx))?;
        Ok(rx)
    }

    /// Recomputes the read model from the log up to the serving build's position and reports
    /// every key on which they differ.
    pub async fn verify(&self) -> Result<VerifyReport> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::Verify(tx))?;
        rx.await.map_err(|_| Error::NotRunning(self.shared.name.to_owned()))?
    }

    /// Stops the runner after its current step; returns when it has stopped.
    pub async fn stop(&self) {
        let (tx, rx) = oneshot::channel();
        if self.send(Command::Stop(tx)).is_ok() {
            let _ = rx.await;
        }
    }

    fn send(&self, command: Command) -> Result<()> {
        self.shared.commands.send(command).map_err(|_| Error::NotRunning(self.shared.name.to_owned()))
    }
}

enum Purpose {
    Rebuild { reason: String, replies: Vec<oneshot::Sender<Result<RebuildSummary>>> },
    Verify(oneshot::Sender<Result<VerifyReport>>),
}

struct Shadow {
    /// The rules fingerprint the shadow builds with.
    fingerprint: u64,
    /// Makes a step of the shadow in flight stop early (set when the runner stops).
    abandon: Arc<std::sync::atomic::AtomicBool>,
    generation: u64,
    purpose: Purpose,
    started: Instant,
    events: u64,
}

/// A shadow build between two steps, or in a step that runs beside the serving build.
enum ShadowBuild<P: Projector> {
    Idle(Box<Builder<P>>),
    /// A step far behind the serving build (more than [`LIVE_BATCH`] events) runs on a
    /// blocking thread of its own while the runner keeps stepping the serving build, so a
    /// rebuild never holds the serving build back by more than a near step. `up_to` and
    /// `head` are the step's target and the log's head when it started.
    Stepping {
        task: JoinHandle<(Box<Builder<P>>, StepResult)>,
        up_to: u64,
        head: u64,
    },
    /// A background step that has ended, collected by the runner's wait
    /// ([`wait_for_shadow_step`]) for [`Runner::step_shadow`] to take up.
    Stepped {
        builder: Box<Builder<P>>,
        result: StepResult,
        up_to: u64,
        head: u64,
    },
}

type StepResult = std::result::Result<StepOutcome, Failure>;

enum Pending {
    Rebuild { reason: String, reply: Option<oneshot::Sender<Result<RebuildSummary>>> },
    Verify(oneshot::Sender<Result<VerifyReport>>),
}

struct Runner<P: Projector> {
    db: ProjectionDb,
    store: SledEventStore,
    projector: Arc<P>,
    shared: Arc<Shared>,
    commands: mpsc::UnboundedReceiver<Command>,
    active: Option<Builder<P>>,
    generation: u64,
    failed: bool,
    shadow: Option<(Shadow, ShadowBuild<P>)>,
    pending: VecDeque<Pending>,
    retired: Vec<(sled::Tree, Instant)>,
    options: SpawnOptions,
    /// When the last live step (one close to the head) started.
    last_live_step: Option<Instant>,
}

/// Opens (or creates) the projection's serving build and starts its runner on the current
/// tokio runtime. When the stored build has another version or rules fingerprint than
/// `projector` with the current rules, a shadow rebuild starts at once; the stored build
/// serves until the swap. It keeps following the log after a rules change, and after a
/// version change only if the projector [follows](Projector::follows) the stored version;
/// otherwise it serves frozen at its position.
pub fn spawn<P: Projector>(db: &ProjectionDb, store: SledEventStore, projector: P) -> Result<ProjectionHandle> {
    spawn_with(db, store, projector, SpawnOptions::default())
}

/// How a runner follows the log once it is live.
#[derive(Debug, Clone, Copy, Default)]
pub struct SpawnOptions {
    /// Shortest time between two live steps. Each step costs a read of the log, a thread
    /// hand-off and one sled batch for state and checkpoint, whatever the number of events it
    /// applies; under a steady command load a few milliseconds between steps turn hundreds of
    /// one-event commits a second into a few large ones. The first event after a quiet spell
    /// is applied at once; at most this much is added to the lag (and to a `min_position`
    /// wait). Zero: a step for every head change.
    pub live_interval: Duration,
}

/// Like [`spawn`], with options.
pub fn spawn_with<P: Projector>(
    db: &ProjectionDb,
    store: SledEventStore,
    projector: P,
    options: SpawnOptions,
) -> Result<ProjectionHandle> {
    let name = projector.name();
    let projector = Arc::new(projector);
    let rules = current_rules(&store)?;
    let (generation, fresh) = match db.active_generation(name)? {
        Some(g) => (g, false),
        None => (1, true),
    };
    db.drop_other_trees(name, generation)?;
    let mut tree = db.tree(name, generation)?;
    if tree.get(crate::projector::SPILL_KEY)?.is_some() {
        // A chunked commit cut short (a crash): nothing in the tree can be used. A new tree,
        // rather than one emptied key by key (whose nodes sled keeps), takes the first
        // commit's bulk load.
        tracing::warn!(projection = name, "interrupted chunked commit: building again from position 0");
        tree = db.fresh_tree(name, &format!("{name}/{generation}"))?;
    }
    if fresh {
        db.set_active_generation(name, generation)?;
    }
    let active = Builder::open(projector.clone(), tree.clone(), rules.clone(), false)
        .map_err(|f| Error::Storage(format!("opening projection `{name}`: {}", f.detail)))?
        .with_budget(db.budget());
    let mut pending = VecDeque::new();
    let frozen = frozen_by(&*projector, active.meta.version);
    if active.meta.version != projector.version() {
        if frozen {
            tracing::info!(
                projection = name,
                stored = active.meta.version,
                version = projector.version(),
                position = active.meta.position,
                "the stored build serves frozen at its position until the rebuild for the new version swaps in"
            );
        }
        pending.push_back(Pending::Rebuild { reason: "version changed".into(), reply: None });
    } else if active.meta.fingerprint != projector.fingerprint(&rules) {
        pending.push_back(Pending::Rebuild { reason: "rules fingerprint changed".into(), reply: None });
    }
    let status = ProjectionStatus {
        name: name.to_owned(),
        version: active.meta.version,
        fingerprint: active.meta.fingerprint,
        rules_version: active.meta.rules.version,
        state: RunState::Live,
        position: active.meta.position,
        last_recorded_at_micros: active.meta.last_recorded_at_micros,
        failure: None,
        shadow: None,
        rebuilds_completed: 0,
        frozen,
    };
    let (position_tx, _) = watch::channel(active.meta.position);
    let (commands_tx, commands) = mpsc::unbounded_channel();
    let shared = Arc::new(Shared {
        name,
        status: Mutex::new(status),
        serving: RwLock::new(tree),
        serving_rules: RwLock::new(Arc::new(active.meta.rules.clone())),
        position_tx,
        commands: commands_tx,
    });
    let runner = Runner {
        db: db.clone(),
        store,
        projector,
        shared: shared.clone(),
        commands,
        active: Some(active),
        generation,
        failed: false,
        shadow: None,
        pending,
        retired: Vec::new(),
        options,
        last_live_step: None,
    };
    tokio::spawn(runner.run());
    Ok(ProjectionHandle { shared })
}

impl<P: Projector> Runner<P> {
    async fn run(mut self) {
        let mut head_rx = self.store.watch_head();
        tracing::info!(projection = self.shared.name, position = self.active_meta_position(), "projection started");
        loop {
            while let Ok(command) = self.commands.try_recv() {
                if let Some(done) = self.accept(command) {
                    self.finish(done).await;
                    return;
                }
            }
            head_rx.borrow_and_update();
            self.start_pending();
            let mut worked = self.step_shadow().await;
            worked |= self.step_active().await;
            self.drop_retired(false);
            if worked {
                tokio::task::yield_now().await;
                continue;
            }
            // Held back by the live interval: the timer wakes the runner, head changes until
            // then need not.
            let next_live_step = self.next_live_step();
            tokio::select! {
                changed = head_rx.changed(), if next_live_step.is_none() => {
                    if changed.is_err() {
                        // The store is gone; wait for the stop command.
                        match self.commands.recv().await {
                            Some(Command::Stop(done)) => { self.finish(done).await; return; }
                            Some(other) => { if let Some(done) = self.accept(other) { self.finish(done).await; return; } }
                            None => return,
                        }
                    }
                }
                command = self.commands.recv() => match command {
                    Some(command) => if let Some(done) = self.accept(command) { self.finish(done).await; return; },
                    None => return,
                },
                () = tokio::time::sleep(RETIRE_AFTER), if !self.retired.is_empty() => {}
                () = sleep_until_opt(next_live_step), if next_live_step.is_some() => {}
                () = wait_for_shadow_step(&mut self.shadow), if matches!(self.shadow, Some((_, ShadowBuild::Stepping { .. }))) => {}
            }
        }
    }

    /// When the next live step may run, if the live interval holds the serving build back now
    /// (it is behind the head, but by no more than a live step applies).
    fn next_live_step(&self) -> Option<tokio::time::Instant> {
        let next = self.last_live_step? + self.options.live_interval;
        let behind = self.active.as_ref().map_or(0, |b| self.store.committed_head() - b.applied_position());
        (behind > 0 && behind <= LIVE_BATCH && next > Instant::now()).then(|| tokio::time::Instant::from_std(next))
    }

    /// Whether the serving build is of a version this code must not fold into
    /// ([`Projector::follows`]): it serves as it is until its rebuild swaps in.
    fn frozen(&self) -> bool {
        self.active.as_ref().is_some_and(|a| frozen_by(&*self.projector, a.meta.version))
    }

    /// A frozen build whose rebuild failed (or could not start): nothing else will move it
    /// on, so it shows `Failed` with the rebuild's failure until a requested rebuild swaps.
    fn fail_frozen(&self, failure: Failure) {
        let mut status = self.shared.status.lock().expect("status lock");
        status.state = RunState::Failed;
        status.failure = Some(failure);
    }

    fn active_meta_position(&self) -> u64 {
        self.active.as_ref().map_or(0, |a| a.meta.position)
    }

    async fn finish(&mut self, done: oneshot::Sender<()>) {
        if let Some((shadow, build)) = self.shadow.take() {
            // A step in flight is told to stop (it ends at its next read of the log or within
            // its chunked write) and waited for; the tree goes once nothing writes to it.
            shadow.abandon.store(true, std::sync::atomic::Ordering::Relaxed);
            let builder = match build {
                ShadowBuild::Idle(builder) | ShadowBuild::Stepped { builder, .. } => builder,
                ShadowBuild::Stepping { task, .. } => task.await.expect("shadow step does not panic").0,
            };
            let _ = self.db.drop_tree(self.shared.name, &builder.tree.name());
        }
        self.drop_retired(true);
        let _ = self.db.flush_one(self.shared.name);
        tracing::info!(projection = self.shared.name, position = self.active_meta_position(), "projection stopped");
        let _ = done.send(());
    }

    /// Queues a command; returns the reply channel of a stop.
    fn accept(&mut self, command: Command) -> Option<oneshot::Sender<()>> {
        match command {
            Command::Stop(done) => return Some(done),
            Command::Rebuild(reply) => {
                // A rebuild already running or queued answers this request too.
                if let Some((Shadow { purpose: Purpose::Rebuild { replies, .. }, .. }, _)) = &mut self.shadow {
                    replies.push(reply);
                } else if let Some(Pending::Rebuild { reply: slot @ None, .. }) =
                    self.pending.iter_mut().find(|p| matches!(p, Pending::Rebuild { reply: None, .. }))
                {
                    *slot = Some(reply);
                } else {
                    self.pending.push_back(Pending::Rebuild { reason: "requested".into(), reply: Some(reply) });
                }
            }
            Command::Verify(reply) => self.pending.push_back(Pending::Verify(reply)),
        }
        None
    }

    fn start_pending(&mut self) {
        if self.shadow.is_some() {
            return;
        }
        let Some(next) = self.pending.pop_front() else { return };
        let active_rules = self.active.as_ref().map(|a| a.meta.rules.clone()).unwrap_or_default();
        let (tree, generation, rules, purpose) = match next {
            Pending::Rebuild { reason, reply } => {
                let generation = self.generation + 1;
                let tree = self.db.fresh_tree(self.shared.name, &format!("{}/{generation}", self.shared.name));
                let rules = current_rules(&self.store);
                match (tree, rules) {
                    (Ok(tree), Ok(rules)) => {
                        (Ok(tree), generation, rules, Purpose::Rebuild { reason, replies: reply.into_iter().collect() })
                    }
                    (Err(e), _) => (
                        Err(e.to_string()),
                        0,
                        active_rules,
                        Purpose::Rebuild { reason, replies: reply.into_iter().collect() },
                    ),
                    (_, Err(e)) => (
                        Err(e.to_string()),
                        0,
                        active_rules,
                        Purpose::Rebuild { reason, replies: reply.into_iter().collect() },
                    ),
                }
            }
            Pending::Verify(reply) if self.frozen() => {
                // A rebuild with this version's code cannot be compared with an older
                // version's tree: every difference would be the upgrade.
                let version = self.active.as_ref().map_or(0, |a| a.meta.version);
                let _ = reply.send(Err(Error::Upgrading {
                    projection: self.shared.name.to_owned(),
                    detail: format!(
                        "the serving build is version {version} and this code version {}; verify after the swap",
                        self.projector.version()
                    ),
                }));
                return;
            }
            Pending::Verify(reply) => (
                self.db.verify_tree(self.shared.name).map_err(|e| e.to_string()),
                0,
                active_rules,
                Purpose::Verify(reply),
            ),
        };
        let budget = self.db.budget();
        let opened = tree.and_then(|tree| {
            Builder::open(self.projector.clone(), tree, rules, true)
                .map(|b| b.with_budget(budget))
                .map_err(|f| f.detail)
        });
        let builder = match opened {
            Ok(b) => b,
            Err(detail) => {
                if self.frozen() && matches!(purpose, Purpose::Rebuild { .. }) {
                    self.fail_frozen(Failure {
                        position: self.active_meta_position() + 1,
                        detail: format!("starting the rebuild for the new version: {detail}"),
                    });
                }
                tracing::error!(projection = self.shared.name, %detail, "shadow build could not start");
                fail_purpose(purpose, Error::Storage(detail));
                return;
            }
        };
        let (purpose_name, reason) = match &purpose {
            Purpose::Rebuild { reason, .. } => ("rebuild", reason.clone()),
            Purpose::Verify(_) => ("verify", "requested".to_owned()),
        };
        tracing::info!(projection = self.shared.name, purpose = purpose_name, %reason, "shadow build started");
        {
            let mut status = self.shared.status.lock().expect("status lock");
            if purpose_name == "rebuild" && status.state != RunState::Failed {
                status.state = RunState::Rebuilding;
            }
            status.shadow = Some(RebuildProgress {
                purpose: purpose_name,
                reason,
                done: 0,
                total: self.store.committed_head(),
                events_per_second: 0.0,
                eta_seconds: 0.0,
                elapsed_seconds: 0.0,
                failure: None,
            });
        }
        let fingerprint = builder.meta.fingerprint;
        let abandon = builder.abandon_flag();
        let shadow = Shadow { fingerprint, abandon, generation, purpose, started: Instant::now(), events: 0 };
        self.shadow = Some((shadow, ShadowBuild::Idle(Box::new(builder))));
    }

    /// Advances the shadow build one step, or collects the step running beside the serving
    /// build once it has finished; swaps or compares when the shadow has caught up. A step
    /// far behind runs in the background ([`ShadowBuild::Stepping`]); a near one (the last
    /// steps before a swap) runs here, so the swap happens between two serving steps.
    async fn step_shadow(&mut self) -> bool {
        let Some((mut shadow, build)) = self.shadow.take() else { return false };
        let (builder, result, up_to, head) = match build {
            ShadowBuild::Stepped { builder, result, up_to, head } => (builder, result, up_to, head),
            // Ended while the runner was busy with the serving build (its wait, which
            // collects a step, only runs when there is nothing else to do).
            ShadowBuild::Stepping { task, up_to, head } if task.is_finished() => {
                let (builder, result) = task.await.expect("shadow step does not panic");
                (builder, result, up_to, head)
            }
            stepping @ ShadowBuild::Stepping { .. } => {
                self.shadow = Some((shadow, stepping));
                return false;
            }
            ShadowBuild::Idle(builder) => {
                let head = self.store.committed_head();
                // A verification compares at the serving build's position; a rebuild catches
                // up with the serving build (or with the head, when the serving build has failed).
                let up_to = match (&shadow.purpose, self.failed) {
                    (Purpose::Rebuild { .. }, true) => head,
                    _ => self.active_meta_position(),
                };
                // Measured from the last commit: a step that ends a long stretch held in
                // memory commits all of it (for a first build, the whole tree), so it runs
                // in the background however few events it has left to apply.
                let far = up_to.saturating_sub(builder.meta.position) > LIVE_BATCH;
                let store = self.store.clone();
                let task = tokio::task::spawn_blocking(move || {
                    let mut builder = builder;
                    let result = builder.step(&store, up_to, SHADOW_BATCH, Commit::WhenDone);
                    (builder, result)
                });
                if far {
                    self.shadow = Some((shadow, ShadowBuild::Stepping { task, up_to, head }));
                    return false;
                }
                let (builder, result) = task.await.expect("shadow step does not panic");
                (builder, result, up_to, head)
            }
        };
        let elapsed = shadow.started.elapsed().as_secs_f64();
        match result {
            Err(failure) => {
                tracing::error!(projection = self.shared.name, position = failure.position, detail = %failure.detail, "shadow build failed");
                let _ = self.db.drop_tree(self.shared.name, &builder.tree.name());
                if self.frozen() {
                    self.fail_frozen(failure.clone());
                }
                let mut status = self.shared.status.lock().expect("status lock");
                if status.state == RunState::Rebuilding {
                    status.state = RunState::Live;
                }
                if let Some(progress) = &mut status.shadow {
                    progress.failure = Some(failure.clone());
                }
                drop(status);
                let name = self.shared.name.to_owned();
                fail_purpose(
                    shadow.purpose,
                    Error::Apply { projector: name, position: failure.position, detail: failure.detail },
                );
                true
            }
            Ok(outcome) => {
                shadow.events += outcome.applied;
                let done = builder.applied_position();
                {
                    let mut status = self.shared.status.lock().expect("status lock");
                    if let Some(progress) = &mut status.shadow {
                        let total = head.max(done);
                        let rate = if elapsed > 0.0 { shadow.events as f64 / elapsed } else { 0.0 };
                        progress.done = done;
                        progress.total = total;
                        progress.events_per_second = rate;
                        progress.elapsed_seconds = elapsed;
                        progress.eta_seconds = if rate > 0.0 { (total - done) as f64 / rate } else { 0.0 };
                    }
                }
                let committed = builder.meta.position;
                // A serving build that holds uncommitted progress (catching up from far behind)
                // is not a position to swap at: the shadow waits for its commit.
                let active_settled = self.active.as_ref().is_none_or(|a| a.applied_position() == a.meta.position);
                // Against the serving build as it is now, not as when a background step
                // started: it may have moved on, or failed further on; never swap backwards.
                let serving = self.active_meta_position();
                let caught_up = committed >= up_to
                    && committed >= serving
                    && (self.failed || self.frozen() || (active_settled && committed == serving));
                if caught_up {
                    self.complete(shadow, builder).await;
                } else {
                    self.shadow = Some((shadow, ShadowBuild::Idle(builder)));
                }
                outcome.applied > 0 || caught_up
            }
        }
    }

    async fn complete(&mut self, shadow: Shadow, builder: Box<Builder<P>>) {
        let elapsed = shadow.started.elapsed().as_secs_f64();
        match shadow.purpose {
            Purpose::Verify(reply) => {
                let active_tree = self.active.as_ref().expect("active build").tree.clone();
                let verify_tree = builder.tree.clone();
                let position = builder.meta.position;
                let report = tokio::task::spawn_blocking(move || compare::<P>(&verify_tree, &active_tree, position))
                    .await
                    .expect("compare does not panic");
                let _ = self.db.drop_tree(self.shared.name, &builder.tree.name());
                if let Ok(report) = &report {
                    tracing::info!(
                        projection = self.shared.name,
                        position,
                        differences = report.total_differences,
                        "verified"
                    );
                }
                let _ = reply.send(report);
            }
            Purpose::Rebuild { replies, reason } => {
                let position = builder.meta.position;
                if let Err(e) = self.db.set_active_generation(self.shared.name, shadow.generation) {
                    let _ = self.db.drop_tree(self.shared.name, &builder.tree.name());
                    for reply in replies {
                        let _ = reply.send(Err(e.clone()));
                    }
                    return;
                }
                let new_tree = builder.tree.clone();
                *self.shared.serving.write().expect("serving lock") = new_tree;
                let old = self.active.replace(*builder).expect("active build");
                self.retired.push((old.tree, Instant::now()));
                self.generation = shadow.generation;
                self.failed = false;
                let meta = &self.active.as_ref().expect("active build").meta;
                *self.shared.serving_rules.write().expect("rules lock") = Arc::new(meta.rules.clone());
                {
                    let mut status = self.shared.status.lock().expect("status lock");
                    status.state = RunState::Live;
                    status.version = meta.version;
                    status.fingerprint = meta.fingerprint;
                    status.rules_version = meta.rules.version;
                    status.position = meta.position;
                    status.last_recorded_at_micros = meta.last_recorded_at_micros;
                    status.failure = None;
                    status.rebuilds_completed += 1;
                    status.frozen = false;
                    if let Some(progress) = &mut status.shadow {
                        progress.done = position;
                        progress.eta_seconds = 0.0;
                    }
                }
                self.shared.position_tx.send_replace(position);
                tracing::info!(projection = self.shared.name, position, generation = self.generation, %reason, seconds = elapsed, "rebuilt and swapped");
                for reply in replies {
                    let _ = reply.send(Ok(RebuildSummary { position, events: shadow.events, seconds: elapsed }));
                }
            }
        }
    }

    /// Advances the serving build one step.
    async fn step_active(&mut self) -> bool {
        if self.failed || self.frozen() || self.next_live_step().is_some() {
            return false;
        }
        let Some(builder) = self.active.take() else { return false };
        if builder.applied_position() >= self.store.committed_head() {
            self.active = Some(builder);
            return false;
        }
        let store = self.store.clone();
        let behind = self.store.committed_head() - builder.applied_position();
        let live = behind <= LIVE_BATCH;
        if live && !self.options.live_interval.is_zero() {
            self.last_live_step = Some(Instant::now());
        }
        let (batch, commit) = if live { (LIVE_BATCH, Commit::EveryStep) } else { (CATCH_UP_BATCH, Commit::WhenDone) };
        let (builder, result) = tokio::task::spawn_blocking(move || {
            let mut builder = builder;
            let result = builder.step(&store, u64::MAX, batch, commit);
            (builder, result)
        })
        .await
        .expect("live step does not panic");
        let meta = builder.meta.clone();
        let seen_rules = builder.seen_rules.clone();
        self.active = Some(builder);
        {
            let mut status = self.shared.status.lock().expect("status lock");
            status.position = meta.position;
            status.last_recorded_at_micros = meta.last_recorded_at_micros;
            if let Err(failure) = &result {
                status.state = RunState::Failed;
                status.failure = Some(failure.clone());
            }
        }
        self.shared.position_tx.send_if_modified(|p| {
            let changed = *p != meta.position;
            *p = meta.position;
            changed
        });
        match result {
            Err(failure) => {
                tracing::error!(projection = self.shared.name, position = failure.position, detail = %failure.detail, "projection failed");
                self.failed = true;
                false
            }
            Ok(outcome) => {
                // Rules older than the build's own (met while catching up on history) change
                // nothing: a build runs with the rules current when it started.
                if let Some(rules) = seen_rules.filter(|r| r.version > meta.rules.version) {
                    let fingerprint = self.projector.fingerprint(&rules);
                    let shadow_fingerprint = self.shadow.as_ref().map(|(s, _)| s.fingerprint);
                    let queued = self.pending.iter().any(|p| matches!(p, Pending::Rebuild { .. }));
                    if fingerprint != meta.fingerprint && shadow_fingerprint != Some(fingerprint) && !queued {
                        self.pending
                            .push_back(Pending::Rebuild { reason: "rules fingerprint changed".into(), reply: None });
                    }
                }
                outcome.applied > 0
            }
        }
    }

    fn drop_retired(&mut self, all: bool) {
        let (db, name) = (&self.db, self.shared.name);
        self.retired.retain(|(tree, since)| {
            if all || since.elapsed() >= RETIRE_AFTER {
                let _ = db.drop_tree(name, &tree.name());
                false
            } else {
                true
            }
        });
    }
}

/// Waits for the shadow's background step to end and keeps its outcome in place
/// ([`ShadowBuild::Stepped`]); pending forever when no step runs in the background. Dropped
/// before the step ends (another branch of the runner's wait won), it leaves the step as it
/// was.
async fn wait_for_shadow_step<P: Projector>(shadow: &mut Option<(Shadow, ShadowBuild<P>)>) {
    let Some((_, build)) = shadow else { return std::future::pending().await };
    let ShadowBuild::Stepping { task, up_to, head } = build else { return std::future::pending().await };
    let (up_to, head) = (*up_to, *head);
    let (builder, result) = task.await.expect("shadow step does not panic");
    *build = ShadowBuild::Stepped { builder, result, up_to, head };
}

async fn sleep_until_opt(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Whether `projector` must leave a stored build of `stored_version` as it is
/// ([`Projector::follows`]).
fn frozen_by<P: Projector>(projector: &P, stored_version: u32) -> bool {
    stored_version != projector.version() && !projector.follows(stored_version)
}

fn fail_purpose(purpose: Purpose, error: Error) {
    match purpose {
        Purpose::Rebuild { replies, .. } => {
            for reply in replies {
                let _ = reply.send(Err(error.clone()));
            }
        }
        Purpose::Verify(reply) => {
            let _ = reply.send(Err(error));
        }
    }
}

fn render<P: Projector>(key: &[u8], bytes: &[u8]) -> String {
    match decode_value::<P::Value>(key, bytes) {
        Ok(v) => format!("{v:?}"),
        Err(e) => format!("<undecodable: {e}>"),
    }
}

/// Compares a fresh build (`expected`) with the stored one (`actual`), key by key.
fn compare<P: Projector>(expected: &sled::Tree, actual: &sled::Tree, position: u64) -> Result<VerifyReport> {
    let mut report = VerifyReport { position, keys_compared: 0, total_differences: 0, differences: Vec::new() };
    let push = |report: &mut VerifyReport, d: Difference| {
        report.total_differences += 1;
        if report.differences.len() < MAX_REPORTED_DIFFERENCES {
            report.differences.push(d);
        }
    };
    let skip_meta = |r: &std::result::Result<(sled::IVec, sled::IVec), sled::Error>| {
        r.as_ref().map_or(true, |(k, _)| k.as_ref() != META_KEY)
    };
    let mut left = expected.iter().filter(skip_meta).peekable();
    let mut right = actual.iter().filter(skip_meta).peekable();
    loop {
        let order = match (left.peek(), right.peek()) {
            (None, None) => break,
            (Some(Err(_)), _) | (_, Some(Err(_))) => {
                let e = left.next().and_then(|r| r.err()).or_else(|| right.next().and_then(|r| r.err()));
                return Err(Error::Storage(e.map_or_else(|| "iteration failed".into(), |e| e.to_string())));
            }
            (Some(Ok((l, _))), Some(Ok((r, _)))) => l.as_ref().cmp(r.as_ref()),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
        };
        report.keys_compared += 1;
        match order {
            std::cmp::Ordering::Less => {
                let (k, v) = left.next().expect("peeked")?;
                push(
                    &mut report,
                    Difference { key: printable_key(&k), expected: Some(render::<P>(&k, &v)), actual: None },
                );
            }
            std::cmp::Ordering::Greater => {
                let (k, v) = right.next().expect("peeked")?;
                push(
                    &mut report,
                    Difference { key: printable_key(&k), expected: None, actual: Some(render::<P>(&k, &v)) },
                );
            }
            std::cmp::Ordering::Equal => {
                let (k, lv) = left.next().expect("peeked")?;
                let (_, rv) = right.next().expect("peeked")?;
                if lv != rv {
                    push(
                        &mut report,
                        Difference {
                            key: printable_key(&k),
                            expected: Some(render::<P>(&k, &lv)),
                            actual: Some(render::<P>(&k, &rv)),
                        },
                    );
                }
            }
        }
    }
    Ok(report)
}
