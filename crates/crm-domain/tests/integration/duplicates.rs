//! The duplicate guard on CaptureLead and UpdateCustomer: the server's lookup comes in with
//! the command; the rule (refuse an exact key collision unless told to proceed, record what
//! was found) is the domain's.

use crm_domain::testing::given;
use crm_domain::*;

use crate::support::*;

fn collision(customer: u128, key: ExactKey) -> KeyCollision {
    KeyCollision { customer_id: customer_id(customer), key }
}

fn suspect(customer: u128) -> SuspectedMatch {
    SuspectedMatch {
        customer_id: customer_id(customer),
        score_milli: 430,
        decision: "review".into(),
        fields: vec![FieldContribution {
            field: "company".into(),
            outcome: "partial".into(),
            weight_centi: 820,
            reason: "similar core".into(),
        }],
    }
}

fn guarded(n: u128, duplicates: DuplicateCheck) -> LeadCommand {
    LeadCommand::CaptureGuarded { capture: capture(n), duplicates }
}

#[test]
fn a_capture_sharing_a_mobile_with_a_customer_is_refused_naming_it() {
    let check = DuplicateCheck { collisions: vec![collision(7, ExactKey::Mobile)], ..Default::default() };
    let result = given::<Lead>(vec![]).when(guarded(1, check)).result();
    let Err(DomainError::FailedPrecondition { rule, detail, missing }) = result else { panic!("{result:?}") };
    assert_eq!((rule.as_str(), missing), (EXACT_KEY_RULE, vec!["create_anyway".to_owned()]));
    assert!(detail.contains("mobile") && detail.contains(&customer_id(7).to_string()), "{detail}");
    assert!(detail.contains("create_anyway"), "{detail}");
}

#[test]
fn create_anyway_captures_and_records_the_collision_and_the_flag() {
    let check = DuplicateCheck {
        collisions: vec![collision(7, ExactKey::Uscc)],
        suspected: vec![suspect(8)],
        proceed_anyway: true,
    };
    given::<Lead>(vec![]).when(guarded(1, check)).then_expect_events(vec![
        captured(1),
        Event::DuplicateSuspected(DuplicateSuspected {
            subject: DuplicateSubject::Lead(lead_id(1)),
            collisions: vec![collision(7, ExactKey::Uscc)],
            suspected: vec![suspect(8)],
            proceeded_anyway: true,
        }),
    ]);
}

#[test]
fn fuzzy_candidates_never_refuse_and_are_recorded() {
    let check = DuplicateCheck { suspected: vec![suspect(8)], ..Default::default() };
    given::<Lead>(vec![]).when(guarded(1, check)).then_expect_events(vec![
        captured(1),
        Event::DuplicateSuspected(DuplicateSuspected {
            subject: DuplicateSubject::Lead(lead_id(1)),
            collisions: vec![],
            suspected: vec![suspect(8)],
            proceeded_anyway: false,
        }),
    ]);
}

#[test]
fn nothing_found_adds_no_event_and_a_refused_capture_still_checks_its_own_rules_first() {
    given::<Lead>(vec![]).when(guarded(1, DuplicateCheck::default())).then_expect_events(vec![captured(1)]);
    let mut bad = capture(2);
    bad.source = " ".into();
    let check = DuplicateCheck { collisions: vec![collision(7, ExactKey::Mobile)], ..Default::default() };
    given::<Lead>(vec![])
        .when(LeadCommand::CaptureGuarded { capture: bad, duplicates: check })
        .then_expect_rule("lead.source_required");
}

fn update(changes: &[(&str, Option<&str>)], duplicates: DuplicateCheck) -> CustomerCommand {
    CustomerCommand::UpdateGuarded {
        changes: changes.iter().map(|(k, v)| ((*k).to_owned(), v.map(str::to_owned))).collect(),
        duplicates,
    }
}

#[test]
fn an_update_setting_a_uscc_another_customer_has_is_refused_unless_saved_anyway() {
    let uscc = valid_uscc("91110108MA01AB2C3");
    let existing = vec![customer_created(1, &[("name", "北京康达医疗器械有限公司")])];
    let check = DuplicateCheck { collisions: vec![collision(2, ExactKey::Uscc)], ..Default::default() };
    let result = given::<Customer>(existing.clone()).when(update(&[("uscc", Some(&uscc))], check.clone())).result();
    let Err(DomainError::FailedPrecondition { rule, detail, .. }) = result else { panic!("{result:?}") };
    assert_eq!(rule, EXACT_KEY_RULE);
    assert!(detail.contains("uscc") && detail.contains(&customer_id(2).to_string()) && detail.contains("save_anyway"));

    let anyway = DuplicateCheck { proceed_anyway: true, ..check };
    given::<Customer>(existing).when(update(&[("uscc", Some(&uscc))], anyway)).then_expect_events(vec![
        Event::CustomerUpdated(CustomerUpdated {
            customer_id: customer_id(1),
            changes: vec![FieldChange { field: "uscc".into(), old: None, new: Some(uscc.clone()) }],
        }),
        Event::DuplicateSuspected(DuplicateSuspected {
            subject: DuplicateSubject::Customer(customer_id(1)),
            collisions: vec![collision(2, ExactKey::Uscc)],
            suspected: vec![],
            proceeded_anyway: true,
        }),
    ]);
}

#[test]
fn an_old_shared_key_does_not_block_an_unrelated_edit() {
    let existing = vec![customer_created(1, &[("name", "北京康达医疗器械有限公司"), ("phone", "+8613800138000")])];
    let check = DuplicateCheck {
        collisions: vec![collision(2, ExactKey::Mobile)],
        suspected: vec![suspect(3)],
        proceed_anyway: false,
    };
    // `level` is not a matched field: no refusal and nothing to record.
    given::<Customer>(existing.clone()).when(update(&[("level", Some("A"))], check.clone())).then_expect_events(vec![
        Event::CustomerUpdated(CustomerUpdated {
            customer_id: customer_id(1),
            changes: vec![FieldChange { field: "level".into(), old: None, new: Some("A".into()) }],
        }),
    ]);
    // A matched field changes: the suspects are recorded, the old mobile still does not refuse.
    let events = given::<Customer>(existing).when(update(&[("address", Some("海淀区中关村大街1号"))], check)).result();
    let events = events.unwrap();
    let [_, Event::DuplicateSuspected(e)] = events.as_slice() else { panic!("{events:?}") };
    assert_eq!((e.collisions.len(), e.suspected.len(), e.proceeded_anyway), (0, 1, false));
}
