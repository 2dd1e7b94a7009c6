use crm_projection_runtime::fixtures::{Generator, GeneratorConfig};
use crm_projection_runtime::testing::assert_incremental_equals_rebuild;
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, .. ProptestConfig::default() })]

    /// Random command sequences: the read model updated batch by batch (with a restart
    /// halfway) equals the same model rebuilt from scratch.
    #[test]
    fn incremental_equals_rebuild(seed in any::<u64>(), n in 50usize..600, chunks in proptest::collection::vec(1usize..80, 1..6)) {
        let mut g = Generator::new(GeneratorConfig { seed, users: 6, ..Default::default() });
        let commands: Vec<_> = (0..n).map(|_| g.next_command()).collect();
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(async {
            let (_log, handle, _db) = assert_incremental_equals_rebuild(crate::projector(), &commands, &chunks).await;
            handle.stop().await;
        });
    }
}
