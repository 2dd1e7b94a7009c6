//! Checks, on a stopped server's data directory, that every command `command-load
//! --acked-out` recorded as acknowledged is in the log at its position, that no lead was
//! captured twice, and that the hash chain is intact. Prints one JSON object; exits 1 on a
//! violation.
//!
//! `cargo run --release -p crm-benches --bin verify-acked -- --data-dir DIR --acked FILE`

use std::collections::HashMap;
use std::path::PathBuf;

use clap::Parser;
use crm_eventlog::{Config, SledEventStore};

#[derive(Debug, Parser)]
struct Options {
    /// The server's data directory (the log is in `<dir>/eventlog`).
    #[arg(long)]
    data_dir: PathBuf,
    /// Lines of `<stream> <position>`.
    #[arg(long)]
    acked: PathBuf,
}

fn main() -> anyhow::Result<()> {
    let o = Options::parse();
    let store = SledEventStore::open(Config::new(o.data_dir.join("eventlog")))?;
    let head = store.committed_head();
    let mut stream_at: HashMap<u64, String> = HashMap::with_capacity(head as usize);
    let mut captured: HashMap<String, u32> = HashMap::new();
    let mut from = 1;
    loop {
        let batch = store.read_all_blocking(from, 10_000)?;
        let Some(last) = batch.last() else { break };
        from = last.position + 1;
        for e in batch {
            if e.event_type == "LeadCaptured" {
                *captured.entry(e.stream.clone()).or_default() += 1;
            }
            stream_at.insert(e.position, e.stream);
        }
    }
    let text = std::fs::read_to_string(&o.acked)?;
    let (mut acked, mut missing) = (0u64, 0u64);
    for line in text.lines() {
        let Some((stream, position)) = line.split_once(' ') else { continue };
        acked += 1;
        if stream_at.get(&position.parse()?).map(String::as_str) != Some(stream) {
            missing += 1;
        }
    }
    let twice = captured.values().filter(|n| **n > 1).count();
    let chain = store.verify_log(|_, _| {})?;
    store.close();
    let ok = missing == 0 && twice == 0 && chain.first_broken.is_none();
    println!(
        "{}",
        serde_json::json!({
            "head": head, "acknowledged": acked, "missing": missing, "leads_captured_twice": twice,
            "chain_intact": chain.first_broken.is_none(), "ok": ok,
        })
    );
    if !ok {
        std::process::exit(1);
    }
    Ok(())
}
