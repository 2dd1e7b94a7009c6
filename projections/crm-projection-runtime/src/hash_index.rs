//! The write-back cache's index: which entry of the cache's vector holds a key.
//!
//! Open addressing with linear probing over 8-byte cells, each holding 32 bits of the key's
//! hash and the entry's place, so the first probe of a lookup reads both from one cache line
//! and most lookups touch one line of the table. hashbrown's tables (which this replaces)
//! keep their control bytes apart from their cells: in `perf annotate` of a customers
//! rebuild, a cold lookup waited three times, on the control bytes (26% of the lookup's
//! samples), on the cell (30%) and on the entry's key (40%); here it waits on the cell and
//! the key. The table is at most 5/8 full, and a removal shifts the cells after it back
//! (no tombstones), so a probe ends at the first empty cell.

/// Most cells in 8 that may be used before the table doubles.
const MAX_LOAD_EIGHTHS: usize = 5;

/// Cells of the first allocation.
const MIN_CELLS: usize = 16;

/// `hash` spread over 64 bits: a bijection whose top bits pick a hash's home cell.
fn spread(hash: u32) -> u64 {
    u64::from(hash).wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

/// A used cell: the hash in the high half, the entry's place plus one in the low half (0 is
/// an empty cell).
fn pack(hash: u32, place: u32) -> u64 {
    (u64::from(hash) << 32) | u64::from(place.checked_add(1).expect("a cache holds fewer than 2^32 - 1 entries"))
}

fn unpack(cell: u64) -> (u32, u32) {
    ((cell >> 32) as u32, (cell as u32) - 1)
}

#[derive(Debug, Default)]
pub(crate) struct HashIndex {
    /// A power of two of cells, or none before the first insert.
    cells: Vec<u64>,
    len: usize,
}

/// Where a lookup ended: the cell holding the key, or the empty cell its insert would take.
pub(crate) enum Probe<'t> {
    Occupied(Occupied<'t>),
    Vacant(Vacant<'t>),
}

pub(crate) struct Occupied<'t> {
    index: &'t mut HashIndex,
    cell: usize,
}

pub(crate) struct Vacant<'t> {
    index: &'t mut HashIndex,
    hash: u32,
    /// The empty cell the probe ended at (`None` in a table with no cells).
    cell: Option<usize>,
}

impl Occupied<'_> {
    /// The entry's place in the cache's vector.
    pub(crate) fn place(&self) -> u32 {
        unpack(self.index.cells[self.cell]).1
    }

    /// Removes the key; returns its entry's place.
    pub(crate) fn remove(self) -> u32 {
        self.index.remove_at(self.cell)
    }
}

impl Vacant<'_> {
    /// Records the key's entry at `place`.
    pub(crate) fn insert(self, place: u32) {
        let Vacant { index, hash, cell } = self;
        let cell = match cell {
            Some(cell) if (index.len + 1) * 8 <= index.cells.len() * MAX_LOAD_EIGHTHS => cell,
            _ => {
                index.grow();
                index.empty_cell(hash)
            }
        };
        index.cells[cell] = pack(hash, place);
        index.len += 1;
    }
}

impl HashIndex {
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    fn mask(&self) -> usize {
        self.cells.len() - 1
    }

    /// The cell a probe for `hash` starts at (the table has cells).
    fn home(&self, hash: u32) -> usize {
        (spread(hash) >> (64 - self.cells.len().trailing_zeros())) as usize
    }

    /// The cell of the key whose hash is `hash` and for whose place `is_key` holds, or else
    /// the empty cell where it would go (`None` in a table with no cells).
    fn locate(&self, hash: u32, mut is_key: impl FnMut(u32) -> bool) -> Result<usize, Option<usize>> {
        if self.cells.is_empty() {
            return Err(None);
        }
        let mask = self.mask();
        let mut cell = self.home(hash);
        loop {
            let found = self.cells[cell];
            if found == 0 {
                return Err(Some(cell));
            }
            let (h, place) = unpack(found);
            if h == hash && is_key(place) {
                return Ok(cell);
            }
            cell = (cell + 1) & mask;
        }
    }

    /// The key whose hash is `hash` and for whose place `is_key` holds, to read or remove, or
    /// where to insert it.
    pub(crate) fn probe(&mut self, hash: u32, is_key: impl FnMut(u32) -> bool) -> Probe<'_> {
        match self.locate(hash, is_key) {
            Ok(cell) => Probe::Occupied(Occupied { index: self, cell }),
            Err(cell) => Probe::Vacant(Vacant { index: self, hash, cell }),
        }
    }

    /// The place of the key whose hash is `hash` and for whose place `is_key` holds.
    pub(crate) fn find(&self, hash: u32, is_key: impl FnMut(u32) -> bool) -> Option<u32> {
        self.locate(hash, is_key).ok().map(|cell| unpack(self.cells[cell]).1)
    }

    /// Asks the CPU to load the cell where a probe for `hash` starts ([`crate::warm`]).
    pub(crate) fn warm(&self, hash: u32) {
        if !self.cells.is_empty() {
            crate::warm(&self.cells[self.home(hash)]);
        }
    }

    /// The place of the first key whose hash is `hash` (for a hint: usually the key's, as
    /// two keys of a table share 32 bits of hash rarely).
    pub(crate) fn first_place(&self, hash: u32) -> Option<u32> {
        self.find(hash, |_| true)
    }

    /// The first empty cell from `hash`'s home (the table has one).
    fn empty_cell(&self, hash: u32) -> usize {
        let mask = self.mask();
        let mut cell = self.home(hash);
        while self.cells[cell] != 0 {
            cell = (cell + 1) & mask;
        }
        cell
    }

    /// Twice the cells (or the first ones), every used cell put again from its kept hash.
    fn grow(&mut self) {
        let cells = (self.cells.len() * 2).max(MIN_CELLS);
        let old = std::mem::replace(&mut self.cells, vec![0; cells]);
        for cell in old.into_iter().filter(|&cell| cell != 0) {
            let to = self.empty_cell(unpack(cell).0);
            self.cells[to] = cell;
        }
    }

    /// Empties `hole` and moves back each later cell of its run whose home is not after the
    /// hole, so every key stays reachable from its home without a gap.
    fn remove_at(&mut self, mut hole: usize) -> u32 {
        let place = unpack(self.cells[hole]).1;
        let mask = self.mask();
        let mut next = (hole + 1) & mask;
        loop {
            let cell = self.cells[next];
            if cell == 0 {
                break;
            }
            let home = self.home(unpack(cell).0);
            // The hole lies on the way from this cell's home to the cell: it may move there.
            if next.wrapping_sub(hole) & mask <= next.wrapping_sub(home) & mask {
                self.cells[hole] = cell;
                hole = next;
            }
            next = (next + 1) & mask;
        }
        self.cells[hole] = 0;
        self.len -= 1;
        place
    }

    /// `(hash, place)` of every key, in no particular order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (u32, u32)> + '_ {
        self.cells.iter().filter(|&&cell| cell != 0).map(|&cell| unpack(cell))
    }

    /// Forgets every key, keeping the cells.
    pub(crate) fn clear(&mut self) {
        self.cells.fill(0);
        self.len = 0;
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use proptest::prelude::*;

    use super::*;

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u16),
        Remove(u16),
        Clear,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => any::<u16>().prop_map(|k| Op::Insert(k % 512)),
            3 => any::<u16>().prop_map(|k| Op::Remove(k % 512)),
            1 => Just(Op::Clear),
        ]
    }

    proptest! {
        /// Inserts, removals (which shift runs back) and clears agree with a map, for hashes
        /// from a handful of values (long runs, wrapping past the last cell) to all of them.
        #[test]
        fn agrees_with_a_map(ops in proptest::collection::vec(op(), 0..600), hash_bits in 1u32..32) {
            let hash_of = |key: u16| (u32::from(key).wrapping_mul(0x2545_f491)) >> (32 - hash_bits);
            let mut index = HashIndex::default();
            // Key of each place, and the model: key -> place.
            let mut keys: Vec<u16> = Vec::new();
            let mut model: HashMap<u16, u32> = HashMap::new();
            for op in ops {
                match op {
                    Op::Insert(key) => match index.probe(hash_of(key), |place| keys[place as usize] == key) {
                        Probe::Occupied(found) => prop_assert_eq!(Some(found.place()), model.get(&key).copied()),
                        Probe::Vacant(vacant) => {
                            prop_assert!(!model.contains_key(&key));
                            let place = keys.len() as u32;
                            keys.push(key);
                            vacant.insert(place);
                            model.insert(key, place);
                        }
                    },
                    Op::Remove(key) => match index.probe(hash_of(key), |place| keys[place as usize] == key) {
                        Probe::Occupied(found) => prop_assert_eq!(Some(found.remove()), model.remove(&key)),
                        Probe::Vacant(_) => prop_assert!(!model.contains_key(&key)),
                    },
                    Op::Clear => {
                        index.clear();
                        model.clear();
                    }
                }
                prop_assert_eq!(index.len(), model.len());
                prop_assert!(index.len() * 8 <= index.cells.len() * MAX_LOAD_EIGHTHS);
            }
            for key in 0..512u16 {
                prop_assert_eq!(index.find(hash_of(key), |place| keys[place as usize] == key), model.get(&key).copied());
            }
            let mut listed: Vec<(u32, u32)> = index.iter().collect();
            listed.sort_unstable();
            let mut expected: Vec<(u32, u32)> = model.iter().map(|(&key, &place)| (hash_of(key), place)).collect();
            expected.sort_unstable();
            prop_assert_eq!(listed, expected);
        }
    }
}
