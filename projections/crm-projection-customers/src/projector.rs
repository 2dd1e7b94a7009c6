use std::collections::{BTreeMap, BTreeSet};

use crm_domain::{apply_changes, Event, Owned, Rules};
use crm_eventlog::RecordedEvent;
use crm_projection_runtime::{Cached, Projector, State};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// One customer as lists and detail pages show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomerView {
    pub id: Uuid,
    /// Every profile field (`name`, `phone` in E.164, `region`, `industry`, `custom.*`, ...).
    pub fields: BTreeMap<String, String>,
    pub owner: Option<Uuid>,
    pub stage: Option<String>,
    pub tags: Vec<String>,
    pub created_at_micros: i64,
    pub updated_at_micros: i64,
    /// Position of the last event that changed this record.
    pub updated_position: u64,
    pub from_lead: Option<Uuid>,
    /// Set while merged into another customer.
    pub absorbed_into: Option<Uuid>,
    /// Customers currently merged into this one.
    pub merged: Vec<Uuid>,
    pub contacts: u32,
    pub activities: u32,
    pub last_activity_micros: Option<i64>,
    pub won_deals: u32,
}

impl CustomerView {
    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields.get(name).map(String::as_str)
    }

    /// The index keys this record should have (the tree holds exactly these for it).
    pub fn index_keys(&self) -> BTreeSet<Vec<u8>> {
        self.index_fields().keys(&self.id)
    }

    /// What its index keys are made of.
    fn index_fields(&self) -> IndexFields {
        let field = |name: &str| self.field(name).map(str::to_owned);
        IndexFields {
            absorbed: self.absorbed_into.is_some(),
            owner: self.owner,
            region: field("region"),
            industry: field("industry"),
            stage: self.stage.clone(),
            tags: self.tags.clone(),
            created_at_micros: self.created_at_micros,
            name: field("name"),
            phone: field("phone"),
        }
    }
}

/// The parts of a [`CustomerView`] its index keys are made of: most events (activities,
/// contacts, wins) change none of them, so comparing these spares computing the keys.
#[derive(Debug, Clone, PartialEq, Eq)]
struct IndexFields {
    absorbed: bool,
    owner: Option<Uuid>,
    region: Option<String>,
    industry: Option<String>,
    stage: Option<String>,
    tags: Vec<String>,
    created_at_micros: i64,
    name: Option<String>,
    phone: Option<String>,
}

/// The kinds of index entry a customer has, one [`IndexFields`] part each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Owner,
    Region,
    Industry,
    Stage,
    Tag,
    Created,
    Name,
    Phone,
}

const KINDS: [Kind; 8] =
    [Kind::Owner, Kind::Region, Kind::Industry, Kind::Stage, Kind::Tag, Kind::Created, Kind::Name, Kind::Phone];

impl IndexFields {
    fn keys(&self, id: &Uuid) -> BTreeSet<Vec<u8>> {
        let mut keys = BTreeSet::new();
        if !self.absorbed {
            let id = id.to_string();
            for kind in KINDS {
                self.keys_of(kind, &id, &mut keys);
            }
        }
        keys
    }

    /// Whether the entries of `kind` differ between `self` and `other`.
    fn differs(&self, other: &IndexFields, kind: Kind) -> bool {
        match kind {
            Kind::Owner => self.owner != other.owner,
            Kind::Region => self.region != other.region,
            Kind::Industry => self.industry != other.industry,
            Kind::Stage => self.stage != other.stage,
            Kind::Tag => self.tags != other.tags,
            Kind::Created => self.created_at_micros != other.created_at_micros,
            Kind::Name => self.name != other.name,
            Kind::Phone => self.phone != other.phone,
        }
    }

    /// Adds the index keys of `kind` to `keys`.
    fn keys_of(&self, kind: Kind, id: &str, keys: &mut BTreeSet<Vec<u8>>) {
        let mut add = |field: &str, value: &str| {
            if !value.is_empty() {
                keys.insert(index_key(field, value, id));
            }
        };
        match kind {
            Kind::Owner => {
                if let Some(owner) = self.owner {
                    add("owner", &owner.to_string());
                }
            }
            Kind::Region => {
                if let Some(v) = &self.region {
                    add("region", v);
                }
            }
            Kind::Industry => {
                if let Some(v) = &self.industry {
                    add("industry", v);
                }
            }
            Kind::Stage => {
                if let Some(v) = &self.stage {
                    add("stage", v);
                }
            }
            Kind::Tag => {
                for tag in &self.tags {
                    add("tag", tag);
                }
            }
            Kind::Created => add("created", &created_value(self.created_at_micros)),
            Kind::Name => {
                if let Some(name) = &self.name {
                    add("name", &search_name(name));
                }
            }
            Kind::Phone => {
                if let Some(phone) = &self.phone {
                    for digits in phone_forms(phone) {
                        add("phone", &digits);
                    }
                }
            }
        }
    }

    /// The keys `before` has and `after` lacks, and the keys `after` adds: only the kinds
    /// that changed are computed (a stage move formats two keys, not twenty).
    fn changed_keys(before: &IndexFields, after: &IndexFields, id: &Uuid) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
        let (old, new) = if before.absorbed != after.absorbed {
            (before.keys(id), after.keys(id))
        } else if before.absorbed {
            return (Vec::new(), Vec::new());
        } else {
            let id = id.to_string();
            let (mut old, mut new) = (BTreeSet::new(), BTreeSet::new());
            for kind in KINDS.into_iter().filter(|kind| before.differs(after, *kind)) {
                before.keys_of(kind, &id, &mut old);
                after.keys_of(kind, &id, &mut new);
            }
            (old, new)
        };
        (old.difference(&new).cloned().collect(), new.difference(&old).cloned().collect())
    }
}

pub(crate) fn created_value(micros: i64) -> String {
    format!("{:020}", micros.max(0))
}

/// The searchable form of a name: lower case, no white space.
pub(crate) fn search_name(name: &str) -> String {
    name.chars().filter(|c| !c.is_whitespace()).flat_map(char::to_lowercase).collect()
}

/// Digits of a phone number, with and (for +86) without the country code.
pub(crate) fn phone_forms(phone: &str) -> Vec<String> {
    let digits: String = phone.chars().filter(char::is_ascii_digit).collect();
    let mut forms = vec![digits.clone()];
    if phone.starts_with("+86") {
        if let Some(national) = digits.strip_prefix("86") {
            forms.push(national.to_owned());
        }
    }
    forms
}

pub(crate) fn index_prefix(field: &str, value: &str) -> Vec<u8> {
    let mut key = format!("x/{field}/{value}").into_bytes();
    key.push(0);
    key
}

pub(crate) fn index_key(field: &str, value: &str, id: &str) -> Vec<u8> {
    let mut key = index_prefix(field, value);
    key.extend_from_slice(id.as_bytes());
    key
}

pub(crate) fn customer_key(id: &Uuid) -> Vec<u8> {
    format!("c/{id}").into_bytes()
}

fn opportunity_key(id: &Uuid) -> Vec<u8> {
    format!("o/{id}").into_bytes()
}

/// What the customers tree stores.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Value {
    Customer(Box<CustomerView>),
    /// An index entry; the key says it all.
    Indexed,
    /// An opportunity's customer.
    OpportunityOf(Uuid),
}

/// The customers projector. It reads no rule.
#[derive(Debug, Clone, Copy, Default)]
pub struct CustomersProjector;

fn tags_of(fields: &BTreeMap<String, String>) -> Vec<String> {
    let mut tags: Vec<String> = fields
        .get("custom.tags")
        .map(|t| t.split([',', '，']).map(str::trim).filter(|t| !t.is_empty()).map(str::to_owned).collect())
        .unwrap_or_default();
    tags.sort();
    tags.dedup();
    tags
}

type Result<T = ()> = std::result::Result<T, String>;

impl CustomersProjector {
    /// The record of customer `id`, stamped as changed by `recorded`.
    fn touched<'s>(
        state: &'s mut State<'_, Value>,
        recorded: &RecordedEvent,
        id: &Uuid,
    ) -> Result<&'s mut CustomerView> {
        match state.get_mut(&customer_key(id))? {
            Some(Value::Customer(view)) => {
                view.updated_at_micros = recorded.recorded_at_micros;
                view.updated_position = recorded.position;
                Ok(view)
            }
            _ => Err(format!("customer {id} is not known (event {})", recorded.event_type)),
        }
    }

    /// Changes one customer with `f` in place, keeping its index entries in step.
    fn change(
        state: &mut State<'_, Value>,
        recorded: &RecordedEvent,
        id: Uuid,
        f: impl FnOnce(&mut CustomerView),
    ) -> Result {
        let view = Self::touched(state, recorded, &id)?;
        let before = view.index_fields();
        f(view);
        view.tags = tags_of(&view.fields);
        let after = view.index_fields();
        if after != before {
            let (gone, added) = IndexFields::changed_keys(&before, &after, &id);
            for key in gone {
                state.remove(key);
            }
            for key in added {
                state.put(key, Value::Indexed);
            }
        }
        Ok(())
    }

    /// The opportunity's key, or, once it is loaded (the runner's second round), its
    /// customer's: what [`Self::set_stage`] reads.
    fn prefetch_through(opportunity: Uuid, cached: &Cached<'_, Value>, keys: &mut Vec<Vec<u8>>) {
        let key = opportunity_key(&opportunity);
        match cached.get(&key) {
            Some(Value::OpportunityOf(customer)) => keys.push(customer_key(customer)),
            _ => keys.push(key),
        }
    }

    fn set_stage(state: &mut State<'_, Value>, recorded: &RecordedEvent, opportunity: Uuid, stage: &str) -> Result {
        match state.get(&opportunity_key(&opportunity))? {
            Some(Value::OpportunityOf(customer)) => {
                let customer = *customer;
                Self::move_stage(state, recorded, customer, stage)
            }
            _ => Err(format!("opportunity {opportunity} is not known")),
        }
    }

    /// Sets a customer's stage: only its stage entry can move, so that one is changed
    /// directly (no other index field is looked at).
    fn move_stage(state: &mut State<'_, Value>, recorded: &RecordedEvent, customer: Uuid, stage: &str) -> Result {
        let view = Self::touched(state, recorded, &customer)?;
        let (old, indexed) = (view.stage.replace(stage.to_owned()), view.absorbed_into.is_none());
        if indexed && old.as_deref() != Some(stage) {
            let id = customer.to_string();
            if let Some(old) = old.filter(|old| !old.is_empty()) {
                state.remove(index_key("stage", &old, &id));
            }
            if !stage.is_empty() {
                state.put(index_key("stage", stage, &id), Value::Indexed);
            }
        }
        Ok(())
    }
}

impl Projector for CustomersProjector {
    type Value = Value;

    fn name(&self) -> &'static str {
        "customers"
    }

    fn version(&self) -> u32 {
        1
    }

    fn fingerprint(&self, rules: &Rules) -> u64 {
        // Stage names are taken from events; no rule is read.
        let _ = rules;
        0
    }

    fn prefetch(
        &self,
        _: &Rules,
        _: &RecordedEvent,
        event: Option<&Event>,
        cached: &Cached<'_, Value>,
        keys: &mut Vec<Vec<u8>>,
    ) {
        let customer = match event {
            Some(Event::CustomerCreated(e)) => e.customer_id.0,
            Some(Event::CustomerUpdated(e)) => e.customer_id.0,
            Some(Event::ContactAdded(e)) => e.customer_id.0,
            Some(Event::ActivityLogged(e)) => e.customer_id.0,
            Some(Event::CustomersMerged(e)) => e.survivor_id.0,
            Some(Event::CustomerUnmerged(e)) => e.survivor_id.0,
            Some(Event::CustomerAbsorbed(e)) => e.absorbed_id.0,
            Some(Event::CustomerRestored(e)) => e.absorbed_id.0,
            Some(Event::CustomerDealWon(e)) => e.customer_id.0,
            Some(Event::OwnerChanged(e)) => match e.subject {
                Owned::Customer(id) => id.0,
                _ => return,
            },
            Some(Event::OpportunityOpened(e)) => e.customer_id.0,
            Some(Event::StageMoved(e)) => return Self::prefetch_through(e.opportunity_id.0, cached, keys),
            Some(Event::OpportunityWon(e)) => return Self::prefetch_through(e.opportunity_id.0, cached, keys),
            Some(Event::OpportunityLost(e)) => return Self::prefetch_through(e.opportunity_id.0, cached, keys),
            _ => return,
        };
        keys.push(customer_key(&customer));
    }

    fn apply(
        &self,
        state: &mut State<'_, Value>,
        rules: &Rules,
        recorded: &RecordedEvent,
        event: Option<&Event>,
    ) -> Result {
        let _ = rules;
        let Some(event) = event else { return Ok(()) };
        match event {
            Event::CustomerCreated(e) => {
                let view = CustomerView {
                    id: e.customer_id.0,
                    fields: e.fields.clone(),
                    owner: e.owner.map(|o| o.0),
                    stage: None,
                    tags: tags_of(&e.fields),
                    created_at_micros: recorded.recorded_at_micros,
                    updated_at_micros: recorded.recorded_at_micros,
                    updated_position: recorded.position,
                    from_lead: e.from_lead.map(|l| l.0),
                    absorbed_into: None,
                    merged: Vec::new(),
                    contacts: 0,
                    activities: 0,
                    last_activity_micros: None,
                    won_deals: 0,
                };
                let key = customer_key(&view.id);
                if state.get(&key)?.is_some() {
                    return Err(format!("customer {} created twice", view.id));
                }
                for index in view.index_keys() {
                    state.put(index, Value::Indexed);
                }
                state.put(key, Value::Customer(Box::new(view)));
                Ok(())
            }
            Event::CustomerUpdated(e) => {
                Self::change(state, recorded, e.customer_id.0, |v| apply_changes(&mut v.fields, &e.changes))
            }
            // Counters only: no index entry can move, so no index field is compared.
            Event::ContactAdded(e) => Self::touched(state, recorded, &e.customer_id.0).map(|v| v.contacts += 1),
            Event::ActivityLogged(e) => Self::touched(state, recorded, &e.customer_id.0).map(|v| {
                v.activities += 1;
                let at = e.occurred_at.timestamp_micros();
                v.last_activity_micros = Some(v.last_activity_micros.map_or(at, |last| last.max(at)));
            }),
            Event::CustomersMerged(e) => Self::change(state, recorded, e.survivor_id.0, |v| {
                apply_changes(&mut v.fields, &e.field_changes);
                v.merged.push(e.absorbed_id.0);
            }),
            Event::CustomerUnmerged(e) => Self::change(state, recorded, e.survivor_id.0, |v| {
                apply_changes(&mut v.fields, &e.restored);
                v.merged.retain(|m| *m != e.absorbed_id.0);
            }),
            Event::CustomerAbsorbed(e) => {
                Self::change(state, recorded, e.absorbed_id.0, |v| v.absorbed_into = Some(e.survivor_id.0))
            }
            Event::CustomerRestored(e) => Self::change(state, recorded, e.absorbed_id.0, |v| v.absorbed_into = None),
            Event::CustomerDealWon(e) => Self::touched(state, recorded, &e.customer_id.0).map(|v| v.won_deals += 1),
            Event::OwnerChanged(e) => match e.subject {
                Owned::Customer(id) => Self::change(state, recorded, id.0, |v| v.owner = Some(e.to.0)),
                _ => Ok(()),
            },
            Event::OpportunityOpened(e) => {
                state.put(opportunity_key(&e.opportunity_id.0), Value::OpportunityOf(e.customer_id.0));
                Self::move_stage(state, recorded, e.customer_id.0, &e.stage)
            }
            Event::StageMoved(e) => Self::set_stage(state, recorded, e.opportunity_id.0, &e.to),
            Event::OpportunityWon(e) => Self::set_stage(state, recorded, e.opportunity_id.0, crm_domain::STAGE_WON),
            Event::OpportunityLost(e) => Self::set_stage(state, recorded, e.opportunity_id.0, crm_domain::STAGE_LOST),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn fields() -> impl Strategy<Value = IndexFields> {
        let text = || proptest::option::of(prop_oneof![Just(String::new()), "[a-c ]{1,3}"]);
        (
            any::<bool>(),
            proptest::option::of(0u128..3),
            (text(), text(), text()),
            proptest::collection::vec("[a-c]{1,2}", 0..3),
            0i64..3,
            text(),
            proptest::option::of(prop_oneof![Just("+8613800000001".to_owned()), Just("+12025550100".to_owned())]),
        )
            .prop_map(|(absorbed, owner, (region, industry, stage), mut tags, created, name, phone)| {
                tags.sort();
                tags.dedup();
                IndexFields {
                    absorbed,
                    owner: owner.map(Uuid::from_u128),
                    region,
                    industry,
                    stage,
                    tags,
                    created_at_micros: created,
                    name,
                    phone,
                }
            })
    }

    proptest! {
        /// Computing only the changed kinds gives the same removals and additions as
        /// diffing every key of both versions.
        #[test]
        fn changed_keys_equal_the_full_difference(before in fields(), after in fields()) {
            let id = Uuid::from_u128(7);
            let (all_before, all_after) = (before.keys(&id), after.keys(&id));
            let gone: Vec<_> = all_before.difference(&all_after).cloned().collect();
            let added: Vec<_> = all_after.difference(&all_before).cloned().collect();
            prop_assert_eq!(IndexFields::changed_keys(&before, &after, &id), (gone, added));
        }
    }
}
