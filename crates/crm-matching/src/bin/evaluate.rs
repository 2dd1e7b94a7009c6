//! Re-scans a fixture (`records.jsonl` + `truth.csv`) and prints pairwise precision, recall,
//! F1, the blocking reduction ratio and pair completeness. Exits non-zero below the targets
//! given with `--min-*`.

use std::collections::HashMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context};
use clap::Parser;
use crm_matching::{compare, evaluate, prepare_all, rescan_prepared, Decision, MatchConfig, Record};

/// Evaluate duplicate matching against ground truth.
#[derive(Parser, Debug)]
struct Options {
    /// Directory with records.jsonl and truth.csv.
    #[arg(long, env = "CRM_FIXTURE_DIR", default_value = "fixtures/matching/small")]
    fixture: PathBuf,
    /// Matching configuration as JSON (defaults when absent).
    #[arg(long, env = "CRM_MATCH_CONFIG")]
    config: Option<PathBuf>,
    /// Fail when F1 is below this.
    #[arg(long, env = "CRM_EVAL_MIN_F1")]
    min_f1: Option<f64>,
    /// Fail when precision is below this.
    #[arg(long, env = "CRM_EVAL_MIN_PRECISION")]
    min_precision: Option<f64>,
    /// Fail when pair completeness (true pairs reaching comparison) is below this.
    #[arg(long, env = "CRM_EVAL_MIN_PAIR_COMPLETENESS")]
    min_pair_completeness: Option<f64>,
    /// Also print precision, recall and F1 for match weights from 8 to 22.
    #[arg(long, env = "CRM_EVAL_SWEEP")]
    sweep: bool,
    /// Print this many missed and wrongly matched pairs with their explanations.
    #[arg(long, env = "CRM_EVAL_SHOW", default_value_t = 0)]
    show: usize,
}

fn read_records(path: &Path) -> anyhow::Result<Vec<Record>> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    std::io::BufReader::new(file)
        .lines()
        .enumerate()
        .filter(|(_, line)| line.as_ref().map_or(true, |l| !l.trim().is_empty()))
        .map(|(n, line)| -> anyhow::Result<Record> {
            let line = line?;
            serde_json::from_str(&line).with_context(|| format!("{}:{}", path.display(), n + 1))
        })
        .collect()
}

/// `id -> (entity, variants)` from `id,entity,variants`.
fn read_truth(path: &Path) -> anyhow::Result<HashMap<String, (String, String)>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut out = HashMap::new();
    for line in text.lines().skip(1).filter(|l| !l.trim().is_empty()) {
        let mut parts = line.splitn(3, ',');
        let (Some(id), Some(entity)) = (parts.next(), parts.next()) else { bail!("bad truth line {line:?}") };
        out.insert(id.to_owned(), (entity.to_owned(), parts.next().unwrap_or("").to_owned()));
    }
    Ok(out)
}

fn main() -> anyhow::Result<()> {
    let options = Options::parse();
    let config: MatchConfig = match &options.config {
        Some(path) => serde_json::from_str(
            &std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?,
        )?,
        None => MatchConfig::default(),
    };
    let started = Instant::now();
    let records = read_records(&options.fixture.join("records.jsonl"))?;
    let truth = read_truth(&options.fixture.join("truth.csv"))?;
    let entities: Vec<&str> = records
        .iter()
        .map(|r| truth.get(&r.id).map(|(e, _)| e.as_str()).with_context(|| format!("no truth for {}", r.id)))
        .collect::<anyhow::Result<_>>()?;
    let loaded = started.elapsed();

    let t = Instant::now();
    let prepared = prepare_all(&records);
    let prepare_time = t.elapsed();
    let t = Instant::now();
    let scan = rescan_prepared(prepared.clone(), &config);
    let scan_time = t.elapsed();
    let report = evaluate(&scan, &entities);

    println!("fixture: {}", options.fixture.display());
    println!("records: {}", report.records);
    println!("true pairs: {}", report.true_pairs);
    println!("compared pairs: {} of {}", report.compared_pairs, report.total_pairs);
    println!("reduction ratio: {:.6}", report.reduction_ratio);
    println!("compared share: {:.5}%", 100.0 * (1.0 - report.reduction_ratio));
    println!("pair completeness: {:.4}", report.pair_completeness);
    println!("predicted duplicates: {} ({} true)", report.predicted, report.true_positives);
    println!("precision: {:.4}", report.precision);
    println!("recall: {:.4}", report.recall);
    println!("f1: {:.4}", report.f1);
    println!(
        "time: load {:.2}s, prepare {:.2}s, re-scan (prepare + index + compare) {:.2}s",
        loaded.as_secs_f64(),
        prepare_time.as_secs_f64(),
        prepare_time.as_secs_f64() + scan_time.as_secs_f64()
    );

    if options.sweep {
        for tenth in (80..=220).step_by(10) {
            let threshold = f64::from(tenth) / 10.0;
            let mut swept = scan.clone();
            for p in &mut swept.compared {
                p.decision = if p.weight >= threshold { Decision::Duplicate } else { Decision::Distinct };
            }
            let r = evaluate(&swept, &entities);
            println!(
                "match weight {threshold:>4.1}: precision {:.4} recall {:.4} f1 {:.4}",
                r.precision, r.recall, r.f1
            );
        }
    }

    if options.show > 0 {
        let show = |label: &str, pairs: &[(u32, u32)]| {
            for (a, b) in pairs.iter().take(options.show) {
                let (ra, rb) = (&records[*a as usize], &records[*b as usize]);
                let result = compare(&prepared[*a as usize], &prepared[*b as usize], &config);
                let variants = |r: &Record| truth.get(&r.id).map(|(_, v)| v.clone()).unwrap_or_default();
                println!("\n{label} {:.1}: {} [{}] / {} [{}]", result.weight, ra.id, variants(ra), rb.id, variants(rb));
                println!("  a: {}", serde_json::to_string(ra).unwrap_or_default());
                println!("  b: {}", serde_json::to_string(rb).unwrap_or_default());
                println!("  {}", result.explanation);
            }
        };
        show("missed", &report.false_negatives);
        show("false match", &report.false_positives);
    }

    let mut failed = Vec::new();
    let mut check = |name: &str, value: f64, min: Option<f64>| {
        if let Some(min) = min {
            if value < min {
                failed.push(format!("{name} {value:.4} < {min}"));
            }
        }
    };
    check("f1", report.f1, options.min_f1);
    check("precision", report.precision, options.min_precision);
    check("pair completeness", report.pair_completeness, options.min_pair_completeness);
    if !failed.is_empty() {
        bail!("below target: {}", failed.join(", "));
    }
    Ok(())
}
