use chrono::{DateTime, Utc};
use crm_domain::{
    Aggregate, AssignmentReason, Channel, Event, Lead, LeadAssigned, LeadCaptured, LeadClaimed, LeadId, LeadQualified,
    LeadReleased, Owned, OwnerChanged, Role, Rules, UserCreated, UserId,
};
use crm_projection_runtime::fixtures::Generated;
use crm_projection_runtime::testing::{append_all, settle, TempLog};
use crm_projection_runtime::{spawn, ProjectionDb};
use crm_projection_workload::{unclaimed, workload, SalespersonLoad, WorkloadQuery};
use uuid::Uuid;

fn at(time: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(&format!("2026-03-02T{time}:00+08:00")).unwrap().with_timezone(&Utc)
}

fn lead(n: u128) -> LeadId {
    LeadId(Uuid::from_u128(n))
}

fn user(n: u128, name: &str) -> Event {
    Event::UserCreated(UserCreated {
        user_id: UserId(Uuid::from_u128(n)),
        name: name.into(),
        role: Role::SalesRep,
        region: Some("北京".into()),
        team: None,
        capacity: 50,
    })
}

fn capture(n: u128) -> Event {
    Event::LeadCaptured(LeadCaptured {
        lead_id: lead(n),
        name: Some("王先生".into()),
        company: Some(format!("康达{n}科技")),
        phone: Some("13800138000".into()),
        phone_e164: Some("+8613800138000".into()),
        email: None,
        wechat: None,
        uscc: None,
        uscc_checksum_ok: false,
        region: Some("北京".into()),
        channel: Channel::Phone { line: "400".into() },
        source: "电话".into(),
        custom_attributes: Default::default(),
        captured_at: at("08:00"),
    })
}

fn assign(n: u128, to: UserId, time: &str) -> Event {
    Event::LeadAssigned(LeadAssigned {
        lead_id: lead(n),
        assignee: to,
        previous: None,
        reason: AssignmentReason::Manual,
        assigned_at: at(time),
    })
}

fn claim(n: u128, by: UserId, time: &str) -> Event {
    Event::LeadClaimed(LeadClaimed { lead_id: lead(n), user_id: by, claimed_at: at(time) })
}

fn row(rows: &[SalespersonLoad], u: UserId) -> &SalespersonLoad {
    rows.iter().find(|r| r.user == u.0).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_leads_unclaimed_past_the_limit_and_median_first_response() {
    let (u1, u2) = (UserId(Uuid::from_u128(901)), UserId(Uuid::from_u128(902)));
    let mut history = vec![user(901, "张伟"), user(902, "李娜")];
    for n in 1..=7 {
        history.push(capture(n));
    }
    // L1: assigned to u1 at 09:00, never claimed.
    history.push(assign(1, u1, "09:00"));
    // L2: u1 claims after 30 minutes; later handed over to u2.
    history.extend([assign(2, u1, "09:00"), claim(2, u1, "09:30")]);
    // L3: u2 claims after 90 minutes.
    history.extend([assign(3, u2, "10:00"), claim(3, u2, "11:30")]);
    // L4: assigned to u2, reassigned to u1 at 12:00: the clock restarts.
    history.extend([assign(4, u2, "10:00"), assign(4, u1, "12:00")]);
    // L5: claimed from the pool by u2: open, but no response sample.
    history.push(claim(5, u2, "10:00"));
    // L6: u1 claims after 10 minutes, then qualifies it: no longer open.
    history.extend([assign(6, u1, "09:00"), claim(6, u1, "09:10")]);
    history.push(Event::LeadQualified(LeadQualified {
        lead_id: lead(6),
        customer_id: crm_domain::CustomerId(Uuid::from_u128(66)),
        opportunity_id: crm_domain::OpportunityId(Uuid::from_u128(67)),
        new_customer: true,
    }));
    // L7: assigned to u1, released: neither open nor unclaimed.
    history.push(assign(7, u1, "09:00"));
    history.push(Event::LeadReleased(LeadReleased { lead_id: lead(7), user_id: u1, reason: "空号".into() }));
    history.push(Event::OwnerChanged(OwnerChanged {
        subject: Owned::Lead(lead(2)),
        from: Some(u1),
        to: u2,
        reason: "handover".into(),
        receiver_rank: 1,
        over_capacity: false,
    }));

    let log = TempLog::new();
    let commands: Vec<_> =
        history.iter().map(|e| Generated { actor: "tester".into(), events: vec![e.clone()] }).collect();
    append_all(&log.store, &commands).await;
    let db = ProjectionDb::temporary().unwrap();
    let handle = spawn(&db, log.store.clone(), crate::projector()).unwrap();
    settle(&handle, &crate::projector(), &log.store).await;
    let reader = handle.reader();

    let q = |time: &str| WorkloadQuery { now: at(time), unclaimed_alert_hours: 2 };
    let rows = workload(&reader, &q("13:00")).unwrap();
    assert_eq!(rows.len(), 2);
    let (r1, r2) = (row(&rows, u1), row(&rows, u2));
    assert_eq!((r1.open_leads, r1.unclaimed, r1.unclaimed_over_limit), (2, 2, 1), "L1 and L4 open, L1 past 2 h");
    assert_eq!((r1.responses, r1.median_first_response_minutes), (2, Some(20.0)), "30 and 10 minutes");
    assert_eq!(r1.info.as_ref().map(|i| i.name.as_str()), Some("张伟"));
    assert_eq!((r2.open_leads, r2.unclaimed, r2.unclaimed_over_limit), (3, 0, 0), "L2 (handed over), L3, L5");
    assert_eq!((r2.responses, r2.median_first_response_minutes), (1, Some(90.0)));

    // Exactly two hours is not past the limit; a second more is.
    let ids = |time: &str| -> Vec<Uuid> { unclaimed(&reader, &q(time), 100).unwrap().iter().map(|l| l.lead).collect() };
    assert_eq!(ids("11:00"), Vec::<Uuid>::new());
    assert_eq!(ids("11:01"), vec![lead(1).0]);
    assert_eq!(ids("14:30"), vec![lead(1).0, lead(4).0], "oldest assignment first");
    assert_eq!(unclaimed(&reader, &q("14:30"), 1).unwrap().len(), 1, "the limit caps the answer");
    let l4 = &unclaimed(&reader, &q("14:30"), 100).unwrap()[1];
    assert_eq!((l4.assignee, l4.assigned_at, l4.company.as_deref()), (u1.0, at("12:00"), Some("康达4科技")));
    assert_eq!(row(&workload(&reader, &q("14:30")).unwrap(), u1).unclaimed_over_limit, 2);

    // The read model agrees with the lead aggregate's own alert rule.
    let rules = Rules::default();
    for n in 1..=7u128 {
        let events: Vec<Event> = history.iter().filter(|e| e.stream() == lead(n).stream()).cloned().collect();
        let aggregate = Lead::fold(&events);
        for time in ["10:59", "11:01", "13:59", "14:01", "18:00"] {
            let listed = unclaimed(&reader, &q(time), 100).unwrap().iter().any(|l| l.lead == lead(n).0);
            assert_eq!(listed, aggregate.unclaimed_alert_due(at(time), &rules), "lead {n} at {time}");
        }
    }
    handle.stop().await;
}
