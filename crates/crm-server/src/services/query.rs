//! `crm.v1.Query`: the customers, funnel, workload, reminders and data-health read models.

use chrono::{DateTime, NaiveDate, Utc};
use crm_projection_customers::{CustomerView, Filter, SearchKind};
use crm_projection_funnel::{FunnelQuery, ReportCache, StageReport};
use crm_proto::v1 as pb;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use super::projections::{blocking, bounded, fresh_reader, restrict, Answer, Projections};
use crate::status::invalid;

const DEFAULT_PAGE: u32 = 50;
const MAX_PAGE: u32 = 500;

pub struct QueryService {
    projections: Projections,
    /// Funnel reports of the serving build at its current position.
    funnel_reports: ReportCache,
}

impl QueryService {
    pub fn new(projections: Projections) -> Self {
        QueryService { projections, funnel_reports: ReportCache::default() }
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
        fields: v.fields,
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

fn stage(s: &StageReport) -> pb::FunnelStage {
    let counts = |m: &std::collections::BTreeMap<String, u64>| m.iter().map(|(k, v)| (k.clone(), *v)).collect();
    pb::FunnelStage {
        stage: s.stage.clone(),
        entered: s.entered,
        exited: s.exited,
        conversion_to_next: s.conversion_to_next,
        avg_dwell_working_days: s.avg_dwell_working_days,
        median_dwell_working_days: s.median_dwell_working_days,
        overdue: s.overdue,
        root_causes: counts(&s.root_causes),
        moved_to: counts(&s.moved_to),
    }
}

/// Today in China Standard Time (UTC+8), the default "today" of overdue counts.
fn today_in_china() -> NaiveDate {
    china_date(Utc::now())
}

/// The date of an instant in China Standard Time (UTC+8, no daylight saving).
fn china_date(at: DateTime<Utc>) -> NaiveDate {
    (at + chrono::Duration::hours(8)).date_naive()
}

/// The request's `now`, or the server's clock when absent.
fn now_or_clock(field: &str, t: Option<&prost_types::Timestamp>) -> Result<DateTime<Utc>, Status> {
    match t {
        None => Ok(Utc::now()),
        Some(t) => u32::try_from(t.nanos)
            .ok()
            .and_then(|nanos| DateTime::from_timestamp(t.seconds, nanos))
            .ok_or_else(|| invalid(field, "must be a valid timestamp")),
    }
}

fn list_limit(n: u32) -> usize {
    (if n == 0 { 100 } else { n.min(1000) }) as usize
}

fn instant(at: DateTime<Utc>) -> prost_types::Timestamp {
    timestamp(at.timestamp_micros())
}

fn reminder_item(r: crm_projection_reminders::Reminder, managers: Vec<String>) -> pb::ReminderItem {
    let s = r.state;
    let fields = [("name", s.name), ("phone", s.phone), ("region", s.region)]
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (k.to_owned(), v)))
        .collect();
    pb::ReminderItem {
        customer_id: r.customer.to_string(),
        owner_id: s.owner.map(|o| o.to_string()).unwrap_or_default(),
        fields,
        last_activity_at: s.last_activity.map(instant),
        next_follow_up: s.next_follow_up.map(|d| d.to_string()).unwrap_or_default(),
        manager_ids: managers,
    }
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
        let found = bounded(|| crm_projection_customers::get(&reader, id))?;
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
        let page = bounded(|| crm_projection_customers::list(&reader, &filter, cursor.as_deref(), limit))?;
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
        let page = bounded(|| crm_projection_customers::search(&reader, kind, &r.prefix, cursor.as_deref(), limit))?;
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
        let report = bounded(|| self.funnel_reports.funnel(&reader, &query))?;
        Ok(Response::new(pb::GetFunnelResponse {
            position,
            rules_version: rules.version,
            stages: report.stages.iter().map(stage).collect(),
            won: report.won,
            won_unverified: report.won_unverified,
            lost: report.lost,
        }))
    }

    async fn get_workload(
        &self,
        request: Request<pb::GetWorkloadRequest>,
    ) -> Result<Response<pb::GetWorkloadResponse>, Status> {
        let reader = fresh_reader(&self.projections.workload, &request, request.get_ref().min_position).await?;
        let now = now_or_clock("now", request.get_ref().now.as_ref())?;
        let (store, position) = (self.projections.store.clone(), reader.position);
        let (hours, rows) = blocking(move || {
            let hours = crm_projection_runtime::current_rules(&store)?.assignment.unclaimed_alert_hours;
            let q = crm_projection_workload::WorkloadQuery { now, unclaimed_alert_hours: hours };
            Ok((hours, crm_projection_workload::workload(&reader, &q)?))
        })
        .await?;
        let mut salespeople: Vec<_> = rows
            .into_iter()
            .map(|r| {
                let info = r.info.unwrap_or(crm_projection_workload::UserInfo {
                    name: String::new(),
                    role: crm_domain::Role::SalesRep,
                    region: None,
                    active: false,
                });
                pb::SalespersonWorkload {
                    user_id: r.user.to_string(),
                    name: info.name,
                    region: info.region.unwrap_or_default(),
                    active: info.active,
                    open_leads: r.open_leads,
                    unclaimed: r.unclaimed,
                    unclaimed_over_limit: r.unclaimed_over_limit,
                    responses: r.responses,
                    median_first_response_minutes: r.median_first_response_minutes,
                }
            })
            .collect();
        restrict(request.extensions(), Answer::Workload(&mut salespeople));
        Ok(Response::new(pb::GetWorkloadResponse { position, unclaimed_alert_hours: hours, salespeople }))
    }

    async fn list_unclaimed_leads(
        &self,
        request: Request<pb::ListUnclaimedLeadsRequest>,
    ) -> Result<Response<pb::ListUnclaimedLeadsResponse>, Status> {
        let reader = fresh_reader(&self.projections.workload, &request, request.get_ref().min_position).await?;
        let now = now_or_clock("now", request.get_ref().now.as_ref())?;
        let limit = list_limit(request.get_ref().limit);
        let (store, position) = (self.projections.store.clone(), reader.position);
        let (hours, found) = blocking(move || {
            let hours = crm_projection_runtime::current_rules(&store)?.assignment.unclaimed_alert_hours;
            let q = crm_projection_workload::WorkloadQuery { now, unclaimed_alert_hours: hours };
            Ok((hours, crm_projection_workload::unclaimed(&reader, &q, limit)?))
        })
        .await?;
        let mut leads: Vec<_> = found
            .into_iter()
            .map(|l| pb::UnclaimedLead {
                lead_id: l.lead.to_string(),
                assignee_id: l.assignee.to_string(),
                assigned_at: Some(instant(l.assigned_at)),
                region: l.region.unwrap_or_default(),
                company: l.company.unwrap_or_default(),
                hours_unclaimed: u64::try_from((now - l.assigned_at).num_hours()).unwrap_or(0),
            })
            .collect();
        restrict(request.extensions(), Answer::UnclaimedLeads(&mut leads));
        Ok(Response::new(pb::ListUnclaimedLeadsResponse { position, unclaimed_alert_hours: hours, leads }))
    }

    async fn get_reminders(
        &self,
        request: Request<pb::GetRemindersRequest>,
    ) -> Result<Response<pb::GetRemindersResponse>, Status> {
        let reader = fresh_reader(&self.projections.reminders, &request, request.get_ref().min_position).await?;
        let now = now_or_clock("now", request.get_ref().now.as_ref())?;
        let limit = list_limit(request.get_ref().limit);
        let (store, position) = (self.projections.store.clone(), reader.position);
        let escalation_after_days = self.projections.escalation_after_days;
        let (q, due, escalated) = blocking(move || {
            let q = crm_projection_reminders::ReminderQuery {
                now,
                follow_up_reminder_days: crm_projection_runtime::current_rules(&store)?.follow_up_reminder_days,
                escalation_after_days,
            };
            let due = crm_projection_reminders::reminders(&reader, &q, limit)?;
            let escalated = crm_projection_reminders::escalations(&reader, &q, limit)?;
            Ok((q, due, escalated))
        })
        .await?;
        let mut reminders: Vec<_> = due.into_iter().map(|r| reminder_item(r, Vec::new())).collect();
        let mut escalations: Vec<_> = escalated
            .into_iter()
            .map(|e| reminder_item(e.reminder, e.managers.iter().map(|(id, _)| id.to_string()).collect()))
            .collect();
        restrict(request.extensions(), Answer::Reminders(&mut reminders));
        restrict(request.extensions(), Answer::Reminders(&mut escalations));
        Ok(Response::new(pb::GetRemindersResponse {
            position,
            follow_up_reminder_days: q.follow_up_reminder_days,
            escalation_after_days: q.escalation_after_days,
            reminders,
            escalations,
        }))
    }

    async fn get_my_day(
        &self,
        request: Request<pb::GetMyDayRequest>,
    ) -> Result<Response<pb::GetMyDayResponse>, Status> {
        let reader = fresh_reader(&self.projections.reminders, &request, request.get_ref().min_position).await?;
        let mut r = request.get_ref().clone();
        if r.user_id.is_empty() {
            if let Some(principal) = request.extensions().get::<crate::auth::Principal>() {
                r.user_id.clone_from(&principal.user_id);
            }
        }
        restrict(request.extensions(), Answer::MyDay(&mut r));
        let user = parse_id("user_id", &r.user_id)?;
        let now = now_or_clock("now", r.now.as_ref())?;
        let today = if r.today.is_empty() {
            china_date(now)
        } else {
            NaiveDate::parse_from_str(&r.today, "%Y-%m-%d").map_err(|_| invalid("today", "must be YYYY-MM-DD"))?
        };
        let position = reader.position;
        let q = crm_projection_reminders::MyDayQuery { user, now, today };
        let day = blocking(move || crm_projection_reminders::my_day(&reader, &q)).await?;
        let mut overdue: Vec<_> = day.overdue.into_iter().map(|r| reminder_item(r, Vec::new())).collect();
        let mut todays: Vec<_> = day.today.into_iter().map(|r| reminder_item(r, Vec::new())).collect();
        let mut leads: Vec<_> = day
            .leads
            .into_iter()
            .map(|l| pb::HeldLead {
                lead_id: l.lead.to_string(),
                company: l.state.company.unwrap_or_default(),
                region: l.state.region.unwrap_or_default(),
                held_since: l.state.since.map(instant),
            })
            .collect();
        let user_id = user.to_string();
        restrict(request.extensions(), Answer::Reminders(&mut overdue));
        restrict(request.extensions(), Answer::Reminders(&mut todays));
        restrict(request.extensions(), Answer::HeldLeads(&user_id, &mut leads));
        Ok(Response::new(pb::GetMyDayResponse {
            position,
            user_id,
            today: today.to_string(),
            overdue_follow_ups: overdue,
            todays_follow_ups: todays,
            leads_without_contact: leads,
        }))
    }

    async fn get_data_health(
        &self,
        request: Request<pb::GetDataHealthRequest>,
    ) -> Result<Response<pb::GetDataHealthResponse>, Status> {
        let min_position = request.get_ref().min_position;
        let reader = fresh_reader(&self.projections.health, &request, min_position).await?;
        let duplicates = fresh_reader(&self.projections.duplicates, &request, min_position).await?;
        let mut r = request.get_ref().clone();
        if !r.region.is_empty() && !r.owner_id.is_empty() {
            return Err(invalid("owner_id", "give a region or an owner, not both"));
        }
        restrict(request.extensions(), Answer::Health(&mut r));
        let scope = match (non_empty(r.region), optional_id("owner_id", &r.owner_id)?) {
            (_, Some(owner)) => crm_projection_health::HealthScope::Owner(owner),
            (Some(region), None) => crm_projection_health::HealthScope::Region(region),
            (None, None) => crm_projection_health::HealthScope::All,
        };
        let (position, duplicates_position) = (reader.position, duplicates.position);
        let report = blocking(move || {
            let pairs = crm_projection_duplicates::open_pairs(&duplicates)?;
            crm_projection_health::health(&reader, &scope, &pairs)
        })
        .await?;
        Ok(Response::new(pb::GetDataHealthResponse {
            position,
            live_customers: report.live,
            completeness: report
                .filled
                .iter()
                .map(|(field, filled)| pb::FieldCompleteness {
                    field: field.clone(),
                    filled: *filled,
                    share: report.completeness(*filled),
                })
                .collect(),
            customer_flags: report.customer_flags.clone().into_iter().collect(),
            leads: report.leads,
            lead_flags: report.lead_flags.clone().into_iter().collect(),
            duplicate_customers: report.duplicate_customers,
            duplicate_rate: report.duplicate_rate(),
            duplicates_position,
        }))
    }
}
