//! Pairwise quality of a re-scan against ground truth.

use std::collections::{HashMap, HashSet};

use serde::Serialize;

use crate::compare::Decision;
use crate::rescan::Rescan;

/// Pairwise precision, recall and F1 of the duplicate decision, and how well blocking did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EvalReport {
    pub records: usize,
    /// All pairs: n(n-1)/2.
    pub total_pairs: u64,
    /// Pairs of records of the same entity.
    pub true_pairs: u64,
    /// Pairs the blocking let through to comparison.
    pub compared_pairs: u64,
    /// True pairs among the compared ones.
    pub true_pairs_compared: u64,
    /// Pairs decided duplicate.
    pub predicted: u64,
    pub true_positives: u64,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    /// 1 - compared / total.
    pub reduction_ratio: f64,
    /// Share of true pairs that were compared.
    pub pair_completeness: f64,
    /// Up to 50 true pairs not decided duplicate, and 50 decided pairs that are not true.
    pub false_negatives: Vec<(u32, u32)>,
    pub false_positives: Vec<(u32, u32)>,
}

fn ratio(num: u64, den: u64) -> f64 {
    if den == 0 {
        1.0
    } else {
        num as f64 / den as f64
    }
}

/// Scores `scan` against `entities` (the entity of each scanned record, by position).
pub fn evaluate(scan: &Rescan, entities: &[&str]) -> EvalReport {
    assert_eq!(scan.records, entities.len(), "one entity per scanned record");
    let n = entities.len() as u64;
    let mut groups: HashMap<&str, Vec<u32>> = HashMap::new();
    for (i, e) in entities.iter().enumerate() {
        groups.entry(e).or_default().push(i as u32);
    }
    let true_pairs: u64 = groups.values().map(|g| (g.len() as u64) * (g.len() as u64).saturating_sub(1) / 2).sum();
    let same = |a: u32, b: u32| entities[a as usize] == entities[b as usize];
    let mut true_pairs_compared = 0;
    let mut predicted = 0;
    let mut true_positives = 0;
    let mut found = HashSet::new();
    let mut false_positives = Vec::new();
    for p in &scan.compared {
        let t = same(p.a, p.b);
        true_pairs_compared += u64::from(t);
        if p.decision == Decision::Duplicate {
            predicted += 1;
            if t {
                true_positives += 1;
                found.insert((p.a, p.b));
            } else if false_positives.len() < 50 {
                false_positives.push((p.a, p.b));
            }
        }
    }
    let mut false_negatives = Vec::new();
    let mut sorted: Vec<&Vec<u32>> = groups.values().filter(|g| g.len() > 1).collect();
    sorted.sort();
    'outer: for g in sorted {
        for (i, a) in g.iter().enumerate() {
            for b in &g[i + 1..] {
                if !found.contains(&(*a, *b)) {
                    false_negatives.push((*a, *b));
                    if false_negatives.len() == 50 {
                        break 'outer;
                    }
                }
            }
        }
    }
    let precision = ratio(true_positives, predicted);
    let recall = ratio(true_positives, true_pairs);
    let f1 = if precision + recall == 0.0 { 0.0 } else { 2.0 * precision * recall / (precision + recall) };
    let total_pairs = n * n.saturating_sub(1) / 2;
    EvalReport {
        records: entities.len(),
        total_pairs,
        true_pairs,
        compared_pairs: scan.compared.len() as u64,
        true_pairs_compared,
        predicted,
        true_positives,
        precision,
        recall,
        f1,
        reduction_ratio: 1.0 - ratio(scan.compared.len() as u64, total_pairs),
        pair_completeness: ratio(true_pairs_compared, true_pairs),
        false_negatives,
        false_positives,
    }
}
