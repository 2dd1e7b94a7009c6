//! The projection runner wiring: one sled database at `<data-dir>/projections` (never the
//! log's), one runner per read model, and the shared helpers of the query services
//! (freshness waits, the access hook).

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use crm_eventlog::SledEventStore;
use crm_projection_audit::AuditProjector;
use crm_projection_customers::CustomersProjector;
use crm_projection_duplicates::DuplicatesProjector;
use crm_projection_funnel::{Calendar, FunnelProjector};
use crm_projection_runtime::{spawn, ProjectionDb, ProjectionHandle, Reader};
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
    /// The funnel's working-day calendar.
    pub calendar: Calendar,
}

impl Projections {
    /// Opens `<data_dir>/projections` and starts every projector on the current runtime.
    pub async fn start(data_dir: &Path, store: SledEventStore) -> anyhow::Result<Self> {
        let dir = data_dir.join("projections");
        let db = {
            let path = dir.clone();
            tokio::task::spawn_blocking(move || ProjectionDb::open(&path))
                .await?
                .with_context(|| format!("opening the projections in {}", dir.display()))?
        };
        let calendar = Calendar::china_2026();
        let customers = spawn(&db, store.clone(), CustomersProjector).context("starting the customers projection")?;
        let funnel = spawn(&db, store.clone(), FunnelProjector::new(calendar.clone()))
            .context("starting the funnel projection")?;
        let audit = spawn(&db, store.clone(), AuditProjector).context("starting the audit projection")?;
        // The Matcher is not persisted: rebuilt in memory from the stored customer records.
        let duplicates_projector = {
            let db = db.clone();
            tokio::task::spawn_blocking(move || DuplicatesProjector::open(&db))
                .await?
                .context("loading the duplicates projection's customers")?
        };
        let duplicates =
            spawn(&db, store.clone(), duplicates_projector.clone()).context("starting the duplicates projection")?;
        Ok(Projections { store, db, customers, funnel, audit, duplicates, duplicates_projector, calendar })
    }

    pub fn all(&self) -> [&ProjectionHandle; 4] {
        [&self.customers, &self.funnel, &self.audit, &self.duplicates]
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

/// The reader a query answers from, after waiting (within the call's deadline, less a small
/// margin to answer in) until the read model has applied `min_position`.
pub(crate) async fn fresh_reader<T>(
    handle: &ProjectionHandle,
    request: &tonic::Request<T>,
    min_position: u64,
) -> Result<Reader, Status> {
    if min_position > handle.position() {
        let wait = deadline(request).saturating_sub(Duration::from_millis(20));
        handle.wait_for(min_position, wait).await.map_err(crate::status::from_projection)?;
    }
    Ok(handle.reader())
}

/// Runs a read-model query off the async workers.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> crm_projection_runtime::Result<T> + Send + 'static,
) -> Result<T, Status> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Status::internal(format!("query task failed: {e}")))?
        .map_err(crate::status::from_projection)
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
        }
        return;
    };
    let scope = principal.scope();
    let masks = principal.masks();
    let visible = |owner: &str, fields: &std::collections::HashMap<String, String>| {
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
