//! `crmctl export events` (JSON Lines through `EventLog.ReadAll` paging) and `crmctl export
//! customers` (CSV through `Query.ListCustomers`, masked as the server masks for the caller).

use std::collections::BTreeSet;
use std::io::Write;

use anyhow::Result;
use clap::{Args, Subcommand};
use crm_proto::v1 as pb;
use indicatif::ProgressBar;

use crate::client::{status, Connection};
use crate::util::{format_ts, hex, micros};
use crate::OutArg;

#[derive(Debug, Subcommand)]
pub(crate) enum ExportCmd {
    /// Every event from a position, one JSON object per line (payload as JSON and as hex of
    /// the stored bytes, so `crmctl restore --from FILE.jsonl` can rebuild the log exactly).
    Events(EventsArgs),
    /// Customers as CSV, with the field masks the server applies to the caller.
    Customers(CustomersArgs),
}

#[derive(Debug, Args)]
pub(crate) struct EventsArgs {
    /// First position (inclusive).
    #[arg(long, default_value_t = 1)]
    from: u64,
    /// Last position (inclusive); default: the head when the export starts.
    #[arg(long)]
    to: Option<u64>,
    #[command(flatten)]
    out: OutArg,
}

#[derive(Debug, Args)]
pub(crate) struct CustomersArgs {
    #[arg(long, default_value = "")]
    region: String,
    #[arg(long, default_value = "")]
    owner: String,
    #[command(flatten)]
    out: OutArg,
}

/// One event as a JSON line; the inverse is [`super::backup::event_from_json`].
pub(crate) fn event_json(e: &pb::RecordedEvent) -> serde_json::Value {
    let m = e.metadata.clone().unwrap_or_default();
    serde_json::json!({
        "position": e.position,
        "stream": e.stream,
        "version": e.version,
        "event_id": e.event_id,
        "event_type": e.event_type,
        "schema_version": e.schema_version,
        "recorded_at": format_ts(e.recorded_at.as_ref()),
        "recorded_at_micros": e.recorded_at.as_ref().map_or(0, micros),
        "metadata": {
            "actor": m.actor, "correlation_id": m.correlation_id,
            "causation_id": m.causation_id, "source": m.source,
        },
        "payload": serde_json::from_str::<serde_json::Value>(&e.payload_json).unwrap_or(serde_json::Value::Null),
        "payload_hex": hex(&e.payload),
    })
}

/// Reads the log from `from` to `to` (inclusive) in pages of up to 1000, calling `page`.
pub(crate) async fn read_pages(
    conn: &Connection,
    from: u64,
    to: u64,
    mut page: impl FnMut(Vec<pb::RecordedEvent>) -> Result<()>,
) -> Result<()> {
    let mut log = conn.connect().await?.eventlog();
    let mut next = from.max(1);
    while next <= to {
        let limit = (to - next + 1).min(1000) as u32;
        let r = log
            .read_all(pb::ReadAllRequest { from_position: next, limit })
            .await
            .map_err(|s| status("EventLog.ReadAll", s))?
            .into_inner();
        if r.events.is_empty() {
            anyhow::bail!("the log ended at position {} before the requested {to}", next - 1);
        }
        let events: Vec<_> = r.events.into_iter().filter(|e| e.position <= to).collect();
        next = events.last().map_or(r.next_position, |e| e.position + 1);
        page(events)?;
    }
    Ok(())
}

pub(crate) async fn head(conn: &Connection) -> Result<u64> {
    Ok(conn
        .connect()
        .await?
        .eventlog()
        .get_head(pb::GetHeadRequest {})
        .await
        .map_err(|s| status("EventLog.GetHead", s))?
        .into_inner()
        .head)
}

pub(crate) async fn run(conn: &Connection, c: ExportCmd) -> Result<u8> {
    match c {
        ExportCmd::Events(a) => {
            let to = match a.to {
                Some(t) => t,
                None => head(conn).await?,
            };
            let mut out = super::output(a.out.out.as_deref())?;
            let bar = if a.out.out.is_some() { ProgressBar::new(to) } else { ProgressBar::hidden() };
            let mut n = 0u64;
            read_pages(conn, a.from, to, |events| {
                for e in &events {
                    writeln!(out, "{}", event_json(e))?;
                    bar.set_position(e.position);
                    n += 1;
                }
                Ok(())
            })
            .await?;
            out.flush()?;
            bar.finish_and_clear();
            eprintln!("exported {n} events ({}..={to})", a.from.max(1));
            Ok(0)
        }
        ExportCmd::Customers(a) => {
            // Read at least everything committed now: a customer created just before the
            // export is in it.
            let min_position = head(conn).await?;
            let mut query = conn.connect().await?.query();
            let mut customers = Vec::new();
            let mut cursor = String::new();
            let mut position = 0;
            loop {
                let r = query
                    .list_customers(pb::ListCustomersRequest {
                        owner_id: a.owner.clone(),
                        region: a.region.clone(),
                        page_size: 500,
                        cursor: cursor.clone(),
                        min_position,
                        ..Default::default()
                    })
                    .await
                    .map_err(|s| status("Query.ListCustomers", s))?
                    .into_inner();
                position = position.max(r.position);
                customers.extend(r.customers);
                if r.next_cursor.is_empty() {
                    break;
                }
                cursor = r.next_cursor;
            }
            let fields: BTreeSet<String> = customers.iter().flat_map(|c| c.fields.keys().cloned()).collect();
            let mut w = csv::Writer::from_writer(super::output(a.out.out.as_deref())?);
            let mut header: Vec<String> =
                ["id", "owner_id", "stage", "tags", "created_at", "updated_at", "contacts", "activities", "won_deals"]
                    .iter()
                    .map(|s| (*s).to_owned())
                    .collect();
            header.extend(fields.iter().cloned());
            w.write_record(&header)?;
            for c in &customers {
                let mut row = vec![
                    c.id.clone(),
                    c.owner_id.clone(),
                    c.stage.clone(),
                    c.tags.join(","),
                    format_ts(c.created_at.as_ref()),
                    format_ts(c.updated_at.as_ref()),
                    c.contacts.to_string(),
                    c.activities.to_string(),
                    c.won_deals.to_string(),
                ];
                row.extend(fields.iter().map(|f| c.fields.get(f).cloned().unwrap_or_default()));
                w.write_record(&row)?;
            }
            w.flush()?;
            eprintln!("exported {} customers as of position {position}", customers.len());
            Ok(0)
        }
    }
}
