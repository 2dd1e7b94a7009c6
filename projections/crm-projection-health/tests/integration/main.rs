//! Integration tests of the health read model.

mod prefetch;
mod properties;
mod scenario;

pub(crate) fn projector() -> crm_projection_health::HealthProjector {
    crm_projection_health::HealthProjector
}
