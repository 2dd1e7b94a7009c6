//! The projection runner wiring: one sled database per read model under
//! `<data-dir>/projections` (never the log's), one runner per read model, and the shared
//! helpers of the query services (freshness waits, the access hook).

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use crm_eventlog::SledEventStore;
use crm_projection_audit::AuditProjector;
use crm_projection_customers::CustomersProjector;
use crm_projection_duplicates::DuplicatesProjector;
use crm_projection_funnel::{Calendar, FunnelProjector};
use crm_projection_health::HealthProjector;
use crm_projection_reminders::RemindersProjector;
use crm_projection_runtime::{spawn, spawn_with, ProjectionDb, ProjectionHandle, Reader, SpawnOptions};
use crm_projection_workload::WorkloadProjector;
use tonic::Status;

/// Waiting for `min_position` is bounded by the call's deadline, or this when it has none.
const DEFAULT_WAIT: Duration = Duration::from_secs(10);

/// Every running read model.
#[derive(Clone)]
pub struct Projections {
    pub store: SledEventStore,
    pub db: ProjectionDb,
    pub customers: ProjectionHandle,
    pub funnel: ProjectionHandle,
    pub audit: ProjectionHandle,
    /// Suspected duplicate pairs and merge reports.
    pub duplicates: ProjectionHandle,
    /// The projector `duplicates` runs (its Matchers serve the commands' duplicate guard).
    pub duplicates_projector: DuplicatesProjector,
    /// Open leads, unclaimed leads and first-response times per salesperson.
    pub workload: ProjectionHandle,
    /// Follow-up reminders, escalations and "my day".
    pub reminders: ProjectionHandle,
    /// Completeness and flagged records (data health).
    pub health: ProjectionHandle,
    /// The funnel's working-day calendar.
    pub calendar: Calendar,
    /// Days past the follow-up reminder before it escalates (server configuration, not a
    /// rule: `Rules` is bincode inside `RulesChanged` and inside every projection checkpoint,
    /// so a new rule field needs a `RulesChanged` v2 with an upcaster).
    pub escalation_after_days: u32,
}

impl Projections {
    /// Opens `<data_dir>/projections` and starts every projector on the current runtime.
    pub async fn start(data_dir: &Path, store: SledEventStore, config: &crate::Config) -> anyhow::Result<Self> {
        let escalation_after_days = config.escalation_after_days;
        let live = SpawnOptions { live_interval: config.projection_live_interval };
        let dir = data_dir.join("projections");
        let db = {
            let (path, cache) = (dir.clone(), config.read_model_cache_bytes);
            tokio::task::spawn_blocking(move || ProjectionDb::open_with_cache(&path, cache))
                .await?
                .with_context(|| format!("opening the projections in {}", dir.display()))?
        };
        db.set_build_cache_bytes(config.build_cache_bytes);
        let calendar = Calendar::china_2026();
        let customers =
            spawn_with(&db, store.clone(), CustomersProjector, live).context("starting the customers projection")?;
        let funnel = spawn_with(&db, store.clone(), FunnelProjector::new(calendar.clone()), live)
            .context("starting the funnel projection")?;
        let audit = spawn_with(&db, store.clone(), AuditProjector, live).context("starting the audit projection")?;
        // The Matcher is not persisted: rebuilt in memory from the stored customer records.
        let duplicates_projector = {
            let db = db.clone();
            tokio::task::spawn_blocking(move || DuplicatesProjector::open(&db))
                .await?
                .context("loading the duplicates projection's customers")?
        };
        // The duplicate guard waits for this one to reach the head before every guarded
        // command: it steps at every head change.
        let duplicates =
            spawn(&db, store.clone(), duplicates_projector.clone()).context("starting the duplicates projection")?;
        let workload =
            spawn_with(&db, store.clone(), WorkloadProjector, live).context("starting the workload projection")?;
        let reminders =
            spawn_with(&db, store.clone(), RemindersProjector, live).context("starting the reminders projection")?;
        let health = spawn_with(&db, store.clone(), HealthProjector, live).context("starting the health projection")?;
        Ok(Projections {
            store,
            db,
            customers,
            funnel,
            audit,
            duplicates,
            duplicates_projector,
            workload,
            reminders,
            health,
            calendar,
            escalation_after_days,
        })
    }

    pub fn all(&self) -> [&ProjectionHandle; 7] {
        [&self.customers, &self.funnel, &self.audit, &self.duplicates, &self.workload, &self.reminders, &self.health]
    }

    pub fn by_name(&self, name: &str) -> Result<&ProjectionHandle, Status> {
        self.all().into_iter().find(|h| h.name() == name).ok_or_else(|| {
            crate::status::from_projection(crm_projection_runtime::Error::UnknownProjection(name.into()))
        })
    }

    /// Stops every runner after its current batch and flushes (before the log closes).
    pub async fn stop(&self) {
        for handle in self.all() {
            handle.stop().await;
        }
        let db = self.db.clone();
        let _ = tokio::task::spawn_blocking(move || db.flush()).await;
    }
}

/// The call's deadline from its `grpc-timeout` header.
fn deadline<T>(request: &tonic::Request<T>) -> Duration {
    let Some(value) = request.metadata().get("grpc-timeout").and_then(|v| v.to_str().ok()) else {
        return DEFAULT_WAIT;
    };
    let (digits, unit) = value.split_at(value.len().saturating_sub(1));
    let Ok(n) = digits.parse::<u64>() else { return DEFAULT_WAIT };
    match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => DEFAULT_WAIT,
    }
}

/// The reader a query answers from, after waiting (within the call's deadline, less a
/// margin to answer in) until the read model has applied `min_position`. The margin is a
/// fifth of the deadline, between 20 and 200 ms: a fixed 20 ms was too little on a loaded
/// machine, where the client's own timer then fired first and the caller got a bare
/// "Timeout expired" instead of the server's DeadlineExceeded naming both positions.
pub(crate) async fn fresh_reader<T>(
    handle: &ProjectionHandle,
    request: &tonic::Request<T>,
    min_position: u64,
) -> Result<Reader, Status> {
    if min_position > handle.position() {
        let deadline = deadline(request);
        let margin = (deadline / 5).clamp(Duration::from_millis(20), Duration::from_millis(200));
        let wait = deadline.saturating_sub(margin);
        handle.wait_for(min_position, wait).await.map_err(crate::status::from_projection)?;
    }
    Ok(handle.reader())
}

/// Runs a read-model query off the async workers: for queries whose work has no small bound
/// (a customer's whole history read from the log, a scan of every duplicate pair).
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> crm_projection_runtime::Result<T> + Send + 'static,
) -> Result<T, Status> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Status::internal(format!("query task failed: {e}")))?
        .map_err(crate::status::from_projection)
}

/// Runs a read-model query on the calling async worker: for queries bounded by a page size
/// or a scan limit (a customer by id, a page of customers, the funnel's buckets), which read
/// sled's in-memory pages for well under a millisecond. The hand-off to the blocking pool and
/// back cost more than that: 13 to 28% of the server's CPU per call under the query bench
/// (docs/PERFORMANCE.md, "Queries").
pub(crate) fn bounded<T>(f: impl FnOnce() -> crm_projection_runtime::Result<T>) -> Result<T, Status> {
    f().map_err(crate::status::from_projection)
}

/// What a query is about to return, for [`restrict`].
pub(crate) enum Answer<'a> {
    /// Customers to filter by record scope and mask by field.
    Customers(&'a mut Vec<crm_proto::v1::CustomerView>),
    /// A funnel request to narrow to the principal's scope (own records, own region).
    Funnel(&'a mut crm_proto::v1::GetFunnelRequest),
    /// Audit operations and histories.
    Operations(&'a mut Vec<crm_proto::v1::AuditOperation>),
    /// A customer as of a point in time.
    Snapshot(&'a mut Option<crm_proto::v1::CustomerSnapshot>),
    /// Workload rows, one per salesperson: kept when the salesperson is the caller (own) or
    /// in the caller's region.
    Workload(&'a mut Vec<crm_proto::v1::SalespersonWorkload>),
    /// Unclaimed leads, by assignee and lead region.
    UnclaimedLeads(&'a mut Vec<crm_proto::v1::UnclaimedLead>),
    /// Reminder, escalation and follow-up items: customers, filtered and masked.
    Reminders(&'a mut Vec<crm_proto::v1::ReminderItem>),
    /// A "my day" request to narrow to the caller (sales reps get their own day).
    MyDay(&'a mut crm_proto::v1::GetMyDayRequest),
    /// Leads `holder` holds, by holder and lead region.
    HeldLeads(&'a str, &'a mut Vec<crm_proto::v1::HeldLead>),
    /// A data-health request to narrow to the caller's scope.
    Health(&'a mut crm_proto::v1::GetDataHealthRequest),
}

/// **The one place in the query path where a principal's record scope and field masks
/// apply.** Every Query and Audit handler passes its answer (or, for aggregates, its request)
/// through here before responding: records outside the principal's scope are dropped
/// (own records for sales reps, their region for regional managers), and phone numbers,
/// identity numbers and contract amounts are masked as the role requires (docs/SECURITY.md).
pub(crate) fn restrict(extensions: &http::Extensions, answer: Answer<'_>) {
    use crate::auth::{mask_fields, Scope};
    // Every call passes the auth layer; a request without a principal sees nothing.
    let Some(principal) = extensions.get::<crate::auth::Principal>() else {
        match answer {
            Answer::Customers(customers) => customers.clear(),
            Answer::Operations(operations) => operations.clear(),
            Answer::Snapshot(snapshot) => *snapshot = None,
            Answer::Funnel(request) => request.owner_id = "-".into(),
            Answer::Workload(rows) => rows.clear(),
            Answer::UnclaimedLeads(leads) => leads.clear(),
            Answer::Reminders(items) => items.clear(),
            Answer::MyDay(request) => request.user_id = uuid::Uuid::nil().to_string(),
            Answer::HeldLeads(_, leads) => leads.clear(),
            Answer::Health(request) => {
                request.region = String::new();
                request.owner_id = uuid::Uuid::nil().to_string();
            }
        }
        return;
    };
    let scope = principal.scope();
    let masks = principal.masks();
    let visible = |owner: &str, fields: &std::collections::BTreeMap<String, String>| {
        scope.admits(Some(owner).filter(|o| !o.is_empty()), fields.get("region").map(String::as_str))
    };
    match answer {
        Answer::Customers(customers) => {
            customers.retain(|c| visible(&c.owner_id, &c.fields));
            for c in customers.iter_mut() {
                mask_fields(c.fields.iter_mut(), masks);
            }
        }
        Answer::Funnel(request) => match scope {
            Scope::Own(user) => request.owner_id = user,
            Scope::Region(region) => request.region = region,
            Scope::All => {}
        },
        Answer::Operations(operations) => {
            if scope != Scope::All {
                // Only roles that see everything hold the audit permission; anything else
                // reaching here sees no operation log.
                operations.clear();
            }
        }
        Answer::Workload(rows) => rows.retain(|r| scope.admits(Some(&r.user_id), Some(&r.region))),
        Answer::UnclaimedLeads(leads) => leads.retain(|l| scope.admits(Some(&l.assignee_id), Some(&l.region))),
        Answer::Reminders(items) => {
            items.retain(|i| visible(&i.owner_id, &i.fields));
            for i in items.iter_mut() {
                mask_fields(i.fields.iter_mut(), masks);
            }
        }
        Answer::MyDay(request) => {
            if let Scope::Own(user) = scope {
                request.user_id = user;
            }
        }
        Answer::HeldLeads(holder, leads) => leads.retain(|l| scope.admits(Some(holder), Some(&l.region))),
        Answer::Health(request) => match scope {
            Scope::Own(user) => {
                request.owner_id = user;
                request.region = String::new();
            }
            Scope::Region(region) => {
                request.region = region;
                request.owner_id = String::new();
            }
            Scope::All => {}
        },
        Answer::Snapshot(snapshot) => {
            if let Some(s) = snapshot {
                if !visible(&s.owner_id, &s.fields) {
                    *snapshot = None;
                } else {
                    mask_fields(s.fields.iter_mut(), masks);
                }
            }
        }
    }
}
