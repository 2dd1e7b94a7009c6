use crm_domain::testing::given;
use crm_domain::*;

use crate::support::*;

#[test]
fn exhibition_scan_is_captured_with_normalised_phone_and_region() {
    given::<Lead>(vec![]).when(LeadCommand::Capture(capture(1))).then_expect_events(vec![captured(1)]);
}

#[test]
fn unknown_fields_are_kept_and_bad_keys_flagged_not_refused() {
    let mut cmd = capture(1);
    cmd.phone = Some("138-0013-800".into()); // one digit short
    cmd.uscc = Some("91110108MA01AB2C3X".into()); // wrong check character
    cmd.custom_attributes = map(&[("展位兴趣", "骨科耗材"), ("utm_campaign", "cmef2026")]);
    let events = given::<Lead>(vec![]).when(LeadCommand::Capture(cmd)).result().unwrap();
    let [Event::LeadCaptured(e)] = events.as_slice() else { panic!("{events:?}") };
    assert_eq!(e.phone.as_deref(), Some("138-0013-800"));
    assert_eq!(e.phone_e164, None);
    assert_eq!(e.uscc.as_deref(), Some("91110108MA01AB2C3X"));
    assert!(!e.uscc_checksum_ok);
    assert_eq!(e.custom_attributes, map(&[("展位兴趣", "骨科耗材"), ("utm_campaign", "cmef2026")]));
}

#[test]
fn minimal_lead_needs_only_name_contact_and_source() {
    let cmd = CaptureLead {
        lead_id: lead_id(2),
        name: Some(" 王  芳 ".into()),
        company: None,
        phone: None,
        email: None,
        wechat: Some("wangfang_2026".into()),
        uscc: None,
        region: None,
        channel: Channel::Phone { line: "400-hotline".into() },
        source: "400热线".into(),
        custom_attributes: Default::default(),
    };
    let events = given::<Lead>(vec![]).when(LeadCommand::Capture(cmd)).result().unwrap();
    let [Event::LeadCaptured(e)] = events.as_slice() else { panic!("{events:?}") };
    assert_eq!((e.name.as_deref(), e.region.as_deref()), (Some("王芳"), None));
}

#[test]
fn region_falls_back_to_the_landline_area_code() {
    let mut cmd = capture(3);
    cmd.company = Some("星辰电子".into());
    cmd.phone = Some("021-5123 4567".into());
    let events = given::<Lead>(vec![]).when(LeadCommand::Capture(cmd)).result().unwrap();
    let [Event::LeadCaptured(e)] = events.as_slice() else { panic!() };
    assert_eq!(e.region.as_deref(), Some("上海"));
    let mut cmd = capture(3);
    cmd.region = Some("天津".into());
    let events = given::<Lead>(vec![]).when(LeadCommand::Capture(cmd)).result().unwrap();
    let [Event::LeadCaptured(e)] = events.as_slice() else { panic!() };
    assert_eq!(e.region.as_deref(), Some("天津"), "an explicit region wins");
}

#[test]
fn capture_refusals_name_the_field() {
    let mut no_name = capture(1);
    no_name.name = Some("  ".into());
    no_name.company = None;
    given::<Lead>(vec![]).when(LeadCommand::Capture(no_name)).then_expect_error(DomainError::InvalidArgument {
        field: "name".into(),
        rule: "lead.name_or_company_required".into(),
        message: "a name or a company is required".into(),
    });
    let mut no_contact = capture(1);
    no_contact.phone = None;
    no_contact.email = Some("".into());
    given::<Lead>(vec![]).when(LeadCommand::Capture(no_contact)).then_expect_rule("lead.contact_required");
    let mut no_source = capture(1);
    no_source.source = " ".into();
    given::<Lead>(vec![]).when(LeadCommand::Capture(no_source)).then_expect_rule("lead.source_required");
    let mut no_booth = capture(1);
    no_booth.channel = Channel::ExhibitionScan { exhibition_id: "CMEF-2026-SH".into(), booth: "".into() };
    given::<Lead>(vec![]).when(LeadCommand::Capture(no_booth)).then_expect_rule("lead.booth_required");
    let mut no_exhibition = capture(1);
    no_exhibition.channel = Channel::ExhibitionScan { exhibition_id: "".into(), booth: "A1".into() };
    given::<Lead>(vec![]).when(LeadCommand::Capture(no_exhibition)).then_expect_rule("lead.exhibition_id_required");
    given::<Lead>(vec![captured(1)])
        .when(LeadCommand::Capture(capture(1)))
        .then_expect_error(DomainError::AlreadyExists { kind: "lead".into(), id: lead_id(1).to_string() });
}

#[test]
fn manual_assignment() {
    given::<Lead>(vec![captured(1)])
        .when(LeadCommand::Assign { assignee: active(7) })
        .then_expect_events(vec![assigned(1, 7)]);
    let reassigned = given::<Lead>(vec![captured(1), assigned(1, 7)])
        .when(LeadCommand::Assign { assignee: active(8) })
        .result()
        .unwrap();
    assert!(
        matches!(&reassigned[0], Event::LeadAssigned(e) if e.previous == Some(user_id(7)) && e.assignee == user_id(8))
    );
}

#[test]
fn manual_assignment_refusals() {
    given::<Lead>(vec![])
        .when(LeadCommand::Assign { assignee: active(7) })
        .then_expect_error(DomainError::NotFound { kind: "lead".into(), id: "(new)".into() });
    given::<Lead>(vec![captured(1)])
        .when(LeadCommand::Assign { assignee: UserSummary { user_id: user_id(7), active: false } })
        .then_expect_rule("user.inactive");
    given::<Lead>(vec![captured(1), claimed(1, 7)])
        .when(LeadCommand::Assign { assignee: active(8) })
        .then_expect_rule("lead.already_claimed");
    given::<Lead>(vec![captured(1), assigned(1, 7)])
        .when(LeadCommand::Assign { assignee: active(7) })
        .then_expect_rule("lead.already_assigned");
}

fn candidate(n: u128, team: &str, load: u32) -> Candidate {
    Candidate { user_id: user_id(n), team: Some(team.into()), active: true, load, capacity: 30, last_assigned_at: None }
}

fn regional_rules() -> Rules {
    let mut rules = Rules::default();
    rules.assignment.region_teams = map(&[("北京", "华北一组"), ("上海", "华东一组")]);
    rules
}

#[test]
fn automatic_assignment_by_region_then_load_records_the_trace() {
    let candidates = vec![candidate(1, "华北一组", 12), candidate(2, "华北一组", 4), candidate(3, "华东一组", 0)];
    let events = given::<Lead>(vec![captured(1)])
        .with_rules(regional_rules())
        .when(LeadCommand::AutoAssign { candidates })
        .result()
        .unwrap();
    let [Event::LeadAssigned(e)] = events.as_slice() else { panic!("{events:?}") };
    assert_eq!(e.assignee, user_id(2));
    let AssignmentReason::Automatic(trace) = &e.reason else { panic!("manual") };
    assert_eq!(trace.rule, "region:北京->team:华北一组");
    assert_eq!(trace.strategy, Strategy::LeastLoaded);
    let seen: Vec<(UserId, u32, &str)> =
        trace.candidates.iter().map(|c| (c.user_id, c.load, c.verdict.as_str())).collect();
    assert_eq!(seen, [(user_id(1), 12, "eligible"), (user_id(2), 4, "eligible"), (user_id(3), 0, "other_team")]);
}

#[test]
fn automatic_assignment_refusals() {
    given::<Lead>(vec![captured(1)])
        .with_rules(regional_rules())
        .when(LeadCommand::AutoAssign { candidates: vec![candidate(3, "华东一组", 0)] })
        .then_expect_rule("assignment.no_capacity");
    given::<Lead>(vec![captured(1)])
        .when(LeadCommand::AutoAssign { candidates: vec![candidate(3, "华东一组", 0)] })
        .then_expect_missing("assignment.no_team", &["assignment.region_teams"]);
    given::<Lead>(vec![captured(1), assigned(1, 2)])
        .with_rules(regional_rules())
        .when(LeadCommand::AutoAssign { candidates: vec![candidate(1, "华北一组", 0)] })
        .then_expect_rule("lead.already_assigned");
}

#[test]
fn claiming() {
    // From the pool, anyone active.
    given::<Lead>(vec![captured(1)])
        .when(LeadCommand::Claim { user: active(5) })
        .then_expect_events(vec![claimed(1, 5)]);
    // An assigned lead, by its assignee.
    let state = given::<Lead>(vec![captured(1), assigned(1, 5)])
        .when(LeadCommand::Claim { user: active(5) })
        .then_expect_events(vec![claimed(1, 5)]);
    assert_eq!((state.status, state.assignee), (LeadStatus::Claimed, Some(user_id(5))));
}

#[test]
fn claim_refusals() {
    given::<Lead>(vec![captured(1), assigned(1, 5)])
        .when(LeadCommand::Claim { user: active(6) })
        .then_expect_rule("lead.assigned_to_other");
    given::<Lead>(vec![captured(1), claimed(1, 5)])
        .when(LeadCommand::Claim { user: active(5) })
        .then_expect_rule("lead.already_claimed");
    given::<Lead>(vec![captured(1)])
        .when(LeadCommand::Claim { user: UserSummary { user_id: user_id(5), active: false } })
        .then_expect_rule("user.inactive");
}

#[test]
fn releasing_returns_the_lead_to_the_pool() {
    let state = given::<Lead>(vec![captured(1), claimed(1, 5)])
        .when(LeadCommand::Release { user_id: user_id(5), reason: "客户暂无预算".into() })
        .then_expect_events(vec![Event::LeadReleased(LeadReleased {
            lead_id: lead_id(1),
            user_id: user_id(5),
            reason: "客户暂无预算".into(),
        })]);
    assert_eq!((state.status, state.assignee), (LeadStatus::Unassigned, None));
    given::<Lead>(vec![captured(1), claimed(1, 5)])
        .when(LeadCommand::Release { user_id: user_id(6), reason: "x".into() })
        .then_expect_rule("lead.not_held");
    given::<Lead>(vec![captured(1)])
        .when(LeadCommand::Release { user_id: user_id(5), reason: "x".into() })
        .then_expect_rule("lead.not_held");
    given::<Lead>(vec![captured(1), claimed(1, 5)])
        .when(LeadCommand::Release { user_id: user_id(5), reason: " ".into() })
        .then_expect_rule("lead.release_reason_required");
}
