//! `crm-projection-bench`: generates a large event base and measures the read models: rebuild
//! events/s per projection, query latency through gRPC with concurrent clients, and
//! projection lag under a sustained append rate. Results go to docs/PERFORMANCE.md.
//!
//! ```text
//! crm-projection-bench generate --dir /tmp/base --commands 9000000
//! crm-projection-bench rebuild  --dir /tmp/base
//! crm-projection-bench query    --dir /tmp/base --clients 32 --seconds 20 [--rate 2000]
//! crm-projection-bench lag      --dir /tmp/base --rate 5000 --seconds 30 [--rules-change-at 10]
//! ```

/// mimalloc instead of glibc malloc: see the allocator note in docs/PERFORMANCE.md.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, Subcommand};
use crm_domain::{Event, RulesChanged};
use crm_eventlog::{Durability, EventStore, SledEventStore, StreamAppend};
use crm_projection_audit::AuditProjector;
use crm_projection_customers::CustomersProjector;
use crm_projection_duplicates::DuplicatesProjector;
use crm_projection_funnel::{Calendar, FunnelProjector};
use crm_projection_health::HealthProjector;
use crm_projection_reminders::RemindersProjector;
use crm_projection_runtime::fixtures::{Generated, Generator, GeneratorConfig};
use crm_projection_runtime::{spawn, spawn_with, ProjectionDb, ProjectionHandle, SpawnOptions};
use crm_projection_workload::WorkloadProjector;
use crm_proto::v1 as pb;

/// Projection benchmarks.
#[derive(Debug, Parser)]
struct Options {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Appends generated commands to `<dir>/eventlog` (buffered durability, large groups).
    Generate {
        #[arg(long, env = "CRM_BENCH_DIR")]
        dir: PathBuf,
        /// Number of generated commands (about 1.1 events each).
        #[arg(long, default_value_t = 1_000_000)]
        commands: u64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Salespeople in the generated base.
        #[arg(long, default_value_t = 500)]
        users: usize,
        /// Share of commands that create a customer, in thousandths (the generator's usual
        /// mix, 189, when absent); 106 gives about 1,000,000 customers in 10,000,000 events.
        #[arg(long)]
        new_customer_permille: Option<u32>,
    },
    /// Builds each read model from position 0 into a fresh database and reports events/s.
    Rebuild {
        #[arg(long, env = "CRM_BENCH_DIR")]
        dir: PathBuf,
        /// Only this read model (customers, funnel, audit, duplicates, workload, reminders,
        /// health); all when absent.
        #[arg(long)]
        only: Option<String>,
        /// After the first build, also time a rebuild into a shadow tree and its swap (what
        /// `RebuildProjection` does), with the first build serving meanwhile.
        #[arg(long)]
        shadow: bool,
        #[command(flatten)]
        caches: Caches,
    },
    /// Starts the server in-process on `<dir>` and measures query latency with concurrent
    /// gRPC clients (ListCustomers and GetFunnel with random filters).
    Query {
        #[arg(long, env = "CRM_BENCH_DIR")]
        dir: PathBuf,
        #[arg(long, default_value_t = 32)]
        clients: usize,
        #[arg(long, default_value_t = 20)]
        seconds: u64,
        /// Run the server as a separate process from this `crm-server` binary instead of in
        /// this process, so client and server CPU are counted apart.
        #[arg(long)]
        server_bin: Option<PathBuf>,
        /// Calls per second offered by all clients together, each client on its own fixed
        /// schedule (open loop: a late call is timed from when it was due, so a stall is not
        /// hidden). 0: every client calls again as soon as its answer arrives (closed loop,
        /// the server's saturation point).
        #[arg(long, default_value_t = 0)]
        rate: u64,
        /// CaptureLead commands per second sent meanwhile through the same server (durable
        /// writes, so every read model's position moves and cached answers are recomputed).
        #[arg(long, default_value_t = 0)]
        write_rate: u64,
        /// Start the server with `warm_on_start = false`.
        #[arg(long)]
        no_warm: bool,
    },
    /// Appends generated commands at a fixed rate (durable, one atomic append per command)
    /// while all seven read models follow (as in the server); samples their lag.
    Lag {
        #[arg(long, env = "CRM_BENCH_DIR")]
        dir: PathBuf,
        /// Commands per second.
        #[arg(long, default_value_t = 5000)]
        rate: u64,
        #[arg(long, default_value_t = 30)]
        seconds: u64,
        /// Change the rules once, this many seconds into the run (a stage time limit, which
        /// makes the funnel rebuild in a shadow while the writers go on). The writers' own
        /// commands never change the rules.
        #[arg(long)]
        rules_change_at: Option<u64>,
        #[command(flatten)]
        caches: Caches,
        /// Warm the caches first as the server does after it starts (the log's stream index,
        /// the read models' files and trees), and start the writers once that is done.
        #[arg(long)]
        warm: bool,
    },
}

/// The memory bounds of the rebuild and lag benches.
#[derive(Debug, clap::Args, Clone, Copy)]
struct Caches {
    /// sled page cache of the event log, in MiB.
    #[arg(long, default_value_t = 512)]
    log_cache_mb: u64,
    /// sled page cache of each read model's database, in MiB (the server's
    /// `read_model_cache_mb`).
    #[arg(long, default_value_t = 1024)]
    projection_cache_mb: u64,
    /// Memory the builds far behind share before they commit, in MiB (the server's
    /// `build_cache_mb`).
    #[arg(long, default_value_t = crm_projection_runtime::DEFAULT_BUILD_CACHE_BYTES >> 20,
          value_parser = clap::value_parser!(u64).range(16..=1 << 20))]
    build_cache_mb: u64,
}

impl Caches {
    /// The log's, each read model's and the builds' shared bound, in bytes.
    fn bytes(self) -> (u64, u64, u64) {
        (self.log_cache_mb << 20, self.projection_cache_mb << 20, self.build_cache_mb << 20)
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    crm_eventlog::memory::disable_transparent_huge_pages();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(std::env::var("CRM_LOG").unwrap_or_else(|_| "warn".into())))
        .with_writer(std::io::stderr)
        .init();
    match Options::parse().command {
        Cmd::Generate { dir, commands, seed, users, new_customer_permille } => {
            generate(&dir, commands, seed, users, new_customer_permille).await
        }
        Cmd::Rebuild { dir, only, shadow, caches } => rebuild(&dir, only.as_deref(), shadow, caches).await,
        Cmd::Query { dir, clients, seconds, server_bin, rate, write_rate, no_warm } => {
            query(&dir, clients, seconds, server_bin.as_deref(), rate, write_rate, !no_warm).await
        }
        Cmd::Lag { dir, rate, seconds, rules_change_at, caches, warm } => {
            lag(&dir, rate, seconds, rules_change_at, caches, warm).await
        }
    }
}

/// The event log in `<dir>/eventlog`, with sled's page cache at `cache_capacity` bytes (the
/// store's default when `None`).
fn open_store(dir: &Path, cache_capacity: Option<u64>) -> anyhow::Result<SledEventStore> {
    let mut config = crm_eventlog::Config::new(dir.join("eventlog"));
    config.cache_capacity = cache_capacity.unwrap_or(config.cache_capacity);
    SledEventStore::open(config).context("opening the event log")
}

/// This process's peak resident set (`VmHWM`), in bytes (0 when unreadable).
fn peak_rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

async fn generate(
    dir: &Path,
    commands: u64,
    seed: u64,
    users: usize,
    new_customer_permille: Option<u32>,
) -> anyhow::Result<()> {
    let store = open_store(dir, None)?;
    // The base spans about 18 months of simulated time, whatever its size.
    let step_seconds = (18 * 30 * 24 * 3600 / commands.max(1)).max(1) as i64;
    let mut generator =
        Generator::new(GeneratorConfig { seed, users, step_seconds, new_customer_permille, ..Default::default() });
    let started = Instant::now();
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<StreamAppend>>(8);
    // Generation on a blocking thread, appends here: both cores busy.
    let producer = tokio::task::spawn_blocking(move || {
        let mut left = commands;
        let mut counter: u128 = u128::from(seed) << 96;
        let mut ids = move || {
            counter += 1;
            uuid::Uuid::from_u128(counter)
        };
        // One atomic append per group of commands; a stream may appear once per append, so
        // a command touching a stream already in the group starts the next group (the log
        // order stays the generation order).
        let mut group: Vec<StreamAppend> = Vec::new();
        let mut streams = std::collections::HashSet::new();
        let mut events = 0;
        while left > 0 {
            let appends = generator.next_command().to_appends(&mut ids);
            left -= 1;
            if events + 4 > 900 || appends.iter().any(|a| streams.contains(&a.stream)) {
                if tx.blocking_send(std::mem::take(&mut group)).is_err() {
                    return;
                }
                streams.clear();
                events = 0;
            }
            for a in appends {
                events += a.events.len();
                streams.insert(a.stream.clone());
                group.push(a);
            }
        }
        if !group.is_empty() {
            let _ = tx.blocking_send(group);
        }
    });
    let mut appended = 0u64;
    let mut next_report = Instant::now() + Duration::from_secs(10);
    while let Some(group) = rx.recv().await {
        let results = store.append_many(group, Durability::Buffered).await?;
        appended += results.iter().map(|r| r.last_position - r.first_position + 1).sum::<u64>();
        if Instant::now() >= next_report {
            next_report += Duration::from_secs(10);
            eprintln!("{appended} events, {:.0} events/s", appended as f64 / started.elapsed().as_secs_f64());
        }
    }
    producer.await?;
    tokio::task::spawn_blocking({
        let store = store.clone();
        move || store.close()
    })
    .await?;
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "generated {commands} commands, {appended} events, head {} in {seconds:.1} s ({:.0} events/s)",
        store.committed_head(),
        appended as f64 / seconds
    );
    Ok(())
}

/// The read models `rebuild` builds, in its order.
const READ_MODELS: [&str; 7] = ["customers", "funnel", "audit", "duplicates", "workload", "reminders", "health"];

async fn rebuild(dir: &Path, only: Option<&str>, shadow: bool, caches: Caches) -> anyhow::Result<()> {
    if let Some(only) = only {
        anyhow::ensure!(
            READ_MODELS.contains(&only),
            "--only {only}: no such read model (one of {})",
            READ_MODELS.join(", ")
        );
    }
    let (log_cache, projection_cache, build_cache) = caches.bytes();
    let store = open_store(dir, Some(log_cache))?;
    let head = store.committed_head();
    println!("log head {head}");
    for name in READ_MODELS {
        if only.is_some_and(|o| o != name) {
            continue;
        }
        let scratch = dir.join(format!("bench-rebuild-{name}"));
        let _ = std::fs::remove_dir_all(&scratch);
        let db = ProjectionDb::open_with_cache(&scratch, projection_cache)?;
        db.set_build_cache_bytes(build_cache);
        let started = Instant::now();
        let cpu = cpu_seconds("self");
        let handle = match name {
            "customers" => spawn(&db, store.clone(), CustomersProjector)?,
            "funnel" => spawn(&db, store.clone(), FunnelProjector::new(Calendar::china_2026()))?,
            "workload" => spawn(&db, store.clone(), WorkloadProjector)?,
            "reminders" => spawn(&db, store.clone(), RemindersProjector)?,
            "health" => spawn(&db, store.clone(), HealthProjector)?,
            "duplicates" => {
                let duplicates = {
                    let db = db.clone();
                    tokio::task::spawn_blocking(move || DuplicatesProjector::open(&db)).await??
                };
                spawn(&db, store.clone(), duplicates)?
            }
            _ => spawn(&db, store.clone(), AuditProjector)?,
        };
        handle.wait_for(head, Duration::from_secs(24 * 3600)).await?;
        let seconds = started.elapsed().as_secs_f64();
        let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
        let load = load.split_whitespace().next().unwrap_or("?").to_owned();
        println!(
            "rebuild {name}: {head} events in {seconds:.2} s = {:.0} events/s ({:.1} s CPU, load average {load}, \
             process peak RSS so far {:.2} GB)",
            head as f64 / seconds,
            cpu_seconds("self") - cpu,
            peak_rss_bytes() as f64 / 1e9
        );
        if shadow {
            let cpu = cpu_seconds("self");
            let summary = handle.rebuild().await?;
            println!(
                "shadow rebuild {name}: {} events in {:.2} s = {:.0} events/s ({:.1} s CPU), swapped at {}",
                summary.events,
                summary.seconds,
                summary.events as f64 / summary.seconds,
                cpu_seconds("self") - cpu,
                summary.position
            );
        }
        handle.stop().await;
        let status = handle.status();
        anyhow::ensure!(status.failure.is_none(), "{name} failed: {:?}", status.failure);
        drop(handle);
        drop(db);
        let _ = std::fs::remove_dir_all(&scratch);
    }
    store.close();
    Ok(())
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)] as f64 / 1000.0
}

/// CPU seconds (user + system) used so far by process `pid` (`self` for this one).
fn cpu_seconds(pid: &str) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return f64::NAN };
    // Fields after the parenthesised command name; utime and stime are the 14th and 15th.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else { return f64::NAN };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(f64::NAN);
    // Clock ticks are 1/100 s on Linux.
    (ticks(11) + ticks(12)) / 100.0
}

/// The server under measurement: in this process, or a child `crm-server` process.
enum Server {
    InProcess(tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<anyhow::Result<()>>),
    External(std::process::Child),
}

impl Server {
    fn pid(&self) -> Option<String> {
        match self {
            Server::InProcess(..) => None,
            Server::External(child) => Some(child.id().to_string()),
        }
    }

    async fn stop(self) -> anyhow::Result<()> {
        match self {
            Server::InProcess(stop, task) => {
                let _ = stop.send(());
                task.await?
            }
            Server::External(mut child) => {
                std::process::Command::new("kill").arg("-TERM").arg(child.id().to_string()).status()?;
                tokio::task::spawn_blocking(move || child.wait()).await??;
                Ok(())
            }
        }
    }
}

async fn query(
    dir: &Path,
    clients: usize,
    seconds: u64,
    server_bin: Option<&Path>,
    rate: u64,
    write_rate: u64,
    warm: bool,
) -> anyhow::Result<()> {
    // The server on a free port.
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    drop(listener);
    // The bench measures the read path, not the per-token rate limit (2,000/s by default).
    let server = match server_bin {
        Some(bin) => {
            let config = dir.join("bench-server.toml");
            std::fs::write(
                &config,
                format!(
                    "rate_limit_per_sec = 1e9\nrate_limit_burst = 1e9\nmax_concurrent_per_token = 10000\nwarm_on_start = {warm}\n"
                ),
            )?;
            let child = std::process::Command::new(bin)
                .arg("--listen")
                .arg(addr.to_string())
                .arg("--data-dir")
                .arg(dir)
                .arg("--config")
                .arg(&config)
                .arg("--log")
                .arg("warn")
                .stdout(std::process::Stdio::null())
                .spawn()
                .with_context(|| format!("starting {}", bin.display()))?;
            Server::External(child)
        }
        None => {
            let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
            let limits = crm_server::auth::Limits { rate_per_sec: 1e9, burst: 1e9, max_concurrent: 10_000 };
            let config = crm_server::Config {
                listen: addr,
                data_dir: dir.to_path_buf(),
                limits,
                warm_on_start: warm,
                ..Default::default()
            };
            let task = tokio::spawn(crm_server::run(config, async move {
                let _ = stop_rx.await;
            }));
            Server::InProcess(stop_tx, task)
        }
    };
    let token = loop {
        if let Ok(t) = std::fs::read_to_string(dir.join("bootstrap-admin-token")) {
            if let Ok(channel) = tonic::transport::Channel::from_shared(format!("http://{addr}"))?.connect().await {
                break (t.trim().to_owned(), channel);
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let (token, channel) = token;
    let bearer: tonic::metadata::MetadataValue<tonic::metadata::Ascii> = format!("Bearer {token}").parse()?;
    let with_token = move |mut r: tonic::Request<()>| {
        r.metadata_mut().insert("authorization", bearer.clone());
        Ok(r)
    };
    let mut admin = pb::admin_client::AdminClient::with_interceptor(channel.clone(), with_token.clone());
    // Wait until every read model has caught up with the log.
    loop {
        let list = admin.list_projections(pb::ListProjectionsRequest {}).await?.into_inner();
        if list.projections.iter().all(|p| p.lag_events == 0 && p.state == pb::ProjectionState::Live as i32) {
            break;
        }
        eprintln!(
            "catching up: {:?}",
            list.projections.iter().map(|p| (p.name.clone(), p.position, p.head)).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    // A separate server process may still be busy with its start-up work (the duplicates
    // matcher, the intake's replay of the log: about 36 s of a core at 10.8 M events):
    // measure the steady state.
    if let Some(pid) = server.pid() {
        let waited = Instant::now();
        loop {
            let before = cpu_seconds(&pid);
            tokio::time::sleep(Duration::from_secs(2)).await;
            let used = cpu_seconds(&pid) - before;
            if used < 0.2 || used.is_nan() || waited.elapsed() > Duration::from_secs(600) {
                break;
            }
            eprintln!("server busy starting ({used:.1} s of CPU in the last 2 s); waiting");
        }
    }
    // Filter values from the data: owners and regions of a sample of customers.
    let mut q = pb::query_client::QueryClient::with_interceptor(channel.clone(), with_token.clone());
    let sample =
        q.list_customers(pb::ListCustomersRequest { page_size: 500, ..Default::default() }).await?.into_inner();
    let owners: Arc<Vec<String>> = Arc::new(sample.customers.iter().map(|c| c.owner_id.clone()).collect());
    let regions: Arc<Vec<String>> =
        Arc::new(sample.customers.iter().filter_map(|c| c.fields.get("region").cloned()).collect());
    let done = Arc::new(AtomicBool::new(false));
    let server_pid = server.pid();
    let cpu_before = (cpu_seconds("self"), server_pid.as_deref().map(cpu_seconds));
    // A line to start a profiler on: from here on the server's work is the queries'.
    eprintln!("measuring for {seconds} s");
    let measured = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..clients {
        let mut q = pb::query_client::QueryClient::with_interceptor(channel.clone(), with_token.clone());
        let (owners, regions, done) = (owners.clone(), regions.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            let mut list = Vec::new();
            let mut funnel = Vec::new();
            let mut n = i;
            // Open loop: this client's calls are due every `period`, starting at a staggered
            // offset; each is timed from when it was due.
            let period = (rate > 0).then(|| Duration::from_secs_f64(clients as f64 / rate as f64));
            let mut due =
                tokio::time::Instant::now() + period.map_or(Duration::ZERO, |p| p.mul_f64(i as f64 / clients as f64));
            while !done.load(Ordering::Relaxed) {
                n = n.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                let pick = n >> 33;
                let started = match period {
                    Some(period) => {
                        tokio::time::sleep_until(due).await;
                        let started = due.into_std();
                        due += period;
                        started
                    }
                    None => Instant::now(),
                };
                if pick.is_multiple_of(2) {
                    let mut r = pb::ListCustomersRequest { page_size: 20, ..Default::default() };
                    match pick % 3 {
                        0 => r.owner_id = owners[pick % owners.len()].clone(),
                        1 => r.region = regions[pick % regions.len()].clone(),
                        _ => r.stage = crm_domain::STAGE_NEEDS.into(),
                    }
                    q.list_customers(r).await.expect("list");
                    list.push(started.elapsed().as_micros() as u64);
                } else {
                    let mut r = pb::GetFunnelRequest::default();
                    match pick % 3 {
                        0 => r.owner_id = owners[pick % owners.len()].clone(),
                        1 => r.region = regions[pick % regions.len()].clone(),
                        _ => {}
                    }
                    q.get_funnel(r).await.expect("funnel");
                    funnel.push(started.elapsed().as_micros() as u64);
                }
            }
            (list, funnel)
        }));
    }
    // Writers: one per 50 commands/s offered, each on a fixed schedule (a durable command
    // takes a few milliseconds, so one sequential writer could not offer more).
    let writers = write_rate.div_ceil(50);
    let run = uuid::Uuid::now_v7();
    let writer_tasks: Vec<_> = (0..writers)
        .map(|w| {
            let mut commands =
                pb::command_service_client::CommandServiceClient::with_interceptor(channel.clone(), with_token.clone());
            let done = done.clone();
            tokio::spawn(async move {
                let period = Duration::from_secs_f64(writers as f64 / write_rate as f64);
                let mut due = tokio::time::Instant::now() + period.mul_f64(w as f64 / writers as f64);
                let mut sent = 0u64;
                while !done.load(Ordering::Relaxed) {
                    tokio::time::sleep_until(due).await;
                    due += period;
                    let i = w * 1_000_000 + sent;
                    let request = pb::CaptureLeadRequest {
                        options: Some(pb::CommandOptions {
                            actor: "query-bench".into(),
                            idempotency_key: format!("{run}-{i}"),
                            ..Default::default()
                        }),
                        name: format!("联系人{}", i % 997),
                        company: format!("无锡测试{}电子有限公司", i % 50_000),
                        phone: format!("+86 137 {:04} {:04}", 1000 + (i / 9000) % 9000, 1000 + i % 9000),
                        channel: pb::LeadChannel::WebForm as i32,
                        source: "web_form".into(),
                        ..Default::default()
                    };
                    commands.capture_lead(request).await.expect("capture lead");
                    sent += 1;
                }
                sent
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    done.store(true, Ordering::Relaxed);
    if writers > 0 {
        let mut sent = 0;
        for t in writer_tasks {
            sent += t.await?;
        }
        println!(
            "writes: {sent} CaptureLead in {seconds} s ({:.0}/s; {write_rate}/s offered by {writers} writers)",
            sent as f64 / seconds as f64
        );
    }
    let (mut list, mut funnel) = (Vec::new(), Vec::new());
    for t in tasks {
        let (l, f) = t.await?;
        list.extend(l);
        funnel.extend(f);
    }
    let wall = measured.elapsed().as_secs_f64();
    let own_cpu = cpu_seconds("self") - cpu_before.0;
    match (server_pid.as_deref().map(cpu_seconds), cpu_before.1) {
        (Some(after), Some(before)) => println!(
            "cpu over {wall:.1} s: clients (this process) {own_cpu:.1} s, server process {:.1} s ({:.0} us per call)",
            after - before,
            (after - before) * 1e6 / (list.len() + funnel.len()).max(1) as f64
        ),
        _ => println!("cpu over {wall:.1} s: clients and server in this process {own_cpu:.1} s"),
    }
    if let Ok(load) = std::fs::read_to_string("/proc/loadavg") {
        println!("load average {}", load.trim());
    }
    list.sort_unstable();
    funnel.sort_unstable();
    for (name, v) in [("ListCustomers", &list), ("GetFunnel", &funnel)] {
        println!(
            "{name}: {} calls in {seconds} s ({:.0}/s) with {clients} clients{}: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            v.len(),
            v.len() as f64 / seconds as f64,
            if rate > 0 { format!(" offering {rate} calls/s in all (open loop)") } else { " (closed loop)".to_owned() },
            percentile(v, 50.0),
            percentile(v, 99.0),
            percentile(v, 100.0)
        );
    }
    server.stop().await
}

async fn lag(
    dir: &Path,
    rate: u64,
    seconds: u64,
    rules_change_at: Option<u64>,
    caches: Caches,
    warm: bool,
) -> anyhow::Result<()> {
    let (log_cache, projection_cache, build_cache) = caches.bytes();
    let store = open_store(dir, Some(log_cache))?;
    let db = ProjectionDb::open_with_cache(&dir.join("projections"), projection_cache)?;
    db.set_build_cache_bytes(build_cache);
    if warm {
        let (store, db) = (store.clone(), db.clone());
        let w = tokio::task::spawn_blocking(move || {
            crm_server::warm::warm_caches(&store, &db, crm_server::warm::read_model_budget(), &AtomicBool::new(false))
        })
        .await??;
        eprintln!(
            "warmed: stream index {} entries ({} MB) in {:.1} s; read models' files {} MB in {:.1} s; trees {} entries in {:.1} s",
            w.index_entries,
            w.index_bytes >> 20,
            w.index_seconds,
            w.read_model_bytes >> 20,
            w.read_model_seconds,
            w.tree_entries,
            w.tree_seconds
        );
    }
    // Every read model the server runs, as the server runs them (a database each, one process).
    let duplicates = {
        let db = db.clone();
        tokio::task::spawn_blocking(move || DuplicatesProjector::open(&db)).await??
    };
    // The server's default live interval for all but duplicates (see `Projections::start`).
    let live = SpawnOptions { live_interval: crm_server::Config::default().projection_live_interval };
    let handles: Vec<ProjectionHandle> = vec![
        spawn_with(&db, store.clone(), CustomersProjector, live)?,
        spawn_with(&db, store.clone(), FunnelProjector::new(Calendar::china_2026()), live)?,
        spawn_with(&db, store.clone(), AuditProjector, live)?,
        spawn(&db, store.clone(), duplicates)?,
        spawn_with(&db, store.clone(), WorkloadProjector, live)?,
        spawn_with(&db, store.clone(), RemindersProjector, live)?,
        spawn_with(&db, store.clone(), HealthProjector, live)?,
    ];
    let head = store.committed_head();
    for h in &handles {
        h.wait_for(head, Duration::from_secs(24 * 3600)).await?;
    }
    eprintln!("caught up at {head}; appending {rate} commands/s for {seconds} s");
    // Writers: each command is one durable atomic append, paced per writer. A writer waits for
    // its append's barrier, so enough of them must be in flight to reach the rate: a writer
    // whose appends take longer than its interval on average falls short of its share. One
    // per 20 commands/s gives each a 50 ms interval; with one per 40 (25 ms), appends of 30 ms
    // on average (the two cores busy with seven read models beside the log) held 5,000
    // offered commands/s to 3,756 and 4,117 sustained.
    let writers = (rate / 20).clamp(64, 1024);
    let done = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for w in 0..writers {
        let (store, done) = (store.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            // Seeds differ per run: the generator's ids derive from the seed, and a re-run must
            // not create customers that exist already.
            let seed = (std::process::id() as u64) << 16 | w;
            // Rule changes are made once, below, not by each writer's generator: each counts
            // rule versions on its own, and 2 changes in 1,000 commands at 5,000 commands/s
            // would rebuild the funnel ten times a second.
            let config = GeneratorConfig { seed, users: 50, rules_changes: false, ..Default::default() };
            let mut generator = Generator::new(config);
            let interval = Duration::from_secs_f64(writers as f64 / rate as f64);
            let mut next = tokio::time::Instant::now();
            let mut sent = 0u64;
            while !done.load(Ordering::Relaxed) {
                let command = generator.next_command();
                let appends = command.to_appends(&mut uuid::Uuid::now_v7);
                store.append_many(appends, Durability::Durable).await.expect("append");
                sent += 1;
                next += interval;
                tokio::time::sleep_until(next).await;
            }
            sent
        }));
    }
    let started = Instant::now();
    let log_before = store.stats();
    let log_file = dir.join("eventlog").join("db");
    let log_bytes_before = std::fs::metadata(&log_file).map_or(0, |m| m.len());
    // (read model, lag in seconds, events behind, seconds into the run)
    let mut samples: Vec<(String, f64, u64, f64)> = Vec::new();
    let mut rules_change_at = rules_change_at.map(Duration::from_secs);
    while started.elapsed() < Duration::from_secs(seconds) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if rules_change_at.is_some_and(|at| started.elapsed() >= at) {
            rules_change_at = None;
            let position = change_stage_limit(&store).await?;
            eprintln!("{:.1} s: rules changed at position {position}", started.elapsed().as_secs_f64());
        }
        let head = store.committed_head();
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_micros() as i64;
        for h in &handles {
            let p = h.position();
            let lag_seconds = if p >= head {
                0.0
            } else {
                let e = store.read_all_blocking(p + 1, 1)?;
                e.first().map_or(0.0, |e| (now - e.recorded_at_micros).max(0) as f64 / 1e6)
            };
            samples.push((h.name().to_owned(), lag_seconds, head.saturating_sub(p), started.elapsed().as_secs_f64()));
        }
    }
    done.store(true, Ordering::Relaxed);
    let mut commands = 0;
    for t in tasks {
        commands += t.await?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "sustained {:.0} commands/s ({commands} in {elapsed:.1} s), head {}",
        commands as f64 / elapsed,
        store.committed_head()
    );
    // Where the writers' appends went: the log's group commits over the run.
    let log = store.stats();
    let (groups, barriers, syncs) =
        (log.groups - log_before.groups, log.barriers - log_before.barriers, log.fdatasyncs - log_before.fdatasyncs);
    let share = |micros: u64| (micros as f64 / 1e6) / elapsed;
    println!(
        "log: {groups} groups ({:.1} commands each), {barriers} barriers, {syncs} fdatasyncs ({:.0} us each), \
         writer busy {:.0}% (reading versions ahead {:.0}%, applying to sled {:.0}%), sync thread idle {:.0}%, \
         {} checkpoints",
        commands as f64 / groups.max(1) as f64,
        (log.fdatasync_micros - log_before.fdatasync_micros) as f64 / syncs.max(1) as f64,
        100.0 * share(log.writer_busy_micros - log_before.writer_busy_micros),
        100.0 * share(log.writer_read_ahead_micros - log_before.writer_read_ahead_micros),
        100.0 * share(log.writer_apply_micros - log_before.writer_apply_micros),
        100.0 * share(log.sync_idle_micros - log_before.sync_idle_micros),
        log.checkpoints - log_before.checkpoints
    );
    let log_bytes = std::fs::metadata(&log_file).map_or(0, |m| m.len());
    println!(
        "log file: {:.2} GB, {:+.1} MB over the run",
        log_bytes as f64 / 1e9,
        (log_bytes as f64 - log_bytes_before as f64) / 1e6
    );
    for h in &handles {
        let mut lags: Vec<f64> = samples.iter().filter(|s| s.0 == h.name()).map(|s| s.1).collect();
        let max_events = samples.iter().filter(|s| s.0 == h.name()).map(|s| s.2).max().unwrap_or(0);
        lags.sort_by(f64::total_cmp);
        let p = |q: f64| lags[((q / 100.0) * (lags.len() - 1) as f64).round() as usize];
        println!(
            "lag {}: median {:.3} s, p99 {:.3} s, max {:.3} s, max {max_events} events behind ({} samples every 100 ms, {} rebuilds)",
            h.name(),
            p(50.0),
            p(99.0),
            p(100.0),
            lags.len(),
            h.status().rebuilds_completed
        );
        // The same by 10-second window: a process that starts cold (empty caches) lags most
        // in its first seconds; the later windows show the steady state.
        // The last sample may fall just after `seconds`: its window is printed too.
        let last_window = samples.last().map_or(0, |s| (s.3 / 10.0) as u64);
        let windows: Vec<String> = (0..=last_window)
            .map(|w| {
                let mut lags: Vec<f64> =
                    samples.iter().filter(|s| s.0 == h.name() && (s.3 / 10.0) as u64 == w).map(|s| s.1).collect();
                lags.sort_by(f64::total_cmp);
                match lags.len() {
                    0 => "-".to_owned(),
                    n => format!("{:.2}", lags[((0.99 * (n - 1) as f64).round()) as usize]),
                }
            })
            .collect();
        println!("lag {} p99 per 10 s: {}", h.name(), windows.join(" / "));
        h.stop().await;
    }
    store.close();
    Ok(())
}

/// Appends the next version of the rules with the first stage's time limit one working day
/// longer, as `ChangeRules` would; returns its position.
async fn change_stage_limit(store: &SledEventStore) -> anyhow::Result<u64> {
    let mut rules = {
        let store = store.clone();
        tokio::task::spawn_blocking(move || crm_projection_runtime::current_rules(&store)).await??
    };
    rules.version += 1;
    let stage = rules.pipeline.stages.first().cloned().context("a pipeline without stages")?;
    *rules.stage_time_limits.entry(stage).or_insert(5) += 1;
    let changed = Event::RulesChanged(RulesChanged { rules, reason: "阶段时限调整 (bench)".into() });
    let appends = Generated { actor: "bench".into(), events: vec![changed] }.to_appends(&mut uuid::Uuid::now_v7);
    let result = store.append_many(appends, Durability::Durable).await?;
    Ok(result.last().map_or(0, |r| r.last_position))
}
