//! The duplicate guard of `CaptureLead` and `UpdateCustomer`: a pure rule over a lookup the
//! server did beforehand (the duplicates read model's matcher). An exact key collision (same
//! USCC or E.164 mobile as a live customer) refuses the command unless the caller explicitly
//! proceeds anyway; fuzzy candidates never refuse. Either is recorded as a
//! [`DuplicateSuspected`] event appended with the command's own events.

use serde::{Deserialize, Serialize};

use crate::error::DomainError;
use crate::event::{DuplicateSubject, DuplicateSuspected, Event, FieldChange};
use crate::ids::CustomerId;

/// The rule id of the refusal.
pub const EXACT_KEY_RULE: &str = "duplicate.exact_key";

/// A master key two customers must not share.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ExactKey {
    /// Unified Social Credit Code (normalised, valid checksum).
    Uscc,
    /// Mobile number in E.164.
    Mobile,
}

impl ExactKey {
    pub fn as_str(self) -> &'static str {
        match self {
            ExactKey::Uscc => "uscc",
            ExactKey::Mobile => "mobile",
        }
    }

    /// The customer profile field the key is read from.
    pub fn field(self) -> &'static str {
        match self {
            ExactKey::Uscc => "uscc",
            ExactKey::Mobile => "phone",
        }
    }
}

/// An existing live customer sharing a master key with the command's record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyCollision {
    pub customer_id: CustomerId,
    pub key: ExactKey,
}

/// One field's share of a candidate's weight, as the matcher explained it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldContribution {
    pub field: String,
    /// `agree`, `partial`, `disagree`, ...
    pub outcome: String,
    /// Log2 likelihood ratio in hundredths (events hold no floats).
    pub weight_centi: i32,
    pub reason: String,
}

/// An existing customer that looks like the command's record without sharing a master key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SuspectedMatch {
    pub customer_id: CustomerId,
    /// The pair's score (0..=1, 0.5 at its threshold) in thousandths.
    pub score_milli: u32,
    /// `duplicate` or `review`.
    pub decision: String,
    pub fields: Vec<FieldContribution>,
}

/// What the lookup found, and whether the caller asked to proceed in spite of a collision.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DuplicateCheck {
    pub collisions: Vec<KeyCollision>,
    pub suspected: Vec<SuspectedMatch>,
    /// `create_anyway` (CaptureLead) / `save_anyway` (UpdateCustomer).
    pub proceed_anyway: bool,
}

/// Applies the guard for `subject`. `changed` restricts it for an update: only collisions on
/// a key whose field the update sets count (an old shared key, accepted before, does not
/// block unrelated edits), and suspects are recorded only when the update changed a field
/// matching reads. `None` (a capture) checks everything.
///
/// Returns the `DuplicateSuspected` event to append with the command's events, if any.
pub fn guard_duplicates(
    subject: DuplicateSubject,
    check: DuplicateCheck,
    changed: Option<&[FieldChange]>,
) -> Result<Option<Event>, DomainError> {
    let sets = |field: &str| changed.is_none_or(|c| c.iter().any(|c| c.field == field && c.new.is_some()));
    let mut collisions: Vec<KeyCollision> = check.collisions.into_iter().filter(|c| sets(c.key.field())).collect();
    collisions.sort_by_key(|c| (c.key, c.customer_id));
    collisions.dedup();
    if !collisions.is_empty() && !check.proceed_anyway {
        let first = &collisions[0];
        let flag = match subject {
            DuplicateSubject::Lead(_) => "create_anyway",
            DuplicateSubject::Customer(_) => "save_anyway",
        };
        let mut detail = format!(
            "{} already belongs to customer {}; set {flag} to proceed anyway",
            first.key.as_str(),
            first.customer_id
        );
        for other in &collisions[1..] {
            detail.push_str(&format!("; {} also belongs to customer {}", other.key.as_str(), other.customer_id));
        }
        return Err(DomainError::FailedPrecondition {
            rule: EXACT_KEY_RULE.to_owned(),
            // What the caller has to supply to go ahead.
            missing: vec![flag.to_owned()],
            detail,
        });
    }
    let relevant = changed.is_none_or(|c| c.iter().any(|c| MATCHED_FIELDS.contains(&c.field.as_str())));
    let colliding: Vec<CustomerId> = collisions.iter().map(|c| c.customer_id).collect();
    let suspected: Vec<SuspectedMatch> = if relevant {
        check.suspected.into_iter().filter(|s| !colliding.contains(&s.customer_id)).collect()
    } else {
        Vec::new()
    };
    if collisions.is_empty() && suspected.is_empty() {
        return Ok(None);
    }
    Ok(Some(Event::DuplicateSuspected(DuplicateSuspected {
        subject,
        collisions,
        suspected,
        proceeded_anyway: check.proceed_anyway,
    })))
}

/// Customer fields the matcher reads.
pub const MATCHED_FIELDS: &[&str] =
    &["name", "contact_name", "phone", "email", "uscc", "address", "region", "industry"];
