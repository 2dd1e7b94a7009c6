//! Commands that touch several aggregates: qualify a lead, merge and unmerge customers,
//! hand over a departing salesperson's book. Each is a pure function of the aggregates'
//! current states that returns events for several streams; the caller appends them in one
//! atomic multi-stream append ([`group_by_stream`]), so either all happen or none.
//!
//! # Merge and unmerge
//!
//! A merge moves no events. The survivor's stream gets `CustomersMerged` with the fields it
//! took from the absorbed customer (old → new, per the caller's winner choice; fields only the
//! absorbed customer has fill the survivor's gaps). The absorbed stream gets
//! `CustomerAbsorbed` and accepts no more writes. Read models show the absorbed customer's
//! contacts and activities under the survivor while the merge holds.
//!
//! Unmerge restores both: the survivor's merged fields go back to their pre-merge values
//! unless someone edited them after the merge (those edits are kept and listed), and the
//! absorbed customer is writable again with exactly the state it had. **Activities logged on
//! the survivor after the merge stay on the survivor**: they were recorded against the
//! survivor's id, the log cannot know which of the two companies they were about, and moving
//! them would rewrite history. `CustomerUnmerged` lists them (`post_merge_activities`) so a
//! reviewer can log a correcting activity on the restored customer where needed.

use std::collections::BTreeMap;

use crate::aggregate::StreamEvents;
use crate::customer::{conflicting_fields, Customer};
use crate::error::DomainError;
use crate::event::{
    CustomerAbsorbed, CustomerCreated, CustomerRestored, CustomerUnmerged, CustomersMerged, Event, FieldChange,
    LeadQualified, OpportunityOpened, Owned, OwnerChanged, UserHandedOver,
};
use crate::ids::{CustomerId, OpportunityId, UserId};
use crate::lead::{Lead, LeadStatus};
use crate::opportunity::Opportunity;
use crate::rules::Rules;
use crate::user::User;
use crate::CommandContext;

/// Groups events by stream, streams in order of first appearance, events in order.
pub fn group_by_stream(events: Vec<Event>) -> Vec<StreamEvents> {
    let mut out: Vec<StreamEvents> = Vec::new();
    for event in events {
        let stream = event.stream();
        match out.iter_mut().find(|s| s.stream == stream) {
            Some(group) => group.events.push(event),
            None => out.push(StreamEvents { stream, events: vec![event] }),
        }
    }
    out
}

// ---------------------------------------------------------------- qualify

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QualifyLead {
    /// The customer to create, or the existing one to link when `link_existing`.
    pub customer_id: CustomerId,
    pub link_existing: bool,
    pub opportunity_id: OpportunityId,
    pub title: String,
    pub amount_fen: Option<i64>,
}

/// Qualifies a claimed lead: creates the customer from the lead's data (or links an existing,
/// unmerged customer) and opens an opportunity at the pipeline's first stage, owned by the
/// lead's claimer. `customer` and `opportunity` are the current states of their streams
/// (default when the stream does not exist).
pub fn qualify_lead(
    lead: &Lead,
    customer: &Customer,
    opportunity: &Opportunity,
    cmd: QualifyLead,
    ctx: &CommandContext,
    rules: &Rules,
) -> Result<Vec<Event>, DomainError> {
    let lead_id = lead.id.ok_or_else(|| DomainError::not_found("lead", "(new)"))?;
    let (LeadStatus::Claimed, Some(owner), Some(captured)) = (lead.status, lead.assignee, lead.captured.as_ref())
    else {
        return Err(DomainError::missing(
            "lead.not_claimed",
            vec!["claim".into()],
            format!("lead {lead_id} must be claimed before it is qualified"),
        ));
    };
    if let Some(id) = opportunity.id {
        return Err(DomainError::already_exists("opportunity", id));
    }
    let title = cmd.title.trim().to_owned();
    if title.is_empty() {
        return Err(DomainError::invalid("title", "opportunity.title_required", "an opportunity has a title"));
    }
    if cmd.amount_fen.is_some_and(|a| a < 0) {
        return Err(DomainError::invalid(
            "amount_fen",
            "opportunity.amount_non_negative",
            "the amount is not negative",
        ));
    }
    let mut events = Vec::new();
    let repeat_customer = if cmd.link_existing {
        let id = customer.id.ok_or_else(|| DomainError::not_found("customer", cmd.customer_id))?;
        customer.ensure_writable()?;
        debug_assert_eq!(id, cmd.customer_id);
        customer.won_deals > 0
    } else {
        if let Some(id) = customer.id {
            return Err(DomainError::already_exists("customer", id));
        }
        let mut fields = BTreeMap::new();
        let name = captured.company.clone().or_else(|| captured.name.clone()).unwrap_or_default();
        fields.insert("name".to_owned(), name);
        let mut put = |k: &str, v: &Option<String>| {
            if let Some(v) = v {
                fields.insert(k.to_owned(), v.clone());
            }
        };
        if captured.company.is_some() {
            put("contact_name", &captured.name);
        }
        put("phone", &captured.phone_e164.clone().or_else(|| captured.phone.clone()));
        put("email", &captured.email);
        put("wechat", &captured.wechat);
        put("uscc", &captured.uscc);
        put("region", &captured.region);
        for (k, v) in &captured.custom_attributes {
            fields.insert(format!("custom.{k}"), v.clone());
        }
        events.push(Event::CustomerCreated(CustomerCreated {
            customer_id: cmd.customer_id,
            fields,
            owner: Some(owner),
            from_lead: Some(lead_id),
        }));
        false
    };
    events.push(Event::OpportunityOpened(OpportunityOpened {
        opportunity_id: cmd.opportunity_id,
        customer_id: cmd.customer_id,
        lead_id: Some(lead_id),
        owner,
        title,
        amount_fen: cmd.amount_fen,
        stage: rules.first_stage().to_owned(),
        repeat_customer,
        opened_at: ctx.now,
    }));
    events.push(Event::LeadQualified(LeadQualified {
        lead_id,
        customer_id: cmd.customer_id,
        opportunity_id: cmd.opportunity_id,
        new_customer: !cmd.link_existing,
    }));
    Ok(events)
}

// ---------------------------------------------------------------- merge

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MergeWinner {
    Survivor,
    Absorbed,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MergeCustomers {
    /// One of `Rules::merge_reasons`.
    pub reason: String,
    pub reason_text: String,
    /// Which value wins for each conflicting field; a conflicting field not listed keeps
    /// the survivor's value.
    pub winners: BTreeMap<String, MergeWinner>,
}

pub fn merge_customers(
    survivor: &Customer,
    absorbed: &Customer,
    cmd: MergeCustomers,
    ctx: &CommandContext,
    rules: &Rules,
) -> Result<Vec<Event>, DomainError> {
    let survivor_id = survivor.ensure_writable()?;
    let absorbed_id = absorbed.ensure_writable()?;
    if survivor_id == absorbed_id {
        return Err(DomainError::invalid("absorbed_id", "merge.same_customer", "a customer cannot absorb itself"));
    }
    let reason = cmd.reason.trim().to_owned();
    if reason.is_empty() {
        return Err(DomainError::invalid("reason", "merge.reason_required", "a merge gives a reason"));
    }
    if !rules.merge_reasons.contains(&reason) {
        return Err(DomainError::invalid(
            "reason",
            "merge.reason_unknown",
            format!("{reason} is not one of {}", rules.merge_reasons.join(", ")),
        ));
    }
    if !absorbed.merges.is_empty() {
        return Err(DomainError::precondition(
            "merge.absorbed_has_merges",
            format!("customer {absorbed_id} has absorbed others; unmerge those first"),
        ));
    }
    let conflicts = conflicting_fields(survivor, absorbed);
    if let Some(field) = cmd.winners.keys().find(|f| !conflicts.contains(*f)) {
        return Err(DomainError::invalid(
            format!("winners.{field}"),
            "merge.not_a_conflict",
            format!("{field} is not a conflicting field"),
        ));
    }
    let mut field_changes = Vec::new();
    for (field, value) in &absorbed.fields {
        let old = survivor.fields.get(field);
        let take = match old {
            None => true,
            Some(old) if old == value => false,
            Some(_) => cmd.winners.get(field) == Some(&MergeWinner::Absorbed),
        };
        if take {
            field_changes.push(FieldChange { field: field.clone(), old: old.cloned(), new: Some(value.clone()) });
        }
    }
    Ok(vec![
        Event::CustomersMerged(CustomersMerged {
            survivor_id,
            absorbed_id,
            reason: reason.clone(),
            reason_text: cmd.reason_text.trim().to_owned(),
            field_changes,
            merged_at: ctx.now,
        }),
        Event::CustomerAbsorbed(CustomerAbsorbed { absorbed_id, survivor_id, reason }),
    ])
}

/// Undoes a merge in force between `survivor` and `absorbed`.
pub fn unmerge_customers(
    survivor: &Customer,
    absorbed: &Customer,
    reason: &str,
    _ctx: &CommandContext,
) -> Result<Vec<Event>, DomainError> {
    let survivor_id = survivor.id.ok_or_else(|| DomainError::not_found("customer", "(survivor)"))?;
    let absorbed_id = absorbed.id.ok_or_else(|| DomainError::not_found("customer", "(absorbed)"))?;
    let (Some(record), Some(into)) = (survivor.merges.get(&absorbed_id), absorbed.absorbed_into) else {
        return Err(DomainError::precondition(
            "unmerge.not_merged",
            format!("customer {absorbed_id} is not merged into {survivor_id}"),
        ));
    };
    if into != survivor_id {
        return Err(DomainError::precondition(
            "unmerge.not_merged",
            format!("customer {absorbed_id} is merged into {into}, not {survivor_id}"),
        ));
    }
    let reason = reason.trim().to_owned();
    if reason.is_empty() {
        return Err(DomainError::invalid("reason", "unmerge.reason_required", "an unmerge gives a reason"));
    }
    let mut restored = Vec::new();
    let mut kept = Vec::new();
    for change in &record.changes {
        let current = survivor.fields.get(&change.field);
        if current == change.new.as_ref() {
            restored.push(FieldChange { field: change.field.clone(), old: current.cloned(), new: change.old.clone() });
        } else {
            kept.push(change.field.clone());
        }
    }
    Ok(vec![
        Event::CustomerUnmerged(CustomerUnmerged {
            survivor_id,
            absorbed_id,
            reason,
            restored,
            kept,
            post_merge_activities: survivor.activities[record.activities_before.min(survivor.activities.len())..]
                .to_vec(),
        }),
        Event::CustomerRestored(CustomerRestored { absorbed_id, survivor_id }),
    ])
}

// ---------------------------------------------------------------- handover

/// A receiver with the load the caller measured (open items it owns).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receiver {
    pub user: User,
    pub load: u32,
}

/// Moves everything open that `departing` owns (leads assigned or claimed, unmerged
/// customers, open opportunities) to `receivers`, who are given in priority order.
///
/// Placement: each item goes to the first receiver with free capacity (`capacity - load`,
/// every item counting one). A customer's open opportunities go with it. When every receiver
/// is full, the rest is dealt round-robin in priority order and flagged `over_capacity`.
/// A final `UserHandedOver` on the departing user's stream records the receivers and the count.
/// Items are taken customers first (by id, each followed by its opportunities), then the
/// remaining opportunities, then leads, so placement is deterministic.
pub fn handover(
    departing: &User,
    receivers: &[Receiver],
    leads: &[Lead],
    customers: &[Customer],
    opportunities: &[Opportunity],
) -> Result<Vec<Event>, DomainError> {
    let from = departing.id.ok_or_else(|| DomainError::not_found("user", "(departing)"))?;
    if receivers.is_empty() {
        return Err(DomainError::invalid("receivers", "handover.receivers_required", "name at least one receiver"));
    }
    let mut seen = Vec::new();
    for r in receivers {
        let id = r.user.id.ok_or_else(|| DomainError::not_found("user", "(receiver)"))?;
        if id == from {
            return Err(DomainError::invalid(
                "receivers",
                "handover.receiver_is_departing",
                format!("{id} is the departing user"),
            ));
        }
        if seen.contains(&id) {
            return Err(DomainError::invalid(
                "receivers",
                "handover.duplicate_receiver",
                format!("{id} is listed twice"),
            ));
        }
        if !r.user.active {
            return Err(DomainError::precondition("user.inactive", format!("receiver {id} is deactivated")));
        }
        seen.push(id);
    }

    let mut customers: Vec<&Customer> =
        customers.iter().filter(|c| c.owner == Some(from) && c.id.is_some() && c.absorbed_into.is_none()).collect();
    customers.sort_by_key(|c| c.id);
    let mut opportunities: Vec<&Opportunity> =
        opportunities.iter().filter(|o| o.owner == Some(from) && o.is_open()).collect();
    opportunities.sort_by_key(|o| o.id);
    let mut leads: Vec<&Lead> = leads.iter().filter(|l| l.assignee == Some(from) && l.is_open()).collect();
    leads.sort_by_key(|l| l.id);

    // Units of placement: a customer with its opportunities, a lone opportunity, a lead.
    let mut units: Vec<Vec<Owned>> = Vec::new();
    for id in customers.iter().filter_map(|c| c.id) {
        let mut unit = vec![Owned::Customer(id)];
        unit.extend(
            opportunities.iter().filter(|o| o.customer_id == Some(id)).filter_map(|o| o.id.map(Owned::Opportunity)),
        );
        units.push(unit);
    }
    let placed_customers: Vec<Option<CustomerId>> = customers.iter().map(|c| c.id).collect();
    for o in opportunities.iter().filter(|o| !placed_customers.contains(&o.customer_id)) {
        units.extend(o.id.map(|id| vec![Owned::Opportunity(id)]));
    }
    units.extend(leads.iter().filter_map(|l| l.id.map(|id| vec![Owned::Lead(id)])));
    if units.is_empty() {
        return Err(DomainError::precondition("handover.nothing_open", format!("user {from} owns nothing open")));
    }

    let items = units.iter().map(Vec::len).sum::<usize>() as u32;
    let mut free: Vec<u32> = receivers.iter().map(|r| r.user.capacity.saturating_sub(r.load)).collect();
    let mut overflow = 0usize;
    let mut events = Vec::new();
    for unit in units {
        let size = unit.len() as u32;
        let (rank, over_capacity) = match free.iter().position(|f| *f >= size) {
            Some(rank) => {
                free[rank] -= size;
                (rank, false)
            }
            None => {
                let rank = overflow % receivers.len();
                overflow += 1;
                (rank, true)
            }
        };
        let to: UserId = seen[rank];
        for subject in unit {
            events.push(Event::OwnerChanged(OwnerChanged {
                subject,
                from: Some(from),
                to,
                reason: "handover".into(),
                receiver_rank: rank as u32 + 1,
                over_capacity,
            }));
        }
    }
    events.push(Event::UserHandedOver(UserHandedOver { user_id: from, receivers: seen, items }));
    Ok(events)
}
