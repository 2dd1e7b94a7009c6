use std::collections::BTreeMap;

use chrono::{DateTime, Duration, NaiveDate, Utc};
use crm_domain::{
    ActivityId, ActivityKind, ActivityLogged, Aggregate, AssignmentReason, Channel, Customer, CustomerAbsorbed,
    CustomerCreated, CustomerId, CustomersMerged, Event, LeadAssigned, LeadCaptured, LeadClaimed, LeadId,
    LeadQualified, LeadReleased, Owned, OwnerChanged, Role, Rules, UserCreated, UserDeactivated, UserId,
};
use crm_projection_reminders::{escalations, my_day, reminders, MyDayQuery, ReminderQuery};
use crm_projection_runtime::fixtures::Generated;
use crm_projection_runtime::testing::{append_all, settle, TempLog};
use crm_projection_runtime::{spawn, ProjectionDb};
use uuid::Uuid;

fn id(n: u128) -> Uuid {
    Uuid::from_u128(n)
}

fn user(n: u128, role: Role, region: &str) -> Event {
    Event::UserCreated(UserCreated {
        user_id: UserId(id(n)),
        name: format!("用户{n}"),
        role,
        region: Some(region.into()),
        team: None,
        capacity: 50,
    })
}

fn customer(n: u128, owner: u128, region: &str) -> Event {
    let fields = BTreeMap::from([
        ("name".to_owned(), format!("{region}康达{n}有限公司")),
        ("phone".to_owned(), format!("+861380000{n:04}")),
        ("region".to_owned(), region.to_owned()),
    ]);
    Event::CustomerCreated(CustomerCreated {
        customer_id: CustomerId(id(n)),
        fields,
        owner: Some(UserId(id(owner))),
        from_lead: None,
    })
}

fn activity(n: u128, a: u128, at: DateTime<Utc>, next: Option<NaiveDate>) -> Event {
    Event::ActivityLogged(ActivityLogged {
        customer_id: CustomerId(id(n)),
        activity_id: ActivityId(id(a)),
        by: UserId(id(901)),
        kind: ActivityKind::Call,
        occurred_at: at,
        duration_minutes: Some(10),
        keywords: vec![],
        summary: "电话回访".into(),
        next_follow_up: next,
        contact_id: None,
        opportunity_id: None,
        inherited_from: None,
        inherited_fields: vec![],
    })
}

fn owner_change(subject: Owned, to: u128) -> Event {
    Event::OwnerChanged(OwnerChanged {
        subject,
        from: None,
        to: UserId(id(to)),
        reason: "handover".into(),
        receiver_rank: 1,
        over_capacity: false,
    })
}

fn lead(n: u128) -> Event {
    Event::LeadCaptured(LeadCaptured {
        lead_id: LeadId(id(n)),
        name: Some("赵先生".into()),
        company: Some(format!("瑞丰{n}科技")),
        phone: None,
        phone_e164: None,
        email: None,
        wechat: None,
        uscc: None,
        uscc_checksum_ok: false,
        region: Some("北京".into()),
        channel: Channel::Api { client: "test".into() },
        source: "api".into(),
        custom_attributes: Default::default(),
        captured_at: Utc::now(),
    })
}

fn assign(n: u128, to: u128, at: DateTime<Utc>) -> Event {
    Event::LeadAssigned(LeadAssigned {
        lead_id: LeadId(id(n)),
        assignee: UserId(id(to)),
        previous: None,
        reason: AssignmentReason::Manual,
        assigned_at: at,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reminders_escalations_and_my_day() {
    // Creation times are the log's recorded-at (now): activities are placed around it.
    let t0 = Utc::now();
    let today = (t0 + Duration::hours(8)).date_naive();
    let (u1, u2) = (901, 902);
    let mut history = vec![
        user(u1, Role::SalesRep, "北京"),
        user(u2, Role::SalesRep, "上海"),
        user(911, Role::RegionalManager, "北京"),
        user(912, Role::RegionalManager, "北京"),
        Event::UserDeactivated(UserDeactivated {
            user_id: UserId(id(912)), reason: "离职".into(), deactivated_at: t0
        }),
        user(913, Role::RegionalManager, "上海"),
    ];
    for (n, owner, region) in
        [(1, u1, "北京"), (2, u1, "北京"), (3, u2, "上海"), (4, u1, "北京"), (5, u1, "北京"), (6, u2, "上海")]
    {
        history.push(customer(n, owner, region));
    }
    // C1: last call ten days ago, follow-up planned for yesterday.
    history.push(activity(1, 11, t0 - Duration::days(10), Some(today - Duration::days(1))));
    // C2: a call two days ago plans today; an older call logged late does not replace it.
    history.push(activity(2, 21, t0 - Duration::days(2), Some(today)));
    history.push(activity(2, 22, t0 - Duration::days(5), None));
    // C3: never contacted.
    // C4: contacted long ago, then merged into C1: no reminder of its own.
    history.push(activity(4, 41, t0 - Duration::days(20), Some(today - Duration::days(3))));
    history.push(Event::CustomersMerged(CustomersMerged {
        survivor_id: CustomerId(id(1)),
        absorbed_id: CustomerId(id(4)),
        reason: "同一手机号".into(),
        reason_text: String::new(),
        field_changes: vec![],
        merged_at: t0,
    }));
    history.push(Event::CustomerAbsorbed(CustomerAbsorbed {
        absorbed_id: CustomerId(id(4)),
        survivor_id: CustomerId(id(1)),
        reason: "同一手机号".into(),
    }));
    // C5: a follow-up was planned, then a newer call without one clears it.
    history.push(activity(5, 51, t0 - Duration::days(8), Some(today)));
    history.push(activity(5, 52, t0 - Duration::days(1), None));
    // C6: u2 planned it for two days ago; handed over to u1.
    history.push(activity(6, 61, t0 - Duration::days(3), Some(today - Duration::days(2))));
    history.push(owner_change(Owned::Customer(CustomerId(id(6))), u1));
    // Leads: L1 held by u1 for 25 h, L2 for 23 h, L3 claimed from the pool 30 h ago and
    // qualified, L4 assigned to u2 48 h ago and handed to u1, L5 released.
    for n in 101..=105 {
        history.push(lead(n));
    }
    history.push(assign(101, u1, t0 - Duration::hours(25)));
    history.push(assign(102, u1, t0 - Duration::hours(23)));
    history.push(Event::LeadClaimed(LeadClaimed {
        lead_id: LeadId(id(103)),
        user_id: UserId(id(u1)),
        claimed_at: t0 - Duration::hours(30),
    }));
    history.push(Event::LeadQualified(LeadQualified {
        lead_id: LeadId(id(103)),
        customer_id: CustomerId(id(3)),
        opportunity_id: crm_domain::OpportunityId(id(1003)),
        new_customer: false,
    }));
    history.push(assign(104, u2, t0 - Duration::hours(48)));
    history.push(owner_change(Owned::Lead(LeadId(id(104))), u1));
    history.push(assign(105, u1, t0 - Duration::hours(40)));
    history.push(Event::LeadReleased(LeadReleased {
        lead_id: LeadId(id(105)),
        user_id: UserId(id(u1)),
        reason: "空号".into(),
    }));

    let log = TempLog::new();
    let commands: Vec<_> =
        history.iter().map(|e| Generated { actor: "tester".into(), events: vec![e.clone()] }).collect();
    append_all(&log.store, &commands).await;
    let db = ProjectionDb::temporary().unwrap();
    let handle = spawn(&db, log.store.clone(), crate::projector()).unwrap();
    settle(&handle, &crate::projector(), &log.store).await;
    let reader = handle.reader();

    let q = |now: DateTime<Utc>| ReminderQuery { now, follow_up_reminder_days: 7, escalation_after_days: 3 };
    let ids = |list: Vec<Uuid>| list.into_iter().map(|u| u.as_u128()).collect::<Vec<_>>();
    let due = |now| ids(reminders(&reader, &q(now), 100).unwrap().into_iter().map(|r| r.customer).collect());
    assert_eq!(due(t0), vec![1, 3], "C1 ten days without contact, C3 never contacted");
    assert_eq!(due(t0 + Duration::days(6)), vec![1, 6, 2, 3], "C5's last call is exactly 7 days old");
    assert_eq!(due(t0 + Duration::days(6) + Duration::seconds(1)), vec![1, 6, 2, 5, 3], "ordered by last contact");
    assert_eq!(ids(reminders(&reader, &q(t0), 1).unwrap().into_iter().map(|r| r.customer).collect()), vec![1]);

    // The read model agrees with the customer aggregate's own rule.
    let rules = Rules::default();
    for n in 1..=6u128 {
        let stream = CustomerId(id(n)).stream();
        let aggregate = Customer::fold(history.iter().filter(|e| e.stream() == stream));
        for now in [t0, t0 + Duration::days(4), t0 + Duration::days(6), t0 + Duration::days(9)] {
            let listed = reminders(&reader, &q(now), 100).unwrap().iter().any(|r| r.customer == id(n));
            assert_eq!(listed, aggregate.follow_up_due(now, &rules), "customer {n} at {now}");
        }
    }

    // Escalation after 7 + 3 days: C1 exactly at the limit is not escalated, a second later it is.
    let escalated = |now| {
        escalations(&reader, &q(now), 100)
            .unwrap()
            .into_iter()
            .map(|e| (e.reminder.customer.as_u128(), e.managers.iter().map(|(m, _)| m.as_u128()).collect::<Vec<_>>()))
            .collect::<Vec<_>>()
    };
    assert_eq!(escalated(t0 - Duration::seconds(1)), vec![]);
    assert_eq!(escalated(t0 + Duration::seconds(1)), vec![(1, vec![911])], "the inactive manager is left out");
    assert_eq!(
        escalated(t0 + Duration::days(11)),
        vec![(1, vec![911]), (6, vec![911]), (2, vec![911]), (5, vec![911]), (3, vec![913])],
        "ordered by last contact; C6's owner is now u1 in 北京"
    );

    // My day.
    let day = my_day(&reader, &MyDayQuery { user: id(u1), now: t0, today }).unwrap();
    assert_eq!(ids(day.overdue.iter().map(|r| r.customer).collect()), vec![6, 1]);
    assert_eq!(ids(day.today.iter().map(|r| r.customer).collect()), vec![2]);
    assert_eq!(ids(day.leads.iter().map(|l| l.lead).collect()), vec![104, 101]);
    assert_eq!(day.today[0].state.phone.as_deref(), Some("+8613800000002"));
    let tomorrow =
        my_day(&reader, &MyDayQuery { user: id(u1), now: t0 + Duration::days(1), today: today + Duration::days(1) })
            .unwrap();
    assert_eq!(ids(tomorrow.overdue.iter().map(|r| r.customer).collect()), vec![6, 1, 2]);
    assert!(tomorrow.today.is_empty());
    assert_eq!(ids(tomorrow.leads.iter().map(|l| l.lead).collect()), vec![104, 101, 102]);
    let theirs = my_day(&reader, &MyDayQuery { user: id(u2), now: t0, today }).unwrap();
    assert_eq!(theirs, Default::default(), "u2 handed everything over");
    handle.stop().await;
}
