//! Builders for synthetic records. Phone numbers follow the obviously fake 138 0013 8000
//! pattern; USCCs are made with `uscc_check_char`.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use crm_domain::*;
use uuid::Uuid;

pub(crate) fn uid(n: u128) -> Uuid {
    Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0000 | n)
}

pub(crate) fn lead_id(n: u128) -> LeadId {
    LeadId(uid(0x1000 + n))
}
pub(crate) fn customer_id(n: u128) -> CustomerId {
    CustomerId(uid(0x2000 + n))
}
pub(crate) fn opportunity_id(n: u128) -> OpportunityId {
    OpportunityId(uid(0x3000 + n))
}
pub(crate) fn user_id(n: u128) -> UserId {
    UserId(uid(0x4000 + n))
}
pub(crate) fn activity_id(n: u128) -> ActivityId {
    ActivityId(uid(0x5000 + n))
}
pub(crate) fn contact_id(n: u128) -> ContactId {
    ContactId(uid(0x6000 + n))
}

pub(crate) fn t(rfc3339: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(rfc3339).unwrap().with_timezone(&Utc)
}

/// The `now` of `testing::test_context()`.
pub(crate) fn now() -> DateTime<Utc> {
    t("2026-03-02T09:00:00Z")
}

pub(crate) fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

pub(crate) fn exhibition() -> Channel {
    Channel::ExhibitionScan { exhibition_id: "CMEF-2026-SH".into(), booth: "8.1H-A12".into() }
}

pub(crate) fn capture(n: u128) -> CaptureLead {
    CaptureLead {
        lead_id: lead_id(n),
        name: Some("张伟".into()),
        company: Some("北京市康达医疗器械有限公司".into()),
        phone: Some("138 0013 8000".into()),
        email: None,
        wechat: None,
        uscc: None,
        region: None,
        channel: exhibition(),
        source: "展会扫码".into(),
        custom_attributes: BTreeMap::new(),
    }
}

/// What `capture(n)` records.
pub(crate) fn captured(n: u128) -> Event {
    Event::LeadCaptured(LeadCaptured {
        lead_id: lead_id(n),
        name: Some("张伟".into()),
        company: Some("北京市康达医疗器械有限公司".into()),
        phone: Some("138 0013 8000".into()),
        phone_e164: Some("+8613800138000".into()),
        email: None,
        wechat: None,
        uscc: None,
        uscc_checksum_ok: false,
        region: Some("北京".into()),
        channel: exhibition(),
        source: "展会扫码".into(),
        custom_attributes: BTreeMap::new(),
        captured_at: now(),
    })
}

pub(crate) fn assigned(lead: u128, user: u128) -> Event {
    Event::LeadAssigned(LeadAssigned {
        lead_id: lead_id(lead),
        assignee: user_id(user),
        previous: None,
        reason: AssignmentReason::Manual,
        assigned_at: now(),
    })
}

pub(crate) fn claimed(lead: u128, user: u128) -> Event {
    Event::LeadClaimed(LeadClaimed { lead_id: lead_id(lead), user_id: user_id(user), claimed_at: now() })
}

pub(crate) fn active(user: u128) -> UserSummary {
    UserSummary { user_id: user_id(user), active: true }
}

pub(crate) fn user_created(n: u128, region: &str, team: &str, capacity: u32) -> Event {
    Event::UserCreated(UserCreated {
        user_id: user_id(n),
        name: format!("销售{n}"),
        role: Role::SalesRep,
        region: Some(region.into()),
        team: Some(team.into()),
        capacity,
    })
}

pub(crate) fn customer_created(n: u128, fields: &[(&str, &str)]) -> Event {
    Event::CustomerCreated(CustomerCreated {
        customer_id: customer_id(n),
        fields: map(fields),
        owner: Some(user_id(1)),
        from_lead: None,
    })
}

pub(crate) fn opened(opp: u128, customer: u128, stage: &str, repeat_customer: bool) -> Event {
    Event::OpportunityOpened(OpportunityOpened {
        opportunity_id: opportunity_id(opp),
        customer_id: customer_id(customer),
        lead_id: None,
        owner: user_id(1),
        title: "手术室设备采购".into(),
        amount_fen: Some(12_800_000),
        stage: stage.into(),
        repeat_customer,
        opened_at: now(),
    })
}

pub(crate) fn stage_moved(opp: u128, from: &str, to: &str, evidence: &[(&str, &str)]) -> Event {
    Event::StageMoved(StageMoved {
        opportunity_id: opportunity_id(opp),
        from: from.into(),
        to: to.into(),
        root_cause: "需求明确".into(),
        evidence: map(evidence),
        skip_rule: None,
        moved_at: now(),
        rules_version: 0,
    })
}

pub(crate) fn activity(n: u128, at: &str) -> LogActivity {
    LogActivity {
        activity_id: activity_id(n),
        by: user_id(1),
        kind: None,
        occurred_at: Some(t(at)),
        duration_minutes: None,
        keywords: vec![],
        summary: String::new(),
        next_follow_up: None,
        contact_id: None,
        opportunity_id: None,
    }
}

/// A synthetic USCC with a correct check character.
pub(crate) fn valid_uscc(first17: &str) -> String {
    format!("{first17}{}", uscc_check_char(first17).unwrap())
}
