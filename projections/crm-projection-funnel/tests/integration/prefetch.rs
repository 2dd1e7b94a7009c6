/// After a restart a live build's memory is empty: the keys its events change are read
/// ahead, side by side, instead of one at a time inside the fold (which held the live build
/// behind under load).
#[test]
fn a_live_build_after_a_restart_reads_ahead_nearly_every_key_it_reads() {
    crm_projection_runtime::testing::assert_live_reads_are_read_ahead(&crate::projector());
}
