use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use crm_domain::{Event, Owned, Rules};
use crm_eventlog::RecordedEvent;
use crm_projection_runtime::{Cached, Fingerprint, Projector, State};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::calendar::Calendar;

/// Counts for one stage, one month, one scope.
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

/// What the funnel keeps per open opportunity.
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

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Value {
    Bucket(Bucket),
    Opportunity(OpportunityState),
    /// A customer's region (`-` when unknown).
    Region(String),
    /// Open opportunities due on a day in a stage: `d/<scope>/<due>/<stage>`.
    DueCount(u64),
}

/// Region used when the customer has none.
pub const NO_REGION: &str = "-";

pub(crate) fn scopes(region: &str, owner: &Uuid) -> [String; 4] {
    ["*".to_owned(), format!("r:{region}"), format!("o:{owner}"), format!("ro:{region}|{owner}")]
}

/// `b/<scope>/<month>/<stage>`, written over `key` (a buffer the fold reuses).
fn bucket_key_into(key: &mut Vec<u8>, scope: &str, month: &str, stage: &str) {
    key.clear();
    key.extend_from_slice(b"b/");
    key.extend_from_slice(scope.as_bytes());
    key.push(b'/');
    key.extend_from_slice(month.as_bytes());
    key.push(b'/');
    key.extend_from_slice(stage.as_bytes());
}

/// `d/<scope>/<due, as NaiveDate displays it>/<stage>`, written over `key`.
fn due_key_into(key: &mut Vec<u8>, scope: &str, due: NaiveDate, stage: &str) {
    key.clear();
    key.extend_from_slice(b"d/");
    key.extend_from_slice(scope.as_bytes());
    key.push(b'/');
    push_date(key, due);
    key.push(b'/');
    key.extend_from_slice(stage.as_bytes());
}

/// Appends `date` as its `Display` does (`YYYY-MM-DD`), without the formatting machinery for
/// the years every real date has.
fn push_date(key: &mut Vec<u8>, date: NaiveDate) {
    let year = date.year();
    if !(0..=9999).contains(&year) {
        key.extend_from_slice(date.to_string().as_bytes());
        return;
    }
    let digits = |key: &mut Vec<u8>, n: u32, width: u32| {
        for i in (0..width).rev() {
            key.push(b'0' + (n / 10u32.pow(i) % 10) as u8);
        }
    };
    digits(key, year as u32, 4);
    key.push(b'-');
    digits(key, date.month(), 2);
    key.push(b'-');
    digits(key, date.day(), 2);
}

fn opportunity_key(id: &Uuid) -> Vec<u8> {
    format!("o/{id}").into_bytes()
}

fn region_key(id: &Uuid) -> Vec<u8> {
    format!("r/{id}").into_bytes()
}

/// `YYYY-MM`, as `%Y-%m` formats it (without chrono's format-string interpreter).
fn month(at: &DateTime<Utc>) -> String {
    format!("{:04}-{:02}", at.year(), at.month())
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

impl FunnelProjector {
    pub fn new(calendar: Calendar) -> Self {
        FunnelProjector { calendar }
    }

    /// Changes the buckets of `stage` in the month of `at`, in each of `scopes` (those of the
    /// opportunity's region and owner, computed once per event).
    fn bump(
        state: &mut State<'_, Value>,
        scopes: &[String; 4],
        at: &DateTime<Utc>,
        stage: &str,
        f: impl Fn(&mut Bucket),
    ) -> Result {
        let m = month(at);
        let mut key = Vec::with_capacity(96);
        for scope in scopes {
            bucket_key_into(&mut key, scope, &m, stage);
            let value = state.get_or_insert_with(&key, || Value::Bucket(Bucket::default()))?;
            match value {
                Value::Bucket(b) => f(b),
                other => return Err(format!("expected a bucket, found {other:?}")),
            }
        }
        Ok(())
    }

    /// Counts the open opportunity in (or out of) its stage's due-day bucket.
    /// `scopes` are those of `o`'s region and owner.
    fn set_due(state: &mut State<'_, Value>, o: &OpportunityState, scopes: &[String; 4], present: bool) -> Result {
        if let Some(due) = o.due {
            let mut key = Vec::with_capacity(96);
            for scope in scopes {
                due_key_into(&mut key, scope, due, &o.stage);
                state.update(&key, |old| {
                    let n = match old {
                        Some(Value::DueCount(n)) => n,
                        _ => 0,
                    };
                    let n = if present { n + 1 } else { n.saturating_sub(1) };
                    (n > 0).then_some(Value::DueCount(n))
                })?;
            }
        }
        Ok(())
    }

    fn due(&self, rules: &Rules, stage: &str, at: &DateTime<Utc>) -> Option<NaiveDate> {
        rules.stage_time_limits.get(stage).map(|days| self.calendar.add_working_days(at.date_naive(), *days))
    }

    fn load(state: &mut State<'_, Value>, id: &Uuid) -> Result<OpportunityState> {
        match state.get_cloned(&opportunity_key(id))? {
            Some(Value::Opportunity(o)) => Ok(o),
            _ => Err(format!("opportunity {id} is not known")),
        }
    }

    /// The opportunity leaves its stage at `at` for `to`.
    fn exit(
        &self,
        state: &mut State<'_, Value>,
        o: &OpportunityState,
        scopes: &[String; 4],
        at: &DateTime<Utc>,
        to: &str,
    ) -> Result {
        let dwell = self.calendar.working_days_between(o.entered_at.date_naive(), at.date_naive());
        Self::bump(state, scopes, at, &o.stage, |b| {
            b.exited += 1;
            *b.moved_to.entry(to.to_owned()).or_default() += 1;
            *b.dwell.entry(dwell).or_default() += 1;
        })
    }
}

impl Projector for FunnelProjector {
    type Value = Value;

    fn name(&self) -> &'static str {
        "funnel"
    }

    fn version(&self) -> u32 {
        2
    }

    fn fingerprint(&self, rules: &Rules) -> u64 {
        let p = &rules.pipeline;
        Fingerprint::of(&(&rules.stage_time_limits, &p.stages, &p.won_stage, &p.lost_stage, &self.calendar))
    }

    fn decodes(&self, event_type: &str) -> bool {
        DECODED.contains(&event_type)
    }

    /// Every key `apply` reads: the opportunity (or, for a new one, its customer's region)
    /// first; once that is in memory, the buckets and due days it leaves and those it enters.
    fn prefetch(
        &self,
        rules: &Rules,
        _: &RecordedEvent,
        event: Option<&Event>,
        cached: &Cached<'_, Value>,
        keys: &mut Vec<Vec<u8>>,
    ) {
        // (scopes, month, stage, due day) of each bucket and due-day entry the event changes.
        let mut touch = |scopes: &[String; 4], at: Option<&DateTime<Utc>>, stage: &str, due: Option<NaiveDate>| {
            let month = at.map(month);
            for scope in scopes {
                if let Some(month) = &month {
                    let mut key = Vec::new();
                    bucket_key_into(&mut key, scope, month, stage);
                    keys.push(key);
                }
                if let Some(due) = due {
                    let mut key = Vec::new();
                    due_key_into(&mut key, scope, due, stage);
                    keys.push(key);
                }
            }
        };
        let (opportunity, at) = match event {
            Some(Event::OpportunityOpened(e)) => {
                let key = region_key(&e.customer_id.0);
                match cached.get(&key) {
                    Some(Value::Region(region)) => {
                        let due = self.due(rules, &e.stage, &e.opened_at);
                        touch(&scopes(region, &e.owner.0), Some(&e.opened_at), &e.stage, due);
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
        let Some(Value::Opportunity(o)) = cached.get(&key) else {
            return keys.push(key);
        };
        // The second round: what it leaves, then what it enters.
        let here = scopes(&o.region, &o.owner);
        touch(&here, at.as_ref(), &o.stage, o.due);
        match event {
            Some(Event::StageMoved(e)) => touch(&here, Some(&e.moved_at), &e.to, self.due(rules, &e.to, &e.moved_at)),
            Some(Event::OpportunityWon(e)) => touch(&here, Some(&e.won_at), &rules.pipeline.won_stage, None),
            Some(Event::OpportunityLost(e)) => touch(&here, Some(&e.lost_at), &rules.pipeline.lost_stage, None),
            Some(Event::OwnerChanged(e)) if o.open => touch(&scopes(&o.region, &e.to.0), None, &o.stage, o.due),
            _ => {}
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
                state.put(region_key(&e.customer_id.0), Value::Region(region));
                Ok(())
            }
            Event::CustomerUpdated(e) => {
                if let Some(change) = e.changes.iter().rev().find(|c| c.field == "region") {
                    let region = change.new.clone().unwrap_or_else(|| NO_REGION.to_owned());
                    state.put(region_key(&e.customer_id.0), Value::Region(region));
                }
                Ok(())
            }
            Event::CustomersMerged(e) => {
                if let Some(change) = e.field_changes.iter().rev().find(|c| c.field == "region") {
                    let region = change.new.clone().unwrap_or_else(|| NO_REGION.to_owned());
                    state.put(region_key(&e.survivor_id.0), Value::Region(region));
                }
                Ok(())
            }
            Event::CustomerUnmerged(e) => {
                if let Some(change) = e.restored.iter().rev().find(|c| c.field == "region") {
                    let region = change.new.clone().unwrap_or_else(|| NO_REGION.to_owned());
                    state.put(region_key(&e.survivor_id.0), Value::Region(region));
                }
                Ok(())
            }
            Event::OpportunityOpened(e) => {
                let region = match state.get(&region_key(&e.customer_id.0))? {
                    Some(Value::Region(r)) => r.clone(),
                    _ => NO_REGION.to_owned(),
                };
                let o = OpportunityState {
                    customer: e.customer_id.0,
                    owner: e.owner.0,
                    region,
                    stage: e.stage.clone(),
                    entered_at: e.opened_at,
                    due: self.due(rules, &e.stage, &e.opened_at),
                    open: true,
                };
                let scopes = scopes(&o.region, &o.owner);
                Self::bump(state, &scopes, &e.opened_at, &o.stage, |b| b.entered += 1)?;
                Self::set_due(state, &o, &scopes, true)?;
                state.put(opportunity_key(&e.opportunity_id.0), Value::Opportunity(o));
                Ok(())
            }
            Event::StageMoved(e) => {
                let id = e.opportunity_id.0;
                let mut o = Self::load(state, &id)?;
                let scopes = scopes(&o.region, &o.owner);
                self.exit(state, &o, &scopes, &e.moved_at, &e.to)?;
                Self::set_due(state, &o, &scopes, false)?;
                o.stage = e.to.clone();
                o.entered_at = e.moved_at;
                o.due = self.due(rules, &e.to, &e.moved_at);
                Self::bump(state, &scopes, &e.moved_at, &e.to, |b| {
                    b.entered += 1;
                    *b.root_causes.entry(e.root_cause.clone()).or_default() += 1;
                })?;
                Self::set_due(state, &o, &scopes, true)?;
                state.put(opportunity_key(&id), Value::Opportunity(o));
                Ok(())
            }
            Event::OpportunityWon(e) => {
                let id = e.opportunity_id.0;
                let mut o = Self::load(state, &id)?;
                let scopes = scopes(&o.region, &o.owner);
                let won_stage = rules.pipeline.won_stage.clone();
                self.exit(state, &o, &scopes, &e.won_at, &won_stage)?;
                Self::set_due(state, &o, &scopes, false)?;
                let verified = [&e.finance_receipt_ref, &e.contract_ref, &e.delivery_acceptance_ref]
                    .iter()
                    .all(|r| !r.trim().is_empty());
                Self::bump(state, &scopes, &e.won_at, &won_stage, |b| {
                    if verified {
                        b.entered += 1;
                        b.won += 1;
                    } else {
                        b.won_unverified += 1;
                    }
                })?;
                o.stage = won_stage;
                o.open = false;
                o.due = None;
                state.put(opportunity_key(&id), Value::Opportunity(o));
                Ok(())
            }
            Event::OpportunityLost(e) => {
                let id = e.opportunity_id.0;
                let mut o = Self::load(state, &id)?;
                let scopes = scopes(&o.region, &o.owner);
                let lost_stage = rules.pipeline.lost_stage.clone();
                self.exit(state, &o, &scopes, &e.lost_at, &lost_stage)?;
                Self::set_due(state, &o, &scopes, false)?;
                Self::bump(state, &scopes, &e.lost_at, &lost_stage, |b| b.entered += 1)?;
                o.stage = lost_stage;
                o.open = false;
                o.due = None;
                state.put(opportunity_key(&id), Value::Opportunity(o));
                Ok(())
            }
            Event::OwnerChanged(e) => {
                if let Owned::Opportunity(id) = e.subject {
                    let mut o = Self::load(state, &id.0)?;
                    Self::set_due(state, &o, &scopes(&o.region, &o.owner), false)?;
                    o.owner = e.to.0;
                    if o.open {
                        Self::set_due(state, &o, &scopes(&o.region, &o.owner), true)?;
                    }
                    state.put(opportunity_key(&id.0), Value::Opportunity(o));
                }
                Ok(())
            }
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

#[cfg(test)]
mod key_tests {
    use super::*;

    /// The hand-written date in due keys is what `NaiveDate` displays, in and out of the
    /// four-digit years.
    #[test]
    fn due_keys_write_dates_as_display_does() {
        let mut key = b"left over from an earlier key".to_vec();
        for (y, m, d) in [(2026, 2, 17), (1, 1, 1), (999, 12, 31), (9999, 12, 31), (10000, 1, 1), (-5, 3, 4)] {
            let date = NaiveDate::from_ymd_opt(y, m, d).unwrap();
            due_key_into(&mut key, "r:华东", date, "qualify");
            assert_eq!(key, format!("d/r:华东/{date}/qualify").into_bytes());
        }
        bucket_key_into(&mut key, "*", "2026-02", "won");
        assert_eq!(key, b"b/*/2026-02/won".to_vec());
    }
}
