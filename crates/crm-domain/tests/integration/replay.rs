//! Model-based property: for random command sequences, the state rebuilt from the emitted
//! events (after a round trip through the codec) equals the live state, and a refused
//! command leaves the state untouched.

use chrono::Duration;
use crm_domain::testing::test_context;
use crm_domain::{
    ActivityKind, Aggregate, Candidate, CaptureLead, Customer, CustomerCommand, Event, Lead, LeadCommand, LogActivity,
    NewContact, Opportunity, OpportunityCommand, Rules, UserSummary, STAGE_CONTRACT, STAGE_DEMO, STAGE_INITIAL,
    STAGE_NEEDS, STAGE_NEGOTIATION, STAGE_WON,
};
use proptest::prelude::*;
use proptest::strategy::{Strategy, ValueTree};

use crate::support::*;

/// Runs `commands` (each with minutes elapsed since the previous one) against `seed`.
/// Returns how many commands were accepted, so tests can check they exercised something.
fn live_equals_replay<A: Aggregate>(seed: Vec<Event>, commands: Vec<(A::Command, i64)>, rules: &Rules) -> usize {
    let mut ctx = test_context();
    let mut live = A::fold(&seed);
    let stream = seed.first().map(Event::stream);
    let mut log = seed;
    let mut accepted = 0;
    for (cmd, minutes) in commands {
        ctx.now += Duration::minutes(minutes);
        let before = live.clone();
        match live.handle(cmd, &ctx, rules) {
            Ok(events) => {
                accepted += 1;
                for event in events {
                    // Events for other streams (a won deal on the customer) go elsewhere.
                    if stream.as_ref().is_none_or(|s| *s == event.stream()) {
                        live.apply(&event);
                        log.push(event);
                    }
                }
            }
            Err(_) => assert_eq!(live, before),
        }
    }
    let decoded: Vec<Event> =
        log.iter().map(|e| Event::decode(e.event_type(), e.schema_version(), &e.encode()).expect("decodes")).collect();
    assert_eq!(decoded, log);
    assert_eq!(A::fold(&decoded), live);
    accepted
}

fn opt<T: Clone + std::fmt::Debug + 'static>(values: Vec<T>) -> impl Strategy<Value = Option<T>> {
    prop_oneof![Just(None), proptest::sample::select(values).prop_map(Some)]
}

fn text(values: &'static [&'static str]) -> impl Strategy<Value = String> {
    proptest::sample::select(values).prop_map(str::to_owned)
}

fn user_summary() -> impl Strategy<Value = UserSummary> {
    (1u128..=3).prop_map(|n| UserSummary { user_id: user_id(n), active: n != 3 })
}

fn lead_command() -> impl Strategy<Value = LeadCommand> {
    let capture = (
        opt(vec!["张伟".to_owned(), " ".to_owned()]),
        opt(vec!["北京市康达医疗器械有限公司".to_owned(), "星辰电子".to_owned()]),
        opt(vec!["138 0013 8000".to_owned(), "010-61234567".to_owned(), "123".to_owned()]),
        opt(vec!["zhangwei_2026".to_owned()]),
        text(&["展会扫码", "", "官网表单"]),
    )
        .prop_map(|(name, company, phone, wechat, source)| {
            LeadCommand::Capture(CaptureLead { name, company, phone, wechat, source, ..capture(1) })
        });
    let candidates = Just(vec![
        Candidate {
            user_id: user_id(1),
            team: Some("华北一组".into()),
            active: true,
            load: 2,
            capacity: 3,
            last_assigned_at: None,
        },
        Candidate {
            user_id: user_id(2),
            team: Some("华北一组".into()),
            active: true,
            load: 1,
            capacity: 3,
            last_assigned_at: None,
        },
    ]);
    prop_oneof![
        capture,
        user_summary().prop_map(|assignee| LeadCommand::Assign { assignee }),
        candidates.prop_map(|candidates| LeadCommand::AutoAssign { candidates }),
        user_summary().prop_map(|user| LeadCommand::Claim { user }),
        ((1u128..=3), text(&["客户暂无预算", ""]))
            .prop_map(|(n, reason)| LeadCommand::Release { user_id: user_id(n), reason }),
    ]
}

fn customer_command() -> impl Strategy<Value = CustomerCommand> {
    let create = text(&["康达医疗器械", ""]).prop_map(|name| CustomerCommand::Create {
        customer_id: customer_id(1),
        fields: map(&[("name", &name), ("phone", "13800138000")]),
        owner: Some(user_id(1)),
    });
    let update = (
        text(&["name", "phone", "region", "address", "custom.等级", "fax"]),
        opt(vec!["北京".to_owned(), "139 0013 9000".to_owned(), "海淀区".to_owned(), "12".to_owned()]),
    )
        .prop_map(|(field, value)| CustomerCommand::Update { changes: [(field, value)].into() });
    let contact = (1u128..=3, text(&["李娜", " "])).prop_map(|(n, name)| {
        CustomerCommand::AddContact(NewContact {
            contact_id: contact_id(n),
            name,
            title: None,
            phone: None,
            email: None,
            wechat: None,
        })
    });
    let activity = (
        1u128..=6,
        opt(vec![
            ActivityKind::Call,
            ActivityKind::Visit,
            ActivityKind::WeChat,
            ActivityKind::Meeting,
            ActivityKind::Email,
        ]),
        proptest::sample::subsequence(vec!["报价", "演示", "付款", "交付"], 0..=4),
        opt(vec![15u32, 60]),
        0i64..6000,
        opt(vec![1u128, 2]),
    )
        .prop_map(|(n, kind, keywords, duration_minutes, minutes_ago, contact)| {
            CustomerCommand::LogActivity(LogActivity {
                activity_id: activity_id(n),
                by: user_id(1),
                kind,
                occurred_at: Some(now() - Duration::minutes(minutes_ago)),
                duration_minutes,
                keywords: keywords.into_iter().map(str::to_owned).collect(),
                summary: "跟进".into(),
                next_follow_up: None,
                contact_id: contact.map(contact_id),
                opportunity_id: None,
            })
        });
    prop_oneof![create, update, contact, activity]
}

fn opportunity_command() -> impl Strategy<Value = OpportunityCommand> {
    let stages = [STAGE_INITIAL, STAGE_NEEDS, STAGE_DEMO, STAGE_NEGOTIATION, STAGE_CONTRACT, STAGE_WON, "报价"];
    let evidence = [
        "requirements_note",
        "meeting_notes_ref",
        "customer_feedback",
        "quote_ref",
        "contract_draft_ref",
        "previous_contract_ref",
    ];
    let movement = (
        proptest::sample::select(stages.to_vec()),
        text(&["需求明确", "老客户复购", "", "运气"]),
        proptest::sample::subsequence(evidence.to_vec(), 0..=evidence.len()),
    )
        .prop_map(|(to, root_cause, keys)| OpportunityCommand::MoveStage {
            to: to.into(),
            root_cause,
            evidence: keys.into_iter().map(|k| (k.to_owned(), format!("{k}-001"))).collect(),
        });
    let won = (text(&["FIN-1", ""]), text(&["HT-1", ""]), text(&["YS-1", ""])).prop_map(|(f, c, d)| {
        OpportunityCommand::MarkWon { finance_receipt_ref: f, contract_ref: c, delivery_acceptance_ref: d }
    });
    let lost = text(&["竞品", ""]).prop_map(|reason| OpportunityCommand::MarkLost { reason });
    prop_oneof![6 => movement, 2 => won, 1 => lost]
}

fn rules() -> Rules {
    let mut rules = Rules::default();
    rules.assignment.region_teams = map(&[("北京", "华北一组")]);
    rules.assignment.default_team = Some("华北一组".into());
    rules
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn lead_replay_matches_live(commands in proptest::collection::vec((lead_command(), 0i64..200), 1..25)) {
        live_equals_replay::<Lead>(vec![], commands, &rules());
    }

    #[test]
    fn customer_replay_matches_live(commands in proptest::collection::vec((customer_command(), 0i64..3000), 1..25)) {
        live_equals_replay::<Customer>(vec![], commands, &rules());
    }

    #[test]
    fn opportunity_replay_matches_live(
        repeat in any::<bool>(),
        commands in proptest::collection::vec((opportunity_command(), 0i64..3000), 1..25),
    ) {
        live_equals_replay::<Opportunity>(vec![opened(1, 1, STAGE_INITIAL, repeat)], commands, &rules());
    }
}

/// The generators reach past the first refusal: sequences get accepted commands.
#[test]
fn generators_exercise_accepted_commands() {
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let strategy = proptest::collection::vec((opportunity_command(), 0i64..10), 40);
    let mut accepted = 0;
    for _ in 0..20 {
        let commands = strategy.new_tree(&mut runner).unwrap().current();
        accepted += live_equals_replay::<Opportunity>(vec![opened(1, 1, STAGE_INITIAL, true)], commands, &rules());
    }
    assert!(accepted >= 20, "only {accepted} accepted commands in 800");
}
