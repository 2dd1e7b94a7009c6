use std::collections::{BTreeMap, BTreeSet, HashMap};

use crm_domain::{apply_changes, Event, Owned, Rules};
use crm_eventlog::RecordedEvent;
use crm_projection_runtime::{
    bucket_key, bucket_of, in_halves, printable_key, push_hex, warm, Cached, Derived, Projector, State,
};
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
    /// A record as its creation makes it: no stage, no merges, counters at zero, created
    /// and changed at `at_micros` by the event at `position`.
    pub(crate) fn created(
        id: Uuid,
        fields: BTreeMap<String, String>,
        owner: Option<Uuid>,
        from_lead: Option<Uuid>,
        at_micros: i64,
        position: u64,
    ) -> Self {
        CustomerView {
            id,
            tags: tags_of(&fields),
            fields,
            owner,
            stage: None,
            created_at_micros: at_micros,
            updated_at_micros: at_micros,
            updated_position: position,
            from_lead,
            absorbed_into: None,
            merged: Vec::new(),
            contacts: 0,
            activities: 0,
            last_activity_micros: None,
            won_deals: 0,
        }
    }

    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields.get(name).map(String::as_str)
    }

    /// The index entries this record should have, each as [`index_entries`] spells a stored
    /// one (the tree holds exactly these for it).
    pub fn index_entries(&self) -> BTreeSet<Vec<u8>> {
        self.index_fields().entries(&self.id).iter().map(|entry| entry.spelled(&self.id)).collect()
    }

    /// What its index entries are made of.
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

/// Every index entry the stored `key` and `value` hold, spelled as
/// [`CustomerView::index_entries`] spells them: a postings block's key followed by `/` and
/// each id (creation blocks: `/`, the time as 20 digits, and the id), a key of its own as it
/// is. Empty for keys that are not index entries.
pub fn index_entries(key: &[u8], value: &Value) -> Vec<Vec<u8>> {
    let spell = |tail: String| {
        let mut entry = key.to_vec();
        entry.push(b'/');
        entry.extend_from_slice(tail.as_bytes());
        entry
    };
    match value {
        Value::Indexed => vec![key.to_vec()],
        Value::Postings(ids) => ids.iter().map(|id| spell(id.to_string())).collect(),
        Value::Created(entries) => {
            entries.iter().map(|(at, id)| spell(format!("{}{id}", created_value(*at)))).collect()
        }
        _ => Vec::new(),
    }
}

/// The parts of a [`CustomerView`] its index entries are made of: most events (activities,
/// contacts, wins) change none of them, so comparing these spares computing the entries.
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

/// Where one index entry of a customer is stored.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Entry {
    /// The customer's id in the postings block under this key (owner, region, industry,
    /// stage, tag; see [`posting_key`]).
    Posting(Vec<u8>),
    /// The customer's id and creation time in the creation-time block under this key (see
    /// [`created_key`]).
    Created(Vec<u8>, i64),
    /// A key of its own (name, phone; see [`index_key`]), valued [`Value::Indexed`].
    Key(Vec<u8>),
}

impl Entry {
    /// The block this entry is kept in, if it shares one with other entries.
    fn block(&self) -> Option<&[u8]> {
        match self {
            Entry::Posting(key) | Entry::Created(key, _) => Some(key),
            Entry::Key(_) => None,
        }
    }

    /// This entry as [`index_entries`] spells a stored one.
    fn spelled(&self, id: &Uuid) -> Vec<u8> {
        match self {
            Entry::Posting(key) => index_entries(key, &Value::Postings(vec![*id])).remove(0),
            Entry::Created(key, at) => index_entries(key, &Value::Created(vec![(*at, *id)])).remove(0),
            Entry::Key(key) => key.clone(),
        }
    }
}

impl IndexFields {
    fn entries(&self, id: &Uuid) -> BTreeSet<Entry> {
        let mut entries = BTreeSet::new();
        if !self.absorbed {
            for kind in KINDS {
                self.entries_of(kind, id, &mut entries);
            }
        }
        entries
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

    /// Adds the entries of `kind` to `entries`.
    fn entries_of(&self, kind: Kind, id: &Uuid, entries: &mut BTreeSet<Entry>) {
        let mut posting = |field: &str, value: &str| {
            if !value.is_empty() {
                entries.insert(Entry::Posting(posting_key(field, value, id)));
            }
        };
        match kind {
            Kind::Owner => {
                if let Some(owner) = self.owner {
                    posting("owner", &owner.to_string());
                }
            }
            Kind::Region => posting("region", self.region.as_deref().unwrap_or_default()),
            Kind::Industry => posting("industry", self.industry.as_deref().unwrap_or_default()),
            Kind::Stage => posting("stage", self.stage.as_deref().unwrap_or_default()),
            Kind::Tag => {
                for tag in &self.tags {
                    posting("tag", tag);
                }
            }
            Kind::Created => {
                entries.insert(Entry::Created(created_key(self.created_at_micros), self.created_at_micros));
            }
            Kind::Name | Kind::Phone => {
                let mut key = |field: &str, value: &str| {
                    if !value.is_empty() {
                        entries.insert(Entry::Key(index_key(field, value, &id.to_string())));
                    }
                };
                if kind == Kind::Name {
                    if let Some(name) = &self.name {
                        key("name", &search_name(name));
                    }
                } else if let Some(phone) = &self.phone {
                    key("phone", &phone_key_form(phone));
                }
            }
        }
    }

    /// The entries `before` has and `after` lacks, and the entries `after` adds: only the
    /// kinds that changed are computed (a stage move makes two entries, not twenty).
    fn changed(before: &IndexFields, after: &IndexFields, id: &Uuid) -> (Vec<Entry>, Vec<Entry>) {
        let (old, new) = if before.absorbed != after.absorbed {
            (before.entries(id), after.entries(id))
        } else if before.absorbed {
            return (Vec::new(), Vec::new());
        } else {
            let (mut old, mut new) = (BTreeSet::new(), BTreeSet::new());
            for kind in KINDS.into_iter().filter(|kind| before.differs(after, *kind)) {
                before.entries_of(kind, id, &mut old);
                after.entries_of(kind, id, &mut new);
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

/// The digits a phone is indexed by: a +86 number's national digits, any other number's
/// digits with the country code (version 1 indexed a +86 number both ways).
pub(crate) fn phone_key_form(phone: &str) -> String {
    let digits: String = phone.chars().filter(char::is_ascii_digit).collect();
    match digits.strip_prefix("86") {
        Some(national) if phone.starts_with("+86") => national.to_owned(),
        _ => digits,
    }
}

/// `x/<field>/<value>\0`: where a search's keys of their own start.
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

/// `p/<field>/<value>\0`: where the postings blocks of one value start.
pub(crate) fn postings_prefix(field: &str, value: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(field.len() + value.len() + 8);
    key.extend_from_slice(b"p/");
    key.extend_from_slice(field.as_bytes());
    key.push(b'/');
    key.extend_from_slice(value.as_bytes());
    key.push(0);
    key
}

/// Hex digits of a postings block's bucket for `field`: an owner's customers are spread
/// over 16 blocks (an owner has hundreds to thousands of customers), a region's, stage's,
/// industry's or tag's over 4,096 (each can be a large share of all customers: at a million
/// customers a block then holds tens of ids, so a live change rewrites about a KB; figures
/// by arithmetic, not measured).
pub(crate) fn bucket_digits(field: &str) -> u32 {
    if field == "owner" {
        1
    } else {
        3
    }
}

/// `p/<field>/<value>\0<bucket>`: the postings block holding customer `id` among those with
/// this value, the bucket being the low bits of the id's own bucket
/// ([`crm_projection_runtime::bucket_of`]), as [`bucket_digits`] hex digits. A block holds
/// its ids in order.
pub(crate) fn posting_key(field: &str, value: &str, id: &Uuid) -> Vec<u8> {
    let mut key = postings_prefix(field, value);
    push_hex(&mut key, u64::from(bucket_of(id)), bucket_digits(field));
    key
}

/// Creation-time blocks span 2^18 microseconds (0.26 s): an import or a load of a few
/// thousand new customers a second fills a block with a few hundred.
const CREATED_BLOCK_BITS: u32 = 18;

pub(crate) const CREATED_PREFIX: &[u8] = b"p/created/";

/// `p/created/<block as 16 hex digits>`: the block of customers created in the same 2^18
/// microseconds as `micros` (times before 1970 count as 0), holding `(time, id)` in order.
pub(crate) fn created_key(micros: i64) -> Vec<u8> {
    let mut key = CREATED_PREFIX.to_vec();
    push_hex(&mut key, (micros.max(0) as u64) >> CREATED_BLOCK_BITS, 16);
    key
}

pub(crate) fn customer_key(id: &Uuid) -> Vec<u8> {
    format!("c/{id}").into_bytes()
}

/// `o/<bucket>`: the opportunities of one bucket of ids.
fn opportunity_key(id: &Uuid) -> Vec<u8> {
    bucket_key(b'o', id)
}

/// What the customers tree stores. Variants keep their positions (the encoding's tag), so a
/// tree of an older version decodes while it serves during the rebuild that replaces it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Value {
    Customer(Box<CustomerView>),
    /// An index entry of its own (name, phone; version 1: every field); the key says it all.
    Indexed,
    /// Version 1: an opportunity's customer, one key per opportunity.
    OpportunityOf(Uuid),
    /// `o/<bucket>`: the customers of the opportunities whose id falls in one bucket.
    Opportunities(BTreeMap<Uuid, Uuid>),
    /// `p/<field>/<value>\0<bucket>`: the ids of customers with that value, in order.
    Postings(Vec<Uuid>),
    /// `p/created/<block>`: `(creation time, id)` of the customers created in that block of
    /// time, in order.
    Created(Vec<(i64, Uuid)>),
}

/// The event types `apply` reads; the runner decodes no other (leads' and tasks' events
/// are most of a log).
pub(crate) const DECODED: &[&str] = &[
    "CustomerCreated",
    "CustomerUpdated",
    "ContactAdded",
    "ActivityLogged",
    "CustomersMerged",
    "CustomerUnmerged",
    "CustomerAbsorbed",
    "CustomerRestored",
    "CustomerDealWon",
    "OwnerChanged",
    "OpportunityOpened",
    "StageMoved",
    "OpportunityWon",
    "OpportunityLost",
];

/// Most opportunities [`OPENED`] remembers before it starts over.
const OPENED_MEMO: usize = 65_536;

thread_local! {
    /// Opportunities whose opening [`CustomersProjector::prefetch`] listed lately, with their
    /// customers: a stage change of one opened in the same chunk of events is not in its
    /// bucket yet, and names no customer. An opportunity's customer never changes, so what
    /// this holds is true for every build on the thread; it only picks which keys are read
    /// ahead, never what `apply` computes.
    static OPENED: std::cell::RefCell<std::collections::HashMap<Uuid, Uuid>> = Default::default();
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

/// The record a [`crm_domain::CustomerCreated`] makes.
fn created_view(e: &crm_domain::CustomerCreated, recorded: &RecordedEvent) -> CustomerView {
    let (owner, from_lead) = (e.owner.map(|o| o.0), e.from_lead.map(|l| l.0));
    CustomerView::created(
        e.customer_id.0,
        e.fields.clone(),
        owner,
        from_lead,
        recorded.recorded_at_micros,
        recorded.position,
    )
}

/// A change of a customer that can move its index entries.
type Edit<'e> = Box<dyn FnOnce(&mut CustomerView) + 'e>;

/// The customer `event` edits in a way that can move its index entries, and the edit.
fn edit_of(event: &Event) -> Option<(Uuid, Edit<'_>)> {
    Some(match event {
        Event::CustomerUpdated(e) => (e.customer_id.0, Box::new(|v| apply_changes(&mut v.fields, &e.changes))),
        Event::CustomersMerged(e) => (
            e.survivor_id.0,
            Box::new(|v| {
                apply_changes(&mut v.fields, &e.field_changes);
                v.merged.push(e.absorbed_id.0);
            }),
        ),
        Event::CustomerUnmerged(e) => (
            e.survivor_id.0,
            Box::new(|v| {
                apply_changes(&mut v.fields, &e.restored);
                v.merged.retain(|m| *m != e.absorbed_id.0);
            }),
        ),
        Event::CustomerAbsorbed(e) => (e.absorbed_id.0, Box::new(|v| v.absorbed_into = Some(e.survivor_id.0))),
        Event::CustomerRestored(e) => (e.absorbed_id.0, Box::new(|v| v.absorbed_into = None)),
        Event::OwnerChanged(e) => match e.subject {
            Owned::Customer(id) => (id.0, Box::new(|v| v.owner = Some(e.to.0))),
            _ => return None,
        },
        _ => return None,
    })
}

/// Applies `edit` to `view`, keeping its tags in step with its fields.
fn edit_view(view: &mut CustomerView, edit: Edit<'_>) {
    edit(view);
    view.tags = tags_of(&view.fields);
}

/// Adds `id`'s `entry` to the index.
fn add_entry(state: &mut State<'_, Value>, entry: Entry, id: Uuid) -> Result {
    match entry {
        Entry::Posting(key) => match state.get_or_insert_with(&key, || Value::Postings(Vec::new()))? {
            Value::Postings(ids) => {
                if let Err(at) = ids.binary_search(&id) {
                    ids.insert(at, id);
                }
                Ok(())
            }
            other => Err(format!("expected a postings block at {}, found {other:?}", printable_key(&key))),
        },
        Entry::Created(key, at) => match state.get_or_insert_with(&key, || Value::Created(Vec::new()))? {
            Value::Created(entries) => {
                if let Err(i) = entries.binary_search(&(at, id)) {
                    entries.insert(i, (at, id));
                }
                Ok(())
            }
            other => Err(format!("expected a creation block at {}, found {other:?}", printable_key(&key))),
        },
        Entry::Key(key) => {
            state.put(key, Value::Indexed);
            Ok(())
        }
    }
}

/// Removes `id`'s `entry` from the index; a block left empty is removed.
fn remove_entry(state: &mut State<'_, Value>, entry: Entry, id: Uuid) -> Result {
    let (key, at) = match entry {
        Entry::Key(key) => {
            state.remove(key);
            return Ok(());
        }
        Entry::Posting(key) => (key, None),
        Entry::Created(key, at) => (key, Some(at)),
    };
    let empty = match (state.get_mut(&key)?, at) {
        (None, _) => false,
        (Some(Value::Postings(ids)), None) => {
            if let Ok(i) = ids.binary_search(&id) {
                ids.remove(i);
            }
            ids.is_empty()
        }
        (Some(Value::Created(entries)), Some(at)) => {
            if let Ok(i) = entries.binary_search(&(at, id)) {
                entries.remove(i);
            }
            entries.is_empty()
        }
        (Some(other), _) => return Err(format!("expected an index block at {}, found {other:?}", printable_key(&key))),
    };
    if empty {
        state.remove(key);
    }
    Ok(())
}

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

    /// Changes one customer with `edit` in place, keeping its index entries in step (unless
    /// a fresh build derives them at its first commit).
    fn change(state: &mut State<'_, Value>, recorded: &RecordedEvent, id: Uuid, edit: Edit<'_>) -> Result {
        let fresh = state.fresh();
        let view = Self::touched(state, recorded, &id)?;
        if fresh {
            edit_view(view, edit);
            return Ok(());
        }
        let before = view.index_fields();
        edit_view(view, edit);
        let after = view.index_fields();
        if after != before {
            let (gone, added) = IndexFields::changed(&before, &after, &id);
            for entry in gone {
                remove_entry(state, entry, id)?;
            }
            for entry in added {
                add_entry(state, entry, id)?;
            }
        }
        Ok(())
    }

    /// The customer of `opportunity`, from its bucket.
    fn customer_of(bucket: Option<&Value>, opportunity: &Uuid) -> Option<Uuid> {
        match bucket {
            Some(Value::Opportunities(opportunities)) => opportunities.get(opportunity).copied(),
            _ => None,
        }
    }

    /// What a move of `customer` to `stage` reads: the customer, and once it is in memory
    /// (the runner's next round), the stage blocks it leaves and joins.
    fn prefetch_stage(customer: Uuid, stage: &str, cached: &Cached<'_, Value>, keys: &mut Vec<Vec<u8>>) {
        let key = customer_key(&customer);
        match cached.get(&key) {
            Some(Value::Customer(view)) => {
                if view.absorbed_into.is_none() && view.stage.as_deref() != Some(stage) {
                    if let Some(old) = view.stage.as_deref().filter(|old| !old.is_empty()) {
                        keys.push(posting_key("stage", old, &customer));
                    }
                    if !stage.is_empty() {
                        keys.push(posting_key("stage", stage, &customer));
                    }
                }
            }
            // Not in memory yet; if it is new (created in the same chunk), it has no stage
            // to leave.
            _ => {
                keys.push(key);
                if !stage.is_empty() {
                    keys.push(posting_key("stage", stage, &customer));
                }
            }
        }
    }

    /// What a stage change of `opportunity` reads: its bucket, then its customer's move.
    fn prefetch_through(opportunity: Uuid, stage: &str, cached: &Cached<'_, Value>, keys: &mut Vec<Vec<u8>>) {
        let key = opportunity_key(&opportunity);
        let bucket = cached.get(&key);
        if bucket.is_none() {
            keys.push(key);
        }
        let customer = Self::customer_of(bucket, &opportunity)
            .or_else(|| OPENED.with(|opened| opened.borrow().get(&opportunity).copied()));
        if let Some(customer) = customer {
            Self::prefetch_stage(customer, stage, cached, keys);
        }
    }

    fn set_stage(state: &mut State<'_, Value>, recorded: &RecordedEvent, opportunity: Uuid, stage: &str) -> Result {
        match Self::customer_of(state.get(&opportunity_key(&opportunity))?, &opportunity) {
            Some(customer) => Self::move_stage(state, recorded, customer, stage),
            None => Err(format!("opportunity {opportunity} is not known")),
        }
    }

    /// Sets a customer's stage: only its stage entry can move, so that one is changed
    /// directly (no other index field is looked at).
    fn move_stage(state: &mut State<'_, Value>, recorded: &RecordedEvent, customer: Uuid, stage: &str) -> Result {
        let fresh = state.fresh();
        let view = Self::touched(state, recorded, &customer)?;
        let (old, indexed) = (view.stage.replace(stage.to_owned()), view.absorbed_into.is_none());
        if indexed && !fresh && old.as_deref() != Some(stage) {
            if let Some(old) = old.filter(|old| !old.is_empty()) {
                remove_entry(state, Entry::Posting(posting_key("stage", &old, &customer)), customer)?;
            }
            if !stage.is_empty() {
                add_entry(state, Entry::Posting(posting_key("stage", stage, &customer)), customer)?;
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

    /// Version 2: index entries of owners, regions, industries, stages, tags and creation
    /// times in blocks, opportunities in buckets (version 1: a key for each).
    fn version(&self) -> u32 {
        2
    }

    fn decodes(&self, event_type: &str) -> bool {
        DECODED.contains(&event_type)
    }

    fn fingerprint(&self, rules: &Rules) -> u64 {
        // Stage names are taken from events; no rule is read.
        let _ = rules;
        0
    }

    /// Every key `apply` reads: the customer, and once it is in memory the blocks its index
    /// entries leave and join (a stage change: the opportunity's bucket first). A new
    /// customer's blocks follow from the event alone.
    fn prefetch(
        &self,
        _: &Rules,
        recorded: &RecordedEvent,
        event: Option<&Event>,
        cached: &Cached<'_, Value>,
        keys: &mut Vec<Vec<u8>>,
    ) {
        let customer = match event {
            Some(Event::CustomerCreated(e)) => {
                let view = created_view(e, recorded);
                keys.extend(view.index_fields().entries(&view.id).iter().filter_map(Entry::block).map(<[u8]>::to_vec));
                e.customer_id.0
            }
            Some(Event::ContactAdded(e)) => e.customer_id.0,
            Some(Event::ActivityLogged(e)) => e.customer_id.0,
            Some(Event::CustomerDealWon(e)) => e.customer_id.0,
            Some(Event::OpportunityOpened(e)) => {
                keys.push(opportunity_key(&e.opportunity_id.0));
                OPENED.with(|opened| {
                    let mut opened = opened.borrow_mut();
                    if opened.len() >= OPENED_MEMO {
                        opened.clear();
                    }
                    opened.insert(e.opportunity_id.0, e.customer_id.0);
                });
                return Self::prefetch_stage(e.customer_id.0, &e.stage, cached, keys);
            }
            Some(Event::StageMoved(e)) => return Self::prefetch_through(e.opportunity_id.0, &e.to, cached, keys),
            Some(Event::OpportunityWon(e)) => {
                keys.push(opportunity_key(&e.opportunity_id.0));
                return Self::prefetch_stage(e.customer_id.0, crm_domain::STAGE_WON, cached, keys);
            }
            Some(Event::OpportunityLost(e)) => {
                return Self::prefetch_through(e.opportunity_id.0, crm_domain::STAGE_LOST, cached, keys)
            }
            Some(event) => match edit_of(event) {
                Some((id, edit)) => {
                    let key = customer_key(&id);
                    let Some(Value::Customer(view)) = cached.get(&key) else { return keys.push(key) };
                    let mut after = (**view).clone();
                    edit_view(&mut after, edit);
                    let (gone, added) = IndexFields::changed(&view.index_fields(), &after.index_fields(), &id);
                    keys.extend(gone.iter().chain(&added).filter_map(Entry::block).map(<[u8]>::to_vec));
                    return;
                }
                None => return,
            },
            None => return,
        };
        keys.push(customer_key(&customer));
    }

    /// The customer an event names, and an opportunity's bucket (whose customer, for a stage
    /// move, only the bucket knows).
    fn first_keys(&self, _: &RecordedEvent, event: Option<&Event>, keys: &mut Vec<Vec<u8>>) {
        let (customer, opportunity) = match event {
            Some(Event::OpportunityOpened(e)) => (Some(e.customer_id.0), Some(e.opportunity_id.0)),
            Some(Event::OpportunityWon(e)) => (Some(e.customer_id.0), Some(e.opportunity_id.0)),
            Some(Event::StageMoved(e)) => (None, Some(e.opportunity_id.0)),
            Some(Event::OpportunityLost(e)) => (None, Some(e.opportunity_id.0)),
            Some(Event::CustomerCreated(e)) => (Some(e.customer_id.0), None),
            Some(Event::ContactAdded(e)) => (Some(e.customer_id.0), None),
            Some(Event::ActivityLogged(e)) => (Some(e.customer_id.0), None),
            Some(Event::CustomerDealWon(e)) => (Some(e.customer_id.0), None),
            Some(event) => (edit_of(event).map(|(id, _)| id), None),
            None => (None, None),
        };
        keys.extend(opportunity.as_ref().map(opportunity_key));
        keys.extend(customer.as_ref().map(customer_key));
    }

    /// A record's fields that every event changes (its stamp, counters and stage).
    fn warm_value(&self, value: &Value) {
        if let Value::Customer(view) = value {
            warm(&view.updated_at_micros);
            warm(&view.updated_position);
            warm(&view.stage);
            warm(&view.activities);
        }
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
        if let Some((id, edit)) = edit_of(event) {
            return Self::change(state, recorded, id, edit);
        }
        match event {
            Event::CustomerCreated(e) => {
                let view = created_view(e, recorded);
                let key = customer_key(&view.id);
                if state.get(&key)?.is_some() {
                    return Err(format!("customer {} created twice", view.id));
                }
                if !state.fresh() {
                    for entry in view.index_fields().entries(&view.id) {
                        add_entry(state, entry, view.id)?;
                    }
                }
                state.put(key, Value::Customer(Box::new(view)));
                Ok(())
            }
            // Counters only: no index entry can move, so no index field is compared.
            Event::ContactAdded(e) => Self::touched(state, recorded, &e.customer_id.0).map(|v| v.contacts += 1),
            Event::ActivityLogged(e) => Self::touched(state, recorded, &e.customer_id.0).map(|v| {
                v.activities += 1;
                let at = e.occurred_at.timestamp_micros();
                v.last_activity_micros = Some(v.last_activity_micros.map_or(at, |last| last.max(at)));
            }),
            Event::CustomerDealWon(e) => Self::touched(state, recorded, &e.customer_id.0).map(|v| v.won_deals += 1),
            Event::OpportunityOpened(e) => {
                let (opportunity, customer) = (e.opportunity_id.0, e.customer_id.0);
                match state
                    .get_or_insert_with(&opportunity_key(&opportunity), || Value::Opportunities(BTreeMap::new()))?
                {
                    Value::Opportunities(opportunities) => opportunities.insert(opportunity, customer),
                    other => return Err(format!("expected a bucket of opportunities, found {other:?}")),
                };
                Self::move_stage(state, recorded, customer, &e.stage)
            }
            Event::StageMoved(e) => Self::set_stage(state, recorded, e.opportunity_id.0, &e.to),
            Event::OpportunityWon(e) => Self::set_stage(state, recorded, e.opportunity_id.0, crm_domain::STAGE_WON),
            Event::OpportunityLost(e) => Self::set_stage(state, recorded, e.opportunity_id.0, crm_domain::STAGE_LOST),
            _ => Ok(()),
        }
    }

    /// The index of a fresh build, from its records as they stand at its first commit (in a
    /// rebuild, usually the last): each block's ids gathered, then put in order once, instead
    /// of inserted into blocks (and moved between stage blocks) event by event. `apply` wrote
    /// no index entry before this (see [`State::fresh`]). Many records are split between two
    /// threads ([`in_halves`]).
    fn derive_fresh(&self, state: &State<'_, Value>) -> Result<Derived<Value>> {
        let mut views: Vec<&CustomerView> = state
            .held()
            .filter_map(|(_, value)| match value {
                Value::Customer(view) => Some(&**view),
                _ => None,
            })
            .collect();
        let mut all = Gathered::default();
        for part in in_halves(&mut views, |part| Gathered::of(part)) {
            all.merge(part);
        }
        let Gathered { postings, created, keys } = all;
        tracing::debug!(
            records = views.len(),
            postings = postings.len(),
            creation_blocks = created.len(),
            name_and_phone_keys = keys.len(),
            "derived the customers index"
        );
        let mut derived = Vec::with_capacity(postings.len() + created.len() + keys.len());
        derived.extend(postings.into_iter().map(|(key, mut ids)| {
            ids.sort_unstable();
            (key, Value::Postings(ids))
        }));
        derived.extend(created.into_iter().map(|(key, mut entries)| {
            entries.sort_unstable();
            (key, Value::Created(entries))
        }));
        derived.extend(keys.into_iter().map(|key| (key, Value::Indexed)));
        Ok(derived)
    }
}

/// A map keyed by index keys (foldhash: several times faster than std's SipHash on them).
type KeyMap<V> = HashMap<Vec<u8>, V, foldhash::fast::RandomState>;

/// The index entries of some records, gathered by block ([`CustomersProjector::derive_fresh`]).
#[derive(Default)]
struct Gathered {
    postings: KeyMap<Vec<Uuid>>,
    created: KeyMap<Vec<(i64, Uuid)>>,
    keys: Vec<Vec<u8>>,
}

impl Gathered {
    fn of(views: &[&CustomerView]) -> Self {
        let mut gathered = Gathered { keys: Vec::with_capacity(2 * views.len()), ..Gathered::default() };
        for view in views {
            for entry in view.index_fields().entries(&view.id) {
                match entry {
                    Entry::Posting(key) => gathered.postings.entry(key).or_default().push(view.id),
                    Entry::Created(key, at) => gathered.created.entry(key).or_default().push((at, view.id)),
                    Entry::Key(key) => gathered.keys.push(key),
                }
            }
        }
        gathered
    }

    fn merge(&mut self, other: Gathered) {
        if self.keys.is_empty() && self.postings.is_empty() && self.created.is_empty() {
            *self = other;
            return;
        }
        for (key, ids) in other.postings {
            self.postings.entry(key).or_default().extend(ids);
        }
        for (key, entries) in other.created {
            self.created.entry(key).or_default().extend(entries);
        }
        self.keys.extend(other.keys);
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

    #[test]
    fn every_decoded_type_exists() {
        crm_projection_runtime::testing::assert_event_types_exist(DECODED);
    }

    proptest! {
        /// Computing only the changed kinds gives the same removals and additions as
        /// diffing every entry of both versions.
        #[test]
        fn changed_entries_equal_the_full_difference(before in fields(), after in fields()) {
            let id = Uuid::from_u128(7);
            let (all_before, all_after) = (before.entries(&id), after.entries(&id));
            let gone: Vec<_> = all_before.difference(&all_after).cloned().collect();
            let added: Vec<_> = all_after.difference(&all_before).cloned().collect();
            prop_assert_eq!(IndexFields::changed(&before, &after, &id), (gone, added));
        }
    }
}
