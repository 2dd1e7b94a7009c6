//! `crmctl status`: head, projections with lag (Admin), intake sources (Intake).

use anyhow::Result;
use crm_proto::v1 as pb;

use crate::client::{status, unimplemented, Connection};
use crate::util::{format_micros, table};
use crate::Format;

pub(crate) fn state_name(state: i32) -> &'static str {
    match pb::ProjectionState::try_from(state) {
        Ok(pb::ProjectionState::Live) => "live",
        Ok(pb::ProjectionState::Rebuilding) => "rebuilding",
        Ok(pb::ProjectionState::Failed) => "failed",
        _ => "unknown",
    }
}

pub(crate) async fn run(conn: &Connection, format: Format) -> Result<u8> {
    let clients = conn.connect().await?;
    let head = clients
        .eventlog()
        .get_head(pb::GetHeadRequest {})
        .await
        .map_err(|s| status("EventLog.GetHead", s))?
        .into_inner()
        .head;
    let projections = match clients.admin().list_projections(pb::ListProjectionsRequest {}).await {
        Ok(r) => Some(r.into_inner().projections),
        Err(s) if unimplemented(&s) => None,
        Err(s) => return Err(status("Admin.ListProjections", s)),
    };
    let sources = match clients.intake().get_source_health(pb::GetSourceHealthRequest { source: String::new() }).await {
        Ok(r) => Some(r.into_inner().sources),
        // Not every token may read intake health; the status still shows the rest.
        Err(s) if unimplemented(&s) || s.code() == tonic::Code::PermissionDenied => None,
        Err(s) => return Err(status("Intake.GetSourceHealth", s)),
    };
    if format == Format::Json {
        let value = serde_json::json!({
            "head": head,
            "projections": projections.as_ref().map(|ps| ps.iter().map(|p| serde_json::json!({
                "name": p.name, "version": p.version, "state": state_name(p.state), "position": p.position,
                "head": p.head, "lag_events": p.lag_events, "lag_seconds": p.lag_seconds,
                "rules_version": p.rules_version, "fingerprint": p.fingerprint,
                "failed_position": p.failed_position, "failure": p.failure,
                "rebuilds_completed": p.rebuilds_completed,
                "frozen": p.frozen,
            })).collect::<Vec<_>>()),
            "sources": sources.as_ref().map(|ss| ss.iter().map(|s| serde_json::json!({
                "source": s.source, "paused": s.paused, "paused_reason": s.paused_reason,
                "batches": s.batches, "success_rate": s.success_rate,
                "records_applied": s.records_applied, "records_quarantined": s.records_quarantined,
                "last_success": format_micros(s.last_success_micros),
            })).collect::<Vec<_>>()),
        });
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(0);
    }
    println!("server  {}", conn.server);
    println!("head    {head}");
    match projections {
        None => println!("\nprojections: the server has no Admin service"),
        Some(ps) => {
            let rows: Vec<Vec<String>> = ps
                .iter()
                .map(|p| {
                    let mut state = state_name(p.state).to_owned();
                    if let Some(shadow) = p.shadow.as_ref().filter(|s| !s.finished && p.state == 2) {
                        state = format!("rebuilding {}/{}", shadow.done, shadow.total);
                    }
                    if p.frozen {
                        state.push_str(" (old version frozen until the swap)");
                    }
                    if p.state == pb::ProjectionState::Failed as i32 {
                        state = format!("failed at {}: {}", p.failed_position, p.failure);
                    }
                    vec![
                        p.name.clone(),
                        p.version.to_string(),
                        p.position.to_string(),
                        p.lag_events.to_string(),
                        format!("{:.1}", p.lag_seconds),
                        p.rules_version.to_string(),
                        state,
                    ]
                })
                .collect();
            println!();
            print!("{}", table(&["PROJECTION", "VERSION", "POSITION", "LAG", "LAG_S", "RULES", "STATE"], &rows));
        }
    }
    match sources {
        None => println!("\nsources: not available (no Intake service, or the token may not read it)"),
        Some(ss) if ss.is_empty() => println!("\nsources: none"),
        Some(ss) => {
            let rows: Vec<Vec<String>> = ss
                .iter()
                .map(|s| {
                    vec![
                        s.source.clone(),
                        if s.paused { format!("paused: {}", s.paused_reason) } else { "running".into() },
                        s.batches.to_string(),
                        format!("{:.1}%", s.success_rate * 100.0),
                        s.records_applied.to_string(),
                        s.records_quarantined.to_string(),
                        format_micros(s.last_success_micros),
                    ]
                })
                .collect();
            println!();
            print!(
                "{}",
                table(&["SOURCE", "STATE", "BATCHES", "SUCCESS", "APPLIED", "QUARANTINED", "LAST_SUCCESS"], &rows)
            );
        }
    }
    Ok(0)
}
