//! crm.v1.Duplicates through the real binary: a pair written differently is listed with an
//! explanation, a dismissal is recorded and changes the status, a merge is reported with its
//! reason, actor and score, and merge then unmerge restores both customers' read models.

use std::collections::HashMap;

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
    let fields: HashMap<String, String> = fields.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
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
