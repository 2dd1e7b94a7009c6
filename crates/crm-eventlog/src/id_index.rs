//! The event id index: which position holds an event id (idempotent appends).
//!
//! Event ids are UUID v7, so the ids of one group commit share their first six bytes (the
//! millisecond) with each other and with the groups around them. The index keeps up to
//! [`BUCKET_CAP`] ids per millisecond in one sled value, so a group of 30 events adds one or
//! two keys to its sled batch instead of 30; each sled insert copies a leaf page, so the count
//! of inserts is the writer's main cost. Ids beyond a full bucket (or of the rare client that
//! sends other UUID versions with the same six first bytes) get one key each, as every id did
//! before buckets, and a lookup that misses the bucket asks for that key too, so stores written
//! before buckets keep deduplicating.
//!
//! ```text
//! j <id bytes 0..6>  -> sorted entries of <id bytes 6..16> <position: u64 BE>, 18 bytes each
//! i <id: 16 bytes>   -> <position: u64 BE>
//! ```
//!
//! Only the writer thread reads and writes the index. It caches the buckets it touched
//! recently; the cache is what sled holds, because the writer is the only writer and a failed
//! group stops the writer (its successor starts with an empty cache).

use std::collections::HashMap;

use uuid::Uuid;

use crate::keys;
use crate::{Error, Result};

/// Most ids one bucket holds.
pub(crate) const BUCKET_CAP: usize = 256;
const ENTRY: usize = 18;
/// Buckets kept in the cache after a group (the current milliseconds).
const CACHE_KEEP: usize = 64;

type Prefix = [u8; 6];

fn split(id: &Uuid) -> (Prefix, [u8; 10]) {
    let b = id.as_bytes();
    (b[..6].try_into().expect("6 bytes"), b[6..].try_into().expect("10 bytes"))
}

fn bucket_key(prefix: &Prefix) -> [u8; 7] {
    let mut k = [0u8; 7];
    k[0] = keys::ID_BUCKET;
    k[1..].copy_from_slice(prefix);
    k
}

/// A bucket's entries, sorted by id suffix.
#[derive(Default)]
struct Bucket(Vec<[u8; ENTRY]>);

impl Bucket {
    fn parse(bytes: &[u8]) -> Result<Bucket> {
        if !bytes.len().is_multiple_of(ENTRY) {
            return Err(Error::Storage("malformed id bucket".into()));
        }
        Ok(Bucket(bytes.chunks_exact(ENTRY).map(|c| c.try_into().expect("18 bytes")).collect()))
    }

    fn find(&self, suffix: &[u8; 10]) -> Option<u64> {
        let i = self.0.binary_search_by(|e| e[..10].cmp(suffix)).ok()?;
        Some(u64::from_be_bytes(self.0[i][10..].try_into().expect("8 bytes")))
    }

    /// Adds an entry unless the bucket is full; `false` when it is.
    fn add(&mut self, suffix: &[u8; 10], position: u64) -> bool {
        if self.0.len() >= BUCKET_CAP {
            return false;
        }
        let mut entry = [0u8; ENTRY];
        entry[..10].copy_from_slice(suffix);
        entry[10..].copy_from_slice(&position.to_be_bytes());
        let at = self.0.binary_search_by(|e| e[..10].cmp(suffix)).unwrap_or_else(|i| i);
        self.0.insert(at, entry);
        true
    }

    fn encode(&self) -> Vec<u8> {
        self.0.concat()
    }
}

/// The writer's view of the index.
pub(crate) struct IdIndex {
    cache: HashMap<Prefix, Bucket>,
    /// Whether sled holds any single `i` key; while it holds none, a lookup that misses the
    /// bucket does not ask for one (that sled `get` was a tenth of the writer's time).
    single_keys: bool,
}

impl IdIndex {
    /// The index of the store in `tree`.
    pub(crate) fn open(tree: &sled::Db) -> Result<IdIndex> {
        let single_keys = tree.scan_prefix([keys::ID]).next().transpose()?.is_some();
        Ok(IdIndex { cache: HashMap::new(), single_keys })
    }

    fn bucket(&mut self, tree: &sled::Db, prefix: Prefix) -> Result<&mut Bucket> {
        Ok(match self.cache.entry(prefix) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => e.insert(match tree.get(bucket_key(&prefix))? {
                Some(v) => Bucket::parse(&v)?,
                None => Bucket::default(),
            }),
        })
    }

    /// The position stored for `id`, if any.
    pub(crate) fn lookup(&mut self, tree: &sled::Db, id: &Uuid) -> Result<Option<u64>> {
        let (prefix, suffix) = split(id);
        if let Some(position) = self.bucket(tree, prefix)?.find(&suffix) {
            return Ok(Some(position));
        }
        if !self.single_keys {
            return Ok(None);
        }
        let Some(v) = tree.get(keys::id_key(id))? else {
            return Ok(None);
        };
        let position =
            u64::from_be_bytes(v.as_ref().try_into().map_err(|_| Error::Storage("malformed id index entry".into()))?);
        Ok(Some(position))
    }

    /// The sled writes that record `ids` (new ids with their positions), appended to
    /// `writes`: one per bucket touched, plus one per id that finds its bucket full.
    pub(crate) fn record(
        &mut self,
        tree: &sled::Db,
        ids: &[(Uuid, u64)],
        writes: &mut Vec<(Vec<u8>, Vec<u8>)>,
    ) -> Result<()> {
        let mut touched: Vec<Prefix> = Vec::new();
        for (id, position) in ids {
            let (prefix, suffix) = split(id);
            if self.bucket(tree, prefix)?.add(&suffix, *position) {
                if !touched.contains(&prefix) {
                    touched.push(prefix);
                }
            } else {
                writes.push((keys::id_key(id).to_vec(), position.to_be_bytes().to_vec()));
                self.single_keys = true;
            }
        }
        for prefix in &touched {
            writes.push((bucket_key(prefix).to_vec(), self.cache[prefix].encode()));
        }
        if self.cache.len() > CACHE_KEEP {
            self.cache.retain(|p, _| touched.contains(p));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_found_in_buckets_and_beyond_a_full_bucket_in_single_keys() {
        let dir = tempfile::tempdir().unwrap();
        let tree = sled::open(dir.path()).unwrap();
        let mut index = IdIndex::open(&tree).unwrap();
        assert!(!index.single_keys);
        // 300 ids of one millisecond (more than a bucket holds), out of order, and one id
        // of another millisecond.
        let ms = [1u8, 2, 3, 4, 5, 6];
        let id = |n: u16| {
            let mut b = [0u8; 16];
            b[..6].copy_from_slice(&ms);
            b[14..].copy_from_slice(&n.to_be_bytes());
            Uuid::from_bytes(b)
        };
        let mut ids: Vec<(Uuid, u64)> = (0..300u16).rev().map(|n| (id(n), 1000 + u64::from(n))).collect();
        ids.push((Uuid::from_u128(7), 5));
        let mut writes = Vec::new();
        index.record(&tree, &ids, &mut writes).unwrap();
        assert_eq!(writes.len(), 2 + (300 - BUCKET_CAP), "two buckets and one key per overflowing id");
        for (k, v) in writes {
            tree.insert(k, v).unwrap();
        }
        // A fresh index (a restarted writer) reads what sled holds.
        assert!(index.single_keys);
        for mut index in [index, IdIndex::open(&tree).unwrap()] {
            for (id, position) in &ids {
                assert_eq!(index.lookup(&tree, id).unwrap(), Some(*position), "{id}");
            }
            assert_eq!(index.lookup(&tree, &id(300)).unwrap(), None);
            assert_eq!(index.lookup(&tree, &Uuid::from_u128(8)).unwrap(), None);
        }
        // An id stored as a single key before buckets existed is still found.
        let old = Uuid::from_u128(u128::MAX - 1);
        tree.insert(keys::id_key(&old), 42u64.to_be_bytes().to_vec()).unwrap();
        assert_eq!(IdIndex::open(&tree).unwrap().lookup(&tree, &old).unwrap(), Some(42));
        // A store written before buckets (single keys only) is read through them.
        let dir = tempfile::tempdir().unwrap();
        let tree = sled::open(dir.path()).unwrap();
        tree.insert(keys::id_key(&old), 43u64.to_be_bytes().to_vec()).unwrap();
        assert_eq!(IdIndex::open(&tree).unwrap().lookup(&tree, &old).unwrap(), Some(43));
    }
}
