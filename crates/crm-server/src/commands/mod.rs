//! `crm.v1.CommandService`: one RPC per domain command.
//!
//! Each request becomes a domain command ([`convert`]), runs through the [`engine::Engine`]
//! (load by folding streams, decide in crm-domain, append with `Exact` expectations, retry on
//! a concurrent write only when the caller gave no expected version), and answers with what
//! was written. Refusals map to statuses in one place ([`error`]); nothing is written on a
//! refusal.

mod convert;
mod directory;
mod engine;
mod error;
mod guard;
mod ids;

use std::sync::Arc;

use crm_domain::{
    CaptureLead, CustomerCommand, Event, LogActivity, MergeCustomers, NewContact, OpportunityCommand, QualifyLead,
    UserCommand,
};
use crm_eventlog::{EventStore, RecordedEvent};
use crm_proto::v1 as pb;
use tonic::{Request, Response, Status};

pub use error::CommandError;
pub(crate) use guard::DuplicateGuard;

use convert::{id, new_id, opt, optional_id, run_options};
use engine::Outcome;
// The intake captures form leads through the same engine.
pub(crate) use engine::{Cmd, Engine, RunOptions};
pub(crate) use ids::IdempotencyKey;

/// Renders a stored payload as JSON (decoded and upcast), for `RecordedEvent.payload_json`.
pub fn render_payload(e: &RecordedEvent) -> Option<String> {
    let event = Event::decode(&e.event_type, e.schema_version, &e.payload).ok()?;
    serde_json::to_string(&event).ok()
}

/// The `crm.v1.CommandService` over any [`EventStore`].
pub struct Commands<S> {
    engine: Arc<Engine<S>>,
}

impl<S: EventStore + Clone> Commands<S> {
    /// Without the duplicate guard: CaptureLead and UpdateCustomer find no duplicates.
    pub fn new(store: S) -> Self {
        Commands { engine: Arc::new(Engine::new(store)) }
    }

    /// With the duplicate guard over the running duplicates read model.
    pub(crate) fn with_guard(store: S, guard: Arc<DuplicateGuard>) -> Self {
        Commands { engine: Arc::new(Engine::new(store).with_guard(guard)) }
    }

    async fn run(&self, opts: RunOptions, cmd: Cmd) -> Result<Response<pb::CommandResponse>, Status> {
        let outcome = self.engine.execute(&opts, cmd).await?;
        Ok(Response::new(to_proto(outcome)))
    }
}

fn to_proto(o: Outcome) -> pb::CommandResponse {
    pb::CommandResponse {
        id: o.id,
        stream: o.stream,
        stream_version: o.stream_version,
        position: o.position,
        deduplicated: o.deduplicated,
        events: o
            .events
            .into_iter()
            .map(|(stream, event_type, id)| pb::AppendedEvent { stream, event_type, event_id: id.to_string() })
            .collect(),
        details: o.details.into_iter().collect(),
        suspected_duplicates: o.suspected.map(suspected_to_proto).unwrap_or_default(),
    }
}

fn suspected_to_proto(s: crm_domain::DuplicateSuspected) -> Vec<pb::SuspectedDuplicate> {
    let exact = s.collisions.into_iter().map(|c| pb::SuspectedDuplicate {
        customer_id: c.customer_id.to_string(),
        exact_key: c.key.as_str().to_owned(),
        ..Default::default()
    });
    let fuzzy = s.suspected.into_iter().map(|m| pb::SuspectedDuplicate {
        customer_id: m.customer_id.to_string(),
        exact_key: String::new(),
        score: f64::from(m.score_milli) / 1000.0,
        decision: m.decision,
        fields: m
            .fields
            .into_iter()
            .map(|f| pb::FieldContribution {
                field: f.field,
                outcome: f.outcome,
                weight: f64::from(f.weight_centi) / 100.0,
                reason: f.reason,
            })
            .collect(),
    });
    exact.chain(fuzzy).collect()
}

type Answer = Result<Response<pb::CommandResponse>, Status>;

/// The authenticated principal's user id (the auth layer puts it there) and the message.
fn split<T>(request: Request<T>) -> (Option<String>, T) {
    let principal = crate::auth::principal(&request).ok().map(|p| p.user_id.clone());
    (principal, request.into_inner())
}

/// Most items (map entries, list elements) one collection of a command may carry.
pub const MAX_ITEMS_PER_FIELD: usize = 200;

/// Refuses a collection over [`MAX_ITEMS_PER_FIELD`] with ResourceExhausted naming it.
fn at_most(field: &str, actual: usize) -> Result<(), CommandError> {
    if actual > MAX_ITEMS_PER_FIELD {
        return Err(CommandError::TooMany { field: field.to_owned(), limit: MAX_ITEMS_PER_FIELD, actual });
    }
    Ok(())
}

#[tonic::async_trait]
impl<S: EventStore + Clone> pb::command_service_server::CommandService for Commands<S> {
    async fn capture_lead(&self, request: Request<pb::CaptureLeadRequest>) -> Answer {
        let (principal, r) = split(request);
        at_most("custom_attributes", r.custom_attributes.len())?;
        let opts = run_options(r.options.clone(), principal, "CaptureLead")?;
        let channel = convert::channel(&r)?;
        let cmd = CaptureLead {
            lead_id: new_id("lead_id", &r.lead_id, &opts)?,
            name: opt(r.name),
            company: opt(r.company),
            phone: opt(r.phone),
            email: opt(r.email),
            wechat: opt(r.wechat),
            uscc: opt(r.uscc),
            region: opt(r.region),
            channel,
            source: r.source,
            custom_attributes: r.custom_attributes.into_iter().collect(),
        };
        self.run(opts, Cmd::CaptureLeadGuarded { capture: cmd, create_anyway: r.create_anyway }).await
    }

    async fn assign_lead(&self, request: Request<pb::AssignLeadRequest>) -> Answer {
        let (principal, r) = split(request);
        let opts = run_options(r.options, principal, "AssignLead")?;
        let cmd = Cmd::AssignLead { lead: id("lead_id", &r.lead_id)?, assignee: id("assignee_id", &r.assignee_id)? };
        self.run(opts, cmd).await
    }

    async fn auto_assign_lead(&self, request: Request<pb::AutoAssignLeadRequest>) -> Answer {
        let (principal, r) = split(request);
        let opts = run_options(r.options, principal, "AutoAssignLead")?;
        self.run(opts, Cmd::AutoAssignLead { lead: id("lead_id", &r.lead_id)? }).await
    }

    async fn claim_lead(&self, request: Request<pb::ClaimLeadRequest>) -> Answer {
        let (principal, r) = split(request);
        let opts = run_options(r.options, principal, "ClaimLead")?;
        self.run(opts, Cmd::ClaimLead { lead: id("lead_id", &r.lead_id)?, user: id("user_id", &r.user_id)? }).await
    }

    async fn release_lead(&self, request: Request<pb::ReleaseLeadRequest>) -> Answer {
        let (principal, r) = split(request);
        let opts = run_options(r.options, principal, "ReleaseLead")?;
        let cmd =
            Cmd::ReleaseLead { lead: id("lead_id", &r.lead_id)?, user: id("user_id", &r.user_id)?, reason: r.reason };
        self.run(opts, cmd).await
    }

    async fn qualify_lead(&self, request: Request<pb::QualifyLeadRequest>) -> Answer {
        let (principal, r) = split(request);
        let opts = run_options(r.options, principal, "QualifyLead")?;
        let customer_id = if r.link_existing {
            id("customer_id", &r.customer_id)?
        } else {
            new_id("customer_id", &r.customer_id, &opts)?
        };
        let cmd = QualifyLead {
            customer_id,
            link_existing: r.link_existing,
            opportunity_id: new_id("opportunity_id", &r.opportunity_id, &opts)?,
            title: r.title,
            amount_fen: r.amount_fen,
        };
        self.run(opts, Cmd::QualifyLead { lead: id("lead_id", &r.lead_id)?, cmd }).await
    }

    async fn create_customer(&self, request: Request<pb::CreateCustomerRequest>) -> Answer {
        let (principal, r) = split(request);
        at_most("fields", r.fields.len())?;
        let opts = run_options(r.options, principal, "CreateCustomer")?;
        let customer = new_id("customer_id", &r.customer_id, &opts)?;
        let cmd = CustomerCommand::Create {
            customer_id: customer,
            fields: r.fields.into_iter().collect(),
            owner: optional_id("owner_id", &r.owner_id)?,
        };
        self.run(opts, Cmd::Customer { customer, cmd }).await
    }

    async fn update_customer(&self, request: Request<pb::UpdateCustomerRequest>) -> Answer {
        let (principal, r) = split(request);
        at_most("set", r.set.len())?;
        at_most("clear", r.clear.len())?;
        let opts = run_options(r.options, principal, "UpdateCustomer")?;
        let mut changes: std::collections::BTreeMap<String, Option<String>> =
            r.set.into_iter().map(|(k, v)| (k, Some(v))).collect();
        for field in r.clear {
            if changes.insert(field.clone(), None).is_some() {
                return Err(CommandError::request("clear", format!("{field} is both set and cleared")).into());
            }
        }
        let customer = id("customer_id", &r.customer_id)?;
        self.run(opts, Cmd::UpdateCustomerGuarded { customer, changes, save_anyway: r.save_anyway }).await
    }

    async fn add_contact(&self, request: Request<pb::AddContactRequest>) -> Answer {
        let (principal, r) = split(request);
        let opts = run_options(r.options, principal, "AddContact")?;
        let contact = NewContact {
            contact_id: new_id("contact_id", &r.contact_id, &opts)?,
            name: r.name,
            title: opt(r.title),
            phone: opt(r.phone),
            email: opt(r.email),
            wechat: opt(r.wechat),
        };
        let cmd =
            Cmd::Customer { customer: id("customer_id", &r.customer_id)?, cmd: CustomerCommand::AddContact(contact) };
        self.run(opts, cmd).await
    }

    async fn log_activity(&self, request: Request<pb::LogActivityRequest>) -> Answer {
        let (principal, r) = split(request);
        at_most("keywords", r.keywords.len())?;
        let opts = run_options(r.options, principal, "LogActivity")?;
        let activity = LogActivity {
            activity_id: new_id("activity_id", &r.activity_id, &opts)?,
            by: id("by_user_id", &r.by_user_id)?,
            kind: convert::activity_kind(r.kind)?,
            occurred_at: convert::timestamp("occurred_at", r.occurred_at)?,
            duration_minutes: r.duration_minutes,
            keywords: r.keywords,
            summary: r.summary,
            next_follow_up: convert::date("next_follow_up", &r.next_follow_up)?,
            contact_id: optional_id("contact_id", &r.contact_id)?,
            opportunity_id: optional_id("opportunity_id", &r.opportunity_id)?,
        };
        let cmd =
            Cmd::Customer { customer: id("customer_id", &r.customer_id)?, cmd: CustomerCommand::LogActivity(activity) };
        self.run(opts, cmd).await
    }

    async fn move_stage(&self, request: Request<pb::MoveStageRequest>) -> Answer {
        let (principal, r) = split(request);
        at_most("evidence", r.evidence.len())?;
        let opts = run_options(r.options, principal, "MoveStage")?;
        let cmd = OpportunityCommand::MoveStage {
            to: r.to_stage,
            root_cause: r.root_cause,
            evidence: r.evidence.into_iter().collect(),
        };
        self.run(opts, Cmd::Opportunity { opportunity: id("opportunity_id", &r.opportunity_id)?, cmd }).await
    }

    async fn mark_won(&self, request: Request<pb::MarkWonRequest>) -> Answer {
        let (principal, r) = split(request);
        let opts = run_options(r.options, principal, "MarkWon")?;
        let cmd = OpportunityCommand::MarkWon {
            finance_receipt_ref: r.finance_receipt_ref,
            contract_ref: r.contract_ref,
            delivery_acceptance_ref: r.delivery_acceptance_ref,
        };
        self.run(opts, Cmd::Opportunity { opportunity: id("opportunity_id", &r.opportunity_id)?, cmd }).await
    }

    async fn mark_lost(&self, request: Request<pb::MarkLostRequest>) -> Answer {
        let (principal, r) = split(request);
        let opts = run_options(r.options, principal, "MarkLost")?;
        let cmd = OpportunityCommand::MarkLost { reason: r.reason };
        self.run(opts, Cmd::Opportunity { opportunity: id("opportunity_id", &r.opportunity_id)?, cmd }).await
    }

    async fn merge_customers(&self, request: Request<pb::MergeCustomersRequest>) -> Answer {
        let (principal, r) = split(request);
        at_most("winners", r.winners.len())?;
        let opts = run_options(r.options, principal, "MergeCustomers")?;
        let cmd = MergeCustomers {
            reason: r.reason,
            reason_text: r.reason_text,
            winners: convert::merge_winners(r.winners)?,
        };
        let cmd = Cmd::Merge {
            survivor: id("survivor_id", &r.survivor_id)?,
            absorbed: id("absorbed_id", &r.absorbed_id)?,
            cmd,
        };
        self.run(opts, cmd).await
    }

    async fn unmerge_customers(&self, request: Request<pb::UnmergeCustomersRequest>) -> Answer {
        let (principal, r) = split(request);
        let opts = run_options(r.options, principal, "UnmergeCustomers")?;
        let cmd = Cmd::Unmerge {
            survivor: id("survivor_id", &r.survivor_id)?,
            absorbed: id("absorbed_id", &r.absorbed_id)?,
            reason: r.reason,
        };
        self.run(opts, cmd).await
    }

    async fn handover_owner(&self, request: Request<pb::HandoverOwnerRequest>) -> Answer {
        let (principal, r) = split(request);
        at_most("receiver_ids", r.receiver_ids.len())?;
        let opts = run_options(r.options, principal, "HandoverOwner")?;
        let receivers = r
            .receiver_ids
            .iter()
            .enumerate()
            .map(|(i, text)| id(&format!("receiver_ids[{i}]"), text))
            .collect::<Result<Vec<_>, _>>()?;
        let cmd = Cmd::Handover { departing: id("departing_user_id", &r.departing_user_id)?, receivers };
        self.run(opts, cmd).await
    }

    async fn create_user(&self, request: Request<pb::CreateUserRequest>) -> Answer {
        let (principal, r) = split(request);
        let opts = run_options(r.options, principal, "CreateUser")?;
        let user = new_id("user_id", &r.user_id, &opts)?;
        let cmd = UserCommand::Create {
            user_id: user,
            name: r.name,
            role: convert::role("role", r.role)?,
            region: opt(r.region),
            team: opt(r.team),
            capacity: r.capacity,
        };
        self.run(opts, Cmd::User { user, cmd }).await
    }

    async fn set_user_role(&self, request: Request<pb::SetUserRoleRequest>) -> Answer {
        let (principal, r) = split(request);
        let opts = run_options(r.options, principal, "SetUserRole")?;
        let cmd = UserCommand::SetRole { role: convert::role("role", r.role)? };
        self.run(opts, Cmd::User { user: id("user_id", &r.user_id)?, cmd }).await
    }

    async fn set_user_region(&self, request: Request<pb::SetUserRegionRequest>) -> Answer {
        let (principal, r) = split(request);
        let opts = run_options(r.options, principal, "SetUserRegion")?;
        let cmd = UserCommand::SetRegion { region: opt(r.region), team: opt(r.team) };
        self.run(opts, Cmd::User { user: id("user_id", &r.user_id)?, cmd }).await
    }

    async fn deactivate_user(&self, request: Request<pb::DeactivateUserRequest>) -> Answer {
        let (principal, r) = split(request);
        let opts = run_options(r.options, principal, "DeactivateUser")?;
        let cmd = UserCommand::Deactivate { reason: r.reason };
        self.run(opts, Cmd::User { user: id("user_id", &r.user_id)?, cmd }).await
    }

    async fn change_rules(&self, request: Request<pb::ChangeRulesRequest>) -> Answer {
        let (principal, r) = split(request);
        let opts = run_options(r.options, principal, "ChangeRules")?;
        let rules = r.rules.ok_or_else(|| CommandError::request("rules", "required"))?;
        let cmd = Cmd::ChangeRules { rules: Box::new(convert::rules_from_proto(rules)?), reason: r.reason };
        self.run(opts, cmd).await
    }

    async fn get_rules(&self, _: Request<pb::GetRulesRequest>) -> Result<Response<pb::GetRulesResponse>, Status> {
        let (rules, stream_version) = self.engine.rules().await?;
        Ok(Response::new(pb::GetRulesResponse { rules: Some(convert::rules_to_proto(&rules)), stream_version }))
    }
}
