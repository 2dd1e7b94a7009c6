use std::collections::BTreeMap;

use crm_domain::{apply_changes, normalize_uscc, Event, FieldChange, Owned, Rules, CUSTOMER_FIELDS};
use crm_eventlog::RecordedEvent;
use crm_projection_runtime::{Cached, Projector, State};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Flags counted on live customers.
pub const CUSTOMER_FLAGS: &[&str] = &["phone_raw", "uscc_checksum"];
/// Flags counted on leads at capture.
pub const LEAD_FLAGS: &[&str] = &["phone_raw", "uscc_checksum", "intake_flagged"];

/// The region scope of records without a region.
pub(crate) const NO_REGION: &str = "-";

/// What the health model keeps per customer: its profile fields (the known ones only), its
/// owner, and whether it is merged into another.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomerHealth {
    pub fields: BTreeMap<String, String>,
    pub owner: Option<Uuid>,
    pub absorbed: bool,
}

impl CustomerHealth {
    pub fn region(&self) -> &str {
        self.fields.get("region").map_or(NO_REGION, String::as_str)
    }

    /// The counters this customer adds one to, in each of its scopes.
    fn counters(&self) -> Vec<String> {
        if self.absorbed {
            return Vec::new();
        }
        let mut out = vec!["live".to_owned()];
        out.extend(self.fields.iter().filter(|(_, v)| !v.trim().is_empty()).map(|(f, _)| format!("field:{f}")));
        out.extend(flags_of(&self.fields).into_iter().map(|f| format!("flag:{f}")));
        out
    }

    /// Every (scope, counter) this customer adds one to.
    fn counted(&self) -> Vec<(String, String)> {
        let counters = self.counters();
        self.scopes().into_iter().flat_map(|s| counters.iter().map(move |c| (s.clone(), c.clone()))).collect()
    }

    fn scopes(&self) -> Vec<String> {
        let mut out = vec!["*".to_owned(), format!("r:{}", self.region())];
        if let Some(owner) = self.owner {
            out.push(format!("o:{owner}"));
        }
        out
    }
}

/// `+` and 7 to 15 digits: what `normalize_phone` produces. Anything else was kept raw.
fn is_e164(phone: &str) -> bool {
    phone
        .strip_prefix('+')
        .is_some_and(|digits| (7..=15).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit()))
}

/// The flags of a customer's profile fields (see [`CUSTOMER_FLAGS`]).
pub fn flags_of(fields: &BTreeMap<String, String>) -> Vec<&'static str> {
    let mut out = Vec::new();
    if fields.get("phone").is_some_and(|p| !p.trim().is_empty() && !is_e164(p)) {
        out.push("phone_raw");
    }
    if fields.get("uscc").is_some_and(|u| !u.trim().is_empty() && !normalize_uscc(u).checksum_ok) {
        out.push("uscc_checksum");
    }
    out
}

/// What the health tree stores. Variants keep their positions (the encoding's tag), so a tree
/// of version 1 decodes while it serves during the rebuild that replaces it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Value {
    Customer(CustomerHealth),
    /// Version 1: one counter, `k/<scope>/<counter>`.
    Count(u64),
    /// `s/<scope>`: every non-zero counter of one scope.
    Counts(BTreeMap<String, u64>),
}

pub(crate) fn customer_key(id: &Uuid) -> Vec<u8> {
    format!("c/{id}").into_bytes()
}

/// `s/<scope>`: the counters of one scope, in one value (version 2). A live step that counts
/// a few new customers writes their scopes' keys, a few dozen, instead of a key per
/// counter, a few hundred (version 1's `k/<scope>/<counter>`, still read from a version 1
/// tree while it serves).
pub(crate) fn scope_key(scope: &str) -> Vec<u8> {
    format!("s/{scope}").into_bytes()
}

/// `k/<scope>/`: where version 1 kept the counters of a scope, one key each.
pub(crate) fn version_1_prefix(scope: &str) -> String {
    format!("k/{scope}/")
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
    "OwnerChanged",
    "LeadCaptured",
];

/// The data-health projector. It reads no rule.
#[derive(Debug, Clone, Copy, Default)]
pub struct HealthProjector;

impl HealthProjector {
    /// Adds `delta` to each of `counters` of `scope` (one update of the scope's value); a
    /// counter at zero is dropped, and a scope without counters.
    fn bump<'c>(
        state: &mut State<'_, Value>,
        scope: &str,
        counters: impl IntoIterator<Item = &'c str>,
        delta: i64,
    ) -> Result {
        state.update(&scope_key(scope), |old| {
            let mut counts = match old {
                Some(Value::Counts(counts)) => counts,
                _ => BTreeMap::new(),
            };
            for counter in counters {
                match counts.get_mut(counter) {
                    Some(n) => {
                        *n = n.saturating_add_signed(delta);
                        if *n == 0 {
                            counts.remove(counter);
                        }
                    }
                    None if delta > 0 => {
                        counts.insert(counter.to_owned(), delta.unsigned_abs());
                    }
                    None => {}
                }
            }
            (!counts.is_empty()).then_some(Value::Counts(counts))
        })
    }

    fn count(state: &mut State<'_, Value>, c: &CustomerHealth, delta: i64) -> Result {
        let counters = c.counters();
        for scope in c.scopes() {
            Self::bump(state, &scope, counters.iter().map(String::as_str), delta)?;
        }
        Ok(())
    }

    /// Changes customer `id` in place and moves its counts: only the counters it leaves or
    /// joins change (the same totals as taking it out of every counter and adding it back).
    fn change(state: &mut State<'_, Value>, id: &Uuid, f: impl FnOnce(&mut CustomerHealth)) -> Result {
        // Events about a customer the log never created cannot come from the domain.
        let Some(Value::Customer(c)) = state.get_mut(&customer_key(id))? else { return Ok(()) };
        let before = c.counted();
        f(c);
        for ((scope, counter), delta) in moved(before, c.counted()) {
            Self::bump(state, &scope, [counter.as_str()], delta)?;
        }
        Ok(())
    }
}

/// The (scope, counter) pairs a customer leaves (-1) and joins (+1) when its counted pairs go
/// from `before` to `after`.
fn moved(before: Vec<(String, String)>, after: Vec<(String, String)>) -> impl Iterator<Item = ((String, String), i64)> {
    let left: Vec<_> = before.iter().filter(|b| !after.contains(b)).cloned().map(|p| (p, -1)).collect();
    let joined: Vec<_> = after.into_iter().filter(|a| !before.contains(a)).map(|p| (p, 1)).collect();
    left.into_iter().chain(joined)
}

fn known(fields: &mut BTreeMap<String, String>) {
    fields.retain(|k, _| CUSTOMER_FIELDS.contains(&k.as_str()));
}

fn with_changes(c: &mut CustomerHealth, changes: &[FieldChange]) {
    apply_changes(&mut c.fields, changes);
    known(&mut c.fields);
}

/// How an event changes a stored customer record.
enum Change<'e> {
    Fields(&'e [FieldChange]),
    Absorbed(bool),
    Owner(Uuid),
}

impl Change<'_> {
    fn apply(&self, c: &mut CustomerHealth) {
        match self {
            Change::Fields(changes) => with_changes(c, changes),
            Change::Absorbed(absorbed) => c.absorbed = *absorbed,
            Change::Owner(owner) => c.owner = Some(*owner),
        }
    }
}

/// The stored customer `event` changes, and how (`None`: it changes none).
fn customer_change(event: &Event) -> Option<(Uuid, Change<'_>)> {
    Some(match event {
        Event::CustomerUpdated(e) => (e.customer_id.0, Change::Fields(&e.changes)),
        Event::CustomersMerged(e) => (e.survivor_id.0, Change::Fields(&e.field_changes)),
        Event::CustomerUnmerged(e) => (e.survivor_id.0, Change::Fields(&e.restored)),
        Event::CustomerAbsorbed(e) => (e.absorbed_id.0, Change::Absorbed(true)),
        Event::CustomerRestored(e) => (e.absorbed_id.0, Change::Absorbed(false)),
        Event::OwnerChanged(e) => match e.subject {
            Owned::Customer(id) => (id.0, Change::Owner(e.to.0)),
            _ => return None,
        },
        _ => return None,
    })
}

/// A new customer's record.
fn created(e: &crm_domain::CustomerCreated) -> CustomerHealth {
    let mut fields = e.fields.clone();
    known(&mut fields);
    CustomerHealth { fields, owner: e.owner.map(|o| o.0), absorbed: false }
}

/// The scopes and counters a captured lead adds one to.
fn lead_counts(e: &crm_domain::LeadCaptured) -> ([String; 2], Vec<&'static str>) {
    let region = format!("r:{}", e.region.as_deref().unwrap_or(NO_REGION));
    let mut counters = vec!["leads"];
    if e.phone.as_deref().is_some_and(|p| !p.trim().is_empty()) && e.phone_e164.is_none() {
        counters.push("lead_flag:phone_raw");
    }
    if e.uscc.as_deref().is_some_and(|u| !u.trim().is_empty()) && !e.uscc_checksum_ok {
        counters.push("lead_flag:uscc_checksum");
    }
    if e.custom_attributes.get("intake.flags").is_some_and(|f| !f.trim().is_empty()) {
        counters.push("lead_flag:intake_flagged");
    }
    (["*".to_owned(), region], counters)
}

impl Projector for HealthProjector {
    type Value = Value;

    fn name(&self) -> &'static str {
        "health"
    }

    /// Version 2: the counters of a scope in one value (version 1: a key per counter).
    fn version(&self) -> u32 {
        2
    }

    fn fingerprint(&self, _rules: &Rules) -> u64 {
        0
    }

    fn decodes(&self, event_type: &str) -> bool {
        DECODED.contains(&event_type)
    }

    /// The customer record an event changes and, once that is in memory (the runner's
    /// second round), the scopes of the counters it leaves or joins ([`moved`], as `change`
    /// computes them); a new customer's and a lead's scopes. After a restart the counters are
    /// not in memory, and reading them one by one inside the fold held the live build seconds
    /// behind (docs/PERFORMANCE.md).
    fn prefetch(
        &self,
        _: &Rules,
        _: &RecordedEvent,
        event: Option<&Event>,
        cached: &Cached<'_, Value>,
        keys: &mut Vec<Vec<u8>>,
    ) {
        let Some(event) = event else { return };
        match event {
            Event::CustomerCreated(e) => {
                keys.extend(created(e).scopes().iter().map(|scope| scope_key(scope)));
            }
            Event::LeadCaptured(e) => {
                keys.extend(lead_counts(e).0.iter().map(|scope| scope_key(scope)));
            }
            _ => {
                let Some((id, change)) = customer_change(event) else { return };
                let key = customer_key(&id);
                if let Some(Value::Customer(c)) = cached.get(&key) {
                    let mut after = c.clone();
                    change.apply(&mut after);
                    keys.extend(moved(c.counted(), after.counted()).map(|((scope, _), _)| scope_key(&scope)));
                }
                keys.push(key);
            }
        }
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
            Event::CustomerCreated(e) => {
                let c = created(e);
                Self::count(state, &c, 1)?;
                state.put(customer_key(&e.customer_id.0), Value::Customer(c));
                Ok(())
            }
            Event::LeadCaptured(e) => {
                let (scopes, counters) = lead_counts(e);
                for scope in &scopes {
                    Self::bump(state, scope, counters.iter().copied(), 1)?;
                }
                Ok(())
            }
            _ => match customer_change(event) {
                Some((id, change)) => Self::change(state, &id, |c| change.apply(c)),
                None => Ok(()),
            },
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
