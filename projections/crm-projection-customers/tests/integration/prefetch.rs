/// After a restart a live build's memory is empty: the keys its events change are read
/// ahead, side by side, instead of one at a time inside the fold (which held the live build
/// behind under load).
#[test]
fn a_live_build_after_a_restart_reads_ahead_nearly_every_key_it_reads() {
    crm_projection_runtime::testing::assert_live_reads_are_read_ahead(&crate::projector());
}

/// A fresh build reads nothing ahead from its tree; it brings the entries of the keys each
/// event names first into the CPU's caches instead. Those keys are the ones the fold then
/// reads or writes, and nearly every event names one.
#[test]
fn the_keys_an_event_names_first_are_the_ones_its_fold_holds() {
    crm_projection_runtime::testing::assert_first_keys_are_held(&crate::projector(), 950);
}
