//! When each timeline last changed, for HTTP validators (`ETag`, `If-None-Match`).
//!
//! The live projector notes, for every block it applies, the owners whose timelines the
//! block changed (a record's patient, author and hospital when the record is created,
//! amended, has its status changed or its payload erased; a patient when one of its
//! grants is given or revoked). A timeline's validator is the height of its last change,
//! so a page asked again with that validator is answered `304 Not Modified` without
//! reading a record.
//!
//! Owners are hashed into a fixed table of heights ([`BUCKETS`] of them, 8 MiB): two
//! owners that share a bucket share their changes, which only makes a validator change
//! when it need not (one more full answer), never the other way. The table is in memory
//! and has an epoch (the time it was made): a validator from before a restart, or from
//! another node, never matches.
//!
//! Order: the projector writes a block's rows, then raises the buckets; a reader takes
//! its bucket first, then reads the rows. A reader's rows are therefore at least as new
//! as its validator: a validator never stands for older rows than the ones sent with it.

use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::query::Owner;

/// Buckets in the table: 2^20 heights of 8 bytes.
pub const BUCKETS: usize = 1 << 20;

/// An owner's bucket (its kind and id, hashed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bucket(usize);

impl Bucket {
    pub fn of(owner: Owner<'_>) -> Bucket {
        let (kind, id) = match owner {
            Owner::Patient(id) => (0u8, id),
            Owner::Author(id) => (1, id),
            Owner::Hospital(id) => (2, id),
        };
        let h = foldhash::fast::FixedState::with_seed(0x6d65_646c_6564_6765).hash_one((kind, id));
        Bucket(h as usize & (BUCKETS - 1))
    }
}

/// The heights of the last changes (see the module's text).
pub struct Changes {
    buckets: Box<[AtomicU64]>,
    epoch: u64,
}

impl Changes {
    /// A table where every timeline last changed at `height` (the views' height at start).
    pub fn new(height: u64) -> Changes {
        let epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        Changes {
            buckets: (0..BUCKETS).map(|_| AtomicU64::new(height)).collect(),
            epoch,
        }
    }

    /// When this table was made (ns since the Unix epoch): part of every validator.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The height of `owner`'s last change (or a later one).
    pub fn of(&self, owner: Owner<'_>) -> u64 {
        self.buckets[Bucket::of(owner).0].load(Ordering::Acquire)
    }

    /// Records that a block's rows, now written, bring the views to `height` and changed
    /// the timelines `touched`.
    pub fn raise(&self, touched: &Touched, height: u64) {
        for b in &touched.buckets {
            self.buckets[b.0].fetch_max(height, Ordering::AcqRel);
        }
    }
}

/// The timelines one block changed, gathered by the projection
/// ([`crate::project::Projection`]).
#[derive(Debug, Default)]
pub struct Touched {
    buckets: Vec<Bucket>,
}

impl Touched {
    /// A record's timelines changed.
    pub fn record(&mut self, patient_id: &str, author_id: &str, hospital_id: &str) {
        self.buckets.extend([
            Bucket::of(Owner::Patient(patient_id)),
            Bucket::of(Owner::Author(author_id)),
            Bucket::of(Owner::Hospital(hospital_id)),
        ]);
    }

    /// A grant of `patient_id`'s records was given or revoked.
    pub fn grant(&mut self, patient_id: &str) {
        self.buckets.push(Bucket::of(Owner::Patient(patient_id)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_raise_moves_the_owners_touched_and_no_other() {
        let c = Changes::new(10);
        let mut t = Touched::default();
        t.record("p-1", "dr-1", "h-1");
        c.raise(&t, 12);
        assert_eq!(c.of(Owner::Patient("p-1")), 12);
        assert_eq!(c.of(Owner::Author("dr-1")), 12);
        assert_eq!(c.of(Owner::Hospital("h-1")), 12);
        // Another owner, and the same id as another kind, are not touched (their buckets
        // differ here; a shared bucket would only raise them too).
        assert_eq!(c.of(Owner::Patient("p-2")), 10);
        assert_eq!(c.of(Owner::Author("p-1")), 10);
        // Heights never go back.
        c.raise(&t, 11);
        assert_eq!(c.of(Owner::Patient("p-1")), 12);
        let mut g = Touched::default();
        g.grant("p-2");
        c.raise(&g, 13);
        assert_eq!(c.of(Owner::Patient("p-2")), 13);
        assert_ne!(Changes::new(10).epoch(), 0);
    }
}
