//! The audit read model: the operation log (who did what, when, to which stream), indexed by
//! actor, operation type and stream, plus the links a customer's history needs (customers
//! merged into it, its opportunities). Histories and as-of states are then read from the log
//! itself, which is the record: [`customer_history`] and [`customer_as_of`] fold the
//! customer's streams up to a position or a time rather than storing snapshots.
//!
//! Keys:
//! - `p/<position / 64, 20 digits>`: the [`Operation`]s of 64 consecutive positions;
//! - `a/<actor>\0<first position>`, `t/<event type>\0<first position>`: postings blocks of
//!   up to 256 positions, ascending; the open block of each value has `u64::MAX` as its first
//!   position (so it sorts last). A rebuild writes about one key per 64 events, instead of
//!   three per event. Operations by stream are found through the log's own stream index
//!   ([`SledEventStore::stream_positions_blocking`](crm_eventlog::SledEventStore::stream_positions_blocking)):
//!   most streams (a customer, a lead, an opportunity) hold a few events, so postings per
//!   stream cost a key per stream, most of this tree's keys (2.4 of 3.6 M at 10 M events);
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
