//! The workload read model: per salesperson, the open leads they hold, the leads assigned to
//! them and not claimed (and how many of those are past the unclaimed-alert limit), and the
//! median first-response time.
//!
//! **First-response time** is the time from a `LeadAssigned` to the `LeadClaimed` by that
//! assignee that follows it, in whole minutes (rounded down), one sample per claimed
//! assignment, counted for the claimer. A reassignment restarts the clock; a lead claimed
//! from the pool (never assigned) or released before a claim gives no sample. Leads carry
//! no activities (those are logged on customers), so the claim is the salesperson's first
//! response.
//!
//! "Open" is the lead aggregate's own notion: assigned or claimed, not yet qualified and not
//! released. "Unclaimed past the limit" is evaluated at query time against a `now` and the
//! `unclaimed_alert_hours` the caller passes (the rule in force), with the same comparison
//! as `crm_domain::Lead::unclaimed_alert_due` (`now - assigned_at > limit`): the fold stores
//! timestamps only, depends on no rule, and stays deterministic.
//!
//! Keys:
//! - `l/<lead>`: the lead's [`LeadState`];
//! - `h/<holder>/<lead>`: the leads a user holds (assigned or claimed);
//! - `a/<assigned_at micros, 20 digits>/<lead>`: assigned and not yet claimed, by time;
//! - `n/<user>`: the number of open leads the user holds;
//! - `t/<user>`: first-response minutes -> count (a histogram, for the median);
//! - `u/<user>`: the user's name, role, region and whether active.
//!
//! ```
//! use crm_projection_runtime::Projector;
//! use crm_projection_workload::WorkloadProjector;
//! let p = WorkloadProjector;
//! assert_eq!(p.name(), "workload");
//! // Rules are read at query time, not in the fold: a rule change rebuilds nothing.
//! let mut rules = crm_domain::Rules::default();
//! let before = p.fingerprint(&rules);
//! rules.assignment.unclaimed_alert_hours = 8;
//! assert_eq!(before, p.fingerprint(&rules));
//! ```

mod projector;
mod query;

pub use projector::{LeadPhase, LeadState, UserInfo, Value, WorkloadProjector};
pub use query::{unclaimed, workload, SalespersonLoad, UnclaimedLead, WorkloadQuery};
