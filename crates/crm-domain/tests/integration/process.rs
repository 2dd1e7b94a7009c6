use crm_domain::testing::test_context;
use crm_domain::*;

use crate::support::*;

fn claimed_lead() -> Lead {
    Lead::fold(&[captured(1), assigned(1, 5), claimed(1, 5)])
}

fn qualify(link_existing: bool) -> QualifyLead {
    QualifyLead {
        customer_id: customer_id(1),
        link_existing,
        opportunity_id: opportunity_id(1),
        title: "手术室监护仪采购".into(),
        amount_fen: Some(86_000_000),
    }
}

#[test]
fn qualifying_creates_customer_and_opportunity() {
    let events = qualify_lead(
        &claimed_lead(),
        &Customer::default(),
        &Opportunity::default(),
        qualify(false),
        &test_context(),
        &Rules::default(),
    )
    .unwrap();
    assert_eq!(
        events,
        vec![
            Event::CustomerCreated(CustomerCreated {
                customer_id: customer_id(1),
                fields: map(&[
                    ("name", "北京市康达医疗器械有限公司"),
                    ("contact_name", "张伟"),
                    ("phone", "+8613800138000"),
                    ("region", "北京"),
                ]),
                owner: Some(user_id(5)),
                from_lead: Some(lead_id(1)),
            }),
            Event::OpportunityOpened(OpportunityOpened {
                opportunity_id: opportunity_id(1),
                customer_id: customer_id(1),
                lead_id: Some(lead_id(1)),
                owner: user_id(5),
                title: "手术室监护仪采购".into(),
                amount_fen: Some(86_000_000),
                stage: STAGE_INITIAL.into(),
                repeat_customer: false,
                opened_at: now(),
            }),
            Event::LeadQualified(LeadQualified {
                lead_id: lead_id(1),
                customer_id: customer_id(1),
                opportunity_id: opportunity_id(1),
                new_customer: true,
            }),
        ]
    );
    let streams: Vec<String> = group_by_stream(events).into_iter().map(|s| s.stream).collect();
    assert_eq!(streams, [customer_id(1).stream(), opportunity_id(1).stream(), lead_id(1).stream()]);
}

#[test]
fn qualifying_links_an_existing_repeat_customer() {
    let customer = Customer::fold(&[
        customer_created(1, &[("name", "康达医疗器械")]),
        Event::CustomerDealWon(CustomerDealWon { customer_id: customer_id(1), opportunity_id: opportunity_id(9) }),
    ]);
    let events = qualify_lead(
        &claimed_lead(),
        &customer,
        &Opportunity::default(),
        qualify(true),
        &test_context(),
        &Rules::default(),
    )
    .unwrap();
    assert_eq!(events.len(), 2);
    assert!(matches!(&events[0], Event::OpportunityOpened(e) if e.repeat_customer));
    assert!(matches!(&events[1], Event::LeadQualified(e) if !e.new_customer));
}

#[test]
fn qualify_refusals() {
    let ctx = test_context();
    let rules = Rules::default();
    let unclaimed = Lead::fold(&[captured(1), assigned(1, 5)]);
    let err = qualify_lead(&unclaimed, &Customer::default(), &Opportunity::default(), qualify(false), &ctx, &rules)
        .unwrap_err();
    assert!(matches!(err, DomainError::FailedPrecondition { ref rule, .. } if rule == "lead.not_claimed"), "{err}");
    let existing = Customer::fold(&[customer_created(1, &[("name", "康达")])]);
    let err =
        qualify_lead(&claimed_lead(), &existing, &Opportunity::default(), qualify(false), &ctx, &rules).unwrap_err();
    assert_eq!(err, DomainError::AlreadyExists { kind: "customer".into(), id: customer_id(1).to_string() });
    let err = qualify_lead(&claimed_lead(), &Customer::default(), &Opportunity::default(), qualify(true), &ctx, &rules)
        .unwrap_err();
    assert_eq!(err, DomainError::NotFound { kind: "customer".into(), id: customer_id(1).to_string() });
    let mut untitled = qualify(false);
    untitled.title = " ".into();
    let err = qualify_lead(&claimed_lead(), &Customer::default(), &Opportunity::default(), untitled, &ctx, &rules)
        .unwrap_err();
    assert!(matches!(err, DomainError::InvalidArgument { ref field, .. } if field == "title"));
    let qualified = Lead::fold(&[
        captured(1),
        claimed(1, 5),
        Event::LeadQualified(LeadQualified {
            lead_id: lead_id(1),
            customer_id: customer_id(1),
            opportunity_id: opportunity_id(1),
            new_customer: true,
        }),
    ]);
    assert!(
        qualify_lead(&qualified, &Customer::default(), &Opportunity::default(), qualify(false), &ctx, &rules).is_err()
    );
}

fn survivor() -> Vec<Event> {
    vec![customer_created(
        1,
        &[("name", "北京市康达医疗器械有限公司"), ("phone", "+8613800138000"), ("address", "海淀区A座")],
    )]
}

fn duplicate() -> Vec<Event> {
    vec![customer_created(
        2,
        &[
            ("name", "康达医疗器械(北京)有限公司"),
            ("phone", "+8613800138000"),
            ("address", "海淀区B座"),
            ("uscc", "91110108MA01AB2C3X"),
        ],
    )]
}

fn merge_cmd(winners: &[(&str, MergeWinner)]) -> MergeCustomers {
    MergeCustomers {
        reason: "同一手机号".into(),
        reason_text: "展会与官网各录入一次".into(),
        winners: winners.iter().map(|(k, w)| ((*k).to_owned(), *w)).collect(),
    }
}

fn merged() -> (Vec<Event>, Vec<Event>) {
    let events = merge_customers(
        &Customer::fold(&survivor()),
        &Customer::fold(&duplicate()),
        merge_cmd(&[("address", MergeWinner::Absorbed)]),
        &test_context(),
        &Rules::default(),
    )
    .unwrap();
    let mut s = survivor();
    let mut a = duplicate();
    for e in events {
        if e.stream() == customer_id(1).stream() {
            s.push(e)
        } else {
            a.push(e)
        }
    }
    (s, a)
}

#[test]
fn merge_takes_the_chosen_winners_and_fills_gaps() {
    let (s, a) = merged();
    assert_eq!(
        s.last().unwrap(),
        &Event::CustomersMerged(CustomersMerged {
            survivor_id: customer_id(1),
            absorbed_id: customer_id(2),
            reason: "同一手机号".into(),
            reason_text: "展会与官网各录入一次".into(),
            field_changes: vec![
                FieldChange {
                    field: "address".into(), old: Some("海淀区A座".into()), new: Some("海淀区B座".into())
                },
                FieldChange { field: "uscc".into(), old: None, new: Some("91110108MA01AB2C3X".into()) },
            ],
            merged_at: now(),
        })
    );
    assert_eq!(
        Customer::fold(&s).name(),
        Some("北京市康达医疗器械有限公司"),
        "name conflict not listed: survivor wins"
    );
    let absorbed = Customer::fold(&a);
    assert_eq!(absorbed.absorbed_into, Some(customer_id(1)));
    assert!(
        matches!(absorbed.ensure_writable(), Err(DomainError::FailedPrecondition { ref rule, .. }) if rule == "customer.absorbed")
    );
}

#[test]
fn merge_refusals() {
    let (s, a) = (Customer::fold(&survivor()), Customer::fold(&duplicate()));
    let ctx = test_context();
    let rules = Rules::default();
    let rule_of = |r: Result<Vec<Event>, DomainError>| match r.unwrap_err() {
        DomainError::InvalidArgument { rule, .. } | DomainError::FailedPrecondition { rule, .. } => rule,
        other => panic!("{other}"),
    };
    let no_reason = MergeCustomers { reason: "".into(), ..merge_cmd(&[]) };
    assert_eq!(rule_of(merge_customers(&s, &a, no_reason, &ctx, &rules)), "merge.reason_required");
    let odd_reason = MergeCustomers { reason: "看着像".into(), ..merge_cmd(&[]) };
    assert_eq!(rule_of(merge_customers(&s, &a, odd_reason, &ctx, &rules)), "merge.reason_unknown");
    assert_eq!(rule_of(merge_customers(&s, &s, merge_cmd(&[]), &ctx, &rules)), "merge.same_customer");
    assert_eq!(
        rule_of(merge_customers(&s, &a, merge_cmd(&[("phone", MergeWinner::Absorbed)]), &ctx, &rules)),
        "merge.not_a_conflict"
    );
    let (s2, a2) = merged();
    let third = Customer::fold(&[customer_created(3, &[("name", "康达")])]);
    assert_eq!(
        rule_of(merge_customers(&third, &Customer::fold(&a2), merge_cmd(&[]), &ctx, &rules)),
        "customer.absorbed"
    );
    assert_eq!(
        rule_of(merge_customers(&third, &Customer::fold(&s2), merge_cmd(&[]), &ctx, &rules)),
        "merge.absorbed_has_merges"
    );
}

#[test]
fn unmerge_restores_both_and_keeps_post_merge_activities_on_the_survivor() {
    let (mut s, a) = merged();
    let before_merge = Customer::fold(&duplicate());
    // After the merge: an activity on the survivor, and a manual edit of a merged field.
    s.push(Event::ActivityLogged(ActivityLogged {
        customer_id: customer_id(1),
        activity_id: activity_id(1),
        by: user_id(1),
        kind: ActivityKind::Call,
        occurred_at: now(),
        duration_minutes: Some(10),
        keywords: vec![],
        summary: "确认地址".into(),
        next_follow_up: None,
        contact_id: None,
        opportunity_id: None,
        inherited_from: None,
        inherited_fields: vec![],
    }));
    s.push(Event::CustomerUpdated(CustomerUpdated {
        customer_id: customer_id(1),
        changes: vec![FieldChange {
            field: "uscc".into(),
            old: Some("91110108MA01AB2C3X".into()),
            new: Some(valid_uscc("91110108MA01AB2C3")),
        }],
    }));
    let events =
        unmerge_customers(&Customer::fold(&s), &Customer::fold(&a), "核实为两家公司", &test_context()).unwrap();
    assert_eq!(
        events,
        vec![
            Event::CustomerUnmerged(CustomerUnmerged {
                survivor_id: customer_id(1),
                absorbed_id: customer_id(2),
                reason: "核实为两家公司".into(),
                restored: vec![FieldChange {
                    field: "address".into(),
                    old: Some("海淀区B座".into()),
                    new: Some("海淀区A座".into())
                }],
                kept: vec!["uscc".into()],
                post_merge_activities: vec![activity_id(1)],
            }),
            Event::CustomerRestored(CustomerRestored { absorbed_id: customer_id(2), survivor_id: customer_id(1) }),
        ]
    );
    let mut a_after = a;
    a_after.push(events[1].clone());
    let restored = Customer::fold(&a_after);
    assert_eq!(restored.fields, before_merge.fields);
    assert_eq!(restored.absorbed_into, None);
    s.push(events[0].clone());
    let survivor_after = Customer::fold(&s);
    assert_eq!(survivor_after.fields["address"], "海淀区A座");
    assert!(survivor_after.merges.is_empty());
    assert_eq!(survivor_after.activities, [activity_id(1)]);
}

#[test]
fn unmerge_refusals() {
    let (s, a) = merged();
    let ctx = test_context();
    let err = unmerge_customers(&Customer::fold(&survivor()), &Customer::fold(&duplicate()), "x", &ctx).unwrap_err();
    assert!(matches!(err, DomainError::FailedPrecondition { ref rule, .. } if rule == "unmerge.not_merged"));
    let err = unmerge_customers(&Customer::fold(&s), &Customer::fold(&a), " ", &ctx).unwrap_err();
    assert!(matches!(err, DomainError::InvalidArgument { ref rule, .. } if rule == "unmerge.reason_required"));
}

fn receiver(n: u128, capacity: u32, load: u32) -> Receiver {
    Receiver { user: User::fold(&[user_created(n, "北京", "华北一组", capacity)]), load }
}

#[test]
fn handover_moves_everything_open_in_priority_order() {
    let departing = User::fold(&[user_created(1, "北京", "华北一组", 30)]);
    let customers = vec![
        Customer::fold(&[customer_created(1, &[("name", "甲")])]),
        Customer::fold(&[customer_created(2, &[("name", "乙")])]),
    ];
    let opportunities = vec![
        Opportunity::fold(&[opened(1, 1, STAGE_DEMO, false)]),
        Opportunity::fold(&[opened(2, 7, STAGE_INITIAL, false)]), // customer owned by someone else
    ];
    let leads = vec![
        Lead::fold(&[captured(1), claimed(1, 1)]),
        Lead::fold(&[captured(2), assigned(2, 1)]),
        Lead::fold(&[captured(3), assigned(3, 9)]), // not theirs
    ];
    // Receiver 2 has room for 2 items, receiver 3 for plenty.
    let receivers = vec![receiver(2, 10, 8), receiver(3, 10, 0)];
    let mut events = handover(&departing, &receivers, &leads, &customers, &opportunities).unwrap();
    assert_eq!(
        events.pop(),
        Some(Event::UserHandedOver(UserHandedOver {
            user_id: user_id(1),
            receivers: vec![user_id(2), user_id(3)],
            items: 6
        }))
    );
    let moves: Vec<(Owned, UserId, u32)> = events
        .iter()
        .map(|e| match e {
            Event::OwnerChanged(o) => {
                assert_eq!((o.from, o.reason.as_str(), o.over_capacity), (Some(user_id(1)), "handover", false));
                (o.subject, o.to, o.receiver_rank)
            }
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        moves,
        [
            (Owned::Customer(customer_id(1)), user_id(2), 1),
            (Owned::Opportunity(opportunity_id(1)), user_id(2), 1),
            (Owned::Customer(customer_id(2)), user_id(3), 2),
            (Owned::Opportunity(opportunity_id(2)), user_id(3), 2),
            (Owned::Lead(lead_id(1)), user_id(3), 2),
            (Owned::Lead(lead_id(2)), user_id(3), 2),
        ]
    );
    // Applying the moves gives the receivers ownership.
    let mut lead = leads[0].clone();
    lead.apply(&events[4]);
    assert_eq!((lead.assignee, lead.status), (Some(user_id(3)), LeadStatus::Claimed));
}

#[test]
fn handover_overflow_is_flagged() {
    let departing = User::fold(&[user_created(1, "北京", "华北一组", 30)]);
    let leads: Vec<Lead> = (1..=3).map(|n| Lead::fold(&[captured(n), claimed(n, 1)])).collect();
    let events = handover(&departing, &[receiver(2, 5, 5), receiver(3, 1, 0)], &leads, &[], &[]).unwrap();
    let placed: Vec<(UserId, bool)> = events[..3]
        .iter()
        .map(|e| match e {
            Event::OwnerChanged(o) => (o.to, o.over_capacity),
            _ => panic!(),
        })
        .collect();
    assert_eq!(placed, [(user_id(3), false), (user_id(2), true), (user_id(3), true)]);
}

#[test]
fn handover_refusals() {
    let departing = User::fold(&[user_created(1, "北京", "华北一组", 30)]);
    let leads = vec![Lead::fold(&[captured(1), claimed(1, 1)])];
    let rule_of = |r: Result<Vec<Event>, DomainError>| match r.unwrap_err() {
        DomainError::InvalidArgument { rule, .. } | DomainError::FailedPrecondition { rule, .. } => rule,
        other => panic!("{other}"),
    };
    assert_eq!(rule_of(handover(&departing, &[], &leads, &[], &[])), "handover.receivers_required");
    assert_eq!(rule_of(handover(&departing, &[receiver(1, 5, 0)], &leads, &[], &[])), "handover.receiver_is_departing");
    assert_eq!(
        rule_of(handover(&departing, &[receiver(2, 5, 0), receiver(2, 5, 0)], &leads, &[], &[])),
        "handover.duplicate_receiver"
    );
    let mut gone = receiver(2, 5, 0);
    gone.user.apply(&Event::UserDeactivated(UserDeactivated {
        user_id: user_id(2),
        reason: "离职".into(),
        deactivated_at: now(),
    }));
    assert_eq!(rule_of(handover(&departing, &[gone], &leads, &[], &[])), "user.inactive");
    assert_eq!(rule_of(handover(&departing, &[receiver(2, 5, 0)], &[], &[], &[])), "handover.nothing_open");
}
