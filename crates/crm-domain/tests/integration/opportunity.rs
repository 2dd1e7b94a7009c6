use std::collections::BTreeMap;

use crm_domain::testing::given;
use crm_domain::*;

use crate::support::*;

fn move_to(to: &str, evidence: &[(&str, &str)]) -> OpportunityCommand {
    OpportunityCommand::MoveStage { to: to.into(), root_cause: "需求明确".into(), evidence: map(evidence) }
}

fn at_contract() -> Vec<Event> {
    vec![
        opened(1, 1, STAGE_NEGOTIATION, false),
        stage_moved(1, STAGE_NEGOTIATION, STAGE_CONTRACT, &[("contract_draft_ref", "HT-2026-0042-draft")]),
    ]
}

#[test]
fn moves_along_the_default_pipeline_with_evidence() {
    type Step<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)]);
    let steps: [Step<'_>; 4] = [
        (STAGE_INITIAL, STAGE_NEEDS, &[("requirements_note", "手术室需6台监护仪")]),
        (STAGE_NEEDS, STAGE_DEMO, &[("meeting_notes_ref", "MN-2026-031"), ("customer_feedback", "设备科认可参数")]),
        (STAGE_DEMO, STAGE_NEGOTIATION, &[("quote_ref", "Q-2026-118")]),
        (STAGE_NEGOTIATION, STAGE_CONTRACT, &[("contract_draft_ref", "HT-2026-0042-draft")]),
    ];
    let mut history = vec![opened(1, 1, STAGE_INITIAL, false)];
    for (from, to, evidence) in steps {
        let state = given::<Opportunity>(history.clone())
            .when(move_to(to, evidence))
            .then_expect_events(vec![stage_moved(1, from, to, evidence)]);
        assert_eq!(state.stage, to);
        history.push(stage_moved(1, from, to, evidence));
    }
}

#[test]
fn missing_evidence_is_named() {
    given::<Opportunity>(vec![opened(1, 1, STAGE_NEEDS, false)])
        .when(move_to(STAGE_DEMO, &[("meeting_notes_ref", "MN-2026-031"), ("customer_feedback", "  ")]))
        .then_expect_error(DomainError::FailedPrecondition {
            rule: "stage.evidence_required".into(),
            missing: vec!["customer_feedback".into()],
            detail: "需求确认 -> 方案演示 needs evidence".into(),
        });
    given::<Opportunity>(vec![opened(1, 1, STAGE_NEEDS, false)])
        .when(move_to(STAGE_DEMO, &[]))
        .then_expect_missing("stage.evidence_required", &["meeting_notes_ref", "customer_feedback"]);
}

#[test]
fn only_allowed_transitions() {
    given::<Opportunity>(vec![opened(1, 1, STAGE_INITIAL, false)])
        .when(move_to(STAGE_NEGOTIATION, &[("quote_ref", "Q-1")]))
        .then_expect_rule("stage.transition_not_allowed");
    given::<Opportunity>(vec![opened(1, 1, STAGE_DEMO, false)])
        .when(move_to(STAGE_NEEDS, &[("requirements_note", "x")]))
        .then_expect_rule("stage.transition_not_allowed");
    given::<Opportunity>(vec![opened(1, 1, STAGE_INITIAL, false)])
        .when(move_to("报价中", &[]))
        .then_expect_rule("stage.unknown");
    given::<Opportunity>(vec![opened(1, 1, STAGE_CONTRACT, false)])
        .when(move_to(STAGE_WON, &[]))
        .then_expect_rule("stage.end_stage");
}

#[test]
fn root_cause_tag_is_mandatory_and_configured() {
    let cmd = |tag: &str| OpportunityCommand::MoveStage {
        to: STAGE_NEEDS.into(),
        root_cause: tag.into(),
        evidence: map(&[("requirements_note", "x")]),
    };
    given::<Opportunity>(vec![opened(1, 1, STAGE_INITIAL, false)])
        .when(cmd(" "))
        .then_expect_rule("stage.root_cause_required");
    given::<Opportunity>(vec![opened(1, 1, STAGE_INITIAL, false)])
        .when(cmd("运气好"))
        .then_expect_rule("stage.root_cause_unknown");
    let mut rules = Rules::default();
    rules.root_cause_tags.push("运气好".into());
    assert!(given::<Opportunity>(vec![opened(1, 1, STAGE_INITIAL, false)])
        .with_rules(rules)
        .when(cmd("运气好"))
        .result()
        .is_ok());
}

#[test]
fn repeat_customers_may_skip_to_contract() {
    let evidence = [("previous_contract_ref", "HT-2025-0007")];
    let events = given::<Opportunity>(vec![opened(1, 1, STAGE_INITIAL, true)])
        .when(move_to(STAGE_CONTRACT, &evidence))
        .result()
        .unwrap();
    assert!(
        matches!(&events[0], Event::StageMoved(e) if e.skip_rule.as_deref() == Some("repeat_customer") && e.to == STAGE_CONTRACT)
    );
    given::<Opportunity>(vec![opened(1, 1, STAGE_INITIAL, false)])
        .when(move_to(STAGE_CONTRACT, &evidence))
        .then_expect_missing("stage.skip_requires_repeat_customer", &["repeat_customer"]);
}

#[test]
fn won_only_with_three_proofs_at_contract_stage() {
    let won = OpportunityCommand::MarkWon {
        finance_receipt_ref: "FIN-2026-0301".into(),
        contract_ref: "HT-2026-0042".into(),
        delivery_acceptance_ref: "YS-2026-0015".into(),
    };
    let state = given::<Opportunity>(at_contract()).when(won.clone()).then_expect_events(vec![
        Event::OpportunityWon(OpportunityWon {
            opportunity_id: opportunity_id(1),
            customer_id: customer_id(1),
            from_stage: STAGE_CONTRACT.into(),
            finance_receipt_ref: "FIN-2026-0301".into(),
            contract_ref: "HT-2026-0042".into(),
            delivery_acceptance_ref: "YS-2026-0015".into(),
            won_at: now(),
        }),
        Event::CustomerDealWon(CustomerDealWon { customer_id: customer_id(1), opportunity_id: opportunity_id(1) }),
    ]);
    assert_eq!(state.status, OpportunityStatus::Won);
    given::<Opportunity>(vec![opened(1, 1, STAGE_NEGOTIATION, false)])
        .when(won.clone())
        .then_expect_missing("won.stage_required", &[STAGE_CONTRACT]);
    given::<Opportunity>(at_contract())
        .when(OpportunityCommand::MarkWon {
            finance_receipt_ref: "".into(),
            contract_ref: "HT-2026-0042".into(),
            delivery_acceptance_ref: " ".into(),
        })
        .then_expect_missing("won.proofs_required", &["finance_receipt_ref", "delivery_acceptance_ref"]);
    let mut closed = at_contract();
    closed.push(Event::OpportunityLost(OpportunityLost {
        opportunity_id: opportunity_id(1),
        from_stage: STAGE_CONTRACT.into(),
        reason: "预算冻结".into(),
        lost_at: now(),
    }));
    given::<Opportunity>(closed).when(won).then_expect_rule("opportunity.closed");
}

#[test]
fn lost_with_a_reason() {
    given::<Opportunity>(vec![opened(1, 1, STAGE_DEMO, false)])
        .when(OpportunityCommand::MarkLost { reason: " 竞品价格低20% ".into() })
        .then_expect_events(vec![Event::OpportunityLost(OpportunityLost {
            opportunity_id: opportunity_id(1),
            from_stage: STAGE_DEMO.into(),
            reason: "竞品价格低20%".into(),
            lost_at: now(),
        })]);
    given::<Opportunity>(vec![opened(1, 1, STAGE_DEMO, false)])
        .when(OpportunityCommand::MarkLost { reason: "".into() })
        .then_expect_rule("lost.reason_required");
    given::<Opportunity>(vec![])
        .when(OpportunityCommand::MarkLost { reason: "x".into() })
        .then_expect_error(DomainError::NotFound { kind: "opportunity".into(), id: "(new)".into() });
}

#[test]
fn a_changed_pipeline_applies_to_open_opportunities() {
    let mut rules = Rules { version: 3, ..Rules::default() };
    rules.pipeline.transitions.push(Transition {
        from: STAGE_INITIAL.into(),
        to: STAGE_DEMO.into(),
        evidence: vec!["meeting_notes_ref".into()],
        condition: None,
    });
    let events = given::<Opportunity>(vec![opened(1, 1, STAGE_INITIAL, false)])
        .with_rules(rules)
        .when(OpportunityCommand::MoveStage {
            to: STAGE_DEMO.into(),
            root_cause: "演示认可".into(),
            evidence: BTreeMap::from([("meeting_notes_ref".to_owned(), "MN-9".to_owned())]),
        })
        .result()
        .unwrap();
    assert!(matches!(&events[0], Event::StageMoved(e) if e.rules_version == 3));
}
