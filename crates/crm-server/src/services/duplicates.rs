//! `crm.v1.Duplicates`: suspected duplicate pairs from the duplicates read model, their
//! dismissal (a `DuplicateDismissed` event through the command engine), and merge reports.

use std::sync::Arc;

use crm_domain::CustomerId;
use crm_eventlog::SledEventStore;
use crm_projection_duplicates::{Candidate, MergeReport, Status as PairStatus, StatusFilter};
use crm_proto::v1 as pb;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use super::projections::{blocking, fresh_reader, restrict, Answer, Projections};
use super::query::{parse_id, timestamp, view};
use crate::commands::{Cmd, Engine, RunOptions};

const DEFAULT_PAGE: u32 = 100;
const MAX_PAGE: u32 = 1000;

pub struct DuplicatesService {
    projections: Projections,
    engine: Arc<Engine<SledEventStore>>,
}

impl DuplicatesService {
    pub fn new(projections: Projections) -> Self {
        let engine = Arc::new(Engine::new(projections.store.clone()));
        DuplicatesService { projections, engine }
    }
}

fn status_filter(status: i32) -> Result<StatusFilter, Status> {
    match pb::CandidateStatus::try_from(status) {
        Ok(pb::CandidateStatus::Unspecified) => Ok(StatusFilter::Any),
        Ok(pb::CandidateStatus::Open) => Ok(StatusFilter::Open),
        Ok(pb::CandidateStatus::Dismissed) => Ok(StatusFilter::Dismissed),
        Ok(pb::CandidateStatus::Merged) => Ok(StatusFilter::Merged),
        Err(_) => Err(crate::status::invalid("status", "unknown candidate status")),
    }
}

fn candidate(c: Candidate) -> pb::DuplicateCandidate {
    let (status, status_reason, status_actor, status_position, survivor_id) = match c.status {
        PairStatus::Open => (pb::CandidateStatus::Open, String::new(), String::new(), 0, String::new()),
        PairStatus::Dismissed { reason, actor, position } => {
            (pb::CandidateStatus::Dismissed, reason, actor, position, String::new())
        }
        PairStatus::Merged { survivor, actor, position } => {
            (pb::CandidateStatus::Merged, String::new(), actor, position, survivor.to_string())
        }
    };
    pb::DuplicateCandidate {
        customer_a_id: c.a.to_string(),
        customer_b_id: c.b.to_string(),
        customer_a_fields: Default::default(),
        customer_b_fields: Default::default(),
        weight: c.weight,
        score: c.score,
        decision: c.decision,
        explanation: c.explanation,
        contributions: c
            .contributions
            .into_iter()
            .map(|f| pb::FieldContribution { field: f.field, outcome: f.outcome, weight: f.weight, reason: f.reason })
            .collect(),
        status: status as i32,
        status_reason,
        status_actor,
        status_position,
        survivor_id,
        found_position: c.found_position,
        updated_position: c.updated_position,
    }
}

fn report(r: MergeReport) -> pb::MergeReport {
    pb::MergeReport {
        survivor_id: r.survivor.to_string(),
        absorbed_id: r.absorbed.to_string(),
        reason: r.reason,
        reason_text: r.reason_text,
        actor: r.actor,
        merged_at: Some(timestamp(r.merged_at_micros)),
        position: r.position,
        field_changes: r.field_changes,
        weight: r.weight,
        score: r.score,
        decision: r.decision,
        explanation: r.explanation,
        status_before: r.status_before,
        unmerged_position: r.unmerged_position.unwrap_or(0),
        unmerged_by: r.unmerged_by.unwrap_or_default(),
        unmerge_reason: r.unmerge_reason.unwrap_or_default(),
    }
}

/// The customers of each pair as the customers read model shows them, through [`restrict`]:
/// a pair with a customer the caller may not see is left out, the fields are masked.
fn with_customers(
    extensions: &http::Extensions,
    pairs: Vec<pb::DuplicateCandidate>,
    customers: &crm_projection_runtime::Reader,
) -> Result<Vec<pb::DuplicateCandidate>, Status> {
    let mut out = Vec::with_capacity(pairs.len());
    for mut pair in pairs {
        let mut views = Vec::new();
        for id in [&pair.customer_a_id, &pair.customer_b_id] {
            let id = Uuid::parse_str(id).map_err(|e| Status::internal(e.to_string()))?;
            if let Some(v) = crm_projection_customers::get(customers, id).map_err(crate::status::from_projection)? {
                views.push(view(v));
            }
        }
        restrict(extensions, Answer::Customers(&mut views));
        if views.len() != 2 {
            continue;
        }
        let b = views.pop().expect("two views");
        let a = views.pop().expect("two views");
        pair.customer_a_fields = a.fields;
        pair.customer_b_fields = b.fields;
        out.push(pair);
    }
    Ok(out)
}

#[tonic::async_trait]
impl pb::duplicates_server::Duplicates for DuplicatesService {
    async fn list_duplicate_candidates(
        &self,
        request: Request<pb::ListDuplicateCandidatesRequest>,
    ) -> Result<Response<pb::ListDuplicateCandidatesResponse>, Status> {
        let r = *request.get_ref();
        let status = status_filter(r.status)?;
        let reader = fresh_reader(&self.projections.duplicates, &request, r.min_position).await?;
        let customers = fresh_reader(&self.projections.customers, &request, reader.position).await?;
        let position = reader.position;
        let limit = if r.page_size == 0 { DEFAULT_PAGE } else { r.page_size.min(MAX_PAGE) } as usize;
        let min_weight = r.has_min_weight.then_some(r.min_weight);
        let page =
            blocking(move || crm_projection_duplicates::list(&reader, status, min_weight, r.offset as usize, limit))
                .await?;
        let pairs = page.candidates.into_iter().map(candidate).collect();
        let extensions = request.extensions().clone();
        let candidates = tokio::task::spawn_blocking(move || with_customers(&extensions, pairs, &customers))
            .await
            .map_err(|e| Status::internal(format!("query task failed: {e}")))??;
        Ok(Response::new(pb::ListDuplicateCandidatesResponse {
            position,
            candidates,
            total: page.total as u64,
            next_offset: page.next_offset.map_or(0, |o| o as u32),
        }))
    }

    async fn dismiss_candidate(
        &self,
        request: Request<pb::DismissCandidateRequest>,
    ) -> Result<Response<pb::DismissCandidateResponse>, Status> {
        let actor = crate::auth::principal(&request)?.user_id.clone();
        let r = request.into_inner();
        let customer = CustomerId(parse_id("customer_a_id", &r.customer_a_id)?);
        let other = CustomerId(parse_id("customer_b_id", &r.customer_b_id)?);
        let opts = RunOptions {
            expected_version: None,
            key: None,
            actor,
            correlation_id: Uuid::now_v7(),
            causation_id: None,
            source: "grpc".to_owned(),
        };
        let outcome = self.engine.execute(&opts, Cmd::DismissDuplicate { customer, other, reason: r.reason }).await?;
        let event_id = outcome.events.first().map(|(_, _, id)| id.to_string()).unwrap_or_default();
        Ok(Response::new(pb::DismissCandidateResponse { position: outcome.position, stream: outcome.stream, event_id }))
    }

    async fn get_merge_report(
        &self,
        request: Request<pb::GetMergeReportRequest>,
    ) -> Result<Response<pb::GetMergeReportResponse>, Status> {
        let r = request.get_ref().clone();
        let customer = match r.customer_id.trim() {
            "" => None,
            text => Some(parse_id("customer_id", text)?),
        };
        let reader = fresh_reader(&self.projections.duplicates, &request, r.min_position).await?;
        let customers = fresh_reader(&self.projections.customers, &request, reader.position).await?;
        let position = reader.position;
        let reports = blocking(move || crm_projection_duplicates::merge_reports(&reader, customer.as_ref())).await?;
        // A report names customers: the caller must be allowed to see both.
        let mut merges = Vec::with_capacity(reports.len());
        for rep in reports {
            let mut views = Vec::new();
            for id in [rep.survivor, rep.absorbed] {
                if let Some(v) =
                    crm_projection_customers::get(&customers, id).map_err(crate::status::from_projection)?
                {
                    views.push(view(v));
                }
            }
            restrict(request.extensions(), Answer::Customers(&mut views));
            if views.len() == 2 {
                merges.push(report(rep));
            }
        }
        Ok(Response::new(pb::GetMergeReportResponse { position, merges }))
    }
}
