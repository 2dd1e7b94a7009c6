//! `crm.v1.Admin`: projection status, rebuild with progress, verification.

use std::pin::Pin;
use std::time::Duration;

use crm_projection_runtime::{ProjectionHandle, ProjectionStatus, RebuildProgress, RunState};
use crm_proto::v1 as pb;
use futures::Stream;
use tonic::{Request, Response, Status};

use super::projections::Projections;

/// How often a rebuild streams its progress.
const PROGRESS_EVERY: Duration = Duration::from_millis(500);

pub struct AdminService {
    projections: Projections,
}

impl AdminService {
    pub fn new(projections: Projections) -> Self {
        AdminService { projections }
    }
}

fn progress(name: &str, p: &RebuildProgress) -> pb::RebuildProjectionProgress {
    pb::RebuildProjectionProgress {
        name: name.to_owned(),
        purpose: p.purpose.to_owned(),
        done: p.done,
        total: p.total,
        events_per_second: p.events_per_second,
        eta_seconds: p.eta_seconds,
        elapsed_seconds: p.elapsed_seconds,
        finished: false,
        swapped_at_position: 0,
        reason: p.reason.clone(),
    }
}

fn now_micros() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_micros() as i64)
}

/// Status plus lag: events behind the head, and the age of the oldest unapplied event.
fn info(store: &crm_eventlog::SledEventStore, s: ProjectionStatus) -> pb::ProjectionInfo {
    let head = store.committed_head();
    let lag_events = head.saturating_sub(s.position);
    let lag_seconds = if lag_events == 0 {
        0.0
    } else {
        store
            .read_all_blocking(s.position + 1, 1)
            .ok()
            .and_then(|e| e.first().map(|e| (now_micros() - e.recorded_at_micros).max(0) as f64 / 1e6))
            .unwrap_or(0.0)
    };
    let state = match s.state {
        RunState::Live => pb::ProjectionState::Live,
        RunState::Rebuilding => pb::ProjectionState::Rebuilding,
        RunState::Failed => pb::ProjectionState::Failed,
    };
    pb::ProjectionInfo {
        name: s.name.clone(),
        version: s.version,
        fingerprint: format!("{:016x}", s.fingerprint),
        rules_version: s.rules_version,
        state: state as i32,
        position: s.position,
        head,
        lag_events,
        lag_seconds,
        failed_position: s.failure.as_ref().map_or(0, |f| f.position),
        failure: s.failure.as_ref().map(|f| f.detail.clone()).unwrap_or_default(),
        shadow: s.shadow.as_ref().map(|p| progress(&s.name, p)),
        rebuilds_completed: s.rebuilds_completed,
        frozen: s.frozen,
    }
}

type ProgressStream = Pin<Box<dyn Stream<Item = Result<pb::RebuildProjectionProgress, Status>> + Send>>;

#[tonic::async_trait]
impl pb::admin_server::Admin for AdminService {
    async fn list_projections(
        &self,
        _request: Request<pb::ListProjectionsRequest>,
    ) -> Result<Response<pb::ListProjectionsResponse>, Status> {
        let store = self.projections.store.clone();
        let statuses: Vec<ProjectionStatus> = self.projections.all().iter().map(|h| h.status()).collect();
        let projections = tokio::task::spawn_blocking(move || statuses.into_iter().map(|s| info(&store, s)).collect())
            .await
            .map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(pb::ListProjectionsResponse { projections }))
    }

    type RebuildProjectionStream = ProgressStream;

    async fn rebuild_projection(
        &self,
        request: Request<pb::RebuildProjectionRequest>,
    ) -> Result<Response<Self::RebuildProjectionStream>, Status> {
        let handle: ProjectionHandle = self.projections.by_name(&request.get_ref().name)?.clone();
        let mut done = handle.start_rebuild().map_err(crate::status::from_projection)?;
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        tokio::spawn(async move {
            let name = handle.name();
            let mut tick = tokio::time::interval(PROGRESS_EVERY);
            loop {
                tokio::select! {
                    finished = &mut done => {
                        let last = match finished {
                            Ok(Ok(summary)) => {
                                let mut p = handle.status().shadow.map(|p| progress(name, &p)).unwrap_or_default();
                                p.name = name.to_owned();
                                p.done = summary.position;
                                p.total = summary.position;
                                p.elapsed_seconds = summary.seconds;
                                p.events_per_second = if summary.seconds > 0.0 { summary.events as f64 / summary.seconds } else { 0.0 };
                                p.eta_seconds = 0.0;
                                p.finished = true;
                                p.swapped_at_position = summary.position;
                                Ok(p)
                            }
                            Ok(Err(e)) => Err(crate::status::from_projection(e)),
                            Err(_) => Err(Status::unavailable("the projection stopped")),
                        };
                        let _ = tx.send(last).await;
                        return;
                    }
                    _ = tick.tick() => {
                        if let Some(p) = handle.status().shadow.filter(|p| p.purpose == "rebuild") {
                            if tx.send(Ok(progress(name, &p))).await.is_err() {
                                // The client went away; the rebuild carries on.
                                return;
                            }
                        }
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }

    async fn verify_projection(
        &self,
        request: Request<pb::VerifyProjectionRequest>,
    ) -> Result<Response<pb::VerifyProjectionResponse>, Status> {
        let handle = self.projections.by_name(&request.get_ref().name)?;
        let report = handle.verify().await.map_err(crate::status::from_projection)?;
        Ok(Response::new(pb::VerifyProjectionResponse {
            name: handle.name().to_owned(),
            position: report.position,
            keys_compared: report.keys_compared,
            total_differences: report.total_differences,
            differences: report
                .differences
                .into_iter()
                .map(|d| pb::ProjectionDifference { key: d.key, expected: d.expected, actual: d.actual })
                .collect(),
        }))
    }
}
