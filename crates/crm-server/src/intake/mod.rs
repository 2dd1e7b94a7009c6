//! `crm.v1.Intake`: web forms and record sync from external systems.
//!
//! - Forms: the submission is mapped ([`crm_intake::map_submission`]), the lead is captured
//!   through the command engine (the same path as `CommandService.CaptureLead`), then the raw
//!   submission and any field-health alerts are recorded on `intake-form-<form>`.
//! - Sync: one batch is planned against the in-memory state ([`state`]) under its source's lock,
//!   each record validated, merged field by field ([`crm_intake::merge_field`]) and decided
//!   by the customer aggregate of crm-domain, then everything the batch does (customer
//!   events with `Exact` expectations, the `SyncBatchApplied` record with provenance and the
//!   quarantined records, a `SourcePaused` if the breaker opened) is one atomic `append_many`.
//!   A concurrent edit of one of the customers makes the append fail as a whole; the batch is
//!   planned again on the newer state.
//! - Every configuration change, decision and breaker transition is an event; the state is a
//!   fold of the log, rebuilt on start.

mod state;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use crm_domain::{Aggregate, CaptureLead, Channel, CommandContext, CustomerCommand, DomainError, Event, LeadId, Rules};
use crm_eventlog::{
    Direction, Durability, Error as LogError, EventStore, ExpectedVersion, Metadata, NewEvent, StreamAppend,
};
use crm_intake::{
    map_submission, merge_field, AlertKind, BatchOutcome, FieldHealthAlerted, FieldObservation, FieldRule, FieldType,
    FormMappingSet, FormSubmitted, HealthConfig, IntakeEvent, LeadField, MergeDecision, ObservationOutcome,
    QuarantineRejected, QuarantineReleased, QuarantinedRecord, RecordApplied, SourceConfig, SourceConfigured,
    SourcePaused, SourceResumed, SyncBatchApplied, SyncBatchFailed, Validator, INTAKE_CONFIG_STREAM,
};
use crm_proto::v1 as pb;
use futures::StreamExt;
use tokio::sync::{watch, Notify};
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::auth;
use crate::commands::{CommandError, Engine, IdempotencyKey, RunOptions};
use crate::status;
use state::{customer_for, is_sync_customer, sync_tag, Claim, CustState, State};

/// Most records in one `SyncRecords` batch (each writes at most one customer event, and an
/// append holds at most 1,000 events).
pub const MAX_BATCH_RECORDS: usize = 990;
/// Attempts to plan and append a batch that keeps meeting concurrent customer edits.
const MAX_ATTEMPTS: usize = 5;

fn now_micros() -> i64 {
    Utc::now().timestamp_micros()
}

/// The intake over one store.
pub struct Intake<S> {
    store: S,
    engine: Engine<S>,
    state: Arc<StdMutex<State>>,
    /// Woken whenever a sync batch has folded its own events or given up doing so.
    folded: Arc<Notify>,
    /// The head when the intake started: the follower's replay ends there.
    initial_head: u64,
    applied: watch::Receiver<u64>,
    /// One lock per source: a source's batches are planned and appended one at a time;
    /// different sources run concurrently (their customers are disjoint).
    source_locks: StdMutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    forms_lock: tokio::sync::Mutex<()>,
    health: HealthConfig,
}

impl<S: EventStore + Clone> Intake<S> {
    /// Starts the follower that folds the log into the intake state (replaying what is
    /// already there) and the stale-field checker.
    pub async fn start(store: S) -> Result<Arc<Self>, Status> {
        let initial_head = store.head().await.map_err(status::from_eventlog)?;
        let state = Arc::new(StdMutex::new(State::default()));
        let folded = Arc::new(Notify::new());
        let (tx, rx) = watch::channel(0u64);
        let health = HealthConfig::default();
        {
            let state = state.clone();
            let health = health.clone();
            let folded = folded.clone();
            let mut events = store.subscribe_all(1);
            tokio::spawn(async move {
                while let Some(next) = events.next().await {
                    match next {
                        Ok(e) => {
                            let position = e.position;
                            loop {
                                // Registered before looking, so a fold in between is not missed.
                                let woken = folded.notified();
                                tokio::pin!(woken);
                                woken.as_mut().enable();
                                let claim = {
                                    let mut st = state.lock().expect("intake state");
                                    let claim = st.claim(&e);
                                    if claim == Claim::Fold {
                                        st.apply(&e, position <= initial_head, &health);
                                    }
                                    claim
                                };
                                if claim != Claim::Wait {
                                    break;
                                }
                                woken.await;
                            }
                            let _ = tx.send(position);
                        }
                        Err(err) => {
                            tracing::info!(%err, "intake follower stopped");
                            break;
                        }
                    }
                }
            });
        }
        let intake = Arc::new(Intake {
            engine: Engine::new(store.clone()),
            store,
            state,
            folded,
            initial_head,
            applied: rx,
            source_locks: StdMutex::new(HashMap::new()),
            forms_lock: tokio::sync::Mutex::new(()),
            health,
        });
        let weak = Arc::downgrade(&intake);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(60));
            loop {
                tick.tick().await;
                let Some(intake) = weak.upgrade() else { break };
                if let Err(err) = intake.check_stale(now_micros()).await {
                    tracing::warn!(%err, "intake: stale-field check failed");
                }
            }
        });
        Ok(intake)
    }

    async fn lock_source(&self, source: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = self.source_locks.lock().expect("source locks").entry(source.to_owned()).or_default().clone();
        lock.lock_owned().await
    }

    fn quarantined_source(&self, id: &str) -> Result<String, Status> {
        let st = self.state.lock().expect("intake state");
        st.quarantine
            .get(id)
            .map(|q| q.source.clone())
            .ok_or_else(|| Status::not_found(format!("no quarantined record `{id}`")))
    }

    async fn wait_applied(&self, position: u64) -> Result<(), Status> {
        let mut rx = self.applied.clone();
        rx.wait_for(|p| *p >= position).await.map_err(|_| Status::unavailable("the intake follower has stopped"))?;
        Ok(())
    }

    async fn caught_up(&self) -> Result<(), Status> {
        let head = self.store.head().await.map_err(status::from_eventlog)?;
        self.wait_applied(head).await
    }

    async fn append(&self, appends: Vec<StreamAppend>) -> Result<u64, LogError> {
        let results = self.store.append_many(appends, Durability::Durable).await?;
        Ok(results.iter().map(|r| r.last_position).max().unwrap_or(0))
    }

    /// Appends intake events to one stream and waits until the state reflects them.
    async fn record(&self, stream: &str, actor: &str, events: Vec<IntakeEvent>) -> Result<u64, Status> {
        let appends = vec![StreamAppend {
            stream: stream.to_owned(),
            expected: ExpectedVersion::Any,
            events: events.iter().map(|e| new_event(e, actor, Uuid::now_v7(), None)).collect(),
        }];
        let position = self.append(appends).await.map_err(status::from_eventlog)?;
        self.wait_applied(position).await?;
        Ok(position)
    }

    /// Raises stale alerts for form fields not seen for the stale period.
    pub async fn check_stale(&self, now: i64) -> Result<usize, Status> {
        let _forms = self.forms_lock.lock().await;
        let alerts: Vec<_> = {
            let mut st = self.state.lock().expect("intake state");
            st.forms.values_mut().flat_map(|h| h.check_stale(&self.health, now)).collect()
        };
        for a in &alerts {
            let event = alerted(a);
            self.state
                .lock()
                .expect("intake state")
                .form_alerts
                .entry(a.form_id.clone())
                .or_default()
                .push(event.clone());
            let e = IntakeEvent::FieldHealthAlerted(event);
            let appends = vec![StreamAppend {
                stream: form_stream(&a.form_id),
                expected: ExpectedVersion::Any,
                events: vec![new_event(&e, "system:intake", Uuid::now_v7(), None)],
            }];
            self.append(appends).await.map_err(status::from_eventlog)?;
        }
        Ok(alerts.len())
    }
}

fn new_event(e: &IntakeEvent, actor: &str, id: Uuid, correlation: Option<Uuid>) -> NewEvent {
    NewEvent {
        id,
        event_type: e.event_type().to_owned(),
        schema_version: IntakeEvent::SCHEMA_VERSION,
        metadata: Metadata {
            actor: actor.to_owned(),
            correlation_id: correlation.unwrap_or(id),
            causation_id: None,
            source: "intake".to_owned(),
        },
        payload: e.encode(),
    }
}

fn form_stream(form: &str) -> String {
    format!("intake-form-{form}")
}

fn source_stream(source: &str) -> String {
    format!("intake-source-{source}")
}

fn alerted(a: &crm_intake::HealthAlert) -> FieldHealthAlerted {
    FieldHealthAlerted {
        form_id: a.form_id.clone(),
        field: a.field.clone(),
        kind: a.kind,
        rate: a.rate,
        samples: a.samples,
        at_micros: a.at_micros,
    }
}

/// Form and source ids become stream names: short, printable, no separators that matter.
fn check_name(field: &str, value: &str) -> Result<String, Status> {
    let v = value.trim();
    if v.is_empty() {
        return Err(status::invalid(field, "required"));
    }
    if v.chars().count() > 128 || v.chars().any(|c| c.is_control() || c == '/') {
        return Err(status::invalid(field, "at most 128 characters, no control characters or `/`"));
    }
    Ok(v.to_owned())
}

fn actor_of<T>(request: &Request<T>) -> Result<String, Status> {
    Ok(auth::principal(request)?.user_id.clone())
}

fn lead_field_from_proto(field: &str, v: i32) -> Result<LeadField, Status> {
    let p = pb::LeadField::try_from(v).map_err(|_| status::invalid(field, format!("unknown lead field {v}")))?;
    Ok(match p {
        pb::LeadField::Unspecified => return Err(status::invalid(field, "a lead field is required")),
        pb::LeadField::Name => LeadField::Name,
        pb::LeadField::Company => LeadField::Company,
        pb::LeadField::Phone => LeadField::Phone,
        pb::LeadField::Email => LeadField::Email,
        pb::LeadField::Wechat => LeadField::Wechat,
        pb::LeadField::Uscc => LeadField::Uscc,
        pb::LeadField::Region => LeadField::Region,
    })
}

fn alert_kind(k: AlertKind) -> i32 {
    (match k {
        AlertKind::LowMatchRate => pb::FieldAlertKind::LowMatchRate,
        AlertKind::UnmappedField => pb::FieldAlertKind::UnmappedField,
        AlertKind::Stale => pb::FieldAlertKind::Stale,
        AlertKind::Recovered => pb::FieldAlertKind::Recovered,
    }) as i32
}

fn alert_to_proto(a: &FieldHealthAlerted) -> pb::FieldHealthAlert {
    pb::FieldHealthAlert {
        form_id: a.form_id.clone(),
        field: a.field.clone(),
        kind: alert_kind(a.kind),
        rate: a.rate,
        samples: a.samples as u64,
        at_micros: a.at_micros,
    }
}

fn fields_from_proto(fields: Vec<pb::SyncField>) -> Vec<(String, Option<String>)> {
    fields.into_iter().map(|f| (f.name, f.value)).collect()
}

fn fields_to_proto(fields: &[(String, Option<String>)]) -> Vec<pb::SyncField> {
    fields.iter().map(|(n, v)| pb::SyncField { name: n.clone(), value: v.clone() }).collect()
}

fn quarantined_to_proto(q: &QuarantinedRecord) -> pb::QuarantinedRecord {
    pb::QuarantinedRecord {
        id: q.id.clone(),
        source: q.source.clone(),
        external_id: q.external_id.clone(),
        modified_at_micros: q.modified_at_micros,
        fields: fields_to_proto(&q.fields),
        errors: q
            .errors
            .iter()
            .map(|e| pb::ValidationError { field: e.field.clone(), rule: e.rule.clone(), message: e.message.clone() })
            .collect(),
        at_micros: q.at_micros,
    }
}

fn rule_from_proto(name: &str, r: pb::FieldRule) -> Result<FieldRule, Status> {
    let field_type = match pb::FieldType::try_from(r.r#type) {
        Ok(pb::FieldType::Unspecified | pb::FieldType::Text) => FieldType::Text,
        Ok(pb::FieldType::Integer) => FieldType::Integer,
        Ok(pb::FieldType::Decimal) => FieldType::Decimal,
        Ok(pb::FieldType::Phone) => FieldType::Phone,
        Ok(pb::FieldType::Email) => FieldType::Email,
        Ok(pb::FieldType::Date) => FieldType::Date,
        Err(_) => return Err(status::invalid(&format!("fields.{name}.type"), "unknown field type")),
    };
    let opt = |s: String| (!s.trim().is_empty()).then(|| s.trim().to_owned());
    Ok(FieldRule {
        target: opt(r.target),
        field_type,
        pattern: opt(r.pattern),
        min: r.min,
        max: r.max,
        max_len: (r.max_len > 0).then_some(r.max_len as usize),
        required: r.required,
        clearable: r.clearable,
    })
}

/// One record's plan: the customer events it causes and what it did.
struct Planned {
    events: Vec<Event>,
    applied: RecordApplied,
}

/// Plans one validated record against `cust` (updated in place, so a later record of the
/// same batch sees it). A domain refusal comes back as an error for the quarantine.
fn plan_record(
    source: &str,
    external_id: &str,
    modified_at: i64,
    values: Vec<crm_intake::Validated>,
    cust: &mut CustState,
    ctx: &CommandContext,
) -> Result<(Planned, usize), DomainError> {
    let customer = customer_for(source, external_id);
    let mut changes: BTreeMap<String, Option<String>> = BTreeMap::new();
    let mut kept = Vec::new();
    for v in values {
        let stored = cust.customer.fields.get(&v.target).map(String::as_str);
        let meta = cust.meta.get(&v.target);
        match merge_field(stored, meta, v.value.as_deref(), modified_at, v.clearable) {
            MergeDecision::Set(value) => {
                changes.insert(v.target, Some(value));
            }
            MergeDecision::Clear => {
                changes.insert(v.target, None);
            }
            MergeDecision::Unchanged => {}
            MergeDecision::KeepNullIgnored | MergeDecision::KeepStoredNewer => kept.push(v.target),
        }
    }
    let events = if cust.customer.id.is_none() {
        let fields: BTreeMap<String, String> =
            changes.iter().filter_map(|(k, v)| v.clone().map(|v| (k.clone(), v))).collect();
        cust.customer.handle(
            CustomerCommand::Create { customer_id: customer, fields, owner: None },
            ctx,
            &Rules::default(),
        )?
    } else if changes.is_empty() {
        Vec::new()
    } else {
        // The aggregate normalises (a phone to E.164) before comparing: a value that differs
        // only in form is no change.
        match cust.customer.handle(CustomerCommand::Update { changes: changes.clone() }, ctx, &Rules::default()) {
            Err(DomainError::FailedPrecondition { rule, .. }) if rule == "customer.unchanged" => Vec::new(),
            other => other?,
        }
    };
    let mut written: Vec<String> = Vec::new();
    for e in &events {
        cust.customer.apply(e);
        match e {
            Event::CustomerCreated(c) => written.extend(c.fields.keys().cloned()),
            Event::CustomerUpdated(u) => written.extend(u.changes.iter().map(|c| c.field.clone())),
            _ => {}
        }
    }
    for f in &written {
        cust.meta.insert(
            f.clone(),
            crm_intake::FieldMeta {
                at_micros: modified_at,
                origin: crm_intake::Origin::Sync { source: source.to_owned(), external_id: external_id.to_owned() },
            },
        );
    }
    let n_kept = kept.len();
    Ok((
        Planned {
            events,
            applied: RecordApplied {
                external_id: external_id.to_owned(),
                modified_at_micros: modified_at,
                customer_id: customer.0.to_string(),
                fields: written,
                kept,
            },
        },
        n_kept,
    ))
}

fn quarantine_id(source: &str, external_id: &str, modified_at: i64) -> String {
    format!("{source}/{external_id}/{modified_at}")
}

struct BatchPlan {
    /// One append per customer written (in `customers` order), then the source's stream.
    appends: Vec<StreamAppend>,
    /// The customer events of `appends`, decoded, for folding after the append.
    customers: Vec<(crm_domain::CustomerId, Vec<Event>)>,
    /// The batch's own intake events (the last append), for folding after the append.
    intake: Vec<IntakeEvent>,
    applied: Vec<RecordApplied>,
    quarantined: Vec<QuarantinedRecord>,
    duplicates: usize,
    kept: usize,
    trip: Option<String>,
}

impl<S: EventStore + Clone> Intake<S> {
    /// Plans a whole batch on the current state (read under the lock, not changed).
    fn plan_batch(
        &self,
        source: &str,
        batch_id: &str,
        actor: &str,
        correlation: Uuid,
        records: &[pb::SyncRecord],
        started: Instant,
    ) -> BatchPlan {
        let now = now_micros();
        let ctx = CommandContext {
            actor: actor.to_owned(),
            correlation_id: correlation,
            causation_id: None,
            source: sync_tag(source),
            now: Utc::now(),
        };
        let (validator, mut breaker, breaker_cfg) = match self.state.lock().expect("intake state").sources.get(source) {
            Some(s) => (s.validator.clone(), s.breaker.clone(), s.config.breaker.clone()),
            None => {
                let cfg = SourceConfig::new(source);
                (Arc::new(Validator::new(&cfg).expect("empty config")), Default::default(), cfg.breaker)
            }
        };
        // Validation (phone parsing is the expensive part) needs no state: outside the lock.
        let validated: Vec<_> = records
            .iter()
            .map(|r| {
                let fields: Vec<(String, Option<String>)> =
                    r.fields.iter().map(|f| (f.name.clone(), f.value.clone())).collect();
                let result = validator.validate(&fields);
                (fields, result)
            })
            .collect();
        let st = self.state.lock().expect("intake state");
        let mut touched: HashMap<crm_domain::CustomerId, CustState> = HashMap::new();
        let mut order: Vec<crm_domain::CustomerId> = Vec::new();
        let mut events_of: HashMap<crm_domain::CustomerId, Vec<Event>> = HashMap::new();
        let mut seen: HashMap<&str, i64> = HashMap::new();
        let mut plan = BatchPlan {
            appends: Vec::new(),
            customers: Vec::new(),
            intake: Vec::new(),
            applied: Vec::new(),
            quarantined: Vec::new(),
            duplicates: 0,
            kept: 0,
            trip: None,
        };
        for (r, (fields, result)) in records.iter().zip(validated) {
            let ext = r.external_id.trim();
            let qid = quarantine_id(source, ext, r.modified_at_micros);
            let latest =
                seen.get(ext).copied().or_else(|| st.synced.get(&(source.to_owned(), ext.to_owned())).copied());
            if latest.is_some_and(|l| l >= r.modified_at_micros) || st.quarantine.contains_key(&qid) {
                plan.duplicates += 1;
                continue;
            }
            let values = match result {
                Ok(v) => v,
                Err(errors) => {
                    plan.quarantined.push(QuarantinedRecord {
                        id: qid,
                        source: source.to_owned(),
                        external_id: ext.to_owned(),
                        modified_at_micros: r.modified_at_micros,
                        fields,
                        errors,
                        at_micros: now,
                    });
                    continue;
                }
            };
            let customer = customer_for(source, ext);
            let cust =
                touched.entry(customer).or_insert_with(|| st.customers.get(&customer).cloned().unwrap_or_default());
            let before = cust.clone();
            match plan_record(source, ext, r.modified_at_micros, values, cust, &ctx) {
                Ok((planned, kept)) => {
                    plan.kept += kept;
                    if !events_of.contains_key(&customer) {
                        order.push(customer);
                    }
                    events_of.entry(customer).or_default().extend(planned.events);
                    plan.applied.push(planned.applied);
                    seen.insert(ext, r.modified_at_micros);
                }
                Err(e) => {
                    *cust = before;
                    plan.quarantined.push(QuarantinedRecord {
                        id: qid,
                        source: source.to_owned(),
                        external_id: ext.to_owned(),
                        modified_at_micros: r.modified_at_micros,
                        errors: vec![crm_intake::ValidationError {
                            field: domain_field(&e),
                            rule: domain_rule(&e),
                            message: e.to_string(),
                        }],
                        fields,
                        at_micros: now,
                    });
                }
            }
        }
        let mut index: u32 = 0;
        for customer in order {
            let events = events_of.remove(&customer).unwrap_or_default();
            if events.is_empty() {
                continue;
            }
            let expected = match st.customers.get(&customer).and_then(|c| c.version) {
                Some(v) => ExpectedVersion::Exact(v),
                None => ExpectedVersion::NoStream,
            };
            let new_events = events
                .iter()
                .map(|e| {
                    index += 1;
                    NewEvent {
                        id: Uuid::now_v7(),
                        event_type: e.event_type().to_owned(),
                        schema_version: e.schema_version(),
                        metadata: Metadata {
                            actor: actor.to_owned(),
                            correlation_id: correlation,
                            causation_id: None,
                            source: sync_tag(source),
                        },
                        payload: e.encode(),
                    }
                })
                .collect();
            plan.appends.push(StreamAppend { stream: customer.stream(), expected, events: new_events });
            plan.customers.push((customer, events));
        }
        drop(st);
        let records_taken = plan.applied.len() + plan.quarantined.len();
        if let Some(trip) = breaker.record(
            &breaker_cfg,
            &BatchOutcome::Processed { records: records_taken, quarantined: plan.quarantined.len() },
        ) {
            plan.trip = Some(trip.reason);
        }
        let mut intake_events = vec![IntakeEvent::SyncBatchApplied(SyncBatchApplied {
            source: source.to_owned(),
            batch_id: batch_id.to_owned(),
            applied: plan.applied.clone(),
            quarantined: plan.quarantined.clone(),
            duplicates: plan.duplicates,
            latency_micros: started.elapsed().as_micros() as u64,
            at_micros: now,
        })];
        if let Some(reason) = &plan.trip {
            intake_events.push(IntakeEvent::SourcePaused(SourcePaused {
                source: source.to_owned(),
                reason: reason.clone(),
                at_micros: now,
            }));
        }
        plan.appends.push(StreamAppend {
            stream: source_stream(source),
            expected: ExpectedVersion::Any,
            events: intake_events.iter().map(|e| new_event(e, actor, Uuid::now_v7(), Some(correlation))).collect(),
        });
        plan.intake = intake_events;
        plan
    }

    /// Records a failed batch and opens the breaker on the configured count.
    async fn fail_batch(&self, source: &str, batch_id: &str, actor: &str, reason: String, started: Instant) -> Status {
        let now = now_micros();
        let trip = {
            let st = self.state.lock().expect("intake state");
            let (mut breaker, cfg) = st
                .sources
                .get(source)
                .map(|s| (s.breaker.clone(), s.config.breaker.clone()))
                .unwrap_or_else(|| (Default::default(), SourceConfig::new(source).breaker));
            breaker.record(&cfg, &BatchOutcome::Failed { reason: reason.clone() })
        };
        let mut events = vec![IntakeEvent::SyncBatchFailed(SyncBatchFailed {
            source: source.to_owned(),
            batch_id: batch_id.to_owned(),
            reason: reason.clone(),
            latency_micros: started.elapsed().as_micros() as u64,
            at_micros: now,
        })];
        if let Some(t) = &trip {
            events.push(IntakeEvent::SourcePaused(SourcePaused {
                source: source.to_owned(),
                reason: t.reason.clone(),
                at_micros: now,
            }));
            tracing::warn!(%source, reason = %t.reason, "intake: source paused");
        }
        if let Err(e) = self.record(&source_stream(source), actor, events).await {
            return e;
        }
        let mut s = status::invalid("records", &reason);
        if let Some(t) = trip {
            s = Status::invalid_argument(format!("{}; the source is now paused: {}", s.message(), t.reason));
        }
        s
    }

    async fn sync(&self, actor: &str, r: pb::SyncRecordsRequest) -> Result<pb::SyncRecordsResponse, Status> {
        let started = Instant::now();
        let source = check_name("source", &r.source)?;
        let _guard = self.lock_source(&source).await;
        // Not `caught_up`: this source's own batches are folded already when they return,
        // and every other intake write waits for the follower before it returns. What the
        // follower may still be folding is other writers' customer edits, and for those the
        // `Exact` versions of the append refuse a plan made on an older state (then the
        // batch waits for the follower and is planned again). Only the replay of the log
        // written before this process started must be complete.
        self.wait_applied(self.initial_head).await?;
        if let Some(reason) =
            self.state.lock().expect("intake state").sources.get(&source).and_then(|s| s.breaker.paused.clone())
        {
            return Err(Status::unavailable(format!(
                "source `{source}` is paused: {reason}; an operator must resume it"
            )));
        }
        let batch_id =
            if r.batch_id.trim().is_empty() { Uuid::now_v7().to_string() } else { r.batch_id.trim().to_owned() };
        if r.records.len() > MAX_BATCH_RECORDS {
            return Err(status::invalid(
                "records",
                format!("at most {MAX_BATCH_RECORDS} records per batch, got {}", r.records.len()),
            ));
        }
        for (i, rec) in r.records.iter().enumerate() {
            let problem = if rec.external_id.trim().is_empty() {
                Some(format!("records[{i}].external_id is required"))
            } else if rec.modified_at_micros <= 0 {
                Some(format!("records[{i}].modified_at_micros is required"))
            } else if rec.fields.iter().any(|f| f.name.trim().is_empty()) {
                Some(format!("records[{i}] has a field without a name"))
            } else {
                None
            };
            if let Some(reason) = problem {
                return Err(self.fail_batch(&source, &batch_id, actor, reason, started).await);
            }
        }
        let correlation = Uuid::now_v7();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut plan = self.plan_batch(&source, &batch_id, actor, correlation, &r.records, started);
            let prefold = Prefold::register(&self.state, &self.folded, correlation);
            let results = match self.store.append_many(std::mem::take(&mut plan.appends), Durability::Durable).await {
                Ok(results) => results,
                Err(e) => {
                    // Before waiting for the follower below: it may be waiting for this claim.
                    drop(prefold);
                    match e {
                        LogError::WrongExpectedVersion { .. } if attempt < MAX_ATTEMPTS => {
                            self.caught_up().await?;
                            continue;
                        }
                        e => {
                            let status = status::from_eventlog(e);
                            if status.code() != tonic::Code::Unavailable {
                                return Err(self
                                    .fail_batch(&source, &batch_id, actor, status.message().to_owned(), started)
                                    .await);
                            }
                            return Err(status);
                        }
                    }
                }
            };
            let position = results.iter().map(|r| r.last_position).max().unwrap_or(0);
            let customers: Vec<_> = std::mem::take(&mut plan.customers)
                .into_iter()
                .zip(&results)
                .map(|((id, events), r)| (id, events, r.last_version))
                .collect();
            let intake = std::mem::take(&mut plan.intake);
            prefold.fold(position, |st| st.fold_batch(&customers, intake, &self.health));
            if let Some(reason) = &plan.trip {
                tracing::warn!(%source, %reason, "intake: source paused");
            }
            return Ok(pb::SyncRecordsResponse {
                applied: plan.applied.len() as u32,
                quarantined: plan.quarantined.len() as u32,
                duplicates: plan.duplicates as u32,
                fields_kept: plan.kept as u32,
                position,
                quarantine_ids: plan.quarantined.iter().map(|q| q.id.clone()).collect(),
                paused_reason: plan.trip.unwrap_or_default(),
            });
        }
    }
}

/// A sync batch's claim to fold its own events (see [`state`]): registered before the
/// append; if dropped without [`Prefold::fold`] (the append failed, or the call was
/// cancelled), the follower folds whatever was committed the ordinary way.
struct Prefold<'a> {
    state: &'a StdMutex<State>,
    folded: &'a Notify,
    correlation: Uuid,
    done: bool,
}

impl<'a> Prefold<'a> {
    fn register(state: &'a StdMutex<State>, folded: &'a Notify, correlation: Uuid) -> Self {
        state.lock().expect("intake state").prefolding.insert(correlation);
        Prefold { state, folded, correlation, done: false }
    }

    /// Folds the acknowledged batch (whose last event is at `last_position`) and lets the
    /// follower skip it.
    fn fold(mut self, last_position: u64, f: impl FnOnce(&mut State)) {
        {
            let mut st = self.state.lock().expect("intake state");
            f(&mut st);
            st.prefolding.remove(&self.correlation);
            st.prefolded.insert(self.correlation, last_position);
        }
        self.done = true;
        self.folded.notify_waiters();
    }
}

impl Drop for Prefold<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.state.lock().expect("intake state").prefolding.remove(&self.correlation);
            self.folded.notify_waiters();
        }
    }
}

fn domain_field(e: &DomainError) -> String {
    match e {
        DomainError::InvalidArgument { field, .. } => field.clone(),
        _ => String::new(),
    }
}

fn domain_rule(e: &DomainError) -> String {
    match e {
        DomainError::InvalidArgument { rule, .. } | DomainError::FailedPrecondition { rule, .. } => rule.clone(),
        DomainError::NotFound { .. } => "not_found".into(),
        DomainError::AlreadyExists { .. } => "already_exists".into(),
    }
}

/// The tonic service.
pub struct IntakeService<S> {
    inner: Arc<Intake<S>>,
}

impl<S> IntakeService<S> {
    pub fn new(inner: Arc<Intake<S>>) -> Self {
        IntakeService { inner }
    }
}

#[tonic::async_trait]
impl<S: EventStore + Clone> pb::intake_server::Intake for IntakeService<S> {
    async fn set_form_mapping(
        &self,
        request: Request<pb::SetFormMappingRequest>,
    ) -> Result<Response<pb::SetFormMappingResponse>, Status> {
        let actor = actor_of(&request)?;
        let r = request.into_inner();
        let form_id = check_name("form_id", &r.form_id)?;
        let mut fields = BTreeMap::new();
        for (name, v) in r.fields {
            let f = lead_field_from_proto(&format!("fields.{name}"), v)?;
            fields.insert(name.trim().to_owned(), f);
        }
        let e = IntakeEvent::FormMappingSet(FormMappingSet { form_id, fields });
        let position = self.inner.record(INTAKE_CONFIG_STREAM, &actor, vec![e]).await?;
        Ok(Response::new(pb::SetFormMappingResponse { position }))
    }

    async fn submit_form(
        &self,
        request: Request<pb::SubmitFormRequest>,
    ) -> Result<Response<pb::SubmitFormResponse>, Status> {
        let actor = actor_of(&request)?;
        let r = request.into_inner();
        let intake = &self.inner;
        let form_id = check_name("form_id", &r.form_id)?;
        let source = if r.source.trim().is_empty() { "web_form".to_owned() } else { r.source.trim().to_owned() };
        let values: BTreeMap<String, String> = r.fields.into_iter().map(|(k, v)| (k.trim().to_owned(), v)).collect();
        let mapping = intake.state.lock().expect("intake state").mapping(&form_id);
        let mapped = map_submission(&mapping, &values);
        let key = (!r.idempotency_key.trim().is_empty()).then(|| IdempotencyKey::new(r.idempotency_key.trim()));
        let lead_id = LeadId(key.as_ref().map_or_else(Uuid::now_v7, |k| k.derived("lead_id")));
        let mut custom = mapped.custom_attributes.clone();
        let flags: Vec<String> = mapped
            .flagged()
            .map(|o| match &o.outcome {
                ObservationOutcome::Invalid { reason } => format!("{}:{reason}", o.field),
                _ => o.field.clone(),
            })
            .collect();
        if !flags.is_empty() {
            custom.insert("intake.flags".into(), flags.join(","));
        }
        if !mapped.salvaged.is_empty() {
            let used: Vec<String> = mapped.salvaged.iter().map(|(f, t)| format!("{f}->{}", t.as_str())).collect();
            custom.insert("intake.salvaged".into(), used.join(","));
        }
        let capture = CaptureLead {
            lead_id,
            name: mapped.get(LeadField::Name),
            company: mapped.get(LeadField::Company),
            phone: mapped.get(LeadField::Phone),
            email: mapped.get(LeadField::Email),
            wechat: mapped.get(LeadField::Wechat),
            uscc: mapped.get(LeadField::Uscc),
            region: mapped.get(LeadField::Region),
            channel: Channel::WebForm { form_id: form_id.clone() },
            source: source.clone(),
            custom_attributes: custom.clone(),
        };
        let opts = RunOptions {
            expected_version: None,
            key: key.clone(),
            actor: actor.clone(),
            correlation_id: key.as_ref().map_or_else(Uuid::now_v7, |k| k.derived("correlation_id")),
            causation_id: None,
            source: "web_form".into(),
        };
        let (lead, refused) = match intake.engine.execute(&opts, crate::commands::Cmd::CaptureLead(capture)).await {
            Ok(outcome) if outcome.deduplicated => {
                return Ok(Response::new(pb::SubmitFormResponse {
                    lead_id: outcome.id,
                    submission_position: 0,
                    custom_attributes: custom.into_iter().collect(),
                    ..Default::default()
                }));
            }
            Ok(outcome) => (Some(outcome.id), None),
            Err(CommandError::Domain(e)) => (None, Some(e.to_string())),
            Err(e) => return Err(e.into()),
        };
        let at = now_micros();
        let _forms = intake.forms_lock.lock().await;
        let alerts: Vec<FieldHealthAlerted> = {
            let mut st = intake.state.lock().expect("intake state");
            if refused.is_some() {
                *st.refused_forms.entry(form_id.clone()).or_default() += 1;
            }
            let health = st.forms.entry(form_id.clone()).or_insert_with(|| crm_intake::FormHealth::new(&form_id));
            let alerts: Vec<_> = health.observe(&intake.health, at, &mapped.observations).iter().map(alerted).collect();
            st.form_alerts.entry(form_id.clone()).or_default().extend(alerts.iter().cloned());
            alerts
        };
        for a in &alerts {
            tracing::warn!(form = %a.form_id, field = %a.field, kind = a.kind.as_str(), rate = a.rate, "form field health alert");
        }
        let mut events = vec![IntakeEvent::FormSubmitted(FormSubmitted {
            form_id: form_id.clone(),
            source,
            values,
            observations: mapped.observations.clone(),
            lead_id: lead.clone(),
            refused: refused.clone(),
            at_micros: at,
        })];
        events.extend(alerts.iter().cloned().map(IntakeEvent::FieldHealthAlerted));
        let form_key = key.as_ref().map(|_| IdempotencyKey::new(&format!("{}/form", r.idempotency_key.trim())));
        let appends = vec![StreamAppend {
            stream: form_stream(&form_id),
            expected: ExpectedVersion::Any,
            events: events
                .iter()
                .enumerate()
                .map(|(i, e)| {
                    let id = form_key.as_ref().map_or_else(Uuid::now_v7, |k| k.event_id(i as u16));
                    new_event(e, &actor, id, Some(opts.correlation_id))
                })
                .collect(),
        }];
        let position = intake.append(appends).await.map_err(status::from_eventlog)?;
        Ok(Response::new(pb::SubmitFormResponse {
            lead_id: lead.unwrap_or_default(),
            submission_position: position,
            custom_attributes: mapped.custom_attributes.into_iter().collect(),
            flagged: mapped
                .observations
                .iter()
                .filter_map(|o| match &o.outcome {
                    ObservationOutcome::Invalid { reason } => {
                        Some(pb::FlaggedField { field: o.field.clone(), reason: reason.clone() })
                    }
                    _ => None,
                })
                .collect(),
            unmapped_fields: mapped
                .observations
                .iter()
                .filter(|o| o.outcome == ObservationOutcome::Unmapped)
                .map(|o: &FieldObservation| o.field.clone())
                .collect(),
            alerts: alerts.iter().map(alert_to_proto).collect(),
            refused: refused.unwrap_or_default(),
        }))
    }

    async fn get_form_health(
        &self,
        request: Request<pb::GetFormHealthRequest>,
    ) -> Result<Response<pb::GetFormHealthResponse>, Status> {
        let form_id = check_name("form_id", &request.into_inner().form_id)?;
        self.inner.caught_up().await?;
        let st = self.inner.state.lock().expect("intake state");
        let Some(h) = st.forms.get(&form_id) else {
            return Err(Status::not_found(format!("no submissions for form `{form_id}`")));
        };
        Ok(Response::new(pb::GetFormHealthResponse {
            form_id: form_id.clone(),
            submissions: h.submissions,
            fields: h
                .report()
                .into_iter()
                .map(|f| pb::FieldHealth {
                    field: f.field,
                    mapped: f.mapped,
                    match_rate: f.rate,
                    samples: f.samples as u64,
                    total: f.total,
                    last_seen_micros: f.last_seen_micros.unwrap_or(0),
                    alert: f.alert.map_or(0, alert_kind),
                })
                .collect(),
            alerts: st.form_alerts.get(&form_id).map(|v| v.iter().map(alert_to_proto).collect()).unwrap_or_default(),
        }))
    }

    async fn configure_source(
        &self,
        request: Request<pb::ConfigureSourceRequest>,
    ) -> Result<Response<pb::ConfigureSourceResponse>, Status> {
        let actor = actor_of(&request)?;
        let r = request.into_inner();
        let source = check_name("source", &r.source)?;
        let mut config = SourceConfig::new(&source);
        for (name, rule) in r.fields {
            let rule = rule_from_proto(&name, rule)?;
            config.fields.insert(name.trim().to_owned(), rule);
        }
        if r.max_consecutive_failures > 0 {
            config.breaker.max_consecutive_failures = r.max_consecutive_failures;
        }
        if r.failure_rate_threshold != 0.0 {
            if !(0.0..=1.0).contains(&r.failure_rate_threshold) {
                return Err(status::invalid("failure_rate_threshold", "between 0 and 1"));
            }
            config.breaker.failure_rate_threshold = r.failure_rate_threshold;
        }
        if r.min_records_for_rate > 0 {
            config.breaker.min_records_for_rate = r.min_records_for_rate as usize;
        }
        Validator::new(&config)
            .map_err(|e| status::invalid(&format!("fields.{}", e.field), format!("{}: {}", e.rule, e.message)))?;
        let e = IntakeEvent::SourceConfigured(SourceConfigured { config });
        let position = self.inner.record(INTAKE_CONFIG_STREAM, &actor, vec![e]).await?;
        Ok(Response::new(pb::ConfigureSourceResponse { position }))
    }

    async fn sync_records(
        &self,
        request: Request<pb::SyncRecordsRequest>,
    ) -> Result<Response<pb::SyncRecordsResponse>, Status> {
        let actor = actor_of(&request)?;
        Ok(Response::new(self.inner.sync(&actor, request.into_inner()).await?))
    }

    async fn list_quarantined(
        &self,
        request: Request<pb::ListQuarantinedRequest>,
    ) -> Result<Response<pb::ListQuarantinedResponse>, Status> {
        let r = request.into_inner();
        self.inner.caught_up().await?;
        let limit = if r.limit == 0 { 1000 } else { r.limit as usize };
        let st = self.inner.state.lock().expect("intake state");
        let records = st
            .quarantine
            .values()
            .filter(|q| r.source.is_empty() || q.source == r.source)
            .take(limit)
            .map(quarantined_to_proto)
            .collect();
        Ok(Response::new(pb::ListQuarantinedResponse { records }))
    }

    async fn release_quarantined(
        &self,
        request: Request<pb::ReleaseQuarantinedRequest>,
    ) -> Result<Response<pb::ReleaseQuarantinedResponse>, Status> {
        let actor = actor_of(&request)?;
        let r = request.into_inner();
        let intake = &self.inner;
        intake.caught_up().await?;
        let _guard = intake.lock_source(&intake.quarantined_source(&r.id)?).await;
        intake.caught_up().await?;
        let (appends, customer) = {
            let st = intake.state.lock().expect("intake state");
            let Some(q) = st.quarantine.get(&r.id).cloned() else {
                return Err(Status::not_found(format!("no quarantined record `{}`", r.id)));
            };
            let mut fields = q.fields.clone();
            for (name, value) in fields_from_proto(r.corrections) {
                match fields.iter_mut().find(|(n, _)| *n == name) {
                    Some(slot) => slot.1 = value,
                    None => fields.push((name, value)),
                }
            }
            let validator = st
                .sources
                .get(&q.source)
                .map(|s| s.validator.clone())
                .unwrap_or_else(|| Arc::new(Validator::new(&SourceConfig::new(&q.source)).expect("empty config")));
            let values = validator.validate(&fields).map_err(|errors| {
                let list: Vec<String> =
                    errors.iter().map(|e| format!("{} ({}): {}", e.field, e.rule, e.message)).collect();
                Status::failed_precondition(format!("record `{}` still fails validation: {}", r.id, list.join("; ")))
            })?;
            let customer = customer_for(&q.source, &q.external_id);
            let mut cust = st.customers.get(&customer).cloned().unwrap_or_default();
            let correlation = Uuid::now_v7();
            let ctx = CommandContext {
                actor: actor.clone(),
                correlation_id: correlation,
                causation_id: None,
                source: sync_tag(&q.source),
                now: Utc::now(),
            };
            let (planned, _) = plan_record(&q.source, &q.external_id, q.modified_at_micros, values, &mut cust, &ctx)
                .map_err(|e| Status::failed_precondition(format!("record `{}` is refused: {e}", r.id)))?;
            let mut appends = Vec::new();
            if !planned.events.is_empty() {
                let expected = match st.customers.get(&customer).and_then(|c| c.version) {
                    Some(v) => ExpectedVersion::Exact(v),
                    None => ExpectedVersion::NoStream,
                };
                appends.push(StreamAppend {
                    stream: customer.stream(),
                    expected,
                    events: planned
                        .events
                        .iter()
                        .map(|e| NewEvent {
                            id: Uuid::now_v7(),
                            event_type: e.event_type().to_owned(),
                            schema_version: e.schema_version(),
                            metadata: Metadata {
                                actor: actor.clone(),
                                correlation_id: correlation,
                                causation_id: None,
                                source: sync_tag(&q.source),
                            },
                            payload: e.encode(),
                        })
                        .collect(),
                });
            }
            let e = IntakeEvent::QuarantineReleased(QuarantineReleased {
                id: r.id.clone(),
                by: actor.clone(),
                applied: planned.applied,
            });
            appends.push(StreamAppend {
                stream: source_stream(&q.source),
                expected: ExpectedVersion::Any,
                events: vec![new_event(&e, &actor, Uuid::now_v7(), Some(correlation))],
            });
            (appends, customer)
        };
        let position = intake.append(appends).await.map_err(status::from_eventlog)?;
        intake.wait_applied(position).await?;
        Ok(Response::new(pb::ReleaseQuarantinedResponse { customer_id: customer.0.to_string(), position }))
    }

    async fn reject_quarantined(
        &self,
        request: Request<pb::RejectQuarantinedRequest>,
    ) -> Result<Response<pb::RejectQuarantinedResponse>, Status> {
        let actor = actor_of(&request)?;
        let r = request.into_inner();
        self.inner.caught_up().await?;
        let _guard = self.inner.lock_source(&self.inner.quarantined_source(&r.id)?).await;
        self.inner.caught_up().await?;
        let source = {
            let st = self.inner.state.lock().expect("intake state");
            match st.quarantine.get(&r.id) {
                Some(q) => q.source.clone(),
                None => return Err(Status::not_found(format!("no quarantined record `{}`", r.id))),
            }
        };
        if r.reason.trim().is_empty() {
            return Err(status::invalid("reason", "required"));
        }
        let e = IntakeEvent::QuarantineRejected(QuarantineRejected { id: r.id, by: actor.clone(), reason: r.reason });
        let position = self.inner.record(&source_stream(&source), &actor, vec![e]).await?;
        Ok(Response::new(pb::RejectQuarantinedResponse { position }))
    }

    async fn get_field_provenance(
        &self,
        request: Request<pb::GetFieldProvenanceRequest>,
    ) -> Result<Response<pb::GetFieldProvenanceResponse>, Status> {
        let r = request.into_inner();
        let customer = if !r.customer_id.trim().is_empty() {
            let text = r.customer_id.trim();
            let bare = text.strip_prefix("customer-").unwrap_or(text);
            crm_domain::CustomerId(Uuid::parse_str(bare).map_err(|_| status::invalid("customer_id", "not a UUID"))?)
        } else {
            customer_for(&check_name("source", &r.source)?, &check_name("external_id", &r.external_id)?)
        };
        let c = if is_sync_customer(&customer) {
            self.inner.caught_up().await?;
            self.inner.state.lock().expect("intake state").customers.get(&customer).cloned()
        } else {
            // The intake keeps only the customers a sync writes to; fold any other one now.
            let events = self
                .inner
                .store
                .read_stream(&customer.stream(), None, Direction::Forwards, usize::MAX)
                .await
                .map_err(status::from_eventlog)?;
            let mut c = CustState::default();
            events.iter().for_each(|e| c.fold(e));
            Some(c)
        };
        let Some(c) = c.filter(|c| c.customer.id.is_some()) else {
            return Err(Status::not_found(format!("no customer {}", customer.0)));
        };
        let fields = c
            .customer
            .fields
            .iter()
            .map(|(field, value)| {
                let mut p = pb::FieldProvenance { field: field.clone(), value: value.clone(), ..Default::default() };
                if let Some(m) = c.meta.get(field) {
                    p.at_micros = m.at_micros;
                    match &m.origin {
                        crm_intake::Origin::Crm { actor } => {
                            p.origin = "crm".into();
                            p.actor = actor.clone();
                        }
                        crm_intake::Origin::Sync { source, external_id } => {
                            p.origin = "sync".into();
                            p.source = source.clone();
                            p.external_id = external_id.clone();
                        }
                    }
                }
                p
            })
            .collect();
        Ok(Response::new(pb::GetFieldProvenanceResponse { customer_id: customer.0.to_string(), fields }))
    }

    async fn get_source_health(
        &self,
        request: Request<pb::GetSourceHealthRequest>,
    ) -> Result<Response<pb::GetSourceHealthResponse>, Status> {
        let r = request.into_inner();
        self.inner.caught_up().await?;
        let st = self.inner.state.lock().expect("intake state");
        let sources = st
            .sources
            .iter()
            .filter(|(name, _)| r.source.is_empty() || **name == r.source)
            .map(|(name, s)| pb::SourceHealth {
                source: name.clone(),
                paused: s.breaker.paused.is_some(),
                paused_reason: s.breaker.paused.clone().unwrap_or_default(),
                batches: s.stats.batches,
                failed_batches: s.stats.failed,
                success_rate: if s.stats.batches == 0 {
                    1.0
                } else {
                    (s.stats.batches - s.stats.failed) as f64 / s.stats.batches as f64
                },
                consecutive_failures: s.breaker.consecutive_failures,
                records_applied: s.stats.applied,
                records_quarantined: s.stats.quarantined,
                last_success_micros: s.stats.last_success_micros.unwrap_or(0),
                last_latency_micros: s.stats.last_latency_micros,
                median_latency_micros: s.stats.median_latency(),
            })
            .collect();
        Ok(Response::new(pb::GetSourceHealthResponse { sources }))
    }

    async fn resume_source(
        &self,
        request: Request<pb::ResumeSourceRequest>,
    ) -> Result<Response<pb::ResumeSourceResponse>, Status> {
        let actor = actor_of(&request)?;
        let source = check_name("source", &request.into_inner().source)?;
        let _guard = self.inner.lock_source(&source).await;
        self.inner.caught_up().await?;
        let paused = self
            .inner
            .state
            .lock()
            .expect("intake state")
            .sources
            .get(&source)
            .is_some_and(|s| s.breaker.paused.is_some());
        if !paused {
            return Err(Status::failed_precondition(format!("source `{source}` is not paused")));
        }
        let e = IntakeEvent::SourceResumed(SourceResumed {
            source: source.clone(),
            by: actor.clone(),
            at_micros: now_micros(),
        });
        let position = self.inner.record(&source_stream(&source), &actor, vec![e]).await?;
        tracing::info!(%source, by = %actor, "intake: source resumed");
        Ok(Response::new(pb::ResumeSourceResponse { position }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn customer_ids_are_stable_per_source_and_external_id() {
        assert_eq!(customer_for("erp", "C-1"), customer_for("erp", "C-1"));
        assert_ne!(customer_for("erp", "C-1"), customer_for("erp2", "C-1"));
        assert_ne!(customer_for("erp", "C-1"), customer_for("erp", "C-2"));
    }

    #[test]
    fn names_are_checked() {
        assert!(check_name("source", " ").is_err());
        assert!(check_name("source", "a/b").is_err());
        assert_eq!(check_name("source", " erp ").unwrap(), "erp");
    }
}
