//! A filter of the ids a rebuild has created: "certainly not" or "maybe".
//!
//! A rebuild starts on an empty store, so a record id its projection never created is in
//! no overlay and not in the store: the creation of a new record (70% of events) needs
//! no read to learn that. Without the filter each creation cost a RocksDB read answered
//! by a bloom filter per memtable and level-0 file, a sixth of the projection's CPU.
//!
//! Blocked Bloom filters: an id sets 6 bits of one 512-bit block (one cache line), at
//! 10 bits per id (~1% false positives, each of which only costs the read it would have
//! cost anyway). The filter grows with the ids, each new filter twice the size of the one
//! before, so its memory follows the records created (~1.3 bytes each), up to
//! [`BYTES_MAX`]; past that [`IdFilter::insert`] refuses and the filter must be dropped.

use std::hash::BuildHasher;

/// Ids the first filter holds before a second one is added.
const FIRST_CAPACITY: usize = 1 << 20;
/// Bits per id at a filter's capacity.
const BITS_PER_ID: usize = 10;
/// Bits one id sets in its block.
const PROBES: u32 = 6;
/// Memory the filters may take together (~50M ids).
pub const BYTES_MAX: usize = 64 << 20;

type Block = [u64; 8];

struct Filter {
    blocks: Vec<Block>,
    ids: usize,
    capacity: usize,
}

impl Filter {
    fn with_capacity(capacity: usize) -> Self {
        let blocks = (capacity * BITS_PER_ID).div_ceil(512);
        Filter {
            blocks: vec![[0; 8]; blocks],
            ids: 0,
            capacity,
        }
    }

    fn bytes(&self) -> usize {
        self.blocks.len() * std::mem::size_of::<Block>()
    }

    /// The block and the bits of it that `hash` stands for.
    fn locate(&self, hash: u64) -> (usize, Block) {
        // The low half picks the block (a multiply-shift: no division), the high half,
        // mixed again, the bits.
        let block = ((hash & 0xffff_ffff) * self.blocks.len() as u64) >> 32;
        let mut bits = (hash >> 32).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let mut mask = [0u64; 8];
        for _ in 0..PROBES {
            let bit = (bits >> 55) as usize;
            mask[bit / 64] |= 1 << (bit % 64);
            bits <<= 9;
        }
        (block as usize, mask)
    }

    fn insert(&mut self, hash: u64) {
        let (at, mask) = self.locate(hash);
        for (word, m) in self.blocks[at].iter_mut().zip(mask) {
            *word |= m;
        }
        self.ids += 1;
    }

    fn may_contain(&self, hash: u64) -> bool {
        let (at, mask) = self.locate(hash);
        self.blocks[at]
            .iter()
            .zip(mask)
            .all(|(word, m)| word & m == m)
    }
}

/// A growing set of ids with false positives and no false negatives.
pub struct IdFilter {
    /// Ids go into the last filter; a lookup asks each.
    filters: Vec<Filter>,
    hasher: foldhash::fast::RandomState,
}

impl Default for IdFilter {
    fn default() -> Self {
        IdFilter {
            filters: vec![Filter::with_capacity(FIRST_CAPACITY)],
            hasher: foldhash::fast::RandomState::default(),
        }
    }
}

impl IdFilter {
    /// Adds `id`. False if the filter is full ([`BYTES_MAX`]): `id` is not in it, and
    /// the filter no longer answers for every id added, so it must be dropped.
    #[must_use]
    pub fn insert(&mut self, id: &str) -> bool {
        let last = self.filters.last().expect("a filter always holds one");
        if last.ids >= last.capacity {
            let next = Filter::with_capacity(last.capacity * 2);
            if self.bytes() + next.bytes() > BYTES_MAX {
                return false;
            }
            self.filters.push(next);
        }
        let hash = self.hasher.hash_one(id);
        self.filters
            .last_mut()
            .expect("a filter always holds one")
            .insert(hash);
        true
    }

    /// False if `id` was certainly never added.
    pub fn may_contain(&self, id: &str) -> bool {
        let hash = self.hasher.hash_one(id);
        self.filters.iter().any(|f| f.may_contain(hash))
    }

    /// The memory the filters take.
    pub fn bytes(&self) -> usize {
        self.filters.iter().map(Filter::bytes).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_id_added_is_found_and_few_others_are() {
        let mut filter = IdFilter::default();
        // Past the first filter's capacity, so that ids land in two filters.
        let added = FIRST_CAPACITY + FIRST_CAPACITY / 2;
        for i in 0..added {
            assert!(filter.insert(&format!("r-{i:010}")));
        }
        assert_eq!(filter.filters.len(), 2);
        for i in 0..added {
            assert!(filter.may_contain(&format!("r-{i:010}")), "lost r-{i:010}");
        }
        let probes = 200_000;
        let false_positives = (added..added + probes)
            .filter(|i| filter.may_contain(&format!("r-{i:010}")))
            .count();
        // Two filters at ~1% each (the second half full): well under 4% together.
        assert!(
            false_positives < probes * 4 / 100,
            "{false_positives} false positives in {probes}"
        );
    }

    #[test]
    fn a_full_filter_refuses_ids() {
        let mut filter = IdFilter::default();
        // Fill filters as inserts would, without hashing 50M ids.
        loop {
            let last = filter.filters.last_mut().unwrap();
            last.ids = last.capacity;
            let next = last.capacity * 2 * BITS_PER_ID / 8;
            if filter.bytes() + next > BYTES_MAX {
                break;
            }
            assert!(filter.insert("r-x"));
        }
        assert!(filter.bytes() <= BYTES_MAX);
        assert!(!filter.insert("r-y"));
        assert!(filter.may_contain("r-x"));
    }
}
