//! Load generator for the intake and persistent subscriptions: starts a server in this
//! process on a temporary data directory (real gRPC over loopback, real durable appends),
//! then measures
//!
//! - `sync`: `Intake.SyncRecords` throughput in batches of `--batch` records with validation
//!   on (required name with a length cap, a phone-typed field, a pattern, a decimal range),
//!   half new customers and half updates of existing ones;
//! - `subscribe`: one persistent-subscription consumer (batches of `--batch`, acking every
//!   batch from a second task) draining `--events` events written before it connected.
//!
//! Prints one line per run and the median. Each run is a child process of its own (this
//! program started again with `--child`), so no run inherits what an earlier run's server
//! left in memory: sled 0.34 does not give back a dropped database's memory, and the audit
//! projection's tree alone grows to gigabytes while it catches up on a large log.
//! Results: docs/PERFORMANCE.md.
//!
//! ```sh
//! cargo run --release -p crm-server --example intake-load -- sync --batches 80 --runs 5
//! cargo run --release -p crm-server --example intake-load -- subscribe --events 500000 --runs 5
//! ```

/// The server's allocator (see crates/crm-server/src/main.rs), so the in-process server is
/// measured as it runs.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, Subcommand};
use crm_proto::v1 as pb;
use tokio_stream::StreamExt;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;

#[derive(Parser)]
struct Options {
    #[command(subcommand)]
    mode: Mode,
    /// Measured runs (each on a fresh data directory, in a fresh process); the median is
    /// reported.
    #[arg(long, default_value_t = 5, global = true)]
    runs: usize,
    /// Internal: run once in this process and print the rate alone.
    #[arg(long, hide = true, global = true)]
    child: bool,
}

#[derive(Subcommand)]
enum Mode {
    /// SyncRecords throughput.
    Sync {
        /// Batches per run.
        #[arg(long, default_value_t = 80)]
        batches: usize,
        /// Records per batch.
        #[arg(long, default_value_t = 500)]
        batch: usize,
        /// Batches in flight at once (one per source; a source's batches are serialised).
        #[arg(long, default_value_t = 1)]
        concurrency: usize,
    },
    /// One consumer's delivery rate.
    Subscribe {
        /// Events in the log before the consumer connects.
        #[arg(long, default_value_t = 500_000)]
        events: u64,
        /// Events per delivered batch.
        #[arg(long, default_value_t = 1000)]
        batch: u32,
    },
}

type Client<T> = T;

struct Running {
    addr: String,
    token: String,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

async fn start(dir: &Path) -> anyhow::Result<Running> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let config = crm_server::Config {
        listen: format!("127.0.0.1:{port}").parse()?,
        data_dir: dir.to_owned(),
        limits: crm_server::auth::Limits { rate_per_sec: 1e6, burst: 1e6, ..Default::default() },
        ..Default::default()
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(crm_server::run(config, async move {
        let _ = stopped.await;
    }));
    let token_path = dir.join("bootstrap-admin-token");
    let addr = format!("http://127.0.0.1:{port}");
    for _ in 0..600 {
        if let Ok(token) = std::fs::read_to_string(&token_path) {
            if Channel::from_shared(addr.clone())?.connect().await.is_ok() {
                return Ok(Running { addr, token: token.trim().to_owned(), stop, task });
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::bail!("the server did not start")
}

impl Running {
    async fn channel(
        &self,
    ) -> anyhow::Result<
        tonic::service::interceptor::InterceptedService<Channel, impl tonic::service::Interceptor + Clone>,
    > {
        let channel = Channel::from_shared(self.addr.clone())?.connect().await?;
        let value: MetadataValue<_> = format!("Bearer {}", self.token).parse()?;
        Ok(tonic::service::interceptor::InterceptedService::new(channel, move |mut r: tonic::Request<()>| {
            r.metadata_mut().insert("authorization", value.clone());
            Ok(r)
        }))
    }

    async fn stop(self) -> anyhow::Result<()> {
        let _ = self.stop.send(());
        self.task.await??;
        Ok(())
    }
}

fn record(i: usize, modified: i64) -> pb::SyncRecord {
    let f = |n: &str, v: String| pb::SyncField { name: n.into(), value: Some(v) };
    pb::SyncRecord {
        external_id: format!("KH{i:08}"),
        modified_at_micros: modified,
        fields: vec![
            f("name", format!("示例精密制造有限公司{i}")),
            // Synthetic numbers: 139-0000-xxxx.
            f("tel", format!("1390000{:04}", i % 10_000)),
            f("grade", ["A", "B", "C"][i % 3].to_owned()),
            f("credit_limit", format!("{}", (i % 1000) * 1000)),
            f("industry", "医疗器械".into()),
            pb::SyncField { name: "remark".into(), value: None },
        ],
    }
}

async fn sync_run(batches: usize, batch: usize, concurrency: usize) -> anyhow::Result<f64> {
    let dir = tempfile::tempdir()?;
    let server = start(dir.path()).await?;
    let channel = server.channel().await?;
    let mut intake = pb::intake_client::IntakeClient::new(channel.clone());
    for s in 0..concurrency {
        let rules = [
            ("name", pb::FieldRule { required: true, max_len: 100, ..Default::default() }),
            (
                "tel",
                pb::FieldRule { target: "phone".into(), r#type: pb::FieldType::Phone as i32, ..Default::default() },
            ),
            ("grade", pb::FieldRule { target: "level".into(), pattern: "[ABCD]".into(), ..Default::default() }),
            (
                "credit_limit",
                pb::FieldRule {
                    r#type: pb::FieldType::Decimal as i32,
                    min: Some(0.0),
                    max: Some(1e9),
                    ..Default::default()
                },
            ),
        ];
        intake
            .configure_source(pb::ConfigureSourceRequest {
                source: format!("erp-{s}"),
                fields: rules.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
                ..Default::default()
            })
            .await?;
    }
    let t0: i64 = 1_772_000_000_000_000;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for s in 0..concurrency {
        let mut intake = pb::intake_client::IntakeClient::new(channel.clone());
        let mine: Vec<usize> = (0..batches).filter(|b| b % concurrency == s).collect();
        tasks.push(tokio::spawn(async move {
            let mut records = 0usize;
            for b in mine {
                // Every second batch updates the customers of the one before it.
                let base = (b / 2) * batch;
                let modified = t0 + b as i64;
                let request = pb::SyncRecordsRequest {
                    source: format!("erp-{s}"),
                    records: (base..base + batch).map(|i| record(i, modified)).collect(),
                    ..Default::default()
                };
                let r = intake.sync_records(request).await?.into_inner();
                if r.quarantined > 0 {
                    let listed = intake
                        .list_quarantined(pb::ListQuarantinedRequest { source: format!("erp-{s}"), limit: 1 })
                        .await?
                        .into_inner();
                    anyhow::bail!("{} records quarantined, first: {:?}", r.quarantined, listed.records.first());
                }
                records += batch;
            }
            anyhow::Ok(records)
        }));
    }
    let mut records = 0;
    for t in tasks {
        records += t.await??;
    }
    let secs = started.elapsed().as_secs_f64();
    drop(intake);
    drop(channel);
    server.stop().await?;
    Ok(records as f64 / secs)
}

async fn prefill(dir: &Path, events: u64) -> anyhow::Result<()> {
    let store = crm_eventlog::SledEventStore::open(crm_eventlog::Config::new(dir.join("eventlog")))?;
    use crm_eventlog::{Durability, EventStore, ExpectedVersion, Metadata, NewEvent, StreamAppend};
    let mut written = 0;
    while written < events {
        let n = (events - written).min(1000);
        let appends = vec![StreamAppend {
            stream: format!("load-{}", written / 1000),
            expected: ExpectedVersion::Any,
            events: (0..n)
                .map(|i| NewEvent {
                    id: uuid::Uuid::now_v7(),
                    event_type: "LoadTick".into(),
                    schema_version: 1,
                    metadata: Metadata { actor: "load".into(), source: "load".into(), ..Metadata::default() },
                    payload: format!("{{\"seq\":{}}}", written + i).into_bytes(),
                })
                .collect(),
        }];
        store.append_many(appends, Durability::Buffered).await?;
        written += n;
    }
    store.close();
    Ok(())
}

async fn subscribe_run(events: u64, batch: u32) -> anyhow::Result<f64> {
    let dir = tempfile::tempdir()?;
    prefill(dir.path(), events).await.context("prefilling the log")?;
    let server = start(dir.path()).await?;
    let channel = server.channel().await?;
    let mut subs: Client<_> = pb::subscriptions_client::SubscriptionsClient::new(channel.clone());
    subs.create_group(pb::CreateGroupRequest {
        settings: Some(pb::GroupSettings {
            group: "load".into(),
            stream_prefixes: vec!["load-".into()],
            max_in_flight: 20_000,
            ..Default::default()
        }),
    })
    .await?;
    let (ack_tx, mut ack_rx) = tokio::sync::mpsc::channel::<Vec<u64>>(64);
    let acker = {
        let mut subs = subs.clone();
        tokio::spawn(async move {
            while let Some(positions) = ack_rx.recv().await {
                subs.ack(pb::AckRequest { group: "load".into(), positions }).await?;
            }
            anyhow::Ok(())
        })
    };
    let started = Instant::now();
    let mut stream = subs
        .subscribe(pb::SubscribeRequest { group: "load".into(), batch_size: batch, render_json: false })
        .await?
        .into_inner();
    let mut received = 0u64;
    while received < events {
        let b = stream.next().await.context("stream ended")??;
        received += b.events.len() as u64;
        ack_tx.send(b.events.iter().map(|e| e.position).collect()).await?;
    }
    let secs = started.elapsed().as_secs_f64();
    drop(ack_tx);
    acker.await??;
    drop(stream);
    drop(subs);
    drop(channel);
    server.stop().await?;
    Ok(received as f64 / secs)
}

/// Runs one measurement in a child process and returns its rate.
fn child_run() -> anyhow::Result<f64> {
    let output = std::process::Command::new(std::env::current_exe()?)
        .args(std::env::args_os().skip(1))
        .arg("--child")
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("starting a run")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    anyhow::ensure!(output.status.success(), "the run failed: {}\n{stdout}", output.status);
    let line = stdout.lines().rev().find_map(|l| l.strip_prefix("rate ")).context("the run printed no rate")?;
    Ok(line.trim().parse()?)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    crm_eventlog::memory::disable_transparent_huge_pages();
    let options = Options::parse();
    if options.child {
        let rate = match options.mode {
            Mode::Sync { batches, batch, concurrency } => sync_run(batches, batch, concurrency).await?,
            Mode::Subscribe { events, batch } => subscribe_run(events, batch).await?,
        };
        println!("rate {rate}");
        return Ok(());
    }
    let mut rates = Vec::new();
    for run in 1..=options.runs {
        let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
        let rate = child_run()?;
        let load = load.split_whitespace().next().unwrap_or("?").to_owned();
        let unit = match options.mode {
            Mode::Sync { .. } => "records/s",
            Mode::Subscribe { .. } => "events/s",
        };
        println!("run {run}: {rate:.0} {unit} (load average {load} at the start)");
        rates.push(rate);
    }
    rates.sort_by(f64::total_cmp);
    println!("median: {:.0}", rates[rates.len() / 2]);
    Ok(())
}
