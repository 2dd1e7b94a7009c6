use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, Utc};
use crm_domain::{
    CustomerCreated, CustomerId, Event, OpportunityId, OpportunityLost, OpportunityOpened, OpportunityWon, Owned,
    OwnerChanged, Rules, RulesChanged, StageMoved, UserId, STAGE_CONTRACT, STAGE_DEMO, STAGE_INITIAL, STAGE_NEEDS,
    STAGE_NEGOTIATION,
};
use crm_projection_funnel::{funnel, FunnelQuery, FunnelReport, StageReport};
use crm_projection_runtime::fixtures::Generated;
use crm_projection_runtime::testing::{append_all, settle, TempLog};
use crm_projection_runtime::{spawn, ProjectionDb};
use uuid::Uuid;

fn at(day: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(&format!("{day}T10:00:00Z")).unwrap().with_timezone(&Utc)
}

fn id(n: u128) -> Uuid {
    Uuid::from_u128(n)
}

fn customer(n: u128, region: &str, owner: UserId) -> Event {
    let fields = BTreeMap::from([("name".to_owned(), format!("客户{n}")), ("region".to_owned(), region.to_owned())]);
    Event::CustomerCreated(CustomerCreated {
        customer_id: CustomerId(id(n)),
        fields,
        owner: Some(owner),
        from_lead: None,
    })
}

fn open(o: u128, c: u128, owner: UserId, day: &str) -> Event {
    Event::OpportunityOpened(OpportunityOpened {
        opportunity_id: OpportunityId(id(o)),
        customer_id: CustomerId(id(c)),
        lead_id: None,
        owner,
        title: "设备".into(),
        amount_fen: None,
        stage: STAGE_INITIAL.into(),
        repeat_customer: false,
        opened_at: at(day),
    })
}

fn mv(o: u128, from: &str, to: &str, day: &str, cause: &str) -> Event {
    Event::StageMoved(StageMoved {
        opportunity_id: OpportunityId(id(o)),
        from: from.into(),
        to: to.into(),
        root_cause: cause.into(),
        evidence: BTreeMap::new(),
        skip_rule: None,
        moved_at: at(day),
        rules_version: 0,
    })
}

fn won(o: u128, c: u128, day: &str, receipt: &str) -> Event {
    Event::OpportunityWon(OpportunityWon {
        opportunity_id: OpportunityId(id(o)),
        customer_id: CustomerId(id(c)),
        from_stage: STAGE_CONTRACT.into(),
        finance_receipt_ref: receipt.into(),
        contract_ref: "CT-9".into(),
        delivery_acceptance_ref: "DA-9".into(),
        won_at: at(day),
    })
}

fn to_contract(o: u128, days: [&str; 4]) -> Vec<Event> {
    vec![
        mv(o, STAGE_INITIAL, STAGE_NEEDS, days[0], "需求明确"),
        mv(o, STAGE_NEEDS, STAGE_DEMO, days[1], "演示认可"),
        mv(o, STAGE_DEMO, STAGE_NEGOTIATION, days[2], "价格达成"),
        mv(o, STAGE_NEGOTIATION, STAGE_CONTRACT, days[3], "价格达成"),
    ]
}

fn commands(events: Vec<Event>) -> Vec<Generated> {
    events.into_iter().map(|e| Generated { actor: "tester".into(), events: vec![e] }).collect()
}

/// A funnel build that has folded some events, with what it runs on.
struct Folded {
    log: TempLog,
    db: ProjectionDb,
    projector: crm_projection_funnel::FunnelProjector,
    handle: crm_projection_runtime::ProjectionHandle,
    rules: Rules,
}

/// Appends `events` (one command each) and runs the funnel until it has applied them.
async fn folded(events: Vec<Event>) -> Folded {
    let log = TempLog::new();
    append_all(&log.store, &commands(events)).await;
    let db = ProjectionDb::temporary().unwrap();
    let projector = crate::projector();
    let handle = spawn(&db, log.store.clone(), projector.clone()).unwrap();
    let rules = settle(&handle, &projector, &log.store).await;
    Folded { log, db, projector, handle, rules }
}

fn stage<'a>(report: &'a FunnelReport, name: &str) -> &'a StageReport {
    report.stages.iter().find(|s| s.stage == name).unwrap()
}

fn query(rules: &Rules, today: &str) -> FunnelQuery {
    FunnelQuery::all(rules, today.parse::<NaiveDate>().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_conversion_dwell_overdue_and_only_fully_referenced_wins() {
    let (u1, u2) = (UserId(id(901)), UserId(id(902)));
    let mut events = vec![customer(1, "北京", u1), customer(2, "上海", u2)];
    // o1: opened Friday before the Spring Festival, moved the Tuesday after: the adjusted
    // Saturday 02-14 and Tuesday 02-24 are its only working days: dwell 2.
    events.push(open(11, 1, u1, "2026-02-13"));
    events.extend(to_contract(11, ["2026-02-24", "2026-03-02", "2026-03-03", "2026-03-04"]));
    events.push(won(11, 1, "2026-03-05", "FR-1"));
    // o2: a plain week, dwell 5; won without a finance receipt: not a win.
    events.push(open(12, 1, u1, "2026-03-02"));
    events.extend(to_contract(12, ["2026-03-09", "2026-03-10", "2026-03-11", "2026-03-12"]));
    events.push(won(12, 1, "2026-03-13", "  "));
    // o3: stays in the first stage (limit 5 working days: due 03-09).
    events.push(open(13, 1, u1, "2026-03-02"));
    // o4: Shanghai, lost from the first stage.
    events.push(open(14, 2, u2, "2026-03-03"));
    events.push(Event::OpportunityLost(OpportunityLost {
        opportunity_id: OpportunityId(id(14)),
        from_stage: STAGE_INITIAL.into(),
        reason: "预算".into(),
        lost_at: at("2026-03-04"),
    }));

    let Folded { log, db: _db, projector, handle, rules } = folded(events).await;
    let reader = handle.reader();

    let all = funnel(&reader, &query(&rules, "2026-03-20")).unwrap();
    let first = stage(&all, STAGE_INITIAL);
    assert_eq!((first.entered, first.exited), (4, 3));
    assert_eq!(first.moved_to, BTreeMap::from([(STAGE_NEEDS.to_owned(), 2), ("输单".to_owned(), 1)]));
    assert_eq!(first.conversion_to_next, Some(0.5));
    // Dwell 2 (o1), 5 (o2), 1 (o4, 03-03 -> 03-04).
    assert_eq!(first.median_dwell_working_days, Some(2.0));
    assert_eq!(first.avg_dwell_working_days, Some(8.0 / 3.0));
    assert_eq!(first.overdue, 1, "o3 is past its 5 working days");
    assert_eq!(stage(&all, STAGE_NEEDS).root_causes, BTreeMap::from([("需求明确".to_owned(), 2)]));
    assert_eq!((all.won, all.won_unverified, all.lost), (1, 1, 1));
    let contract = stage(&all, STAGE_CONTRACT);
    assert_eq!((contract.entered, contract.conversion_to_next), (2, Some(0.5)));

    // Filters: region, owner, period.
    let mut shanghai = query(&rules, "2026-03-20");
    shanghai.region = Some("上海".into());
    let sh = funnel(&reader, &shanghai).unwrap();
    assert_eq!((stage(&sh, STAGE_INITIAL).entered, sh.lost, sh.won), (1, 1, 0));
    let mut by_owner = query(&rules, "2026-03-20");
    by_owner.owner = Some(u1.0);
    assert_eq!(stage(&funnel(&reader, &by_owner).unwrap(), STAGE_INITIAL).entered, 3);
    let mut march = query(&rules, "2026-03-20");
    march.from_month = Some("2026-03".into());
    march.to_month = Some("2026-03".into());
    let m = funnel(&reader, &march).unwrap();
    assert_eq!(stage(&m, STAGE_INITIAL).entered, 3, "o1 entered in February");
    assert_eq!(stage(&m, STAGE_NEEDS).entered, 1, "o1 moved on 02-24");
    let mut february = march.clone();
    february.from_month = Some("2026-02".into());
    february.to_month = Some("2026-02".into());
    assert_eq!(stage(&funnel(&reader, &february).unwrap(), STAGE_INITIAL).entered, 1);

    // Before its deadline, o3 is not overdue.
    assert_eq!(stage(&funnel(&reader, &query(&rules, "2026-03-09")).unwrap(), STAGE_INITIAL).overdue, 0);

    // A rule change of the first stage's limit rebuilds the funnel with the new deadline.
    let mut new_rules = rules.clone();
    new_rules.version += 1;
    new_rules.stage_time_limits.insert(STAGE_INITIAL.into(), 15);
    append_all(
        &log.store,
        &commands(vec![Event::RulesChanged(RulesChanged { rules: new_rules.clone(), reason: "放宽".into() })]),
    )
    .await;
    let settled = settle(&handle, &projector, &log.store).await;
    assert_eq!(settled, new_rules);
    let status = handle.status();
    assert_eq!((status.rules_version, status.rebuilds_completed), (1, 1));
    let after = funnel(&handle.reader(), &query(&new_rules, "2026-03-20")).unwrap();
    assert_eq!(stage(&after, STAGE_INITIAL).overdue, 0, "15 working days from 03-02 is 03-23");
    assert_eq!(stage(&after, STAGE_INITIAL).entered, 4, "counts are unchanged by the rebuild");
    handle.stop().await;
}

/// The read model stores customers' regions and opportunities a bucket of ids to a key (the
/// ids' last 16 bits): ids that share those bits share a stored value, and each still keeps
/// its own region, owner, stage and due day. (Generated ids almost never share a bucket in
/// a test's few thousand.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_in_one_bucket_keep_their_own_region_owner_stage_and_due_day() {
    const SAME_BUCKET: u128 = 0x1_0000;
    let (u1, u2) = (UserId(id(901)), UserId(id(902)));
    let (c1, c2, o1, o2) = (1, 1 + SAME_BUCKET, 11, 11 + SAME_BUCKET);
    let events = vec![
        customer(c1, "北京", u1),
        customer(c2, "上海", u2),
        open(o1, c1, u1, "2026-03-02"),
        open(o2, c2, u2, "2026-03-02"),
        mv(o1, STAGE_INITIAL, STAGE_NEEDS, "2026-03-03", "需求明确"),
        Event::OpportunityLost(OpportunityLost {
            opportunity_id: OpportunityId(id(o1)),
            from_stage: STAGE_NEEDS.into(),
            reason: "预算".into(),
            lost_at: at("2026-03-04"),
        }),
        // o2 stays in the first stage (due 03-09) and moves to u1.
        Event::OwnerChanged(OwnerChanged {
            subject: Owned::Opportunity(OpportunityId(id(o2))),
            from: Some(u2),
            to: u1,
            reason: "handover".into(),
            receiver_rank: 1,
            over_capacity: false,
        }),
    ];
    let Folded { log: _log, db: _db, projector: _, handle, rules } = folded(events).await;
    let reader = handle.reader();
    let report = |region: Option<&str>, owner: Option<UserId>| {
        let mut q = query(&rules, "2026-03-20");
        q.region = region.map(str::to_owned);
        q.owner = owner.map(|o| o.0);
        funnel(&reader, &q).unwrap()
    };

    let beijing = report(Some("北京"), None);
    let first = stage(&beijing, STAGE_INITIAL);
    assert_eq!((first.entered, first.exited, first.overdue), (1, 1, 0));
    assert_eq!((stage(&beijing, STAGE_NEEDS).entered, beijing.lost), (1, 1));
    let shanghai = report(Some("上海"), None);
    let first = stage(&shanghai, STAGE_INITIAL);
    assert_eq!((first.entered, first.exited, first.overdue), (1, 0, 1));
    assert_eq!((stage(&shanghai, STAGE_NEEDS).entered, shanghai.lost), (0, 0));
    // o2's open count moved with its owner; its entry stays with the owner it had then.
    let (by_u1, by_u2) = (report(None, Some(u1)), report(None, Some(u2)));
    assert_eq!((stage(&by_u1, STAGE_INITIAL).entered, stage(&by_u1, STAGE_INITIAL).overdue), (1, 1));
    assert_eq!((stage(&by_u2, STAGE_INITIAL).entered, stage(&by_u2, STAGE_INITIAL).overdue), (1, 0));
    assert_eq!(stage(&report(Some("上海"), Some(u1)), STAGE_INITIAL).overdue, 1);
    assert_eq!(stage(&report(Some("上海"), Some(u2)), STAGE_INITIAL).overdue, 0);
    handle.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_cache_answers_per_build_and_position() {
    use crm_projection_funnel::ReportCache;
    use std::sync::Arc;
    let u1 = UserId(id(901));
    let Folded { log, db: _db, projector, handle, rules } =
        folded(vec![customer(1, "北京", u1), open(11, 1, u1, "2026-03-02")]).await;
    let cache = ReportCache::default();
    let q = query(&rules, "2026-03-20");

    let reader = handle.reader();
    let first = cache.funnel(&reader, &q).unwrap();
    assert_eq!(*first, funnel(&reader, &q).unwrap());
    assert_eq!(stage(&first, STAGE_INITIAL).entered, 1);
    assert!(Arc::ptr_eq(&first, &cache.funnel(&reader, &q).unwrap()), "same build, position and query: one report");

    // A later position is computed afresh.
    append_all(&log.store, &commands(vec![open(12, 1, u1, "2026-03-03")])).await;
    settle(&handle, &projector, &log.store).await;
    let later = handle.reader();
    assert!(later.position > reader.position);
    assert_eq!(stage(&cache.funnel(&later, &q).unwrap(), STAGE_INITIAL).entered, 2);
    assert_eq!(stage(&cache.funnel(&reader, &q).unwrap(), STAGE_INITIAL).entered, 1, "still keyed by position");

    // Another tree (another build) at the same position is not answered from the cache.
    let elsewhere = sled::Config::new().temporary(true).open().unwrap();
    let other =
        crm_projection_runtime::Reader { tree: elsewhere.open_tree("funnel/99").unwrap(), position: later.position };
    assert_eq!(cache.funnel(&other, &q).unwrap().stages.iter().map(|s| s.entered).sum::<u64>(), 0);

    // Bounded: 1,500 owners' funnels at one position keep at most the bound.
    for n in 0..1_500u128 {
        let mut by_owner = q.clone();
        by_owner.owner = Some(id(10_000 + n));
        cache.funnel(&later, &by_owner).unwrap();
    }
    assert!(cache.len() <= 1024, "{} reports kept", cache.len());
    handle.stop().await;
}
