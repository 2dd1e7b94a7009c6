use std::collections::BTreeSet;

use crm_domain::*;

use crate::support::*;

/// One event of every type, with non-trivial payloads.
pub(crate) fn samples() -> Vec<Event> {
    let trace = AssignmentTrace {
        rule: "region:北京->team:华北一组".into(),
        team: "华北一组".into(),
        strategy: Strategy::RoundRobin,
        arm: Some(AbArm { experiment: "rr-vs-ll".into(), arm: "B".into(), bucket: 17 }),
        candidates: vec![CandidateTrace {
            user_id: user_id(1),
            team: Some("华北一组".into()),
            load: 3,
            capacity: 30,
            verdict: "eligible".into(),
        }],
        rules_version: 4,
    };
    let mut rules = Rules { version: 2, ..Rules::default() };
    rules.assignment.region_teams = map(&[("北京", "华北一组")]);
    vec![
        captured(1),
        Event::LeadAssigned(LeadAssigned {
            lead_id: lead_id(1),
            assignee: user_id(1),
            previous: Some(user_id(2)),
            reason: AssignmentReason::Automatic(trace),
            assigned_at: now(),
        }),
        claimed(1, 1),
        Event::LeadReleased(LeadReleased { lead_id: lead_id(1), user_id: user_id(1), reason: "无预算".into() }),
        Event::LeadQualified(LeadQualified {
            lead_id: lead_id(1),
            customer_id: customer_id(1),
            opportunity_id: opportunity_id(1),
            new_customer: true,
        }),
        customer_created(1, &[("name", "康达"), ("phone", "+8613800138000")]),
        Event::CustomerUpdated(CustomerUpdated {
            customer_id: customer_id(1),
            changes: vec![FieldChange { field: "region".into(), old: None, new: Some("北京".into()) }],
        }),
        Event::ContactAdded(ContactAdded {
            customer_id: customer_id(1),
            contact: Contact {
                contact_id: contact_id(1),
                name: "李娜".into(),
                title: None,
                phone: None,
                phone_e164: None,
                email: Some("lina@example.com".into()),
                wechat: None,
            },
        }),
        Event::ActivityLogged(ActivityLogged {
            customer_id: customer_id(1),
            activity_id: activity_id(1),
            by: user_id(1),
            kind: ActivityKind::WeChat,
            occurred_at: now(),
            duration_minutes: Some(5),
            keywords: vec!["报价".into()],
            summary: "微信沟通".into(),
            next_follow_up: chrono::NaiveDate::from_ymd_opt(2026, 3, 9),
            contact_id: Some(contact_id(1)),
            opportunity_id: Some(opportunity_id(1)),
            inherited_from: Some(activity_id(0)),
            inherited_fields: vec!["opportunity_id".into()],
        }),
        Event::CustomersMerged(CustomersMerged {
            survivor_id: customer_id(1),
            absorbed_id: customer_id(2),
            reason: "同一手机号".into(),
            reason_text: "".into(),
            field_changes: vec![],
            merged_at: now(),
        }),
        Event::CustomerAbsorbed(CustomerAbsorbed {
            absorbed_id: customer_id(2),
            survivor_id: customer_id(1),
            reason: "同一手机号".into(),
        }),
        Event::CustomerUnmerged(CustomerUnmerged {
            survivor_id: customer_id(1),
            absorbed_id: customer_id(2),
            reason: "误合并".into(),
            restored: vec![],
            kept: vec!["uscc".into()],
            post_merge_activities: vec![activity_id(1)],
        }),
        Event::CustomerRestored(CustomerRestored { absorbed_id: customer_id(2), survivor_id: customer_id(1) }),
        Event::DuplicateDismissed(DuplicateDismissed {
            customer_id: customer_id(1),
            other_id: customer_id(2),
            reason: "同名不同公司".into(),
        }),
        Event::DuplicateSuspected(DuplicateSuspected {
            subject: DuplicateSubject::Lead(lead_id(1)),
            collisions: vec![KeyCollision { customer_id: customer_id(3), key: ExactKey::Mobile }],
            suspected: vec![SuspectedMatch {
                customer_id: customer_id(2),
                score_milli: 612,
                decision: "review".into(),
                fields: vec![FieldContribution {
                    field: "company".into(),
                    outcome: "partial".into(),
                    weight_centi: -315,
                    reason: "core similarity 0.83".into(),
                }],
            }],
            proceeded_anyway: true,
        }),
        Event::CustomerDealWon(CustomerDealWon { customer_id: customer_id(1), opportunity_id: opportunity_id(1) }),
        opened(1, 1, STAGE_INITIAL, false),
        stage_moved(1, STAGE_INITIAL, STAGE_NEEDS, &[("requirements_note", "6台监护仪")]),
        Event::OpportunityWon(OpportunityWon {
            opportunity_id: opportunity_id(1),
            customer_id: customer_id(1),
            from_stage: STAGE_CONTRACT.into(),
            finance_receipt_ref: "FIN-1".into(),
            contract_ref: "HT-1".into(),
            delivery_acceptance_ref: "YS-1".into(),
            won_at: now(),
        }),
        Event::OpportunityLost(OpportunityLost {
            opportunity_id: opportunity_id(1),
            from_stage: STAGE_DEMO.into(),
            reason: "竞品".into(),
            lost_at: now(),
        }),
        Event::OwnerChanged(OwnerChanged {
            subject: Owned::Customer(customer_id(1)),
            from: Some(user_id(1)),
            to: user_id(2),
            reason: "handover".into(),
            receiver_rank: 1,
            over_capacity: false,
        }),
        user_created(1, "北京", "华北一组", 30),
        Event::UserRoleChanged(UserRoleChanged {
            user_id: user_id(1),
            from: Role::SalesRep,
            to: Role::RegionalManager,
        }),
        Event::UserRegionChanged(UserRegionChanged {
            user_id: user_id(1),
            from_region: None,
            to_region: Some("上海".into()),
            from_team: None,
            to_team: None,
        }),
        Event::UserDeactivated(UserDeactivated { user_id: user_id(1), reason: "离职".into(), deactivated_at: now() }),
        Event::UserHandedOver(UserHandedOver {
            user_id: user_id(1),
            receivers: vec![user_id(2), user_id(3)],
            items: 4,
        }),
        Event::RulesChanged(RulesChanged { rules, reason: "按区域分配".into() }),
    ]
}

#[test]
fn every_event_type_round_trips() {
    let samples = samples();
    let types: BTreeSet<&str> = samples.iter().map(Event::event_type).collect();
    assert_eq!(types, EVENT_TYPES.iter().copied().collect::<BTreeSet<_>>(), "one sample per event type");
    for event in samples {
        let bytes = event.encode();
        let decoded = Event::decode(event.event_type(), event.schema_version(), &bytes).unwrap();
        assert_eq!(decoded, event);
        assert!(StreamId::parse(&event.stream()).is_some(), "{} has a valid stream", event.event_type());
    }
}

/// `fixtures/events/LeadCaptured.v1.hex` was written by the v1 encoder and is never
/// regenerated: it is what old logs contain.
const LEAD_CAPTURED_V1: &str = include_str!("../../../../fixtures/events/LeadCaptured.v1.hex");

fn unhex(hex: &str) -> Vec<u8> {
    let hex = hex.trim();
    (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap()).collect()
}

#[test]
fn lead_captured_v1_is_upcast_to_v2() {
    let event = Event::decode("LeadCaptured", 1, &unhex(LEAD_CAPTURED_V1)).unwrap();
    assert_eq!(event.schema_version(), 2);
    assert_eq!(
        event,
        Event::LeadCaptured(LeadCaptured {
            lead_id: LeadId(uuid::Uuid::parse_str("01900000-0000-7000-8000-00000000a001").unwrap()),
            name: Some("李娜".into()),
            company: Some("上海星辰电子有限公司".into()),
            phone: Some("138-0013-8000".into()),
            phone_e164: Some("+8613800138000".into()),
            email: Some("lina@example.com".into()),
            wechat: None,
            uscc: None,
            uscc_checksum_ok: false,
            region: None,
            channel: Channel::WebForm { form_id: "official-site-contact".into() },
            source: "官网表单".into(),
            custom_attributes: Default::default(),
            captured_at: t("2025-11-03T08:30:00Z"),
        })
    );
    // Re-encoding writes v2; v2 bytes are not readable as v1 and vice versa.
    let v2 = event.encode();
    assert_eq!(Event::decode("LeadCaptured", 2, &v2).unwrap(), event);
    assert!(Event::decode("LeadCaptured", 2, &unhex(LEAD_CAPTURED_V1)).is_err());
}

#[test]
fn decode_errors_are_specific() {
    assert_eq!(Event::decode("LeadTeleported", 1, &[]), Err(DecodeError::UnknownEventType("LeadTeleported".into())));
    assert_eq!(
        Event::decode("LeadCaptured", 3, &[]),
        Err(DecodeError::UnsupportedVersion { event_type: "LeadCaptured".into(), version: 3 })
    );
    assert_eq!(
        Event::decode("LeadClaimed", 0, &[]),
        Err(DecodeError::UnsupportedVersion { event_type: "LeadClaimed".into(), version: 0 })
    );
    let mut bytes = claimed(1, 1).encode();
    bytes.push(0);
    assert!(
        matches!(Event::decode("LeadClaimed", 1, &bytes), Err(DecodeError::Payload { ref message, .. }) if message == "1 trailing bytes")
    );
    assert!(matches!(Event::decode("LeadClaimed", 1, &[1, 2, 3]), Err(DecodeError::Payload { .. })));
}

/// A payload whose length prefixes claim about 10^18 bytes is refused as undecodable for
/// every event type and version, instead of making bincode allocate that much and abort the
/// process (a proptest over random payloads found one such payload).
#[test]
fn huge_length_prefixes_are_decode_errors_not_allocations() {
    // bincode's varint for a u64: 0xFD, then eight little-endian bytes.
    let huge: Vec<u8> =
        std::iter::repeat_n([0xFD, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x0F], 40).flatten().collect();
    for ty in crm_domain::EVENT_TYPES {
        for version in 1..=2 {
            let mut payload = Vec::new();
            // Every offset of the prefix within a leading run of small fields.
            for lead in 0..8 {
                payload.clear();
                payload.extend(std::iter::repeat_n(1u8, lead));
                payload.extend(&huge);
                assert!(crm_domain::Event::decode(ty, version, &payload).is_err(), "{ty} v{version} lead {lead}");
            }
        }
    }
}
