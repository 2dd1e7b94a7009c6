//! The customers read model: one record per customer with the fields the sales front end
//! lists and filters on, secondary indexes for the filters, and prefix search by name and
//! phone.
//!
//! Keys (all in the projection's own sled tree, never in the log), version 2:
//! - `c/<uuid>`: the [`CustomerView`];
//! - `p/<field>/<value>\0<bucket>`: a postings block, the ids (in order) of the customers with
//!   that `owner`, `region`, `stage`, `industry` or `tag` whose id falls in the bucket (the
//!   id's low 4 bits for owners, 12 bits for the others), so a million customers make tens of
//!   thousands of keys instead of millions;
//! - `p/created/<16 hex digits>`: the customers created in one span of 2^18 microseconds, as
//!   `(time, id)` in order;
//! - `x/<field>/<value>\0<uuid>`: an index key of its own for `name` (lower-case, no spaces)
//!   and `phone` (a +86 number's national digits, any other's digits with the country
//!   code), which prefix searches scan;
//! - `o/<bucket>`: the customers of the opportunities whose id falls in one of 65,536 buckets,
//!   for the stage.
//!
//! Absorbed (merged) customers have no index entries, so lists and searches show survivors
//! only. Version 1 kept one `x/` key per entry of every field (two per +86 phone) and one
//! `o/<uuid>` per opportunity; the queries still read such a tree while it serves during the
//! rebuild. A list cursor of version 1 (the index key's text) does not carry over to version
//! 2 (which orders by the bucket, then the id): given to a version 2 tree it starts from the
//! first page.
//!
//! Tags are the comma-separated values of the custom field `custom.tags`. A customer's stage
//! is the stage of its most recently changed opportunity (including the won or lost stage).
//!
//! ```
//! use crm_projection_customers::{CustomersProjector, Filter};
//! use crm_projection_runtime::Projector;
//! assert_eq!(CustomersProjector.name(), "customers");
//! assert!(Filter::default().is_empty());
//! ```

mod projector;
mod query;

pub use projector::{index_entries, CustomerView, CustomersProjector, Value};
pub use query::{get, list, search, Filter, Page, SearchKind};
