//! `crm.v1.EventLog`: read-only access to the log.

use std::sync::Arc;

use crm_eventlog::{Direction, EventStore};
use crm_proto::v1 as pb;
use futures::StreamExt;
use tonic::{Request, Response, Status};

use crate::status::{from_eventlog, invalid};

/// Default and maximum number of events per read.
const DEFAULT_LIMIT: u32 = 100;
const MAX_LIMIT: u32 = 1000;

/// Renders a stored payload as JSON for readers; the domain layer plugs in here.
pub type PayloadRenderer = Arc<dyn Fn(&crm_eventlog::RecordedEvent) -> Option<String> + Send + Sync>;

/// The `crm.v1.EventLog` service over any [`EventStore`].
pub struct EventLogService<S> {
    store: S,
    render: Option<PayloadRenderer>,
}

impl<S: EventStore + Clone> EventLogService<S> {
    pub fn new(store: S, render: Option<PayloadRenderer>) -> Self {
        EventLogService { store, render }
    }
}

pub(crate) fn to_proto(e: crm_eventlog::RecordedEvent, render: Option<&PayloadRenderer>) -> pb::RecordedEvent {
    let payload_json = render.and_then(|r| r(&e)).unwrap_or_default();
    let micros = e.recorded_at_micros;
    pb::RecordedEvent {
        position: e.position,
        stream: e.stream,
        version: e.version,
        event_id: e.id.to_string(),
        event_type: e.event_type,
        schema_version: u32::from(e.schema_version),
        recorded_at: Some(prost_types::Timestamp {
            seconds: micros.div_euclid(1_000_000),
            nanos: (micros.rem_euclid(1_000_000) * 1000) as i32,
        }),
        metadata: Some(pb::EventMetadata {
            actor: e.metadata.actor,
            correlation_id: e.metadata.correlation_id.to_string(),
            causation_id: e.metadata.causation_id.map(|c| c.to_string()).unwrap_or_default(),
            source: e.metadata.source,
        }),
        payload: e.payload,
        payload_json,
    }
}

fn limit(requested: u32) -> Result<usize, Status> {
    match requested {
        0 => Ok(DEFAULT_LIMIT as usize),
        n if n > MAX_LIMIT => Err(invalid("limit", format!("must be at most {MAX_LIMIT}, got {n}"))),
        n => Ok(n as usize),
    }
}

#[tonic::async_trait]
impl<S: EventStore + Clone> pb::event_log_server::EventLog for EventLogService<S> {
    async fn read_stream(
        &self,
        request: Request<pb::ReadStreamRequest>,
    ) -> Result<Response<pb::ReadStreamResponse>, Status> {
        let r = request.into_inner();
        if r.stream.is_empty() {
            return Err(invalid("stream", "must not be empty"));
        }
        let direction = match pb::ReadDirection::try_from(r.direction) {
            Ok(pb::ReadDirection::Backwards) => Direction::Backwards,
            Ok(_) => Direction::Forwards,
            Err(_) => return Err(invalid("direction", format!("unknown value {}", r.direction))),
        };
        let limit = limit(r.limit)?;
        let head = self.store.head().await.map_err(from_eventlog)?;
        let events =
            self.store.read_stream(&r.stream, r.from_version, direction, limit).await.map_err(from_eventlog)?;
        let stream_version = self.store.stream_version(&r.stream).await.map_err(from_eventlog)?;
        Ok(Response::new(pb::ReadStreamResponse {
            events: events.into_iter().map(|e| to_proto(e, self.render.as_ref())).collect(),
            stream_version,
            head,
        }))
    }

    async fn read_all(&self, request: Request<pb::ReadAllRequest>) -> Result<Response<pb::ReadAllResponse>, Status> {
        let r = request.into_inner();
        let limit = limit(r.limit)?;
        let from = r.from_position.max(1);
        let events = self.store.read_all(from, limit).await.map_err(from_eventlog)?;
        let head = self.store.head().await.map_err(from_eventlog)?;
        let next_position = events.last().map_or(from, |e| e.position + 1);
        Ok(Response::new(pb::ReadAllResponse {
            events: events.into_iter().map(|e| to_proto(e, self.render.as_ref())).collect(),
            head,
            next_position,
        }))
    }

    type SubscribeAllStream = futures::stream::BoxStream<'static, Result<pb::RecordedEvent, Status>>;

    async fn subscribe_all(
        &self,
        request: Request<pb::SubscribeAllRequest>,
    ) -> Result<Response<Self::SubscribeAllStream>, Status> {
        let from = request.into_inner().from_position;
        let render = self.render.clone();
        let stream = self
            .store
            .subscribe_all(from)
            .map(move |r| r.map(|e| to_proto(e, render.as_ref())).map_err(from_eventlog))
            .boxed();
        Ok(Response::new(stream))
    }

    async fn get_head(&self, _: Request<pb::GetHeadRequest>) -> Result<Response<pb::GetHeadResponse>, Status> {
        Ok(Response::new(pb::GetHeadResponse { head: self.store.head().await.map_err(from_eventlog)? }))
    }
}
