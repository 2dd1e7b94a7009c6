//! Integration tests of the workload read model.

mod prefetch;
mod properties;
mod scenario;

pub(crate) fn projector() -> crm_projection_workload::WorkloadProjector {
    crm_projection_workload::WorkloadProjector
}
