//! `crmctl verify log` (hash chain; offline on a data directory, or online through a backup
//! copy) and `crmctl verify <projection>` (`Admin.VerifyProjection`).

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use crm_eventlog::{Config, SledEventStore};
use crm_proto::v1 as pb;
use indicatif::{ProgressBar, ProgressStyle};

use crate::client::{status, Connection};
use crate::util::table;

#[derive(Debug, Args)]
pub(crate) struct VerifyArgs {
    /// `log`, or the name of a projection.
    target: String,
    /// For `log`: the data directory of a stopped server (or a backup). Without it, `verify
    /// log` asks the running server (not available yet: the server has no VerifyLog RPC).
    #[arg(long, env = "CRM_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Print at most this many differences.
    #[arg(long, default_value_t = 20)]
    show: usize,
}

/// Verifies the hash chain of the log in `<data_dir>/eventlog`; returns (verified, head, broken).
pub(crate) fn verify_log_offline(data_dir: &std::path::Path, bar: bool) -> Result<crm_eventlog::LogVerification> {
    let path = data_dir.join("eventlog");
    if !path.exists() {
        anyhow::bail!("{} has no event log (expected {})", data_dir.display(), path.display());
    }
    let store = SledEventStore::open(Config::new(&path))
        .with_context(|| format!("opening {} (is a server still running on it?)", path.display()))?;
    let progress = if bar { ProgressBar::new(store.committed_head()) } else { ProgressBar::hidden() };
    progress.set_style(ProgressStyle::with_template("verify log [{bar:40}] {pos}/{len}").expect("valid template"));
    let result = store.verify_log(|done, head| {
        progress.set_length(head);
        progress.set_position(done);
    });
    progress.finish_and_clear();
    store.close();
    Ok(result?)
}

pub(crate) async fn run(conn: &Connection, args: VerifyArgs) -> Result<u8> {
    if args.target == "log" {
        let Some(dir) = args.data_dir else {
            anyhow::bail!(
                "verify log needs --data-dir: the server has no Audit.VerifyLog RPC yet; run it on a stopped \
                 server's data directory, or on a copy made with `crmctl backup`"
            );
        };
        let v = tokio::task::spawn_blocking(move || verify_log_offline(&dir, true)).await??;
        return Ok(match v.first_broken {
            None => {
                println!("log ok: {} events verified, head {}", v.verified, v.head);
                0
            }
            Some((position, detail)) => {
                println!("log BROKEN at position {position}: {detail} ({} events verified before it)", v.verified);
                2
            }
        });
    }
    let r = conn
        .connect()
        .await?
        .admin()
        .verify_projection(pb::VerifyProjectionRequest { name: args.target.clone() })
        .await
        .map_err(|s| status("Admin.VerifyProjection", s))?
        .into_inner();
    if r.total_differences == 0 {
        println!("{} ok: {} keys equal a rebuild from the log at position {}", r.name, r.keys_compared, r.position);
        return Ok(0);
    }
    println!(
        "{} DIFFERS from a rebuild at position {}: {} of {} keys",
        r.name, r.position, r.total_differences, r.keys_compared
    );
    let rows: Vec<Vec<String>> = r
        .differences
        .iter()
        .take(args.show)
        .map(|d| {
            vec![
                d.key.clone(),
                d.expected.clone().unwrap_or_else(|| "(absent)".into()),
                d.actual.clone().unwrap_or_else(|| "(absent)".into()),
            ]
        })
        .collect();
    print!("{}", table(&["KEY", "EXPECTED", "STORED"], &rows));
    Ok(2)
}
