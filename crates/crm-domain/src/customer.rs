//! Customers (company accounts): profile fields changed field by field, contacts,
//! activities with 72-hour field inheritance, and the merge markers. Merge and unmerge
//! touch two streams and live in [`crate::process`].

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Duration, NaiveDate, Utc};

use crate::aggregate::Aggregate;
use crate::error::DomainError;
use crate::event::{
    ActivityKind, ActivityLogged, Contact, ContactAdded, CustomerCreated, CustomerUpdated, Event, FieldChange, Owned,
};
use crate::ids::{ActivityId, ContactId, CustomerId, LeadId, OpportunityId, UserId};
use crate::normalize::{normalize_email, normalize_person_name, normalize_phone, normalize_uscc};
use crate::rules::Rules;
use crate::CommandContext;

/// Profile fields a customer has; anything else must be written `custom.<name>`.
pub const CUSTOMER_FIELDS: &[&str] =
    &["name", "contact_name", "phone", "email", "wechat", "uscc", "region", "industry", "address", "website", "level"];

/// Most keywords an activity may carry.
pub const MAX_ACTIVITY_KEYWORDS: usize = 3;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MergeRecord {
    pub reason: String,
    /// The survivor's fields the merge changed, old → new.
    pub changes: Vec<FieldChange>,
    /// How many activities the survivor had when the merge happened.
    pub activities_before: usize,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Customer {
    pub id: Option<CustomerId>,
    pub fields: BTreeMap<String, String>,
    pub owner: Option<UserId>,
    pub from_lead: Option<LeadId>,
    pub contacts: BTreeMap<ContactId, Contact>,
    /// Activity ids in the order logged.
    pub activities: Vec<ActivityId>,
    pub last_activity: Option<ActivityLogged>,
    /// Set while this customer is merged into another.
    pub absorbed_into: Option<CustomerId>,
    /// Merges in force where this customer is the survivor, by absorbed id.
    pub merges: BTreeMap<CustomerId, MergeRecord>,
    pub won_deals: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewContact {
    pub contact_id: ContactId,
    pub name: String,
    pub title: Option<String>,
    pub phone: Option<String>,
    pub email: Option<String>,
    pub wechat: Option<String>,
}

/// Empty fields (`None`, no keywords) are inherited from the previous activity on this
/// customer when it happened within `Rules::activity_inherit_hours` before this one.
/// The summary is never inherited: it says what happened this time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogActivity {
    pub activity_id: ActivityId,
    pub by: UserId,
    pub kind: Option<ActivityKind>,
    /// Defaults to the command time.
    pub occurred_at: Option<DateTime<Utc>>,
    pub duration_minutes: Option<u32>,
    pub keywords: Vec<String>,
    pub summary: String,
    pub next_follow_up: Option<NaiveDate>,
    pub contact_id: Option<ContactId>,
    pub opportunity_id: Option<OpportunityId>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CustomerCommand {
    /// A customer entered directly (import, ERP sync); leads create theirs by qualifying.
    Create {
        customer_id: CustomerId,
        fields: BTreeMap<String, String>,
        owner: Option<UserId>,
    },
    /// `None` clears a field. Only real changes are recorded.
    Update {
        changes: BTreeMap<String, Option<String>>,
    },
    /// An update with the duplicate guard: `duplicates` is the lookup of the customer's
    /// fields after the change against the other live customers (done by the server). A
    /// collision on a key the update sets refuses (`duplicate.exact_key`) unless
    /// `duplicates.proceed_anyway`; anything found is recorded in a `DuplicateSuspected`.
    UpdateGuarded {
        changes: BTreeMap<String, Option<String>>,
        duplicates: crate::duplicates::DuplicateCheck,
    },
    AddContact(NewContact),
    LogActivity(LogActivity),
}

impl Customer {
    pub fn name(&self) -> Option<&str> {
        self.fields.get("name").map(String::as_str)
    }

    /// Exists and is not merged into another customer.
    pub fn ensure_writable(&self) -> Result<CustomerId, DomainError> {
        let id = self.id.ok_or_else(|| DomainError::not_found("customer", "(new)"))?;
        if let Some(survivor) = self.absorbed_into {
            return Err(DomainError::precondition(
                "customer.absorbed",
                format!("customer {id} is merged into {survivor}; write to the survivor or unmerge"),
            ));
        }
        Ok(id)
    }
}

/// Checks a field name and normalises its value (`phone` to E.164, `email`, `uscc`).
pub(crate) fn clean_field(field: &str, value: &str) -> Result<Option<String>, DomainError> {
    let custom = field.strip_prefix("custom.").is_some_and(|name| !name.is_empty());
    if !CUSTOMER_FIELDS.contains(&field) && !custom {
        return Err(DomainError::invalid(
            format!("fields.{field}"),
            "customer.unknown_field",
            format!("unknown field {field}; use one of {} or custom.<name>", CUSTOMER_FIELDS.join(", ")),
        ));
    }
    let value = value.trim();
    if value.is_empty() {
        return Ok(None);
    }
    Ok(Some(match field {
        "phone" => normalize_phone(value).e164.ok_or_else(|| {
            DomainError::invalid(
                "fields.phone",
                "customer.phone_invalid",
                format!("{value} is not a valid phone number"),
            )
        })?,
        "email" => normalize_email(value),
        "uscc" => normalize_uscc(value).normalized,
        "contact_name" => normalize_person_name(value),
        _ => value.to_owned(),
    }))
}

pub(crate) fn clean_fields(fields: BTreeMap<String, String>) -> Result<BTreeMap<String, String>, DomainError> {
    let mut out = BTreeMap::new();
    for (field, value) in fields {
        if let Some(value) = clean_field(&field, &value)? {
            out.insert(field, value);
        }
    }
    if !out.contains_key("name") {
        return Err(DomainError::invalid("fields.name", "customer.name_required", "a customer has a name"));
    }
    Ok(out)
}

impl Customer {
    fn update(&self, id: CustomerId, changes: BTreeMap<String, Option<String>>) -> Result<Vec<Event>, DomainError> {
        let mut recorded = Vec::new();
        for (field, value) in changes {
            let new = match value {
                Some(v) => clean_field(&field, &v)?,
                None => {
                    clean_field(&field, "")?;
                    None
                }
            };
            if field == "name" && new.is_none() {
                return Err(DomainError::invalid(
                    "fields.name",
                    "customer.name_required",
                    "a customer's name cannot be cleared",
                ));
            }
            let old = self.fields.get(&field).cloned();
            if old != new {
                recorded.push(FieldChange { field, old, new });
            }
        }
        if recorded.is_empty() {
            return Err(DomainError::precondition("customer.unchanged", format!("no field of customer {id} changes")));
        }
        Ok(vec![Event::CustomerUpdated(CustomerUpdated { customer_id: id, changes: recorded })])
    }

    fn add_contact(&self, id: CustomerId, c: NewContact) -> Result<Vec<Event>, DomainError> {
        if self.contacts.contains_key(&c.contact_id) {
            return Err(DomainError::already_exists("contact", c.contact_id));
        }
        let name = normalize_person_name(&c.name);
        if name.is_empty() {
            return Err(DomainError::invalid("contact.name", "contact.name_required", "a contact has a name"));
        }
        let phone = c.phone.map(|p| p.trim().to_owned()).filter(|p| !p.is_empty());
        let phone_e164 = phone.as_deref().and_then(|p| normalize_phone(p).e164);
        let opt = |v: Option<String>| v.map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
        Ok(vec![Event::ContactAdded(ContactAdded {
            customer_id: id,
            contact: Contact {
                contact_id: c.contact_id,
                name,
                title: opt(c.title),
                phone,
                phone_e164,
                email: opt(c.email).map(|e| normalize_email(&e)),
                wechat: opt(c.wechat),
            },
        })])
    }

    fn log_activity(
        &self,
        id: CustomerId,
        cmd: LogActivity,
        ctx: &CommandContext,
        rules: &Rules,
    ) -> Result<Vec<Event>, DomainError> {
        if self.activities.contains(&cmd.activity_id) {
            return Err(DomainError::already_exists("activity", cmd.activity_id));
        }
        let occurred_at = cmd.occurred_at.unwrap_or(ctx.now);
        if occurred_at > ctx.now {
            return Err(DomainError::invalid(
                "occurred_at",
                "activity.in_future",
                "an activity is logged after it happened",
            ));
        }
        let mut keywords: Vec<String> = Vec::new();
        for k in cmd.keywords.iter().map(|k| k.trim()).filter(|k| !k.is_empty()) {
            if !keywords.iter().any(|seen| seen == k) {
                keywords.push(k.to_owned());
            }
        }
        if keywords.len() > MAX_ACTIVITY_KEYWORDS {
            return Err(DomainError::invalid(
                "keywords",
                "activity.max_keywords",
                format!("at most {MAX_ACTIVITY_KEYWORDS} keywords, got {}", keywords.len()),
            ));
        }
        if let Some(contact) = cmd.contact_id {
            if !self.contacts.contains_key(&contact) {
                return Err(DomainError::not_found("contact", contact));
            }
        }
        let mut logged = ActivityLogged {
            customer_id: id,
            activity_id: cmd.activity_id,
            by: cmd.by,
            kind: ActivityKind::Call, // placeholder, set below
            occurred_at,
            duration_minutes: cmd.duration_minutes,
            keywords,
            summary: cmd.summary.trim().to_owned(),
            next_follow_up: cmd.next_follow_up,
            contact_id: cmd.contact_id,
            opportunity_id: cmd.opportunity_id,
            inherited_from: None,
            inherited_fields: Vec::new(),
        };
        let mut kind = cmd.kind;
        let window = Duration::hours(i64::from(rules.activity_inherit_hours));
        let previous = self
            .last_activity
            .as_ref()
            .filter(|p| p.occurred_at <= occurred_at && occurred_at - p.occurred_at <= window);
        if let Some(prev) = previous {
            let mut inherited = Vec::new();
            if kind.is_none() {
                kind = Some(prev.kind);
                inherited.push("kind");
            }
            if logged.duration_minutes.is_none() && prev.duration_minutes.is_some() {
                logged.duration_minutes = prev.duration_minutes;
                inherited.push("duration_minutes");
            }
            if logged.keywords.is_empty() && !prev.keywords.is_empty() {
                logged.keywords = prev.keywords.clone();
                inherited.push("keywords");
            }
            if logged.next_follow_up.is_none() && prev.next_follow_up.is_some_and(|d| d >= occurred_at.date_naive()) {
                logged.next_follow_up = prev.next_follow_up;
                inherited.push("next_follow_up");
            }
            if logged.contact_id.is_none() && prev.contact_id.is_some() {
                logged.contact_id = prev.contact_id;
                inherited.push("contact_id");
            }
            if logged.opportunity_id.is_none() && prev.opportunity_id.is_some() {
                logged.opportunity_id = prev.opportunity_id;
                inherited.push("opportunity_id");
            }
            if !inherited.is_empty() {
                logged.inherited_from = Some(prev.activity_id);
                logged.inherited_fields = inherited.into_iter().map(str::to_owned).collect();
            }
        }
        logged.kind = kind.ok_or_else(|| {
            DomainError::invalid(
                "kind",
                "activity.kind_required",
                "say what kind of activity (nothing recent to inherit from)",
            )
        })?;
        if let Some(date) = logged.next_follow_up {
            if date < occurred_at.date_naive() {
                return Err(DomainError::invalid(
                    "next_follow_up",
                    "activity.follow_up_in_past",
                    "the next follow-up is after the activity",
                ));
            }
        }
        Ok(vec![Event::ActivityLogged(logged)])
    }
}

impl Aggregate for Customer {
    type Command = CustomerCommand;
    const KIND: &'static str = "customer";

    fn handle(&self, cmd: CustomerCommand, ctx: &CommandContext, rules: &Rules) -> Result<Vec<Event>, DomainError> {
        if let CustomerCommand::Create { customer_id, fields, owner } = cmd {
            if let Some(id) = self.id {
                return Err(DomainError::already_exists("customer", id));
            }
            let fields = clean_fields(fields)?;
            return Ok(vec![Event::CustomerCreated(CustomerCreated { customer_id, fields, owner, from_lead: None })]);
        }
        let id = self.ensure_writable()?;
        match cmd {
            CustomerCommand::Create { .. } => unreachable!("handled above"),
            CustomerCommand::Update { changes } => self.update(id, changes),
            CustomerCommand::UpdateGuarded { changes, duplicates } => {
                let mut events = self.update(id, changes)?;
                let changed = match events.first() {
                    Some(Event::CustomerUpdated(e)) => e.changes.clone(),
                    _ => Vec::new(),
                };
                let subject = crate::event::DuplicateSubject::Customer(id);
                events.extend(crate::duplicates::guard_duplicates(subject, duplicates, Some(&changed))?);
                Ok(events)
            }
            CustomerCommand::AddContact(contact) => self.add_contact(id, contact),
            CustomerCommand::LogActivity(activity) => self.log_activity(id, activity, ctx, rules),
        }
    }

    fn apply(&mut self, event: &Event) {
        match event {
            Event::CustomerCreated(e) => {
                self.id = Some(e.customer_id);
                self.fields = e.fields.clone();
                self.owner = e.owner;
                self.from_lead = e.from_lead;
            }
            Event::CustomerUpdated(e) => apply_changes(&mut self.fields, &e.changes),
            Event::ContactAdded(e) => {
                self.contacts.insert(e.contact.contact_id, e.contact.clone());
            }
            Event::ActivityLogged(e) => {
                self.activities.push(e.activity_id);
                let newer = self.last_activity.as_ref().is_none_or(|last| last.occurred_at <= e.occurred_at);
                if newer {
                    self.last_activity = Some(e.clone());
                }
            }
            Event::CustomersMerged(e) => {
                apply_changes(&mut self.fields, &e.field_changes);
                self.merges.insert(
                    e.absorbed_id,
                    MergeRecord {
                        reason: e.reason.clone(),
                        changes: e.field_changes.clone(),
                        activities_before: self.activities.len(),
                    },
                );
            }
            Event::CustomerUnmerged(e) => {
                apply_changes(&mut self.fields, &e.restored);
                self.merges.remove(&e.absorbed_id);
            }
            Event::CustomerAbsorbed(e) => self.absorbed_into = Some(e.survivor_id),
            Event::CustomerRestored(_) => self.absorbed_into = None,
            Event::CustomerDealWon(_) => self.won_deals += 1,
            Event::OwnerChanged(e) if matches!(e.subject, Owned::Customer(_)) => self.owner = Some(e.to),
            _ => {}
        }
    }
}

/// Applies field-by-field changes (`new: None` clears the field) to a customer's fields: the one
/// fold of `CustomerUpdated`, merge and unmerge changes, shared with the read models.
pub fn apply_changes(fields: &mut BTreeMap<String, String>, changes: &[FieldChange]) {
    for change in changes {
        match &change.new {
            Some(value) => fields.insert(change.field.clone(), value.clone()),
            None => fields.remove(&change.field),
        };
    }
}

/// Field names two customers disagree on (both set, different values).
pub fn conflicting_fields(a: &Customer, b: &Customer) -> BTreeSet<String> {
    a.fields.iter().filter(|(k, v)| b.fields.get(*k).is_some_and(|w| w != *v)).map(|(k, _)| k.clone()).collect()
}
