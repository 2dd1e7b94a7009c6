//! The story of issue 3 through the real binary and a tonic client: an exhibition-scan lead
//! auto-assigned by region, claimed, followed up (one activity inheriting fields), moved
//! through the pipeline with evidence (one move refused for missing evidence), won with the
//! three references; a duplicate customer merged and unmerged; the salesperson deactivated
//! and the book handed over. Every refusal is checked to have written nothing.

use std::collections::BTreeMap;

use crate::support::AuthChannel;
use crm_domain::{AssignmentReason, Event, Owned};
use crm_proto::v1 as pb;
use pb::command_service_client::CommandServiceClient;
use pb::event_log_client::EventLogClient;
use tonic::Code;

use crate::support::Server;

const WANG_FANG: &str = "01900000-0000-7000-8000-0000000000a1";
const ZHAO_LEI: &str = "01900000-0000-7000-8000-0000000000a2";
const CHEN_JING: &str = "01900000-0000-7000-8000-0000000000a3";

fn by(actor: &str) -> Option<pb::CommandOptions> {
    Some(pb::CommandOptions { actor: actor.into(), source: "e2e".into(), ..Default::default() })
}

fn keyed(actor: &str, key: &str) -> Option<pb::CommandOptions> {
    Some(pb::CommandOptions { idempotency_key: key.into(), ..by(actor).unwrap() })
}

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

fn meta<'a>(status: &'a tonic::Status, key: &str) -> &'a str {
    status.metadata().get(key).and_then(|v| v.to_str().ok()).unwrap_or("")
}

struct Story {
    commands: CommandServiceClient<AuthChannel>,
    log: EventLogClient<AuthChannel>,
}

impl Story {
    /// Decoded events of a stream, with the stream's version.
    async fn stream(&mut self, stream: &str) -> (Vec<Event>, Option<u64>) {
        let r = self
            .log
            .read_stream(pb::ReadStreamRequest { stream: stream.into(), limit: 1000, ..Default::default() })
            .await
            .unwrap()
            .into_inner();
        let events = r
            .events
            .iter()
            .map(|e| Event::decode(&e.event_type, e.schema_version as u16, &e.payload).unwrap())
            .collect();
        (events, r.stream_version)
    }

    async fn head(&mut self) -> u64 {
        self.log.get_head(pb::GetHeadRequest {}).await.unwrap().into_inner().head
    }

    async fn create_user(&mut self, id: &str, name: &str, region: &str, team: &str, capacity: u32) {
        self.commands
            .create_user(pb::CreateUserRequest {
                options: by("admin"),
                user_id: id.into(),
                name: name.into(),
                role: pb::UserRole::SalesRep as i32,
                region: region.into(),
                team: team.into(),
                capacity,
            })
            .await
            .unwrap();
    }

    async fn move_stage(
        &mut self,
        opportunity: &str,
        to: &str,
        evidence: &[(&str, &str)],
    ) -> Result<pb::CommandResponse, tonic::Status> {
        self.commands
            .move_stage(pb::MoveStageRequest {
                options: by(ZHAO_LEI),
                opportunity_id: opportunity.into(),
                to_stage: to.into(),
                root_cause: "需求明确".into(),
                evidence: map(evidence),
            })
            .await
            .map(tonic::Response::into_inner)
    }
}

#[tokio::test]
async fn the_whole_story_of_issue_3() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let channel = server.channel().await;
    let mut s = Story { commands: CommandServiceClient::new(channel.clone()), log: EventLogClient::new(channel) };

    // Rules: regions to teams, on top of the defaults.
    let defaults = s.commands.get_rules(pb::GetRulesRequest {}).await.unwrap().into_inner();
    assert_eq!(defaults.stream_version, None);
    let mut rules = defaults.rules.unwrap();
    assert_eq!(rules.stages, ["初步接触", "需求确认", "方案演示", "商务谈判", "合同签署"]);
    let assignment = rules.assignment.as_mut().unwrap();
    assignment.region_teams = map(&[("北京", "华北一组"), ("上海", "华东一组")]);
    let changed = s
        .commands
        .change_rules(pb::ChangeRulesRequest {
            options: by("admin"),
            rules: Some(rules),
            reason: "按区域分配线索".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(changed.details["rules_version"], "1");
    let current = s.commands.get_rules(pb::GetRulesRequest {}).await.unwrap().into_inner();
    assert_eq!((current.rules.unwrap().version, current.stream_version), (1, Some(0)));

    // The sales team. 王芳 already has a lead, so 赵磊 is the least loaded in 华北一组.
    s.create_user(WANG_FANG, "王芳", "北京", "华北一组", 20).await;
    s.create_user(ZHAO_LEI, "赵磊", "北京", "华北一组", 20).await;
    s.create_user(CHEN_JING, "陈静", "上海", "华东一组", 20).await;
    let earlier = s
        .commands
        .capture_lead(pb::CaptureLeadRequest {
            options: by("web"),
            name: "李娜".into(),
            email: "lina@example.com".into(),
            channel: pb::LeadChannel::WebForm as i32,
            channel_ref: "official-site-contact".into(),
            source: "官网表单".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    s.commands
        .assign_lead(pb::AssignLeadRequest {
            options: by("manager"),
            lead_id: earlier.id,
            assignee_id: WANG_FANG.into(),
        })
        .await
        .unwrap();

    // 1. An exhibition scan. Unknown fields are kept; the phone is normalised.
    let scan = pb::CaptureLeadRequest {
        options: keyed("badge-scanner-07", "cmef-2026-scan-0001"),
        name: "张伟".into(),
        company: "北京市康达医疗器械有限公司".into(),
        phone: "138 0013 8000".into(),
        channel: pb::LeadChannel::ExhibitionScan as i32,
        exhibition_id: "CMEF-2026-SH".into(),
        booth: "8.1H-A12".into(),
        source: "展会扫码".into(),
        custom_attributes: map(&[("意向产品", "监护仪"), ("badge_level", "VIP")]),
        ..Default::default()
    };
    let captured = s.commands.capture_lead(scan.clone()).await.unwrap().into_inner();
    assert_eq!(
        (captured.details["phone_e164"].as_str(), captured.details["region"].as_str()),
        ("+8613800138000", "北京")
    );
    assert!(!captured.deduplicated);
    let lead = captured.id.clone();
    assert_eq!(captured.stream, format!("lead-{lead}"));
    // The scanner retries (lost ack): same answer, nothing written twice.
    let head = s.head().await;
    let retried = s.commands.capture_lead(scan).await.unwrap().into_inner();
    assert!(retried.deduplicated);
    assert_eq!((retried.id.as_str(), retried.position), (lead.as_str(), captured.position));
    assert_eq!(s.head().await, head);
    // A lead without a contact method is refused, naming the field.
    let err = s
        .commands
        .capture_lead(pb::CaptureLeadRequest {
            options: by("badge-scanner-07"),
            name: "无名".into(),
            channel: pb::LeadChannel::ExhibitionScan as i32,
            exhibition_id: "CMEF-2026-SH".into(),
            booth: "8.1H-A12".into(),
            source: "展会扫码".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), meta(&err, "crm-field"), meta(&err, "crm-rule")),
        (Code::InvalidArgument, "contact", "lead.contact_required")
    );

    // 2. Auto-assigned by region, then by load, with the trace.
    let assigned = s
        .commands
        .auto_assign_lead(pb::AutoAssignLeadRequest { options: by("system:assigner"), lead_id: lead.clone() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(assigned.details["assignee"], ZHAO_LEI);
    assert_eq!(assigned.details["rule"], "region:北京->team:华北一组");
    let (events, _) = s.stream(&format!("lead-{lead}")).await;
    let Some(Event::LeadAssigned(e)) = events.last() else { panic!("{events:?}") };
    let AssignmentReason::Automatic(trace) = &e.reason else { panic!("manual") };
    let loads: Vec<(String, u32, &str)> =
        trace.candidates.iter().map(|c| (c.user_id.to_string(), c.load, c.verdict.as_str())).collect();
    assert_eq!(
        loads,
        [
            (WANG_FANG.to_owned(), 1, "eligible"),
            (ZHAO_LEI.to_owned(), 0, "eligible"),
            (CHEN_JING.to_owned(), 0, "other_team")
        ]
    );

    // 3. Claimed by the assignee (and not by a colleague).
    let err = s
        .commands
        .claim_lead(pb::ClaimLeadRequest { options: by(WANG_FANG), lead_id: lead.clone(), user_id: WANG_FANG.into() })
        .await
        .unwrap_err();
    assert_eq!((err.code(), meta(&err, "crm-rule")), (Code::FailedPrecondition, "lead.assigned_to_other"));
    s.commands
        .claim_lead(pb::ClaimLeadRequest { options: by(ZHAO_LEI), lead_id: lead.clone(), user_id: ZHAO_LEI.into() })
        .await
        .unwrap();

    // 4. Qualified: a customer and an opportunity.
    let qualified = s
        .commands
        .qualify_lead(pb::QualifyLeadRequest {
            options: by(ZHAO_LEI),
            lead_id: lead.clone(),
            title: "手术室监护仪采购".into(),
            amount_fen: Some(86_000_000),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let customer = qualified.details["customer_id"].clone();
    let opportunity = qualified.details["opportunity_id"].clone();
    assert_eq!(qualified.events.len(), 3);

    // 5. Follow-ups: the second one inherits what has not changed.
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let tomorrow = chrono::Utc::now().date_naive().succ_opt().unwrap().format("%Y-%m-%d").to_string();
    let visit = s
        .commands
        .log_activity(pb::LogActivityRequest {
            options: by(ZHAO_LEI),
            customer_id: customer.clone(),
            by_user_id: ZHAO_LEI.into(),
            kind: pb::ActivityKind::Visit as i32,
            occurred_at: Some(prost_types::Timestamp { seconds: now - 7200, nanos: 0 }),
            duration_minutes: Some(90),
            keywords: vec!["报价".into(), "监护仪".into()],
            summary: "拜访设备科, 需求6台".into(),
            next_follow_up: tomorrow.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(visit.details["inherited_fields"], "");
    let call = s
        .commands
        .log_activity(pb::LogActivityRequest {
            options: by(ZHAO_LEI),
            customer_id: customer.clone(),
            by_user_id: ZHAO_LEI.into(),
            summary: "电话确认参数".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(call.details["inherited_fields"], "kind,duration_minutes,keywords,next_follow_up");
    let four_keywords = s
        .commands
        .log_activity(pb::LogActivityRequest {
            options: by(ZHAO_LEI),
            customer_id: customer.clone(),
            by_user_id: ZHAO_LEI.into(),
            keywords: vec!["a".into(), "b".into(), "c".into(), "d".into()],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!((four_keywords.code(), meta(&four_keywords, "crm-field")), (Code::InvalidArgument, "keywords"));

    // 6. Stages with evidence; one move refused for missing evidence, writing nothing.
    s.move_stage(&opportunity, "需求确认", &[("requirements_note", "手术室需6台监护仪")]).await.unwrap();
    let (_, version_before) = s.stream(&format!("opportunity-{opportunity}")).await;
    let head = s.head().await;
    let err = s.move_stage(&opportunity, "方案演示", &[("meeting_notes_ref", "MN-2026-031")]).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!((meta(&err, "crm-rule"), meta(&err, "crm-missing")), ("stage.evidence_required", "customer_feedback"));
    assert!(err.message().contains("customer_feedback"), "{}", err.message());
    assert_eq!(s.stream(&format!("opportunity-{opportunity}")).await.1, version_before);
    assert_eq!(s.head().await, head);
    let err = s.move_stage(&opportunity, "商务谈判", &[("quote_ref", "Q-1")]).await.unwrap_err();
    assert_eq!(meta(&err, "crm-rule"), "stage.transition_not_allowed");
    // A stale expected version is refused with the current one.
    let stale = s
        .commands
        .move_stage(pb::MoveStageRequest {
            options: Some(pb::CommandOptions { expected_version: Some(0), ..by(ZHAO_LEI).unwrap() }),
            opportunity_id: opportunity.clone(),
            to_stage: "方案演示".into(),
            root_cause: "演示认可".into(),
            evidence: map(&[("meeting_notes_ref", "MN-2026-031"), ("customer_feedback", "设备科认可参数")]),
        })
        .await
        .unwrap_err();
    assert_eq!((stale.code(), meta(&stale, "crm-current-version")), (Code::Aborted, "1"));
    let moved = s
        .move_stage(
            &opportunity,
            "方案演示",
            &[("meeting_notes_ref", "MN-2026-031"), ("customer_feedback", "设备科认可参数")],
        )
        .await
        .unwrap();
    assert_eq!(moved.stream_version, 2);
    s.move_stage(&opportunity, "商务谈判", &[("quote_ref", "Q-2026-118")]).await.unwrap();
    s.move_stage(&opportunity, "合同签署", &[("contract_draft_ref", "HT-2026-0042-draft")]).await.unwrap();

    // 7. Won only with all three references.
    let won = |delivery: &str| pb::MarkWonRequest {
        options: by(ZHAO_LEI),
        opportunity_id: opportunity.clone(),
        finance_receipt_ref: "FIN-2026-0301".into(),
        contract_ref: "HT-2026-0042".into(),
        delivery_acceptance_ref: delivery.into(),
    };
    let err = s.commands.mark_won(won("")).await.unwrap_err();
    assert_eq!(
        (err.code(), meta(&err, "crm-rule"), meta(&err, "crm-missing")),
        (Code::FailedPrecondition, "won.proofs_required", "delivery_acceptance_ref")
    );
    let won = s.commands.mark_won(won("YS-2026-0015")).await.unwrap().into_inner();
    let types: Vec<(&str, &str)> = won.events.iter().map(|e| (e.stream.as_str(), e.event_type.as_str())).collect();
    let customer_stream = format!("customer-{customer}");
    let opportunity_stream = format!("opportunity-{opportunity}");
    assert_eq!(types, [(opportunity_stream.as_str(), "OpportunityWon"), (customer_stream.as_str(), "CustomerDealWon")]);

    // 8. A duplicate customer from another channel: merged, then unmerged.
    let duplicate = s
        .commands
        .create_customer(pb::CreateCustomerRequest {
            options: by("erp-sync"),
            fields: map(&[
                ("name", "康达医疗器械（北京）有限公司"),
                ("phone", "+86 138-0013-8000"),
                ("address", "北京市海淀区中关村大街1号"),
            ]),
            owner_id: ZHAO_LEI.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .id;
    let merge = |reason: &str| pb::MergeCustomersRequest {
        options: by("data-steward"),
        survivor_id: customer.clone(),
        absorbed_id: duplicate.clone(),
        reason: reason.into(),
        reason_text: "展会与ERP各录入一次".into(),
        winners: BTreeMap::new(),
    };
    let err = s.commands.merge_customers(merge("")).await.unwrap_err();
    assert_eq!((err.code(), meta(&err, "crm-field")), (Code::InvalidArgument, "reason"));
    s.commands.merge_customers(merge("同一手机号")).await.unwrap();
    let update_duplicate = pb::UpdateCustomerRequest {
        options: by("erp-sync"),
        customer_id: duplicate.clone(),
        set: map(&[("level", "A")]),
        clear: vec![],
        save_anyway: false,
    };
    let err = s.commands.update_customer(update_duplicate.clone()).await.unwrap_err();
    assert_eq!((err.code(), meta(&err, "crm-rule")), (Code::FailedPrecondition, "customer.absorbed"));
    let (survivor_events, _) = s.stream(&customer_stream).await;
    let Some(Event::CustomersMerged(merged)) = survivor_events.last() else { panic!("{survivor_events:?}") };
    assert_eq!(merged.field_changes.iter().map(|c| c.field.as_str()).collect::<Vec<_>>(), ["address"]);
    let after_merge = s
        .commands
        .log_activity(pb::LogActivityRequest {
            options: by(ZHAO_LEI),
            customer_id: customer.clone(),
            by_user_id: ZHAO_LEI.into(),
            kind: pb::ActivityKind::Wechat as i32,
            summary: "微信确认交付地址".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let unmerged = s
        .commands
        .unmerge_customers(pb::UnmergeCustomersRequest {
            options: by("data-steward"),
            survivor_id: customer.clone(),
            absorbed_id: duplicate.clone(),
            reason: "核实为总部与分公司两个客户".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(unmerged.details["post_merge_activities"], after_merge.details["activity_id"]);
    let (survivor_events, _) = s.stream(&customer_stream).await;
    let Some(Event::CustomerUnmerged(e)) = survivor_events.last() else { panic!() };
    assert_eq!(e.restored.iter().map(|c| c.field.as_str()).collect::<Vec<_>>(), ["address"]);
    s.commands.update_customer(update_duplicate).await.unwrap();

    // 9. 赵磊 leaves: deactivated, his open book handed over in priority order.
    s.commands
        .deactivate_user(pb::DeactivateUserRequest {
            options: by("hr"),
            user_id: ZHAO_LEI.into(),
            reason: "离职".into(),
        })
        .await
        .unwrap();
    let err = s
        .commands
        .claim_lead(pb::ClaimLeadRequest { options: by(ZHAO_LEI), lead_id: lead.clone(), user_id: ZHAO_LEI.into() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    let err = s
        .commands
        .handover_owner(pb::HandoverOwnerRequest {
            options: by("manager"),
            departing_user_id: ZHAO_LEI.into(),
            receiver_ids: vec![ZHAO_LEI.into()],
        })
        .await
        .unwrap_err();
    assert_eq!((err.code(), meta(&err, "crm-rule")), (Code::InvalidArgument, "handover.receiver_is_departing"));
    let handed = s
        .commands
        .handover_owner(pb::HandoverOwnerRequest {
            options: by("manager"),
            departing_user_id: ZHAO_LEI.into(),
            receiver_ids: vec![WANG_FANG.into(), CHEN_JING.into()],
        })
        .await
        .unwrap()
        .into_inner();
    // Two open customers (the survivor and the restored duplicate); the won deal and the
    // qualified lead are closed and stay with him.
    assert_eq!(handed.details["items"], "2");
    let moved: Vec<&str> = handed.events.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(moved, ["OwnerChanged", "OwnerChanged", "UserHandedOver"]);
    for stream in [&customer_stream, &format!("customer-{duplicate}")] {
        let (events, _) = s.stream(stream).await;
        let Some(Event::OwnerChanged(e)) = events.last() else { panic!("{events:?}") };
        assert!(matches!(e.subject, Owned::Customer(_)));
        assert_eq!(
            (e.from.map(|u| u.to_string()), e.to.to_string()),
            (Some(ZHAO_LEI.to_owned()), WANG_FANG.to_owned())
        );
    }
    let err = s
        .commands
        .handover_owner(pb::HandoverOwnerRequest {
            options: by("manager"),
            departing_user_id: ZHAO_LEI.into(),
            receiver_ids: vec![WANG_FANG.into()],
        })
        .await
        .unwrap_err();
    assert_eq!((err.code(), meta(&err, "crm-rule")), (Code::FailedPrecondition, "handover.nothing_open"));

    // The log explains itself: metadata and a JSON view of each payload.
    let all = s.log.read_all(pb::ReadAllRequest { from_position: 1, limit: 1000 }).await.unwrap().into_inner();
    let scan_event = all.events.iter().find(|e| e.stream == format!("lead-{lead}")).unwrap();
    let metadata = scan_event.metadata.as_ref().unwrap();
    // The actor is the authenticated principal (the bootstrap administrator here), not
    // whatever the request claims in `options.actor`.
    assert_eq!((metadata.actor.as_str(), metadata.source.as_str()), ("admin", "e2e"));
    assert!(scan_event.payload_json.contains("CMEF-2026-SH"), "{}", scan_event.payload_json);
    assert!(all.events.iter().all(|e| !e.payload_json.is_empty()));
}

#[tokio::test]
async fn malformed_requests_name_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let mut commands = CommandServiceClient::new(server.channel().await);
    let err = commands
        .claim_lead(pb::ClaimLeadRequest { options: by("x"), lead_id: "not-a-uuid".into(), user_id: WANG_FANG.into() })
        .await
        .unwrap_err();
    assert_eq!((err.code(), meta(&err, "crm-field")), (Code::InvalidArgument, "lead_id"));
    // No options at all: the token supplies the actor, so the first problem is the missing id.
    let err = commands.claim_lead(pb::ClaimLeadRequest { options: None, ..Default::default() }).await.unwrap_err();
    assert_eq!((err.code(), meta(&err, "crm-field")), (Code::InvalidArgument, "lead_id"));
    assert!(err.message().contains("required"), "{}", err.message());
    let err = commands
        .claim_lead(pb::ClaimLeadRequest { options: by("x"), lead_id: WANG_FANG.into(), user_id: ZHAO_LEI.into() })
        .await
        .unwrap_err();
    assert_eq!((err.code(), meta(&err, "crm-kind"), meta(&err, "crm-id")), (Code::NotFound, "lead", WANG_FANG));
    let err = commands
        .capture_lead(pb::CaptureLeadRequest {
            options: by("x"),
            name: "张伟".into(),
            phone: "13800138000".into(),
            source: "api".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!((err.code(), meta(&err, "crm-field")), (Code::InvalidArgument, "channel"));
}

#[tokio::test]
async fn capturing_an_existing_lead_twice() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let mut commands = CommandServiceClient::new(server.channel().await);
    let capture = |options| pb::CaptureLeadRequest {
        options,
        lead_id: "01900000-0000-7000-8000-00000000b001".into(),
        company: "上海星辰电子有限公司".into(),
        phone: "021-5123 4567".into(),
        channel: pb::LeadChannel::Phone as i32,
        channel_ref: "400-hotline".into(),
        source: "400热线".into(),
        ..Default::default()
    };
    let first = commands.capture_lead(capture(by("hotline"))).await.unwrap().into_inner();
    assert_eq!(first.details["region"], "上海");
    // Without an idempotency key a second capture of the same id is a refusal, not a retry.
    let err = commands.capture_lead(capture(by("hotline"))).await.unwrap_err();
    assert_eq!((err.code(), meta(&err, "crm-kind")), (Code::AlreadyExists, "lead"));
    // With a key, the first capture is found on the stream and the retry is answered from it.
    let keyed_first = pb::CaptureLeadRequest {
        lead_id: "01900000-0000-7000-8000-00000000b002".into(),
        ..capture(keyed("hotline", "call-0002"))
    };
    let a = commands.capture_lead(keyed_first.clone()).await.unwrap().into_inner();
    let b = commands.capture_lead(keyed_first).await.unwrap().into_inner();
    assert!(!a.deduplicated && b.deduplicated);
    assert_eq!((a.position, a.stream_version), (b.position, b.stream_version));
}

/// Without an expected version, commands racing on one stream are reloaded and retried, so
/// all of them land; with one, the losers get ABORTED and write nothing.
#[tokio::test]
async fn racing_commands_retry_only_without_an_expected_version() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let channel = server.channel().await;
    let mut commands = CommandServiceClient::new(channel.clone());
    let customer = commands
        .create_customer(pb::CreateCustomerRequest {
            options: by("erp-sync"),
            fields: map(&[("name", "杭州启明教育科技有限公司")]),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let log_call = |expected_version: Option<u64>, n: usize| {
        let mut client = CommandServiceClient::new(channel.clone());
        let customer_id = customer.id.clone();
        async move {
            client
                .log_activity(pb::LogActivityRequest {
                    options: Some(pb::CommandOptions { expected_version, ..by("x").unwrap() }),
                    customer_id,
                    by_user_id: WANG_FANG.into(),
                    kind: pb::ActivityKind::Call as i32,
                    summary: format!("第{n}次电话"),
                    ..Default::default()
                })
                .await
        }
    };
    let free: Vec<_> = (0..8).map(|n| tokio::spawn(log_call(None, n))).collect();
    for task in free {
        task.await.unwrap().unwrap();
    }
    let mut log = EventLogClient::new(channel.clone());
    let stream = format!("customer-{}", customer.id);
    let version = |log: &mut EventLogClient<_>| {
        let stream = stream.clone();
        let mut log = log.clone();
        async move {
            log.read_stream(pb::ReadStreamRequest { stream, limit: 1000, ..Default::default() })
                .await
                .unwrap()
                .into_inner()
                .stream_version
        }
    };
    assert_eq!(version(&mut log).await, Some(8), "created + 8 activities");
    let strict: Vec<_> = (0..8).map(|n| tokio::spawn(log_call(Some(8), n))).collect();
    let mut won = 0;
    for task in strict {
        match task.await.unwrap() {
            Ok(_) => won += 1,
            Err(status) => assert_eq!(status.code(), Code::Aborted, "{status:?}"),
        }
    }
    assert_eq!(won, 1);
    assert_eq!(version(&mut log).await, Some(9));
}
