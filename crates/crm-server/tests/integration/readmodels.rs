//! The workload, reminders and data-health read models through the real binary: commands
//! through `CommandService`, answers through `Query`, scoped and masked per role.

use std::collections::BTreeMap;

use chrono::{Duration, Utc};
use crm_proto::v1 as pb;
use pb::command_service_client::CommandServiceClient;
use pb::query_client::QueryClient;
use tonic::Code;

use crate::support::{AuthChannel, Server};

fn ts(at: chrono::DateTime<Utc>) -> Option<prost_types::Timestamp> {
    Some(prost_types::Timestamp { seconds: at.timestamp(), nanos: at.timestamp_subsec_nanos() as i32 })
}

async fn user(commands: &mut CommandServiceClient<AuthChannel>, role: pb::UserRole, region: &str) -> String {
    let id = uuid::Uuid::now_v7().to_string();
    commands
        .create_user(pb::CreateUserRequest {
            user_id: id.clone(),
            name: format!("{region}{}", role.as_str_name()),
            role: role as i32,
            region: region.into(),
            team: region.into(),
            capacity: 50,
            ..Default::default()
        })
        .await
        .unwrap();
    id
}

async fn token(server: &Server, user: &str, role: &str, region: &str) -> String {
    let mut tokens = pb::tokens_client::TokensClient::new(server.channel().await);
    let request =
        pb::IssueTokenRequest { user_id: user.into(), role: role.into(), region: region.into(), ..Default::default() };
    tokens.issue_token(request).await.unwrap().into_inner().token
}

async fn capture(commands: &mut CommandServiceClient<AuthChannel>, phone: &str, uscc: &str) -> pb::CommandResponse {
    commands
        .capture_lead(pb::CaptureLeadRequest {
            name: "周先生".into(),
            company: "北京瑞丰医疗器械有限公司".into(),
            phone: phone.into(),
            uscc: uscc.into(),
            region: "北京".into(),
            channel: pb::LeadChannel::Phone as i32,
            channel_ref: "400-line".into(),
            source: "电话".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workload_counts_open_and_unclaimed_leads_per_salesperson_in_scope() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let mut commands = CommandServiceClient::new(server.channel().await);
    let rep_a = user(&mut commands, pb::UserRole::SalesRep, "北京").await;
    let rep_b = user(&mut commands, pb::UserRole::SalesRep, "上海").await;
    let l1 = capture(&mut commands, "13900000011", "").await.id;
    let l2 = capture(&mut commands, "13900000012", "").await.id;
    for lead in [&l1, &l2] {
        commands
            .assign_lead(pb::AssignLeadRequest {
                lead_id: lead.clone(),
                assignee_id: rep_a.clone(),
                ..Default::default()
            })
            .await
            .unwrap();
    }
    let claimed = commands
        .claim_lead(pb::ClaimLeadRequest { lead_id: l2.clone(), user_id: rep_a.clone(), ..Default::default() })
        .await
        .unwrap()
        .into_inner();

    let mut query = QueryClient::new(server.channel().await);
    let workload = |now| pb::GetWorkloadRequest { min_position: claimed.position, now };
    let answer = query.get_workload(workload(None)).await.unwrap().into_inner();
    assert!(answer.position >= claimed.position);
    assert_eq!(answer.unclaimed_alert_hours, 2, "the default rule");
    let row = |a: &pb::GetWorkloadResponse, u: &str| a.salespeople.iter().find(|r| r.user_id == u).cloned().unwrap();
    let a = row(&answer, &rep_a);
    assert_eq!((a.open_leads, a.unclaimed, a.unclaimed_over_limit), (2, 1, 0), "just assigned");
    assert_eq!(a.responses, 1);
    assert!(a.median_first_response_minutes.is_some_and(|m| (0.0..5.0).contains(&m)), "{a:?}");
    assert_eq!(row(&answer, &rep_b).open_leads, 0);

    // Three hours later (the request's clock), L1 is past the two-hour limit.
    let later = ts(Utc::now() + Duration::hours(3));
    let answer = query.get_workload(workload(later)).await.unwrap().into_inner();
    assert_eq!(row(&answer, &rep_a).unclaimed_over_limit, 1);
    let unclaimed = |now| pb::ListUnclaimedLeadsRequest { min_position: claimed.position, now, limit: 0 };
    let listed = query.list_unclaimed_leads(unclaimed(later)).await.unwrap().into_inner().leads;
    assert_eq!(listed.iter().map(|l| (&l.lead_id, &l.assignee_id)).collect::<Vec<_>>(), vec![(&l1, &rep_a)]);
    assert!((2..=3).contains(&listed[0].hours_unclaimed), "{listed:?}");
    assert!(query.list_unclaimed_leads(unclaimed(None)).await.unwrap().into_inner().leads.is_empty());

    // A sales rep sees their own row and their own leads only.
    for (rep, region, expected_unclaimed) in [(&rep_a, "北京", 1), (&rep_b, "上海", 0)] {
        let mut mine = QueryClient::new(server.channel_with(&token(&server, rep, "sales_rep", region).await).await);
        let rows = mine.get_workload(workload(later)).await.unwrap().into_inner().salespeople;
        assert_eq!(rows.iter().map(|r| r.user_id.as_str()).collect::<Vec<_>>(), vec![rep.as_str()]);
        assert_eq!(
            mine.list_unclaimed_leads(unclaimed(later)).await.unwrap().into_inner().leads.len(),
            expected_unclaimed
        );
    }

    // A malformed clock is refused, naming the field.
    let bad = Some(prost_types::Timestamp { seconds: 0, nanos: -1 });
    let err = query.get_workload(workload(bad)).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("`now`"), "{}", err.message());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reminders_my_day_and_data_health_follow_commands() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("crm.toml");
    std::fs::write(&config, "escalation_after_days = 4\n").unwrap();
    let server = Server::start_with(&dir.path().join("data"), &["--config", config.to_str().unwrap()]);
    let mut commands = CommandServiceClient::new(server.channel().await);
    let rep = user(&mut commands, pb::UserRole::SalesRep, "北京").await;
    let other = user(&mut commands, pb::UserRole::SalesRep, "北京").await;
    let manager = user(&mut commands, pb::UserRole::RegionalManager, "北京").await;
    let create = |fields: &[(&str, &str)]| pb::CreateCustomerRequest {
        fields: fields.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect::<BTreeMap<_, _>>(),
        owner_id: rep.clone(),
        ..Default::default()
    };
    let c1 = commands
        .create_customer(create(&[("name", "北京康达医疗器械有限公司"), ("phone", "13900000021"), ("region", "北京")]))
        .await
        .unwrap()
        .into_inner()
        .id;
    let c2 = commands
        .create_customer(create(&[("name", "北京华信科技有限公司"), ("region", "北京")]))
        .await
        .unwrap()
        .into_inner()
        .id;
    let now = Utc::now();
    let today = (now + Duration::hours(8)).date_naive();
    commands
        .log_activity(pb::LogActivityRequest {
            customer_id: c1.clone(),
            by_user_id: rep.clone(),
            kind: pb::ActivityKind::Call as i32,
            occurred_at: ts(now - Duration::days(11)),
            summary: "介绍新品".into(),
            next_follow_up: today.to_string(),
            ..Default::default()
        })
        .await
        .unwrap();
    let lead = capture(&mut commands, "1390000", "91110108MA01AB2C30").await;
    let assigned = commands
        .assign_lead(pb::AssignLeadRequest { lead_id: lead.id.clone(), assignee_id: rep.clone(), ..Default::default() })
        .await
        .unwrap()
        .into_inner();

    // Reminders: C1 eleven days without contact (past 7 + 4: escalated to the manager), C2
    // never contacted.
    let mut query = QueryClient::new(server.channel().await);
    let reminders = query
        .get_reminders(pb::GetRemindersRequest { min_position: assigned.position, ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((reminders.follow_up_reminder_days, reminders.escalation_after_days), (7, 4), "rule, configuration");
    let ids = |items: &[pb::ReminderItem]| items.iter().map(|i| i.customer_id.clone()).collect::<Vec<_>>();
    assert_eq!(ids(&reminders.reminders), vec![c1.clone(), c2.clone()]);
    assert_eq!(ids(&reminders.escalations), vec![c1.clone()]);
    assert_eq!(reminders.escalations[0].manager_ids, vec![manager.clone()]);

    // My day: the rep's own call, phone in full; the manager sees it masked; another rep
    // asking for this rep's day gets their own (empty) day.
    let day = |user_id: &str, now| pb::GetMyDayRequest {
        min_position: assigned.position,
        user_id: user_id.into(),
        now,
        today: String::new(),
    };
    let mut as_rep = QueryClient::new(server.channel_with(&token(&server, &rep, "sales_rep", "北京").await).await);
    let mine = as_rep.get_my_day(day("", None)).await.unwrap().into_inner();
    assert_eq!((mine.user_id.as_str(), mine.today.clone()), (rep.as_str(), today.to_string()));
    assert_eq!(ids(&mine.todays_follow_ups), vec![c1.clone()]);
    assert_eq!(mine.todays_follow_ups[0].fields["phone"], "+8613900000021");
    assert!(mine.overdue_follow_ups.is_empty() && mine.leads_without_contact.is_empty());
    let tomorrow = as_rep.get_my_day(day("", ts(now + Duration::hours(25)))).await.unwrap().into_inner();
    assert_eq!(ids(&tomorrow.overdue_follow_ups), vec![c1.clone()], "yesterday's follow-up is overdue");
    assert_eq!(tomorrow.leads_without_contact.iter().map(|l| l.lead_id.clone()).collect::<Vec<_>>(), vec![lead.id]);
    let mut as_manager =
        QueryClient::new(server.channel_with(&token(&server, &manager, "regional_manager", "北京").await).await);
    let seen = as_manager.get_my_day(day(&rep, None)).await.unwrap().into_inner();
    assert_eq!(seen.todays_follow_ups[0].fields["phone"], "139****0021");
    let mut as_other = QueryClient::new(server.channel_with(&token(&server, &other, "sales_rep", "北京").await).await);
    let theirs = as_other.get_my_day(day(&rep, None)).await.unwrap().into_inner();
    assert_eq!(theirs.user_id, other);
    assert!(theirs.todays_follow_ups.is_empty());
    let err =
        query.get_my_day(pb::GetMyDayRequest { today: "2026-13-01".into(), ..day(&rep, None) }).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("`today`"), "{}", err.message());

    // Data health: phone filled on one customer of two; the lead's raw phone and bad USCC.
    let health = |min_position| pb::GetDataHealthRequest { min_position, ..Default::default() };
    let share = |h: &pb::GetDataHealthResponse, f: &str| h.completeness.iter().find(|c| c.field == f).unwrap().share;
    let before = query.get_data_health(health(assigned.position)).await.unwrap().into_inner();
    assert_eq!(before.live_customers, 2);
    assert_eq!((share(&before, "phone"), share(&before, "name")), (Some(0.5), Some(1.0)));
    assert_eq!((before.lead_flags["phone_raw"], before.lead_flags["uscc_checksum"], before.leads), (1, 1, 1));
    assert_eq!(before.duplicate_rate, Some(0.0));
    let updated = commands
        .update_customer(pb::UpdateCustomerRequest {
            customer_id: c2.clone(),
            set: BTreeMap::from([("phone".to_owned(), "13900000022".to_owned())]),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let after = query.get_data_health(health(updated.position)).await.unwrap().into_inner();
    assert_eq!(share(&after, "phone"), Some(1.0), "filling a field shows in completeness");
    // A second record of C1 (same name and mobile) makes a duplicate pair: 2 of 3 customers.
    let dup = commands
        .create_customer(create(&[("name", "北京康达医疗器械有限公司"), ("phone", "13900000021"), ("region", "北京")]))
        .await
        .unwrap()
        .into_inner();
    let with_dup = query.get_data_health(health(dup.position)).await.unwrap().into_inner();
    assert_eq!((with_dup.live_customers, with_dup.duplicate_customers), (3, 2));
    assert!(with_dup.duplicates_position >= dup.position);
    // The other rep's health covers their own (no) customers.
    let theirs = as_other.get_data_health(health(dup.position)).await.unwrap().into_inner();
    assert_eq!((theirs.live_customers, theirs.duplicate_rate), (0, None));
    let err = query
        .get_data_health(pb::GetDataHealthRequest { region: "北京".into(), owner_id: rep, ..health(0) })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
}
