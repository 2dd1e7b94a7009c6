//! `crmctl`, the operator's command line for the CRM server.
//!
//! Online commands talk gRPC to a running `crm-server` with a bearer token; the offline ones
//! (`verify log --data-dir`, `restore`) work on a stopped server's data directory, because sled
//! lets one process at a time open a directory. Every subcommand lives in `cmd/`; the CSV
//! import (cleansing report, batches, resume) in `import/`.

mod client;
mod cmd;
mod import;
mod util;

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::client::Connection;

/// The operator's command line for the event-sourced CRM: status, rebuild, verify, history,
/// audit, import, export, backup, restore, tokens and rules.
#[derive(Debug, Parser)]
#[command(name = "crmctl", version)]
struct Opts {
    /// gRPC address of the server.
    #[arg(long, global = true, env = "CRM_SERVER", default_value = "http://127.0.0.1:50051")]
    server: String,
    /// Bearer token (`crm_<id>_<secret>`).
    #[arg(long, global = true, env = "CRM_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// File holding the bearer token (e.g. `<data-dir>/bootstrap-admin-token`).
    #[arg(long, global = true, env = "CRM_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Format {
    Table,
    Json,
    Csv,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Issue, revoke and list API tokens (administrators).
    #[command(subcommand)]
    Token(TokenCmd),
    /// The log head, every projection with its state and lag, and the intake sources.
    Status {
        #[arg(long, value_enum, default_value = "table", env = "CRM_FORMAT")]
        format: Format,
    },
    /// Verify the log's hash chain (`log`) or a projection against the log (its name).
    Verify(cmd::verify::VerifyArgs),
    /// Rebuild a projection from position 0 without downtime, with a progress bar.
    Rebuild {
        /// Projection name (see `crmctl status`).
        projection: String,
    },
    /// A customer's event timeline and its state now or as of a time or position.
    History(cmd::history::HistoryArgs),
    /// The operation log: who did what, when.
    Audit(cmd::audit::AuditArgs),
    /// Import customers from a CSV file (UTF-8 or GBK) through the command API.
    Import(import::ImportArgs),
    /// Export events (JSON Lines) or customers (CSV).
    #[command(subcommand)]
    Export(cmd::export::ExportCmd),
    /// Copy the running server's log into a new data directory (a consistent snapshot).
    Backup(cmd::backup::BackupArgs),
    /// Build a new data directory from a backup or a stopped server's data directory, up to
    /// a position or time (point-in-time restore).
    Restore(cmd::backup::RestoreArgs),
    /// Show or change the business rules (TOML).
    #[command(subcommand)]
    Rules(cmd::rules::RulesCmd),
    /// Intake sources: health, resume a paused source, quarantined records.
    #[command(subcommand)]
    Source(cmd::sources::SourceCmd),
}

#[derive(Debug, Subcommand)]
enum TokenCmd {
    /// Issue a token; its secret is printed once.
    Issue(cmd::tokens::IssueArgs),
    /// Revoke a token by id.
    Revoke {
        token_id: String,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// List tokens (no secrets), newest first.
    List {
        #[arg(long, value_enum, default_value = "table", env = "CRM_FORMAT")]
        format: Format,
    },
}

/// Common to commands that can write a file instead of stdout.
#[derive(Debug, Args)]
pub(crate) struct OutArg {
    /// Write here instead of standard output.
    #[arg(long, short = 'o')]
    pub(crate) out: Option<PathBuf>,
}

fn main() -> std::process::ExitCode {
    let opts = Opts::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build();
    let runtime = match runtime {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    match runtime.block_on(run(opts)) {
        Ok(code) => std::process::ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::from(1)
        }
    }
}

/// Runs one command; the exit code is 0, or 2 when a check found a problem (verify).
async fn run(opts: Opts) -> Result<u8> {
    let conn = Connection { server: opts.server, token: opts.token, token_file: opts.token_file };
    match opts.command {
        Command::Token(TokenCmd::Issue(args)) => cmd::tokens::issue(&conn, args).await,
        Command::Token(TokenCmd::Revoke { token_id, reason }) => cmd::tokens::revoke(&conn, token_id, reason).await,
        Command::Token(TokenCmd::List { format }) => cmd::tokens::list(&conn, format).await,
        Command::Status { format } => cmd::status::run(&conn, format).await,
        Command::Verify(args) => cmd::verify::run(&conn, args).await,
        Command::Rebuild { projection } => cmd::rebuild::run(&conn, projection).await,
        Command::History(args) => cmd::history::run(&conn, args).await,
        Command::Audit(args) => cmd::audit::run(&conn, args).await,
        Command::Import(args) => import::run(&conn, args).await,
        Command::Export(c) => cmd::export::run(&conn, c).await,
        Command::Backup(args) => cmd::backup::backup(&conn, args).await,
        Command::Restore(args) => cmd::backup::restore(args).await,
        Command::Rules(c) => cmd::rules::run(&conn, c).await,
        Command::Source(c) => cmd::sources::run(&conn, c).await,
    }
}
