//! `crm.v1.Subscriptions`: persistent subscriptions (consumer groups with a server-side
//! checkpoint), like EventStoreDB's.
//!
//! - Storage: a sled database of its own in `<data-dir>/subscriptions` (never the event
//!   log's), one tree with prefixed keys: `g/<group>` settings (JSON), `c/<group>` the
//!   checkpoint (u64 big-endian), `p/<group>\0<position>` a parked event (JSON). Parking and
//!   the checkpoint it allows are written in one atomic batch. Checkpoints are not flushed on
//!   every ack (sled flushes every 500 ms and on shutdown): a crash can only move a
//!   checkpoint back, which redelivers, never skips.
//! - Delivery: each `Subscribe` call is one consumer; a task reads the log from the group's
//!   read cursor, keeps what matches the filters, and sends batches while fewer than
//!   `max_in_flight` events are unacknowledged. Nacked events go back to a ready queue and are
//!   delivered before new ones; after `max_retries` attempts they are parked. An event neither
//!   acked nor nacked within the group's `ack_timeout` is taken back the same way (a failed
//!   attempt, parked after `max_retries`); each delivery loop checks the earliest deadline.
//!   When a consumer disconnects, what it had in flight is delivered again to the next
//!   consumer (not a failed attempt).
//! - Bookkeeping without I/O lives in [`group`].

mod group;

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crm_eventlog::EventStore;
use crm_proto::v1 as pb;
use tokio::sync::{mpsc, watch, Mutex, Notify};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::services::eventlog::{to_proto, PayloadRenderer};
use crate::status;
use group::{Group, NackAction, Parked, Settings};

const DEFAULT_MAX_RETRIES: u32 = 5;
const DEFAULT_MAX_IN_FLIGHT: usize = 10_000;
const DEFAULT_BATCH: usize = 500;
const MAX_BATCH: usize = 5_000;
/// Longest configurable ack timeout (a day).
const MAX_ACK_TIMEOUT_MS: u32 = 86_400_000;

struct GroupHandle {
    state: Mutex<Group>,
    /// Woken on nack, replay, consumer departure and acks that free room.
    wake: Notify,
}

/// The persistent-subscription registry over one store.
pub struct Subscriptions<S> {
    store: S,
    head: watch::Receiver<u64>,
    db: sled::Db,
    tree: sled::Tree,
    groups: std::sync::Mutex<HashMap<String, Arc<GroupHandle>>>,
    next_consumer: AtomicU64,
    render: Option<PayloadRenderer>,
}

fn key(prefix: &str, group: &str) -> Vec<u8> {
    format!("{prefix}/{group}").into_bytes()
}

fn parked_key(group: &str, position: u64) -> Vec<u8> {
    let mut k = format!("p/{group}\u{0}").into_bytes();
    k.extend_from_slice(&position.to_be_bytes());
    k
}

fn storage(e: impl std::fmt::Display) -> Status {
    Status::internal(format!("subscription storage: {e}"))
}

impl<S: EventStore + Clone> Subscriptions<S> {
    /// Opens (or creates) `<data_dir>/subscriptions` and loads every group.
    pub fn open(
        data_dir: &Path,
        store: S,
        head: watch::Receiver<u64>,
        render: Option<PayloadRenderer>,
    ) -> anyhow::Result<Self> {
        let db = sled::Config::new().path(data_dir.join("subscriptions")).open()?;
        let tree = db.open_tree("subscriptions")?;
        let mut groups = HashMap::new();
        for item in tree.scan_prefix(b"g/") {
            let (k, v) = item?;
            let name = String::from_utf8_lossy(&k[2..]).into_owned();
            let settings: Settings = serde_json::from_slice(&v)?;
            let checkpoint = match tree.get(key("c", &name))? {
                Some(b) if b.len() == 8 => u64::from_be_bytes(b.as_ref().try_into().expect("8 bytes")),
                _ => settings.start_from.saturating_sub(1),
            };
            groups.insert(
                name,
                Arc::new(GroupHandle { state: Mutex::new(Group::new(settings, checkpoint)), wake: Notify::new() }),
            );
        }
        Ok(Subscriptions {
            store,
            head,
            db,
            tree,
            groups: std::sync::Mutex::new(groups),
            next_consumer: AtomicU64::new(1),
            render,
        })
    }

    /// Flushes checkpoints and parked events (on shutdown).
    pub fn flush(&self) {
        if let Err(err) = self.db.flush() {
            tracing::warn!(%err, "flushing subscription checkpoints failed");
        }
    }

    fn group(&self, name: &str) -> Result<Arc<GroupHandle>, Status> {
        self.groups
            .lock()
            .expect("groups")
            .get(name)
            .cloned()
            .ok_or_else(|| Status::not_found(format!("no subscription group `{name}`")))
    }

    /// Persists the checkpoint and the parked changes of one settle, atomically.
    fn persist(&self, group: &str, checkpoint: u64, settled: &group::Settled) -> Result<(), Status> {
        let mut batch = sled::Batch::default();
        batch.insert(key("c", group), &checkpoint.to_be_bytes());
        for p in &settled.parked {
            batch.insert(parked_key(group, p.position), serde_json::to_vec(p).map_err(storage)?);
        }
        for pos in &settled.unparked {
            batch.remove(parked_key(group, *pos));
        }
        self.tree.apply_batch(batch).map_err(storage)
    }

    fn parked(&self, group: &str, limit: usize) -> Result<Vec<Parked>, Status> {
        let mut prefix = format!("p/{group}").into_bytes();
        prefix.push(0);
        let mut out = Vec::new();
        for item in self.tree.scan_prefix(prefix).take(limit) {
            let (_, v) = item.map_err(storage)?;
            out.push(serde_json::from_slice(&v).map_err(storage)?);
        }
        Ok(out)
    }

    /// The delivery loop of one consumer.
    async fn deliver(
        self: Arc<Self>,
        handle: Arc<GroupHandle>,
        consumer: u64,
        batch: usize,
        json: bool,
        tx: mpsc::Sender<Result<pb::SubscriptionBatch, Status>>,
    ) {
        let mut head = self.head.clone();
        loop {
            // Registered before looking, so a wake between the look and the wait is not lost.
            let woken = handle.wake.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            let (next, read_to, room, deadline) = {
                let mut g = handle.state.lock().await;
                let next = match self.expire(&handle, &mut g) {
                    Ok(()) => self.next_batch(&mut g, consumer, batch, json).await,
                    Err(status) => Err(status),
                };
                (next, g.read_to, g.room(), g.next_deadline())
            };
            match next {
                Err(status) => {
                    let _ = tx.send(Err(status)).await;
                    break;
                }
                Ok(Some(b)) => {
                    if tx.send(Ok(b)).await.is_err() {
                        break;
                    }
                }
                // Nothing to send: wait for new events (only if there is room for them), an
                // ack that frees room, a nack, a replay, a departing consumer or the earliest
                // ack timeout.
                Ok(None) => {
                    let timeout = async {
                        match deadline {
                            Some(d) => tokio::time::sleep_until(d.into()).await,
                            None => std::future::pending().await,
                        }
                    };
                    tokio::select! {
                        changed = head.wait_for(|h| *h > read_to), if room > 0 => if changed.is_err() { break },
                        () = &mut woken => {}
                        () = timeout => {}
                        () = tx.closed() => break,
                    }
                }
            }
        }
        let mut g = handle.state.lock().await;
        g.consumer_gone(consumer);
        g.consumers = g.consumers.saturating_sub(1);
        drop(g);
        handle.wake.notify_waiters();
    }

    /// Takes back the events whose ack timeout has passed (persisting any it parks) and wakes
    /// the group's consumers when there is something to deliver again.
    fn expire(&self, handle: &GroupHandle, g: &mut Group) -> Result<(), Status> {
        let settled = g.expire(Instant::now());
        if settled.parked.is_empty() && settled.expired == 0 {
            return Ok(());
        }
        if !settled.parked.is_empty() {
            self.persist(&g.settings.group, g.checkpoint(), &settled)?;
            tracing::warn!(group = %g.settings.group, parked = settled.parked.len(), "subscription events parked after ack timeouts");
        }
        tracing::debug!(group = %g.settings.group, expired = settled.expired, "subscription ack timeouts");
        handle.wake.notify_waiters();
        Ok(())
    }

    async fn next_batch(
        &self,
        g: &mut Group,
        consumer: u64,
        batch: usize,
        json: bool,
    ) -> Result<Option<pb::SubscriptionBatch>, Status> {
        let render = if json { self.render.as_ref() } else { None };
        let mut events = Vec::new();
        let mut attempts = Vec::new();
        let now = Instant::now();
        for (pos, attempt) in g.take_ready(consumer, batch, now) {
            if let Some(e) = self.store.read_all(pos, 1).await.map_err(status::from_eventlog)?.pop() {
                events.push(to_proto(e, render));
                attempts.push(attempt);
            }
        }
        while events.len() < batch && g.room() > 0 {
            let read = self.store.read_all(g.read_to + 1, batch.max(256)).await.map_err(status::from_eventlog)?;
            if read.is_empty() {
                break;
            }
            for e in read {
                if events.len() >= batch || g.room() == 0 {
                    break;
                }
                if g.examine(consumer, e.position, &e.event_type, &e.stream, now) {
                    events.push(to_proto(e, render));
                    attempts.push(1);
                }
            }
        }
        if events.is_empty() {
            return Ok(None);
        }
        Ok(Some(pb::SubscriptionBatch { events, attempts, checkpoint: g.checkpoint() }))
    }
}

fn settings_from_proto(s: pb::GroupSettings) -> Result<Settings, Status> {
    let group = s.group.trim().to_owned();
    if group.is_empty() || group.len() > 128 || group.contains(['/', '\u{0}']) {
        return Err(status::invalid("settings.group", "1 to 128 characters, no `/`"));
    }
    Ok(Settings {
        group,
        event_types: s.event_types.into_iter().map(|t| t.trim().to_owned()).filter(|t| !t.is_empty()).collect(),
        stream_prefixes: s.stream_prefixes.into_iter().filter(|p| !p.is_empty()).collect(),
        max_retries: if s.max_retries == 0 { DEFAULT_MAX_RETRIES } else { s.max_retries },
        start_from: s.start_from.max(1),
        max_in_flight: if s.max_in_flight == 0 { DEFAULT_MAX_IN_FLIGHT } else { s.max_in_flight as usize },
        ack_timeout_ms: match s.ack_timeout_ms {
            0 => group::DEFAULT_ACK_TIMEOUT_MS,
            ms if ms > MAX_ACK_TIMEOUT_MS => {
                return Err(status::invalid(
                    "settings.ack_timeout_ms",
                    format!("at most {MAX_ACK_TIMEOUT_MS} (a day); 0 = the default 30000"),
                ))
            }
            ms => u64::from(ms),
        },
    })
}

fn settings_to_proto(s: &Settings) -> pb::GroupSettings {
    pb::GroupSettings {
        group: s.group.clone(),
        event_types: s.event_types.clone(),
        stream_prefixes: s.stream_prefixes.clone(),
        max_retries: s.max_retries,
        start_from: s.start_from,
        max_in_flight: s.max_in_flight as u32,
        ack_timeout_ms: s.ack_timeout_ms.min(u64::from(u32::MAX)) as u32,
    }
}

/// The tonic service.
pub struct SubscriptionService<S> {
    inner: Arc<Subscriptions<S>>,
}

impl<S> SubscriptionService<S> {
    pub fn new(inner: Arc<Subscriptions<S>>) -> Self {
        SubscriptionService { inner }
    }
}

#[tonic::async_trait]
impl<S: EventStore + Clone> pb::subscriptions_server::Subscriptions for SubscriptionService<S> {
    async fn create_group(
        &self,
        request: Request<pb::CreateGroupRequest>,
    ) -> Result<Response<pb::CreateGroupResponse>, Status> {
        let settings = settings_from_proto(request.into_inner().settings.unwrap_or_default())?;
        let s = &self.inner;
        let mut groups = s.groups.lock().expect("groups");
        if let Some(existing) = groups.get(&settings.group) {
            let same = existing.state.try_lock().map(|g| g.settings == settings).unwrap_or(false);
            if same {
                return Ok(Response::new(pb::CreateGroupResponse {}));
            }
            return Err(Status::already_exists(format!(
                "subscription group `{}` exists with other settings",
                settings.group
            )));
        }
        let mut batch = sled::Batch::default();
        batch.insert(key("g", &settings.group), serde_json::to_vec(&settings).map_err(storage)?);
        batch.insert(key("c", &settings.group), &(settings.start_from - 1).to_be_bytes());
        s.tree.apply_batch(batch).map_err(storage)?;
        s.db.flush().map_err(storage)?;
        tracing::info!(group = %settings.group, "subscription group created");
        let checkpoint = settings.start_from - 1;
        groups.insert(
            settings.group.clone(),
            Arc::new(GroupHandle { state: Mutex::new(Group::new(settings, checkpoint)), wake: Notify::new() }),
        );
        Ok(Response::new(pb::CreateGroupResponse {}))
    }

    async fn list_groups(&self, _: Request<pb::ListGroupsRequest>) -> Result<Response<pb::ListGroupsResponse>, Status> {
        let handles: Vec<Arc<GroupHandle>> = self.inner.groups.lock().expect("groups").values().cloned().collect();
        let mut groups = Vec::new();
        for h in handles {
            let g = h.state.lock().await;
            let parked = self.inner.parked(&g.settings.group, usize::MAX)?.len() as u64;
            groups.push(pb::GroupStatus {
                settings: Some(settings_to_proto(&g.settings)),
                checkpoint: g.checkpoint(),
                in_flight: g.in_flight() as u64,
                parked,
                consumers: g.consumers,
            });
        }
        groups.sort_by(|a, b| a.settings.as_ref().map(|s| &s.group).cmp(&b.settings.as_ref().map(|s| &s.group)));
        Ok(Response::new(pb::ListGroupsResponse { groups }))
    }

    type SubscribeStream = ReceiverStream<Result<pb::SubscriptionBatch, Status>>;

    async fn subscribe(
        &self,
        request: Request<pb::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let r = request.into_inner();
        let handle = self.inner.group(&r.group)?;
        let batch = if r.batch_size == 0 { DEFAULT_BATCH } else { (r.batch_size as usize).min(MAX_BATCH) };
        let consumer = self.inner.next_consumer.fetch_add(1, Ordering::Relaxed);
        handle.state.lock().await.consumers += 1;
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(self.inner.clone().deliver(handle, consumer, batch, r.render_json, tx));
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn ack(&self, request: Request<pb::AckRequest>) -> Result<Response<pb::AckResponse>, Status> {
        let r = request.into_inner();
        let handle = self.inner.group(&r.group)?;
        let mut g = handle.state.lock().await;
        let before = g.checkpoint();
        let room_before = g.room();
        let settled = g.ack(&r.positions);
        let checkpoint = g.checkpoint();
        if checkpoint != before || !settled.unparked.is_empty() {
            self.inner.persist(&r.group, checkpoint, &settled)?;
        }
        let freed = room_before == 0 && g.room() > 0;
        drop(g);
        if freed {
            handle.wake.notify_waiters();
        }
        Ok(Response::new(pb::AckResponse { checkpoint }))
    }

    async fn nack(&self, request: Request<pb::NackRequest>) -> Result<Response<pb::NackResponse>, Status> {
        let r = request.into_inner();
        let action = match pb::NackAction::try_from(r.action) {
            Ok(pb::NackAction::Unspecified | pb::NackAction::Retry) => NackAction::Retry,
            Ok(pb::NackAction::Park) => NackAction::Park,
            Ok(pb::NackAction::Skip) => NackAction::Skip,
            Err(_) => return Err(status::invalid("action", "unknown nack action")),
        };
        let handle = self.inner.group(&r.group)?;
        let mut g = handle.state.lock().await;
        let settled = g.nack(&r.positions, action, r.reason.trim());
        let checkpoint = g.checkpoint();
        self.inner.persist(&r.group, checkpoint, &settled)?;
        drop(g);
        handle.wake.notify_waiters();
        if !settled.parked.is_empty() {
            tracing::warn!(group = %r.group, parked = settled.parked.len(), "subscription events parked");
        }
        Ok(Response::new(pb::NackResponse { checkpoint, parked: settled.parked.iter().map(|p| p.position).collect() }))
    }

    async fn list_parked(
        &self,
        request: Request<pb::ListParkedRequest>,
    ) -> Result<Response<pb::ListParkedResponse>, Status> {
        let r = request.into_inner();
        self.inner.group(&r.group)?;
        let limit = if r.limit == 0 { 1000 } else { r.limit as usize };
        let events = self
            .inner
            .parked(&r.group, limit)?
            .into_iter()
            .map(|p| pb::ParkedEvent {
                position: p.position,
                event_type: p.event_type,
                stream: p.stream,
                attempts: p.attempts,
                reason: p.reason,
            })
            .collect();
        Ok(Response::new(pb::ListParkedResponse { events }))
    }

    async fn replay_parked(
        &self,
        request: Request<pb::ReplayParkedRequest>,
    ) -> Result<Response<pb::ReplayParkedResponse>, Status> {
        let r = request.into_inner();
        let handle = self.inner.group(&r.group)?;
        let parked = self.inner.parked(&r.group, usize::MAX)?;
        let replayed = handle.state.lock().await.replay(parked) as u64;
        handle.wake.notify_waiters();
        Ok(Response::new(pb::ReplayParkedResponse { replayed }))
    }
}
