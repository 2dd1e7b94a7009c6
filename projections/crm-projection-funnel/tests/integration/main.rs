//! Integration tests of the funnel read model.

mod model;
mod prefetch;
mod properties;
mod scenario;

pub(crate) fn projector() -> crm_projection_funnel::FunnelProjector {
    crm_projection_funnel::FunnelProjector::new(crm_projection_funnel::Calendar::china_2026())
}
