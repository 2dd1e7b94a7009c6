use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use crm_domain::{Event, Owned, Role, Rules};
use crm_eventlog::RecordedEvent;
use crm_projection_runtime::{Cached, Projector, State};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Where a lead is in its life, as the lead aggregate sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LeadPhase {
    /// Captured or released: nobody holds it.
    Pool,
    /// Assigned, not yet claimed.
    Assigned,
    Claimed,
    Qualified,
}

/// What the workload keeps per lead.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeadState {
    pub phase: LeadPhase,
    /// The assignee or claimer while assigned or claimed.
    pub holder: Option<Uuid>,
    /// The last assignment's time while assigned or claimed after it.
    pub assigned_at: Option<DateTime<Utc>>,
    pub region: Option<String>,
    pub company: Option<String>,
}

impl LeadState {
    fn open(&self) -> bool {
        matches!(self.phase, LeadPhase::Assigned | LeadPhase::Claimed)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserInfo {
    pub name: String,
    pub role: Role,
    pub region: Option<String>,
    pub active: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Value {
    Lead(LeadState),
    /// An index entry (`h/`, `a/`): the lead's holder.
    Held(Uuid),
    Count(u64),
    /// First-response minutes -> samples.
    Responses(BTreeMap<u32, u64>),
    User(UserInfo),
}

pub(crate) fn lead_key(lead: &Uuid) -> Vec<u8> {
    format!("l/{lead}").into_bytes()
}

pub(crate) fn held_key(holder: &Uuid, lead: &Uuid) -> Vec<u8> {
    format!("h/{holder}/{lead}").into_bytes()
}

pub(crate) fn assigned_key(at: &DateTime<Utc>, lead: &Uuid) -> Vec<u8> {
    format!("a/{:020}/{lead}", at.timestamp_micros().max(0)).into_bytes()
}

pub(crate) fn count_key(user: &Uuid) -> Vec<u8> {
    format!("n/{user}").into_bytes()
}

pub(crate) fn responses_key(user: &Uuid) -> Vec<u8> {
    format!("t/{user}").into_bytes()
}

pub(crate) fn user_key(user: &Uuid) -> Vec<u8> {
    format!("u/{user}").into_bytes()
}

type Result<T = ()> = std::result::Result<T, String>;

/// The event types `apply` reads the payload of (see [`Projector::decodes`]).
pub(crate) const DECODED: &[&str] = &[
    "LeadCaptured",
    "LeadAssigned",
    "LeadClaimed",
    "LeadReleased",
    "LeadQualified",
    "OwnerChanged",
    "UserCreated",
    "UserRoleChanged",
    "UserRegionChanged",
    "UserDeactivated",
];

/// The workload projector. It reads no rule: the unclaimed limit is applied at query time.
#[derive(Debug, Clone, Copy, Default)]
pub struct WorkloadProjector;

impl WorkloadProjector {
    fn load(state: &mut State<'_, Value>, lead: &Uuid) -> Result<LeadState> {
        match state.get_cloned(&lead_key(lead))? {
            Some(Value::Lead(l)) => Ok(l),
            // A lead event without a capture cannot come from the domain; keep counting.
            _ => Ok(LeadState { phase: LeadPhase::Pool, holder: None, assigned_at: None, region: None, company: None }),
        }
    }

    fn add_count(state: &mut State<'_, Value>, user: &Uuid, delta: i64) -> Result {
        state.update(&count_key(user), |old| {
            let n = match old {
                Some(Value::Count(n)) => n,
                _ => 0,
            };
            let n = n.saturating_add_signed(delta);
            (n > 0).then_some(Value::Count(n))
        })
    }

    /// Takes the lead out of every index (before a change).
    fn unindex(state: &mut State<'_, Value>, id: &Uuid, l: &LeadState) -> Result {
        if let (true, Some(holder)) = (l.open(), l.holder) {
            state.remove(held_key(&holder, id));
            Self::add_count(state, &holder, -1)?;
        }
        if let (LeadPhase::Assigned, Some(at)) = (l.phase, l.assigned_at) {
            state.remove(assigned_key(&at, id));
        }
        Ok(())
    }

    /// Puts the lead into the indexes its new state calls for, and stores it.
    fn index(state: &mut State<'_, Value>, id: &Uuid, l: LeadState) -> Result {
        if let (true, Some(holder)) = (l.open(), l.holder) {
            state.put(held_key(&holder, id), Value::Held(holder));
            Self::add_count(state, &holder, 1)?;
        }
        if let (LeadPhase::Assigned, Some(at), Some(holder)) = (l.phase, l.assigned_at, l.holder) {
            state.put(assigned_key(&at, id), Value::Held(holder));
        }
        state.put(lead_key(id), Value::Lead(l));
        Ok(())
    }

    fn change(state: &mut State<'_, Value>, id: &Uuid, f: impl FnOnce(&mut LeadState)) -> Result {
        let mut l = Self::load(state, id)?;
        Self::unindex(state, id, &l)?;
        f(&mut l);
        Self::index(state, id, l)
    }

    fn user(state: &mut State<'_, Value>, id: &Uuid, f: impl FnOnce(&mut UserInfo)) -> Result {
        if let Some(Value::User(mut u)) = state.get_cloned(&user_key(id))? {
            f(&mut u);
            state.put(user_key(id), Value::User(u));
        }
        Ok(())
    }
}

impl Projector for WorkloadProjector {
    type Value = Value;

    fn name(&self) -> &'static str {
        "workload"
    }

    fn version(&self) -> u32 {
        1
    }

    fn fingerprint(&self, _rules: &Rules) -> u64 {
        0
    }

    fn decodes(&self, event_type: &str) -> bool {
        DECODED.contains(&event_type)
    }

    /// The lead an event changes and, once that is in memory (the runner's second round),
    /// the open-lead counts of its holder before and after; a claimer's response times; a
    /// user's record. After a restart none is in memory, and reading them one at a time
    /// inside the fold held the live build behind (docs/PERFORMANCE.md).
    fn prefetch(
        &self,
        _: &Rules,
        _: &RecordedEvent,
        event: Option<&Event>,
        cached: &Cached<'_, Value>,
        keys: &mut Vec<Vec<u8>>,
    ) {
        let (lead, new_holder) = match event {
            Some(Event::LeadAssigned(e)) => (e.lead_id.0, Some(e.assignee.0)),
            Some(Event::LeadClaimed(e)) => {
                keys.push(responses_key(&e.user_id.0));
                (e.lead_id.0, Some(e.user_id.0))
            }
            Some(Event::LeadReleased(e)) => (e.lead_id.0, None),
            Some(Event::LeadQualified(e)) => (e.lead_id.0, None),
            Some(Event::OwnerChanged(e)) => match e.subject {
                Owned::Lead(id) => (id.0, Some(e.to.0)),
                _ => return,
            },
            Some(Event::UserRoleChanged(e)) => return keys.push(user_key(&e.user_id.0)),
            Some(Event::UserRegionChanged(e)) => return keys.push(user_key(&e.user_id.0)),
            Some(Event::UserDeactivated(e)) => return keys.push(user_key(&e.user_id.0)),
            _ => return,
        };
        let key = lead_key(&lead);
        if let Some(Value::Lead(l)) = cached.get(&key) {
            keys.extend(l.holder.iter().filter(|_| l.open()).map(count_key));
        }
        keys.extend(new_holder.iter().map(count_key));
        keys.push(key);
    }

    fn apply(
        &self,
        state: &mut State<'_, Value>,
        _rules: &Rules,
        _recorded: &RecordedEvent,
        event: Option<&Event>,
    ) -> Result {
        let Some(event) = event else { return Ok(()) };
        match event {
            Event::LeadCaptured(e) => {
                let l = LeadState {
                    phase: LeadPhase::Pool,
                    holder: None,
                    assigned_at: None,
                    region: e.region.clone(),
                    company: e.company.clone(),
                };
                state.put(lead_key(&e.lead_id.0), Value::Lead(l));
                Ok(())
            }
            Event::LeadAssigned(e) => Self::change(state, &e.lead_id.0, |l| {
                l.phase = LeadPhase::Assigned;
                l.holder = Some(e.assignee.0);
                l.assigned_at = Some(e.assigned_at);
            }),
            Event::LeadClaimed(e) => {
                let id = e.lead_id.0;
                let l = Self::load(state, &id)?;
                if let (LeadPhase::Assigned, Some(at)) = (l.phase, l.assigned_at) {
                    if l.holder == Some(e.user_id.0) {
                        let minutes = u32::try_from((e.claimed_at - at).num_minutes().max(0)).unwrap_or(u32::MAX);
                        let value = state
                            .get_or_insert_with(&responses_key(&e.user_id.0), || Value::Responses(BTreeMap::new()))?;
                        match value {
                            Value::Responses(h) => *h.entry(minutes).or_default() += 1,
                            other => return Err(format!("expected responses, found {other:?}")),
                        }
                    }
                }
                Self::change(state, &id, |l| {
                    if l.phase == LeadPhase::Pool {
                        l.assigned_at = None;
                    }
                    l.phase = LeadPhase::Claimed;
                    l.holder = Some(e.user_id.0);
                })
            }
            Event::LeadReleased(e) => Self::change(state, &e.lead_id.0, |l| {
                l.phase = LeadPhase::Pool;
                l.holder = None;
                l.assigned_at = None;
            }),
            Event::LeadQualified(e) => Self::change(state, &e.lead_id.0, |l| l.phase = LeadPhase::Qualified),
            Event::OwnerChanged(e) => match e.subject {
                Owned::Lead(id) => Self::change(state, &id.0, |l| l.holder = Some(e.to.0)),
                _ => Ok(()),
            },
            Event::UserCreated(e) => {
                let u = UserInfo { name: e.name.clone(), role: e.role, region: e.region.clone(), active: true };
                state.put(user_key(&e.user_id.0), Value::User(u));
                Ok(())
            }
            Event::UserRoleChanged(e) => Self::user(state, &e.user_id.0, |u| u.role = e.to),
            Event::UserRegionChanged(e) => Self::user(state, &e.user_id.0, |u| u.region = e.to_region.clone()),
            Event::UserDeactivated(e) => Self::user(state, &e.user_id.0, |u| u.active = false),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod decoded_tests {
    #[test]
    fn every_decoded_event_type_exists() {
        crm_projection_runtime::testing::assert_event_types_exist(super::DECODED);
    }
}
