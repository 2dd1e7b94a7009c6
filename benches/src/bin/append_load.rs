//! Load generator for durable appends.
//!
//! `cargo run --release -p crm-benches --bin append-load -- --writers 64 --events 200000 --data-dir /tmp/crm-load`
//!
//! W concurrent writers each append one event per request (200-byte payloads by default) to
//! their own streams, with `ExpectedVersion::Any`, and wait for the durable acknowledgement.
//! In the same run it measures a raw 4 KiB append + fdatasync loop on the same disk. The last
//! line printed is one JSON object with the results.

/// mimalloc instead of glibc malloc: see the allocator note in docs/PERFORMANCE.md.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use crm_benches::{raw_fdatasync_latencies, sample_event};
use crm_eventlog::{EventStore, ExpectedVersion, SledEventStore};
use hdrhistogram::Histogram;

/// Durable append load generator.
#[derive(Debug, Parser)]
struct Options {
    /// Concurrent writers.
    #[arg(long, default_value_t = 64)]
    writers: u64,
    /// Total events to append.
    #[arg(long, default_value_t = 200_000)]
    events: u64,
    /// Data directory (a fresh log is created inside it).
    #[arg(long)]
    data_dir: PathBuf,
    /// Payload size in bytes.
    #[arg(long, default_value_t = 200)]
    payload: usize,
    /// Events per append request.
    #[arg(long, default_value_t = 1)]
    batch: u64,
    /// Iterations of the raw fdatasync baseline.
    #[arg(long, default_value_t = 2000)]
    fsync_iterations: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    crm_eventlog::memory::disable_transparent_huge_pages();
    let o = Options::parse();
    std::fs::create_dir_all(&o.data_dir)?;
    let log_dir = o.data_dir.join(format!("append-load-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&log_dir);

    // The disk's raw durability rate, measured in this run before the load.
    let raw = raw_fdatasync_latencies(&o.data_dir, o.fsync_iterations).context("raw fdatasync baseline")?;
    let raw_total: u64 = raw.iter().sum();
    let mut raw_hist = Histogram::<u64>::new(3)?;
    for v in &raw {
        raw_hist.record((*v).max(1))?;
    }

    let store = SledEventStore::open(crm_eventlog::Config::new(&log_dir))?;
    let per_writer = o.events / o.writers / o.batch;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..o.writers {
        let store = store.clone();
        let (payload, batch) = (o.payload, o.batch);
        tasks.push(tokio::spawn(async move {
            let mut hist = Histogram::<u64>::new(3).expect("histogram");
            for i in 0..per_writer {
                let events = (0..batch).map(|k| sample_event(payload, i * batch + k)).collect();
                let stream = format!("lead-{w}-{}", i % 100);
                let t = Instant::now();
                store.append(&stream, ExpectedVersion::Any, events).await.expect("append");
                hist.record((t.elapsed().as_micros() as u64).max(1)).expect("record");
            }
            hist
        }));
    }
    let mut hist = Histogram::<u64>::new(3)?;
    for t in tasks {
        hist.add(t.await?)?;
    }
    let elapsed = started.elapsed();
    let stats = store.stats();
    let events = per_writer * o.writers * o.batch;
    store.close();
    drop(store);
    let _ = std::fs::remove_dir_all(&log_dir);

    let eps = events as f64 / elapsed.as_secs_f64();
    let fsync_per_sec = raw.len() as f64 / Duration::from_micros(raw_total).as_secs_f64();
    eprintln!(
        "{events} events by {} writers in {:.2?}: {eps:.0} events/s, {} barriers ({:.1} events each); raw fdatasync {fsync_per_sec:.0}/s",
        o.writers,
        elapsed,
        stats.barriers,
        events as f64 / stats.barriers.max(1) as f64
    );
    let json = serde_json::json!({
        "writers": o.writers,
        "events": events,
        "batch": o.batch,
        "payload_bytes": o.payload,
        "seconds": elapsed.as_secs_f64(),
        "events_per_sec": eps.round(),
        "p50_us": hist.value_at_quantile(0.50),
        "p99_us": hist.value_at_quantile(0.99),
        "p999_us": hist.value_at_quantile(0.999),
        "barriers": stats.barriers,
        "barrier_write_avg_us": stats.write_micros / stats.barriers.max(1),
        "barrier_fdatasync_avg_us": stats.fdatasync_micros / stats.fdatasyncs.max(1),
        "events_per_barrier": (events as f64 / stats.barriers.max(1) as f64 * 10.0).round() / 10.0,
        "checkpoints": stats.checkpoints,
        "groups": stats.groups,
        "writer_busy_share": (stats.writer_busy_micros as f64 / elapsed.as_micros() as f64 * 1000.0).round() / 1000.0,
        "writer_read_ahead_share": (stats.writer_read_ahead_micros as f64 / elapsed.as_micros() as f64 * 1000.0).round() / 1000.0,
        "writer_apply_share": (stats.writer_apply_micros as f64 / elapsed.as_micros() as f64 * 1000.0).round() / 1000.0,
        "sync_idle_share": (stats.sync_idle_micros as f64 / elapsed.as_micros() as f64 * 1000.0).round() / 1000.0,
        "fdatasync_per_sec": fsync_per_sec.round(),
        "fdatasync_p50_us": raw_hist.value_at_quantile(0.50),
        "fdatasync_p99_us": raw_hist.value_at_quantile(0.99),
        "speedup_vs_fdatasync": (eps / fsync_per_sec * 10.0).round() / 10.0,
    });
    println!("{json}");
    Ok(())
}
