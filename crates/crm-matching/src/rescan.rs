//! Full re-scan of a customer base: every record against the ones before it.

use std::num::NonZeroUsize;

use crate::compare::{compare, Decision};
use crate::config::MatchConfig;
use crate::index::Index;
use crate::prepare::{PhoneCache, Prepared};
use crate::record::Record;

/// One compared pair, by position in the scanned slice (`a < b`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ComparedPair {
    pub a: u32,
    pub b: u32,
    pub weight: f64,
    pub decision: Decision,
}

/// Every pair the blocking let through, with its weight and decision.
#[derive(Debug, Clone, Default)]
pub struct Rescan {
    pub records: usize,
    pub compared: Vec<ComparedPair>,
}

impl Rescan {
    pub fn duplicates(&self) -> impl Iterator<Item = &ComparedPair> {
        self.compared.iter().filter(|p| p.decision == Decision::Duplicate)
    }
}

fn threads() -> usize {
    std::thread::available_parallelism().map_or(1, NonZeroUsize::get)
}

/// Prepares records on two threads: one normalises every phone number, the other every
/// other field. `phonenumber` matches each regex under one global lock (regex-cache), so
/// phone parsing does not scale with threads and is best kept on one.
pub fn prepare_all(records: &[Record]) -> Vec<Prepared> {
    if threads() < 2 {
        return records.iter().map(Prepared::new).collect();
    }
    std::thread::scope(|s| {
        let phones = s.spawn(|| {
            let mut cache = PhoneCache::default();
            records.iter().map(|r| cache.phones(r)).collect::<Vec<_>>()
        });
        let mut out: Vec<Prepared> = records.iter().map(|r| Prepared::with_phones(r, Vec::new())).collect();
        let phones = phones.join().expect("phone thread panicked");
        for (p, ph) in out.iter_mut().zip(phones) {
            p.phones = ph;
        }
        out
    })
}

/// Re-scans `records`: indexes them all, then compares each with its candidates among the
/// records before it, on all cores. Record ids must be unique.
pub fn rescan(records: &[Record], config: &MatchConfig) -> Rescan {
    rescan_prepared(prepare_all(records), config)
}

pub fn rescan_prepared(prepared: Vec<Prepared>, config: &MatchConfig) -> Rescan {
    let records = prepared.len();
    let mut index = Index::new(config.blocking.clone());
    for p in prepared {
        index.insert(p);
    }
    Rescan { records, compared: scan_slots(&index, config) }
}

/// Every candidate pair of an index, compared with `config`, as slots (`a < b`).
pub(crate) fn scan_slots(index: &Index, config: &MatchConfig) -> Vec<ComparedPair> {
    let n = index.slots();
    let workers = threads() as u32;
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..workers)
            .map(|w| {
                s.spawn(move || {
                    let mut out = Vec::new();
                    // Interleaved, so early (cheap) and late (expensive) records spread evenly.
                    for b in (w..n).step_by(workers as usize) {
                        let Some(pb) = index.occupied(b) else { continue };
                        for (a, _, _) in index.candidate_slots_of(b, |slot| slot < b) {
                            let result = compare(index.prepared_at(a), pb, config);
                            out.push(ComparedPair { a, b, weight: result.weight, decision: result.decision });
                        }
                    }
                    out
                })
            })
            .collect();
        let mut all: Vec<ComparedPair> =
            handles.into_iter().flat_map(|h| h.join().expect("scan thread panicked")).collect();
        all.sort_by_key(|p| (p.a, p.b));
        all
    })
}
