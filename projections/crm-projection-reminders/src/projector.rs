use chrono::{DateTime, NaiveDate, Utc};
use crm_domain::{Event, FieldChange, Owned, Role, Rules};
use crm_eventlog::RecordedEvent;
use crm_projection_runtime::{printable_key, Derived, Projector, State};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// What the reminders keep per customer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomerState {
    pub owner: Option<Uuid>,
    pub name: Option<String>,
    /// As stored on the customer (E.164, or raw when it came from a lead with an invalid one).
    pub phone: Option<String>,
    pub region: Option<String>,
    /// When `CustomerCreated` was recorded.
    pub created_at_micros: i64,
    /// The latest `occurred_at` of its activities.
    pub last_activity: Option<DateTime<Utc>>,
    /// The next follow-up of the latest activity.
    pub next_follow_up: Option<NaiveDate>,
    /// Merged into another customer: no reminders (the survivor has them).
    pub absorbed: bool,
}

impl CustomerState {
    /// Since when nobody has been in touch: the last activity, else the creation.
    pub fn since_micros(&self) -> i64 {
        self.last_activity.map_or(self.created_at_micros, |at| at.timestamp_micros())
    }
}

/// What the reminders keep per lead.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeadState {
    pub company: Option<String>,
    pub region: Option<String>,
    /// The user holding it (assigned or claimed), while it is held.
    pub holder: Option<Uuid>,
    /// Held since: the assignment, or the claim of a lead taken from the pool.
    pub since: Option<DateTime<Utc>>,
    pub qualified: bool,
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
    Customer(CustomerState),
    Lead(LeadState),
    User(UserInfo),
    /// An index entry.
    Entry,
}

pub(crate) fn customer_key(id: &Uuid) -> Vec<u8> {
    format!("c/{id}").into_bytes()
}

pub(crate) fn since_key(micros: i64, id: &Uuid) -> Vec<u8> {
    format!("s/{:020}/{id}", micros.max(0)).into_bytes()
}

pub(crate) fn never_key(created_micros: i64, id: &Uuid) -> Vec<u8> {
    format!("n/{:020}/{id}", created_micros.max(0)).into_bytes()
}

pub(crate) fn follow_up_key(owner: &Uuid, date: NaiveDate, id: &Uuid) -> Vec<u8> {
    format!("f/{owner}/{date}/{id}").into_bytes()
}

pub(crate) fn lead_key(id: &Uuid) -> Vec<u8> {
    format!("l/{id}").into_bytes()
}

pub(crate) fn held_key(holder: &Uuid, id: &Uuid) -> Vec<u8> {
    format!("h/{holder}/{id}").into_bytes()
}

pub(crate) fn user_key(id: &Uuid) -> Vec<u8> {
    format!("u/{id}").into_bytes()
}

type Result<T = ()> = std::result::Result<T, String>;

/// The event types `apply` reads the payload of (see [`Projector::decodes`]).
pub(crate) const DECODED: &[&str] = &[
    "CustomerCreated",
    "CustomerUpdated",
    "CustomersMerged",
    "CustomerUnmerged",
    "CustomerAbsorbed",
    "CustomerRestored",
    "ActivityLogged",
    "OwnerChanged",
    "LeadCaptured",
    "LeadAssigned",
    "LeadClaimed",
    "LeadReleased",
    "LeadQualified",
    "UserCreated",
    "UserRoleChanged",
    "UserRegionChanged",
    "UserDeactivated",
];

/// The reminders projector. It reads no rule: limits are applied at query time.
#[derive(Debug, Clone, Copy, Default)]
pub struct RemindersProjector;

fn apply_fields(c: &mut CustomerState, changes: &[FieldChange]) {
    for change in changes {
        let slot = match change.field.as_str() {
            "name" => &mut c.name,
            "phone" => &mut c.phone,
            "region" => &mut c.region,
            _ => continue,
        };
        slot.clone_from(&change.new);
    }
}

impl RemindersProjector {
    /// The index keys of customer `id` in state `c`.
    fn index_keys(id: &Uuid, c: &CustomerState) -> Vec<Vec<u8>> {
        if c.absorbed {
            return Vec::new();
        }
        let mut keys = vec![match c.last_activity {
            Some(at) => since_key(at.timestamp_micros(), id),
            None => never_key(c.created_at_micros, id),
        }];
        if let (Some(owner), Some(date)) = (c.owner, c.next_follow_up) {
            keys.push(follow_up_key(&owner, date, id));
        }
        keys
    }

    /// Changes customer `id` in place, moving only the index keys that change (none in a
    /// fresh build, which derives them at its first commit).
    fn change_customer(state: &mut State<'_, Value>, id: &Uuid, f: impl FnOnce(&mut CustomerState)) -> Result {
        let fresh = state.fresh();
        // Events about a customer the log never created cannot come from the domain.
        let Some(Value::Customer(c)) = state.get_mut(&customer_key(id))? else { return Ok(()) };
        if fresh {
            f(c);
            return Ok(());
        }
        let before = Self::index_keys(id, c);
        f(c);
        let after = Self::index_keys(id, c);
        for key in &before {
            if !after.contains(key) {
                state.remove(key.clone());
            }
        }
        for key in after {
            if !before.contains(&key) {
                state.put(key, Value::Entry);
            }
        }
        Ok(())
    }

    fn change_lead(state: &mut State<'_, Value>, id: &Uuid, f: impl FnOnce(&mut LeadState)) -> Result {
        let fresh = state.fresh();
        let Some(Value::Lead(mut l)) = state.get_cloned(&lead_key(id))? else { return Ok(()) };
        if let Some(holder) = l.holder.filter(|_| !fresh) {
            state.remove(held_key(&holder, id));
        }
        f(&mut l);
        if l.qualified {
            l.holder = None;
        }
        if let Some(holder) = l.holder.filter(|_| !fresh) {
            state.put(held_key(&holder, id), Value::Entry);
        }
        state.put(lead_key(id), Value::Lead(l));
        Ok(())
    }

    fn change_user(state: &mut State<'_, Value>, id: &Uuid, f: impl FnOnce(&mut UserInfo)) -> Result {
        if let Some(Value::User(mut u)) = state.get_cloned(&user_key(id))? {
            f(&mut u);
            state.put(user_key(id), Value::User(u));
        }
        Ok(())
    }
}

impl Projector for RemindersProjector {
    type Value = Value;

    fn name(&self) -> &'static str {
        "reminders"
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

    fn apply(
        &self,
        state: &mut State<'_, Value>,
        _rules: &Rules,
        recorded: &RecordedEvent,
        event: Option<&Event>,
    ) -> Result {
        let Some(event) = event else { return Ok(()) };
        match event {
            Event::CustomerCreated(e) => {
                let id = e.customer_id.0;
                let c = CustomerState {
                    owner: e.owner.map(|o| o.0),
                    name: e.fields.get("name").cloned(),
                    phone: e.fields.get("phone").cloned(),
                    region: e.fields.get("region").cloned(),
                    created_at_micros: recorded.recorded_at_micros,
                    last_activity: None,
                    next_follow_up: None,
                    absorbed: false,
                };
                if !state.fresh() {
                    for key in Self::index_keys(&id, &c) {
                        state.put(key, Value::Entry);
                    }
                }
                state.put(customer_key(&id), Value::Customer(c));
                Ok(())
            }
            Event::CustomerUpdated(e) => {
                Self::change_customer(state, &e.customer_id.0, |c| apply_fields(c, &e.changes))
            }
            Event::CustomersMerged(e) => {
                Self::change_customer(state, &e.survivor_id.0, |c| apply_fields(c, &e.field_changes))
            }
            Event::CustomerUnmerged(e) => {
                Self::change_customer(state, &e.survivor_id.0, |c| apply_fields(c, &e.restored))
            }
            Event::CustomerAbsorbed(e) => Self::change_customer(state, &e.absorbed_id.0, |c| c.absorbed = true),
            Event::CustomerRestored(e) => Self::change_customer(state, &e.absorbed_id.0, |c| c.absorbed = false),
            Event::ActivityLogged(e) => Self::change_customer(state, &e.customer_id.0, |c| {
                // As `crm_domain::Customer::apply`: the latest occurred_at wins, ties to the later log entry.
                if c.last_activity.is_none_or(|last| last <= e.occurred_at) {
                    c.last_activity = Some(e.occurred_at);
                    c.next_follow_up = e.next_follow_up;
                }
            }),
            Event::OwnerChanged(e) => match e.subject {
                Owned::Customer(id) => Self::change_customer(state, &id.0, |c| c.owner = Some(e.to.0)),
                Owned::Lead(id) => Self::change_lead(state, &id.0, |l| {
                    if l.holder.is_some() {
                        l.holder = Some(e.to.0);
                    }
                }),
                Owned::Opportunity(_) => Ok(()),
            },
            Event::LeadCaptured(e) => {
                let l = LeadState {
                    company: e.company.clone(),
                    region: e.region.clone(),
                    holder: None,
                    since: None,
                    qualified: false,
                };
                state.put(lead_key(&e.lead_id.0), Value::Lead(l));
                Ok(())
            }
            Event::LeadAssigned(e) => Self::change_lead(state, &e.lead_id.0, |l| {
                l.holder = Some(e.assignee.0);
                l.since = Some(e.assigned_at);
            }),
            Event::LeadClaimed(e) => Self::change_lead(state, &e.lead_id.0, |l| {
                if l.holder.is_none() {
                    l.since = Some(e.claimed_at);
                }
                l.holder = Some(e.user_id.0);
            }),
            Event::LeadReleased(e) => Self::change_lead(state, &e.lead_id.0, |l| {
                l.holder = None;
                l.since = None;
            }),
            Event::LeadQualified(e) => Self::change_lead(state, &e.lead_id.0, |l| l.qualified = true),
            Event::UserCreated(e) => {
                let u = UserInfo { name: e.name.clone(), role: e.role, region: e.region.clone(), active: true };
                state.put(user_key(&e.user_id.0), Value::User(u));
                Ok(())
            }
            Event::UserRoleChanged(e) => Self::change_user(state, &e.user_id.0, |u| u.role = e.to),
            Event::UserRegionChanged(e) => Self::change_user(state, &e.user_id.0, |u| u.region = e.to_region.clone()),
            Event::UserDeactivated(e) => Self::change_user(state, &e.user_id.0, |u| u.active = false),
            _ => Ok(()),
        }
    }

    /// The index entries of a fresh build, from its customers and leads as they stand at its
    /// first commit: each customer's entries once, instead of moved at every activity, and
    /// each held lead's.
    fn derive_fresh(&self, state: &State<'_, Value>) -> Result<Derived<Value>> {
        let id_of = |key: &[u8], prefix: &[u8]| {
            let id = key.strip_prefix(prefix).and_then(|id| std::str::from_utf8(id).ok());
            id.and_then(|id| Uuid::parse_str(id).ok())
                .ok_or_else(|| format!("not a key of {}: {}", String::from_utf8_lossy(prefix), printable_key(key)))
        };
        let mut derived = Vec::new();
        for (key, value) in state.held() {
            match value {
                Value::Customer(c) => {
                    derived.extend(Self::index_keys(&id_of(key, b"c/")?, c).into_iter().map(|key| (key, Value::Entry)));
                }
                Value::Lead(LeadState { holder: Some(holder), .. }) => {
                    derived.push((held_key(holder, &id_of(key, b"l/")?), Value::Entry));
                }
                _ => {}
            }
        }
        Ok(derived)
    }
}

#[cfg(test)]
mod decoded_tests {
    #[test]
    fn every_decoded_event_type_exists() {
        crm_projection_runtime::testing::assert_event_types_exist(super::DECODED);
    }
}
