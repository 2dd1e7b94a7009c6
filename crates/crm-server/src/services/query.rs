//! `crm.v1.Query`: the customers and funnel read models.

use chrono::{NaiveDate, Utc};
use crm_projection_customers::{CustomerView, Filter, SearchKind};
use crm_projection_funnel::{FunnelQuery, StageReport};
use crm_proto::v1 as pb;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use super::projections::{blocking, fresh_reader, restrict, Answer, Projections};
use crate::status::invalid;

const DEFAULT_PAGE: u32 = 50;
const MAX_PAGE: u32 = 500;

pub struct QueryService {
    projections: Projections,
}

impl QueryService {
    pub fn new(projections: Projections) -> Self {
        QueryService { projections }
    }
}

pub(crate) fn timestamp(micros: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: micros.div_euclid(1_000_000),
        nanos: (micros.rem_euclid(1_000_000) * 1000) as i32,
    }
}

pub(crate) fn micros(t: &prost_types::Timestamp) -> i64 {
    t.seconds * 1_000_000 + i64::from(t.nanos) / 1000
}

/// A UUID, bare or as a stream name (`customer-<uuid>`, `user-<uuid>`).
pub(crate) fn parse_id(field: &str, text: &str) -> Result<Uuid, Status> {
    let bare = match text.split_once('-') {
        Some((prefix, rest)) if prefix.chars().any(|c| !c.is_ascii_hexdigit()) => rest,
        _ => text,
    };
    Uuid::parse_str(bare).map_err(|_| invalid(field, "must be a UUID"))
}

fn optional_id(field: &str, text: &str) -> Result<Option<Uuid>, Status> {
    if text.is_empty() {
        Ok(None)
    } else {
        parse_id(field, text).map(Some)
    }
}

fn non_empty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

fn page_size(n: u32) -> usize {
    (if n == 0 { DEFAULT_PAGE } else { n.min(MAX_PAGE) }) as usize
}

pub(crate) fn view(v: CustomerView) -> pb::CustomerView {
    pb::CustomerView {
        id: v.id.to_string(),
        fields: v.fields.into_iter().collect(),
        owner_id: v.owner.map(|o| o.to_string()).unwrap_or_default(),
        stage: v.stage.unwrap_or_default(),
        tags: v.tags,
        created_at: Some(timestamp(v.created_at_micros)),
        updated_at: Some(timestamp(v.updated_at_micros)),
        updated_position: v.updated_position,
        from_lead_id: v.from_lead.map(|l| l.to_string()).unwrap_or_default(),
        absorbed_into: v.absorbed_into.map(|a| a.to_string()).unwrap_or_default(),
        merged: v.merged.iter().map(Uuid::to_string).collect(),
        contacts: v.contacts,
        activities: v.activities,
        last_activity_at: v.last_activity_micros.map(timestamp),
        won_deals: v.won_deals,
    }
}

fn stage(s: StageReport) -> pb::FunnelStage {
    pb::FunnelStage {
        stage: s.stage,
        entered: s.entered,
        exited: s.exited,
        conversion_to_next: s.conversion_to_next,
        avg_dwell_working_days: s.avg_dwell_working_days,
        median_dwell_working_days: s.median_dwell_working_days,
        overdue: s.overdue,
        root_causes: s.root_causes.into_iter().collect(),
        moved_to: s.moved_to.into_iter().collect(),
    }
}

/// Today in China Standard Time (UTC+8), the default "today" of overdue counts.
fn today_in_china() -> NaiveDate {
    (Utc::now() + chrono::Duration::hours(8)).date_naive()
}

fn valid_month(field: &str, m: &str) -> Result<Option<String>, Status> {
    if m.is_empty() {
        return Ok(None);
    }
    NaiveDate::parse_from_str(&format!("{m}-01"), "%Y-%m-%d").map_err(|_| invalid(field, "must be YYYY-MM"))?;
    Ok(Some(m.to_owned()))
}

#[tonic::async_trait]
impl pb::query_server::Query for QueryService {
    async fn get_customer(
        &self,
        request: Request<pb::GetCustomerRequest>,
    ) -> Result<Response<pb::GetCustomerResponse>, Status> {
        let reader = fresh_reader(&self.projections.customers, &request, request.get_ref().min_position).await?;
        let id = parse_id("customer_id", &request.get_ref().customer_id)?;
        let position = reader.position;
        let found = blocking(move || crm_projection_customers::get(&reader, id)).await?;
        let mut customers: Vec<_> = found.into_iter().map(view).collect();
        restrict(request.extensions(), Answer::Customers(&mut customers));
        let customer = customers.pop().ok_or_else(|| Status::not_found(format!("customer {id} not found")))?;
        Ok(Response::new(pb::GetCustomerResponse { position, customer: Some(customer) }))
    }

    async fn list_customers(
        &self,
        request: Request<pb::ListCustomersRequest>,
    ) -> Result<Response<pb::ListCustomersResponse>, Status> {
        let reader = fresh_reader(&self.projections.customers, &request, request.get_ref().min_position).await?;
        let r = request.get_ref().clone();
        let filter = Filter {
            owner: optional_id("owner_id", &r.owner_id)?,
            region: non_empty(r.region),
            stage: non_empty(r.stage),
            industry: non_empty(r.industry),
            tags: r.tags.into_iter().filter(|t| !t.is_empty()).collect(),
            created_from_micros: r.created_from.as_ref().map(micros),
            created_to_micros: r.created_to.as_ref().map(micros),
        };
        let (cursor, limit, position) = (non_empty(r.cursor), page_size(r.page_size), reader.position);
        let page = blocking(move || crm_projection_customers::list(&reader, &filter, cursor.as_deref(), limit)).await?;
        let mut customers: Vec<_> = page.customers.into_iter().map(view).collect();
        restrict(request.extensions(), Answer::Customers(&mut customers));
        Ok(Response::new(pb::ListCustomersResponse {
            position,
            customers,
            next_cursor: page.next_cursor.unwrap_or_default(),
        }))
    }

    async fn search_customers(
        &self,
        request: Request<pb::SearchCustomersRequest>,
    ) -> Result<Response<pb::ListCustomersResponse>, Status> {
        let reader = fresh_reader(&self.projections.customers, &request, request.get_ref().min_position).await?;
        let r = request.get_ref().clone();
        let kind = match pb::SearchField::try_from(r.field) {
            Ok(pb::SearchField::Name) => SearchKind::Name,
            Ok(pb::SearchField::Phone) => SearchKind::Phone,
            _ => return Err(invalid("field", "must be SEARCH_FIELD_NAME or SEARCH_FIELD_PHONE")),
        };
        if r.prefix.trim().is_empty() {
            return Err(invalid("prefix", "must not be empty"));
        }
        let (cursor, limit, position) = (non_empty(r.cursor), page_size(r.page_size), reader.position);
        let page =
            blocking(move || crm_projection_customers::search(&reader, kind, &r.prefix, cursor.as_deref(), limit))
                .await?;
        let mut customers: Vec<_> = page.customers.into_iter().map(view).collect();
        restrict(request.extensions(), Answer::Customers(&mut customers));
        Ok(Response::new(pb::ListCustomersResponse {
            position,
            customers,
            next_cursor: page.next_cursor.unwrap_or_default(),
        }))
    }

    async fn get_funnel(
        &self,
        request: Request<pb::GetFunnelRequest>,
    ) -> Result<Response<pb::GetFunnelResponse>, Status> {
        let reader = fresh_reader(&self.projections.funnel, &request, request.get_ref().min_position).await?;
        let mut r = request.get_ref().clone();
        restrict(request.extensions(), Answer::Funnel(&mut r));
        let today = if r.today.is_empty() {
            today_in_china()
        } else {
            NaiveDate::parse_from_str(&r.today, "%Y-%m-%d").map_err(|_| invalid("today", "must be YYYY-MM-DD"))?
        };
        // The stages and end states of the rules the serving build was made with.
        let rules = self.projections.funnel.rules();
        let mut query = FunnelQuery::all(&rules, today);
        query.region = non_empty(r.region);
        query.owner = optional_id("owner_id", &r.owner_id)?;
        query.from_month = valid_month("from_month", &r.from_month)?;
        query.to_month = valid_month("to_month", &r.to_month)?;
        let position = reader.position;
        let report = blocking(move || crm_projection_funnel::funnel(&reader, &query)).await?;
        Ok(Response::new(pb::GetFunnelResponse {
            position,
            rules_version: rules.version,
            stages: report.stages.into_iter().map(stage).collect(),
            won: report.won,
            won_unverified: report.won_unverified,
            lost: report.lost,
        }))
    }
}
