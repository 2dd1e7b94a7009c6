//! The intake's in-memory state: a fold of the log (customers with per-field provenance,
//! form mappings and health, source configurations, breakers and statistics, the
//! quarantine), kept current by a follower task over `subscribe_all`.
//!
//! A sync batch folds its own events as soon as its append is acknowledged (it holds them
//! decoded already), instead of waiting for the follower to read and decode them again.
//! Before appending it registers its correlation id in `prefolding`; the follower, reaching
//! an event with that correlation, waits until the batch is folded (so no later event of
//! the same streams is folded before it) and then skips the batch's events. A batch that
//! gives up before folding (failed or cancelled) unregisters, and the follower folds
//! whatever of it was committed the ordinary way.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;

use crm_domain::{Aggregate, Customer, CustomerId, Event};
use crm_eventlog::RecordedEvent;
use crm_intake::{
    Breaker, FieldHealthAlerted, FieldMeta, FormHealth, FormMapping, HealthConfig, IntakeEvent, Origin,
    QuarantinedRecord, RecordApplied, SourceConfig, Validator,
};
use uuid::Uuid;

/// Namespace of customer ids derived from (source, external id).
const CUSTOMER_NS: Uuid = Uuid::from_u128(0x6f1c_9a52_3b7e_4d0a_9c11_5e2f_8a7d_c001);

/// The customer a record of `source` with `external_id` writes to: the same every time.
pub(crate) fn customer_for(source: &str, external_id: &str) -> CustomerId {
    CustomerId(Uuid::new_v5(&CUSTOMER_NS, format!("{source}\u{0}{external_id}").as_bytes()))
}

/// The metadata `source` of events written by a sync of `source`.
pub(crate) fn sync_tag(source: &str) -> String {
    format!("sync:{source}")
}

/// Whether a sync can write to `customer`: [`customer_for`] gives UUID v5 ids, the CRM's
/// commands v7 ones.
pub(crate) fn is_sync_customer(customer: &CustomerId) -> bool {
    customer.0.get_version_num() == 5
}

#[derive(Debug, Clone, Default)]
pub(crate) struct CustState {
    pub(crate) customer: Customer,
    pub(crate) version: Option<u64>,
    pub(crate) meta: BTreeMap<String, FieldMeta>,
}

impl CustState {
    /// Folds one committed event of the customer's stream: the aggregate, its version and
    /// the provenance of the fields a CRM command (not a sync) wrote.
    pub(crate) fn fold(&mut self, e: &RecordedEvent) {
        let Ok(event) = Event::decode(&e.event_type, e.schema_version, &e.payload) else {
            tracing::warn!(position = e.position, "intake: undecodable customer event skipped");
            return;
        };
        self.customer.apply(&event);
        self.version = Some(e.version);
        if !e.metadata.source.starts_with("sync:") {
            let origin = Origin::Crm { actor: e.metadata.actor.clone() };
            let fields: Vec<String> = match &event {
                Event::CustomerCreated(x) => x.fields.keys().cloned().collect(),
                Event::CustomerUpdated(x) => x.changes.iter().map(|c| c.field.clone()).collect(),
                Event::CustomersMerged(x) => x.field_changes.iter().map(|c| c.field.clone()).collect(),
                _ => Vec::new(),
            };
            for f in fields {
                self.meta.insert(f, FieldMeta { at_micros: e.recorded_at_micros, origin: origin.clone() });
            }
        }
    }
}

#[derive(Debug, Clone, Default)]
pub(crate) struct SourceStats {
    pub(crate) batches: u64,
    pub(crate) failed: u64,
    pub(crate) applied: u64,
    pub(crate) quarantined: u64,
    pub(crate) last_success_micros: Option<i64>,
    pub(crate) last_latency_micros: u64,
    pub(crate) latencies: VecDeque<u64>,
}

impl SourceStats {
    fn latency(&mut self, micros: u64) {
        self.last_latency_micros = micros;
        self.latencies.push_back(micros);
        if self.latencies.len() > 100 {
            self.latencies.pop_front();
        }
    }

    pub(crate) fn median_latency(&self) -> u64 {
        let mut v: Vec<u64> = self.latencies.iter().copied().collect();
        v.sort_unstable();
        v.get(v.len() / 2).copied().unwrap_or(0)
    }
}

pub(crate) struct SourceState {
    pub(crate) config: SourceConfig,
    pub(crate) validator: Arc<Validator>,
    pub(crate) breaker: Breaker,
    pub(crate) stats: SourceStats,
}

impl SourceState {
    fn new(source: &str) -> Self {
        let config = SourceConfig::new(source);
        let validator = Arc::new(Validator::new(&config).expect("an empty configuration compiles"));
        SourceState { config, validator, breaker: Breaker::default(), stats: SourceStats::default() }
    }
}

#[derive(Default)]
pub(crate) struct State {
    pub(crate) mappings: HashMap<String, FormMapping>,
    pub(crate) forms: HashMap<String, FormHealth>,
    pub(crate) form_alerts: HashMap<String, Vec<FieldHealthAlerted>>,
    pub(crate) refused_forms: HashMap<String, u64>,
    pub(crate) sources: BTreeMap<String, SourceState>,
    /// The customers a sync can write to: those whose id [`customer_for`] derives (UUID v5).
    /// Other customers are folded on demand ([`CustState::fold`]), not kept: keeping all of
    /// them added about 41 s of a core and 4.4 GB to every start of a 10.8 M-event log.
    pub(crate) customers: HashMap<CustomerId, CustState>,
    /// (source, external id) -> the latest modified-at applied.
    pub(crate) synced: HashMap<(String, String), i64>,
    pub(crate) quarantine: BTreeMap<String, QuarantinedRecord>,
    /// Correlation ids of sync batches being appended, which fold their own events.
    pub(crate) prefolding: HashSet<Uuid>,
    /// Correlation ids of sync batches already folded -> the last position they wrote: the
    /// follower skips their events.
    pub(crate) prefolded: HashMap<Uuid, u64>,
}

/// What the follower does with one committed event.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Claim {
    /// Fold it.
    Fold,
    /// Already folded by the sync batch that wrote it.
    Skip,
    /// Its sync batch is about to fold it: wait, then ask again.
    Wait,
}

impl State {
    pub(crate) fn source_mut(&mut self, source: &str) -> &mut SourceState {
        self.sources.entry(source.to_owned()).or_insert_with(|| SourceState::new(source))
    }

    pub(crate) fn mapping(&self, form: &str) -> FormMapping {
        self.mappings.get(form).cloned().unwrap_or_else(|| FormMapping::identity(form))
    }

    /// Whether the follower folds `e`, skips it (its batch folded it) or waits for its batch.
    pub(crate) fn claim(&mut self, e: &RecordedEvent) -> Claim {
        let correlation = e.metadata.correlation_id;
        if self.prefolding.contains(&correlation) {
            return Claim::Wait;
        }
        match self.prefolded.get(&correlation) {
            Some(&last) => {
                if e.position >= last {
                    self.prefolded.remove(&correlation);
                }
                Claim::Skip
            }
            None => Claim::Fold,
        }
    }

    /// Folds the events of a sync batch whose append was acknowledged: `customers` are the
    /// customer events per stream with the stream's version after the append, `intake` the
    /// batch's own records. Equivalent to folding the same events from the log.
    pub(crate) fn fold_batch(
        &mut self,
        customers: &[(CustomerId, Vec<Event>, u64)],
        intake: Vec<IntakeEvent>,
        health: &HealthConfig,
    ) {
        for (id, events, version) in customers {
            let c = self.customers.entry(*id).or_default();
            for event in events {
                c.customer.apply(event);
            }
            c.version = Some(*version);
        }
        for event in intake {
            self.apply_intake(event, false, health);
        }
    }

    /// Folds one committed event. `replaying` is true for events written before this
    /// process started: form submissions and alerts written live were already counted.
    pub(crate) fn apply(&mut self, e: &RecordedEvent, replaying: bool, health: &HealthConfig) {
        if let Some(id) = e.stream.strip_prefix("customer-") {
            match Uuid::parse_str(id) {
                // Only a sync's own customers (ids from `customer_for`) are kept, and the
                // others are not even decoded.
                Ok(uuid) if is_sync_customer(&CustomerId(uuid)) => {
                    self.customers.entry(CustomerId(uuid)).or_default().fold(e);
                }
                _ => {}
            }
            return;
        }
        if !e.stream.starts_with("intake-") {
            return;
        }
        let Some(Ok(event)) = IntakeEvent::decode(&e.event_type, &e.payload) else { return };
        self.apply_intake(event, replaying, health);
    }

    fn apply_intake(&mut self, event: IntakeEvent, replaying: bool, health: &HealthConfig) {
        match event {
            IntakeEvent::FormMappingSet(m) => {
                self.mappings.insert(m.form_id.clone(), FormMapping { form_id: m.form_id, fields: m.fields });
            }
            IntakeEvent::FormSubmitted(s) if replaying => {
                if s.refused.is_some() {
                    *self.refused_forms.entry(s.form_id.clone()).or_default() += 1;
                }
                let h = self.forms.entry(s.form_id.clone()).or_insert_with(|| FormHealth::new(&s.form_id));
                h.observe(health, s.at_micros, &s.observations);
            }
            IntakeEvent::FieldHealthAlerted(a) if replaying => {
                let h = self.forms.entry(a.form_id.clone()).or_insert_with(|| FormHealth::new(&a.form_id));
                h.restore_alert(&a.field, a.kind);
                self.form_alerts.entry(a.form_id.clone()).or_default().push(a);
            }
            IntakeEvent::FormSubmitted(_) | IntakeEvent::FieldHealthAlerted(_) => {}
            IntakeEvent::SourceConfigured(c) => {
                let source = c.config.source.clone();
                match Validator::new(&c.config) {
                    Ok(v) => {
                        let s = self.source_mut(&source);
                        s.validator = Arc::new(v);
                        s.config = c.config;
                    }
                    Err(err) => tracing::warn!(%source, ?err, "intake: stored configuration does not compile"),
                }
            }
            IntakeEvent::SyncBatchApplied(b) => {
                for r in &b.applied {
                    self.record_applied(&b.source, r);
                }
                let quarantined = b.quarantined.len();
                for q in b.quarantined {
                    self.quarantine.insert(q.id.clone(), q);
                }
                let s = self.source_mut(&b.source);
                s.stats.batches += 1;
                s.stats.applied += b.applied.len() as u64;
                s.stats.quarantined += quarantined as u64;
                s.stats.last_success_micros = Some(b.at_micros);
                s.stats.latency(b.latency_micros);
                let cfg = s.config.breaker.clone();
                let records = b.applied.len() + quarantined;
                s.breaker.record(&cfg, &crm_intake::BatchOutcome::Processed { records, quarantined });
            }
            IntakeEvent::SyncBatchFailed(f) => {
                let s = self.source_mut(&f.source);
                s.stats.batches += 1;
                s.stats.failed += 1;
                s.stats.latency(f.latency_micros);
                let cfg = s.config.breaker.clone();
                s.breaker.record(&cfg, &crm_intake::BatchOutcome::Failed { reason: f.reason });
            }
            IntakeEvent::SourcePaused(p) => self.source_mut(&p.source).breaker.pause(&p.reason),
            IntakeEvent::SourceResumed(r) => self.source_mut(&r.source).breaker.resume(),
            IntakeEvent::QuarantineReleased(r) => {
                if let Some(q) = self.quarantine.remove(&r.id) {
                    self.record_applied(&q.source, &r.applied);
                }
            }
            IntakeEvent::QuarantineRejected(r) => {
                self.quarantine.remove(&r.id);
            }
        }
    }

    fn record_applied(&mut self, source: &str, r: &RecordApplied) {
        let key = (source.to_owned(), r.external_id.clone());
        let latest = self.synced.entry(key).or_insert(i64::MIN);
        *latest = (*latest).max(r.modified_at_micros);
        if let Ok(uuid) = Uuid::parse_str(&r.customer_id) {
            let c = self.customers.entry(CustomerId(uuid)).or_default();
            for f in &r.fields {
                c.meta.insert(
                    f.clone(),
                    FieldMeta {
                        at_micros: r.modified_at_micros,
                        origin: Origin::Sync { source: source.to_owned(), external_id: r.external_id.clone() },
                    },
                );
            }
        }
    }
}
