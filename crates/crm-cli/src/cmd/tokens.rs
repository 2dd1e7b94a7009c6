//! `crmctl token issue|revoke|list` over `crm.v1.Tokens`.

use anyhow::Result;
use clap::Args;
use crm_proto::v1 as pb;

use crate::client::{status, Connection};
use crate::util::{format_micros, table};
use crate::Format;

#[derive(Debug, Args)]
pub(crate) struct IssueArgs {
    /// The user the token acts as (recorded as the actor of its commands).
    #[arg(long)]
    user: String,
    /// sales_rep, regional_manager, operations_director, auditor or administrator.
    #[arg(long)]
    role: String,
    /// Required for regional_manager.
    #[arg(long, default_value = "")]
    region: String,
    /// Lifetime in days (server default 90).
    #[arg(long, default_value_t = 0)]
    ttl_days: u32,
    #[arg(long, default_value = "")]
    label: String,
}

pub(crate) async fn issue(conn: &Connection, a: IssueArgs) -> Result<u8> {
    let r = conn
        .connect()
        .await?
        .tokens()
        .issue_token(pb::IssueTokenRequest {
            user_id: a.user,
            role: a.role,
            region: a.region,
            ttl_days: a.ttl_days,
            label: a.label,
        })
        .await
        .map_err(|s| status("IssueToken", s))?
        .into_inner();
    // The secret goes to stdout alone, so `TOKEN=$(crmctl token issue ...)` works.
    println!("{}", r.token);
    if let Some(i) = r.info {
        eprintln!(
            "issued token {} for {} ({}), expires {}",
            i.token_id,
            i.user_id,
            i.role,
            format_micros(i.expires_at_unix_micros)
        );
    }
    Ok(0)
}

pub(crate) async fn revoke(conn: &Connection, token_id: String, reason: String) -> Result<u8> {
    conn.connect()
        .await?
        .tokens()
        .revoke_token(pb::RevokeTokenRequest { token_id: token_id.clone(), reason })
        .await
        .map_err(|s| status("RevokeToken", s))?;
    println!("revoked {token_id}");
    Ok(0)
}

pub(crate) async fn list(conn: &Connection, format: Format) -> Result<u8> {
    let r = conn
        .connect()
        .await?
        .tokens()
        .list_tokens(pb::ListTokensRequest {})
        .await
        .map_err(|s| status("ListTokens", s))?
        .into_inner();
    if format == Format::Json {
        let rows: Vec<_> = r
            .tokens
            .iter()
            .map(|t| {
                serde_json::json!({
                    "token_id": t.token_id, "user_id": t.user_id, "role": t.role, "region": t.region,
                    "label": t.label, "issued_by": t.issued_by,
                    "issued_at": format_micros(t.issued_at_unix_micros),
                    "expires_at": format_micros(t.expires_at_unix_micros),
                    "revoked_at": format_micros(t.revoked_at_unix_micros),
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(0);
    }
    let rows: Vec<Vec<String>> = r
        .tokens
        .iter()
        .map(|t| {
            vec![
                t.token_id.clone(),
                t.user_id.clone(),
                t.role.clone(),
                t.region.clone(),
                t.label.clone(),
                format_micros(t.expires_at_unix_micros),
                if t.revoked_at_unix_micros == 0 { String::new() } else { format_micros(t.revoked_at_unix_micros) },
            ]
        })
        .collect();
    print!("{}", table(&["TOKEN", "USER", "ROLE", "REGION", "LABEL", "EXPIRES", "REVOKED"], &rows));
    Ok(0)
}
