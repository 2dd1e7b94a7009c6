use chrono::Duration;
use crm_domain::testing::test_context;
use crm_domain::*;

use crate::support::*;

#[test]
fn unclaimed_leads_raise_an_alert_after_the_configured_hours() {
    let rules = Rules::default(); // 2 hours
    let assigned_at_now = Lead::fold(&[captured(1), assigned(1, 5)]);
    assert!(!assigned_at_now.unclaimed_alert_due(now() + Duration::hours(2), &rules));
    assert!(assigned_at_now.unclaimed_alert_due(now() + Duration::minutes(121), &rules));
    let claimed = Lead::fold(&[captured(1), assigned(1, 5), claimed(1, 5)]);
    assert!(!claimed.unclaimed_alert_due(now() + Duration::days(3), &rules));
    let pooled = Lead::fold(&[captured(1)]);
    assert!(!pooled.unclaimed_alert_due(now() + Duration::days(3), &rules));
}

#[test]
fn follow_up_reminders_after_the_configured_days() {
    let rules = Rules::default(); // 7 days
    let created = Customer::fold(&[customer_created(1, &[("name", "康达")])]);
    assert!(created.follow_up_due(now(), &rules), "never followed up");
    let ctx = test_context();
    let logged = created
        .handle(
            CustomerCommand::LogActivity(LogActivity {
                kind: Some(ActivityKind::Call),
                ..activity(1, "2026-03-02T08:00:00Z")
            }),
            &ctx,
            &rules,
        )
        .unwrap();
    let mut followed = created.clone();
    followed.apply(&logged[0]);
    assert!(!followed.follow_up_due(now() + Duration::days(7) - Duration::hours(2), &rules));
    assert!(followed.follow_up_due(now() + Duration::days(7) + Duration::hours(2), &rules));
    let absorbed = Event::CustomerAbsorbed(CustomerAbsorbed {
        absorbed_id: customer_id(1),
        survivor_id: customer_id(2),
        reason: "同一手机号".into(),
    });
    followed.apply(&absorbed);
    assert!(!followed.follow_up_due(now() + Duration::days(30), &rules));
}

#[test]
fn stage_time_limits_count_working_days() {
    let rules = Rules::default(); // 方案演示: 10 working days
    let opportunity = Opportunity::fold(&[opened(1, 1, STAGE_DEMO, false)]); // entered Monday 2026-03-02
    assert_eq!(opportunity.working_days_in_stage(t("2026-03-16T09:00:00Z")), Some(10));
    assert!(!opportunity.stage_overdue(t("2026-03-16T09:00:00Z"), &rules));
    assert!(!opportunity.stage_overdue(t("2026-03-15T09:00:00Z"), &rules), "weekends do not count");
    assert!(opportunity.stage_overdue(t("2026-03-17T09:00:00Z"), &rules));
    let mut lost = opportunity.clone();
    lost.apply(&Event::OpportunityLost(OpportunityLost {
        opportunity_id: opportunity_id(1),
        from_stage: STAGE_DEMO.into(),
        reason: "预算冻结".into(),
        lost_at: now(),
    }));
    assert_eq!(lost.working_days_in_stage(t("2026-04-30T09:00:00Z")), None);
    assert!(!lost.stage_overdue(t("2026-04-30T09:00:00Z"), &rules));
}
