//! The funnel report against a model: every figure of every scope, month range and "today"
//! recomputed from the generated events by a plain replay, with no keys or buckets.

use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, Duration, NaiveDate, Utc};
use crm_domain::{Event, Owned, Rules};
use crm_projection_funnel::{funnel, Calendar, FunnelQuery, FunnelReport, NO_REGION};
use crm_projection_runtime::fixtures::{Generated, Generator, GeneratorConfig};
use crm_projection_runtime::testing::{append_all, settle, TempLog};
use crm_projection_runtime::{histogram_median, spawn, ProjectionDb};
use proptest::prelude::*;
use uuid::Uuid;

/// One entry into or exit from a stage, with the opportunity's region and owner then.
#[derive(Debug, Clone)]
struct Fact {
    at: DateTime<Utc>,
    region: String,
    owner: Uuid,
    stage: String,
    kind: Kind,
}

#[derive(Debug, Clone)]
enum Kind {
    Entered { root_cause: Option<String> },
    Exited { to: String, dwell: u32 },
    Won { verified: bool },
}

#[derive(Debug, Clone)]
struct Opportunity {
    region: String,
    owner: Uuid,
    stage: String,
    entered_at: DateTime<Utc>,
    due: Option<NaiveDate>,
}

/// The replay: facts in log order, and the opportunities still open at the end.
#[derive(Debug, Default)]
struct Model {
    facts: Vec<Fact>,
    open: BTreeMap<Uuid, Opportunity>,
}

fn replay(commands: &[Generated], rules: &Rules, calendar: &Calendar) -> Model {
    let due = |stage: &str, at: &DateTime<Utc>| {
        rules.stage_time_limits.get(stage).map(|days| calendar.add_working_days(at.date_naive(), *days))
    };
    let mut regions: BTreeMap<Uuid, String> = BTreeMap::new();
    let mut model = Model::default();
    let region_of = |changes: Option<&Option<String>>| changes.map(|v| v.clone().unwrap_or_else(|| NO_REGION.into()));
    for event in commands.iter().flat_map(|c| &c.events) {
        let fact = |o: &Opportunity, at: DateTime<Utc>, stage: &str, kind: Kind| Fact {
            at,
            region: o.region.clone(),
            owner: o.owner,
            stage: stage.to_owned(),
            kind,
        };
        match event {
            Event::CustomerCreated(e) => {
                regions.insert(e.customer_id.0, e.fields.get("region").cloned().unwrap_or_else(|| NO_REGION.into()));
            }
            Event::CustomerUpdated(e) => {
                if let Some(r) = region_of(e.changes.iter().rev().find(|c| c.field == "region").map(|c| &c.new)) {
                    regions.insert(e.customer_id.0, r);
                }
            }
            Event::CustomersMerged(e) => {
                if let Some(r) = region_of(e.field_changes.iter().rev().find(|c| c.field == "region").map(|c| &c.new)) {
                    regions.insert(e.survivor_id.0, r);
                }
            }
            Event::CustomerUnmerged(e) => {
                if let Some(r) = region_of(e.restored.iter().rev().find(|c| c.field == "region").map(|c| &c.new)) {
                    regions.insert(e.survivor_id.0, r);
                }
            }
            Event::OpportunityOpened(e) => {
                let o = Opportunity {
                    region: regions.get(&e.customer_id.0).cloned().unwrap_or_else(|| NO_REGION.into()),
                    owner: e.owner.0,
                    stage: e.stage.clone(),
                    entered_at: e.opened_at,
                    due: due(&e.stage, &e.opened_at),
                };
                model.facts.push(fact(&o, e.opened_at, &e.stage, Kind::Entered { root_cause: None }));
                model.open.insert(e.opportunity_id.0, o);
            }
            Event::StageMoved(e) => {
                let o = model.open.get_mut(&e.opportunity_id.0).expect("the generator moves open ones");
                let dwell = calendar.working_days_between(o.entered_at.date_naive(), e.moved_at.date_naive());
                model.facts.push(fact(o, e.moved_at, &o.stage, Kind::Exited { to: e.to.clone(), dwell }));
                let entered = Kind::Entered { root_cause: Some(e.root_cause.clone()) };
                model.facts.push(fact(o, e.moved_at, &e.to, entered));
                (o.stage, o.entered_at, o.due) = (e.to.clone(), e.moved_at, due(&e.to, &e.moved_at));
            }
            Event::OpportunityWon(e) => {
                let o = model.open.remove(&e.opportunity_id.0).expect("the generator wins open ones");
                let dwell = calendar.working_days_between(o.entered_at.date_naive(), e.won_at.date_naive());
                let won = &rules.pipeline.won_stage;
                model.facts.push(fact(&o, e.won_at, &o.stage, Kind::Exited { to: won.clone(), dwell }));
                let verified = [&e.finance_receipt_ref, &e.contract_ref, &e.delivery_acceptance_ref]
                    .iter()
                    .all(|r| !r.trim().is_empty());
                model.facts.push(fact(&o, e.won_at, won, Kind::Won { verified }));
            }
            Event::OpportunityLost(e) => {
                let o = model.open.remove(&e.opportunity_id.0).expect("the generator loses open ones");
                let dwell = calendar.working_days_between(o.entered_at.date_naive(), e.lost_at.date_naive());
                let lost = &rules.pipeline.lost_stage;
                model.facts.push(fact(&o, e.lost_at, &o.stage, Kind::Exited { to: lost.clone(), dwell }));
                model.facts.push(fact(&o, e.lost_at, lost, Kind::Entered { root_cause: None }));
            }
            Event::OwnerChanged(e) => {
                if let Owned::Opportunity(id) = e.subject {
                    model.open.get_mut(&id.0).expect("the generator reassigns open ones").owner = e.to.0;
                }
            }
            _ => {}
        }
    }
    model
}

/// Per stage: entered, exited, moved_to, dwell histogram, root causes, won, won unverified,
/// overdue.
type Expected =
    BTreeMap<String, (u64, u64, BTreeMap<String, u64>, BTreeMap<u32, u64>, BTreeMap<String, u64>, u64, u64, u64)>;

fn expected(model: &Model, q: &FunnelQuery) -> Expected {
    let in_scope = |region: &str, owner: &Uuid| {
        q.region.as_deref().is_none_or(|r| r == region) && q.owner.is_none_or(|o| o == *owner)
    };
    let month = |at: &DateTime<Utc>| format!("{:04}-{:02}", at.year(), at.month());
    let mut out = Expected::new();
    for f in &model.facts {
        let m = month(&f.at);
        if !in_scope(&f.region, &f.owner)
            || q.from_month.as_ref().is_some_and(|from| m < *from)
            || q.to_month.as_ref().is_some_and(|to| m > *to)
        {
            continue;
        }
        let s = out.entry(f.stage.clone()).or_default();
        match &f.kind {
            Kind::Entered { root_cause } => {
                s.0 += 1;
                if let Some(cause) = root_cause {
                    *s.4.entry(cause.clone()).or_default() += 1;
                }
            }
            Kind::Exited { to, dwell } => {
                s.1 += 1;
                *s.2.entry(to.clone()).or_default() += 1;
                *s.3.entry(*dwell).or_default() += 1;
            }
            Kind::Won { verified: true } => {
                s.0 += 1;
                s.5 += 1;
            }
            Kind::Won { verified: false } => s.6 += 1,
        }
    }
    for o in model.open.values() {
        if in_scope(&o.region, &o.owner) && o.due.is_some_and(|due| due < q.today) {
            out.entry(o.stage.clone()).or_default().7 += 1;
        }
    }
    out
}

fn actual(report: &FunnelReport) -> Expected {
    let mut out = Expected::new();
    for s in &report.stages {
        let nothing = s.entered == 0 && s.exited == 0 && s.overdue == 0;
        let won = if s.stage == report_won_stage() { (report.won, report.won_unverified) } else { (0, 0) };
        if nothing && won == (0, 0) {
            continue;
        }
        // The dwell histogram is not in the report; its median and average are checked below.
        out.insert(
            s.stage.clone(),
            (s.entered, s.exited, s.moved_to.clone(), BTreeMap::new(), s.root_causes.clone(), won.0, won.1, s.overdue),
        );
    }
    out
}

fn report_won_stage() -> String {
    Rules::default().pipeline.won_stage
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 6, .. ProptestConfig::default() })]

    /// Every scope (all, a region, an owner, both), several month ranges and several
    /// "today"s: the report equals the model's figures.
    #[test]
    fn reports_equal_a_replay_of_the_events(seed in any::<u64>(), n in 300usize..1500, picks in proptest::collection::vec(any::<u32>(), 24)) {
        let mut g = Generator::new(GeneratorConfig { seed, users: 5, step_seconds: 6 * 3600, ..Default::default() });
        let commands: Vec<_> = (0..n).map(|_| g.next_command()).collect();
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(async {
            let log = TempLog::new();
            append_all(&log.store, &commands).await;
            let db = ProjectionDb::temporary().unwrap();
            let projector = crate::projector();
            let handle = spawn(&db, log.store.clone(), projector.clone()).unwrap();
            let rules = settle(&handle, &projector, &log.store).await;
            prop_assert_eq!(rules.pipeline.won_stage.clone(), report_won_stage());
            let model = replay(&commands, &rules, &projector.calendar);
            let reader = handle.reader();
            let (first, last) = (model.facts.first().unwrap().at, model.facts.last().unwrap().at);
            let regions: Vec<String> = model.facts.iter().map(|f| f.region.clone()).collect();
            let owners: Vec<Uuid> = model.facts.iter().map(|f| f.owner).collect();
            let span = (last - first).num_days().max(1);
            for pick in picks.chunks(4) {
                let mut q = FunnelQuery::all(&rules, (first + Duration::days(i64::from(pick[0]) % (span + 40))).date_naive());
                q.region = (pick[1] % 3 == 0).then(|| regions[pick[1] as usize % regions.len()].clone());
                q.owner = (pick[2] % 3 == 0).then(|| owners[pick[2] as usize % owners.len()]);
                if pick[3] % 2 == 0 {
                    let from = first + Duration::days(i64::from(pick[3] / 2) % span);
                    let to = from + Duration::days(i64::from(pick[3] / 7) % 90);
                    q.from_month = Some(format!("{:04}-{:02}", from.year(), from.month()));
                    q.to_month = Some(format!("{:04}-{:02}", to.year(), to.month()));
                }
                let report = funnel(&reader, &q).unwrap();
                let want = expected(&model, &q);
                let mut got = actual(&report);
                for (stage, s) in &want {
                    let r = report.stages.iter().find(|r| &r.stage == stage).expect("every stage with figures is reported");
                    prop_assert_eq!(r.median_dwell_working_days, histogram_median(&s.3), "median dwell of {} for {:?}", stage, q);
                    let (n, sum) = s.3.iter().fold((0u64, 0u64), |(n, sum), (d, c)| (n + c, sum + u64::from(*d) * c));
                    prop_assert_eq!(r.avg_dwell_working_days, (n > 0).then(|| sum as f64 / n as f64));
                    if let Some(g) = got.get_mut(stage) {
                        g.3 = s.3.clone();
                    }
                }
                prop_assert_eq!(&got, &want, "query {:?}", q);
                let lost: u64 = want.get(&rules.pipeline.lost_stage).map_or(0, |s| s.0);
                prop_assert_eq!(report.lost, lost);
            }
            handle.stop().await;
            Ok(())
        })?;
    }
}
