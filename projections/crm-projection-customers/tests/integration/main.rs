//! Integration tests of the customers read model.

mod prefetch;
mod properties;
mod queries;

pub(crate) fn projector() -> crm_projection_customers::CustomersProjector {
    crm_projection_customers::CustomersProjector
}
