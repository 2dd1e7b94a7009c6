//! The data-health read model: how complete the customer base is, field by field, how many
//! records carry a flag the domain records instead of refusing them, and (joined at query
//! time with the duplicates read model) the duplicate rate.
//!
//! - **Completeness** of a field: live customers (not merged into another) with the field
//!   non-empty, divided by live customers; for every field in [`crm_domain::CUSTOMER_FIELDS`].
//! - **Flags** on live customers: `phone_raw` (the phone is not in E.164 form: it came from a
//!   lead whose number was invalid and was kept as typed), `uscc_checksum` (the USCC fails
//!   the GB 32100-2015 check character). On leads, counted at capture: `phone_raw` (a phone
//!   given and no E.164 form), `uscc_checksum` (a USCC given that fails its checksum),
//!   `intake_flagged` (the intake recorded `intake.flags`).
//! - **Duplicate rate**: live customers in at least one open duplicate candidate pair,
//!   divided by live customers. The pairs come from the duplicates read model; [`health`]
//!   takes them as input, so this crate does not repeat its logic.
//!
//! Every count is kept in three scopes (all `*`, region `r:<region>`, owner `o:<owner>`),
//! so an answer reads one key (and the duplicate pairs' customers) whatever the size of the
//! base, and a regional manager or a salesperson can be answered about their own records
//! only. Leads are counted in the `*` and region (at capture) scopes.
//!
//! Keys: `c/<customer>` the [`CustomerHealth`]; `s/<scope>` the non-zero counts of one
//! scope by counter, where the counter is `live`, `field:<name>`, `flag:<name>`, `leads` or
//! `lead_flag:<name>` (version 2; version 1 kept a key per count, `k/<scope>/<counter>`, and
//! its tree is read that way while it serves during the rebuild).
//!
//! ```
//! use crm_projection_health::{flags_of, HealthProjector};
//! use crm_projection_runtime::Projector;
//! assert_eq!(HealthProjector.name(), "health");
//! let fields = [("phone".to_owned(), "1380013".to_owned())].into();
//! assert_eq!(flags_of(&fields), vec!["phone_raw"]);
//! ```

mod projector;
mod query;

pub use projector::{flags_of, CustomerHealth, HealthProjector, Value, CUSTOMER_FLAGS, LEAD_FLAGS};
pub use query::{health, HealthReport, HealthScope};
