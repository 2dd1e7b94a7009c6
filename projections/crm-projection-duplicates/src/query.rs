//! Queries over the duplicates tree. Each takes a [`Reader`], so the caller can tell the
//! client which log position the answer reflects.

use crm_projection_runtime::{decode_value, Reader, Result};
use uuid::Uuid;

use crate::projector::{pair_key, record_key, Candidate, CustomerRecord, MergeReport, Value};

/// Which statuses a list shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StatusFilter {
    #[default]
    Any,
    Open,
    Dismissed,
    Merged,
}

impl StatusFilter {
    fn matches(self, pair: &Candidate) -> bool {
        match self {
            StatusFilter::Any => true,
            StatusFilter::Open => pair.status.name() == "open",
            StatusFilter::Dismissed => pair.status.name() == "dismissed",
            StatusFilter::Merged => pair.status.name() == "merged",
        }
    }
}

/// One page of candidates, by weight (highest first), then by pair.
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    pub candidates: Vec<Candidate>,
    /// Matching candidates in all pages.
    pub total: usize,
    /// Offset of the next page, when there is one.
    pub next_offset: Option<usize>,
}

/// Candidates with `status` and at least `min_weight`, sorted by weight descending; `offset`
/// and `limit` page through them. The pairs are read in full: the set is the suspected
/// duplicates, a small share of the customers.
pub fn list(
    reader: &Reader,
    status: StatusFilter,
    min_weight: Option<f64>,
    offset: usize,
    limit: usize,
) -> Result<Page> {
    let mut all = Vec::new();
    for entry in reader.tree.scan_prefix(b"p/") {
        let (key, bytes) = entry?;
        if let Value::Pair(pair) = decode_value::<Value>(&key, &bytes)? {
            if status.matches(&pair) && min_weight.is_none_or(|m| pair.weight >= m) {
                all.push(*pair);
            }
        }
    }
    all.sort_by(|x, y| y.weight.total_cmp(&x.weight).then_with(|| (x.a, x.b).cmp(&(y.a, y.b))));
    let total = all.len();
    let limit = limit.max(1);
    let candidates: Vec<Candidate> = all.into_iter().skip(offset).take(limit).collect();
    let next_offset = (offset + candidates.len() < total).then_some(offset + candidates.len());
    Ok(Page { candidates, total, next_offset })
}

/// The customers of every open candidate pair, in key order: for counts such as data
/// health's duplicate rate, which need neither the explanations sorted nor a page.
pub fn open_pairs(reader: &Reader) -> Result<Vec<(Uuid, Uuid)>> {
    let mut out = Vec::new();
    for entry in reader.tree.scan_prefix(b"p/") {
        let (key, bytes) = entry?;
        if let Value::Pair(pair) = decode_value::<Value>(&key, &bytes)? {
            if StatusFilter::Open.matches(&pair) {
                out.push((pair.a, pair.b));
            }
        }
    }
    Ok(out)
}

/// The pair of `x` and `y`, in either order.
pub fn pair(reader: &Reader, x: &Uuid, y: &Uuid) -> Result<Option<Candidate>> {
    match reader.get::<Value>(&pair_key(x, y))? {
        Some(Value::Pair(p)) => Ok(Some(*p)),
        _ => Ok(None),
    }
}

/// The customer as the matcher knows it.
pub fn customer(reader: &Reader, id: &Uuid) -> Result<Option<CustomerRecord>> {
    match reader.get::<Value>(&record_key(id))? {
        Some(Value::Customer(c)) => Ok(Some(c)),
        _ => Ok(None),
    }
}

/// Merge reports in log order, all of them or those where `customer` was survivor or
/// absorbed.
pub fn merge_reports(reader: &Reader, customer: Option<&Uuid>) -> Result<Vec<MergeReport>> {
    let mut out = Vec::new();
    for entry in reader.tree.scan_prefix(b"m/") {
        let (key, bytes) = entry?;
        if let Value::Merge(report) = decode_value::<Value>(&key, &bytes)? {
            if customer.is_none_or(|c| report.survivor == *c || report.absorbed == *c) {
                out.push(*report);
            }
        }
    }
    Ok(out)
}
