//! `crmctl source list|resume|quarantined`: intake sources (`crm.v1.Intake`).

use anyhow::Result;
use clap::Subcommand;
use crm_proto::v1 as pb;

use crate::client::{status, Connection};
use crate::util::{format_micros, table};

#[derive(Debug, Subcommand)]
pub(crate) enum SourceCmd {
    /// Every source with its breaker state, success rate and last success.
    List,
    /// Close a paused source's breaker (recorded as `SourceResumed`); fix the cause first.
    Resume { source: String },
    /// Records held in quarantine, with the rule each failed.
    Quarantined {
        /// Only this source.
        #[arg(long, default_value = "")]
        source: String,
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
}

pub(crate) async fn run(conn: &Connection, c: SourceCmd) -> Result<u8> {
    let mut intake = conn.connect().await?.intake();
    match c {
        SourceCmd::List => {
            let r = intake
                .get_source_health(pb::GetSourceHealthRequest { source: String::new() })
                .await
                .map_err(|s| status("Intake.GetSourceHealth", s))?
                .into_inner();
            let rows: Vec<Vec<String>> = r
                .sources
                .iter()
                .map(|s| {
                    vec![
                        s.source.clone(),
                        if s.paused { format!("PAUSED: {}", s.paused_reason) } else { "running".into() },
                        s.batches.to_string(),
                        s.failed_batches.to_string(),
                        s.consecutive_failures.to_string(),
                        s.records_applied.to_string(),
                        s.records_quarantined.to_string(),
                        format_micros(s.last_success_micros),
                    ]
                })
                .collect();
            print!(
                "{}",
                table(
                    &["SOURCE", "STATE", "BATCHES", "FAILED", "CONSECUTIVE", "APPLIED", "QUARANTINED", "LAST_SUCCESS"],
                    &rows
                )
            );
        }
        SourceCmd::Resume { source } => {
            let r = intake
                .resume_source(pb::ResumeSourceRequest { source: source.clone() })
                .await
                .map_err(|s| status("Intake.ResumeSource", s))?
                .into_inner();
            println!("resumed {source} at position {}", r.position);
        }
        SourceCmd::Quarantined { source, limit } => {
            let r = intake
                .list_quarantined(pb::ListQuarantinedRequest { source, limit })
                .await
                .map_err(|s| status("Intake.ListQuarantined", s))?
                .into_inner();
            let rows: Vec<Vec<String>> = r
                .records
                .iter()
                .map(|q| {
                    vec![
                        q.id.clone(),
                        q.source.clone(),
                        q.external_id.clone(),
                        format_micros(q.at_micros),
                        q.errors.iter().map(|e| format!("{}: {}", e.field, e.rule)).collect::<Vec<_>>().join("; "),
                    ]
                })
                .collect();
            print!("{}", table(&["ID", "SOURCE", "EXTERNAL_ID", "AT", "ERRORS"], &rows));
        }
    }
    Ok(0)
}
