//! Leads: capture from any channel, assignment (manual or by rules), claim, release.
//! Qualification touches several streams and lives in [`crate::process`].

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use crate::aggregate::Aggregate;
use crate::assignment::{choose_assignee, Candidate};
use crate::error::DomainError;
use crate::event::{AssignmentReason, Channel, Event, LeadAssigned, LeadCaptured, LeadClaimed, LeadReleased, Owned};
use crate::ids::{CustomerId, LeadId, OpportunityId, UserId};
use crate::normalize::{normalize_company, normalize_email, normalize_person_name, normalize_phone, normalize_uscc};
use crate::rules::Rules;
use crate::user::UserSummary;
use crate::CommandContext;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LeadStatus {
    /// No `LeadCaptured` yet: the stream does not exist.
    #[default]
    New,
    /// In the pool: nobody is responsible.
    Unassigned,
    /// Assigned, not yet claimed (the unclaimed alert runs on this).
    Assigned,
    Claimed,
    Qualified,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Lead {
    pub id: Option<LeadId>,
    pub status: LeadStatus,
    pub captured: Option<LeadCaptured>,
    pub assignee: Option<UserId>,
    pub assigned_at: Option<DateTime<Utc>>,
    pub customer_id: Option<CustomerId>,
    pub opportunity_id: Option<OpportunityId>,
}

impl Lead {
    pub fn region(&self) -> Option<&str> {
        self.captured.as_ref()?.region.as_deref()
    }

    /// Assigned or claimed: someone is working on it.
    pub fn is_open(&self) -> bool {
        matches!(self.status, LeadStatus::Assigned | LeadStatus::Claimed)
    }

    fn exists(&self) -> Result<LeadId, DomainError> {
        self.id.ok_or_else(|| DomainError::not_found("lead", "(new)"))
    }
}

/// Lead intake. Only a name or company, one contact method and the source are required.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaptureLead {
    pub lead_id: LeadId,
    pub name: Option<String>,
    pub company: Option<String>,
    pub phone: Option<String>,
    pub email: Option<String>,
    pub wechat: Option<String>,
    pub uscc: Option<String>,
    /// Explicit region; otherwise taken from the company name or a landline's area code.
    pub region: Option<String>,
    pub channel: Channel,
    pub source: String,
    /// Fields the intake form had that the CRM does not know: kept, never a reason to refuse.
    pub custom_attributes: BTreeMap<String, String>,
}

// Commands live for one call; boxing the capture would only make them awkward to build.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeadCommand {
    Capture(CaptureLead),
    /// A capture with the duplicate guard: `duplicates` is the lookup of the lead's record
    /// against the live customers (done by the server). An exact key collision refuses
    /// (`duplicate.exact_key`) unless `duplicates.proceed_anyway`; anything found is
    /// recorded in a `DuplicateSuspected` after the `LeadCaptured`.
    CaptureGuarded {
        capture: CaptureLead,
        duplicates: crate::duplicates::DuplicateCheck,
    },
    /// Manual assignment by a manager. `assignee` is the user's current state.
    Assign {
        assignee: UserSummary,
    },
    /// Assignment by the rules among `candidates` (their current loads).
    AutoAssign {
        candidates: Vec<Candidate>,
    },
    Claim {
        user: UserSummary,
    },
    Release {
        user_id: UserId,
        reason: String,
    },
}

fn present(value: &Option<String>) -> Option<String> {
    value.as_deref().map(str::trim).filter(|v| !v.is_empty()).map(str::to_owned)
}

/// Region from a Chinese landline area code, for the largest cities.
fn region_of_area_code(code: &str) -> Option<&'static str> {
    Some(match code {
        "10" => "北京",
        "21" => "上海",
        "22" => "天津",
        "23" => "重庆",
        "20" => "广州",
        "755" => "深圳",
        "571" => "杭州",
        "25" => "南京",
        "512" => "苏州",
        "28" => "成都",
        "27" => "武汉",
        "29" => "西安",
        _ => return None,
    })
}

impl Lead {
    fn capture(&self, cmd: CaptureLead, ctx: &CommandContext) -> Result<Vec<Event>, DomainError> {
        if let Some(id) = self.id {
            return Err(DomainError::already_exists("lead", id));
        }
        let name = present(&cmd.name).map(|n| normalize_person_name(&n));
        let company = present(&cmd.company);
        if name.is_none() && company.is_none() {
            return Err(DomainError::invalid(
                "name",
                "lead.name_or_company_required",
                "a name or a company is required",
            ));
        }
        let phone = present(&cmd.phone);
        let email = present(&cmd.email).map(|e| normalize_email(&e));
        let wechat = present(&cmd.wechat);
        if phone.is_none() && email.is_none() && wechat.is_none() {
            return Err(DomainError::invalid(
                "contact",
                "lead.contact_required",
                "one contact method (phone, email or wechat) is required",
            ));
        }
        let source = cmd.source.trim().to_owned();
        if source.is_empty() {
            return Err(DomainError::invalid("source", "lead.source_required", "the source is required"));
        }
        if let Channel::ExhibitionScan { exhibition_id, booth } = &cmd.channel {
            if exhibition_id.trim().is_empty() {
                return Err(DomainError::invalid(
                    "channel.exhibition_id",
                    "lead.exhibition_id_required",
                    "an exhibition scan names the exhibition",
                ));
            }
            if booth.trim().is_empty() {
                return Err(DomainError::invalid(
                    "channel.booth",
                    "lead.booth_required",
                    "an exhibition scan names the booth",
                ));
            }
        }
        // An invalid phone or a failing USCC is kept and flagged, never a reason to refuse.
        let normalized_phone = phone.as_deref().map(normalize_phone);
        let uscc = present(&cmd.uscc).map(|u| normalize_uscc(&u));
        let region = present(&cmd.region)
            .or_else(|| company.as_deref().and_then(|c| normalize_company(c).region))
            .or_else(|| {
                let area = normalized_phone.as_ref()?.area_code.as_deref()?;
                region_of_area_code(area).map(str::to_owned)
            });
        Ok(vec![Event::LeadCaptured(LeadCaptured {
            lead_id: cmd.lead_id,
            name,
            company,
            phone,
            phone_e164: normalized_phone.and_then(|p| p.e164),
            email,
            wechat,
            uscc_checksum_ok: uscc.as_ref().is_some_and(|u| u.checksum_ok),
            uscc: uscc.map(|u| u.normalized),
            region,
            channel: cmd.channel,
            source,
            custom_attributes: cmd.custom_attributes,
            captured_at: ctx.now,
        })])
    }

    fn ensure_assignable(&self) -> Result<LeadId, DomainError> {
        let id = self.exists()?;
        match self.status {
            LeadStatus::Claimed => Err(DomainError::precondition(
                "lead.already_claimed",
                format!("lead {id} is claimed; release it or hand it over first"),
            )),
            LeadStatus::Qualified => {
                Err(DomainError::precondition("lead.qualified", format!("lead {id} is qualified")))
            }
            _ => Ok(id),
        }
    }
}

impl Aggregate for Lead {
    type Command = LeadCommand;
    const KIND: &'static str = "lead";

    fn handle(&self, cmd: LeadCommand, ctx: &CommandContext, rules: &Rules) -> Result<Vec<Event>, DomainError> {
        match cmd {
            LeadCommand::Capture(capture) => self.capture(capture, ctx),
            LeadCommand::CaptureGuarded { capture, duplicates } => {
                let lead_id = capture.lead_id;
                let mut events = self.capture(capture, ctx)?;
                let subject = crate::event::DuplicateSubject::Lead(lead_id);
                events.extend(crate::duplicates::guard_duplicates(subject, duplicates, None)?);
                Ok(events)
            }
            LeadCommand::Assign { assignee } => {
                let lead_id = self.ensure_assignable()?;
                assignee.ensure_active()?;
                if self.assignee == Some(assignee.user_id) {
                    return Err(DomainError::precondition(
                        "lead.already_assigned",
                        format!("lead {lead_id} is already assigned to {}", assignee.user_id),
                    ));
                }
                Ok(vec![Event::LeadAssigned(LeadAssigned {
                    lead_id,
                    assignee: assignee.user_id,
                    previous: self.assignee,
                    reason: AssignmentReason::Manual,
                    assigned_at: ctx.now,
                })])
            }
            LeadCommand::AutoAssign { candidates } => {
                let lead_id = self.ensure_assignable()?;
                if self.status == LeadStatus::Assigned {
                    return Err(DomainError::precondition(
                        "lead.already_assigned",
                        format!("lead {lead_id} is already assigned"),
                    ));
                }
                let (assignee, trace) = choose_assignee(rules, lead_id, self.region(), &candidates)?;
                Ok(vec![Event::LeadAssigned(LeadAssigned {
                    lead_id,
                    assignee,
                    previous: None,
                    reason: AssignmentReason::Automatic(trace),
                    assigned_at: ctx.now,
                })])
            }
            LeadCommand::Claim { user } => {
                let lead_id = self.exists()?;
                user.ensure_active()?;
                match (self.status, self.assignee) {
                    (LeadStatus::Unassigned, _) => {}
                    (LeadStatus::Assigned, Some(assignee)) if assignee == user.user_id => {}
                    (LeadStatus::Assigned, Some(assignee)) => {
                        return Err(DomainError::precondition(
                            "lead.assigned_to_other",
                            format!("lead {lead_id} is assigned to {assignee}"),
                        ))
                    }
                    (LeadStatus::Claimed, _) => {
                        return Err(DomainError::precondition(
                            "lead.already_claimed",
                            format!("lead {lead_id} is already claimed"),
                        ))
                    }
                    _ => {
                        return Err(DomainError::precondition("lead.qualified", format!("lead {lead_id} is qualified")))
                    }
                }
                Ok(vec![Event::LeadClaimed(LeadClaimed { lead_id, user_id: user.user_id, claimed_at: ctx.now })])
            }
            LeadCommand::Release { user_id, reason } => {
                let lead_id = self.exists()?;
                if !self.is_open() || self.assignee != Some(user_id) {
                    return Err(DomainError::precondition(
                        "lead.not_held",
                        format!("lead {lead_id} is not assigned to or claimed by {user_id}"),
                    ));
                }
                if reason.trim().is_empty() {
                    return Err(DomainError::invalid(
                        "reason",
                        "lead.release_reason_required",
                        "say why the lead goes back to the pool",
                    ));
                }
                Ok(vec![Event::LeadReleased(LeadReleased { lead_id, user_id, reason: reason.trim().to_owned() })])
            }
        }
    }

    fn apply(&mut self, event: &Event) {
        match event {
            Event::LeadCaptured(e) => {
                self.id = Some(e.lead_id);
                self.status = LeadStatus::Unassigned;
                self.captured = Some(e.clone());
            }
            Event::LeadAssigned(e) => {
                self.status = LeadStatus::Assigned;
                self.assignee = Some(e.assignee);
                self.assigned_at = Some(e.assigned_at);
            }
            Event::LeadClaimed(e) => {
                self.status = LeadStatus::Claimed;
                self.assignee = Some(e.user_id);
            }
            Event::LeadReleased(_) => {
                self.status = LeadStatus::Unassigned;
                self.assignee = None;
                self.assigned_at = None;
            }
            Event::LeadQualified(e) => {
                self.status = LeadStatus::Qualified;
                self.customer_id = Some(e.customer_id);
                self.opportunity_id = Some(e.opportunity_id);
            }
            Event::OwnerChanged(e) if matches!(e.subject, Owned::Lead(_)) => {
                self.assignee = Some(e.to);
            }
            _ => {}
        }
    }
}
