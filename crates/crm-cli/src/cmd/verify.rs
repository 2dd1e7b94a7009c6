//! `crmctl verify log` (hash chain and checksums: `Audit.VerifyLog`, or offline on a data
//! directory) and `crmctl verify <projection>` (`Admin.VerifyProjection`).

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
    /// `log`, the name of a projection, or `all` (every projection).
    target: String,
    /// For `log`: verify the log of this data directory (a stopped server's, or a backup)
    /// instead of asking the running server (`Audit.VerifyLog`).
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
        if let Some(dir) = args.data_dir {
            let v = tokio::task::spawn_blocking(move || verify_log_offline(&dir, true)).await??;
            return Ok(log_outcome(v.verified, v.head, v.first_broken));
        }
        let r = conn
            .connect()
            .await?
            .audit()
            .verify_log(pb::VerifyLogRequest {})
            .await
            .map_err(|s| status("Audit.VerifyLog", s))?
            .into_inner();
        let broken = (!r.intact).then_some((r.first_broken_position, r.detail));
        return Ok(log_outcome(r.verified, r.head, broken));
    }
    let mut admin = conn.connect().await?.admin();
    let names = if args.target == "all" {
        admin
            .list_projections(pb::ListProjectionsRequest {})
            .await
            .map_err(|s| status("Admin.ListProjections", s))?
            .into_inner()
            .projections
            .into_iter()
            .map(|p| p.name)
            .collect()
    } else {
        vec![args.target.clone()]
    };
    let mut code = 0;
    for name in names {
        let r = admin
            .verify_projection(pb::VerifyProjectionRequest { name })
            .await
            .map_err(|s| status("Admin.VerifyProjection", s))?
            .into_inner();
        code = code.max(report(r, args.show));
    }
    Ok(code)
}

fn report(r: pb::VerifyProjectionResponse, show: usize) -> u8 {
    if r.total_differences == 0 {
        println!("{} ok: {} keys equal a rebuild from the log at position {}", r.name, r.keys_compared, r.position);
        return 0;
    }
    println!(
        "{} DIFFERS from a rebuild at position {}: {} of {} keys",
        r.name, r.position, r.total_differences, r.keys_compared
    );
    let rows: Vec<Vec<String>> = r
        .differences
        .iter()
        .take(show)
        .map(|d| {
            vec![
                d.key.clone(),
                d.expected.clone().unwrap_or_else(|| "(absent)".into()),
                d.actual.clone().unwrap_or_else(|| "(absent)".into()),
            ]
        })
        .collect();
    print!("{}", table(&["KEY", "EXPECTED", "STORED"], &rows));
    2
}

fn log_outcome(verified: u64, head: u64, broken: Option<(u64, String)>) -> u8 {
    match broken {
        None => {
            println!("log ok: {verified} events verified, head {head}");
            0
        }
        Some((position, detail)) => {
            println!("log BROKEN at position {position}: {detail} ({verified} events verified before it)");
            2
        }
    }
}
