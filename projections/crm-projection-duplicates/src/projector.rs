use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use crm_domain::{
    apply_changes, normalize_company, normalize_uscc, CustomerId, DuplicateCheck, Event, ExactKey, FieldContribution,
    KeyCollision, Rules, SuspectedMatch,
};
use crm_eventlog::RecordedEvent;
use crm_matching::{KeyKind, MatchConfig, MatchResult, Matcher, Prepared, Record, RecordKind};
use crm_projection_runtime::{decode_value, resume_position, Cached, Fingerprint, ProjectionDb, Projector, State};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A customer as the matcher sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomerRecord {
    pub id: Uuid,
    pub fields: BTreeMap<String, String>,
    /// Set while merged into another customer (then it is not in the Matcher).
    pub absorbed_into: Option<Uuid>,
}

/// One field's share of a pair's weight.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Contribution {
    pub field: String,
    pub outcome: String,
    pub weight: f64,
    pub reason: String,
}

/// Where a candidate pair stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Status {
    Open,
    Dismissed { reason: String, actor: String, position: u64 },
    Merged { survivor: Uuid, actor: String, position: u64 },
}

impl Status {
    pub fn name(&self) -> &'static str {
        match self {
            Status::Open => "open",
            Status::Dismissed { .. } => "dismissed",
            Status::Merged { .. } => "merged",
        }
    }
}

/// A suspected duplicate pair, `a < b`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Candidate {
    pub a: Uuid,
    pub b: Uuid,
    /// Log2 likelihood ratio; sort by it.
    pub weight: f64,
    /// `weight` mapped to 0..1 (0.5 at the pair's threshold), for display.
    pub score: f64,
    /// `duplicate` or `review`.
    pub decision: String,
    pub explanation: String,
    pub contributions: Vec<Contribution>,
    pub status: Status,
    /// Position of the event that first made them a pair.
    pub found_position: u64,
    /// Position of the last event that changed this pair.
    pub updated_position: u64,
}

/// One merge: from `CustomersMerged`, with the pair's score just before it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MergeReport {
    pub survivor: Uuid,
    pub absorbed: Uuid,
    pub reason: String,
    pub reason_text: String,
    /// Who merged (the event's actor).
    pub actor: String,
    pub merged_at_micros: i64,
    pub position: u64,
    /// `field: old -> new` of the survivor's fields the merge changed.
    pub field_changes: Vec<String>,
    pub weight: f64,
    pub score: f64,
    pub decision: String,
    pub explanation: String,
    /// The pair's status before the merge (`open`, `dismissed`, or `none` when the matcher
    /// had not suggested it).
    pub status_before: String,
    /// Position of the `CustomerUnmerged` that undid it.
    pub unmerged_position: Option<u64>,
    pub unmerged_by: Option<String>,
    pub unmerge_reason: Option<String>,
}

/// What the duplicates tree stores.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Value {
    Customer(CustomerRecord),
    Pair(Box<Candidate>),
    Merge(Box<MergeReport>),
    LastMerge(u64),
}

pub(crate) fn record_key(id: &Uuid) -> Vec<u8> {
    format!("r/{id}").into_bytes()
}

/// The key of the pair of `x` and `y`, in either order.
pub fn pair_key(x: &Uuid, y: &Uuid) -> Vec<u8> {
    let (a, b) = if x < y { (x, y) } else { (y, x) };
    format!("p/{a}/{b}").into_bytes()
}

pub(crate) fn merge_key(position: u64) -> Vec<u8> {
    format!("m/{position:020}").into_bytes()
}

fn last_merge_key(absorbed: &Uuid) -> Vec<u8> {
    format!("l/{absorbed}").into_bytes()
}

/// A customer's profile as a matching record. A customer is a company when it has a USCC
/// or a contact name, or when its name has a legal form or an industry word; else a person.
pub fn to_record(id: &Uuid, fields: &BTreeMap<String, String>) -> Record {
    let get = |k: &str| fields.get(k).filter(|v| !v.trim().is_empty()).cloned();
    let name = get("name");
    let company = get("uscc").is_some()
        || get("contact_name").is_some()
        || name.as_deref().is_some_and(|n| {
            let c = normalize_company(n);
            c.legal_form.is_some() || c.industry.is_some()
        });
    let mut record = Record { id: id.to_string(), ..Record::default() };
    if company {
        record.kind = RecordKind::Company;
        record.company = name;
        record.name = get("contact_name");
    } else {
        record.kind = RecordKind::Person;
        record.name = name;
    }
    record.uscc = get("uscc");
    record.phones = get("phone").into_iter().collect();
    record.email = get("email");
    record.address = get("address");
    record.region = get("region");
    record.industry = get("industry");
    record
}

/// The matcher configuration of `rules`: the library's field models and blocking, with the
/// operator's duplicate thresholds (company-name similarity, contact-name edit distance).
pub fn match_config(rules: &Rules) -> MatchConfig {
    let d = &rules.duplicates;
    let mut config = MatchConfig::default();
    config.thresholds.company_similarity = f64::from(d.company_name_similarity_pct) / 100.0;
    config.thresholds.contact_name_max_edits = usize::from(d.contact_name_edit_distance);
    config
}

/// Gives `matcher` the thresholds of `rules` (blocking is the same for all rules, so the
/// index stays).
fn configure(matcher: &Mutex<Matcher>, rules: &Rules) {
    let config = match_config(rules);
    let mut matcher = matcher.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if *matcher.config() != config {
        matcher.set_config(config);
    }
}

fn decision_name(result: &MatchResult) -> String {
    result.decision.as_str().to_owned()
}

fn contributions(result: &MatchResult) -> Vec<Contribution> {
    result
        .explanation
        .fields
        .iter()
        .map(|f| Contribution {
            field: f.field.as_str().to_owned(),
            outcome: f.outcome.as_str().to_owned(),
            weight: f.weight,
            reason: f.reason.to_owned(),
        })
        .collect()
}

type Result<T = ()> = std::result::Result<T, String>;

/// One build's Matcher and the last position it applied (a lower one starts a new build
/// on the same tree: a verify reuses `duplicates/verify`).
#[derive(Default)]
struct Build {
    matcher: Arc<Mutex<Matcher>>,
    position: u64,
}

/// The duplicates projector. Its Matcher's thresholds come from the rules the build runs with
/// ([`match_config`], part of the fingerprint: a threshold change rebuilds from 0). Each build (tree) has its own Matcher, so a shadow build or a verify never sees
/// the live build's customers.
#[derive(Clone, Default)]
pub struct DuplicatesProjector {
    builds: Arc<Mutex<HashMap<String, Build>>>,
}

impl std::fmt::Debug for DuplicatesProjector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DuplicatesProjector").finish_non_exhaustive()
    }
}

fn generation(tree: &str) -> Option<u64> {
    tree.rsplit('/').next().and_then(|g| g.parse().ok())
}

impl DuplicatesProjector {
    /// An empty projector, for a projection built from position 0.
    pub fn new() -> Self {
        Self::default()
    }

    /// A projector whose Matcher holds the live customers of the serving `duplicates` tree
    /// in `db`, so the runner can resume from its checkpoint. A tree the runner will build
    /// again from position 0 (no checkpoint, or an interrupted chunked commit, whose records
    /// are a partial state) loads nothing: its Matcher starts empty, as its build does.
    pub fn open(db: &ProjectionDb) -> crm_projection_runtime::Result<Self> {
        let projector = Self::new();
        if let Some(tree) = db.serving_tree("duplicates")? {
            let resumes_after = resume_position(&tree)?;
            if resumes_after == 0 {
                return Ok(projector);
            }
            let name = String::from_utf8_lossy(&tree.name()).into_owned();
            let mut matcher = Matcher::default();
            for entry in tree.scan_prefix(b"r/") {
                let (key, bytes) = entry?;
                if let Value::Customer(c) = decode_value::<Value>(&key, &bytes)? {
                    if c.absorbed_into.is_none() {
                        matcher.insert(&to_record(&c.id, &c.fields));
                    }
                }
            }
            // The checkpoint: the build resumes after it; a build that starts lower (a tree
            // emptied after all) starts the Matcher afresh.
            let (matcher, position) = (Arc::new(Mutex::new(matcher)), resumes_after);
            projector
                .builds
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .insert(name, Build { matcher, position });
        }
        Ok(projector)
    }

    /// The Matcher of the build writing `state`'s tree, started afresh when `position` shows
    /// a new build on that tree. Keeps the two newest generations (serving and shadow) and
    /// the verify build.
    fn matcher_for(&self, state: &State<'_, Value>, rules: &Rules, position: u64) -> Arc<Mutex<Matcher>> {
        let matcher = self.track(state, position);
        configure(&matcher, rules);
        matcher
    }

    /// [`Self::matcher_for`] without configuring the Matcher: for the events `apply` skips,
    /// which still move the build's position.
    fn track(&self, state: &State<'_, Value>, position: u64) -> Arc<Mutex<Matcher>> {
        // Every event comes here: the name is looked up without allocating it.
        state.with_tree_name(|name| {
            let mut builds = self.builds.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if !builds.contains_key(name) {
                let mut generations: Vec<u64> = builds.keys().filter_map(|k| generation(k)).collect();
                generations.sort_unstable();
                if generation(name).is_some() && generations.len() >= 2 {
                    let oldest = generations[0];
                    builds.retain(|k, _| generation(k) != Some(oldest));
                }
                builds.insert(name.to_owned(), Build::default());
            }
            let build = builds.get_mut(name).expect("inserted above");
            if position <= build.position {
                *build = Build::default();
            }
            build.position = position;
            Arc::clone(&build.matcher)
        })
    }

    /// The duplicate guard's lookup: the live customers of the build writing `tree` (made
    /// with `rules`) that share a master key with the profile `fields` of `id` (USCC with a
    /// valid checksum, E.164 mobile) or score at least the review threshold against them;
    /// `id` itself (a customer being edited) is left out. A tree no build has written since
    /// the process started (and `open` did not load) holds no customer: nothing is found.
    pub fn check(&self, tree: &str, rules: &Rules, id: Uuid, fields: &BTreeMap<String, String>) -> DuplicateCheck {
        let record = to_record(&id, fields);
        let exclude = Some(id);
        let matcher = {
            let builds = self.builds.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            match builds.get(tree) {
                Some(build) => Arc::clone(&build.matcher),
                None => return DuplicateCheck::default(),
            }
        };
        configure(&matcher, rules);
        let prepared = Prepared::new(&record);
        let uscc_valid = record.uscc.as_deref().is_some_and(|u| normalize_uscc(u).checksum_ok);
        let matcher = Self::lock(&matcher);
        let excluded = |id: &str| Uuid::parse_str(id).ok().filter(|id| Some(*id) != exclude);
        let mut check = DuplicateCheck::default();
        for (p, kind) in matcher.index().matches_by_kind(&prepared, &[KeyKind::Uscc, KeyKind::Mobile]) {
            let key = match kind {
                KeyKind::Uscc if uscc_valid => ExactKey::Uscc,
                KeyKind::Mobile => ExactKey::Mobile,
                _ => continue,
            };
            if let Some(id) = excluded(&p.id) {
                check.collisions.push(KeyCollision { customer_id: CustomerId(id), key });
            }
        }
        for m in matcher.find_prepared(&prepared) {
            let Some(id) = excluded(&m.id) else { continue };
            check.suspected.push(SuspectedMatch {
                customer_id: CustomerId(id),
                score_milli: (m.result.score.clamp(0.0, 1.0) * 1000.0).round() as u32,
                decision: decision_name(&m.result),
                fields: contributions(&m.result)
                    .into_iter()
                    .map(|c| FieldContribution {
                        field: c.field,
                        outcome: c.outcome,
                        weight_centi: (c.weight * 100.0).round() as i32,
                        reason: c.reason,
                    })
                    .collect(),
            });
        }
        check
    }

    fn lock(matcher: &Mutex<Matcher>) -> MutexGuard<'_, Matcher> {
        matcher.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn customer(state: &mut State<'_, Value>, id: &Uuid) -> Result<Option<CustomerRecord>> {
        match state.get_cloned(&record_key(id))? {
            Some(Value::Customer(c)) => Ok(Some(c)),
            _ => Ok(None),
        }
    }

    fn pair(state: &mut State<'_, Value>, x: &Uuid, y: &Uuid) -> Result<Option<Candidate>> {
        match state.get_cloned(&pair_key(x, y))? {
            Some(Value::Pair(p)) => Ok(Some(*p)),
            _ => Ok(None),
        }
    }

    fn put_pair(state: &mut State<'_, Value>, pair: Candidate) {
        state.put(pair_key(&pair.a, &pair.b), Value::Pair(Box::new(pair)));
    }

    fn new_pair(x: Uuid, y: Uuid, result: &MatchResult, position: u64) -> Candidate {
        let (a, b) = if x < y { (x, y) } else { (y, x) };
        Candidate {
            a,
            b,
            weight: result.weight,
            score: result.score,
            decision: decision_name(result),
            explanation: result.explanation.to_string(),
            contributions: contributions(result),
            status: Status::Open,
            found_position: position,
            updated_position: position,
        }
    }

    fn rescore(pair: &mut Candidate, result: &MatchResult, position: u64) {
        pair.weight = result.weight;
        pair.score = result.score;
        pair.decision = decision_name(result);
        pair.explanation = result.explanation.to_string();
        pair.contributions = contributions(result);
        pair.updated_position = position;
    }

    /// Stores `c`, puts it in the Matcher and records the pairs it forms with live customers.
    /// `new`: `c` was just created, so no pair with it is stored yet and none is read.
    ///
    /// The Matcher holds exactly the live customers (absorbed ones are removed, restored ones
    /// put back), so the customers it finds are live without reading their records: on a
    /// base larger than memory each such read is a random disk read, and a build that
    /// follows the log did several per created customer, one after another.
    fn index(m: &Mutex<Matcher>, state: &mut State<'_, Value>, c: CustomerRecord, position: u64, new: bool) -> Result {
        let record = to_record(&c.id, &c.fields);
        let id = c.id;
        let live = c.absorbed_into.is_none();
        state.put(record_key(&id), Value::Customer(c));
        if !live {
            return Ok(());
        }
        let found = Self::lock(m).upsert(&record);
        for m in found {
            let Ok(other) = Uuid::parse_str(&m.id) else { continue };
            if other == id {
                continue;
            }
            // Tests (debug builds) check the invariant the read was dropped for.
            #[cfg(debug_assertions)]
            {
                let other_live = Self::customer(state, &other)?.is_some_and(|c| c.absorbed_into.is_none());
                debug_assert!(other_live, "the Matcher found {other}, which is not a live customer");
                debug_assert!(!new || Self::pair(state, &id, &other)?.is_none(), "a pair of a new customer");
            }
            let stored = if new { None } else { Self::pair(state, &id, &other)? };
            let pair = match stored {
                Some(mut pair) => {
                    Self::rescore(&mut pair, &m.result, position);
                    pair
                }
                None => Self::new_pair(id, other, &m.result, position),
            };
            Self::put_pair(state, pair);
        }
        Ok(())
    }

    /// Scores two stored customers against each other.
    fn score(m: &Mutex<Matcher>, state: &mut State<'_, Value>, x: &Uuid, y: &Uuid) -> Result<Option<MatchResult>> {
        let (Some(cx), Some(cy)) = (Self::customer(state, x)?, Self::customer(state, y)?) else {
            return Ok(None);
        };
        Ok(Some(Self::lock(m).compare(&to_record(x, &cx.fields), &to_record(y, &cy.fields))))
    }
}

/// The event types `apply` reads (see [`Projector::decodes`]): the ones that change the
/// stored customers or their pairs. The duplicate guard waits only for the last committed
/// event of these types, not for the head.
pub const DECODED: &[&str] = &[
    "CustomerCreated",
    "CustomerUpdated",
    "CustomersMerged",
    "CustomerAbsorbed",
    "CustomerUnmerged",
    "CustomerRestored",
    "DuplicateDismissed",
];

impl Projector for DuplicatesProjector {
    type Value = Value;

    fn name(&self) -> &'static str {
        "duplicates"
    }

    fn version(&self) -> u32 {
        1
    }

    fn fingerprint(&self, rules: &Rules) -> u64 {
        // The duplicate thresholds decide which pairs exist: a change re-scans from 0.
        let d = &rules.duplicates;
        Fingerprint::of(&("duplicates.thresholds", d.company_name_similarity_pct, d.contact_name_edit_distance))
    }

    fn decodes(&self, event_type: &str) -> bool {
        DECODED.contains(&event_type)
    }

    fn prefetch(
        &self,
        _: &Rules,
        _: &RecordedEvent,
        event: Option<&Event>,
        _: &Cached<'_, Value>,
        keys: &mut Vec<Vec<u8>>,
    ) {
        match event {
            Some(Event::CustomerUpdated(e)) => keys.push(record_key(&e.customer_id.0)),
            Some(Event::CustomerAbsorbed(e)) => keys.push(record_key(&e.absorbed_id.0)),
            Some(Event::CustomerRestored(e)) => keys.push(record_key(&e.absorbed_id.0)),
            Some(Event::CustomersMerged(e)) => {
                keys.extend([record_key(&e.survivor_id.0), record_key(&e.absorbed_id.0)]);
            }
            Some(Event::CustomerUnmerged(e)) => keys.push(record_key(&e.survivor_id.0)),
            _ => {}
        }
    }

    fn apply(
        &self,
        state: &mut State<'_, Value>,
        rules: &Rules,
        recorded: &RecordedEvent,
        event: Option<&Event>,
    ) -> Result {
        let position = recorded.position;
        // Only the listed types are applied, decoded or not (a fold that decodes everything,
        // as the tests' does, then fails when a type `apply` handles is missing from the list,
        // which the duplicate guard relies on too). Every event moves the build's position: a
        // fold that starts again on the same tree is told by it.
        let Some(event) = event.filter(|_| DECODED.contains(&recorded.event_type.as_str())) else {
            self.track(state, position);
            return Ok(());
        };
        let matcher = self.matcher_for(state, rules, position);
        let m = &*matcher;
        match event {
            Event::CustomerCreated(e) => {
                let c = CustomerRecord { id: e.customer_id.0, fields: e.fields.clone(), absorbed_into: None };
                Self::index(m, state, c, position, true)
            }
            Event::CustomerUpdated(e) => {
                let Some(mut c) = Self::customer(state, &e.customer_id.0)? else {
                    return Err(format!("customer {} is not known", e.customer_id.0));
                };
                apply_changes(&mut c.fields, &e.changes);
                Self::index(m, state, c, position, false)
            }
            Event::CustomersMerged(e) => {
                let (survivor, absorbed) = (e.survivor_id.0, e.absorbed_id.0);
                let result = Self::score(m, state, &survivor, &absorbed)?;
                let before = Self::pair(state, &survivor, &absorbed)?;
                let status_before = before.as_ref().map_or("none", |p| p.status.name()).to_owned();
                let actor = recorded.metadata.actor.clone();
                let mut pair = match (before, &result) {
                    (Some(mut pair), Some(r)) => {
                        Self::rescore(&mut pair, r, position);
                        Some(pair)
                    }
                    (Some(pair), None) => Some(pair),
                    (None, Some(r)) => Some(Self::new_pair(survivor, absorbed, r, position)),
                    (None, None) => None,
                };
                if let Some(pair) = pair.as_mut() {
                    pair.status = Status::Merged { survivor, actor: actor.clone(), position };
                    pair.updated_position = position;
                }
                let report = MergeReport {
                    survivor,
                    absorbed,
                    reason: e.reason.clone(),
                    reason_text: e.reason_text.clone(),
                    actor,
                    merged_at_micros: e.merged_at.timestamp_micros(),
                    position,
                    field_changes: e
                        .field_changes
                        .iter()
                        .map(|c| {
                            format!(
                                "{}: {} -> {}",
                                c.field,
                                c.old.as_deref().unwrap_or("(none)"),
                                c.new.as_deref().unwrap_or("(none)")
                            )
                        })
                        .collect(),
                    weight: pair.as_ref().map_or(0.0, |p| p.weight),
                    score: pair.as_ref().map_or(0.0, |p| p.score),
                    decision: pair.as_ref().map_or_else(|| "unknown".to_owned(), |p| p.decision.clone()),
                    explanation: pair.as_ref().map_or_else(String::new, |p| p.explanation.clone()),
                    status_before,
                    unmerged_position: None,
                    unmerged_by: None,
                    unmerge_reason: None,
                };
                state.put(merge_key(position), Value::Merge(Box::new(report)));
                state.put(last_merge_key(&absorbed), Value::LastMerge(position));
                if let Some(pair) = pair {
                    Self::put_pair(state, pair);
                }
                if let Some(mut c) = Self::customer(state, &survivor)? {
                    apply_changes(&mut c.fields, &e.field_changes);
                    Self::index(m, state, c, position, false)?;
                }
                Ok(())
            }
            Event::CustomerAbsorbed(e) => {
                if let Some(mut c) = Self::customer(state, &e.absorbed_id.0)? {
                    c.absorbed_into = Some(e.survivor_id.0);
                    state.put(record_key(&c.id), Value::Customer(c));
                }
                Self::lock(m).remove(&e.absorbed_id.0.to_string());
                Ok(())
            }
            Event::CustomerUnmerged(e) => {
                let (survivor, absorbed) = (e.survivor_id.0, e.absorbed_id.0);
                if let Some(Value::LastMerge(at)) = state.get_cloned(&last_merge_key(&absorbed))? {
                    if let Some(Value::Merge(mut report)) = state.get_cloned(&merge_key(at))? {
                        report.unmerged_position = Some(position);
                        report.unmerged_by = Some(recorded.metadata.actor.clone());
                        report.unmerge_reason = Some(e.reason.clone());
                        state.put(merge_key(at), Value::Merge(report));
                    }
                }
                if let Some(mut pair) = Self::pair(state, &survivor, &absorbed)? {
                    if matches!(pair.status, Status::Merged { .. }) {
                        pair.status = Status::Open;
                        pair.updated_position = position;
                        Self::put_pair(state, pair);
                    }
                }
                if let Some(mut c) = Self::customer(state, &survivor)? {
                    apply_changes(&mut c.fields, &e.restored);
                    Self::index(m, state, c, position, false)?;
                }
                Ok(())
            }
            Event::CustomerRestored(e) => {
                if let Some(mut c) = Self::customer(state, &e.absorbed_id.0)? {
                    c.absorbed_into = None;
                    Self::index(m, state, c, position, false)?;
                }
                Ok(())
            }
            // The guard's record of what it saw at a capture or an edit. Pairs here come from
            // this read model's own Matcher (re-scored under the current thresholds, and the
            // edited customer's `CustomerUpdated` is indexed above); a lead is no customer.
            Event::DuplicateSuspected(_) => Ok(()),
            Event::DuplicateDismissed(e) => {
                let (x, y) = (e.customer_id.0, e.other_id.0);
                let mut pair = match Self::pair(state, &x, &y)? {
                    Some(pair) => pair,
                    None => match Self::score(m, state, &x, &y)? {
                        Some(r) => Self::new_pair(x, y, &r, position),
                        None => return Ok(()),
                    },
                };
                pair.status =
                    Status::Dismissed { reason: e.reason.clone(), actor: recorded.metadata.actor.clone(), position };
                pair.updated_position = position;
                Self::put_pair(state, pair);
                Ok(())
            }
            _ => Ok(()),
        }
    }
}
