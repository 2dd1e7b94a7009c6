//! crm.v1.Duplicates through the real binary: a pair written differently is listed with an
//! explanation, a dismissal is recorded and changes the status, a merge is reported with its
//! reason, actor and score, and merge then unmerge restores both customers' read models.

use std::collections::BTreeMap;

use crm_proto::v1 as pb;
use pb::admin_client::AdminClient;
use pb::command_service_client::CommandServiceClient;
use pb::duplicates_client::DuplicatesClient;
use pb::event_log_client::EventLogClient;
use pb::query_client::QueryClient;
use tonic::Code;

use crate::support::{AuthChannel, Server};

fn options() -> Option<pb::CommandOptions> {
    Some(pb::CommandOptions { source: "e2e".into(), ..Default::default() })
}

async fn create(commands: &mut CommandServiceClient<AuthChannel>, fields: &[(&str, &str)]) -> pb::CommandResponse {
    let fields: BTreeMap<String, String> = fields.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    commands
        .create_customer(pb::CreateCustomerRequest { options: options(), fields, ..Default::default() })
        .await
        .unwrap()
        .into_inner()
}

async fn customer(query: &mut QueryClient<AuthChannel>, id: &str, min_position: u64) -> pb::CustomerView {
    query
        .get_customer(pb::GetCustomerRequest { min_position, customer_id: id.to_owned() })
        .await
        .unwrap()
        .into_inner()
        .customer
        .unwrap()
}

/// What a merge then unmerge must leave as it was (the update stamps move on).
fn comparable(mut v: pb::CustomerView) -> pb::CustomerView {
    v.updated_at = None;
    v.updated_position = 0;
    v
}

fn is_pair(c: &pb::DuplicateCandidate, x: &str, y: &str) -> bool {
    (c.customer_a_id == x && c.customer_b_id == y) || (c.customer_a_id == y && c.customer_b_id == x)
}

#[tokio::test]
async fn candidates_are_listed_dismissed_merged_reported_and_unmerged() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let channel = server.channel().await;
    let mut commands = CommandServiceClient::new(channel.clone());
    let mut query = QueryClient::new(channel.clone());
    let mut log = EventLogClient::new(channel.clone());
    let mut admin = AdminClient::new(channel.clone());
    let mut duplicates = DuplicatesClient::new(channel);

    let a = create(
        &mut commands,
        &[("name", "北京市某某科技股份有限公司"), ("phone", "+86 138 0013 8000"), ("contact_name", "王建国")],
    )
    .await;
    let b =
        create(&mut commands, &[("name", "北京某某科技"), ("phone", "0086 138-0013-8000"), ("contact_name", "王建国")])
            .await;
    let c = create(
        &mut commands,
        &[("name", "上海远航物流有限公司"), ("phone", "+86 139 1111 2222"), ("contact_name", "李娜")],
    )
    .await;
    let d = create(&mut commands, &[("name", "上海远航物流"), ("phone", "0086 13911112222"), ("contact_name", "李娜")])
        .await;

    // Both pairs are listed, highest weight first, with an explanation and the customers.
    let list = duplicates
        .list_duplicate_candidates(pb::ListDuplicateCandidatesRequest {
            min_position: d.position,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(list.position >= d.position);
    assert_eq!(list.total, 2, "{:?}", list.candidates);
    assert!(list.candidates.iter().any(|p| is_pair(p, &a.id, &b.id)));
    assert!(list.candidates.iter().any(|p| is_pair(p, &c.id, &d.id)));
    assert!(list.candidates[0].weight >= list.candidates[1].weight);
    for pair in &list.candidates {
        assert_eq!(pair.status, pb::CandidateStatus::Open as i32);
        assert_eq!(pair.decision, "duplicate");
        assert!(pair.explanation.contains("mobile"), "{}", pair.explanation);
        assert!(pair.contributions.iter().any(|f| f.field == "company" && f.weight > 0.0), "{:?}", pair.contributions);
        assert!(!pair.customer_a_fields["name"].is_empty() && !pair.customer_b_fields["name"].is_empty());
    }
    // Paging and the weight filter.
    let first = duplicates
        .list_duplicate_candidates(pb::ListDuplicateCandidatesRequest { page_size: 1, ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((first.candidates.len(), first.next_offset), (1, 1));
    let none = duplicates
        .list_duplicate_candidates(pb::ListDuplicateCandidatesRequest {
            has_min_weight: true,
            min_weight: list.candidates[0].weight + 1.0,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(none.total, 0);

    // A dismissal needs a reason, is recorded, and changes the pair's status.
    let refused = duplicates
        .dismiss_candidate(pb::DismissCandidateRequest {
            customer_a_id: c.id.clone(),
            customer_b_id: d.id.clone(),
            reason: "  ".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    let dismissed = duplicates
        .dismiss_candidate(pb::DismissCandidateRequest {
            customer_a_id: c.id.clone(),
            customer_b_id: d.id.clone(),
            reason: "总公司与分公司，分开管理".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(dismissed.position > d.position);
    let list = duplicates
        .list_duplicate_candidates(pb::ListDuplicateCandidatesRequest {
            min_position: dismissed.position,
            status: pb::CandidateStatus::Dismissed as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(list.candidates.len(), 1);
    let pair = &list.candidates[0];
    assert!(is_pair(pair, &c.id, &d.id));
    assert_eq!(pair.status_reason, "总公司与分公司，分开管理");
    assert!(!pair.status_actor.is_empty());
    assert_eq!(pair.status_position, dismissed.position);
    let open = duplicates
        .list_duplicate_candidates(pb::ListDuplicateCandidatesRequest {
            min_position: dismissed.position,
            status: pb::CandidateStatus::Open as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(open.candidates.len(), 1);
    let open_weight = open.candidates[0].weight;
    assert!(is_pair(&open.candidates[0], &a.id, &b.id));

    // Merge, then the report: what, why, by whom, the score at that moment.
    let before_a = comparable(customer(&mut query, &a.id, dismissed.position).await);
    let before_b = comparable(customer(&mut query, &b.id, dismissed.position).await);
    let merged = commands
        .merge_customers(pb::MergeCustomersRequest {
            options: options(),
            survivor_id: a.id.clone(),
            absorbed_id: b.id.clone(),
            reason: "同一手机号".into(),
            reason_text: "同一家公司，名称写法不同".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let report = duplicates
        .get_merge_report(pb::GetMergeReportRequest { min_position: merged.position, customer_id: b.id.clone() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(report.merges.len(), 1, "{report:?}");
    let m = &report.merges[0];
    assert_eq!((m.survivor_id.as_str(), m.absorbed_id.as_str()), (a.id.as_str(), b.id.as_str()));
    assert_eq!(m.reason, "同一手机号");
    assert_eq!(m.reason_text, "同一家公司，名称写法不同");
    assert_eq!(m.actor, pair.status_actor, "the same principal dismissed and merged");
    assert_eq!(m.weight, open_weight, "the pair's score at the merge");
    assert!(m.explanation.contains("mobile"));
    assert_eq!(m.status_before, "open");
    assert_eq!(m.unmerged_position, 0);
    let merged_pairs = duplicates
        .list_duplicate_candidates(pb::ListDuplicateCandidatesRequest {
            min_position: merged.position,
            status: pb::CandidateStatus::Merged as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(merged_pairs.candidates.len(), 1);
    assert_eq!(merged_pairs.candidates[0].survivor_id, a.id);
    assert_eq!(customer(&mut query, &b.id, merged.position).await.absorbed_into, a.id);

    // Unmerge: both customers' read models are as before the merge; the report says so.
    let unmerged = commands
        .unmerge_customers(pb::UnmergeCustomersRequest {
            options: options(),
            survivor_id: a.id.clone(),
            absorbed_id: b.id.clone(),
            reason: "合并错误".into(),
        })
        .await
        .unwrap()
        .into_inner();
    // The unmerge writes to both streams; wait for everything it wrote.
    let head = log.get_head(pb::GetHeadRequest {}).await.unwrap().into_inner().head;
    assert!(head >= unmerged.position);
    assert_eq!(comparable(customer(&mut query, &a.id, head).await), before_a);
    assert_eq!(comparable(customer(&mut query, &b.id, head).await), before_b);
    let report = duplicates
        .get_merge_report(pb::GetMergeReportRequest { min_position: head, customer_id: a.id.clone() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(report.merges.len(), 1);
    let at = report.merges[0].unmerged_position;
    assert!(at > merged.position && at <= head, "{at}");
    assert_eq!(report.merges[0].unmerge_reason, "合并错误");
    let open = duplicates
        .list_duplicate_candidates(pb::ListDuplicateCandidatesRequest {
            min_position: head,
            status: pb::CandidateStatus::Open as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(open.candidates.len(), 1);
    assert!(is_pair(&open.candidates[0], &a.id, &b.id));

    // A build from the log (its own Matcher) equals the live read model.
    let report =
        admin.verify_projection(pb::VerifyProjectionRequest { name: "duplicates".into() }).await.unwrap().into_inner();
    assert_eq!(report.total_differences, 0, "{:?}", report.differences);
}

fn status_meta<'a>(status: &'a tonic::Status, key: &str) -> &'a str {
    status.metadata().get(key).and_then(|v| v.to_str().ok()).unwrap_or("")
}

async fn head(log: &mut EventLogClient<AuthChannel>) -> u64 {
    log.get_head(pb::GetHeadRequest {}).await.unwrap().into_inner().head
}

/// The events of `stream`, decoded.
async fn stream(log: &mut EventLogClient<AuthChannel>, stream: &str) -> Vec<crm_domain::Event> {
    let r = log
        .read_stream(pb::ReadStreamRequest { stream: stream.into(), limit: 1000, ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    r.events
        .iter()
        .map(|e| crm_domain::Event::decode(&e.event_type, e.schema_version as u16, &e.payload).unwrap())
        .collect()
}

fn lead(company: &str, name: &str, phone: &str, email: &str) -> pb::CaptureLeadRequest {
    pb::CaptureLeadRequest {
        options: options(),
        company: company.into(),
        name: name.into(),
        phone: phone.into(),
        email: email.into(),
        channel: pb::LeadChannel::WebForm as i32,
        channel_ref: "form-contact-us".into(),
        source: "官网表单".into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn capture_and_update_are_guarded_against_existing_customers() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let channel = server.channel().await;
    let mut commands = CommandServiceClient::new(channel.clone());
    let mut log = EventLogClient::new(channel);

    let existing = create(
        &mut commands,
        &[("name", "杭州星辰电子科技有限公司"), ("phone", "+86 138-0013-8123"), ("contact_name", "王建国")],
    )
    .await;

    // The same mobile written another way: refused, naming the customer; nothing written.
    let before = head(&mut log).await;
    let refused = commands.capture_lead(lead("星海贸易", "刘洋", "0086138 0013 8123", "")).await.unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert_eq!(status_meta(&refused, "crm-rule"), "duplicate.exact_key");
    assert_eq!(status_meta(&refused, "crm-missing"), "create_anyway");
    assert!(refused.message().contains(&existing.id) && refused.message().contains("mobile"), "{}", refused.message());
    assert_eq!(head(&mut log).await, before, "a refusal writes nothing");

    // create_anyway: accepted, and the collision and the flag are in the log.
    let mut anyway = lead("星海贸易", "刘洋", "0086138 0013 8123", "");
    anyway.create_anyway = true;
    let captured = commands.capture_lead(anyway).await.unwrap().into_inner();
    assert_eq!(captured.suspected_duplicates.len(), 1, "{:?}", captured.suspected_duplicates);
    assert_eq!(captured.suspected_duplicates[0].customer_id, existing.id);
    assert_eq!(captured.suspected_duplicates[0].exact_key, "mobile");
    let events = stream(&mut log, &captured.stream).await;
    let [crm_domain::Event::LeadCaptured(_), crm_domain::Event::DuplicateSuspected(s)] = events.as_slice() else {
        panic!("{events:?}")
    };
    assert!(s.proceeded_anyway);
    assert_eq!(s.collisions.len(), 1);
    assert_eq!(s.collisions[0].customer_id.to_string(), existing.id);
    assert_eq!(s.collisions[0].key, crm_domain::ExactKey::Mobile);

    // A fuzzy near-duplicate (similar company, same contact, no shared key): accepted, with the
    // candidate and its explanation in the response and a DuplicateSuspected in the log.
    let fuzzy = commands
        .capture_lead(lead("杭州星辰电子有限公司", "王建国", "", "wjg@example.com"))
        .await
        .unwrap()
        .into_inner();
    let found = &fuzzy.suspected_duplicates;
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!((found[0].customer_id.as_str(), found[0].exact_key.as_str()), (existing.id.as_str(), ""));
    assert!(found[0].score > 0.0 && !found[0].decision.is_empty(), "{found:?}");
    assert!(found[0].fields.iter().any(|f| f.field == "company" && f.weight > 0.0), "{found:?}");
    let events = stream(&mut log, &fuzzy.stream).await;
    let [crm_domain::Event::LeadCaptured(_), crm_domain::Event::DuplicateSuspected(s)] = events.as_slice() else {
        panic!("{events:?}")
    };
    assert!(!s.proceeded_anyway && s.collisions.is_empty());
    assert_eq!(s.suspected[0].customer_id.to_string(), existing.id);

    // An unrelated lead: no candidate, no DuplicateSuspected.
    let plain = commands.capture_lead(lead("远航物流", "李娜", "+86 139 2222 3333", "")).await.unwrap().into_inner();
    assert!(plain.suspected_duplicates.is_empty());
    assert_eq!(stream(&mut log, &plain.stream).await.len(), 1);

    // UpdateCustomer: setting another customer's mobile is refused unless save_anyway.
    let other = create(&mut commands, &[("name", "上海远航物流有限公司"), ("contact_name", "李娜")]).await;
    let update = |save_anyway| pb::UpdateCustomerRequest {
        options: options(),
        customer_id: other.id.clone(),
        set: [("phone".to_owned(), "+8613800138123".to_owned())].into(),
        clear: vec![],
        save_anyway,
    };
    let before = head(&mut log).await;
    let refused = commands.update_customer(update(false)).await.unwrap_err();
    assert_eq!((refused.code(), status_meta(&refused, "crm-rule")), (Code::FailedPrecondition, "duplicate.exact_key"));
    assert_eq!(status_meta(&refused, "crm-missing"), "save_anyway");
    assert!(refused.message().contains(&existing.id), "{}", refused.message());
    assert_eq!(head(&mut log).await, before, "a refusal writes nothing");
    let saved = commands.update_customer(update(true)).await.unwrap().into_inner();
    assert_eq!(saved.suspected_duplicates[0].exact_key, "mobile");
    let events = stream(&mut log, &saved.stream).await;
    let Some(crm_domain::Event::DuplicateSuspected(s)) = events.last() else { panic!("{events:?}") };
    assert!(s.proceeded_anyway && s.collisions[0].customer_id.to_string() == existing.id);
    // An unrelated edit of a customer that shares a mobile (accepted above) is not blocked.
    commands
        .update_customer(pb::UpdateCustomerRequest {
            options: options(),
            customer_id: other.id.clone(),
            set: [("level".to_owned(), "A".to_owned())].into(),
            ..Default::default()
        })
        .await
        .unwrap();

    // A keyed retry of an accepted capture is answered from its events, even though a
    // customer with that mobile now exists (a new capture would be refused).
    let keyed = || {
        let mut r = lead("新月教育", "赵敏", "+86 137 0000 1111", "");
        r.options = Some(pb::CommandOptions { idempotency_key: "e2e-guard-retry".into(), ..Default::default() });
        r
    };
    let first = commands.capture_lead(keyed()).await.unwrap().into_inner();
    assert!(!first.deduplicated);
    let owner = create(&mut commands, &[("name", "新月教育培训有限公司"), ("phone", "13700001111")]).await;
    let retry = commands.capture_lead(keyed()).await.unwrap().into_inner();
    assert!(retry.deduplicated && retry.id == first.id, "{retry:?}");
    let fresh = commands.capture_lead(lead("新月教育", "赵敏", "+86 137 0000 1111", "")).await.unwrap_err();
    assert!(fresh.message().contains(&owner.id), "{fresh:?}");
}

/// Waits until the duplicates read model serves a build made with rules `version`.
async fn rebuilt_with(admin: &mut AdminClient<AuthChannel>, version: u64) {
    for _ in 0..600 {
        let list = admin.list_projections(pb::ListProjectionsRequest {}).await.unwrap().into_inner();
        let info = list.projections.iter().find(|p| p.name == "duplicates").unwrap();
        if info.rules_version == version && info.state == pb::ProjectionState::Live as i32 {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("the duplicates read model was not rebuilt with rules version {version}");
}

#[tokio::test]
async fn raising_the_company_threshold_rescans_and_drops_a_pair() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let channel = server.channel().await;
    let mut commands = CommandServiceClient::new(channel.clone());
    let mut admin = AdminClient::new(channel.clone());
    let mut duplicates = DuplicatesClient::new(channel);

    let e = create(&mut commands, &[("name", "杭州星辰电子科技有限公司"), ("contact_name", "王建国")]).await;
    let f = create(&mut commands, &[("name", "杭州星辰电子有限公司"), ("contact_name", "王建国")]).await;
    let list = duplicates
        .list_duplicate_candidates(pb::ListDuplicateCandidatesRequest {
            min_position: f.position,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(list.candidates.iter().any(|p| is_pair(p, &e.id, &f.id)), "{:?}", list.candidates);

    // Company names must now be identical (100%): the read model is rebuilt from position 0.
    let mut rules = commands.get_rules(pb::GetRulesRequest {}).await.unwrap().into_inner().rules.unwrap();
    rules.company_name_similarity_pct = 100;
    let changed = commands
        .change_rules(pb::ChangeRulesRequest { options: options(), rules: Some(rules), reason: "只认同名".into() })
        .await
        .unwrap()
        .into_inner();
    rebuilt_with(&mut admin, 1).await;
    let list = duplicates
        .list_duplicate_candidates(pb::ListDuplicateCandidatesRequest {
            min_position: changed.position,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!list.candidates.iter().any(|p| is_pair(p, &e.id, &f.id)), "{:?}", list.candidates);

    // The guard uses the same thresholds: a lead named like F finds F, no longer E.
    let captured = commands
        .capture_lead(lead("杭州星辰电子有限公司", "王建国", "", "wjg@example.com"))
        .await
        .unwrap()
        .into_inner();
    let ids: Vec<&str> = captured.suspected_duplicates.iter().map(|s| s.customer_id.as_str()).collect();
    assert_eq!(ids, [f.id.as_str()], "{:?}", captured.suspected_duplicates);
}
