//! The facade a service uses: an index of known customers plus the comparison rule.

use serde::{Deserialize, Serialize};

use crate::compare::{compare, Decision, MatchResult};
use crate::config::MatchConfig;
use crate::index::Index;
use crate::keys::KeyKind;
use crate::prepare::Prepared;
use crate::record::Record;
use crate::rescan::scan_slots;

/// A known customer that matches an incoming record.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Match {
    pub id: String,
    pub result: MatchResult,
}

/// Two known customers that match each other.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PairMatch {
    pub a: String,
    pub b: String,
    pub result: MatchResult,
}

/// A known customer that shares an exact key with an incoming record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Collision {
    pub id: String,
    pub key: KeyKind,
}

/// Known customers and the rule to match new records against them.
pub struct Matcher {
    config: MatchConfig,
    index: Index,
}

impl Default for Matcher {
    fn default() -> Self {
        Matcher::new(MatchConfig::default())
    }
}

impl Matcher {
    pub fn new(config: MatchConfig) -> Matcher {
        let index = Index::new(config.blocking.clone());
        Matcher { config, index }
    }

    pub fn config(&self) -> &MatchConfig {
        &self.config
    }

    pub fn index(&self) -> &Index {
        &self.index
    }

    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Adds or replaces a customer.
    pub fn insert(&mut self, record: &Record) {
        self.index.insert(Prepared::new(record));
    }

    pub fn insert_prepared(&mut self, prepared: Prepared) {
        self.index.insert(prepared);
    }

    /// Adds or replaces a customer and returns the known customers that are duplicates of it
    /// or worth a review, best first: [`Matcher::insert`] then [`Matcher::find`], with the
    /// record prepared and its blocking keys derived once instead of twice (a read model
    /// that indexes every created or edited customer spent an eighth of its fold doing both
    /// again, `perf` of a duplicates rebuild).
    pub fn upsert(&mut self, record: &Record) -> Vec<Match> {
        let slot = self.index.insert_slot(Prepared::new(record));
        let record = self.index.prepared_at(slot);
        let candidates = self.index.candidate_slots_of(slot, |other| other != slot);
        self.matches(record, candidates.into_iter().map(|(other, _, _)| self.index.prepared_at(other)))
    }

    /// Removes a customer (merged away, erased); returns whether it was known.
    pub fn remove(&mut self, id: &str) -> bool {
        self.index.remove(id).is_some()
    }

    /// Known customers that are duplicates of `record` or worth a review, best first.
    pub fn find(&self, record: &Record) -> Vec<Match> {
        self.find_prepared(&Prepared::new(record))
    }

    pub fn find_prepared(&self, record: &Prepared) -> Vec<Match> {
        self.matches(record, self.index.candidates(record).into_iter().map(|c| c.prepared))
    }

    /// The `candidates` that are duplicates of `record` or worth a review, best first.
    fn matches<'a>(&self, record: &Prepared, candidates: impl Iterator<Item = &'a Prepared>) -> Vec<Match> {
        let mut out: Vec<Match> = candidates
            .filter_map(|c| {
                let result = compare(record, c, &self.config);
                (result.decision != Decision::Distinct).then(|| Match { id: c.id.clone(), result })
            })
            .collect();
        out.sort_by(|a, b| b.result.weight.total_cmp(&a.result.weight).then_with(|| a.id.cmp(&b.id)));
        out
    }

    /// Known customers sharing an exact key (USCC, identity number, mobile, e-mail) with
    /// `record`, for the refusal of a second customer with the same master key.
    pub fn exact_collisions(&self, record: &Record) -> Vec<Collision> {
        let prepared = Prepared::new(record);
        self.index.exact_matches(&prepared).into_iter().map(|(p, key)| Collision { id: p.id.clone(), key }).collect()
    }

    /// Re-scores every candidate pair of the known customers with this matcher's rule
    /// (after a threshold change, say) on all cores, without preparing or indexing again.
    /// Returns the pairs that are duplicates or worth a review, best first.
    pub fn duplicate_pairs(&self) -> Vec<PairMatch> {
        let mut out: Vec<PairMatch> = scan_slots(&self.index, &self.config)
            .into_iter()
            .filter(|p| p.decision != Decision::Distinct)
            .map(|p| {
                let (a, b) = (self.index.prepared_at(p.a), self.index.prepared_at(p.b));
                PairMatch { a: a.id.clone(), b: b.id.clone(), result: compare(a, b, &self.config) }
            })
            .collect();
        out.sort_by(|x, y| y.result.weight.total_cmp(&x.result.weight).then_with(|| (&x.a, &x.b).cmp(&(&y.a, &y.b))));
        out
    }

    /// Replaces the rule (thresholds, field models); the index is kept, and so are its
    /// blocking settings (build a new `Matcher` to change those).
    pub fn set_config(&mut self, config: MatchConfig) {
        self.config = config;
    }

    /// Compares two records with this matcher's rule.
    pub fn compare(&self, a: &Record, b: &Record) -> MatchResult {
        compare(&Prepared::new(a), &Prepared::new(b), &self.config)
    }
}
