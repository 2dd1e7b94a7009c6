//! The command path: load the aggregates a command needs by folding their streams, let
//! crm-domain decide, append the events atomically with `Exact` expectations on every stream
//! written, and retry on a concurrent write when the caller gave no expected version.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use chrono::Utc;
use crm_domain::{
    apply_changes, group_by_stream, handover, merge_customers, qualify_lead, unmerge_customers, Aggregate, CaptureLead,
    CommandContext, Customer, CustomerCommand, CustomerId, DomainError, DuplicateCheck, DuplicateSuspected, Event,
    Lead, LeadCommand, LeadId, MergeCustomers, Opportunity, OpportunityCommand, OpportunityId, QualifyLead, Receiver,
    RuleBook, Rules, RulesCommand, User, UserCommand, UserId, MATCHED_FIELDS, RULES_STREAM,
};
use crm_eventlog::{
    AppendResult, Direction, Durability, Error as LogError, EventStore, ExpectedVersion, Metadata, NewEvent,
    StreamAppend,
};
use tokio::sync::Mutex;
use uuid::Uuid;

use super::directory::Directory;
use super::error::CommandError;
use super::guard::DuplicateGuard;
use super::ids::IdempotencyKey;

const PAGE: usize = 1000;

/// The rules a capture is decided with: it depends on no rule, so it skips reading the rules
/// stream, and the default rule book is built once instead of per command.
static CAPTURE_RULES: std::sync::LazyLock<Rules> = std::sync::LazyLock::new(Rules::default);
/// Attempts for a command without an expected version that keeps meeting concurrent writes.
const MAX_ATTEMPTS: usize = 16;

/// How the caller wants the command run.
#[derive(Debug, Clone)]
pub(crate) struct RunOptions {
    pub(crate) expected_version: Option<u64>,
    pub(crate) key: Option<IdempotencyKey>,
    pub(crate) actor: String,
    pub(crate) correlation_id: Uuid,
    pub(crate) causation_id: Option<Uuid>,
    pub(crate) source: String,
}

/// A command with the ids of everything it touches.
#[derive(Debug, Clone)]
pub(crate) enum Cmd {
    /// A capture without the duplicate guard (the intake's form submissions).
    CaptureLead(CaptureLead),
    /// `CaptureLead` over gRPC: with the duplicate guard when the engine has one.
    CaptureLeadGuarded {
        capture: CaptureLead,
        create_anyway: bool,
    },
    /// `UpdateCustomer` over gRPC: with the duplicate guard when the engine has one.
    UpdateCustomerGuarded {
        customer: CustomerId,
        changes: BTreeMap<String, Option<String>>,
        save_anyway: bool,
    },
    AssignLead {
        lead: LeadId,
        assignee: UserId,
    },
    AutoAssignLead {
        lead: LeadId,
    },
    ClaimLead {
        lead: LeadId,
        user: UserId,
    },
    ReleaseLead {
        lead: LeadId,
        user: UserId,
        reason: String,
    },
    QualifyLead {
        lead: LeadId,
        cmd: QualifyLead,
    },
    Customer {
        customer: CustomerId,
        cmd: CustomerCommand,
    },
    Opportunity {
        opportunity: OpportunityId,
        cmd: OpportunityCommand,
    },
    Merge {
        survivor: CustomerId,
        absorbed: CustomerId,
        cmd: MergeCustomers,
    },
    Unmerge {
        survivor: CustomerId,
        absorbed: CustomerId,
        reason: String,
    },
    /// Two customers reviewed and judged not duplicates (`DuplicateDismissed` on `customer`).
    DismissDuplicate {
        customer: CustomerId,
        other: CustomerId,
        reason: String,
    },
    Handover {
        departing: UserId,
        receivers: Vec<UserId>,
    },
    User {
        user: UserId,
        cmd: UserCommand,
    },
    ChangeRules {
        rules: Box<Rules>,
        reason: String,
    },
}

impl Cmd {
    /// The stream `expected_version` refers to; every command writes to it.
    pub(crate) fn primary(&self) -> (String, String) {
        let (id, stream) = match self {
            Cmd::CaptureLead(c) | Cmd::CaptureLeadGuarded { capture: c, .. } => {
                (c.lead_id.to_string(), c.lead_id.stream())
            }
            Cmd::AssignLead { lead, .. }
            | Cmd::AutoAssignLead { lead }
            | Cmd::ClaimLead { lead, .. }
            | Cmd::ReleaseLead { lead, .. }
            | Cmd::QualifyLead { lead, .. } => (lead.to_string(), lead.stream()),
            Cmd::Customer { customer, .. }
            | Cmd::UpdateCustomerGuarded { customer, .. }
            | Cmd::DismissDuplicate { customer, .. } => (customer.to_string(), customer.stream()),
            Cmd::Opportunity { opportunity, .. } => (opportunity.to_string(), opportunity.stream()),
            Cmd::Merge { survivor, .. } | Cmd::Unmerge { survivor, .. } => (survivor.to_string(), survivor.stream()),
            Cmd::Handover { departing, .. } => (departing.to_string(), departing.stream()),
            Cmd::User { user, .. } => (user.to_string(), user.stream()),
            Cmd::ChangeRules { .. } => (RULES_STREAM.to_owned(), RULES_STREAM.to_owned()),
        };
        (id, stream)
    }
}

/// What a successful (or deduplicated) command wrote.
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    pub(crate) id: String,
    pub(crate) stream: String,
    pub(crate) stream_version: u64,
    pub(crate) position: u64,
    pub(crate) deduplicated: bool,
    /// (stream, event type, event id)
    pub(crate) events: Vec<(String, String, Uuid)>,
    pub(crate) details: BTreeMap<String, String>,
    /// What the duplicate guard found (CaptureLead, UpdateCustomer).
    pub(crate) suspected: Option<DuplicateSuspected>,
}

struct Loaded {
    version: Option<u64>,
    events: Vec<Event>,
    /// (position, version, id) per event, in order.
    recorded: Vec<(u64, u64, Uuid)>,
}

/// The streams one attempt of one command has read, with their versions.
pub(crate) struct Session<'a, S> {
    store: &'a S,
    streams: HashMap<String, Loaded>,
}

impl<'a, S: EventStore> Session<'a, S> {
    fn new(store: &'a S) -> Self {
        Session { store, streams: HashMap::new() }
    }

    /// Treats `stream` as empty without reading it; the append's `NoStream` expectation
    /// then checks the assumption.
    fn assume_new(&mut self, stream: &str) {
        self.streams.insert(stream.to_owned(), Loaded { version: None, events: Vec::new(), recorded: Vec::new() });
    }

    async fn fetch(&mut self, stream: &str) -> Result<&Loaded, CommandError> {
        if !self.streams.contains_key(stream) {
            let mut loaded = Loaded { version: None, events: Vec::new(), recorded: Vec::new() };
            loop {
                let from = loaded.version.map_or(0, |v| v + 1);
                let batch = self.store.read_stream(stream, Some(from), Direction::Forwards, PAGE).await?;
                let full = batch.len() == PAGE;
                for r in batch {
                    let event = Event::decode(&r.event_type, r.schema_version, &r.payload)
                        .map_err(|source| CommandError::Decode { stream: stream.to_owned(), source })?;
                    loaded.version = Some(r.version);
                    loaded.recorded.push((r.position, r.version, r.id));
                    loaded.events.push(event);
                }
                if !full {
                    break;
                }
            }
            self.streams.insert(stream.to_owned(), loaded);
        }
        Ok(&self.streams[stream])
    }

    async fn load<A: Aggregate>(&mut self, stream: &str) -> Result<A, CommandError> {
        Ok(A::fold(&self.fetch(stream).await?.events))
    }

    async fn rules(&mut self) -> Result<Rules, CommandError> {
        Ok(self.load::<RuleBook>(RULES_STREAM).await?.current)
    }

    async fn user(&mut self, id: UserId) -> Result<User, CommandError> {
        let user: User = self.load(&id.stream()).await?;
        if user.id.is_none() {
            return Err(DomainError::not_found("user", id).into());
        }
        Ok(user)
    }
}

/// Runs commands against one store.
pub(crate) struct Engine<S> {
    store: S,
    directory: Arc<Mutex<Directory>>,
    /// The duplicates read model for the guarded commands; without it they find nothing.
    guard: Option<Arc<DuplicateGuard>>,
}

impl<S: EventStore + Clone> Engine<S> {
    pub(crate) fn new(store: S) -> Self {
        Engine { store, directory: Arc::new(Mutex::new(Directory::default())), guard: None }
    }

    /// Checks `CaptureLeadGuarded` and `UpdateCustomerGuarded` against the duplicates read
    /// model.
    pub(crate) fn with_guard(mut self, guard: Arc<DuplicateGuard>) -> Self {
        self.guard = Some(guard);
        self
    }

    /// The master-key locks a guarded command holds until its append is acknowledged.
    async fn lock_keys<'g>(&self, guard: &'g DuplicateGuard, cmd: &Cmd) -> Vec<tokio::sync::MutexGuard<'g, ()>> {
        let fields: BTreeMap<String, String> = match cmd {
            Cmd::CaptureLeadGuarded { capture, .. } => [("phone", &capture.phone), ("uscc", &capture.uscc)]
                .into_iter()
                .filter_map(|(k, v)| v.clone().map(|v| (k.to_owned(), v)))
                .collect(),
            Cmd::UpdateCustomerGuarded { changes, .. } => ["phone", "uscc"]
                .into_iter()
                .filter_map(|k| changes.get(k).cloned().flatten().map(|v| (k.to_owned(), v)))
                .collect(),
            _ => return Vec::new(),
        };
        guard.lock_keys(&fields).await
    }

    /// The current rules and the `rules` stream version.
    pub(crate) async fn rules(&self) -> Result<(Rules, Option<u64>), CommandError> {
        let mut session = Session::new(&self.store);
        let rules = session.rules().await?;
        Ok((rules, session.streams[RULES_STREAM].version))
    }

    #[tracing::instrument(skip_all, fields(stream = tracing::field::Empty, actor = %opts.actor))]
    pub(crate) async fn execute(&self, opts: &RunOptions, cmd: Cmd) -> Result<Outcome, CommandError> {
        let (id, primary) = cmd.primary();
        tracing::Span::current().record("stream", primary.as_str());
        let guard = self.guard.clone();
        let _keys = match &guard {
            Some(guard) => self.lock_keys(guard, &cmd).await,
            None => Vec::new(),
        };
        if let (Cmd::CaptureLead(_) | Cmd::CaptureLeadGuarded { .. }, None) = (&cmd, opts.expected_version) {
            // Fast path: a capture almost always creates a new stream, so skip reading it
            // and let `NoStream` check that. A retry with the same idempotency key is
            // deduplicated by the log itself (same event ids); anything else falls through
            // to the full path below, which reads the stream and answers properly.
            let mut session = Session::new(&self.store);
            session.assume_new(&primary);
            let ctx = self.context(opts);
            match self.decide(&mut session, &cmd, &ctx).await {
                Ok(events) => {
                    let details = details_of(&events);
                    let suspected = suspected_of(&events);
                    let (appends, written) = self.appends(&session, opts, events)?;
                    match self.store.append_many(appends, Durability::Durable).await {
                        Ok(results) => {
                            let outcome = outcome(id, primary, &session, &written, &results, details);
                            return Ok(Outcome { suspected, ..outcome });
                        }
                        Err(LogError::WrongExpectedVersion { .. } | LogError::IdempotencyConflict { .. }) => {}
                        Err(e) => return Err(e.into()),
                    }
                }
                // A keyed retry of a capture that was accepted is answered from its own events
                // by the full path, even when the duplicate guard would refuse it now.
                Err(CommandError::Domain(_)) if opts.key.is_some() => {}
                Err(e) => return Err(name_missing(e, &id)),
            }
        }
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut session = Session::new(&self.store);
            let loaded = session.fetch(&primary).await?;
            if let Some(key) = &opts.key {
                if let Some(outcome) = replayed(key, &id, &primary, loaded) {
                    return Ok(outcome);
                }
            }
            if let Some(expected) = opts.expected_version {
                if loaded.version != Some(expected) {
                    return Err(CommandError::Conflict { stream: primary, expected, current: loaded.version });
                }
            }
            let ctx = self.context(opts);
            let events = self.decide(&mut session, &cmd, &ctx).await.map_err(|e| name_missing(e, &id))?;
            let details = details_of(&events);
            let suspected = suspected_of(&events);
            let (appends, written) = self.appends(&session, opts, events)?;
            match self.store.append_many(appends, Durability::Durable).await {
                Ok(results) => {
                    return Ok(Outcome { suspected, ..outcome(id, primary, &session, &written, &results, details) })
                }
                Err(LogError::WrongExpectedVersion { stream, .. })
                    if opts.expected_version.is_none() && attempt < MAX_ATTEMPTS =>
                {
                    tracing::debug!(%stream, attempt, "concurrent write; retrying");
                    continue;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    fn context(&self, opts: &RunOptions) -> CommandContext {
        CommandContext {
            actor: opts.actor.clone(),
            correlation_id: opts.correlation_id,
            causation_id: opts.causation_id,
            source: opts.source.clone(),
            now: Utc::now(),
        }
    }

    async fn decide(
        &self,
        s: &mut Session<'_, S>,
        cmd: &Cmd,
        ctx: &CommandContext,
    ) -> Result<Vec<Event>, CommandError> {
        if let Cmd::CaptureLead(capture) = cmd {
            let lead: Lead = s.load(&capture.lead_id.stream()).await?;
            return Ok(lead.handle(LeadCommand::Capture(capture.clone()), ctx, &CAPTURE_RULES)?);
        }
        if let Cmd::CaptureLeadGuarded { capture, create_anyway } = cmd {
            let lead: Lead = s.load(&capture.lead_id.stream()).await?;
            let mut duplicates = match &self.guard {
                Some(guard) => guard.check(&self.store, capture.lead_id.0, &lead_profile(capture)).await?,
                None => DuplicateCheck::default(),
            };
            duplicates.proceed_anyway = *create_anyway;
            let command = LeadCommand::CaptureGuarded { capture: capture.clone(), duplicates };
            return Ok(lead.handle(command, ctx, &CAPTURE_RULES)?);
        }
        let rules = s.rules().await?;
        let events = match cmd.clone() {
            Cmd::CaptureLead(_) | Cmd::CaptureLeadGuarded { .. } => unreachable!("handled above"),
            Cmd::UpdateCustomerGuarded { customer, changes, save_anyway } => {
                let state: Customer = s.load(&customer.stream()).await?;
                // The plain update first: its refusals come before the lookup, and its
                // changes give the profile to look up.
                let update = CustomerCommand::Update { changes: changes.clone() };
                let updated = state.handle(update, ctx, &rules)?;
                let mut duplicates = match (&self.guard, updated.first()) {
                    (Some(guard), Some(Event::CustomerUpdated(e)))
                        if e.changes.iter().any(|c| MATCHED_FIELDS.contains(&c.field.as_str())) =>
                    {
                        let mut fields = state.fields.clone();
                        apply_changes(&mut fields, &e.changes);
                        guard.check(&self.store, customer.0, &fields).await?
                    }
                    _ => DuplicateCheck::default(),
                };
                duplicates.proceed_anyway = save_anyway;
                state.handle(CustomerCommand::UpdateGuarded { changes, duplicates }, ctx, &rules)?
            }
            Cmd::AssignLead { lead, assignee } => {
                let state = existing_lead(s, lead).await?;
                let user = s.user(assignee).await?;
                let summary = user.summary().ok_or_else(|| DomainError::not_found("user", assignee))?;
                state.handle(LeadCommand::Assign { assignee: summary }, ctx, &rules)?
            }
            Cmd::AutoAssignLead { lead } => {
                let state: Lead = s.load(&lead.stream()).await?;
                let candidates = {
                    let mut directory = self.directory.lock().await;
                    directory.catch_up(&self.store).await?;
                    directory.candidates()
                };
                state.handle(LeadCommand::AutoAssign { candidates }, ctx, &rules)?
            }
            Cmd::ClaimLead { lead, user } => {
                let state = existing_lead(s, lead).await?;
                let summary = s.user(user).await?.summary().ok_or_else(|| DomainError::not_found("user", user))?;
                state.handle(LeadCommand::Claim { user: summary }, ctx, &rules)?
            }
            Cmd::ReleaseLead { lead, user, reason } => {
                let state: Lead = s.load(&lead.stream()).await?;
                state.handle(LeadCommand::Release { user_id: user, reason }, ctx, &rules)?
            }
            Cmd::QualifyLead { lead, cmd } => {
                let state: Lead = s.load(&lead.stream()).await?;
                let customer: Customer = s.load(&cmd.customer_id.stream()).await?;
                let opportunity: Opportunity = s.load(&cmd.opportunity_id.stream()).await?;
                qualify_lead(&state, &customer, &opportunity, cmd, ctx, &rules)?
            }
            Cmd::Customer { customer, cmd } => {
                let state: Customer = s.load(&customer.stream()).await?;
                state.handle(cmd, ctx, &rules)?
            }
            Cmd::Opportunity { opportunity, cmd } => {
                let state: Opportunity = s.load(&opportunity.stream()).await?;
                state.handle(cmd, ctx, &rules)?
            }
            Cmd::Merge { survivor, absorbed, cmd } => {
                let survivor: Customer = s.load(&survivor.stream()).await?;
                let absorbed_state: Customer = s.load(&absorbed.stream()).await?;
                if absorbed_state.id.is_none() {
                    return Err(DomainError::not_found("customer", absorbed).into());
                }
                merge_customers(&survivor, &absorbed_state, cmd, ctx, &rules)?
            }
            Cmd::Unmerge { survivor, absorbed, reason } => {
                let survivor: Customer = s.load(&survivor.stream()).await?;
                let absorbed_state: Customer = s.load(&absorbed.stream()).await?;
                if absorbed_state.id.is_none() {
                    return Err(DomainError::not_found("customer", absorbed).into());
                }
                unmerge_customers(&survivor, &absorbed_state, &reason, ctx)?
            }
            Cmd::DismissDuplicate { customer, other, reason } => {
                let reason = reason.trim().to_owned();
                if reason.is_empty() {
                    return Err(
                        DomainError::invalid("reason", "duplicate.reason_required", "say why they differ").into()
                    );
                }
                if customer == other {
                    return Err(DomainError::invalid(
                        "customer_b_id",
                        "duplicate.same_customer",
                        "a pair is two customers",
                    )
                    .into());
                }
                for id in [customer, other] {
                    let state: Customer = s.load(&id.stream()).await?;
                    if state.id.is_none() {
                        return Err(DomainError::not_found("customer", id).into());
                    }
                }
                vec![Event::DuplicateDismissed(crm_domain::DuplicateDismissed {
                    customer_id: customer,
                    other_id: other,
                    reason,
                })]
            }
            Cmd::Handover { departing, receivers } => {
                let departing_user = s.user(departing).await?;
                let (owned, loads) = {
                    let mut directory = self.directory.lock().await;
                    directory.catch_up(&self.store).await?;
                    let loads: Vec<u32> = receivers.iter().map(|r| directory.owned_by(*r).len() as u32).collect();
                    (directory.owned_by(departing), loads)
                };
                let mut receiver_states = Vec::with_capacity(receivers.len());
                for (id, load) in receivers.iter().zip(loads) {
                    receiver_states.push(Receiver { user: s.user(*id).await?, load });
                }
                let mut leads = Vec::new();
                for id in &owned.leads {
                    leads.push(s.load::<Lead>(&id.stream()).await?);
                }
                let mut customers = Vec::new();
                for id in &owned.customers {
                    customers.push(s.load::<Customer>(&id.stream()).await?);
                }
                let mut opportunities = Vec::new();
                for id in &owned.opportunities {
                    opportunities.push(s.load::<Opportunity>(&id.stream()).await?);
                }
                handover(&departing_user, &receiver_states, &leads, &customers, &opportunities)?
            }
            Cmd::User { user, cmd } => {
                let state: User = s.load(&user.stream()).await?;
                state.handle(cmd, ctx, &rules)?
            }
            Cmd::ChangeRules { rules: new_rules, reason } => {
                let book: RuleBook = s.load(RULES_STREAM).await?;
                book.handle(RulesCommand::ChangeRules { rules: *new_rules, reason }, ctx, &rules)?
            }
        };
        Ok(events)
    }

    #[allow(clippy::type_complexity)]
    fn appends(
        &self,
        session: &Session<'_, S>,
        opts: &RunOptions,
        events: Vec<Event>,
    ) -> Result<(Vec<StreamAppend>, Vec<(String, String, Uuid)>), CommandError> {
        if events.len() > usize::from(u16::MAX) {
            return Err(CommandError::request("command", "emits more than 65535 events; split it"));
        }
        let metadata = Metadata {
            actor: opts.actor.clone(),
            correlation_id: opts.correlation_id,
            causation_id: opts.causation_id,
            source: opts.source.clone(),
        };
        let mut index: u16 = 0;
        let mut written = Vec::new();
        let mut appends = Vec::new();
        for group in group_by_stream(events) {
            let expected = match session.streams.get(&group.stream) {
                Some(Loaded { version: Some(v), .. }) => ExpectedVersion::Exact(*v),
                Some(Loaded { version: None, .. }) => ExpectedVersion::NoStream,
                // Written without being read (a won deal on the customer): order-independent.
                None => ExpectedVersion::Any,
            };
            let mut new_events = Vec::with_capacity(group.events.len());
            for event in group.events {
                let id = opts.key.as_ref().map_or_else(Uuid::now_v7, |k| k.event_id(index));
                index += 1;
                written.push((group.stream.clone(), event.event_type().to_owned(), id));
                new_events.push(NewEvent {
                    id,
                    event_type: event.event_type().to_owned(),
                    schema_version: event.schema_version(),
                    metadata: metadata.clone(),
                    payload: event.encode(),
                });
            }
            appends.push(StreamAppend { stream: group.stream, expected, events: new_events });
        }
        Ok((appends, written))
    }
}

/// A lead as the matcher sees a customer: the company is the customer's name and the person
/// its contact; without a company the person is the customer.
fn lead_profile(c: &CaptureLead) -> BTreeMap<String, String> {
    let present = |v: &Option<String>| v.as_deref().map(str::trim).filter(|v| !v.is_empty()).map(str::to_owned);
    let mut fields = BTreeMap::new();
    let (company, person) = (present(&c.company), present(&c.name));
    match (company, person) {
        (Some(company), person) => {
            fields.insert("name".to_owned(), company);
            if let Some(person) = person {
                fields.insert("contact_name".to_owned(), person);
            }
        }
        (None, Some(person)) => {
            fields.insert("name".to_owned(), person);
        }
        (None, None) => {}
    }
    for (field, value) in [("phone", &c.phone), ("email", &c.email), ("uscc", &c.uscc), ("region", &c.region)] {
        if let Some(v) = present(value) {
            fields.insert(field.to_owned(), v);
        }
    }
    fields
}

async fn existing_lead<S: EventStore>(s: &mut Session<'_, S>, id: LeadId) -> Result<Lead, CommandError> {
    let lead: Lead = s.load(&id.stream()).await?;
    if lead.id.is_none() {
        return Err(DomainError::not_found("lead", id).into());
    }
    Ok(lead)
}

/// Aggregates cannot name themselves before they exist; the primary id fills that in.
fn name_missing(e: CommandError, primary_id: &str) -> CommandError {
    match e {
        CommandError::Domain(DomainError::NotFound { kind, id }) if id.starts_with('(') => {
            CommandError::Domain(DomainError::NotFound { kind, id: primary_id.to_owned() })
        }
        other => other,
    }
}

fn outcome(
    id: String,
    primary: String,
    session: &Session<'_, impl EventStore>,
    written: &[(String, String, Uuid)],
    results: &[AppendResult],
    details: BTreeMap<String, String>,
) -> Outcome {
    let mut streams: Vec<&str> = Vec::new();
    for (stream, _, _) in written {
        if !streams.contains(&stream.as_str()) {
            streams.push(stream);
        }
    }
    let primary_result = streams.iter().position(|s| *s == primary).and_then(|i| results.get(i));
    let stream_version = primary_result
        .map(|r| r.last_version)
        .or_else(|| session.streams.get(&primary).and_then(|l| l.version))
        .unwrap_or_default();
    Outcome {
        id,
        stream: primary,
        stream_version,
        position: results.iter().map(|r| r.last_position).max().unwrap_or_default(),
        deduplicated: !results.is_empty() && results.iter().all(|r| r.deduplicated),
        events: written.to_vec(),
        details,
        suspected: None,
    }
}

/// The answer to a retry: the events this key already wrote to the primary stream.
fn replayed(key: &IdempotencyKey, id: &str, primary: &str, loaded: &Loaded) -> Option<Outcome> {
    let mine: Vec<usize> = (0..loaded.recorded.len()).filter(|i| key.owns(&loaded.recorded[*i].2)).collect();
    let last = *mine.last()?;
    let events: Vec<Event> = mine.iter().map(|i| loaded.events[*i].clone()).collect();
    Some(Outcome {
        id: id.to_owned(),
        stream: primary.to_owned(),
        stream_version: loaded.recorded[last].1,
        position: loaded.recorded[last].0,
        deduplicated: true,
        events: mine
            .iter()
            .map(|i| (primary.to_owned(), loaded.events[*i].event_type().to_owned(), loaded.recorded[*i].2))
            .collect(),
        details: details_of(&events),
        suspected: suspected_of(&events),
    })
}

/// The guard's findings among `events`, so a deduplicated answer gives the same ones.
fn suspected_of(events: &[Event]) -> Option<DuplicateSuspected> {
    events.iter().find_map(|e| match e {
        Event::DuplicateSuspected(s) => Some(s.clone()),
        _ => None,
    })
}

/// Command-specific facts for the response, taken from the events so a deduplicated answer
/// gives the same ones.
fn details_of(events: &[Event]) -> BTreeMap<String, String> {
    let mut d = BTreeMap::new();
    for event in events {
        match event {
            Event::LeadCaptured(e) => {
                d.insert("phone_e164".into(), e.phone_e164.clone().unwrap_or_default());
                d.insert("region".into(), e.region.clone().unwrap_or_default());
            }
            Event::LeadAssigned(e) => {
                d.insert("assignee".into(), e.assignee.to_string());
                if let crm_domain::AssignmentReason::Automatic(trace) = &e.reason {
                    d.insert("rule".into(), trace.rule.clone());
                    d.insert("strategy".into(), trace.strategy.as_str().into());
                    if let Some(arm) = &trace.arm {
                        d.insert("arm".into(), arm.arm.clone());
                    }
                }
            }
            Event::LeadQualified(e) => {
                d.insert("customer_id".into(), e.customer_id.to_string());
                d.insert("opportunity_id".into(), e.opportunity_id.to_string());
            }
            Event::ActivityLogged(e) => {
                d.insert("activity_id".into(), e.activity_id.to_string());
                if let Some(from) = e.inherited_from {
                    d.insert("inherited_from".into(), from.to_string());
                }
                d.insert("inherited_fields".into(), e.inherited_fields.join(","));
            }
            Event::ContactAdded(e) => {
                d.insert("contact_id".into(), e.contact.contact_id.to_string());
            }
            Event::StageMoved(e) => {
                d.insert("stage".into(), e.to.clone());
            }
            Event::CustomerUnmerged(e) => {
                d.insert(
                    "post_merge_activities".into(),
                    e.post_merge_activities.iter().map(ToString::to_string).collect::<Vec<_>>().join(","),
                );
            }
            Event::UserHandedOver(e) => {
                d.insert("items".into(), e.items.to_string());
            }
            Event::RulesChanged(e) => {
                d.insert("rules_version".into(), e.rules.version.to_string());
            }
            _ => {}
        }
    }
    d
}
