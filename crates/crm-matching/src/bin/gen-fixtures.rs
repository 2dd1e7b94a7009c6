//! Writes synthetic customers with planted duplicates: `records.jsonl` (one `Record` per
//! line) and `truth.csv` (`id,entity,variants`).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use crm_matching::synth::{generate, generate_latin, SynthConfig};

/// Generate matching fixtures with ground truth.
#[derive(Parser, Debug)]
struct Options {
    /// Number of records.
    #[arg(long, env = "CRM_FIXTURE_RECORDS", default_value_t = 10_000)]
    records: usize,
    /// Random seed; the same seed gives the same files.
    #[arg(long, env = "CRM_FIXTURE_SEED", default_value_t = 7)]
    seed: u64,
    /// Share of person (B2C) customers.
    #[arg(long, env = "CRM_FIXTURE_PERSON_SHARE", default_value_t = 0.4)]
    person_share: f64,
    /// Script of the records: `chinese` (B2B and B2C customers in China) or `latin`
    /// (Febrl-style persons and companies).
    #[arg(long, env = "CRM_FIXTURE_SCRIPT", default_value = "chinese")]
    script: String,
    /// Output directory.
    #[arg(long, env = "CRM_FIXTURE_OUT", default_value = "fixtures/matching/")]
    out: PathBuf,
}

fn main() -> anyhow::Result<()> {
    let options = Options::parse();
    let config = SynthConfig {
        records: options.records,
        seed: options.seed,
        person_share: options.person_share,
        ..SynthConfig::default()
    };
    let data = match options.script.as_str() {
        "chinese" => generate(&config),
        "latin" => generate_latin(&config),
        other => anyhow::bail!("unknown script {other:?}: chinese or latin"),
    };
    std::fs::create_dir_all(&options.out).with_context(|| format!("creating {}", options.out.display()))?;
    let path = options.out.join("records.jsonl");
    let mut records = BufWriter::new(File::create(&path).with_context(|| format!("creating {}", path.display()))?);
    for record in &data.records {
        serde_json::to_writer(&mut records, record)?;
        records.write_all(b"\n")?;
    }
    records.flush()?;
    let path = options.out.join("truth.csv");
    let mut truth = BufWriter::new(File::create(&path).with_context(|| format!("creating {}", path.display()))?);
    writeln!(truth, "id,entity,variants")?;
    for t in &data.truth {
        let variants: Vec<&str> = t.variants.iter().map(|v| v.as_str()).collect();
        writeln!(truth, "{},{},{}", t.id, t.entity, variants.join("|"))?;
    }
    truth.flush()?;
    let entities = data.truth.iter().map(|t| &t.entity).collect::<std::collections::HashSet<_>>().len();
    println!("wrote {} records of {} customers to {}", data.records.len(), entities, options.out.display());
    Ok(())
}
