//! `crm.v1.Audit`: the operation log, customer histories and as-of states.

use crm_domain::Event;
use crm_projection_audit::{AsOf, Operation, OperationFilter};
use crm_proto::v1 as pb;
use tonic::{Request, Response, Status};

use super::projections::{blocking, fresh_reader, restrict, Answer, Projections};
use super::query::{micros, parse_id, timestamp};

const DEFAULT_PAGE: u32 = 100;
const MAX_PAGE: u32 = 1000;

pub struct AuditService {
    projections: Projections,
}

impl AuditService {
    pub fn new(projections: Projections) -> Self {
        AuditService { projections }
    }
}

fn operation(op: Operation) -> pb::AuditOperation {
    pb::AuditOperation {
        position: op.position,
        stream: op.stream,
        event_type: op.event_type,
        actor: op.actor,
        source: op.source,
        correlation_id: op.correlation_id.to_string(),
        recorded_at: Some(timestamp(op.recorded_at_micros)),
    }
}

fn non_empty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

#[tonic::async_trait]
impl pb::audit_server::Audit for AuditService {
    async fn verify_log(&self, _: Request<pb::VerifyLogRequest>) -> Result<Response<pb::VerifyLogResponse>, Status> {
        let store = self.projections.store.clone();
        let report = tokio::task::spawn_blocking(move || store.verify_log(|_, _| {}))
            .await
            .map_err(|e| Status::internal(format!("verification task failed: {e}")))?
            .map_err(crate::status::from_eventlog)?;
        let (first_broken_position, detail) = report.first_broken.clone().unwrap_or_default();
        Ok(Response::new(pb::VerifyLogResponse {
            verified: report.verified,
            head: report.head,
            intact: report.first_broken.is_none(),
            first_broken_position,
            detail,
        }))
    }

    async fn list_operations(
        &self,
        request: Request<pb::ListOperationsRequest>,
    ) -> Result<Response<pb::ListOperationsResponse>, Status> {
        let reader = fresh_reader(&self.projections.audit, &request, request.get_ref().min_position).await?;
        let r = request.get_ref().clone();
        let filter = OperationFilter {
            actor: non_empty(r.actor),
            event_type: non_empty(r.event_type),
            stream: non_empty(r.stream),
            from_micros: r.from.as_ref().map(micros),
            to_micros: r.to.as_ref().map(micros),
        };
        let limit = if r.page_size == 0 { DEFAULT_PAGE } else { r.page_size.min(MAX_PAGE) } as usize;
        let position = reader.position;
        let store = self.projections.store.clone();
        let page =
            blocking(move || crm_projection_audit::operations(&store, &reader, &filter, r.after_position, limit))
                .await?;
        let mut operations: Vec<_> = page.operations.into_iter().map(operation).collect();
        restrict(request.extensions(), Answer::Operations(&mut operations));
        Ok(Response::new(pb::ListOperationsResponse {
            position,
            operations,
            next_after_position: page.next_after_position.unwrap_or(0),
        }))
    }

    async fn get_customer_history(
        &self,
        request: Request<pb::GetCustomerHistoryRequest>,
    ) -> Result<Response<pb::GetCustomerHistoryResponse>, Status> {
        let reader = fresh_reader(&self.projections.audit, &request, request.get_ref().min_position).await?;
        let id = parse_id("customer_id", &request.get_ref().customer_id)?;
        let position = reader.position;
        let store = self.projections.store.clone();
        let events = blocking(move || crm_projection_audit::customer_history(&store, &reader, id)).await?;
        let mut operations = Vec::with_capacity(events.len());
        let mut payloads = std::collections::HashMap::new();
        for e in events {
            let json = match Event::decode(&e.event_type, e.schema_version, &e.payload) {
                Ok(event) => serde_json::to_string(&event).unwrap_or_default(),
                Err(err) => return Err(Status::data_loss(format!("position {}: {err}", e.position))),
            };
            payloads.insert(e.position, json);
            operations.push(pb::AuditOperation {
                position: e.position,
                stream: e.stream,
                event_type: e.event_type,
                actor: e.metadata.actor,
                source: e.metadata.source,
                correlation_id: e.metadata.correlation_id.to_string(),
                recorded_at: Some(timestamp(e.recorded_at_micros)),
            });
        }
        restrict(request.extensions(), Answer::Operations(&mut operations));
        let entries = operations
            .into_iter()
            .map(|op| {
                let payload_json = payloads.remove(&op.position).unwrap_or_default();
                pb::CustomerHistoryEntry { operation: Some(op), payload_json }
            })
            .collect();
        Ok(Response::new(pb::GetCustomerHistoryResponse { position, entries }))
    }

    async fn get_customer_as_of(
        &self,
        request: Request<pb::GetCustomerAsOfRequest>,
    ) -> Result<Response<pb::GetCustomerAsOfResponse>, Status> {
        let r = request.get_ref();
        let id = parse_id("customer_id", &r.customer_id)?;
        let as_of = match &r.as_of {
            Some(pb::get_customer_as_of_request::AsOf::Position(p)) => AsOf::Position(*p),
            Some(pb::get_customer_as_of_request::AsOf::Time(t)) => AsOf::Time(micros(t)),
            None => return Err(crate::status::invalid("as_of", "a position or a time is required")),
        };
        let store = self.projections.store.clone();
        let found = blocking(move || crm_projection_audit::customer_as_of(&store, id, as_of)).await?;
        let mut snapshot = found.customer.map(|c| pb::CustomerSnapshot {
            id: id.to_string(),
            fields: c.fields,
            owner_id: c.owner.map(|o| o.0.to_string()).unwrap_or_default(),
            from_lead_id: c.from_lead.map(|l| l.0.to_string()).unwrap_or_default(),
            absorbed_into: c.absorbed_into.map(|a| a.0.to_string()).unwrap_or_default(),
            merged: c.merges.keys().map(|m| m.0.to_string()).collect(),
            contacts: c.contacts.len() as u32,
            activities: c.activities.len() as u32,
            won_deals: c.won_deals,
        });
        restrict(request.extensions(), Answer::Snapshot(&mut snapshot));
        Ok(Response::new(pb::GetCustomerAsOfResponse {
            exists: snapshot.is_some(),
            customer: snapshot,
            position: found.position,
            recorded_at: (found.position > 0).then(|| timestamp(found.recorded_at_micros)),
        }))
    }
}
