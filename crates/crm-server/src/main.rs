//! `crm-server`: the CRM backend. With no flags it listens on 127.0.0.1:50051 and keeps its
//! data in `./data`.

/// mimalloc instead of glibc malloc: see the allocator note in docs/PERFORMANCE.md.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;
use crm_server::config::{Config, FileConfig};

/// The event-sourced CRM backend: gRPC on an embedded sled event log.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Options {
    /// Address to listen on [default: 127.0.0.1:50051]; port 0 picks a free port.
    #[arg(long, env = "CRM_LISTEN")]
    listen: Option<SocketAddr>,
    /// Data directory for the event log and read models [default: ./data].
    #[arg(long, env = "CRM_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Optional TOML config file (keys: listen, data_dir, max_request_bytes, rate_limit_per_sec,
    /// rate_limit_burst, max_concurrent_per_token, tls_cert, tls_key, escalation_after_days,
    /// projection_live_interval_ms); flags
    /// win.
    #[arg(long, env = "CRM_CONFIG")]
    config: Option<PathBuf>,
    /// PEM certificate chain for TLS (with --tls-key); plaintext gRPC when absent.
    #[arg(long, env = "CRM_TLS_CERT")]
    tls_cert: Option<PathBuf>,
    /// PEM private key for TLS (with --tls-cert).
    #[arg(long, env = "CRM_TLS_KEY")]
    tls_key: Option<PathBuf>,
    /// Log filter in tracing's EnvFilter syntax.
    #[arg(long, env = "CRM_LOG", default_value = "info")]
    log: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    crm_eventlog::memory::disable_transparent_huge_pages();
    let options = Options::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(&options.log))
        .with_writer(std::io::stderr)
        .init();
    let file = match &options.config {
        Some(path) => FileConfig::load(path)?,
        None => FileConfig::default(),
    };
    let config = Config::resolve_with_tls(file, options.listen, options.data_dir, options.tls_cert, options.tls_key)?;
    crm_server::run(config, shutdown_signal()).await
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
