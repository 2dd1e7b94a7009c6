//! Load generator for commands through gRPC.
//!
//! ```sh
//! cargo run --release -p crm-server -- --data-dir /tmp/crm-bench &
//! cargo run --release -p crm-benches --bin command-load -- --clients 64 --commands 100000 \
//!     --admin-token-file /tmp/crm-bench/bootstrap-admin-token
//! ```
//!
//! Each client gets its own token (as real clients would; limits are per token) and its own
//! HTTP/2 connection, and sends `CaptureLead` commands one after another, each acknowledged
//! only when durable. The last line printed is one JSON object with the results.

/// mimalloc instead of glibc malloc: see the allocator note in docs/PERFORMANCE.md.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use clap::Parser;
use crm_proto::v1 as pb;
use hdrhistogram::Histogram;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;

/// CaptureLead load through gRPC.
#[derive(Debug, Parser)]
struct Options {
    /// Server address.
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    server: String,
    /// A file holding an administrator token (to issue one token per client).
    #[arg(long)]
    admin_token_file: PathBuf,
    /// Concurrent clients.
    #[arg(long, default_value_t = 64)]
    clients: u64,
    /// Total commands (ignored with --seconds).
    #[arg(long, default_value_t = 100_000)]
    commands: u64,
    /// Run for this many seconds instead of a fixed number of commands.
    #[arg(long)]
    seconds: Option<u64>,
    /// Target rate in commands per second over all clients; 0: as fast as acknowledgements allow.
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Append `<stream> <position>` for every acknowledged command to this file, for
    /// `verify-acked` after a crash test.
    #[arg(long)]
    acked_out: Option<PathBuf>,
}

fn request(client: u64, n: u64, run: &str) -> pb::CaptureLeadRequest {
    let i = client * 1_000_000 + n;
    pb::CaptureLeadRequest {
        options: Some(pb::CommandOptions {
            actor: format!("loadgen-{client}"),
            // A retry after a failure (a killed server, say) is deduplicated by the log.
            idempotency_key: format!("{run}-{client}-{n}"),
            ..Default::default()
        }),
        name: format!("联系人{}", i % 997),
        company: format!("苏州测试{}精密机械有限公司", i % 50_000),
        phone: format!("+86 139 {:04} {:04}", 1000 + (i / 9000) % 9000, 1000 + i % 9000),
        channel: pb::LeadChannel::ExhibitionScan as i32,
        exhibition_id: "EXPO-2026-SH".into(),
        booth: format!("B{}", i % 400),
        source: "exhibition_scan".into(),
        ..Default::default()
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    crm_eventlog::memory::disable_transparent_huge_pages();
    let o = Options::parse();
    let admin = std::fs::read_to_string(&o.admin_token_file).context("reading the admin token")?.trim().to_owned();
    let channel = Channel::from_shared(o.server.clone())?.connect().await.context("connecting")?;
    let bearer = |token: &str| -> MetadataValue<tonic::metadata::Ascii> { format!("Bearer {token}").parse().unwrap() };
    let mut tokens_client = pb::tokens_client::TokensClient::new(channel);
    let mut tokens = Vec::new();
    for c in 0..o.clients {
        let mut req = tonic::Request::new(pb::IssueTokenRequest {
            user_id: format!("loadgen-{c}"),
            role: "operations_director".into(),
            ttl_days: 1,
            label: "command-load".into(),
            ..Default::default()
        });
        req.metadata_mut().insert("authorization", bearer(&admin));
        tokens.push(tokens_client.issue_token(req).await?.into_inner().token);
    }
    let per_client = o.commands / o.clients;
    let run = format!("{:x}", std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis());
    let until = o.seconds.map(|s| Instant::now() + std::time::Duration::from_secs(s));
    let interval = (o.rate > 0.0).then(|| std::time::Duration::from_secs_f64(o.clients as f64 / o.rate));
    let (acked_tx, mut acked_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let writer = o.acked_out.clone().map(|path| {
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            use std::io::Write;
            let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
            while let Some(line) = acked_rx.blocking_recv() {
                writeln!(f, "{line}")?;
            }
            f.flush()
        })
    });
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (c, token) in tokens.into_iter().enumerate() {
        let endpoint = Channel::from_shared(o.server.clone())?;
        let auth = bearer(&token);
        let run = run.clone();
        let acked_tx = acked_tx.clone();
        tasks.push(tokio::spawn(async move {
            let channel = endpoint.connect_lazy();
            let mut client = pb::command_service_client::CommandServiceClient::new(channel);
            let mut hist = Histogram::<u64>::new(3).expect("histogram");
            let mut errors = 0u64;
            let mut ticker = interval.map(|i| {
                let mut t = tokio::time::interval(i);
                t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                t
            });
            let mut n = 0;
            loop {
                match until {
                    Some(until) if Instant::now() >= until => break,
                    None if n >= per_client => break,
                    _ => {}
                }
                if let Some(t) = ticker.as_mut() {
                    t.tick().await;
                }
                let t = Instant::now();
                // Retry the same command (same idempotency key) until it is acknowledged.
                loop {
                    let mut req = tonic::Request::new(request(c as u64, n, &run));
                    req.metadata_mut().insert("authorization", auth.clone());
                    match client.capture_lead(req).await {
                        Ok(r) => {
                            let r = r.into_inner();
                            hist.record((t.elapsed().as_micros() as u64).max(1)).expect("record");
                            let _ = acked_tx.send(format!("{} {}", r.stream, r.position));
                            break;
                        }
                        Err(e) => {
                            errors += 1;
                            if errors < 3 {
                                eprintln!("client {c}: {e}");
                            }
                            if until.is_some_and(|u| Instant::now() >= u + std::time::Duration::from_secs(30)) {
                                break;
                            }
                            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        }
                    }
                }
                n += 1;
            }
            (hist, errors)
        }));
    }
    drop(acked_tx);
    let mut hist = Histogram::<u64>::new(3)?;
    let mut errors = 0;
    for t in tasks {
        let (h, e) = t.await?;
        hist.add(h)?;
        errors += e;
    }
    let elapsed = started.elapsed();
    if let Some(w) = writer {
        w.await??;
    }
    let ok = hist.len();
    let json = serde_json::json!({
        "clients": o.clients,
        "commands": ok,
        "errors_retried": errors,
        "target_rate": o.rate,
        "seconds": elapsed.as_secs_f64(),
        "commands_per_sec": (ok as f64 / elapsed.as_secs_f64()).round(),
        "p50_us": hist.value_at_quantile(0.50),
        "p99_us": hist.value_at_quantile(0.99),
        "p999_us": hist.value_at_quantile(0.999),
    });
    println!("{json}");
    Ok(())
}
