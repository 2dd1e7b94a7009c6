//! Integration tests of the reminders read model.

mod properties;
mod scenario;

pub(crate) fn projector() -> crm_projection_reminders::RemindersProjector {
    crm_projection_reminders::RemindersProjector
}
