//! In-memory candidate index: blocks of record slots by blocking-key hash.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use crate::config::BlockingConfig;
use crate::keys::{blocking_keys, KeyKind};
use crate::prepare::Prepared;

/// Hasher for keys that are already hashes or small integers: one multiply-fold.
#[derive(Default, Clone, Copy)]
pub(crate) struct MixHasher(u64);

impl Hasher for MixHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            self.write_u64(u64::from_le_bytes(chunk.try_into().unwrap_or([0; 8])));
        }
        let mut last = [0u8; 8];
        let rest = chunks.remainder();
        last[..rest.len()].copy_from_slice(rest);
        self.write_u64(u64::from_le_bytes(last) ^ ((rest.len() as u64) << 59));
    }
    fn write_u64(&mut self, x: u64) {
        let m = u128::from(self.0 ^ x) * 0x9E37_79B9_7F4A_7C15;
        self.0 = (m as u64) ^ ((m >> 64) as u64);
    }
    fn write_u32(&mut self, x: u32) {
        self.write_u64(u64::from(x));
    }
}

pub(crate) type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<MixHasher>>;

enum Block {
    Open(Vec<u32>),
    /// Grew past `max_block`: no longer used for lookup, only counted.
    Oversized(usize),
}

struct Entry {
    prepared: Prepared,
    keys: Vec<(KeyKind, u64)>,
}

/// How much a shared key counts, by the size of its block: fully up to the size of a
/// large cluster of duplicates, then falling with the square root of the size.
fn discount(len: usize) -> f32 {
    const CLUSTER: f32 = 8.0;
    let len = len as f32;
    if len <= CLUSTER {
        1.0
    } else {
        (CLUSTER / len).sqrt()
    }
}

/// A candidate returned by [`Index::candidates`].
#[derive(Debug, Clone, Copy)]
pub struct Candidate<'a> {
    pub prepared: &'a Prepared,
    /// Sum of the shared keys' weights, each discounted by its block's size.
    pub support: f32,
    /// Shares an exact key (USCC, identity number, mobile, e-mail).
    pub exact: bool,
}

/// In-memory index of prepared records for candidate lookup. Blocks larger than
/// [`BlockingConfig::max_block`] are dropped, so a common surname or word costs nothing.
pub struct Index {
    config: BlockingConfig,
    entries: Vec<Option<Entry>>,
    free: Vec<u32>,
    by_id: FastMap<String, u32>,
    blocks: FastMap<u64, Block>,
}

impl Default for Index {
    fn default() -> Self {
        Index::new(BlockingConfig::default())
    }
}

impl Index {
    pub fn new(config: BlockingConfig) -> Index {
        Index { config, entries: Vec::new(), free: Vec::new(), by_id: FastMap::default(), blocks: FastMap::default() }
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    pub fn get(&self, id: &str) -> Option<&Prepared> {
        self.by_id.get(id).map(|slot| &self.entry(*slot).prepared)
    }

    fn entry(&self, slot: u32) -> &Entry {
        self.entries[slot as usize].as_ref().expect("slot in by_id is occupied")
    }

    pub(crate) fn slot(&self, id: &str) -> Option<u32> {
        self.by_id.get(id).copied()
    }

    /// Number of slots, occupied or free.
    pub(crate) fn slots(&self) -> u32 {
        u32::try_from(self.entries.len()).expect("fewer than 2^32 records")
    }

    pub(crate) fn occupied(&self, slot: u32) -> Option<&Prepared> {
        self.entries.get(slot as usize)?.as_ref().map(|e| &e.prepared)
    }

    pub(crate) fn prepared_at(&self, slot: u32) -> &Prepared {
        &self.entry(slot).prepared
    }

    /// Adds a record, replacing (and returning) one with the same id.
    pub fn insert(&mut self, prepared: Prepared) -> Option<Prepared> {
        let old = self.remove(&prepared.id);
        self.insert_absent(prepared);
        old
    }

    /// [`Index::insert`], returning the record's slot (the record it replaced is dropped).
    pub(crate) fn insert_slot(&mut self, prepared: Prepared) -> u32 {
        self.remove(&prepared.id);
        self.insert_absent(prepared)
    }

    /// Adds a record whose id the index does not hold; returns its slot.
    fn insert_absent(&mut self, prepared: Prepared) -> u32 {
        let keys: Vec<(KeyKind, u64)> = blocking_keys(&prepared).iter().map(|k| (k.kind, k.hash())).collect();
        let slot = match self.free.pop() {
            Some(slot) => slot,
            None => {
                self.entries.push(None);
                u32::try_from(self.entries.len() - 1).expect("fewer than 2^32 records")
            }
        };
        let max_block = self.config.max_block;
        for (_, hash) in &keys {
            let block = self.blocks.entry(*hash).or_insert_with(|| Block::Open(Vec::new()));
            match block {
                Block::Open(slots) if slots.len() >= max_block => *block = Block::Oversized(slots.len() + 1),
                Block::Open(slots) => slots.push(slot),
                Block::Oversized(n) => *n += 1,
            }
        }
        self.by_id.insert(prepared.id.clone(), slot);
        self.entries[slot as usize] = Some(Entry { prepared, keys });
        slot
    }

    /// Removes a record by id.
    pub fn remove(&mut self, id: &str) -> Option<Prepared> {
        let slot = self.by_id.remove(id)?;
        let entry = self.entries[slot as usize].take().expect("slot in by_id is occupied");
        for (_, hash) in &entry.keys {
            if let Some(block) = self.blocks.get_mut(hash) {
                let empty = match block {
                    Block::Open(slots) => {
                        if let Some(at) = slots.iter().position(|s| *s == slot) {
                            slots.swap_remove(at);
                        }
                        slots.is_empty()
                    }
                    Block::Oversized(n) => {
                        *n -= 1;
                        *n == 0
                    }
                };
                if empty {
                    self.blocks.remove(hash);
                }
            }
        }
        self.free.push(slot);
        Some(entry.prepared)
    }

    /// Candidates for `record` (which need not be in the index; if it is, it is not its own
    /// candidate), best supported first: every record sharing an exact key, then others
    /// whose support reaches `min_support`, at most `max_candidates` in all.
    pub fn candidates(&self, record: &Prepared) -> Vec<Candidate<'_>> {
        let own = self.slot(&record.id);
        self.candidate_slots(record, |slot| Some(slot) != own)
            .into_iter()
            .map(|(slot, support, exact)| Candidate { prepared: self.prepared_at(slot), support, exact })
            .collect()
    }

    /// Records sharing an exact key with `record` (same USCC, identity number, mobile or
    /// e-mail), whatever the candidate limits: the collisions `CaptureLead` refuses.
    pub fn exact_matches(&self, record: &Prepared) -> Vec<(&Prepared, KeyKind)> {
        let mut out: Vec<(&Prepared, KeyKind)> = Vec::new();
        for key in blocking_keys(record).iter().filter(|k| k.kind.is_exact()) {
            if let Some(Block::Open(slots)) = self.blocks.get(&key.hash()) {
                for slot in slots {
                    let p = self.prepared_at(*slot);
                    if p.id != record.id && !out.iter().any(|(q, _)| q.id == p.id) {
                        out.push((p, key.kind));
                    }
                }
            }
        }
        out
    }

    /// Records sharing a key of one of `kinds` with `record`: one entry per record and kind
    /// (a record sharing both a USCC and a mobile is listed twice).
    pub fn matches_by_kind(&self, record: &Prepared, kinds: &[KeyKind]) -> Vec<(&Prepared, KeyKind)> {
        let mut out: Vec<(&Prepared, KeyKind)> = Vec::new();
        for key in blocking_keys(record).iter().filter(|k| kinds.contains(&k.kind)) {
            if let Some(Block::Open(slots)) = self.blocks.get(&key.hash()) {
                for slot in slots {
                    let p = self.prepared_at(*slot);
                    if p.id != record.id && !out.iter().any(|(q, kind)| q.id == p.id && *kind == key.kind) {
                        out.push((p, key.kind));
                    }
                }
            }
        }
        out
    }

    pub(crate) fn candidate_slots(&self, record: &Prepared, keep: impl Fn(u32) -> bool) -> Vec<(u32, f32, bool)> {
        let keys: Vec<(KeyKind, u64)> = blocking_keys(record).iter().map(|k| (k.kind, k.hash())).collect();
        self.candidate_slots_by_keys(&keys, keep)
    }

    /// Candidates for the record in `slot`, with the keys computed when it was inserted.
    pub(crate) fn candidate_slots_of(&self, slot: u32, keep: impl Fn(u32) -> bool) -> Vec<(u32, f32, bool)> {
        self.candidate_slots_by_keys(&self.entry(slot).keys, keep)
    }

    fn candidate_slots_by_keys(&self, keys: &[(KeyKind, u64)], keep: impl Fn(u32) -> bool) -> Vec<(u32, f32, bool)> {
        let mut acc: FastMap<u32, (f32, bool)> = FastMap::default();
        for (kind, hash) in keys {
            let Some(Block::Open(slots)) = self.blocks.get(hash) else { continue };
            let support = kind.weight() * discount(slots.len());
            let exact = kind.is_exact();
            for slot in slots {
                if keep(*slot) {
                    let e = acc.entry(*slot).or_insert((0.0, false));
                    e.0 += support;
                    e.1 |= exact;
                }
            }
        }
        let min = self.config.min_support;
        let mut out: Vec<(u32, f32, bool)> =
            acc.into_iter().filter(|(_, (s, exact))| *exact || *s >= min).map(|(slot, (s, e))| (slot, s, e)).collect();
        out.sort_by(|a, b| b.2.cmp(&a.2).then(b.1.total_cmp(&a.1)).then(a.0.cmp(&b.0)));
        let exact = out.iter().filter(|c| c.2).count();
        out.truncate(exact.max(self.config.max_candidates));
        out
    }
}
