//! `crmctl audit`: the operation log (`Audit.ListOperations`) as a table, CSV or JSON Lines.

use std::io::Write;

use anyhow::Result;
use clap::Args;
use crm_proto::v1 as pb;

use crate::client::{status, Connection};
use crate::util::{format_ts, parse_time, table, timestamp};
use crate::{Format, OutArg};

#[derive(Debug, Args)]
pub(crate) struct AuditArgs {
    /// Only operations by this actor (user id).
    #[arg(long, default_value = "")]
    actor: String,
    /// From this time, inclusive (RFC 3339 or `YYYY-MM-DD[ HH:MM]` in China Standard Time).
    #[arg(long)]
    from: Option<String>,
    /// Up to this time, exclusive.
    #[arg(long)]
    to: Option<String>,
    /// Only this event type (e.g. `CustomersMerged`).
    #[arg(long, default_value = "")]
    op: String,
    /// Only this stream (e.g. `customer-<id>`).
    #[arg(long, default_value = "")]
    stream: String,
    /// Stop after this many operations (0: all).
    #[arg(long, default_value_t = 0)]
    limit: usize,
    #[arg(long, value_enum, default_value = "table", env = "CRM_FORMAT")]
    format: Format,
    #[command(flatten)]
    out: OutArg,
}

pub(crate) async fn run(conn: &Connection, a: AuditArgs) -> Result<u8> {
    let mut audit = conn.connect().await?.audit();
    let from = a.from.as_deref().map(parse_time).transpose()?.map(timestamp);
    let to = a.to.as_deref().map(parse_time).transpose()?.map(timestamp);
    let mut ops = Vec::new();
    let mut after = 0;
    // Everything committed when the command started is listed (read-your-writes).
    let head = super::export::head(conn).await?;
    loop {
        let r = audit
            .list_operations(pb::ListOperationsRequest {
                min_position: head,
                actor: a.actor.clone(),
                event_type: a.op.clone(),
                stream: a.stream.clone(),
                from,
                to,
                after_position: after,
                page_size: 1000,
            })
            .await
            .map_err(|s| status("Audit.ListOperations", s))?
            .into_inner();
        ops.extend(r.operations);
        if r.next_after_position == 0 || (a.limit > 0 && ops.len() >= a.limit) {
            break;
        }
        after = r.next_after_position;
    }
    if a.limit > 0 {
        ops.truncate(a.limit);
    }
    let rows: Vec<Vec<String>> = ops
        .iter()
        .map(|o| {
            vec![
                o.position.to_string(),
                format_ts(o.recorded_at.as_ref()),
                o.actor.clone(),
                o.event_type.clone(),
                o.stream.clone(),
                o.source.clone(),
                o.correlation_id.clone(),
            ]
        })
        .collect();
    let headers = ["position", "recorded_at", "actor", "operation", "stream", "source", "correlation_id"];
    let mut out = super::output(a.out.out.as_deref())?;
    match a.format {
        Format::Table => {
            let upper: Vec<String> = headers.iter().map(|h| h.to_uppercase()).collect();
            let upper: Vec<&str> = upper.iter().map(String::as_str).collect();
            write!(out, "{}", table(&upper, &rows))?;
        }
        Format::Csv => {
            let mut w = csv::Writer::from_writer(out);
            w.write_record(headers)?;
            for row in &rows {
                w.write_record(row)?;
            }
            w.flush()?;
            return Ok(0);
        }
        Format::Json => {
            for row in &rows {
                let obj: serde_json::Map<String, serde_json::Value> = headers
                    .iter()
                    .zip(row)
                    .map(|(h, v)| ((*h).to_owned(), serde_json::Value::from(v.as_str())))
                    .collect();
                writeln!(out, "{}", serde_json::Value::Object(obj))?;
            }
        }
    }
    out.flush()?;
    Ok(0)
}
