//! The sled implementation of [`EventStore`]: one writer thread, one durability thread, one
//! checkpoint thread.
//!
//! Appends travel over a channel to the writer thread, which drains every waiting request
//! into one group, checks expectations and idempotency, assigns gapless positions, applies
//! the group as one atomic sled `Batch` and encodes the same writes as one record of the
//! write-ahead file ([`crate::wal`]). It then hands the group to the sync thread and goes on
//! gathering the next group while the sync thread writes every waiting record, runs the
//! durability barrier (one `fdatasync` of the write-ahead file), publishes the new committed
//! head and acknowledges every request of the groups it covered. Readers never see past the
//! committed head. The checkpoint thread makes sled itself durable about once a second
//! (sled `flush`, then a sync of sled's files), after which the write-ahead segments
//! it covers are deleted.

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use futures::stream::{BoxStream, StreamExt};
use tokio::sync::{oneshot, watch};
use uuid::Uuid;

use crate::codec::{write_frame, EncodedEvent, Frames, GENESIS, HASH_LEN};
use crate::id_index::IdIndex;
use crate::keys::{self, StreamEntry};
use crate::wal::{self, Wal};
use crate::{
    AppendResult, Direction, Durability, Error, EventStore, ExpectedVersion, RecordedEvent, Result, StreamAppend,
};

/// Longest accepted stream id, in bytes.
pub const MAX_STREAM_ID_LEN: usize = 256;
/// Most events accepted in one append (across all streams of an `append_many`).
pub const MAX_EVENTS_PER_APPEND: usize = 1000;
/// Largest accepted event payload, in bytes.
pub const MAX_PAYLOAD_LEN: usize = 1024 * 1024;
/// Longest accepted event type or metadata field, in bytes.
pub const MAX_NAME_LEN: usize = 1024;

/// sled's segment size. sled writes values larger than a quarter segment to separate blob
/// files that it never fsyncs; 8 MiB segments keep every frame (payload <= 1 MiB) inline in
/// the data file that the barrier syncs.
const SEGMENT_SIZE: usize = 8 * 1024 * 1024;
/// A log chunk is closed once it reaches this size; a single larger frame gets its own chunk.
const CHUNK_TARGET: usize = 64 * 1024;
/// The writer closes a group once it holds this many bytes of frames (a write-ahead record's
/// length is a `u32`; one append is at most 1,000 frames of about 1 MiB).
const MAX_GROUP_BYTES: usize = 64 * 1024 * 1024;
/// How often the checkpoint thread makes sled durable (when anything was applied since).
const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(1);

/// The default of [`Config::cache_capacity`]: 512 MiB.
pub const DEFAULT_CACHE_BYTES: u64 = 512 * 1024 * 1024;

/// Settings of a [`SledEventStore`].
#[derive(Debug, Clone)]
pub struct Config {
    /// Directory of the sled database; created if missing.
    pub path: PathBuf,
    /// sled's page cache size in bytes.
    pub cache_capacity: u64,
    /// Most events the writer puts into one group commit.
    pub max_group_events: usize,
}

impl Config {
    /// Defaults for a store at `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Config { path: path.into(), cache_capacity: DEFAULT_CACHE_BYTES, max_group_events: 16 * 1024 }
    }
}

/// Counters for benchmarks and status pages.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Group commits applied by the writer.
    pub groups: u64,
    /// Writes to the write-ahead file (each covering every group waiting for it).
    pub barriers: u64,
    /// `fdatasync` calls of the write-ahead file among them (buffered groups skip it).
    pub fdatasyncs: u64,
    /// Time spent writing records to the write-ahead file, in microseconds, summed.
    pub write_micros: u64,
    /// Time spent in the write-ahead file's `fdatasync`, in microseconds, summed.
    pub fdatasync_micros: u64,
    /// Checkpoints run (sled flush plus a sync of sled's files, in the background).
    pub checkpoints: u64,
    /// Time the writer spent on groups (reading versions ahead, planning, encoding, applying
    /// to sled), in microseconds, summed.
    pub writer_busy_micros: u64,
    /// Time the sync thread waited for the writer's next group, summed.
    pub sync_idle_micros: u64,
    /// Of the writer's busy time: reading the stored versions of a group's streams ahead
    /// (groups with `READ_AHEAD_FROM` or more uncached streams; a smaller group's reads are
    /// made while planning and count here not at all), in microseconds, summed.
    pub writer_read_ahead_micros: u64,
    /// Of the writer's busy time: applying groups to sled (`apply_batch`), in microseconds,
    /// summed.
    pub writer_apply_micros: u64,
}

/// What [`SledEventStore::warm_stream_index`] read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Warmed {
    /// Stream index entries read.
    pub entries: u64,
    /// Their keys' and values' bytes.
    pub bytes: u64,
}

/// Threads reading the stream index in [`SledEventStore::warm_stream_index`]: its pages are
/// scattered over the log's file, so it is many small reads, and the disk serves more of them
/// at once than one at a time.
pub const WARM_THREADS: usize = 16;

/// Times the stream index's key range is halved (at most 2^this ranges) before it is read.
const WARM_SPLIT_DEPTH: u32 = 8;

/// The first 16 bytes of `key` (zero-padded) as a number, for halving key ranges.
fn key_number(key: &[u8]) -> u128 {
    let mut bytes = [0u8; 16];
    let n = key.len().min(16);
    bytes[..n].copy_from_slice(&key[..n]);
    u128::from_be_bytes(bytes)
}

/// Splits `[low, high)` of `tree` into at most 2^`depth` ranges holding keys, each halved at
/// the midpoint of its first and last key (so the empty space between groups of stream names
/// collapses and each group of names is split evenly). Ranges are pushed in key order; a
/// range whose first and last keys share their first 16 bytes (or differ by one there) is
/// kept whole. Stops splitting when `stop` is set.
fn split_key_range(
    tree: &sled::Tree,
    low: Vec<u8>,
    high: Vec<u8>,
    depth: u32,
    stop: &AtomicBool,
    out: &mut Vec<(Vec<u8>, Vec<u8>)>,
) -> Result<()> {
    let Some(first) = tree.range(low.clone()..high.clone()).next().transpose()? else { return Ok(()) };
    let Some(last) = tree.range(low.clone()..high.clone()).next_back().transpose()? else { return Ok(()) };
    let (a, b) = (key_number(&first.0), key_number(&last.0));
    // Below `last` (a < b), so both halves hold a key when it is above `first`.
    let middle = (a / 2 + b / 2 + (a & b & 1)).to_be_bytes().to_vec();
    if depth == 0 || a == b || middle.as_slice() <= first.0.as_ref() || stop.load(Ordering::Relaxed) {
        out.push((low, high));
        return Ok(());
    }
    split_key_range(tree, low, middle.clone(), depth - 1, stop, out)?;
    split_key_range(tree, middle, high, depth - 1, stop, out)
}

#[cfg(test)]
mod warm_tests {
    use super::*;

    fn ranges(keys: &[Vec<u8>]) -> Vec<(Vec<u8>, Vec<u8>)> {
        let db = sled::Config::new().temporary(true).open().unwrap();
        for key in keys {
            db.insert(key, &[1u8]).unwrap();
        }
        let mut out = Vec::new();
        split_key_range(&db, b"s".to_vec(), b"t".to_vec(), WARM_SPLIT_DEPTH, &AtomicBool::new(false), &mut out)
            .unwrap();
        out
    }

    /// The ranges are contiguous from `s` to `t`, in order, so every key falls in exactly one.
    fn assert_contiguous(ranges: &[(Vec<u8>, Vec<u8>)]) {
        assert_eq!(ranges.first().unwrap().0, b"s".to_vec());
        assert_eq!(ranges.last().unwrap().1, b"t".to_vec());
        for pair in ranges.windows(2) {
            assert_eq!(pair[0].1, pair[1].0);
            assert!(pair[0].0 < pair[0].1);
        }
    }

    #[test]
    fn the_stream_index_is_split_into_contiguous_ranges_where_its_keys_are() {
        let keys: Vec<Vec<u8>> = (0..2_000)
            .map(|i| {
                let kind = ["lead", "customer", "task"][i % 3];
                keys::stream_key(&format!("{kind}-{}", uuid::Uuid::new_v4()), 0)
            })
            .collect();
        let split = ranges(&keys);
        assert!(split.len() > 64, "split into {} ranges", split.len());
        assert_contiguous(&split);
        // Keys sharing their first 16 bytes cannot be told apart by the midpoint: one range.
        let alike: Vec<Vec<u8>> = (0..50).map(|i| keys::stream_key(&format!("customer-00000{i:03}"), 0)).collect();
        let one = ranges(&alike);
        assert_eq!(one, vec![(b"s".to_vec(), b"t".to_vec())]);
    }
}

type Reply = oneshot::Sender<Result<Vec<AppendResult>>>;

struct Request {
    appends: Vec<PreparedAppend>,
    durability: Durability,
    reply: Reply,
}

struct PreparedAppend {
    stream: String,
    expected: ExpectedVersion,
    events: Vec<EncodedEvent>,
}

struct SyncJob {
    head: u64,
    wrote: bool,
    durable: bool,
    /// The group's write-ahead record (empty when nothing was written).
    record: Vec<u8>,
    replies: Vec<(Reply, Result<Vec<AppendResult>>)>,
}

/// The sled-backed event store. Cheap to clone; all clones share one writer.
#[derive(Clone)]
pub struct SledEventStore {
    inner: Arc<Inner>,
}

struct Inner {
    config: Config,
    shared: Arc<Shared>,
    /// The running sled instance with its writer and sync threads; `None` once closed.
    engine: RwLock<Option<Engine>>,
    /// Serialises recovery attempts and close.
    lifecycle: Mutex<()>,
}

/// One open sled instance and the threads writing to it. Replaced as a whole when the log
/// recovers from a failed durability barrier.
struct Engine {
    db: sled::Db,
    requests: mpsc::Sender<Request>,
    /// Dropped to stop the checkpoint thread.
    stop_checkpoints: mpsc::Sender<()>,
    /// The writer and sync threads.
    threads: Vec<JoinHandle<()>>,
    checkpointer: JoinHandle<()>,
}

/// Positions shared by one engine's threads.
#[derive(Default)]
struct Progress {
    /// The last position the writer applied to sled.
    applied: AtomicU64,
    /// The last position a checkpoint made durable in sled itself.
    checkpointed: AtomicU64,
}

/// State shared with the writer and sync threads. Kept apart from `Inner` (whose drop joins
/// those threads) so that the threads never hold the last reference to `Inner`.
struct Shared {
    committed: AtomicU64,
    head_tx: watch::Sender<u64>,
    closed: AtomicBool,
    failed: Mutex<Option<String>>,
    /// Set for the life of the process once a checkpoint failed: an `fdatasync` that failed
    /// may have dropped dirty pages of sled's files that a later, successful `fdatasync` does
    /// not write again (Linux marks them clean). The failed engine's checkpoints stop, so it
    /// deletes no segment they did not cover; every later engine of this process replays the
    /// segments and leaves them on disk ([`Wal::create`] with `keep_old`), out of its own
    /// deletions.
    keep_wal: AtomicBool,
    groups: AtomicU64,
    barriers: AtomicU64,
    fdatasyncs: AtomicU64,
    write_micros: AtomicU64,
    fdatasync_micros: AtomicU64,
    checkpoints: AtomicU64,
    writer_busy_micros: AtomicU64,
    sync_idle_micros: AtomicU64,
    writer_read_ahead_micros: AtomicU64,
    writer_apply_micros: AtomicU64,
    /// The last position the writers applied per event type, since open.
    by_type: Mutex<ByType>,
}

/// What [`SledEventStore::last_position_of_types`] answers from.
#[derive(Default)]
struct ByType {
    /// The committed head when the store opened: an upper bound of every older event's
    /// position.
    opened_at: u64,
    /// The position of the last event of each type applied since open (by any engine: one
    /// that failed may have applied events that were never committed).
    last: HashMap<String, u64>,
}

impl Shared {
    /// Stops the log accepting writes after `what` failed with `error` (the first failure's
    /// reason is the one reported), and returns that reason.
    fn fail(&self, what: &str, error: &dyn std::fmt::Display) -> String {
        tracing::error!(error = %error, "{what} failed");
        self.failed
            .lock()
            .expect("failed lock")
            .get_or_insert_with(|| {
                format!("{what} failed, the log stopped accepting writes until it recovers: {error}")
            })
            .clone()
    }
}

impl std::ops::Deref for Inner {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.shared
    }
}

impl SledEventStore {
    /// Opens (or creates) the store in `config.path` and starts its writer.
    pub fn open(config: Config) -> Result<Self> {
        let (head_tx, _) = watch::channel(0);
        let shared = Arc::new(Shared {
            committed: AtomicU64::new(0),
            head_tx,
            closed: AtomicBool::new(false),
            failed: Mutex::new(None),
            keep_wal: AtomicBool::new(false),
            groups: AtomicU64::new(0),
            barriers: AtomicU64::new(0),
            fdatasyncs: AtomicU64::new(0),
            write_micros: AtomicU64::new(0),
            fdatasync_micros: AtomicU64::new(0),
            checkpoints: AtomicU64::new(0),
            writer_busy_micros: AtomicU64::new(0),
            sync_idle_micros: AtomicU64::new(0),
            writer_read_ahead_micros: AtomicU64::new(0),
            writer_apply_micros: AtomicU64::new(0),
            by_type: Mutex::new(ByType::default()),
        });
        let engine = start_engine(&config, &shared)?;
        shared.by_type.lock().expect("by-type lock").opened_at = shared.committed.load(Ordering::Acquire);
        let inner = Arc::new(Inner {
            config: config.clone(),
            shared,
            engine: RwLock::new(Some(engine)),
            lifecycle: Mutex::new(()),
        });
        let weak = Arc::downgrade(&inner);
        std::thread::Builder::new().name("crm-eventlog-recovery".into()).spawn(move || supervise(weak))?;
        tracing::info!(path = %config.path.display(), head = inner.committed.load(Ordering::Acquire), "event log opened");
        Ok(SledEventStore { inner })
    }

    /// Why the log refuses writes right now (a failed durability barrier it has not yet
    /// recovered from), if it does.
    pub fn failure(&self) -> Option<String> {
        self.inner.failed.lock().expect("failed lock").clone()
    }

    /// The data directory.
    pub fn path(&self) -> &Path {
        &self.inner.config.path
    }

    /// A receiver of the committed head, updated after every durability barrier.
    pub fn watch_head(&self) -> watch::Receiver<u64> {
        self.inner.head_tx.subscribe()
    }

    /// At least the position of the last committed event whose type is one of `types`, and at
    /// most the committed head. It is the last such event the writers applied since open (a
    /// later one applied but not yet committed, or one of a failed engine whose position was
    /// reused, makes it larger, capped at the head), or the head at open when that is larger.
    /// A reader that must have seen every committed event of those types (the duplicate
    /// guard: the customer events its read model reads) waits for this position instead of
    /// the head, so appends of other types (lead captures) do not hold it up.
    pub fn last_position_of_types(&self, types: &[&str]) -> u64 {
        // The head first: every event it covers was recorded in `by_type` before it was
        // committed (the writer records a group before handing it to the barrier).
        let head = self.committed_head();
        let by_type = self.inner.by_type.lock().expect("by-type lock");
        let last = types.iter().filter_map(|t| by_type.last.get(*t)).copied().max().unwrap_or(0);
        last.max(by_type.opened_at).min(head)
    }

    /// Reads the whole stream index once, on [`WARM_THREADS`] threads over disjoint key
    /// ranges, so that its pages are in memory (sled's page cache, and the OS page cache
    /// under it) when appends look up stream versions. A stream's first append looks up a
    /// random leaf of the index (stream names carry random ids), and after a start with cold
    /// caches each of those was a disk read, which held the writer back (docs/PERFORMANCE.md,
    /// eleventh session). The server calls this in the background after it starts.
    /// `progress` is called with the entries read so far each time they pass a multiple of
    /// 2^20. Setting `stop` ends it early (within 4,096 entries of each thread), with what it
    /// read; so does the store closing. Each range holds the database only while it is read,
    /// so a store that closes or recovers meanwhile is not kept from its files for long.
    pub fn warm_stream_index(&self, progress: &(dyn Fn(u64) + Sync), stop: &AtomicBool) -> Result<Warmed> {
        const STEP: u64 = 4096;
        let mut ranges = Vec::new();
        let db = self.inner.db()?;
        split_key_range(&db, vec![keys::STREAM], vec![keys::STREAM + 1], WARM_SPLIT_DEPTH, stop, &mut ranges)?;
        drop(db);
        let (next, failed) = (AtomicU64::new(0), AtomicBool::new(false));
        let (entries, bytes) = (AtomicU64::new(0), AtomicU64::new(0));
        let halted = || stop.load(Ordering::Relaxed) || failed.load(Ordering::Relaxed);
        let read = |low: &[u8], high: &[u8]| -> Result<()> {
            let db = self.inner.db()?;
            let (mut n, mut size) = (0u64, 0u64);
            for item in db.range(low..high) {
                if n % STEP == 0 && halted() {
                    break;
                }
                let (k, v) = item?;
                n += 1;
                size += (k.len() + v.len()) as u64;
                if n % STEP == 0 {
                    let total = entries.fetch_add(STEP, Ordering::Relaxed) + STEP;
                    if total % (1 << 20) < STEP {
                        progress(total);
                    }
                }
            }
            entries.fetch_add(n % STEP, Ordering::Relaxed);
            bytes.fetch_add(size, Ordering::Relaxed);
            Ok(())
        };
        std::thread::scope(|scope| {
            let readers: Vec<_> = (0..WARM_THREADS)
                .map(|_| {
                    scope.spawn(|| -> Result<()> {
                        while !halted() {
                            let Some((low, high)) = ranges.get(next.fetch_add(1, Ordering::Relaxed) as usize) else {
                                break;
                            };
                            if let Err(e) = read(low, high) {
                                failed.store(true, Ordering::Relaxed);
                                return Err(e);
                            }
                        }
                        Ok(())
                    })
                })
                .collect();
            readers.into_iter().try_for_each(|r| r.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)))
        })?;
        Ok(Warmed { entries: entries.into_inner(), bytes: bytes.into_inner() })
    }

    /// Group-commit counters since open.
    pub fn stats(&self) -> Stats {
        Stats {
            groups: self.inner.groups.load(Ordering::Relaxed),
            barriers: self.inner.barriers.load(Ordering::Relaxed),
            fdatasyncs: self.inner.fdatasyncs.load(Ordering::Relaxed),
            write_micros: self.inner.write_micros.load(Ordering::Relaxed),
            fdatasync_micros: self.inner.fdatasync_micros.load(Ordering::Relaxed),
            checkpoints: self.inner.checkpoints.load(Ordering::Relaxed),
            writer_busy_micros: self.inner.writer_busy_micros.load(Ordering::Relaxed),
            sync_idle_micros: self.inner.sync_idle_micros.load(Ordering::Relaxed),
            writer_read_ahead_micros: self.inner.writer_read_ahead_micros.load(Ordering::Relaxed),
            writer_apply_micros: self.inner.writer_apply_micros.load(Ordering::Relaxed),
        }
    }

    /// Stops accepting appends, waits until every accepted append is acknowledged, flushes
    /// and ends live subscriptions. Idempotent.
    pub fn close(&self) {
        self.inner.close();
    }

    /// Re-reads the committed log from position 1, checking every record's checksum and
    /// that every chain hash follows from its predecessor. Reports the first broken position.
    pub fn verify_log(&self, mut progress: impl FnMut(u64, u64)) -> Result<LogVerification> {
        let head = self.committed_head();
        let tree = &self.inner.db()?;
        let mut previous = GENESIS;
        let mut verified = 0;
        let broken = |verified: u64, position: u64, detail: String| {
            Ok(LogVerification { verified, head, first_broken: Some((position, detail)) })
        };
        for item in tree.range(keys::log_key(1)..=keys::log_key(head)) {
            let (k, v) = item?;
            let first = keys::log_key_position(&k).ok_or_else(|| Error::Storage("malformed log key".into()))?;
            if first != verified + 1 {
                return broken(verified, verified + 1, format!("record missing: next stored record starts at {first}"));
            }
            for frame in Frames::new(&v, first) {
                let frame = match frame {
                    Ok(f) => f,
                    Err(Error::Corruption { position, detail }) => return broken(verified, position, detail),
                    Err(e) => return Err(e),
                };
                if frame.position > head {
                    break;
                }
                if !frame.chains_from(&previous) {
                    return broken(
                        verified,
                        frame.position,
                        "chain hash does not follow from the previous event: the record was rewritten".into(),
                    );
                }
                previous = frame.chain;
                verified = frame.position;
            }
            if verified % 65_536 < 1024 {
                progress(verified, head);
            }
        }
        if verified != head {
            return broken(verified, verified + 1, format!("log ends at {verified}, head is {head}"));
        }
        progress(verified, head);
        Ok(LogVerification { verified, head, first_broken: None })
    }

    /// Synchronous version of [`EventStore::read_all`].
    pub fn read_all_blocking(&self, from: u64, limit: usize) -> Result<Vec<RecordedEvent>> {
        self.inner.read_all(from, limit)
    }

    /// Synchronous version of [`EventStore::read_stream`].
    pub fn read_stream_blocking(
        &self,
        stream: &str,
        from: Option<u64>,
        direction: Direction,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>> {
        self.inner.read_stream(stream, from, direction, limit)
    }

    /// The positions of `stream`'s events after `after_position`, ascending, at most
    /// `limit`, read from the stream index alone (no event is read or decoded): what an
    /// operation log filtered by stream needs, without keeping a second index of it.
    pub fn stream_positions_blocking(&self, stream: &str, after_position: u64, limit: usize) -> Result<Vec<u64>> {
        self.inner.stream_positions(stream, after_position, limit)
    }

    /// The committed head, without a round trip through the async runtime.
    pub fn committed_head(&self) -> u64 {
        self.inner.committed.load(Ordering::Acquire)
    }

    /// [`EventStore::append_many`] with a given `recorded_at` (microseconds since the Unix
    /// epoch) instead of the current time: for copying a log (backup, restore), so that the
    /// copy keeps the original times and therefore the same chain hashes.
    pub async fn append_many_recorded_at(
        &self,
        appends: Vec<StreamAppend>,
        durability: Durability,
        now: i64,
    ) -> Result<Vec<AppendResult>> {
        validate(&appends)?;
        if let Some(reason) = self.inner.failed.lock().expect("failed lock").clone() {
            return Err(Error::Unavailable(reason));
        }
        let appends = appends
            .into_iter()
            .map(|a| PreparedAppend {
                events: a.events.into_iter().map(|e| EncodedEvent::encode(&a.stream, e, now)).collect(),
                stream: a.stream,
                expected: a.expected,
            })
            .collect();
        let (reply, rx) = oneshot::channel();
        {
            let guard = self.inner.engine.read().expect("engine lock");
            let engine = guard.as_ref().ok_or_else(|| Error::Unavailable("event store is closed".into()))?;
            engine
                .requests
                .send(Request { appends, durability, reply })
                .map_err(|_| Error::Unavailable("event store writer stopped".into()))?;
        }
        rx.await.map_err(|_| Error::Unavailable("event store writer stopped before acknowledging".into()))?
    }

    async fn blocking<T: Send + 'static>(&self, f: impl FnOnce(&Inner) -> Result<T> + Send + 'static) -> Result<T> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || f(&inner))
            .await
            .map_err(|e| Error::Storage(format!("read task failed: {e}")))?
    }
}

#[async_trait]
impl EventStore for SledEventStore {
    async fn append_many(&self, appends: Vec<StreamAppend>, durability: Durability) -> Result<Vec<AppendResult>> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as i64);
        self.append_many_recorded_at(appends, durability, now).await
    }

    async fn read_stream(
        &self,
        stream: &str,
        from: Option<u64>,
        direction: Direction,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>> {
        let stream = stream.to_owned();
        self.blocking(move |inner| inner.read_stream(&stream, from, direction, limit)).await
    }

    async fn read_all(&self, from: u64, limit: usize) -> Result<Vec<RecordedEvent>> {
        self.blocking(move |inner| inner.read_all(from, limit)).await
    }

    async fn head(&self) -> Result<u64> {
        Ok(self.committed_head())
    }

    async fn last_position_of_types(&self, types: &[&str]) -> Result<u64> {
        Ok(SledEventStore::last_position_of_types(self, types))
    }

    async fn stream_version(&self, stream: &str) -> Result<Option<u64>> {
        let stream = stream.to_owned();
        self.blocking(move |inner| inner.stream_version(&stream)).await
    }

    fn subscribe_all(&self, from: u64) -> BoxStream<'static, Result<RecordedEvent>> {
        struct State {
            inner: Arc<Inner>,
            rx: watch::Receiver<u64>,
            next: u64,
            buf: VecDeque<RecordedEvent>,
            done: bool,
        }
        let state = State {
            rx: self.inner.head_tx.subscribe(),
            inner: self.inner.clone(),
            next: from.max(1),
            buf: VecDeque::new(),
            done: false,
        };
        futures::stream::unfold(state, |mut st| async move {
            loop {
                if st.done {
                    return None;
                }
                if let Some(e) = st.buf.pop_front() {
                    return Some((Ok(e), st));
                }
                if st.inner.closed.load(Ordering::Acquire) {
                    st.done = true;
                    return Some((Err(Error::Unavailable("event store closed".into())), st));
                }
                let committed = *st.rx.borrow_and_update();
                if st.next <= committed {
                    let inner = st.inner.clone();
                    let next = st.next;
                    let read = tokio::task::spawn_blocking(move || inner.read_all(next, 1024)).await;
                    match read {
                        Ok(Ok(events)) => {
                            if let Some(last) = events.last() {
                                st.next = last.position + 1;
                            }
                            st.buf.extend(events);
                        }
                        Ok(Err(e)) => {
                            st.done = true;
                            return Some((Err(e), st));
                        }
                        Err(e) => {
                            st.done = true;
                            return Some((Err(Error::Storage(format!("read task failed: {e}"))), st));
                        }
                    }
                    continue;
                }
                if st.rx.changed().await.is_err() {
                    return None;
                }
            }
        })
        .boxed()
    }
}

fn validate(appends: &[StreamAppend]) -> Result<()> {
    let invalid = |field: String, rule: &str| Error::InvalidArgument { field, rule: rule.to_owned() };
    if appends.is_empty() {
        return Err(invalid("appends".into(), "must name at least one stream"));
    }
    let total: usize = appends.iter().map(|a| a.events.len()).sum();
    if total > MAX_EVENTS_PER_APPEND {
        return Err(Error::TooLarge { field: "events".into(), limit: MAX_EVENTS_PER_APPEND, actual: total });
    }
    let mut streams = std::collections::HashSet::new();
    let mut ids = std::collections::HashSet::new();
    for a in appends {
        if a.stream.is_empty() {
            return Err(invalid("stream".into(), "must not be empty"));
        }
        if a.stream.len() > MAX_STREAM_ID_LEN {
            return Err(invalid(
                "stream".into(),
                &format!("must be at most {MAX_STREAM_ID_LEN} bytes, got {}", a.stream.len()),
            ));
        }
        if a.stream.chars().any(char::is_control) {
            return Err(invalid("stream".into(), "must not contain control characters"));
        }
        if !streams.insert(a.stream.as_str()) {
            return Err(invalid("stream".into(), &format!("`{}` appears twice in one append", a.stream)));
        }
        if a.events.is_empty() {
            return Err(invalid("events".into(), "must contain at least one event"));
        }
        for (i, e) in a.events.iter().enumerate() {
            if e.payload.len() > MAX_PAYLOAD_LEN {
                return Err(Error::TooLarge {
                    field: format!("events[{i}].payload"),
                    limit: MAX_PAYLOAD_LEN,
                    actual: e.payload.len(),
                });
            }
            if e.event_type.is_empty() || e.event_type.len() > MAX_NAME_LEN {
                return Err(invalid(format!("events[{i}].event_type"), &format!("must be 1 to {MAX_NAME_LEN} bytes")));
            }
            for (name, value) in [("actor", &e.metadata.actor), ("source", &e.metadata.source)] {
                if value.len() > MAX_NAME_LEN {
                    return Err(invalid(
                        format!("events[{i}].metadata.{name}"),
                        &format!("must be at most {MAX_NAME_LEN} bytes"),
                    ));
                }
            }
            if e.id.is_nil() {
                return Err(invalid(format!("events[{i}].id"), "must not be the nil uuid"));
            }
            if !ids.insert(e.id) {
                return Err(invalid(format!("events[{i}].id"), &format!("{} appears twice in one append", e.id)));
            }
        }
    }
    Ok(())
}

/// Opens sled, waiting briefly for a previous handle in this process to release its file lock
/// (sled's I/O threads may hold the data file for a moment after the last `Db` is dropped).
fn open_sled(config: &Config) -> Result<sled::Db> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let opened = sled::Config::new()
            .path(&config.path)
            .segment_size(SEGMENT_SIZE)
            .cache_capacity(config.cache_capacity)
            // The checkpoint thread flushes; sled's own 500 ms timer would only add disk
            // writes that compete with the write-ahead file's barriers.
            .flush_every_ms(None)
            .open();
        match opened {
            Err(sled::Error::Io(e)) if is_lock_error(&e) && std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(sled::Error::Io(e)) if is_lock_error(&e) => {
                return Err(Error::Unavailable(format!(
                    "data directory {} is locked by another process (is a server already running?): {e}",
                    config.path.display()
                )))
            }
            other => return Ok(other?),
        }
    }
}

fn is_lock_error(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::WouldBlock || e.to_string().contains("could not acquire lock")
}

/// The position and chain hash of the last event in the log (committed or not; after a
/// restart everything sled recovered counts as committed).
fn recover_head(tree: &sled::Db) -> Result<(u64, [u8; HASH_LEN])> {
    let Some(last) = tree.range(keys::log_key(0)..=keys::log_key(u64::MAX)).next_back() else {
        return Ok((0, GENESIS));
    };
    let (k, v) = last?;
    let first = keys::log_key_position(&k).ok_or_else(|| Error::Storage("malformed log key".into()))?;
    let (mut head, mut chain) = (first - 1, GENESIS);
    for frame in Frames::new(&v, first) {
        let frame = frame?;
        (head, chain) = (frame.position, frame.chain);
    }
    Ok((head, chain))
}

/// The outcome of [`SledEventStore::verify_log`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogVerification {
    /// Events whose checksum and chain hash were verified.
    pub verified: u64,
    /// The committed head when the verification ran.
    pub head: u64,
    /// The first position whose record is damaged or whose chain hash does not follow from
    /// its predecessor, with what is wrong; `None` when the whole log verifies.
    pub first_broken: Option<(u64, String)>,
}

impl Inner {
    /// A handle on the current sled instance, for reads.
    fn db(&self) -> Result<sled::Db> {
        if let Some(e) = self.engine.read().expect("engine lock").as_ref() {
            return Ok(e.db.clone());
        }
        Err(Error::Unavailable(
            self.failed.lock().expect("failed lock").clone().unwrap_or_else(|| "event store is closed".into()),
        ))
    }

    fn close(&self) {
        let _lifecycle = self.lifecycle.lock().expect("lifecycle lock");
        let engine = self.engine.write().expect("engine lock").take();
        if let Some(engine) = engine {
            stop_engine(engine, &self.config.path);
        }
        if !self.closed.swap(true, Ordering::AcqRel) {
            self.head_tx.send_modify(|_| {});
            tracing::info!(head = self.committed.load(Ordering::Acquire), "event log closed");
        }
    }

    /// After a failed barrier: when the disk accepts a synced write again, stop the failed
    /// engine, reopen sled (which recovers exactly what reached the disk) and start again.
    fn try_recover(&self) -> bool {
        let _lifecycle = self.lifecycle.lock().expect("lifecycle lock");
        if self.closed.load(Ordering::Acquire) || self.failed.lock().expect("failed lock").is_none() {
            return false;
        }
        if let Err(e) = probe_disk(&self.config.path) {
            tracing::debug!(error = %e, "event log still cannot write");
            return false;
        }
        let Some(old) = self.engine.write().expect("engine lock").take() else {
            return false;
        };
        stop_engine(old, &self.config.path);
        match start_engine(&self.config, &self.shared) {
            Ok(engine) => {
                *self.engine.write().expect("engine lock") = Some(engine);
                *self.failed.lock().expect("failed lock") = None;
                tracing::warn!(
                    head = self.committed.load(Ordering::Acquire),
                    "event log recovered; accepting writes again"
                );
                true
            }
            Err(e) => {
                tracing::error!(error = %e, "reopening the event log failed; retrying");
                *self.failed.lock().expect("failed lock") = Some(format!("reopening the event log failed: {e}"));
                false
            }
        }
    }

    fn read_all(&self, from: u64, limit: usize) -> Result<Vec<RecordedEvent>> {
        let upper = self.committed.load(Ordering::Acquire);
        let from = from.max(1);
        let mut out = Vec::new();
        if from > upper || limit == 0 {
            return Ok(out);
        }
        out.reserve(limit.min((upper - from + 1) as usize).min(4096));
        let tree = self.db()?;
        let start = match tree.range(keys::log_key(0)..=keys::log_key(from)).next_back() {
            Some(item) => item?.0,
            None => keys::log_key(from).as_slice().into(),
        };
        for item in tree.range(start..=keys::log_key(upper).as_slice().into()) {
            let (k, v) = item?;
            let first = keys::log_key_position(&k).ok_or_else(|| Error::Storage("malformed log key".into()))?;
            for frame in Frames::new(&v, first) {
                let frame = frame?;
                if frame.position < from {
                    continue;
                }
                if frame.position > upper {
                    return Ok(out);
                }
                out.push(frame.decode()?);
                if out.len() >= limit {
                    return Ok(out);
                }
            }
        }
        Ok(out)
    }

    fn read_stream(
        &self,
        stream: &str,
        from: Option<u64>,
        direction: Direction,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>> {
        let upper = self.committed.load(Ordering::Acquire);
        let mut out = Vec::new();
        if limit == 0 {
            return Ok(out);
        }
        let tree = self.db()?;
        let read_entry = |entry: &StreamEntry, out: &mut Vec<RecordedEvent>| {
            read_positions(&tree, entry.first_position, entry.last_position(), out)
        };
        let prefix = keys::stream_prefix(stream);
        match direction {
            Direction::Forwards => {
                let from = from.unwrap_or(0);
                // The entry holding `from`: the last one starting at or before it. A read
                // from the start (every command's load) begins at the first entry, which
                // starts at version 0, without the reverse scan.
                let start = if from == 0 {
                    keys::stream_key(stream, 0)
                } else {
                    match tree.range(prefix.clone()..=keys::stream_key(stream, from)).next_back() {
                        Some(item) => item?.0.to_vec(),
                        None => keys::stream_key(stream, from),
                    }
                };
                for item in tree.range(start..=keys::stream_key(stream, u64::MAX)) {
                    let (k, v) = item?;
                    let entry = parse_entry(&k, &v)?;
                    if entry.first_position > upper || out.len() >= limit {
                        break;
                    }
                    let mut events = Vec::with_capacity(entry.count as usize);
                    read_entry(&entry, &mut events)?;
                    for e in events.into_iter().filter(|e| e.version >= from) {
                        if out.len() >= limit {
                            return Ok(out);
                        }
                        out.push(e);
                    }
                }
            }
            Direction::Backwards => {
                let from = from.unwrap_or(u64::MAX);
                for item in tree.range(prefix..=keys::stream_key(stream, from)).rev() {
                    let (k, v) = item?;
                    let entry = parse_entry(&k, &v)?;
                    if out.len() >= limit {
                        break;
                    }
                    if entry.first_position > upper {
                        continue;
                    }
                    let mut events = Vec::with_capacity(entry.count as usize);
                    read_entry(&entry, &mut events)?;
                    for e in events.into_iter().rev().filter(|e| e.version <= from) {
                        if out.len() >= limit {
                            return Ok(out);
                        }
                        out.push(e);
                    }
                }
            }
        }
        Ok(out)
    }

    fn stream_positions(&self, stream: &str, after_position: u64, limit: usize) -> Result<Vec<u64>> {
        let upper = self.committed.load(Ordering::Acquire);
        let mut out = Vec::new();
        for item in self.db()?.scan_prefix(keys::stream_prefix(stream)) {
            let (k, v) = item?;
            let entry = parse_entry(&k, &v)?;
            if entry.first_position > upper || out.len() >= limit {
                break;
            }
            let first = entry.first_position.max(after_position.saturating_add(1));
            let last = entry.last_position().min(upper);
            for position in first..=last {
                if out.len() >= limit {
                    break;
                }
                out.push(position);
            }
        }
        Ok(out)
    }

    fn stream_version(&self, stream: &str) -> Result<Option<u64>> {
        let upper = self.committed.load(Ordering::Acquire);
        for item in self.db()?.scan_prefix(keys::stream_prefix(stream)).rev() {
            let (k, v) = item?;
            let entry = parse_entry(&k, &v)?;
            if entry.last_position() <= upper {
                return Ok(Some(entry.last_version()));
            }
        }
        Ok(None)
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.close();
    }
}

/// Opens sled in `config.path`, recovers head and chain, publishes the head and starts the
/// writer and sync threads.
fn start_engine(config: &Config, shared: &Arc<Shared>) -> Result<Engine> {
    std::fs::create_dir_all(&config.path)?;
    let db = open_sled(config)?;
    let mut files = SledFiles::open(&config.path)?;
    // Groups acknowledged from the write-ahead file that sled had not made durable: applied
    // again, whole and in order. Then sled's files are synced (what sled recovered may have
    // come from the page cache only), so the old segments can go.
    let wal_dir = config.path.join(wal::DIR);
    let replayed = wal::replay(&wal_dir, recover_head(&db)?.0, |group| {
        let mut batch = sled::Batch::default();
        for (k, v) in group.writes {
            batch.insert(k, v);
        }
        Ok(db.apply_batch(batch)?)
    })?;
    db.flush()?;
    files.sync()?;
    let (head, chain) = recover_head(&db)?;
    if replayed > 0 {
        tracing::info!(groups = replayed, head, "event log: applied groups from the write-ahead file");
    }
    let keep_wal = shared.keep_wal.load(Ordering::Acquire);
    let wal = Wal::create(&wal_dir, head + 1, keep_wal)?;
    let progress = Arc::new(Progress { applied: AtomicU64::new(head), checkpointed: AtomicU64::new(head) });
    shared.committed.fetch_max(head, Ordering::AcqRel);
    shared.head_tx.send_if_modified(|h| {
        let changed = *h < head;
        *h = (*h).max(head);
        changed
    });
    let (req_tx, req_rx) = mpsc::channel::<Request>();
    let (sync_tx, sync_rx) = mpsc::channel::<SyncJob>();
    let writer = Writer {
        shared: shared.clone(),
        progress: progress.clone(),
        tree: db.clone(),
        head,
        chain,
        versions: HashMap::new(),
        new_streams: std::collections::HashSet::new(),
        ids: IdIndex::open(&db)?,
        max_group_events: config.max_group_events.max(1),
    };
    let mut threads = vec![std::thread::Builder::new()
        .name("crm-eventlog-writer".into())
        .spawn(move || writer.run(req_rx, sync_tx))?];
    {
        let (shared, progress) = (shared.clone(), progress.clone());
        threads.push(
            std::thread::Builder::new()
                .name("crm-eventlog-sync".into())
                .spawn(move || sync_loop(wal, shared, progress, sync_rx))?,
        );
    }
    let (stop_checkpoints, stop_rx) = mpsc::channel();
    let checkpointer = {
        let (db, shared) = (db.clone(), shared.clone());
        std::thread::Builder::new()
            .name("crm-eventlog-checkpoint".into())
            .spawn(move || checkpoint_loop(db, files, shared, progress, stop_rx))?
    };
    Ok(Engine { db, requests: req_tx, stop_checkpoints, threads, checkpointer })
}

/// Stops accepting requests, lets the writer and sync threads finish (every accepted append
/// is answered and the write-ahead file synced), then lets the checkpoint thread make sled
/// durable one last time. Returns once sled has let go of the directory, so that another
/// process (or a tool) can open it right away.
fn stop_engine(engine: Engine, dir: &Path) {
    let Engine { db, requests, stop_checkpoints, threads, checkpointer } = engine;
    drop(requests);
    for t in threads {
        let _ = t.join();
    }
    drop(stop_checkpoints);
    let _ = checkpointer.join();
    // Also waits for sled's I/O threads' writes.
    if let Err(e) = db.flush() {
        tracing::error!(error = %e, "final flush failed");
    }
    drop(db);
    wait_for_sled_lock(dir);
}

/// Waits (up to 5 s) until nothing holds sled's lock on `dir`: sled's I/O threads keep the
/// instance, and so its lock on the data file, for a moment after the last handle is dropped.
fn wait_for_sled_lock(dir: &Path) {
    use rustix::fs::{flock, FlockOperation};
    let Ok(file) = File::open(dir.join("db")) else { return };
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while flock(&file, FlockOperation::NonBlockingLockExclusive).is_err() {
        if std::time::Instant::now() >= deadline {
            tracing::warn!(dir = %dir.display(), "sled still holds the data directory 5 s after the log stopped");
            return;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let _ = flock(&file, FlockOperation::Unlock);
}

/// The files of one sled instance that a checkpoint makes durable: the data file `db`, the
/// blob files sled writes for messages over a quarter segment (a whole leaf page of large
/// frames can be one), `conf`, and the directories holding them. sled itself only ever
/// `sync_file_range`s the data file and never syncs a blob.
struct SledFiles {
    dir: PathBuf,
    data: File,
    /// Blob files already synced (sled never rewrites a blob; it writes a new one).
    synced_blobs: std::collections::HashSet<std::ffi::OsString>,
}

impl SledFiles {
    fn open(dir: &Path) -> Result<Self> {
        File::open(dir.join("conf"))?.sync_all()?;
        Ok(SledFiles { dir: dir.to_owned(), data: File::open(dir.join("db"))?, synced_blobs: Default::default() })
    }

    /// `fdatasync` of the data file, `fsync` of every blob not synced before and of the
    /// directories. Call after a sled `flush`.
    fn sync(&mut self) -> Result<()> {
        self.data.sync_data()?;
        let blobs = self.dir.join("blobs");
        let entries = match std::fs::read_dir(&blobs) {
            Ok(entries) => Some(entries),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(e.into()),
        };
        let mut present = std::collections::HashSet::new();
        let mut new = false;
        for entry in entries.into_iter().flatten() {
            let entry = entry?;
            let name = entry.file_name();
            if !self.synced_blobs.contains(&name) {
                match File::open(entry.path()) {
                    Ok(f) => f.sync_all()?,
                    // sled deletes blobs it no longer needs.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(e.into()),
                }
                new = true;
            }
            present.insert(name);
        }
        if new {
            File::open(&blobs)?.sync_all()?;
        }
        self.synced_blobs = present;
        File::open(&self.dir)?.sync_all()?;
        Ok(())
    }
}

/// Whether the data directory takes a synced 1 MiB write.
fn probe_disk(dir: &Path) -> std::io::Result<()> {
    use std::io::Write;
    let path = dir.join("recovery-probe.tmp");
    let result = (|| {
        let mut f = File::create(&path)?;
        f.write_all(&vec![0u8; 1024 * 1024])?;
        f.sync_all()
    })();
    let _ = std::fs::remove_file(&path);
    result
}

/// Watches for a failed barrier and tries to recover every half second until it does, or
/// until the store is closed or dropped.
fn supervise(inner: std::sync::Weak<Inner>) {
    loop {
        std::thread::sleep(std::time::Duration::from_millis(500));
        let Some(inner) = inner.upgrade() else { return };
        if inner.closed.load(Ordering::Acquire) {
            return;
        }
        if inner.failed.lock().expect("failed lock").is_some() {
            inner.try_recover();
        }
    }
}

fn parse_entry(k: &[u8], v: &[u8]) -> Result<StreamEntry> {
    StreamEntry::parse(k, v).ok_or_else(|| Error::Storage("malformed stream index entry".into()))
}

/// Reads the events at positions `first..=last` (which may span chunks) into `out`.
fn read_positions(tree: &sled::Db, first: u64, last: u64, out: &mut Vec<RecordedEvent>) -> Result<()> {
    let start = match tree.range(keys::log_key(0)..=keys::log_key(first)).next_back() {
        Some(item) => item?.0,
        None => return Err(Error::Corruption { position: first, detail: "indexed event missing from the log".into() }),
    };
    for item in tree.range(start..=keys::log_key(last).as_slice().into()) {
        let (k, v) = item?;
        let chunk_first = keys::log_key_position(&k).ok_or_else(|| Error::Storage("malformed log key".into()))?;
        for frame in Frames::new(&v, chunk_first) {
            let frame = frame?;
            if frame.position < first {
                continue;
            }
            if frame.position > last {
                return Ok(());
            }
            out.push(frame.decode()?);
        }
    }
    Ok(())
}

/// What the writer knows about an event id it has seen.
#[derive(Clone)]
struct KnownId {
    position: u64,
    stream: String,
    version: u64,
}

struct Writer {
    shared: Arc<Shared>,
    progress: Arc<Progress>,
    tree: sled::Db,
    /// Position of the last event applied to sled (may be ahead of the committed head).
    head: u64,
    /// Chain hash of the event at `head`.
    chain: [u8; HASH_LEN],
    /// Last version of streams the writer has touched or looked up.
    versions: HashMap<String, u64>,
    /// Streams of the group being processed that the read-ahead found to hold no event
    /// (a capture's new stream, say), so planning does not read them again.
    new_streams: std::collections::HashSet<String>,
    ids: IdIndex,
    max_group_events: usize,
}

enum Plan {
    Duplicate(Vec<AppendResult>),
    New(Vec<Option<u64>>),
}

impl Writer {
    fn run(mut self, rx: mpsc::Receiver<Request>, sync_tx: mpsc::Sender<SyncJob>) {
        let size = |r: &Request| {
            let events = r.appends.iter().map(|a| a.events.len()).sum::<usize>();
            let bytes = r.appends.iter().flat_map(|a| &a.events).map(EncodedEvent::frame_len).sum::<usize>();
            (events, bytes)
        };
        while let Ok(first) = rx.recv() {
            let (mut events, mut bytes) = size(&first);
            let mut group = vec![first];
            while events < self.max_group_events && bytes < MAX_GROUP_BYTES {
                match rx.try_recv() {
                    Ok(r) => {
                        let (e, b) = size(&r);
                        events += e;
                        bytes += b;
                        group.push(r);
                    }
                    Err(_) => break,
                }
            }
            let busy = std::time::Instant::now();
            let job = self.process(group);
            self.shared.writer_busy_micros.fetch_add(busy.elapsed().as_micros() as u64, Ordering::Relaxed);
            if sync_tx.send(job).is_err() {
                break;
            }
        }
    }

    fn failed(&self) -> Option<String> {
        self.shared.failed.lock().expect("failed lock").clone()
    }

    /// A job that writes nothing and refuses every request with `reason`.
    fn refuse(&self, replies: impl IntoIterator<Item = Reply>, reason: &str) -> SyncJob {
        let replies = replies.into_iter().map(|r| (r, Err(Error::Unavailable(reason.to_owned())))).collect();
        SyncJob { head: self.head, wrote: false, durable: false, record: Vec::new(), replies }
    }

    fn process(&mut self, group: Vec<Request>) -> SyncJob {
        if let Some(reason) = self.failed() {
            return self.refuse(group.into_iter().map(|r| r.reply), &reason);
        }
        let started = std::time::Instant::now();
        self.read_versions_ahead(&group);
        self.shared.writer_read_ahead_micros.fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
        let mut writes: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        let mut next = self.head + 1;
        let mut chain = self.chain;
        let mut chunk: Vec<u8> = Vec::new();
        let mut chunk_start = next;
        let mut overlay: HashMap<String, u64> = HashMap::new();
        let mut pending: HashMap<Uuid, KnownId> = HashMap::new();
        let mut new_ids: Vec<(Uuid, u64)> = Vec::new();
        let mut replies = Vec::with_capacity(group.len());
        let mut durable = false;
        let mut wrote = false;
        let mut types: HashMap<String, u64> = HashMap::new();

        for req in group {
            let plan = self.plan(&req, &overlay, &pending);
            let outcome = match plan {
                Err(e) => Err(e),
                Ok(Plan::Duplicate(results)) => Ok(results),
                Ok(Plan::New(currents)) => {
                    let mut results = Vec::with_capacity(req.appends.len());
                    for (append, current) in req.appends.iter().zip(currents) {
                        let first_version = current.map_or(0, |v| v + 1);
                        let first_position = next;
                        for (i, event) in append.events.iter().enumerate() {
                            if !chunk.is_empty() && chunk.len() + event.frame_len() > CHUNK_TARGET {
                                writes.push((keys::log_key(chunk_start).to_vec(), std::mem::take(&mut chunk)));
                                chunk_start = next;
                            }
                            let version = first_version + i as u64;
                            write_frame(&mut chunk, event, version, &mut chain);
                            new_ids.push((event.id, next));
                            pending
                                .insert(event.id, KnownId { position: next, stream: append.stream.clone(), version });
                            match types.get_mut(event.event_type.as_str()) {
                                Some(last) => *last = next,
                                None => {
                                    types.insert(event.event_type.clone(), next);
                                }
                            }
                            next += 1;
                        }
                        let count = append.events.len() as u32;
                        let entry = StreamEntry { first_version, first_position, count };
                        writes.push((keys::stream_key(&append.stream, first_version), entry.value().to_vec()));
                        overlay.insert(append.stream.clone(), entry.last_version());
                        results.push(AppendResult {
                            first_position,
                            last_position: entry.last_position(),
                            last_version: entry.last_version(),
                            deduplicated: false,
                        });
                    }
                    wrote = true;
                    Ok(results)
                }
            };
            durable |= outcome.is_ok() && req.durability == Durability::Durable;
            replies.push((req.reply, outcome));
        }
        if !chunk.is_empty() {
            writes.push((keys::log_key(chunk_start).to_vec(), chunk));
        }
        let mut record = Vec::new();
        if wrote {
            if let Err(e) = self.ids.record(&self.tree, &new_ids, &mut writes) {
                let reason = self.shared.fail("reading the event id index", &e);
                return self.refuse(replies.into_iter().map(|(r, _)| r), &reason);
            }
            wal::encode(self.head + 1, next - 1, &writes, &mut record);
            let mut batch = sled::Batch::default();
            for (k, v) in writes {
                batch.insert(k, v);
            }
            let applying = std::time::Instant::now();
            let applied = self.tree.apply_batch(batch);
            self.shared.writer_apply_micros.fetch_add(applying.elapsed().as_micros() as u64, Ordering::Relaxed);
            if let Err(e) = applied {
                // sled keeps failing once its I/O failed (a full disk, say): stop accepting
                // writes until the recovery thread has reopened the log. Nothing of the group
                // was written.
                let reason = self.shared.fail("writing to the event log", &e);
                return self.refuse(replies.into_iter().map(|(r, _)| r), &reason);
            }
            // Before the group reaches the barrier, so before its events are committed.
            self.shared.by_type.lock().expect("by-type lock").last.extend(types);
            self.head = next - 1;
            self.progress.applied.store(self.head, Ordering::Release);
            self.chain = chain;
            if self.versions.len() > 1_000_000 {
                self.versions.clear();
            }
            self.versions.extend(overlay);
            self.shared.groups.fetch_add(1, Ordering::Relaxed);
        }
        SyncJob { head: self.head, wrote, durable, record, replies }
    }

    fn plan(
        &mut self,
        req: &Request,
        overlay: &HashMap<String, u64>,
        pending: &HashMap<Uuid, KnownId>,
    ) -> Result<Plan> {
        // Idempotency: all ids known -> the original result; some known -> refused.
        let mut known: Vec<Option<KnownId>> = Vec::new();
        for append in &req.appends {
            for event in &append.events {
                let hit = match pending.get(&event.id) {
                    Some(k) => Some(k.clone()),
                    None => self.lookup_id(&event.id)?,
                };
                known.push(hit);
            }
        }
        if known.iter().any(Option::is_some) {
            return self.duplicate_result(req, known).map(Plan::Duplicate);
        }
        let mut currents = Vec::with_capacity(req.appends.len());
        for append in &req.appends {
            let current = match overlay.get(&append.stream) {
                Some(v) => Some(*v),
                None => self.current_version(&append.stream)?,
            };
            if !append.expected.accepts(current) {
                return Err(Error::WrongExpectedVersion {
                    stream: append.stream.clone(),
                    expected: append.expected,
                    current,
                });
            }
            currents.push(current);
        }
        Ok(Plan::New(currents))
    }

    fn duplicate_result(&self, req: &Request, known: Vec<Option<KnownId>>) -> Result<Vec<AppendResult>> {
        let mut known = known.into_iter();
        let mut results = Vec::with_capacity(req.appends.len());
        for append in &req.appends {
            let mut hits: Vec<KnownId> = Vec::with_capacity(append.events.len());
            for event in &append.events {
                match known.next().flatten() {
                    Some(k) if k.stream == append.stream => hits.push(k),
                    Some(k) => {
                        return Err(Error::IdempotencyConflict {
                            event_id: event.id,
                            detail: format!("it was appended to stream `{}`, not `{}`", k.stream, append.stream),
                        })
                    }
                    None => {
                        return Err(Error::IdempotencyConflict {
                            event_id: event.id,
                            detail: "the request mixes event ids appended before with new ones".into(),
                        })
                    }
                }
            }
            let consecutive =
                hits.windows(2).all(|w| w[1].position == w[0].position + 1 && w[1].version == w[0].version + 1);
            if !consecutive {
                return Err(Error::IdempotencyConflict {
                    event_id: append.events[0].id,
                    detail: "the event ids were appended before, but not together in this order".into(),
                });
            }
            let (first, last) = (&hits[0], &hits[hits.len() - 1]);
            results.push(AppendResult {
                first_position: first.position,
                last_position: last.position,
                last_version: last.version,
                deduplicated: true,
            });
        }
        Ok(results)
    }

    fn lookup_id(&mut self, id: &Uuid) -> Result<Option<KnownId>> {
        let Some(position) = self.ids.lookup(&self.tree, id)? else {
            return Ok(None);
        };
        let mut events = Vec::with_capacity(1);
        read_positions(&self.tree, position, position, &mut events)?;
        let event = events
            .pop()
            .ok_or_else(|| Error::Corruption { position, detail: "indexed event missing from the log".into() })?;
        Ok(Some(KnownId { position, stream: event.stream, version: event.version }))
    }

    fn current_version(&mut self, stream: &str) -> Result<Option<u64>> {
        if let Some(v) = self.versions.get(stream) {
            return Ok(Some(*v));
        }
        if self.new_streams.contains(stream) {
            return Ok(None);
        }
        let version = stored_version(&self.tree, stream)?;
        if let Some(version) = version {
            self.versions.insert(stream.to_owned(), version);
        }
        Ok(version)
    }

    /// Reads the stored versions of the group's streams that are not cached, on several
    /// threads at once, into the cache. On a log larger than memory each such read can wait
    /// for the disk, and the writer made them one after another while planning: with 12 M
    /// events (a 20 GB file) it was busy 95% of a lag run's time on 23% of a core, and the
    /// appends it serves fell short of 5,000 commands/s (docs/PERFORMANCE.md, ninth
    /// session). Only the writer writes, so what is read is what planning would read; a
    /// read that fails is left to planning, which reports it.
    fn read_versions_ahead(&mut self, group: &[Request]) {
        self.new_streams.clear();
        let mut streams: Vec<&str> = group
            .iter()
            .flat_map(|r| r.appends.iter().map(|a| a.stream.as_str()))
            .filter(|s| !self.versions.contains_key(*s))
            .collect();
        streams.sort_unstable();
        streams.dedup();
        if streams.len() < READ_AHEAD_FROM {
            return;
        }
        let tree = &self.tree;
        let per_thread = streams.len().div_ceil(READ_AHEAD_THREADS);
        // (stream, its stored version or `None` for a new stream); a failed read is left out.
        let found: Vec<(&str, Option<u64>)> = std::thread::scope(|scope| {
            let readers: Vec<_> = streams
                .chunks(per_thread)
                .map(|part| {
                    scope.spawn(move || {
                        part.iter().filter_map(|s| stored_version(tree, s).ok().map(|v| (*s, v))).collect::<Vec<_>>()
                    })
                })
                .collect();
            readers.into_iter().flat_map(|r| r.join().unwrap_or_default()).collect()
        });
        for (stream, version) in found {
            if let Some(version) = version {
                self.versions.insert(stream.to_owned(), version);
            } else {
                self.new_streams.insert(stream.to_owned());
            }
        }
    }
}

/// Fewer uncached streams than this in a group are read by the writer itself, while it plans.
const READ_AHEAD_FROM: usize = 8;

/// Most threads reading a group's stream versions ahead.
const READ_AHEAD_THREADS: usize = 8;

/// The last version stored for `stream`, `None` for a stream with no event. A stream's first
/// entry is at version 0 and entries are never removed, so a point read tells a new stream
/// (most appends of a capture) from an existing one; only an existing one needs the reverse
/// scan, which copies a leaf page in sled.
fn stored_version(tree: &sled::Tree, stream: &str) -> Result<Option<u64>> {
    if tree.get(keys::stream_key(stream, 0))?.is_none() {
        return Ok(None);
    }
    let Some(item) = tree.scan_prefix(keys::stream_prefix(stream)).next_back() else {
        return Ok(None);
    };
    let (k, v) = item?;
    Ok(Some(parse_entry(&k, &v)?.last_version()))
}

/// The durability thread. It takes every group waiting, writes their write-ahead records in
/// one write, runs one barrier (`fdatasync` of the write-ahead file) when any of their
/// requests is durable and anything written is not yet synced, publishes the new committed
/// head and acknowledges those groups. A durable request answered from the idempotency index
/// also waits for a barrier: the original may have been a buffered append not yet synced.
/// After a failed write or sync it writes nothing more (the file may end in a torn record):
/// every later group is refused until the store recovers with a new engine. When the writer
/// stops, whatever is written and not yet synced is synced.
fn sync_loop(mut wal: Wal, shared: Arc<Shared>, progress: Arc<Progress>, rx: mpsc::Receiver<SyncJob>) {
    let mut broken: Option<String> = None;
    let mut records = Vec::new();
    let mut unsynced = false;
    loop {
        let idle = std::time::Instant::now();
        let Ok(first) = rx.recv() else { break };
        shared.sync_idle_micros.fetch_add(idle.elapsed().as_micros() as u64, Ordering::Relaxed);
        let mut jobs = vec![first];
        while let Ok(j) = rx.try_recv() {
            jobs.push(j);
        }
        let wrote = jobs.iter().any(|j| j.wrote);
        let durable = jobs.iter().any(|j| j.durable);
        let head = jobs.iter().map(|j| j.head).max().unwrap_or(0);
        if broken.is_none() && (wrote || (durable && unsynced)) {
            records.clear();
            for j in &jobs {
                records.extend_from_slice(&j.record);
            }
            if !unsynced {
                wal::mark_synced_before(&mut records);
            }
            unsynced |= wrote;
            let barrier = durable && unsynced;
            match write_records(&mut wal, &records, barrier, &shared) {
                Ok(()) => unsynced &= !barrier,
                Err(e) => broken = Some(shared.fail("the durability barrier", &e)),
            }
        }
        if let Some(reason) = &broken {
            for job in jobs {
                for (reply, _) in job.replies {
                    let _ = reply.send(Err(Error::Unavailable(reason.clone())));
                }
            }
            continue;
        }
        shared.committed.fetch_max(head, Ordering::AcqRel);
        shared.head_tx.send_if_modified(|h| {
            let changed = *h < head;
            *h = (*h).max(head);
            changed
        });
        for job in jobs {
            for (reply, outcome) in job.replies {
                let _ = reply.send(outcome);
            }
        }
        // After the acknowledgements: a failure here concerns only later groups.
        if !wrote {
            continue;
        }
        // After a failed checkpoint `checkpointed` no longer moves, so nothing it did not
        // cover is deleted (see `Shared::keep_wal` for the segments of earlier engines).
        if let Err(e) = wal.rotate_if_full(head + 1) {
            broken = Some(shared.fail("starting a write-ahead segment", &e));
        } else if let Err(e) = wal.discard_through(progress.checkpointed.load(Ordering::Acquire)) {
            tracing::warn!(error = %e, "deleting a checkpointed write-ahead segment failed");
        }
    }
    if broken.is_none() && unsynced {
        if let Err(e) = wal.sync() {
            tracing::error!(error = %e, "syncing the write-ahead file at shutdown failed");
        }
    }
}

/// One barrier: the records of every waiting group, then `fdatasync` when asked.
fn write_records(wal: &mut Wal, records: &[u8], sync: bool, shared: &Shared) -> Result<()> {
    let t = std::time::Instant::now();
    if !records.is_empty() {
        wal.append(records)?;
    }
    let written = t.elapsed();
    shared.write_micros.fetch_add(written.as_micros() as u64, Ordering::Relaxed);
    if sync {
        wal.sync()?;
        shared.fdatasync_micros.fetch_add((t.elapsed() - written).as_micros() as u64, Ordering::Relaxed);
        shared.fdatasyncs.fetch_add(1, Ordering::Relaxed);
    }
    shared.barriers.fetch_add(1, Ordering::Relaxed);
    Ok(())
}

/// The checkpoint thread: about once a second, when the writer applied anything since the
/// last checkpoint, sled `flush` and a sync of sled's files ([`SledFiles`]); once more when
/// the engine stops. Every group applied before the flush started is then durable in sled,
/// and the sync thread deletes the write-ahead segments that hold only such groups.
///
/// A failed checkpoint stops the engine from accepting writes and keeps every write-ahead
/// segment for the rest of the process ([`Shared::keep_wal`]): after a failed `fdatasync`,
/// Linux may have dropped dirty pages that no later `fdatasync` writes again, so only the
/// write-ahead file still holds those groups for sure. The recovery thread then starts a new
/// engine, which applies the file to sled again.
fn checkpoint_loop(
    db: sled::Db,
    mut files: SledFiles,
    shared: Arc<Shared>,
    progress: Arc<Progress>,
    stop: mpsc::Receiver<()>,
) {
    loop {
        let last = !matches!(stop.recv_timeout(CHECKPOINT_INTERVAL), Err(mpsc::RecvTimeoutError::Timeout));
        let applied = progress.applied.load(Ordering::Acquire);
        if applied > progress.checkpointed.load(Ordering::Acquire) {
            match db.flush().map_err(Error::from).and_then(|_| files.sync()) {
                Ok(()) => {
                    progress.checkpointed.store(applied, Ordering::Release);
                    shared.checkpoints.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    shared.keep_wal.store(true, Ordering::Release);
                    shared.fail("the event log checkpoint (the write-ahead file keeps every group)", &e);
                    return;
                }
            }
        }
        if last {
            return;
        }
    }
}
