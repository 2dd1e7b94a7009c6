//! The funnel read model: per stage entered and exited counts, stage-to-stage conversion,
//! dwell time in working days (average and median, with a configurable [`Calendar`]),
//! opportunities overdue against their stage limit, and root-cause tags; by region, owner and
//! month.
//!
//! Every count is kept in four scopes (all, region, owner, region+owner), so a query reads a
//! few dozen keys whatever the size of the base. Attribution: a move counts in the month of
//! its `moved_at` and under the opportunity's owner and region at that time (the region is
//! the customer's when the opportunity was opened). "Won" counts only wins that carry the
//! finance receipt, the contract and the delivery acceptance references; others are counted
//! apart as `won_unverified`.
//!
//! The fold reads the stage time limits and the pipeline from the rules it is built with, and
//! the calendar from its configuration: both are in the fingerprint, so a `ChangeRules` that
//! alters a limit rebuilds the funnel.
//!
//! ```
//! use crm_projection_funnel::{Calendar, FunnelProjector};
//! use crm_projection_runtime::Projector;
//! let p = FunnelProjector::new(Calendar::china_2026());
//! let mut rules = crm_domain::Rules::default();
//! let before = p.fingerprint(&rules);
//! rules.stage_time_limits.insert(crm_domain::STAGE_DEMO.into(), 3);
//! assert_ne!(before, p.fingerprint(&rules));
//! ```

mod calendar;
mod projector;
mod query;

pub use calendar::Calendar;
pub use projector::{Bucket, DueDays, Dues, FunnelProjector, Month, OpportunityState, Value, NO_REGION};
pub use query::{funnel, FunnelQuery, FunnelReport, ReportCache, StageReport};
