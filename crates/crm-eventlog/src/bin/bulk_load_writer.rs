//! Test helper for the bulk-load crash test: loads one new tree after another into a sled
//! database (`t<n>`, [`ENTRIES`] entries each, see [`entry`]) and prints `loaded <n>` once a
//! load returns and `flushed <n>` once sled's flush after it returns. The test kills it with
//! SIGKILL at random moments and checks that every tree is either empty or whole.
//!
//! Usage: `crm-eventlog-bulk-load-writer <dir> <first-tree>`

use std::io::Write;

/// Entries per tree: enough for two index levels (12 per leaf, 128 leaves per index node).
/// The test checks for exactly these (`tests/integration/bulk_load.rs`).
const ENTRIES: u32 = 40_000;

/// Entry `i` of tree `n`: `k<i, 8 digits>` = `v<n>-<i>`.
fn entry(n: u64, i: u32) -> (Vec<u8>, Vec<u8>) {
    (format!("k{i:08}").into_bytes(), format!("v{n}-{i}").into_bytes())
}

fn main() {
    let mut args = std::env::args().skip(1);
    let dir = args.next().expect("data dir");
    let first: u64 = args.next().and_then(|a| a.parse().ok()).expect("first tree");
    let db = sled::open(dir).expect("open");
    let mut out = std::io::stdout();
    for n in first.. {
        let tree = db.open_tree(format!("t{n}")).expect("open tree");
        tree.bulk_load((0..ENTRIES).map(|i| entry(n, i)).collect()).expect("bulk load");
        writeln!(out, "loaded {n}").unwrap();
        out.flush().unwrap();
        db.flush().expect("flush");
        writeln!(out, "flushed {n}").unwrap();
        out.flush().unwrap();
    }
}
