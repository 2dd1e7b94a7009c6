//! The audit read model: the operation log (who did what, when, to which stream), indexed by
//! actor, operation type and stream, plus the links a customer's history needs (customers
//! merged into it, its opportunities). Histories and as-of states are then read from the log
//! itself, which is the record: [`customer_history`] and [`customer_as_of`] fold the
//! customer's streams up to a position or a time rather than storing snapshots.
//!
//! Keys:
//! - `p/<position, 20 digits>`: the [`Operation`];
//! - `a/<actor>\0<position>`, `t/<event type>\0<position>`, `s/<stream>\0<position>`: index
//!   entries;
//! - `m/<survivor>/<absorbed>`: every customer ever merged into a survivor (kept after an
//!   unmerge: the history still shows the merged period);
//! - `c/<customer>/<opportunity>`: the customer's opportunities.
//!
//! ```
//! use crm_projection_audit::AuditProjector;
//! use crm_projection_runtime::Projector;
//! assert_eq!(AuditProjector.name(), "audit");
//! ```

mod projector;
mod query;

pub use projector::{AuditProjector, Operation, Value};
pub use query::{customer_as_of, customer_history, operations, AsOf, CustomerAsOf, OperationFilter, OperationPage};
