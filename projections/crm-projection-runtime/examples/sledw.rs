//! sled 0.34 write cost, the floor under every projection build's commit: N sorted keys
//! shaped like customer index keys, written as single inserts (`insert`), in `sled::Batch`es
//! of CHUNK keys (`batch`), or from two threads (`par`), into a fresh database in
//! /tmp/rb3-sledw (removed first). docs/PERFORMANCE.md, section Projections, has the figures.
//!
//! ```text
//! cargo run --release -p crm-projection-runtime --example sledw -- N insert|batch|par [VALUE_BYTES] [CHUNK]
//! ```

use std::time::Instant;
fn main() {
    let n: usize = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(1_000_000);
    let mode = std::env::args().nth(2).unwrap_or_default();
    let vlen: usize = std::env::args().nth(3).and_then(|s| s.parse().ok()).unwrap_or(8);
    let chunk: usize = std::env::args().nth(4).and_then(|s| s.parse().ok()).unwrap_or(16384);
    let _ = std::fs::remove_dir_all("/tmp/rb3-sledw");
    let cfg = sled::Config::new().path("/tmp/rb3-sledw").mode(sled::Mode::HighThroughput);
    let db = cfg.open().unwrap();
    let tree = db.open_tree("t").unwrap();
    let mut keys: Vec<Vec<u8>> = (0..n)
        .map(|i| {
            format!(
                "x/owner/{:016x}\0{:08}-aaaa-bbbb-cccc-dddddddddddd",
                (i as u64).wrapping_mul(0x9E3779B97F4A7C15) % 1000,
                i
            )
            .into_bytes()
        })
        .collect();
    keys.sort();
    let val = vec![7u8; vlen];
    let t = Instant::now();
    if mode.contains("batch") {
        for c in keys.chunks(chunk) {
            let mut b = sled::Batch::default();
            for k in c {
                b.insert(k.as_slice(), val.as_slice());
            }
            tree.apply_batch(b).unwrap();
        }
    } else if mode.contains("par") {
        let half = keys.len() / 2;
        std::thread::scope(|s| {
            for part in [&keys[..half], &keys[half..]] {
                let tree = tree.clone();
                let val = &val;
                s.spawn(move || {
                    for k in part {
                        tree.insert(k.as_slice(), val.as_slice()).unwrap();
                    }
                });
            }
        });
    } else {
        for k in &keys {
            tree.insert(k.as_slice(), val.as_slice()).unwrap();
        }
    }
    let s = t.elapsed().as_secs_f64();
    println!("{mode} {vlen} {chunk}: {n} keys in {s:.2} s = {:.0} keys/s", n as f64 / s);
}
