//! Events: the persisted contract. Each payload is a struct, encoded on its own with bincode 2
//! (`config::standard()`); its type name and schema version travel beside it in the log.
//! bincode is not self-describing, so any change of a payload's shape bumps its version and
//! adds an upcaster in [`Event::decode`] plus a frozen fixture of the old bytes.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::DecodeError;
use crate::ids::{ActivityId, ContactId, CustomerId, LeadId, OpportunityId, UserId, RULES_STREAM};
use crate::normalize::normalize_phone;
use crate::rules::{Rules, Strategy};

// ---------------------------------------------------------------- lead

/// Where a lead came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Channel {
    WebForm { form_id: String },
    Phone { line: String },
    ExhibitionScan { exhibition_id: String, booth: String },
    Import { batch_id: String },
    Api { client: String },
}

impl Channel {
    pub fn name(&self) -> &'static str {
        match self {
            Channel::WebForm { .. } => "web_form",
            Channel::Phone { .. } => "phone",
            Channel::ExhibitionScan { .. } => "exhibition_scan",
            Channel::Import { .. } => "import",
            Channel::Api { .. } => "api",
        }
    }
}

/// Schema v2. v1 had no `phone_e164`, `uscc`, `region` or `custom_attributes`; see
/// [`LeadCapturedV1`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeadCaptured {
    pub lead_id: LeadId,
    pub name: Option<String>,
    pub company: Option<String>,
    /// As typed.
    pub phone: Option<String>,
    /// E.164 when the phone number is valid; an invalid number is kept raw and flagged.
    pub phone_e164: Option<String>,
    pub email: Option<String>,
    pub wechat: Option<String>,
    /// Normalised USCC; a code failing its checksum is kept with `uscc_checksum_ok == false`.
    pub uscc: Option<String>,
    pub uscc_checksum_ok: bool,
    pub region: Option<String>,
    pub channel: Channel,
    pub source: String,
    /// Fields the intake did not know, kept verbatim.
    pub custom_attributes: BTreeMap<String, String>,
    pub captured_at: DateTime<Utc>,
}

/// `LeadCaptured` schema v1, kept to read old logs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeadCapturedV1 {
    pub lead_id: LeadId,
    pub name: Option<String>,
    pub company: Option<String>,
    pub phone: Option<String>,
    pub email: Option<String>,
    pub wechat: Option<String>,
    pub channel: Channel,
    pub source: String,
    pub captured_at: DateTime<Utc>,
}

impl From<LeadCapturedV1> for LeadCaptured {
    /// v1 → v2: the E.164 form is computed with today's phone normaliser; the fields v1 did
    /// not have are empty.
    fn from(v1: LeadCapturedV1) -> Self {
        let phone_e164 = v1.phone.as_deref().and_then(|p| normalize_phone(p).e164);
        LeadCaptured {
            lead_id: v1.lead_id,
            name: v1.name,
            company: v1.company,
            phone: v1.phone,
            phone_e164,
            email: v1.email,
            wechat: v1.wechat,
            uscc: None,
            uscc_checksum_ok: false,
            region: None,
            channel: v1.channel,
            source: v1.source,
            custom_attributes: BTreeMap::new(),
            captured_at: v1.captured_at,
        }
    }
}

/// One candidate as the assignment saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CandidateTrace {
    pub user_id: UserId,
    pub team: Option<String>,
    pub load: u32,
    pub capacity: u32,
    /// `eligible`, `inactive`, `other_team` or `at_capacity`.
    pub verdict: String,
}

/// Why a lead went to whom.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AssignmentReason {
    /// A manager chose the assignee.
    Manual,
    /// The rules chose; the trace answers "why did this lead go to her".
    Automatic(AssignmentTrace),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssignmentTrace {
    /// The rule that fired, e.g. `region:北京->team:华北`, or `default_team->team:直销`.
    pub rule: String,
    pub team: String,
    pub strategy: Strategy,
    /// `Some` when an A/B split is configured: the experiment, the arm ("A"/"B"), the bucket.
    pub arm: Option<AbArm>,
    pub candidates: Vec<CandidateTrace>,
    pub rules_version: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AbArm {
    pub experiment: String,
    pub arm: String,
    pub bucket: u8,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeadAssigned {
    pub lead_id: LeadId,
    pub assignee: UserId,
    pub previous: Option<UserId>,
    pub reason: AssignmentReason,
    pub assigned_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeadClaimed {
    pub lead_id: LeadId,
    pub user_id: UserId,
    pub claimed_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeadReleased {
    pub lead_id: LeadId,
    pub user_id: UserId,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeadQualified {
    pub lead_id: LeadId,
    pub customer_id: CustomerId,
    pub opportunity_id: OpportunityId,
    /// True when the lead created the customer, false when it was linked to an existing one.
    pub new_customer: bool,
}

// ---------------------------------------------------------------- customer

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomerCreated {
    pub customer_id: CustomerId,
    /// Profile fields (`name`, `phone`, `uscc`, ...; see [`crate::CUSTOMER_FIELDS`]).
    pub fields: BTreeMap<String, String>,
    pub owner: Option<UserId>,
    pub from_lead: Option<LeadId>,
}

/// One field's change, old and new; `None` is "not set".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldChange {
    pub field: String,
    pub old: Option<String>,
    pub new: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomerUpdated {
    pub customer_id: CustomerId,
    pub changes: Vec<FieldChange>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Contact {
    pub contact_id: ContactId,
    pub name: String,
    pub title: Option<String>,
    pub phone: Option<String>,
    pub phone_e164: Option<String>,
    pub email: Option<String>,
    pub wechat: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContactAdded {
    pub customer_id: CustomerId,
    pub contact: Contact,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ActivityKind {
    Call,
    WeChat,
    Visit,
    Email,
    Meeting,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActivityLogged {
    pub customer_id: CustomerId,
    pub activity_id: ActivityId,
    pub by: UserId,
    pub kind: ActivityKind,
    pub occurred_at: DateTime<Utc>,
    pub duration_minutes: Option<u32>,
    pub keywords: Vec<String>,
    pub summary: String,
    pub next_follow_up: Option<NaiveDate>,
    pub contact_id: Option<ContactId>,
    pub opportunity_id: Option<OpportunityId>,
    /// The previous activity empty fields were copied from (within the inheritance window).
    pub inherited_from: Option<ActivityId>,
    /// Which fields were copied: `kind`, `duration_minutes`, `keywords`, ...
    pub inherited_fields: Vec<String>,
}

/// On the survivor's stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomersMerged {
    pub survivor_id: CustomerId,
    pub absorbed_id: CustomerId,
    pub reason: String,
    pub reason_text: String,
    /// Survivor fields overwritten or filled from the absorbed customer, old → new.
    pub field_changes: Vec<FieldChange>,
    pub merged_at: DateTime<Utc>,
}

/// On the absorbed customer's stream: it now points at the survivor and accepts no writes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomerAbsorbed {
    pub absorbed_id: CustomerId,
    pub survivor_id: CustomerId,
    pub reason: String,
}

/// On the survivor's stream: the merge is undone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomerUnmerged {
    pub survivor_id: CustomerId,
    pub absorbed_id: CustomerId,
    pub reason: String,
    /// Fields set back to their pre-merge value (they still held the merged-in value).
    pub restored: Vec<FieldChange>,
    /// Fields the merge had changed but someone edited afterwards: kept as they are.
    pub kept: Vec<String>,
    /// Activities logged on the survivor while merged. They stay on the survivor.
    pub post_merge_activities: Vec<ActivityId>,
}

/// On the absorbed customer's stream: it is a customer of its own again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomerRestored {
    pub absorbed_id: CustomerId,
    pub survivor_id: CustomerId,
}

/// On `customer_id`'s stream: a suspected duplicate pair (with `other_id`) was reviewed and
/// judged to be two different customers. The duplicates read model marks the pair dismissed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DuplicateDismissed {
    pub customer_id: CustomerId,
    pub other_id: CustomerId,
    /// Why they are not duplicates; never empty.
    pub reason: String,
}

/// What a [`DuplicateSuspected`] is about: a lead being captured or a customer being edited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum DuplicateSubject {
    Lead(LeadId),
    Customer(CustomerId),
}

impl DuplicateSubject {
    pub fn stream(&self) -> String {
        match self {
            DuplicateSubject::Lead(id) => id.stream(),
            DuplicateSubject::Customer(id) => id.stream(),
        }
    }
}

/// On the subject's stream, appended atomically with the `LeadCaptured` / `CustomerUpdated`
/// it accompanies: the existing customers the duplicate guard found at that moment. Exact
/// key collisions appear only when the caller proceeded anyway (`proceeded_anyway`, the
/// request's `create_anyway` / `save_anyway`); otherwise the command was refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DuplicateSuspected {
    pub subject: DuplicateSubject,
    pub collisions: Vec<crate::duplicates::KeyCollision>,
    /// Fuzzy candidates (review or duplicate score, no shared master key), best first.
    pub suspected: Vec<crate::duplicates::SuspectedMatch>,
    pub proceeded_anyway: bool,
}

/// On the customer's stream when one of its opportunities is won: it is now a repeat customer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomerDealWon {
    pub customer_id: CustomerId,
    pub opportunity_id: OpportunityId,
}

// ---------------------------------------------------------------- opportunity

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpportunityOpened {
    pub opportunity_id: OpportunityId,
    pub customer_id: CustomerId,
    pub lead_id: Option<LeadId>,
    pub owner: UserId,
    pub title: String,
    /// Expected amount in fen (0.01 CNY).
    pub amount_fen: Option<i64>,
    pub stage: String,
    /// The customer had won a deal before; enables skip rules.
    pub repeat_customer: bool,
    pub opened_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageMoved {
    pub opportunity_id: OpportunityId,
    pub from: String,
    pub to: String,
    pub root_cause: String,
    pub evidence: BTreeMap<String, String>,
    /// Set when the move used a skip rule, e.g. `repeat_customer`.
    pub skip_rule: Option<String>,
    pub moved_at: DateTime<Utc>,
    pub rules_version: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpportunityWon {
    pub opportunity_id: OpportunityId,
    pub customer_id: CustomerId,
    pub from_stage: String,
    pub finance_receipt_ref: String,
    pub contract_ref: String,
    pub delivery_acceptance_ref: String,
    pub won_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpportunityLost {
    pub opportunity_id: OpportunityId,
    pub from_stage: String,
    pub reason: String,
    pub lost_at: DateTime<Utc>,
}

// ---------------------------------------------------------------- ownership

/// What an owner change is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Owned {
    Lead(LeadId),
    Customer(CustomerId),
    Opportunity(OpportunityId),
}

impl Owned {
    pub fn stream(&self) -> String {
        match self {
            Owned::Lead(id) => id.stream(),
            Owned::Customer(id) => id.stream(),
            Owned::Opportunity(id) => id.stream(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnerChanged {
    pub subject: Owned,
    pub from: Option<UserId>,
    pub to: UserId,
    /// `handover` when a departing salesperson's book moves.
    pub reason: String,
    /// 1-based position of `to` in the receivers' priority list.
    pub receiver_rank: u32,
    /// The receiver was already at capacity (every receiver was).
    pub over_capacity: bool,
}

// ---------------------------------------------------------------- user

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Role {
    SalesRep,
    RegionalManager,
    OperationsDirector,
    Auditor,
    Administrator,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserCreated {
    pub user_id: UserId,
    pub name: String,
    pub role: Role,
    pub region: Option<String>,
    pub team: Option<String>,
    /// Maximum open leads.
    pub capacity: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRoleChanged {
    pub user_id: UserId,
    pub from: Role,
    pub to: Role,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRegionChanged {
    pub user_id: UserId,
    pub from_region: Option<String>,
    pub to_region: Option<String>,
    pub from_team: Option<String>,
    pub to_team: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserDeactivated {
    pub user_id: UserId,
    pub reason: String,
    pub deactivated_at: DateTime<Utc>,
}

/// On the departing user's stream, after the `OwnerChanged` events of a handover: who
/// received the book, and how many items moved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserHandedOver {
    pub user_id: UserId,
    /// In priority order.
    pub receivers: Vec<UserId>,
    pub items: u32,
}

// ---------------------------------------------------------------- rules

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RulesChanged {
    /// The complete new rule set; `rules.version` is the new version.
    pub rules: Rules,
    pub reason: String,
}

// ---------------------------------------------------------------- the enum

macro_rules! events {
    ($($variant:ident = $version:literal),* $(,)?) => {
        /// Every domain event. The variant name is the stable event type. `Serialize` gives
        /// readers a JSON view (`{"LeadCaptured": {...}}`); the log stores [`Event::encode`].
        #[derive(Debug, Clone, PartialEq, Eq, Serialize)]
        pub enum Event {
            $($variant($variant),)*
        }

        /// Every event type name, for registries and tests.
        pub const EVENT_TYPES: &[&str] = &[$(stringify!($variant)),*];

        impl Event {
            /// The stable type name stored in the log, e.g. `"LeadCaptured"`.
            pub fn event_type(&self) -> &'static str {
                match self {
                    $(Event::$variant(_) => stringify!($variant),)*
                }
            }

            /// The schema version of the payload `encode` writes.
            pub fn schema_version(&self) -> u16 {
                match self {
                    $(Event::$variant(_) => $version,)*
                }
            }

            /// The payload: bincode 2 of the variant's struct with `config::standard()`.
            pub fn encode(&self) -> Vec<u8> {
                match self {
                    $(Event::$variant(payload) => encode_payload(payload),)*
                }
            }

            /// Reads a payload back, upcasting old schema versions to the current one.
            pub fn decode(event_type: &str, schema_version: u16, bytes: &[u8]) -> Result<Event, DecodeError> {
                match (event_type, schema_version) {
                    ("LeadCaptured", 1) => {
                        let v1: LeadCapturedV1 = decode_payload(event_type, schema_version, bytes)?;
                        Ok(Event::LeadCaptured(v1.into()))
                    }
                    $((stringify!($variant), $version) => {
                        Ok(Event::$variant(decode_payload(event_type, schema_version, bytes)?))
                    })*
                    $((stringify!($variant), _) => Err(DecodeError::UnsupportedVersion {
                        event_type: event_type.to_owned(),
                        version: schema_version,
                    }),)*
                    _ => Err(DecodeError::UnknownEventType(event_type.to_owned())),
                }
            }
        }
    };
}

events! {
    LeadCaptured = 2,
    LeadAssigned = 1,
    LeadClaimed = 1,
    LeadReleased = 1,
    LeadQualified = 1,
    CustomerCreated = 1,
    CustomerUpdated = 1,
    ContactAdded = 1,
    ActivityLogged = 1,
    CustomersMerged = 1,
    CustomerAbsorbed = 1,
    CustomerUnmerged = 1,
    CustomerRestored = 1,
    CustomerDealWon = 1,
    DuplicateDismissed = 1,
    DuplicateSuspected = 1,
    OpportunityOpened = 1,
    StageMoved = 1,
    OpportunityWon = 1,
    OpportunityLost = 1,
    OwnerChanged = 1,
    UserCreated = 1,
    UserRoleChanged = 1,
    UserRegionChanged = 1,
    UserDeactivated = 1,
    UserHandedOver = 1,
    RulesChanged = 1,
}

/// Most bytes a payload's decoding may claim (bincode counts the in-memory size of each
/// container it is about to fill). Without a limit, a damaged or hostile length prefix makes
/// bincode try to allocate that many bytes and the process aborts (found by the
/// `decoding_random_payloads_never_panics` proptest: a 2.6 * 10^18-byte allocation). The log
/// caps an encoded payload at 1 MiB, which no real event's decoding takes beyond a few times.
const DECODE_LIMIT: usize = 64 * 1024 * 1024;

/// `config::standard()` with a decoding limit; the limit does not change the encoding.
fn config() -> bincode::config::Configuration<
    bincode::config::LittleEndian,
    bincode::config::Varint,
    bincode::config::Limit<DECODE_LIMIT>,
> {
    bincode::config::standard().with_limit::<DECODE_LIMIT>()
}

fn encode_payload<T: Serialize>(payload: &T) -> Vec<u8> {
    // Every payload is plain data (no maps with non-string keys, no untagged enums, no
    // `skip_serializing_if`), which bincode always encodes; the round-trip tests cover each.
    bincode::serde::encode_to_vec(payload, config()).expect("domain event payloads always encode")
}

fn decode_payload<T: DeserializeOwned>(event_type: &str, version: u16, bytes: &[u8]) -> Result<T, DecodeError> {
    let error = |message: String| DecodeError::Payload { event_type: event_type.to_owned(), version, message };
    let (payload, read) = bincode::serde::decode_from_slice(bytes, config()).map_err(|e| error(e.to_string()))?;
    if read != bytes.len() {
        return Err(error(format!("{} trailing bytes", bytes.len() - read)));
    }
    Ok(payload)
}

impl Event {
    /// The stream the event belongs to.
    pub fn stream(&self) -> String {
        match self {
            Event::LeadCaptured(e) => e.lead_id.stream(),
            Event::LeadAssigned(e) => e.lead_id.stream(),
            Event::LeadClaimed(e) => e.lead_id.stream(),
            Event::LeadReleased(e) => e.lead_id.stream(),
            Event::LeadQualified(e) => e.lead_id.stream(),
            Event::CustomerCreated(e) => e.customer_id.stream(),
            Event::CustomerUpdated(e) => e.customer_id.stream(),
            Event::ContactAdded(e) => e.customer_id.stream(),
            Event::ActivityLogged(e) => e.customer_id.stream(),
            Event::CustomersMerged(e) => e.survivor_id.stream(),
            Event::CustomerAbsorbed(e) => e.absorbed_id.stream(),
            Event::CustomerUnmerged(e) => e.survivor_id.stream(),
            Event::CustomerRestored(e) => e.absorbed_id.stream(),
            Event::DuplicateDismissed(e) => e.customer_id.stream(),
            Event::DuplicateSuspected(e) => e.subject.stream(),
            Event::CustomerDealWon(e) => e.customer_id.stream(),
            Event::OpportunityOpened(e) => e.opportunity_id.stream(),
            Event::StageMoved(e) => e.opportunity_id.stream(),
            Event::OpportunityWon(e) => e.opportunity_id.stream(),
            Event::OpportunityLost(e) => e.opportunity_id.stream(),
            Event::OwnerChanged(e) => e.subject.stream(),
            Event::UserCreated(e) => e.user_id.stream(),
            Event::UserRoleChanged(e) => e.user_id.stream(),
            Event::UserRegionChanged(e) => e.user_id.stream(),
            Event::UserDeactivated(e) => e.user_id.stream(),
            Event::UserHandedOver(e) => e.user_id.stream(),
            Event::RulesChanged(_) => RULES_STREAM.to_owned(),
        }
    }
}
