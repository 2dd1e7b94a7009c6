use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use crm_domain::{Event, Owned, Rules};
use crm_eventlog::RecordedEvent;
use crm_projection_runtime::{bucket_key, Cached, Derived, Fingerprint, Projector, State};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::calendar::Calendar;

/// Counts for one stage in one month and scope.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bucket {
    pub entered: u64,
    pub exited: u64,
    /// Exits by target stage (including the won and lost stages).
    pub moved_to: BTreeMap<String, u64>,
    /// Dwell of each exit, in working days: value -> count (for average and median).
    pub dwell: BTreeMap<u32, u64>,
    /// Root-cause tags of the moves into this stage.
    pub root_causes: BTreeMap<String, u64>,
    /// Wins with all three references (only in the won stage's bucket).
    pub won: u64,
    /// Wins missing a reference: not counted as won.
    pub won_unverified: u64,
}

/// Every stage's bucket of one month in one scope, by stage.
pub type Month = BTreeMap<String, Bucket>;

/// Versions 3 to 5: open opportunities whose stage limit ends in one month, by (day of the
/// month, stage). Never written now ([`Dues`] replaced it).
pub type DueDays = BTreeMap<(u8, String), u64>;

/// Open opportunities whose stage limit ends in one month: by stage, a count for each day of
/// the month (index 0 is the 1st). A move finds its stage once and its day by index, where
/// [`DueDays`] searched (day, stage) keys and built an owned key for every lookup.
pub type Dues = BTreeMap<String, [u32; 31]>;

/// What the funnel keeps per opportunity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpportunityState {
    pub customer: Uuid,
    pub owner: Uuid,
    pub region: String,
    pub stage: String,
    pub entered_at: DateTime<Utc>,
    /// Last day within the stage limit; `None` when the stage has no limit.
    pub due: Option<NaiveDate>,
    pub open: bool,
}

/// A stored value. The variants keep their positions across versions (bincode writes the
/// position): after an upgrade, the build of the older version keeps serving while the new
/// one is built, so its values must decode as what they are. The large variants nothing
/// writes any more are boxed (bincode writes a box as its content): a value is 32 bytes, so a
/// build's cache, which keeps values inline beside their keys, touches less memory per lookup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Value {
    /// Version 2: `b/<scope>/<YYYY-MM>/<stage>`. Never written now; the query recognises a
    /// version 2 build by it.
    Bucket(Box<Bucket>),
    /// Version 4: `o/<uuid>`, one opportunity. Never written now.
    Opportunity(Box<OpportunityState>),
    /// Version 4: `r/<uuid>`, a customer's region (`-` when unknown). Never written now.
    Region(String),
    /// Version 2: `d/<scope>/<due date>/<stage>`. Never written now.
    DueCount(u64),
    /// `b/<scope>/<YYYY-MM>`: the month's counts, by stage. A stage move changes one of these
    /// per scope (it leaves one stage and enters another in the same month).
    Month(Month),
    /// Versions 3 to 5: `d/<scope>/<YYYY-MM>`, open opportunities due on the days of that
    /// month. Never written now ([`Value::Dues`]); a query still reads it from a version 4
    /// build serving during the rebuild.
    Due(DueDays),
    /// Version 5: `o/<bucket>`, the opportunities whose id falls in that bucket (see
    /// [`bucket_key`]). Version 4 kept one `o/<uuid>` key per opportunity ([`Value::Opportunity`]).
    Opportunities(BTreeMap<Uuid, OpportunityState>),
    /// Version 5: `r/<bucket>`, the regions of the customers whose id falls in that bucket.
    /// Version 4 kept one `r/<uuid>` key per customer ([`Value::Region`]).
    Regions(BTreeMap<Uuid, String>),
    /// Versions 6 and 7: `d/<scope>/<YYYY-MM>`, open opportunities due on the days of that
    /// month (in version 7, of the all and region scopes).
    Dues(Dues),
    /// Version 7: `b/o:<owner>/<YYYY-MM>`, the owner's month by region.
    OwnerMonth(BTreeMap<String, Month>),
    /// Version 7: `d/o:<owner>/<YYYY-MM>`, the owner's due days by region.
    OwnerDues(BTreeMap<String, Dues>),
}

/// Region used when the customer has none.
pub const NO_REGION: &str = "-";

/// The scopes of a region and owner, by key: all, region, owner (the one that names the owner
/// last: an owner change moves an open opportunity's due count in that one only). An owner's
/// values hold a month per region ([`Value::OwnerMonth`], [`Value::OwnerDues`]), so the
/// region+owner scope is the owner's value's entry for the region, not a key of its own
/// (version 6 kept `ro:<region>|<owner>` keys, a second cold lookup per change that held
/// the same counts as the owner's whenever an owner works in one region).
pub(crate) fn scopes(region: &str, owner: &Uuid) -> [String; 3] {
    // Built by hand: every move makes these, and `format!` was 4% of a rebuild.
    let mut by_region = String::with_capacity(2 + region.len());
    by_region.push_str("r:");
    by_region.push_str(region);
    let mut by_owner = String::with_capacity(2 + uuid::fmt::Hyphenated::LENGTH);
    by_owner.push_str("o:");
    by_owner.push_str(owner.hyphenated().encode_lower(&mut Uuid::encode_buffer()));
    ["*".to_owned(), by_region, by_owner]
}

/// Where a change lands: a scope's key name, and for an owner's scope the region of its entry.
type Target<'a> = (&'a str, Option<&'a str>);

/// The targets of `scopes` (from [`scopes`]) for an opportunity in `region`.
fn targets<'a>(scopes: &'a [String; 3], region: &'a str) -> [Target<'a>; 3] {
    [(&scopes[0], None), (&scopes[1], None), (&scopes[2], Some(region))]
}

/// Key kinds: a month's buckets and a month's due days.
const BUCKETS: u8 = b'b';
const DUE: u8 = b'd';

/// `<kind>/<scope>/<YYYY-MM>`, written over `key` (a buffer the fold reuses).
fn month_key_into(key: &mut Vec<u8>, kind: u8, scope: &str, date: NaiveDate) {
    key.clear();
    key.push(kind);
    key.push(b'/');
    key.extend_from_slice(scope.as_bytes());
    key.push(b'/');
    push_month(key, date.year(), date.month());
}

fn month_key(kind: u8, scope: &str, date: NaiveDate) -> Vec<u8> {
    let mut key = Vec::with_capacity(96);
    month_key_into(&mut key, kind, scope, date);
    key
}

/// Appends `YYYY-MM` as `format!("{year:04}-{month:02}")` does, without the formatting
/// machinery for the years every real date has.
fn push_month(key: &mut Vec<u8>, year: i32, month: u32) {
    if !(0..=9999).contains(&year) {
        key.extend_from_slice(format!("{year:04}-{month:02}").as_bytes());
        return;
    }
    let digits = |key: &mut Vec<u8>, n: u32, width: u32| {
        for i in (0..width).rev() {
            key.push(b'0' + (n / 10u32.pow(i) % 10) as u8);
        }
    };
    digits(key, year as u32, 4);
    key.push(b'-');
    digits(key, month, 2);
}

/// `YYYY-MM`, as bucket keys and queries name a month.
pub(crate) fn month_name(date: NaiveDate) -> String {
    let mut name = Vec::with_capacity(7);
    push_month(&mut name, date.year(), date.month());
    String::from_utf8(name).expect("digits and a dash")
}

/// Opportunities and customers' regions are stored a bucket of ids to a key
/// ([`bucket_key`]): 65,536 keys of each kind at most (a fresh build of the funnel wrote
/// 3.35 M keys at 13.4 M events, most of them one per opportunity and per customer).
fn opportunity_key(id: &Uuid) -> Vec<u8> {
    bucket_key(b'o', id)
}

fn region_key(id: &Uuid) -> Vec<u8> {
    bucket_key(b'r', id)
}

/// Sets customer `id`'s region in its bucket.
fn set_region(state: &mut State<'_, Value>, id: &Uuid, region: String) -> Result {
    match state.get_or_insert_with(&region_key(id), || Value::Regions(BTreeMap::new()))? {
        Value::Regions(regions) => {
            regions.insert(*id, region);
            Ok(())
        }
        other => Err(format!("expected a bucket of regions, found {other:?}")),
    }
}

/// The event types `apply` reads the payload of (see [`Projector::decodes`]).
pub(crate) const DECODED: &[&str] = &[
    "CustomerCreated",
    "CustomerUpdated",
    "CustomersMerged",
    "CustomerUnmerged",
    "OpportunityOpened",
    "StageMoved",
    "OpportunityWon",
    "OpportunityLost",
    "OwnerChanged",
];

/// The funnel projector, with its working-day calendar.
#[derive(Debug, Clone, Default)]
pub struct FunnelProjector {
    pub calendar: Calendar,
}

type Result<T = ()> = std::result::Result<T, String>;

/// `map[key] += 1`, allocating the key only when it is new.
fn count(map: &mut BTreeMap<String, u64>, key: &str) {
    match map.get_mut(key) {
        Some(n) => *n += 1,
        None => {
            map.insert(key.to_owned(), 1);
        }
    }
}

/// The entry of `name` in `map`, created empty when absent (the name is copied only then).
fn entry_of<'m, T: Default>(map: &'m mut BTreeMap<String, T>, name: &str) -> &'m mut T {
    if !map.contains_key(name) {
        map.insert(name.to_owned(), T::default());
    }
    map.get_mut(name).expect("inserted above")
}

/// The bucket of `stage` in `month`, created empty when absent.
fn bucket<'m>(month: &'m mut Month, stage: &str) -> &'m mut Bucket {
    entry_of(month, stage)
}

/// Counts an exit from `stage` to `to` after `dwell` working days.
fn exit(month: &mut Month, stage: &str, to: &str, dwell: u32) {
    let b = bucket(month, stage);
    b.exited += 1;
    count(&mut b.moved_to, to);
    *b.dwell.entry(dwell).or_default() += 1;
}

/// Counts one more open opportunity due on `due` in `stage`.
fn add_due(dues: &mut Dues, due: NaiveDate, stage: &str) {
    entry_of(dues, stage)[due.day0() as usize] += 1;
}

/// Counts one fewer; a count at zero stays there, and a stage left with none is dropped.
fn remove_due(dues: &mut Dues, due: NaiveDate, stage: &str) {
    if let Some(days) = dues.get_mut(stage) {
        let n = &mut days[due.day0() as usize];
        *n = n.saturating_sub(1);
        if days.iter().all(|n| *n == 0) {
            dues.remove(stage);
        }
    }
}

fn same_month(a: NaiveDate, b: NaiveDate) -> bool {
    a.year() == b.year() && a.month() == b.month()
}

impl FunnelProjector {
    pub fn new(calendar: Calendar) -> Self {
        FunnelProjector { calendar }
    }

    /// Changes the month of `at` in each of `targets` (those of the opportunity's region and
    /// owner, computed once per event).
    fn bump(
        state: &mut State<'_, Value>,
        targets: &[Target<'_>],
        at: &DateTime<Utc>,
        f: impl Fn(&mut Month),
    ) -> Result {
        let mut key = Vec::with_capacity(96);
        for &(scope, region) in targets {
            month_key_into(&mut key, BUCKETS, scope, at.date_naive());
            let empty = || match region {
                Some(_) => Value::OwnerMonth(BTreeMap::new()),
                None => Value::Month(Month::new()),
            };
            match (region, state.get_or_insert_with(&key, empty)?) {
                (None, Value::Month(month)) => f(month),
                (Some(region), Value::OwnerMonth(regions)) => f(entry_of(regions, region)),
                (_, other) => return Err(format!("expected a month's buckets, found {other:?}")),
            }
        }
        Ok(())
    }

    /// Moves an open opportunity's due-day count from `from` to `to` (due day, stage) in each
    /// of `targets`; either may be absent (no limit, or not open). Both in one month: one
    /// change per target. Nothing in a fresh build: it derives the counts from its
    /// opportunities at its first commit ([`Projector::derive_fresh`]).
    fn move_due(
        state: &mut State<'_, Value>,
        targets: &[Target<'_>],
        from: Option<(NaiveDate, &str)>,
        to: Option<(NaiveDate, &str)>,
    ) -> Result {
        if from == to || state.fresh() {
            return Ok(());
        }
        let mut key = Vec::with_capacity(96);
        for &(scope, region) in targets {
            // Changed in place; a region or month left with no count is removed.
            let mut change = |due: NaiveDate, f: &dyn Fn(&mut Dues)| {
                month_key_into(&mut key, DUE, scope, due);
                let empty = || match region {
                    Some(_) => Value::OwnerDues(BTreeMap::new()),
                    None => Value::Dues(Dues::new()),
                };
                let empty = match (region, state.get_or_insert_with(&key, empty)?) {
                    (None, Value::Dues(dues)) => {
                        f(dues);
                        dues.is_empty()
                    }
                    (Some(region), Value::OwnerDues(regions)) => {
                        let dues = entry_of(regions, region);
                        f(dues);
                        if dues.is_empty() {
                            regions.remove(region);
                        }
                        regions.is_empty()
                    }
                    (_, other) => return Err(format!("expected a month's due days, found {other:?}")),
                };
                if empty {
                    state.remove(key.clone());
                }
                Ok::<_, String>(())
            };
            match (from, to) {
                (Some((a, from_stage)), Some((b, to_stage))) if same_month(a, b) => change(a, &|days| {
                    remove_due(days, a, from_stage);
                    add_due(days, b, to_stage);
                })?,
                _ => {
                    if let Some((due, stage)) = from {
                        change(due, &|days| remove_due(days, due, stage))?;
                    }
                    if let Some((due, stage)) = to {
                        change(due, &|days| add_due(days, due, stage))?;
                    }
                }
            }
        }
        Ok(())
    }

    fn due(&self, rules: &Rules, stage: &str, at: &DateTime<Utc>) -> Option<NaiveDate> {
        rules.stage_time_limits.get(stage).map(|days| self.calendar.add_working_days(at.date_naive(), *days))
    }

    /// The stored opportunity `id`, changed in place.
    fn opportunity<'s>(state: &'s mut State<'_, Value>, id: &Uuid) -> Result<&'s mut OpportunityState> {
        match state.get_mut(&opportunity_key(id))? {
            Some(Value::Opportunities(bucket)) => bucket.get_mut(id),
            _ => None,
        }
        .ok_or_else(|| format!("opportunity {id} is not known"))
    }

    /// The opportunity `id` leaves its stage at `at` for `to` (a pipeline stage, won or lost):
    /// its stage, entry time and due day are replaced, and what it left is returned.
    fn leave(
        state: &mut State<'_, Value>,
        id: &Uuid,
        to: &str,
        at: DateTime<Utc>,
        due: Option<NaiveDate>,
        open: bool,
    ) -> Result<Left> {
        let o = Self::opportunity(state, id)?;
        let left = Left {
            scopes: scopes(&o.region, &o.owner),
            region: o.region.clone(),
            stage: std::mem::replace(&mut o.stage, to.to_owned()),
            entered_at: std::mem::replace(&mut o.entered_at, at),
            due: std::mem::replace(&mut o.due, due),
        };
        // A won or lost one has entered its end stage when it closed.
        o.open &= open;
        Ok(left)
    }

    fn dwell(&self, left: &Left, at: &DateTime<Utc>) -> u32 {
        self.calendar.working_days_between(left.entered_at.date_naive(), at.date_naive())
    }
}

/// What an opportunity left in a move: the scopes it counts in, and its former stage, entry
/// time and due day.
struct Left {
    scopes: [String; 3],
    region: String,
    stage: String,
    entered_at: DateTime<Utc>,
    due: Option<NaiveDate>,
}

impl Projector for FunnelProjector {
    type Value = Value;

    fn name(&self) -> &'static str {
        "funnel"
    }

    /// 3: a month's stages in one value, and due days by month. 4: the same, with the new
    /// values at new enum positions (3 reused version 2's, so a version 2 build could not be
    /// told apart while it served during the rebuild). 5: opportunities and customers'
    /// regions a bucket of ids to a key (`o/<bucket>`, `r/<bucket>`) instead of a key each
    /// (one commit of main, `7d6616f`, with version 4's due days). 6: the same, with due days
    /// per stage and day ([`Value::Dues`]); a version 5 build's `Due` values would stop its
    /// fold, so it is rebuilt. 7: an owner's values hold a month per region; no
    /// region+owner keys ([`scopes`]).
    fn version(&self) -> u32 {
        7
    }

    fn fingerprint(&self, rules: &Rules) -> u64 {
        let p = &rules.pipeline;
        Fingerprint::of(&(&rules.stage_time_limits, &p.stages, &p.won_stage, &p.lost_stage, &self.calendar))
    }

    fn decodes(&self, event_type: &str) -> bool {
        DECODED.contains(&event_type)
    }

    /// Every key `apply` reads: the opportunity's bucket (and, for a new one, its customer's
    /// region's bucket) first; once that is in memory, the months and due days it changes.
    /// A customer's event that sets a region reads the region's bucket.
    fn prefetch(
        &self,
        rules: &Rules,
        _: &RecordedEvent,
        event: Option<&Event>,
        cached: &Cached<'_, Value>,
        keys: &mut Vec<Vec<u8>>,
    ) {
        // The month of `at` and the month of each due day, in each scope.
        fn touch(keys: &mut Vec<Vec<u8>>, scopes: &[String], at: Option<&DateTime<Utc>>, dues: &[Option<NaiveDate>]) {
            for scope in scopes {
                if let Some(at) = at {
                    keys.push(month_key(BUCKETS, scope, at.date_naive()));
                }
                for due in dues.iter().flatten() {
                    keys.push(month_key(DUE, scope, *due));
                }
            }
        }
        let sets_region = |changes: &[crm_domain::FieldChange]| changes.iter().any(|c| c.field == "region");
        let (opportunity, at) = match event {
            Some(Event::CustomerCreated(e)) => return keys.push(region_key(&e.customer_id.0)),
            Some(Event::CustomerUpdated(e)) if sets_region(&e.changes) => {
                return keys.push(region_key(&e.customer_id.0));
            }
            Some(Event::CustomersMerged(e)) if sets_region(&e.field_changes) => {
                return keys.push(region_key(&e.survivor_id.0));
            }
            Some(Event::CustomerUnmerged(e)) if sets_region(&e.restored) => {
                return keys.push(region_key(&e.survivor_id.0));
            }
            Some(Event::OpportunityOpened(e)) => {
                // The bucket it joins.
                keys.push(opportunity_key(&e.opportunity_id.0));
                let key = region_key(&e.customer_id.0);
                match cached.get(&key) {
                    Some(Value::Regions(regions)) => {
                        // A customer created earlier in the same chunk is not in its bucket
                        // yet: its months are read by the fold itself.
                        let Some(region) = regions.get(&e.customer_id.0) else { return };
                        let due = self.due(rules, &e.stage, &e.opened_at);
                        touch(keys, &scopes(region, &e.owner.0), Some(&e.opened_at), &[due]);
                    }
                    _ => keys.push(key),
                }
                return;
            }
            Some(Event::StageMoved(e)) => (e.opportunity_id.0, Some(e.moved_at)),
            Some(Event::OpportunityWon(e)) => (e.opportunity_id.0, Some(e.won_at)),
            Some(Event::OpportunityLost(e)) => (e.opportunity_id.0, Some(e.lost_at)),
            Some(Event::OwnerChanged(e)) => match e.subject {
                Owned::Opportunity(id) => (id.0, None),
                _ => return,
            },
            _ => return,
        };
        let key = opportunity_key(&opportunity);
        let Some(Value::Opportunities(bucket)) = cached.get(&key) else {
            return keys.push(key);
        };
        // Opened earlier in the same chunk: its months are read by the fold itself.
        let Some(o) = bucket.get(&opportunity) else { return };
        // The second round.
        let here = scopes(&o.region, &o.owner);
        match event {
            Some(Event::StageMoved(e)) => {
                touch(keys, &here, Some(&e.moved_at), &[o.due, self.due(rules, &e.to, &e.moved_at)]);
            }
            // An open one's count moves between the scopes that name the owner only.
            Some(Event::OwnerChanged(e)) if o.open => {
                touch(keys, &here[2..], None, &[o.due]);
                touch(keys, &scopes(&o.region, &e.to.0)[2..], None, &[o.due]);
            }
            Some(Event::OwnerChanged(_)) => touch(keys, &here, None, &[o.due]),
            _ => touch(keys, &here, at.as_ref(), &[o.due]),
        }
    }

    fn apply(
        &self,
        state: &mut State<'_, Value>,
        rules: &Rules,
        _recorded: &RecordedEvent,
        event: Option<&Event>,
    ) -> Result {
        let Some(event) = event else { return Ok(()) };
        match event {
            Event::CustomerCreated(e) => {
                let region = e.fields.get("region").cloned().unwrap_or_else(|| NO_REGION.to_owned());
                set_region(state, &e.customer_id.0, region)
            }
            Event::CustomerUpdated(e) => {
                if let Some(change) = e.changes.iter().rev().find(|c| c.field == "region") {
                    let region = change.new.clone().unwrap_or_else(|| NO_REGION.to_owned());
                    return set_region(state, &e.customer_id.0, region);
                }
                Ok(())
            }
            Event::CustomersMerged(e) => {
                if let Some(change) = e.field_changes.iter().rev().find(|c| c.field == "region") {
                    let region = change.new.clone().unwrap_or_else(|| NO_REGION.to_owned());
                    return set_region(state, &e.survivor_id.0, region);
                }
                Ok(())
            }
            Event::CustomerUnmerged(e) => {
                if let Some(change) = e.restored.iter().rev().find(|c| c.field == "region") {
                    let region = change.new.clone().unwrap_or_else(|| NO_REGION.to_owned());
                    return set_region(state, &e.survivor_id.0, region);
                }
                Ok(())
            }
            Event::OpportunityOpened(e) => {
                let region = match state.get(&region_key(&e.customer_id.0))? {
                    Some(Value::Regions(regions)) => regions.get(&e.customer_id.0).cloned(),
                    _ => None,
                }
                .unwrap_or_else(|| NO_REGION.to_owned());
                let due = self.due(rules, &e.stage, &e.opened_at);
                let scopes = scopes(&region, &e.owner.0);
                let targets = targets(&scopes, &region);
                Self::bump(state, &targets, &e.opened_at, |m| bucket(m, &e.stage).entered += 1)?;
                Self::move_due(state, &targets, None, due.map(|d| (d, e.stage.as_str())))?;
                let o = OpportunityState {
                    customer: e.customer_id.0,
                    owner: e.owner.0,
                    region,
                    stage: e.stage.clone(),
                    entered_at: e.opened_at,
                    due,
                    open: true,
                };
                match state.get_or_insert_with(&opportunity_key(&e.opportunity_id.0), || {
                    Value::Opportunities(BTreeMap::new())
                })? {
                    Value::Opportunities(bucket) => {
                        bucket.insert(e.opportunity_id.0, o);
                        Ok(())
                    }
                    other => Err(format!("expected a bucket of opportunities, found {other:?}")),
                }
            }
            Event::StageMoved(e) => {
                let due = self.due(rules, &e.to, &e.moved_at);
                let left = Self::leave(state, &e.opportunity_id.0, &e.to, e.moved_at, due, true)?;
                let dwell = self.dwell(&left, &e.moved_at);
                Self::bump(state, &targets(&left.scopes, &left.region), &e.moved_at, |m| {
                    exit(m, &left.stage, &e.to, dwell);
                    let b = bucket(m, &e.to);
                    b.entered += 1;
                    count(&mut b.root_causes, &e.root_cause);
                })?;
                let from = left.due.map(|d| (d, left.stage.as_str()));
                Self::move_due(state, &targets(&left.scopes, &left.region), from, due.map(|d| (d, e.to.as_str())))
            }
            Event::OpportunityWon(e) => {
                let won_stage = &rules.pipeline.won_stage;
                let left = Self::leave(state, &e.opportunity_id.0, won_stage, e.won_at, None, false)?;
                let dwell = self.dwell(&left, &e.won_at);
                let verified = [&e.finance_receipt_ref, &e.contract_ref, &e.delivery_acceptance_ref]
                    .iter()
                    .all(|r| !r.trim().is_empty());
                Self::bump(state, &targets(&left.scopes, &left.region), &e.won_at, |m| {
                    exit(m, &left.stage, won_stage, dwell);
                    let b = bucket(m, won_stage);
                    if verified {
                        b.entered += 1;
                        b.won += 1;
                    } else {
                        b.won_unverified += 1;
                    }
                })?;
                Self::move_due(
                    state,
                    &targets(&left.scopes, &left.region),
                    left.due.map(|d| (d, left.stage.as_str())),
                    None,
                )
            }
            Event::OpportunityLost(e) => {
                let lost_stage = &rules.pipeline.lost_stage;
                let left = Self::leave(state, &e.opportunity_id.0, lost_stage, e.lost_at, None, false)?;
                let dwell = self.dwell(&left, &e.lost_at);
                Self::bump(state, &targets(&left.scopes, &left.region), &e.lost_at, |m| {
                    exit(m, &left.stage, lost_stage, dwell);
                    bucket(m, lost_stage).entered += 1;
                })?;
                Self::move_due(
                    state,
                    &targets(&left.scopes, &left.region),
                    left.due.map(|d| (d, left.stage.as_str())),
                    None,
                )
            }
            Event::OwnerChanged(e) => {
                let Owned::Opportunity(id) = e.subject else { return Ok(()) };
                let o = Self::opportunity(state, &id.0)?;
                let (region, from) = (o.region.clone(), std::mem::replace(&mut o.owner, e.to.0));
                let (open, Some(due)) = (o.open, o.due) else { return Ok(()) };
                let stage = o.stage.clone();
                let before = scopes(&region, &from);
                if !open {
                    return Self::move_due(state, &targets(&before, &region), Some((due, &stage)), None);
                }
                // An open one stays counted where the owner is not part of the scope.
                if from != e.to.0 {
                    let after = scopes(&region, &e.to.0);
                    Self::move_due(state, &targets(&before, &region)[2..], Some((due, &stage)), None)?;
                    Self::move_due(state, &targets(&after, &region)[2..], None, Some((due, &stage)))?;
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// The due-day counts of a fresh build, from its opportunities as they stand at its first
    /// commit: each open one with a stage limit counted once in each of its scopes, instead
    /// of moved between days and stages at every stage move (three to six lookups a move).
    fn derive_fresh(&self, state: &State<'_, Value>) -> Result<Derived<Value>> {
        let mut dues: BTreeMap<Vec<u8>, Value> = BTreeMap::new();
        for (_, value) in state.held() {
            let Value::Opportunities(bucket) = value else { continue };
            for o in bucket.values() {
                let (true, Some(due)) = (o.open, o.due) else { continue };
                let scopes = scopes(&o.region, &o.owner);
                for (scope, region) in targets(&scopes, &o.region) {
                    let value = dues.entry(month_key(DUE, scope, due)).or_insert_with(|| match region {
                        Some(_) => Value::OwnerDues(BTreeMap::new()),
                        None => Value::Dues(Dues::new()),
                    });
                    match (region, value) {
                        (None, Value::Dues(days)) => add_due(days, due, &o.stage),
                        (Some(region), Value::OwnerDues(regions)) => add_due(entry_of(regions, region), due, &o.stage),
                        (_, other) => return Err(format!("expected a month's due days, found {other:?}")),
                    }
                }
            }
        }
        Ok(dues.into_iter().collect())
    }
}
#[cfg(test)]
mod decoded_tests {
    #[test]
    fn every_decoded_event_type_exists() {
        crm_projection_runtime::testing::assert_event_types_exist(super::DECODED);
    }
}

#[cfg(test)]
mod key_tests {
    use super::*;

    /// The hand-written month in keys is what `format!("{:04}-{:02}")` gives, in and out of
    /// the four-digit years.
    #[test]
    fn month_keys_write_months_as_format_does() {
        let mut key = b"left over from an earlier key".to_vec();
        for (y, m, d) in [(2026, 2, 17), (1, 1, 1), (999, 12, 31), (9999, 12, 31), (10000, 1, 1), (-5, 3, 4)] {
            let date = NaiveDate::from_ymd_opt(y, m, d).unwrap();
            month_key_into(&mut key, DUE, "r:华东", date);
            assert_eq!(key, format!("d/r:华东/{:04}-{:02}", date.year(), date.month()).into_bytes());
            assert_eq!(month_name(date), format!("{:04}-{:02}", date.year(), date.month()));
        }
        month_key_into(&mut key, BUCKETS, "*", NaiveDate::from_ymd_opt(2026, 2, 1).unwrap());
        assert_eq!(key, b"b/*/2026-02".to_vec());
    }

    /// The scopes' names are what `format!` gives.
    #[test]
    fn scopes_are_named_as_format_names_them() {
        let owner = Uuid::from_u128(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef);
        assert_eq!(scopes("华东", &owner), ["*".to_owned(), "r:华东".to_owned(), format!("o:{owner}")]);
    }

    /// Boxing the unused variants keeps every value small (see [`Value`]).
    #[test]
    fn a_value_is_32_bytes() {
        assert_eq!(std::mem::size_of::<Value>(), 32);
    }

    /// An id's bucket is its last 16 bits, written as four hex digits: ids that differ only
    /// there fall apart, ids that differ anywhere else share a key.
    #[test]
    fn bucket_keys_name_the_last_16_bits() {
        assert_eq!(opportunity_key(&Uuid::from_u128(0xabcd)), b"o/abcd".to_vec());
        assert_eq!(region_key(&Uuid::from_u128(0x0102_0000_0000_0000_0000_0000_0000_f00f)), b"r/f00f".to_vec());
        assert_eq!(opportunity_key(&Uuid::from_u128(u128::MAX)), b"o/ffff".to_vec());
        assert_eq!(opportunity_key(&Uuid::from_u128(0x1_0000)), opportunity_key(&Uuid::nil()));
        assert_ne!(opportunity_key(&Uuid::from_u128(1)), opportunity_key(&Uuid::nil()));
    }
}
