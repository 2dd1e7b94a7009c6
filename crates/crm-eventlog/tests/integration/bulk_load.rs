//! `sled::Tree::bulk_load` (vendor/sled/PATCHES.md, patch 5): a new tree filled from sorted
//! entries by building its nodes directly reads, changes, and recovers after a reopen
//! exactly like a tree that got the same entries one insert at a time, and a load that is not
//! allowed changes nothing.

use std::collections::BTreeMap;
use std::ops::Bound;

use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

type Model = BTreeMap<Vec<u8>, Vec<u8>>;

/// Every way of reading `tree` agrees with `model`: a scan each way, a point read of every
/// key (of an even sample past 20,000) and of a key just past it, ranges between random keys
/// each way, and sled's own walk of every level.
fn assert_matches(tree: &sled::Tree, model: &Model, rng: &mut StdRng) {
    let forward: Vec<(Vec<u8>, Vec<u8>)> =
        tree.iter().map(|kv| kv.unwrap()).map(|(k, v)| (k.to_vec(), v.to_vec())).collect();
    let expected: Vec<(Vec<u8>, Vec<u8>)> = model.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    assert_eq!(forward.len(), expected.len(), "entries scanned");
    assert!(forward == expected, "a forward scan differs from the model");
    let backward: Vec<Vec<u8>> = tree.iter().rev().map(|kv| kv.unwrap().0.to_vec()).collect();
    assert!(backward.iter().eq(model.keys().rev()), "a backward scan differs from the model");
    // Every key of a small model; an even sample of a large one (its scans cover all).
    let step = (model.len() / 20_000).max(1);
    for (key, value) in model.iter().step_by(step) {
        assert_eq!(tree.get(key).unwrap().as_deref(), Some(value.as_slice()), "get {key:?}");
        let mut past = key.clone();
        past.push(0);
        assert_eq!(tree.get(&past).unwrap().map(|v| v.to_vec()), model.get(&past).cloned(), "get {past:?}");
    }
    let keys: Vec<&Vec<u8>> = model.keys().collect();
    for _ in 0..50.min(keys.len()) {
        let (a, b) = (keys[rng.gen_range(0..keys.len())], keys[rng.gen_range(0..keys.len())]);
        let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
        let got: Vec<Vec<u8>> = tree.range(lo.as_slice()..hi.as_slice()).map(|kv| kv.unwrap().0.to_vec()).collect();
        let want: Vec<Vec<u8>> =
            model.range::<Vec<u8>, _>((Bound::Included(lo), Bound::Excluded(hi))).map(|(k, _)| k.clone()).collect();
        assert_eq!(got, want, "range {lo:?}..{hi:?}");
        let got: Vec<Vec<u8>> =
            tree.range(lo.as_slice()..hi.as_slice()).rev().map(|kv| kv.unwrap().0.to_vec()).collect();
        assert!(got.iter().eq(want.iter().rev()), "range {lo:?}..{hi:?} backwards");
        let below = tree.get_lt(lo).unwrap().map(|(k, _)| k.to_vec());
        assert_eq!(below.as_ref(), model.range::<Vec<u8>, _>(..lo).next_back().map(|(k, _)| k), "get_lt {lo:?}");
        let above = tree.get_gt(lo).unwrap().map(|(k, _)| k.to_vec());
        assert_eq!(
            above.as_ref(),
            model.range::<Vec<u8>, _>((Bound::Excluded(lo), Bound::Unbounded)).next().map(|(k, _)| k),
            "get_gt {lo:?}"
        );
    }
    // Walks every level through the siblings' links and checks each node an index names is on it.
    tree.verify_integrity().unwrap();
}

/// Keys of the shapes a read model writes: short prefixes, long shared prefixes (longer than
/// the 255 bytes a node's prefix can hold), and keys that extend one another.
fn keys(n: usize, rng: &mut StdRng) -> Vec<Vec<u8>> {
    let long = vec![b'x'; 300];
    let mut keys: Vec<Vec<u8>> = (0..n)
        .map(|i| match i % 4 {
            0 => format!("c/{:016x}", rng.gen::<u64>()).into_bytes(),
            1 => [b"i/name/".as_slice(), format!("{:08}", rng.gen_range(0..100_000_000)).as_bytes()].concat(),
            2 => [long.as_slice(), format!("{:08}", rng.gen_range(0..1_000_000)).as_bytes()].concat(),
            _ => (0..rng.gen_range(1..6)).map(|_| rng.gen_range(0..4u8)).collect(),
        })
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

fn value(rng: &mut StdRng) -> Vec<u8> {
    (0..rng.gen_range(0..64)).map(|_| rng.gen()).collect()
}

/// Loads `n` generated entries into a new tree, checks it, changes it at random, checks it,
/// and checks it again after the database is closed and reopened.
fn load_change_reopen(n: usize, changes: usize, seed: u64) -> usize {
    let mut rng = StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let mut model: Model = keys(n, &mut rng).into_iter().map(|k| (k, value(&mut rng))).collect();
    let loaded = model.len();
    {
        let db = sled::open(dir.path()).unwrap();
        let tree = db.open_tree("loaded").unwrap();
        assert!(tree.bulk_loadable().unwrap());
        let entries: Vec<(&Vec<u8>, &Vec<u8>)> = model.iter().collect();
        tree.bulk_load(entries).unwrap();
        assert!(!tree.bulk_loadable().unwrap() || model.is_empty());
        assert_matches(&tree, &model, &mut rng);
        let known: Vec<Vec<u8>> = model.keys().cloned().collect();
        for _ in 0..changes {
            let key = match rng.gen_range(0..3) {
                0 if !known.is_empty() => known[rng.gen_range(0..known.len())].clone(),
                1 if !known.is_empty() => [known[rng.gen_range(0..known.len())].as_slice(), &[rng.gen()]].concat(),
                _ => keys(1, &mut rng).remove(0),
            };
            if rng.gen_bool(0.4) {
                assert_eq!(tree.remove(&key).unwrap().map(|v| v.to_vec()), model.remove(&key), "remove {key:?}");
            } else {
                let v = value(&mut rng);
                assert_eq!(tree.insert(&key, v.clone()).unwrap().map(|v| v.to_vec()), model.insert(key, v));
            }
        }
        assert_matches(&tree, &model, &mut rng);
        db.flush().unwrap();
    }
    let db = sled::open(dir.path()).unwrap();
    assert_matches(&db.open_tree("loaded").unwrap(), &model, &mut rng);
    loaded
}

#[test]
fn a_bulk_loaded_tree_reads_changes_and_reopens_like_an_inserted_one() {
    // Over 12 x 128 x 128 distinct entries (some generated keys repeat): more than 16,384
    // leaves, so more than 128 index nodes above them, two above those, then the root.
    let loaded = load_change_reopen(280_000, 5_000, 7);
    assert!(loaded > 12 * 128 * 128, "{loaded} entries: too few for three index levels");
}

/// Removing most of a loaded tree merges its leaves and index nodes into their left
/// siblings (through the links the load wrote); dropping it leaves a new tree of the name.
#[test]
fn a_bulk_loaded_tree_shrinks_by_merges_and_drops() {
    let mut rng = StdRng::seed_from_u64(11);
    let db = sled::Config::new().temporary(true).open().unwrap();
    let tree = db.open_tree("loaded").unwrap();
    let mut model: Model = keys(60_000, &mut rng).into_iter().map(|k| (k, value(&mut rng))).collect();
    tree.bulk_load(model.iter().collect()).unwrap();
    let mut doomed: Vec<Vec<u8>> = model.keys().cloned().collect();
    doomed.retain(|_| rng.gen_bool(0.97));
    for key in &doomed {
        assert!(tree.remove(key).unwrap().is_some());
        model.remove(key);
    }
    // Most leaves fell under sled's merge threshold (4 keys), and a removal that passes such
    // a leaf merges it into its left sibling through the links the load wrote (a load
    // without index links fails here, in sled's merge).
    assert_matches(&tree, &model, &mut rng);

    assert!(db.drop_tree("loaded").unwrap());
    let again = db.open_tree("loaded").unwrap();
    assert!(again.is_empty() && again.bulk_loadable().unwrap());
}

#[test]
fn a_bulk_load_not_allowed_changes_nothing() {
    let db = sled::Config::new().temporary(true).open().unwrap();
    let tree = db.open_tree("t").unwrap();
    let unsorted = [(b"b".to_vec(), b"1".to_vec()), (b"a".to_vec(), b"2".to_vec())];
    let repeated = [(b"a".to_vec(), b"1".to_vec()), (b"a".to_vec(), b"2".to_vec())];
    for bad in [unsorted, repeated] {
        let err = tree.bulk_load(bad.to_vec()).unwrap_err();
        assert!(err.to_string().contains("not strictly ascending"), "{err}");
        assert!(tree.is_empty());
    }

    tree.insert(b"kept", b"v".to_vec()).unwrap();
    assert!(!tree.bulk_loadable().unwrap());
    let err = tree.bulk_load(vec![(b"z".to_vec(), b"1".to_vec())]).unwrap_err();
    assert!(err.to_string().contains("not empty"), "{err}");
    assert_eq!(tree.iter().count(), 1);
    assert_eq!(tree.get(b"kept").unwrap().unwrap(), b"v".as_slice());

    // Emptied by removals after its leaves split: sled merged them back into one empty leaf
    // under the root, so it loads like a new tree.
    for i in 0..1_000u32 {
        tree.insert(i.to_be_bytes(), b"v".to_vec()).unwrap();
    }
    tree.clear().unwrap();
    assert!(tree.bulk_loadable().unwrap());
    tree.bulk_load(vec![(b"z".to_vec(), b"1".to_vec())]).unwrap();
    assert_eq!(tree.iter().map(|kv| kv.unwrap().0.to_vec()).collect::<Vec<_>>(), vec![b"z".to_vec()]);

    // Emptied after its index grew a level: sled keeps the old nodes, so it is refused.
    let grown = db.open_tree("grown").unwrap();
    for i in 0..20_000u32 {
        grown.insert(i.wrapping_mul(2_654_435_761).to_be_bytes(), b"v".to_vec()).unwrap();
    }
    grown.clear().unwrap();
    assert!(grown.is_empty());
    assert!(!grown.bulk_loadable().unwrap());
    let err = grown.bulk_load(vec![(b"z".to_vec(), b"1".to_vec())]).unwrap_err();
    assert!(err.to_string().contains("not a new tree"), "{err}");
    assert!(grown.is_empty());

    // A new tree that got one key and lost it is loadable; so is an empty load.
    let other = db.open_tree("u").unwrap();
    other.insert(b"gone", b"v".to_vec()).unwrap();
    other.remove(b"gone").unwrap();
    other.bulk_load::<&[u8], &[u8]>(Vec::new()).unwrap();
    other.bulk_load(vec![(b"a".to_vec(), b"1".to_vec()), (b"b".to_vec(), b"2".to_vec())]).unwrap();
    assert_eq!(
        other.iter().keys().map(|k| k.unwrap().to_vec()).collect::<Vec<_>>(),
        vec![b"a".to_vec(), b"b".to_vec()]
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Sizes from nothing through one leaf and one index level to two (past 12 x 128 entries).
    #[test]
    fn bulk_loads_of_any_size_agree_with_the_model(n in 0usize..4_000, seed in any::<u64>()) {
        load_change_reopen(n, 300, seed);
    }
}

/// SIGKILL a process that bulk-loads one new tree after another (`t<n>`, 40,000 entries
/// `k<i, 8 digits>` = `v<n>-<i>`) at random moments, 12 times: after each reopen every tree
/// the round made is empty or whole (a load is one swap of the root in sled's log, recovered
/// or not), and every tree whose flush returned is whole.
#[test]
fn a_bulk_load_killed_at_any_moment_leaves_its_tree_empty_or_whole() {
    use std::io::Read;
    let dir = tempfile::tempdir().unwrap();
    let mut rng = StdRng::seed_from_u64(5);
    let (mut flushed, mut whole, mut empty) = (Vec::new(), 0, 0);
    let mut next = 0u64;
    for round in 0..12 {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_crm-eventlog-bulk-load-writer"))
            .arg(dir.path())
            .arg(next.to_string())
            .stderr(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("spawn the loader");
        std::thread::sleep(std::time::Duration::from_millis(rng.gen_range(30..400)));
        child.kill().expect("SIGKILL");
        child.wait().unwrap();
        let mut out = String::new();
        child.stdout.take().unwrap().read_to_string(&mut out).unwrap();
        flushed.extend(out.lines().filter_map(|l| l.strip_prefix("flushed ")).map(|n| n.parse::<u64>().unwrap()));

        let db = sled::open(dir.path()).expect("reopen after SIGKILL");
        let names: Vec<u64> = db
            .tree_names()
            .iter()
            .filter_map(|name| std::str::from_utf8(name).ok()?.strip_prefix('t')?.parse().ok())
            .filter(|&n| n >= next)
            .collect();
        for &n in &names {
            let tree = db.open_tree(format!("t{n}")).unwrap();
            let held: Vec<(Vec<u8>, Vec<u8>)> =
                tree.iter().map(|kv| kv.unwrap()).map(|(k, v)| (k.to_vec(), v.to_vec())).collect();
            if held.is_empty() && !flushed.contains(&n) {
                empty += 1;
                continue;
            }
            let expected: Vec<(Vec<u8>, Vec<u8>)> =
                (0..40_000u32).map(|i| (format!("k{i:08}").into_bytes(), format!("v{n}-{i}").into_bytes())).collect();
            assert!(held == expected, "round {round}: tree t{n} holds {} entries, not the 40,000 loaded", held.len());
            whole += 1;
        }
        next = names.iter().max().map_or(next, |n| n + 1);
    }
    assert!(!flushed.is_empty() && whole > 0, "no load finished in 12 rounds");
    eprintln!("{whole} whole trees and {empty} empty ones after the kills, {} flushes acknowledged", flushed.len());
}
