//! Integration tests of the audit read model.

mod prefetch;
mod properties;
mod queries;

pub(crate) fn projector() -> crm_projection_audit::AuditProjector {
    crm_projection_audit::AuditProjector
}
