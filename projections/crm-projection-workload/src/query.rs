//! Workload queries: evaluated against a `now` and the unclaimed limit the caller passes.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use crm_domain::Role;
use crm_projection_runtime::{decode_value, histogram_median, Reader, Result};
use uuid::Uuid;

use crate::projector::{assigned_key, lead_key, LeadPhase, UserInfo, Value};

/// The time and rule a workload answer is evaluated at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkloadQuery {
    pub now: DateTime<Utc>,
    /// `rules.assignment.unclaimed_alert_hours`: a lead assigned longer ago than this and
    /// still unclaimed is past the limit.
    pub unclaimed_alert_hours: u32,
}

impl WorkloadQuery {
    /// Leads assigned strictly before this instant are past the limit (`now - at > limit`).
    fn cutoff(&self) -> DateTime<Utc> {
        self.now - Duration::hours(i64::from(self.unclaimed_alert_hours))
    }
}

/// One salesperson's figures.
#[derive(Debug, Clone, PartialEq)]
pub struct SalespersonLoad {
    pub user: Uuid,
    /// `None` for a user id that holds leads but was never created (not from the domain).
    pub info: Option<UserInfo>,
    /// Assigned or claimed, not qualified, not released.
    pub open_leads: u64,
    /// Assigned and not yet claimed.
    pub unclaimed: u64,
    /// Of those, assigned longer ago than the limit.
    pub unclaimed_over_limit: u64,
    /// Claimed assignments measured.
    pub responses: u64,
    /// Median first-response time in minutes (the mean of the two middle samples when even).
    pub median_first_response_minutes: Option<f64>,
}

/// A lead assigned and not claimed for longer than the limit.
#[derive(Debug, Clone, PartialEq)]
pub struct UnclaimedLead {
    pub lead: Uuid,
    pub assignee: Uuid,
    pub assigned_at: DateTime<Utc>,
    pub region: Option<String>,
    pub company: Option<String>,
}

fn uuid_after(key: &[u8], prefix: usize) -> Option<Uuid> {
    std::str::from_utf8(key.get(prefix..)?).ok().and_then(|s| Uuid::parse_str(s.rsplit('/').next()?).ok())
}

fn empty_row(user: Uuid) -> SalespersonLoad {
    SalespersonLoad {
        user,
        info: None,
        open_leads: 0,
        unclaimed: 0,
        unclaimed_over_limit: 0,
        responses: 0,
        median_first_response_minutes: None,
    }
}

/// Every salesperson (every user with the sales-rep role, and anyone else who holds leads or
/// has answered one), ordered by user id.
pub fn workload(reader: &Reader, q: &WorkloadQuery) -> Result<Vec<SalespersonLoad>> {
    let mut rows: BTreeMap<Uuid, SalespersonLoad> = BTreeMap::new();
    let mut others: BTreeMap<Uuid, UserInfo> = BTreeMap::new();
    for entry in reader.tree.scan_prefix(b"u/") {
        let (key, bytes) = entry?;
        if let (Some(id), Value::User(u)) = (uuid_after(&key, 2), decode_value::<Value>(&key, &bytes)?) {
            if u.role == Role::SalesRep {
                rows.entry(id).or_insert_with(|| empty_row(id)).info = Some(u);
            } else {
                others.insert(id, u);
            }
        }
    }
    let mut touch = |rows: &mut BTreeMap<Uuid, SalespersonLoad>, id: Uuid| {
        rows.entry(id).or_insert_with(|| SalespersonLoad { info: others.remove(&id), ..empty_row(id) });
    };
    for entry in reader.tree.scan_prefix(b"n/") {
        let (key, bytes) = entry?;
        if let (Some(id), Value::Count(n)) = (uuid_after(&key, 2), decode_value::<Value>(&key, &bytes)?) {
            touch(&mut rows, id);
            rows.get_mut(&id).expect("touched").open_leads = n;
        }
    }
    for entry in reader.tree.scan_prefix(b"t/") {
        let (key, bytes) = entry?;
        if let (Some(id), Value::Responses(h)) = (uuid_after(&key, 2), decode_value::<Value>(&key, &bytes)?) {
            touch(&mut rows, id);
            let r = rows.get_mut(&id).expect("touched");
            r.responses = h.values().sum();
            r.median_first_response_minutes = histogram_median(&h);
        }
    }
    let cutoff = assigned_key(&q.cutoff(), &Uuid::nil());
    for entry in reader.tree.scan_prefix(b"a/") {
        let (key, bytes) = entry?;
        if let Value::Held(holder) = decode_value::<Value>(&key, &bytes)? {
            touch(&mut rows, holder);
            let r = rows.get_mut(&holder).expect("touched");
            r.unclaimed += 1;
            if key.as_ref() < cutoff.as_slice() {
                r.unclaimed_over_limit += 1;
            }
        }
    }
    Ok(rows.into_values().collect())
}

/// Leads assigned and unclaimed longer than the limit, oldest assignment first; at most
/// `limit` of them.
pub fn unclaimed(reader: &Reader, q: &WorkloadQuery, limit: usize) -> Result<Vec<UnclaimedLead>> {
    let cutoff = assigned_key(&q.cutoff(), &Uuid::nil());
    let mut out = Vec::new();
    for entry in reader.tree.range(b"a/".to_vec()..cutoff) {
        if out.len() >= limit {
            break;
        }
        let (key, _) = entry?;
        let Some(id) = uuid_after(&key, 2) else { continue };
        if let Some(Value::Lead(l)) = reader.get::<Value>(&lead_key(&id))? {
            if let (LeadPhase::Assigned, Some(assignee), Some(assigned_at)) = (l.phase, l.holder, l.assigned_at) {
                out.push(UnclaimedLead { lead: id, assignee, assigned_at, region: l.region, company: l.company });
            }
        }
    }
    Ok(out)
}
