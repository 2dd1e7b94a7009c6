//! The duplicates read model: the live customers in a [`crm_matching::Matcher`], the
//! candidate pairs it finds with their score, explanation and status (open, dismissed with
//! a reason, merged), and one report per merge (what, why, by whom, the score at that moment).
//!
//! Keys (in the projection's own sled tree):
//! - `r/<uuid>`: the customer's profile fields and whether it is absorbed ([`CustomerRecord`]);
//! - `p/<uuid a>/<uuid b>` with `a < b`: a [`Candidate`] pair;
//! - `m/<position, 20 digits>`: a [`MergeReport`], keyed by the `CustomersMerged` position;
//! - `l/<absorbed uuid>`: the position of the absorbed customer's last merge report.
//!
//! The Matcher is not persisted: [`DuplicatesProjector::open`] rebuilds it in memory from
//! the serving tree's `r/` records before the runner starts, and `apply` keeps it in step.
//! Each build (tree: serving, shadow, verify) has its own Matcher, started empty when the
//! build starts from position 0. Candidate pairs are found when a customer is created,
//! updated, changed by a merge or restored by an unmerge; a pair's status survives later
//! re-scoring.
//!
//! The Matcher's thresholds are the rules' duplicate thresholds ([`match_config`]); they are
//! the fingerprint, so changing them rebuilds (re-scans) the read model from position 0.
//! [`DuplicatesProjector::check`] is the lookup the command path's duplicate guard uses, on
//! the same Matcher and configuration as the serving build.
//!
//! ```
//! use crm_projection_duplicates::DuplicatesProjector;
//! use crm_projection_runtime::Projector;
//! assert_eq!(DuplicatesProjector::new().name(), "duplicates");
//! ```

mod projector;
mod query;

pub use projector::{
    match_config, pair_key, to_record, Candidate, Contribution, CustomerRecord, DuplicatesProjector, MergeReport,
    Status, Value, DECODED,
};
pub use query::{customer, list, merge_reports, open_pairs, pair, Page, StatusFilter};
