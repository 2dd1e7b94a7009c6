//! The customers read model: one record per customer with the fields the sales front end
//! lists and filters on, secondary indexes for the filters, and prefix search by name and
//! phone.
//!
//! Keys (all in the projection's own sled tree, never in the log):
//! - `c/<uuid>`: the [`CustomerView`];
//! - `x/<field>/<value>\0<uuid>`: an index entry for `owner`, `region`, `stage`, `industry`,
//!   `tag`, `created` (20-digit microseconds), `name` (lower-case, no spaces) and `phone`
//!   (digits, with and without the country code); absorbed (merged) customers have no index
//!   entries, so lists and searches show survivors only;
//! - `o/<opportunity uuid>`: which customer an opportunity belongs to, for the stage.
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

pub use projector::{CustomerView, CustomersProjector, Value};
pub use query::{get, list, search, Filter, Page, SearchKind};
