//! `crmctl history <customer>`: the timeline (`Audit.GetCustomerHistory`) and the state now or
//! as of a time or position (`Audit.GetCustomerAsOf`). Against a server without the Audit
//! service, the customer's own stream is read through `EventLog.ReadStream` instead.

use anyhow::Result;
use clap::Args;
use crm_proto::v1 as pb;

use crate::client::{status, unimplemented, Clients, Connection};
use crate::util::{format_ts, micros, parse_time, table, timestamp};
use crate::Format;

#[derive(Debug, Args)]
pub(crate) struct HistoryArgs {
    /// Customer id (UUID).
    customer: String,
    /// A log position (digits) or a time (RFC 3339, or `YYYY-MM-DD[ HH:MM[:SS]]` in China
    /// Standard Time): show the timeline up to it and the customer as it was then.
    #[arg(long)]
    as_of: Option<String>,
    #[arg(long, value_enum, default_value = "table", env = "CRM_FORMAT")]
    format: Format,
}

enum AsOf {
    Position(u64),
    Time(i64),
}

struct Entry {
    position: u64,
    recorded_at: Option<prost_types::Timestamp>,
    event_type: String,
    actor: String,
    stream: String,
    payload_json: String,
}

/// The customer's history as of `min_position` at least (the log head when the command
/// started, so an operator sees the write they just made).
async fn timeline(clients: &Clients, customer: &str, min_position: u64) -> Result<Vec<Entry>> {
    let r = clients
        .audit()
        .get_customer_history(pb::GetCustomerHistoryRequest { min_position, customer_id: customer.to_owned() })
        .await;
    match r {
        Ok(r) => Ok(r
            .into_inner()
            .entries
            .into_iter()
            .map(|e| {
                let op = e.operation.unwrap_or_default();
                Entry {
                    position: op.position,
                    recorded_at: op.recorded_at,
                    event_type: op.event_type,
                    actor: op.actor,
                    stream: op.stream,
                    payload_json: e.payload_json,
                }
            })
            .collect()),
        Err(s) if unimplemented(&s) => {
            // Fallback: the customer's own stream only (no merged customers, no opportunities).
            let mut out = Vec::new();
            let mut from = Some(0);
            while let Some(version) = from {
                let r = clients
                    .eventlog()
                    .read_stream(pb::ReadStreamRequest {
                        stream: format!("customer-{customer}"),
                        from_version: Some(version),
                        direction: pb::ReadDirection::Forwards as i32,
                        limit: 1000,
                    })
                    .await
                    .map_err(|s| status("EventLog.ReadStream", s))?
                    .into_inner();
                from = (r.events.len() == 1000).then(|| version + 1000);
                out.extend(r.events.into_iter().map(|e| Entry {
                    position: e.position,
                    recorded_at: e.recorded_at,
                    event_type: e.event_type,
                    actor: e.metadata.map(|m| m.actor).unwrap_or_default(),
                    stream: e.stream,
                    payload_json: e.payload_json,
                }));
            }
            Ok(out)
        }
        Err(s) => Err(status("Audit.GetCustomerHistory", s)),
    }
}

pub(crate) async fn run(conn: &Connection, args: HistoryArgs) -> Result<u8> {
    let clients = conn.connect().await?;
    let as_of = match args.as_of.as_deref() {
        None => None,
        Some(t) if !t.is_empty() && t.chars().all(|c| c.is_ascii_digit()) => Some(AsOf::Position(t.parse()?)),
        Some(t) => Some(AsOf::Time(parse_time(t)?)),
    };
    let head = super::export::head(conn).await?;
    let mut entries = timeline(&clients, &args.customer, head).await?;
    if let Some(a) = &as_of {
        entries.retain(|e| match a {
            AsOf::Position(p) => e.position <= *p,
            AsOf::Time(t) => e.recorded_at.as_ref().map_or(0, micros) <= *t,
        });
    }
    let snapshot = clients
        .audit()
        .get_customer_as_of(pb::GetCustomerAsOfRequest {
            customer_id: args.customer.clone(),
            as_of: Some(match as_of {
                Some(AsOf::Position(p)) => pb::get_customer_as_of_request::AsOf::Position(p),
                Some(AsOf::Time(t)) => pb::get_customer_as_of_request::AsOf::Time(timestamp(t)),
                None => pb::get_customer_as_of_request::AsOf::Position(u64::MAX),
            }),
        })
        .await;
    let snapshot = match snapshot {
        Ok(r) => Some(r.into_inner()),
        Err(s) if unimplemented(&s) => None,
        Err(s) => return Err(status("Audit.GetCustomerAsOf", s)),
    };
    if args.format == Format::Json {
        let value = serde_json::json!({
            "customer_id": args.customer,
            "events": entries.iter().map(|e| serde_json::json!({
                "position": e.position,
                "recorded_at": format_ts(e.recorded_at.as_ref()),
                "event_type": e.event_type,
                "actor": e.actor,
                "stream": e.stream,
                "payload": serde_json::from_str::<serde_json::Value>(&e.payload_json).unwrap_or(serde_json::Value::Null),
            })).collect::<Vec<_>>(),
            "state": snapshot.as_ref().map(|s| serde_json::json!({
                "exists": s.exists,
                "position": s.position,
                "recorded_at": format_ts(s.recorded_at.as_ref()),
                "customer": s.customer.as_ref().map(|c| serde_json::json!({
                    "id": c.id, "fields": c.fields, "owner_id": c.owner_id, "from_lead_id": c.from_lead_id,
                    "absorbed_into": c.absorbed_into, "merged": c.merged, "contacts": c.contacts,
                    "activities": c.activities, "won_deals": c.won_deals,
                })),
            })),
        });
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(0);
    }
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|e| {
            vec![
                e.position.to_string(),
                format_ts(e.recorded_at.as_ref()),
                e.event_type.clone(),
                e.actor.clone(),
                e.stream.clone(),
                summary(&e.payload_json),
            ]
        })
        .collect();
    print!("{}", table(&["POSITION", "RECORDED_AT", "EVENT", "ACTOR", "STREAM", "CHANGES"], &rows));
    match snapshot {
        None => println!("\nstate: the server has no Audit service"),
        Some(s) if !s.exists => println!("\nstate: the customer did not exist at that point"),
        Some(s) => {
            let c = s.customer.unwrap_or_default();
            println!("\nstate as of position {} ({})", s.position, format_ts(s.recorded_at.as_ref()));
            let mut rows: Vec<Vec<String>> = c.fields.iter().map(|(k, v)| vec![k.clone(), v.clone()]).collect();
            rows.sort();
            for (k, v) in [
                ("owner", c.owner_id),
                ("absorbed_into", c.absorbed_into),
                ("merged", c.merged.join(",")),
                ("contacts", c.contacts.to_string()),
                ("activities", c.activities.to_string()),
                ("won_deals", c.won_deals.to_string()),
            ] {
                if !v.is_empty() {
                    rows.push(vec![k.to_owned(), v]);
                }
            }
            print!("{}", table(&["FIELD", "VALUE"], &rows));
        }
    }
    Ok(0)
}

/// The first 80 characters of the payload's inner object, for the table.
fn summary(payload_json: &str) -> String {
    let inner = serde_json::from_str::<serde_json::Value>(payload_json)
        .ok()
        .and_then(|v| v.as_object().and_then(|o| o.values().next().cloned()))
        .map(|v| v.to_string())
        .unwrap_or_else(|| payload_json.to_owned());
    let mut s: String = inner.chars().take(80).collect();
    if inner.chars().count() > 80 {
        s.push('…');
    }
    s
}
