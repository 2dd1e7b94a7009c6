//! Reminder queries, evaluated against the `now`, `today` and limits the caller passes.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, NaiveDate, Utc};
use crm_domain::Role;
use crm_projection_runtime::{decode_value, Reader, Result};
use uuid::Uuid;

use crate::projector::{customer_key, lead_key, never_key, since_key, CustomerState, LeadState, UserInfo, Value};

/// A lead held longer than this without being qualified shows in "my day".
pub const LEAD_CONTACT_HOURS: i64 = 24;

/// The time and limits a reminders answer is evaluated at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReminderQuery {
    pub now: DateTime<Utc>,
    /// `rules.follow_up_reminder_days`.
    pub follow_up_reminder_days: u32,
    /// Days past the reminder after which it escalates to the owner's managers.
    pub escalation_after_days: u32,
}

/// A customer due for a follow-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reminder {
    pub customer: Uuid,
    pub state: CustomerState,
}

/// A reminder past the escalation limit, with the managers it goes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Escalation {
    pub reminder: Reminder,
    /// Active regional managers of the owner's region (empty when there is none).
    pub managers: Vec<(Uuid, UserInfo)>,
}

/// A lead held for more than [`LEAD_CONTACT_HOURS`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldLead {
    pub lead: Uuid,
    pub state: LeadState,
}

/// One salesperson's day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MyDayQuery {
    pub user: Uuid,
    pub now: DateTime<Utc>,
    /// The salesperson's date (China Standard Time by default; the server decides).
    pub today: NaiveDate,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MyDay {
    /// Next follow-up before today, oldest first.
    pub overdue: Vec<Reminder>,
    /// Next follow-up today.
    pub today: Vec<Reminder>,
    /// Held (assigned or claimed, not qualified) since more than 24 hours, longest first.
    pub leads: Vec<HeldLead>,
}

fn last_uuid(key: &[u8]) -> Option<Uuid> {
    std::str::from_utf8(key).ok().and_then(|s| Uuid::parse_str(s.rsplit('/').next()?).ok())
}

fn customer(reader: &Reader, id: Uuid) -> Result<Option<Reminder>> {
    Ok(match reader.get::<Value>(&customer_key(&id))? {
        Some(Value::Customer(state)) => Some(Reminder { customer: id, state }),
        _ => None,
    })
}

/// Up to `limit` customers passing `keep` from the index `prefix` with keys below `end`, in
/// key order.
fn scan(
    reader: &Reader,
    prefix: &[u8],
    end: Option<Vec<u8>>,
    limit: usize,
    keep: impl Fn(&Reminder) -> bool,
) -> Result<Vec<Reminder>> {
    let mut out = Vec::new();
    let end = end.unwrap_or_else(|| {
        let mut e = prefix.to_vec();
        *e.last_mut().expect("non-empty prefix") += 1;
        e
    });
    for entry in reader.tree.range(prefix.to_vec()..end) {
        if out.len() >= limit {
            break;
        }
        let (key, _) = entry?;
        if let Some(r) = last_uuid(&key).map(|id| customer(reader, id)).transpose()?.flatten() {
            if keep(&r) {
                out.push(r);
            }
        }
    }
    Ok(out)
}

/// Both lists are in "since" order: merge them and keep the first `limit`.
fn merged(mut a: Vec<Reminder>, b: Vec<Reminder>, limit: usize) -> Vec<Reminder> {
    a.extend(b);
    a.sort_by_key(|r| (r.state.since_micros(), r.customer));
    a.truncate(limit);
    a
}

/// Customers due for a follow-up (never contacted, or last activity more than
/// `follow_up_reminder_days` ago), longest without contact first; at most `limit`.
pub fn reminders(reader: &Reader, q: &ReminderQuery, limit: usize) -> Result<Vec<Reminder>> {
    let cutoff = q.now - Duration::days(i64::from(q.follow_up_reminder_days));
    let stale = scan(reader, b"s/", Some(since_key(cutoff.timestamp_micros(), &Uuid::nil())), limit, |_| true)?;
    let never = scan(reader, b"n/", None, limit, |_| true)?;
    Ok(merged(stale, never, limit))
}

/// Reminders past `follow_up_reminder_days + escalation_after_days` (from the last activity,
/// or from creation when there is none) of customers with an owner, with the managers they
/// go to; longest without contact first; at most `limit`.
pub fn escalations(reader: &Reader, q: &ReminderQuery, limit: usize) -> Result<Vec<Escalation>> {
    let days = i64::from(q.follow_up_reminder_days) + i64::from(q.escalation_after_days);
    let cutoff = (q.now - Duration::days(days)).timestamp_micros();
    let mut users: BTreeMap<Uuid, UserInfo> = BTreeMap::new();
    for entry in reader.tree.scan_prefix(b"u/") {
        let (key, bytes) = entry?;
        if let (Some(id), Value::User(u)) = (last_uuid(&key), decode_value::<Value>(&key, &bytes)?) {
            users.insert(id, u);
        }
    }
    let managers_of = |owner: &Uuid| -> Vec<(Uuid, UserInfo)> {
        let Some(region) = users.get(owner).and_then(|u| u.region.clone()) else { return Vec::new() };
        users
            .iter()
            .filter(|(_, u)| {
                u.active && u.role == Role::RegionalManager && u.region.as_deref() == Some(region.as_str())
            })
            .map(|(id, u)| (*id, u.clone()))
            .collect()
    };
    // Customers without an owner have nobody to escalate to: scan past them.
    let owned = |r: &Reminder| r.state.owner.is_some();
    let stale = scan(reader, b"s/", Some(since_key(cutoff, &Uuid::nil())), limit, owned)?;
    let never = scan(reader, b"n/", Some(never_key(cutoff, &Uuid::nil())), limit, owned)?;
    Ok(merged(stale, never, limit)
        .into_iter()
        .map(|reminder| {
            let managers = reminder.state.owner.as_ref().map(managers_of).unwrap_or_default();
            Escalation { reminder, managers }
        })
        .collect())
}

/// The user's day: follow-ups overdue and due today, leads waiting for contact.
pub fn my_day(reader: &Reader, q: &MyDayQuery) -> Result<MyDay> {
    let mut day = MyDay::default();
    let prefix = format!("f/{}/", q.user);
    for entry in reader.tree.scan_prefix(prefix.as_bytes()) {
        let (key, _) = entry?;
        let rest = String::from_utf8_lossy(&key[prefix.len()..]).into_owned();
        let Some((date, _)) = rest.split_once('/') else { continue };
        let Ok(date) = date.parse::<NaiveDate>() else { continue };
        if date > q.today {
            break;
        }
        if let Some(r) = last_uuid(&key).map(|id| customer(reader, id)).transpose()?.flatten() {
            if date < q.today {
                day.overdue.push(r);
            } else {
                day.today.push(r);
            }
        }
    }
    let cutoff = q.now - Duration::hours(LEAD_CONTACT_HOURS);
    for entry in reader.tree.scan_prefix(format!("h/{}/", q.user).as_bytes()) {
        let (key, _) = entry?;
        let Some(id) = last_uuid(&key) else { continue };
        if let Some(Value::Lead(state)) = reader.get::<Value>(&lead_key(&id))? {
            if state.since.is_some_and(|since| since < cutoff) {
                day.leads.push(HeldLead { lead: id, state });
            }
        }
    }
    day.leads.sort_by_key(|l| (l.state.since, l.lead));
    Ok(day)
}
