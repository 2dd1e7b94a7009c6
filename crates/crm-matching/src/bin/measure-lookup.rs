//! Measures candidate lookup for one incoming record against a large customer base: loads a
//! fixture into a `Matcher`, then times `find` (prepare, candidates, compare, sort) for a
//! sample of incoming records and prints percentiles.

use std::io::BufRead;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use crm_matching::{prepare_all, Matcher, Record};

/// Time duplicate lookups against a loaded customer base.
#[derive(Parser, Debug)]
struct Options {
    /// Directory with records.jsonl (the customer base).
    #[arg(long, env = "CRM_FIXTURE_DIR", default_value = "fixtures/matching/small")]
    fixture: PathBuf,
    /// Number of lookups to time.
    #[arg(long, env = "CRM_LOOKUPS", default_value_t = 20_000)]
    lookups: usize,
    /// Run each lookup this many times; the fastest run is its cost without scheduling
    /// noise (other processes on the machine), the first run its cost as the caller saw it.
    #[arg(long, env = "CRM_LOOKUP_REPEAT", default_value_t = 3)]
    repeat: usize,
}

fn main() -> anyhow::Result<()> {
    let options = Options::parse();
    let path = options.fixture.join("records.jsonl");
    let file = std::fs::File::open(&path).with_context(|| format!("opening {}", path.display()))?;
    let records: Vec<Record> = std::io::BufReader::new(file)
        .lines()
        .map(|l| -> anyhow::Result<Record> { Ok(serde_json::from_str(&l?)?) })
        .collect::<anyhow::Result<_>>()?;

    let t = Instant::now();
    let prepared = prepare_all(&records);
    let prepare = t.elapsed();
    let t = Instant::now();
    let mut matcher = Matcher::default();
    for p in prepared {
        matcher.insert_prepared(p);
    }
    let build = t.elapsed();
    println!("customers: {}", matcher.len());
    println!("prepare {:.1}s, index build {:.1}s", prepare.as_secs_f64(), build.as_secs_f64());

    // Incoming records: copies of customers spread over the base under a new id, so each
    // lookup finds the customer itself and its duplicates, as a lead from a known customer would.
    let step = (records.len() / options.lookups.max(1)).max(1);
    let mut first: Vec<Duration> = Vec::with_capacity(options.lookups);
    let mut best: Vec<Duration> = Vec::with_capacity(options.lookups);
    let mut found = 0usize;
    for record in records.iter().step_by(step).take(options.lookups) {
        let incoming = Record { id: "incoming".into(), ..record.clone() };
        let mut fastest = Duration::MAX;
        for run in 0..options.repeat.max(1) {
            let t = Instant::now();
            let matches = matcher.find(&incoming);
            let took = t.elapsed();
            if run == 0 {
                first.push(took);
                found += matches.len();
            }
            fastest = fastest.min(took);
        }
        best.push(fastest);
    }
    println!("lookups: {} (matches found {})", first.len(), found);
    let t = Instant::now();
    let pairs = matcher.duplicate_pairs();
    println!(
        "re-score of the whole index (duplicate_pairs): {:.1}s, {} pairs to review or merge",
        t.elapsed().as_secs_f64(),
        pairs.len()
    );
    report("lookup ms, first run", &mut first);
    report(&format!("lookup ms, fastest of {}", options.repeat.max(1)), &mut best);
    Ok(())
}

fn report(label: &str, times: &mut [Duration]) {
    times.sort();
    let pct = |p: f64| times[((times.len() as f64 * p) as usize).min(times.len() - 1)].as_secs_f64() * 1e3;
    println!(
        "{label}: p50 {:.3}, p90 {:.3}, p99 {:.3}, p99.9 {:.3}, max {:.3}",
        pct(0.5),
        pct(0.9),
        pct(0.99),
        pct(0.999),
        times.last().map_or(0.0, |d| d.as_secs_f64() * 1e3)
    );
}
