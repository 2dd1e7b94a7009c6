use crm_domain::Rules;
use crm_projection_runtime::fixtures::{Generator, GeneratorConfig};
use crm_projection_runtime::testing::{all_events, append_all, prefetch_coverage, TempLog};

/// After a restart a live build's memory is empty: the counters and customer records its
/// events change are read ahead, side by side, instead of one at a time inside the fold
/// (which held the live build seconds behind under load).
#[test]
fn a_live_build_after_a_restart_reads_ahead_nearly_every_key_it_reads() {
    let mut g = Generator::new(GeneratorConfig { seed: 11, users: 20, ..Default::default() });
    let commands: Vec<_> = (0..3000).map(|_| g.next_command()).collect();
    let log = TempLog::new();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(append_all(&log.store, &commands));
    let events = all_events(&log.store);
    let (read_ahead, misses) =
        prefetch_coverage(&crate::projector(), &Rules::default(), &events, events.len() / 2, 512);
    assert!(misses * 20 <= read_ahead as u64, "{misses} keys read one at a time, {read_ahead} read ahead");
    assert!(read_ahead > 100, "{read_ahead} keys read ahead");
}
