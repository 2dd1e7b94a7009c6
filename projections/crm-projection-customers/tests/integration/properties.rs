use std::collections::BTreeSet;

use crm_projection_customers::{index_entries, Value};
use crm_projection_runtime::decode_value;
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
        let (stored, wanted) = rt.block_on(async {
            let (_log, handle, _db) = assert_incremental_equals_rebuild(crate::projector(), &commands, &chunks).await;
            // The index holds exactly the entries the records call for: none left behind by
            // a change that moved one, none missing.
            let tree = handle.reader().tree;
            let (mut stored, mut wanted) = (BTreeSet::new(), BTreeSet::new());
            for entry in tree.iter() {
                let (key, value) = entry.unwrap();
                if key.first() == Some(&0) {
                    continue; // the runner's checkpoint
                }
                let value = decode_value::<Value>(&key, &value).unwrap();
                if let Value::Customer(view) = &value {
                    wanted.extend(view.index_entries());
                }
                let held = index_entries(&key, &value);
                // No block is left empty, and no entry is held twice.
                assert!(!matches!(value, Value::Postings(_) | Value::Created(_)) || !held.is_empty(), "an empty block");
                for entry in held {
                    assert!(stored.insert(entry), "an entry held twice");
                }
            }
            handle.stop().await;
            (stored, wanted)
        });
        prop_assert!(!wanted.is_empty());
        prop_assert_eq!(stored, wanted);
    }
}
