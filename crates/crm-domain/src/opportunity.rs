//! Opportunities: stage moves along the configured pipeline with evidence and a root-cause
//! tag, won only with three proofs, lost with a reason. Opened by qualifying a lead.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use crate::aggregate::Aggregate;
use crate::error::DomainError;
use crate::event::{CustomerDealWon, Event, OpportunityLost, OpportunityWon, Owned, StageMoved};
use crate::ids::{CustomerId, OpportunityId, UserId};
use crate::rules::{Rules, TransitionCondition};
use crate::CommandContext;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OpportunityStatus {
    #[default]
    New,
    Open,
    Won,
    Lost,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Opportunity {
    pub id: Option<OpportunityId>,
    pub customer_id: Option<CustomerId>,
    pub owner: Option<UserId>,
    pub title: String,
    pub amount_fen: Option<i64>,
    pub stage: String,
    pub stage_entered_at: Option<DateTime<Utc>>,
    pub status: OpportunityStatus,
    pub repeat_customer: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpportunityCommand {
    MoveStage {
        to: String,
        root_cause: String,
        evidence: BTreeMap<String, String>,
    },
    /// Emits `OpportunityWon` here and `CustomerDealWon` on the customer's stream.
    MarkWon {
        finance_receipt_ref: String,
        contract_ref: String,
        delivery_acceptance_ref: String,
    },
    MarkLost {
        reason: String,
    },
}

impl Opportunity {
    pub fn is_open(&self) -> bool {
        self.status == OpportunityStatus::Open
    }

    fn ensure_open(&self) -> Result<(OpportunityId, CustomerId), DomainError> {
        let (Some(id), Some(customer)) = (self.id, self.customer_id) else {
            return Err(DomainError::not_found("opportunity", "(new)"));
        };
        if !self.is_open() {
            return Err(DomainError::precondition(
                "opportunity.closed",
                format!(
                    "opportunity {id} is already {}",
                    if self.status == OpportunityStatus::Won { "won" } else { "lost" }
                ),
            ));
        }
        Ok((id, customer))
    }

    fn move_stage(
        &self,
        id: OpportunityId,
        to: String,
        root_cause: String,
        evidence: BTreeMap<String, String>,
        ctx: &CommandContext,
        rules: &Rules,
    ) -> Result<Vec<Event>, DomainError> {
        let to = to.trim().to_owned();
        if to == rules.pipeline.won_stage || to == rules.pipeline.lost_stage {
            return Err(DomainError::invalid(
                "to",
                "stage.end_stage",
                format!("{to} is reached with MarkWon or MarkLost"),
            ));
        }
        if !rules.pipeline.stages.contains(&to) {
            return Err(DomainError::invalid(
                "to",
                "stage.unknown",
                format!("no stage {to} in pipeline v{}", rules.version),
            ));
        }
        let Some(transition) = rules.transition(&self.stage, &to) else {
            return Err(DomainError::precondition(
                "stage.transition_not_allowed",
                format!("{} -> {to} is not an allowed move", self.stage),
            ));
        };
        let skip_rule = match transition.condition {
            Some(TransitionCondition::RepeatCustomer) if !self.repeat_customer => {
                return Err(DomainError::missing(
                    "stage.skip_requires_repeat_customer",
                    vec!["repeat_customer".into()],
                    format!("{} -> {to} is only for customers who have won a deal before", self.stage),
                ))
            }
            Some(TransitionCondition::RepeatCustomer) => Some("repeat_customer".to_owned()),
            None => None,
        };
        let root_cause = root_cause.trim().to_owned();
        if root_cause.is_empty() {
            return Err(DomainError::invalid(
                "root_cause",
                "stage.root_cause_required",
                "every stage move carries a root-cause tag",
            ));
        }
        if !rules.root_cause_tags.contains(&root_cause) {
            return Err(DomainError::invalid(
                "root_cause",
                "stage.root_cause_unknown",
                format!("{root_cause} is not one of {}", rules.root_cause_tags.join(", ")),
            ));
        }
        let evidence: BTreeMap<String, String> = evidence
            .into_iter()
            .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
            .filter(|(k, v)| !k.is_empty() && !v.is_empty())
            .collect();
        let missing: Vec<String> = transition.evidence.iter().filter(|e| !evidence.contains_key(*e)).cloned().collect();
        if !missing.is_empty() {
            return Err(DomainError::missing(
                "stage.evidence_required",
                missing,
                format!("{} -> {to} needs evidence", self.stage),
            ));
        }
        Ok(vec![Event::StageMoved(StageMoved {
            opportunity_id: id,
            from: self.stage.clone(),
            to,
            root_cause,
            evidence,
            skip_rule,
            moved_at: ctx.now,
            rules_version: rules.version,
        })])
    }
}

impl Aggregate for Opportunity {
    type Command = OpportunityCommand;
    const KIND: &'static str = "opportunity";

    fn handle(&self, cmd: OpportunityCommand, ctx: &CommandContext, rules: &Rules) -> Result<Vec<Event>, DomainError> {
        let (id, customer_id) = self.ensure_open()?;
        match cmd {
            OpportunityCommand::MoveStage { to, root_cause, evidence } => {
                self.move_stage(id, to, root_cause, evidence, ctx, rules)
            }
            OpportunityCommand::MarkWon { finance_receipt_ref, contract_ref, delivery_acceptance_ref } => {
                let proofs = [
                    ("finance_receipt_ref", finance_receipt_ref.trim()),
                    ("contract_ref", contract_ref.trim()),
                    ("delivery_acceptance_ref", delivery_acceptance_ref.trim()),
                ];
                let missing: Vec<String> =
                    proofs.iter().filter(|(_, v)| v.is_empty()).map(|(k, _)| (*k).to_owned()).collect();
                if !missing.is_empty() {
                    return Err(DomainError::missing(
                        "won.proofs_required",
                        missing,
                        "won needs a finance receipt, a contract record and a delivery acceptance",
                    ));
                }
                if self.stage != rules.last_stage() {
                    return Err(DomainError::missing(
                        "won.stage_required",
                        vec![rules.last_stage().to_owned()],
                        format!("opportunity {id} is at {}, not {}", self.stage, rules.last_stage()),
                    ));
                }
                Ok(vec![
                    Event::OpportunityWon(OpportunityWon {
                        opportunity_id: id,
                        customer_id,
                        from_stage: self.stage.clone(),
                        finance_receipt_ref: proofs[0].1.to_owned(),
                        contract_ref: proofs[1].1.to_owned(),
                        delivery_acceptance_ref: proofs[2].1.to_owned(),
                        won_at: ctx.now,
                    }),
                    Event::CustomerDealWon(CustomerDealWon { customer_id, opportunity_id: id }),
                ])
            }
            OpportunityCommand::MarkLost { reason } => {
                let reason = reason.trim().to_owned();
                if reason.is_empty() {
                    return Err(DomainError::invalid("reason", "lost.reason_required", "say why the deal was lost"));
                }
                Ok(vec![Event::OpportunityLost(OpportunityLost {
                    opportunity_id: id,
                    from_stage: self.stage.clone(),
                    reason,
                    lost_at: ctx.now,
                })])
            }
        }
    }

    fn apply(&mut self, event: &Event) {
        match event {
            Event::OpportunityOpened(e) => {
                *self = Opportunity {
                    id: Some(e.opportunity_id),
                    customer_id: Some(e.customer_id),
                    owner: Some(e.owner),
                    title: e.title.clone(),
                    amount_fen: e.amount_fen,
                    stage: e.stage.clone(),
                    stage_entered_at: Some(e.opened_at),
                    status: OpportunityStatus::Open,
                    repeat_customer: e.repeat_customer,
                }
            }
            Event::StageMoved(e) => {
                self.stage = e.to.clone();
                self.stage_entered_at = Some(e.moved_at);
            }
            Event::OpportunityWon(e) => {
                self.status = OpportunityStatus::Won;
                self.stage_entered_at = Some(e.won_at);
            }
            Event::OpportunityLost(e) => {
                self.status = OpportunityStatus::Lost;
                self.stage_entered_at = Some(e.lost_at);
            }
            Event::OwnerChanged(e) if matches!(e.subject, Owned::Opportunity(_)) => self.owner = Some(e.to),
            _ => {}
        }
    }
}
