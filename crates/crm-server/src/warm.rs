//! Warming the caches after a start: the event log's stream index, the read models' files and
//! their trees are read once, so that appends and live read models do not wait for a
//! random disk read per stream or page they touch while the caches are cold
//! (docs/PERFORMANCE.md, eleventh and twelfth sessions).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use crm_eventlog::SledEventStore;
use crm_projection_runtime::ProjectionDb;

/// What [`warm_caches`] read, and how long it took.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct WarmReport {
    /// Entries of the log's stream index read.
    pub index_entries: u64,
    /// Their bytes (keys and values).
    pub index_bytes: u64,
    pub index_seconds: f64,
    /// Bytes of the read models' files read.
    pub read_model_bytes: u64,
    pub read_model_seconds: f64,
    /// Entries of the read models' serving trees walked into sled's cache.
    pub tree_entries: u64,
    /// Their bytes (keys and values).
    pub tree_bytes: u64,
    pub tree_seconds: f64,
}

/// The most of the read models' files [`warm_caches`] reads: the memory the kernel says is
/// available (`MemAvailable` in `/proc/meminfo`) less a quarter of all memory (`MemTotal`),
/// left for the process's own caches and allocations; more would only push out pages read
/// before. Without `/proc/meminfo`, 4 GiB.
pub fn read_model_budget() -> u64 {
    let info = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let field = |name: &str| {
        let line = info.lines().find(|l| l.starts_with(name))?;
        line.split_whitespace().nth(1)?.parse::<u64>().ok().map(|kib| kib * 1024)
    };
    match (field("MemAvailable:"), field("MemTotal:")) {
        (Some(available), Some(total)) => available.saturating_sub(total / 4),
        _ => 4 << 30,
    }
}

/// The read models warmed first: the ones interactive queries read at random (a customer
/// list's records, a funnel's buckets) and whose live steps read the most per event.
pub const WARM_FIRST: &[&str] = &["customers", "funnel"];

/// Reads the log's stream index (on [`crm_eventlog::WARM_THREADS`] threads) and, beside it,
/// the read models' files up to `read_model_budget` bytes, [`WARM_FIRST`] first, then the
/// others smallest first; then walks the read models' serving trees, in the same order, into
/// sled's own cache (`ProjectionDb::warm_trees`). Blocking: the server
/// runs it on a thread of its own as it starts serving, and sets `stop` when it shuts down;
/// progress goes to the log (`info`). Nothing waits for it, but it competes for the disk and
/// the CPU while it runs (about three minutes at 14 M events, docs/PERFORMANCE.md).
pub fn warm_caches(
    store: &SledEventStore,
    db: &ProjectionDb,
    read_model_budget: u64,
    stop: &AtomicBool,
) -> anyhow::Result<WarmReport> {
    let mut warmed = WarmReport::default();
    std::thread::scope(|scope| -> anyhow::Result<()> {
        let index = scope.spawn(|| {
            let started = Instant::now();
            let progress = |entries: u64| {
                tracing::info!(entries, "warming the stream index");
            };
            store.warm_stream_index(&progress, stop).map(|w| (w, started.elapsed().as_secs_f64()))
        });
        let started = Instant::now();
        let progress = |bytes: u64| tracing::info!(megabytes = bytes >> 20, "warming the read models' files");
        warmed.read_model_bytes = db.warm_files(WARM_FIRST, read_model_budget, &progress, stop)?;
        warmed.read_model_seconds = started.elapsed().as_secs_f64();
        let started = Instant::now();
        let progress = |entries: u64| tracing::info!(entries, "warming the read models' trees");
        (warmed.tree_entries, warmed.tree_bytes) = db.warm_trees(WARM_FIRST, &progress, stop);
        warmed.tree_seconds = started.elapsed().as_secs_f64();
        let (index, seconds) = index.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))?;
        (warmed.index_entries, warmed.index_bytes, warmed.index_seconds) = (index.entries, index.bytes, seconds);
        Ok(())
    })?;
    let what = if stop.load(Ordering::Relaxed) { "warming stopped early (shutdown)" } else { "caches warmed" };
    tracing::info!(
        index_entries = warmed.index_entries,
        index_megabytes = warmed.index_bytes >> 20,
        index_seconds = warmed.index_seconds,
        read_model_megabytes = warmed.read_model_bytes >> 20,
        read_model_seconds = warmed.read_model_seconds,
        tree_entries = warmed.tree_entries,
        tree_megabytes = warmed.tree_bytes >> 20,
        tree_seconds = warmed.tree_seconds,
        "{what}"
    );
    Ok(warmed)
}
