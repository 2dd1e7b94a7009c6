//! The CRM domain: events, commands, aggregates, rules and normalisers.
//!
//! This crate is pure. It knows nothing about storage, the network or the clock: no sled,
//! tokio, tonic or prost, and time and ids come in with each command
//! ([`CommandContext`]). The server loads an aggregate by folding its stream, calls
//! [`Aggregate::handle`], and appends the events it returns; a refusal is a
//! [`DomainError`] and writes nothing.
//!
//! - [`normalize`]: phone numbers (E.164), Unified Social Credit Codes (GB 32100-2015
//!   checksum), company names (core / region / industry / legal form), e-mails, person names.
//! - [`Event`]: the persisted contract, past-tense, versioned, bincode 2 encoded, upcast on
//!   decode.
//! - Aggregates, one per stream kind: [`Lead`] (`lead-<id>`), [`Customer`]
//!   (`customer-<id>`), [`Opportunity`] (`opportunity-<id>`), [`User`] (`user-<id>`),
//!   [`RuleBook`] (`rules`). `handle` holds every business rule, `apply` none.
//! - Multi-aggregate commands ([`qualify_lead`], [`merge_customers`],
//!   [`unmerge_customers`], [`handover`]) are pure functions over several states.
//! - [`choose_assignee`]: automatic assignment with a trace.
//!
//! ```
//! use crm_domain::testing::test_context;
//! use crm_domain::{Aggregate, CaptureLead, Channel, Event, Lead, LeadCommand, LeadId, Rules};
//!
//! let lead_id = LeadId(uuid::Uuid::from_u128(7));
//! let capture = CaptureLead {
//!     lead_id,
//!     name: Some("张 伟".into()),
//!     company: Some("北京市康达医疗器械有限公司".into()),
//!     phone: Some("138 0013 8000".into()),
//!     email: None,
//!     wechat: None,
//!     uscc: None,
//!     region: None,
//!     channel: Channel::ExhibitionScan { exhibition_id: "CMEF-2026".into(), booth: "8.1H-A12".into() },
//!     source: "展会扫码".into(),
//!     custom_attributes: Default::default(),
//! };
//! let events = Lead::default().handle(LeadCommand::Capture(capture), &test_context(), &Rules::default()).unwrap();
//! let Event::LeadCaptured(captured) = &events[0] else { unreachable!() };
//! assert_eq!(captured.phone_e164.as_deref(), Some("+8613800138000"));
//! assert_eq!(captured.region.as_deref(), Some("北京"));
//!
//! // Events survive the log: encode, then decode by type name and schema version.
//! let bytes = events[0].encode();
//! let decoded = Event::decode(events[0].event_type(), events[0].schema_version(), &bytes).unwrap();
//! assert_eq!(decoded, events[0]);
//! assert_eq!(Lead::fold(&events).region(), Some("北京"));
//! ```

mod aggregate;
mod assignment;
mod calendar;
mod context;
mod customer;
mod duplicates;
mod error;
mod event;
mod ids;
mod lead;
pub mod normalize;
mod opportunity;
mod process;
mod rules;
pub mod testing;
mod user;

pub use aggregate::{Aggregate, StreamEvents};
pub use assignment::{ab_bucket, choose_assignee, Candidate};
pub use calendar::working_days_between;
pub use context::CommandContext;
pub use customer::{
    apply_changes, conflicting_fields, Customer, CustomerCommand, LogActivity, MergeRecord, NewContact,
    CUSTOMER_FIELDS, MAX_ACTIVITY_KEYWORDS,
};
pub use duplicates::{
    guard_duplicates, DuplicateCheck, ExactKey, FieldContribution, KeyCollision, SuspectedMatch, EXACT_KEY_RULE,
    MATCHED_FIELDS,
};
pub use error::{DecodeError, DomainError};
pub use event::{
    AbArm, ActivityKind, ActivityLogged, AssignmentReason, AssignmentTrace, CandidateTrace, Channel, Contact,
    ContactAdded, CustomerAbsorbed, CustomerCreated, CustomerDealWon, CustomerRestored, CustomerUnmerged,
    CustomerUpdated, CustomersMerged, DuplicateDismissed, DuplicateSubject, DuplicateSuspected, Event, FieldChange,
    LeadAssigned, LeadCaptured, LeadCapturedV1, LeadClaimed, LeadQualified, LeadReleased, OpportunityLost,
    OpportunityOpened, OpportunityWon, Owned, OwnerChanged, Role, RulesChanged, StageMoved, UserCreated,
    UserDeactivated, UserHandedOver, UserRegionChanged, UserRoleChanged, EVENT_TYPES,
};
pub use ids::{ActivityId, ContactId, CustomerId, LeadId, OpportunityId, StreamId, UserId, RULES_STREAM};
pub use lead::{CaptureLead, Lead, LeadCommand, LeadStatus};
pub use normalize::{
    normalize_company, normalize_email, normalize_person_name, normalize_phone, normalize_uscc, uscc_check_char,
    CompanyName, Phone, PhoneKind, Uscc,
};
pub use opportunity::{Opportunity, OpportunityCommand, OpportunityStatus};
pub use process::{
    group_by_stream, handover, merge_customers, qualify_lead, unmerge_customers, MergeCustomers, MergeWinner,
    QualifyLead, Receiver,
};
pub use rules::{
    AbSplit, AssignmentRules, DuplicateThresholds, Pipeline, RuleBook, Rules, RulesCommand, Strategy, Transition,
    TransitionCondition, STAGE_CONTRACT, STAGE_DEMO, STAGE_INITIAL, STAGE_LOST, STAGE_NEEDS, STAGE_NEGOTIATION,
    STAGE_WON,
};
pub use user::{User, UserCommand, UserSummary};
