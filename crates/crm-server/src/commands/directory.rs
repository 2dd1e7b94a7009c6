//! Who owns what and how loaded everyone is: the facts automatic assignment and handover
//! need beyond the aggregates they change. Kept in memory, caught up incrementally from the
//! log before each use, so it never misses a committed event.
//!
//! This is an interim stand-in for the workload read model; it holds one folded aggregate
//! per lead, customer, opportunity and user.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use crm_domain::{
    Aggregate, Candidate, Customer, CustomerId, Event, Lead, LeadId, Opportunity, OpportunityId, StreamId, User, UserId,
};
use crm_eventlog::EventStore;

use super::error::CommandError;

const PAGE: usize = 1000;

#[derive(Debug, Default)]
pub(crate) struct Directory {
    next_position: u64,
    users: BTreeMap<UserId, User>,
    leads: BTreeMap<LeadId, Lead>,
    customers: BTreeMap<CustomerId, Customer>,
    opportunities: BTreeMap<OpportunityId, Opportunity>,
    last_assigned: BTreeMap<UserId, DateTime<Utc>>,
}

/// What a user owns that is still open.
#[derive(Debug, Default)]
pub(crate) struct Owned {
    pub(crate) leads: Vec<LeadId>,
    pub(crate) customers: Vec<CustomerId>,
    pub(crate) opportunities: Vec<OpportunityId>,
}

impl Owned {
    pub(crate) fn len(&self) -> usize {
        self.leads.len() + self.customers.len() + self.opportunities.len()
    }
}

impl Directory {
    /// Applies every event committed since the last call.
    pub(crate) async fn catch_up<S: EventStore>(&mut self, store: &S) -> Result<(), CommandError> {
        loop {
            let batch = store.read_all(self.next_position.max(1), PAGE).await?;
            let full = batch.len() == PAGE;
            for r in batch {
                self.next_position = r.position + 1;
                let Ok(event) = Event::decode(&r.event_type, r.schema_version, &r.payload) else {
                    tracing::warn!(position = r.position, event_type = %r.event_type, "directory skips an event it cannot decode");
                    continue;
                };
                match StreamId::parse(&r.stream) {
                    Some(StreamId::Lead(id)) => {
                        if let Event::LeadAssigned(e) = &event {
                            self.last_assigned.insert(e.assignee, e.assigned_at);
                        }
                        self.leads.entry(id).or_default().apply(&event);
                    }
                    Some(StreamId::Customer(id)) => self.customers.entry(id).or_default().apply(&event),
                    Some(StreamId::Opportunity(id)) => self.opportunities.entry(id).or_default().apply(&event),
                    Some(StreamId::User(id)) => self.users.entry(id).or_default().apply(&event),
                    Some(StreamId::Rules) | None => {}
                }
            }
            if !full {
                return Ok(());
            }
        }
    }

    /// Open leads assigned to or claimed by `user`.
    pub(crate) fn lead_load(&self, user: UserId) -> u32 {
        self.leads.values().filter(|l| l.is_open() && l.assignee == Some(user)).count() as u32
    }

    /// Every known user as an assignment candidate, with their current load.
    pub(crate) fn candidates(&self) -> Vec<Candidate> {
        self.users
            .iter()
            .filter(|(_, u)| u.id.is_some())
            .map(|(id, u)| Candidate {
                user_id: *id,
                team: u.team.clone(),
                active: u.active,
                load: self.lead_load(*id),
                capacity: u.capacity,
                last_assigned_at: self.last_assigned.get(id).copied(),
            })
            .collect()
    }

    /// Everything open `user` owns.
    pub(crate) fn owned_by(&self, user: UserId) -> Owned {
        Owned {
            leads: self
                .leads
                .iter()
                .filter(|(_, l)| l.is_open() && l.assignee == Some(user))
                .map(|(id, _)| *id)
                .collect(),
            customers: self
                .customers
                .iter()
                .filter(|(_, c)| c.absorbed_into.is_none() && c.owner == Some(user))
                .map(|(id, _)| *id)
                .collect(),
            opportunities: self
                .opportunities
                .iter()
                .filter(|(_, o)| o.is_open() && o.owner == Some(user))
                .map(|(id, _)| *id)
                .collect(),
        }
    }
}
