//! The materialized views' store: named views of ordered byte keys, written in atomic
//! batches that carry the ledger height they bring the views to.
//!
//! The ledger is the truth; views are derived from it and can be thrown away and rebuilt.
//! The [`projector`] turns each committed block into one [`ViewBatch`] (view rows plus
//! the new applied height, [`project`] decides which), so a crash never applies a block
//! twice or half: after a restart the store is exactly at some block boundary and
//! catches up from there. [`rebuild`] throws the views away and projects them again from
//! block 0, or checks live views against such a rebuild.
//!
//! Every implementation must pass one conformance suite (`tests/view_store_conformance.rs`).
//! [`rocks::RocksViewStore`] is the default: one RocksDB column family per view.
//! `sled::SledViewStore` (behind the `sled` feature, on by default so the suite runs
//! against both stores) keeps every view in one sled tree, views as key prefixes, so a
//! batch is one atomic `apply_batch`.

pub(crate) mod bulk;
pub mod changes;
mod derive;
pub mod keys;
pub mod project;
pub mod projector;
pub mod query;
pub mod rebuild;
pub mod rocks;
#[cfg(feature = "sled")]
pub mod sled;
pub mod summary;
pub mod values;

use rayon::slice::ParallelSliceMut;
use std::ops::ControlFlow;

/// The views. The byte values name the views on disk: never renumber.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum View {
    /// record id → current state.
    Records = 1,
    /// (record id, version) → the block, position and state of each version a later
    /// one superseded (the current version is in `records` only).
    RecordVersions = 2,
    /// (patient id, created_at descending, record id) → record summary.
    PatientTimeline = 3,
    /// (author id, created_at descending, record id) → record summary.
    AuthorTimeline = 4,
    /// (hospital id, created_at descending, record id) → record summary.
    HospitalTimeline = 5,
    /// (patient id, record type, created_at descending, record id) → record summary.
    PatientTypeTimeline = 6,
    /// Active records only: (patient id, created_at descending, record id) → summary.
    Active = 7,
    /// (patient id, grantee id) → grant.
    Grants = 8,
    /// (record id, block, position) → access-log entry: the audit trail.
    Audit = 9,
    /// (block, position) → why a committed transaction changed nothing (the contract
    /// rejected it for the state it met): the validation outcome, as Fabric flags it.
    Rejected = 10,
    /// Reads of clinical content, newest first: (patient id, block descending, position
    /// descending) → the read. A record's reads are its patient's that name it.
    AccessLog = 11,
    /// (patient id, record type, status) → how many of the patient's records have that
    /// type and status (`u64`), never 0: the counts of a patient summary.
    PatientCounts = 12,
    /// (hospital id, month descending, record type, status) → how many of the hospital's
    /// records created in that month have that type and status (`u64`), never 0.
    Stats = 13,
}

impl View {
    /// Every view, in byte order.
    pub const ALL: [View; 13] = [
        View::Records,
        View::RecordVersions,
        View::PatientTimeline,
        View::AuthorTimeline,
        View::HospitalTimeline,
        View::PatientTypeTimeline,
        View::Active,
        View::Grants,
        View::Audit,
        View::Rejected,
        View::AccessLog,
        View::PatientCounts,
        View::Stats,
    ];

    /// The stable name (RocksDB column family, logs, digests).
    pub fn name(self) -> &'static str {
        match self {
            View::Records => "records",
            View::RecordVersions => "record_versions",
            View::PatientTimeline => "patient_timeline",
            View::AuthorTimeline => "author_timeline",
            View::HospitalTimeline => "hospital_timeline",
            View::PatientTypeTimeline => "patient_type_timeline",
            View::Active => "active",
            View::Grants => "grants",
            View::Audit => "audit",
            View::Rejected => "rejected",
            View::AccessLog => "access_log",
            View::PatientCounts => "patient_counts",
            View::Stats => "stats",
        }
    }
}

/// What the views' rows mean. A store keeps the layout it was written in beside its
/// applied height, and refuses to open ([`ViewError::Layout`]) when that is not this
/// one: views from another layout must be rebuilt from the ledger (`medledger rebuild`;
/// `medledger serve` does it by itself).
///
/// - 1: `record_versions` held every version of a record, the current one too.
/// - 2: `record_versions` holds the superseded versions; the current one is only in
///   `records` (each record's state is stored once until it is amended).
/// - 3: `access_log`, the reads of clinical content (`RecordsRead`) by patient.
/// - 4: `patient_counts` and `stats`, counts kept by the projector (a rebuild derives
///   them from `patient_type_timeline` and `hospital_timeline`).
pub const LAYOUT: u32 = 4;

/// The stored applied height and layout: height (u64 LE) then layout (u32 LE).
pub(crate) fn encode_meta(applied_height: u64) -> [u8; 12] {
    let mut meta = [0u8; 12];
    meta[..8].copy_from_slice(&applied_height.to_le_bytes());
    meta[8..].copy_from_slice(&LAYOUT.to_le_bytes());
    meta
}

/// The applied height and layout from [`encode_meta`]'s bytes; 8 bytes are a height
/// written before layouts were recorded (layout 1).
pub(crate) fn decode_meta(bytes: &[u8]) -> Result<(u64, u32), ViewError> {
    let height = |b: &[u8]| u64::from_le_bytes(b[..8].try_into().expect("8 bytes"));
    match bytes.len() {
        8 => Ok((height(bytes), 1)),
        12 => {
            let layout = u32::from_le_bytes(bytes[8..].try_into().expect("4 bytes"));
            Ok((height(bytes), layout))
        }
        _ => Err(ViewError::Malformed {
            what: "applied height",
        }),
    }
}

/// Refuses a store that holds views of another [`LAYOUT`] (a store at height 0 holds
/// none yet, and takes this layout with its first batch).
pub(crate) fn check_layout(meta: Option<(u64, u32)>) -> Result<(), ViewError> {
    match meta {
        Some((height, found)) if height > 0 && found != LAYOUT => Err(ViewError::Layout {
            found,
            expected: LAYOUT,
        }),
        _ => Ok(()),
    }
}

/// One change to a view, borrowed from the [`ViewBatch`] that holds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ViewOp<'a> {
    Put {
        view: View,
        key: &'a [u8],
        value: &'a [u8],
    },
    Delete {
        view: View,
        key: &'a [u8],
    },
}

impl ViewOp<'_> {
    /// The view the op changes.
    pub fn view(&self) -> View {
        match self {
            ViewOp::Put { view, .. } | ViewOp::Delete { view, .. } => *view,
        }
    }

    /// Bytes of its key and value.
    pub fn byte_len(&self) -> usize {
        match self {
            ViewOp::Put { key, value, .. } => key.len() + value.len(),
            ViewOp::Delete { key, .. } => key.len(),
        }
    }
}

/// Where one op's key (and value, for a put) sit in [`ViewBatch`]'s byte buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct OpAt {
    view: View,
    start: usize,
    key_len: usize,
    /// `None` for a delete.
    value_len: Option<usize>,
}

/// Changes applied atomically together with the new applied height: after
/// [`ViewStore::write`] the store holds all of them and `applied_height`, or none.
///
/// Keys and values are copied into one buffer, so a batch of a rebuild (a quarter of a
/// million ops) is two allocations, not two per op: the allocator's work for a batch was
/// a third of the projection's CPU.
#[derive(Clone, Debug, Default)]
pub struct ViewBatch {
    bytes: Vec<u8>,
    ops: Vec<OpAt>,
    /// Blocks `0..applied_height` are reflected in the views after this batch.
    pub applied_height: u64,
    /// [`ViewBatch::sort_by_key`]'s buffers, empty between its calls.
    sort_order: Vec<(u128, u64, u32)>,
    sorted_ops: Vec<OpAt>,
    /// Whether the ops are as [`ViewBatch::sort_by_key`] left them.
    sorted_unique: bool,
}

impl ViewBatch {
    /// An empty batch that will set the applied height to `applied_height`.
    pub fn new(applied_height: u64) -> Self {
        ViewBatch {
            applied_height,
            ..ViewBatch::default()
        }
    }

    /// Empties the batch for reuse (its memory stays) and sets the height it will set.
    pub fn reset(&mut self, applied_height: u64) {
        self.bytes.clear();
        self.ops.clear();
        self.applied_height = applied_height;
    }

    /// Adds a put.
    pub fn put(&mut self, view: View, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) {
        let key = key.as_ref();
        self.put_with(view, |buf| buf.extend_from_slice(key), value.as_ref());
    }

    /// Adds a delete.
    pub fn delete(&mut self, view: View, key: impl AsRef<[u8]>) {
        let key = key.as_ref();
        self.delete_with(view, |buf| buf.extend_from_slice(key));
    }

    /// Adds a put whose key `write_key` appends to the batch's buffer (the `keys::write_*`
    /// functions): no key of its own to allocate.
    pub fn put_with(&mut self, view: View, write_key: impl FnOnce(&mut Vec<u8>), value: &[u8]) {
        self.push(
            view,
            write_key,
            Some(|buf: &mut Vec<u8>| buf.extend_from_slice(value)),
        );
    }

    /// Adds a put whose key and value `write_key` and `write_value` append to the batch's
    /// buffer (a value encoded in place: no value of its own to allocate either).
    pub fn put_encoded(
        &mut self,
        view: View,
        write_key: impl FnOnce(&mut Vec<u8>),
        write_value: impl FnOnce(&mut Vec<u8>),
    ) {
        self.push(view, write_key, Some(write_value));
    }

    /// Adds a delete whose key `write_key` appends to the batch's buffer.
    pub fn delete_with(&mut self, view: View, write_key: impl FnOnce(&mut Vec<u8>)) {
        self.push(view, write_key, None::<fn(&mut Vec<u8>)>);
    }

    /// Appends the op's key, then its value (a put's), to the buffer.
    fn push(
        &mut self,
        view: View,
        write_key: impl FnOnce(&mut Vec<u8>),
        write_value: Option<impl FnOnce(&mut Vec<u8>)>,
    ) {
        let start = self.bytes.len();
        write_key(&mut self.bytes);
        let key_len = self.bytes.len() - start;
        let value_len = write_value.map(|write| {
            write(&mut self.bytes);
            self.bytes.len() - start - key_len
        });
        self.ops.push(OpAt {
            view,
            start,
            key_len,
            value_len,
        });
        self.sorted_unique = false;
    }

    /// Whether the ops are in (view, key) order with one op per key, as
    /// [`ViewBatch::sort_by_key`] leaves them (until an op is added).
    pub fn is_sorted_unique(&self) -> bool {
        self.sorted_unique || self.ops.is_empty()
    }

    /// Makes room for `ops` more ops and `bytes` more bytes of keys and values: a
    /// rebuild's batch reserved once is not copied as it grows, and only what it uses of
    /// that memory is ever touched.
    pub fn reserve(&mut self, ops: usize, bytes: usize) {
        self.ops.reserve(ops);
        self.bytes.reserve(bytes);
        // And [`ViewBatch::sort_by_key`]'s buffers, which would otherwise grow by
        // doubling through the first batches.
        self.sort_order.reserve(self.ops.capacity());
        self.sorted_ops.reserve(self.ops.capacity());
    }

    /// The value of the last op added, if it is a put.
    pub fn last_value(&self) -> Option<&[u8]> {
        let at = self.ops.last()?;
        let from = at.start + at.key_len;
        at.value_len.map(|len| &self.bytes[from..from + len])
    }

    /// Ops in the batch.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// Bytes of the ops' keys and values.
    pub fn byte_len(&self) -> usize {
        self.bytes.len()
    }

    /// No ops (the batch may still move the height).
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// The ops, in order: on one key, the last one wins.
    pub fn ops(&self) -> impl ExactSizeIterator<Item = ViewOp<'_>> + '_ {
        self.ops.iter().map(|at| self.op(at))
    }

    fn op(&self, at: &OpAt) -> ViewOp<'_> {
        let key = self.key_of(at);
        match at.value_len {
            Some(len) => {
                let from = at.start + at.key_len;
                ViewOp::Put {
                    view: at.view,
                    key,
                    value: &self.bytes[from..from + len],
                }
            }
            None => ViewOp::Delete { view: at.view, key },
        }
    }

    fn key_of(&self, at: &OpAt) -> &[u8] {
        &self.bytes[at.start..at.start + at.key_len]
    }

    /// Orders the ops by (view, key) and keeps only the last op on each key, the one that
    /// wins. The result the store holds is the same; the inserts become sequential, which
    /// the stores do much faster (RocksDB's memtable skiplist reuses its insertion point;
    /// sled stays in one leaf), and a bulk store writes the ops as they are
    /// ([`ViewBatch::is_sorted_unique`]).
    ///
    /// Ops are compared by view and the first 15 bytes of their keys as one integer,
    /// then by the next 8 as another, and by the whole key only when those tie: most
    /// keys differ early, and the byte-by-byte comparisons of a plain sort were a third
    /// of a rebuild's writer thread. (An author's or a patient-and-type timeline key
    /// spends 12 to 22 bytes on ids before its timestamp.)
    pub fn sort_by_key(&mut self) {
        // Both buffers are the batch's own and keep their memory: a rebuild sorts a
        // quarter of a million ops per batch, and fresh buffers (and the ops vector
        // regrown from its sorted, exact-sized copy) were page faults on both threads.
        let mut order = std::mem::take(&mut self.sort_order);
        order.clear();
        order.extend(self.ops.iter().enumerate().map(|(i, at)| {
            let key = self.key_of(at);
            let mut head = [0u8; 24];
            head[0] = at.view as u8;
            let n = key.len().min(23);
            head[1..=n].copy_from_slice(&key[..n]);
            let (high, low) = head.split_at(16);
            let i = u32::try_from(i).expect("a batch holds < 2^32 ops");
            (
                u128::from_be_bytes(high.try_into().expect("16 bytes")),
                u64::from_be_bytes(low.try_into().expect("8 bytes")),
                i,
            )
        }));
        // Zero padding keeps the order of the heads consistent with the keys' order; ties
        // (equal heads) compare whole keys, then the position (so the sort is stable).
        // On the rayon pool: the sort is a quarter of a rebuild's writer thread, which
        // the projection waits for.
        order.par_sort_unstable_by(|a, b| {
            (a.0, a.1)
                .cmp(&(b.0, b.1))
                .then_with(|| {
                    let (x, y) = (&self.ops[a.2 as usize], &self.ops[b.2 as usize]);
                    self.key_of(x).cmp(self.key_of(y))
                })
                .then(a.2.cmp(&b.2))
        });
        let mut sorted = std::mem::take(&mut self.sorted_ops);
        sorted.clear();
        // An op followed by one on the same key is superseded (the sort is stable). Equal
        // keys have equal heads, so only equal heads need the keys compared.
        let same_key = |a: &(u128, u64, u32), b: &(u128, u64, u32)| {
            (a.0, a.1) == (b.0, b.1)
                && self.key_of(&self.ops[a.2 as usize]) == self.key_of(&self.ops[b.2 as usize])
        };
        sorted.extend(
            order
                .iter()
                .zip(order.iter().skip(1).map(Some).chain([None]))
                .filter(|(op, next)| !next.is_some_and(|next| same_key(op, next)))
                .map(|(&(_, _, i), _)| self.ops[i as usize]),
        );
        self.sorted_ops = std::mem::replace(&mut self.ops, sorted);
        self.sorted_ops.clear();
        order.clear();
        self.sort_order = order;
        self.sorted_unique = true;
    }
}

impl PartialEq for ViewBatch {
    /// Equal ops in the same order and the same height (the sort's buffers, empty
    /// between calls, are not compared).
    fn eq(&self, other: &Self) -> bool {
        self.applied_height == other.applied_height
            && self.ops.len() == other.ops.len()
            && self.ops().zip(other.ops()).all(|(a, b)| a == b)
    }
}

impl Eq for ViewBatch {}

/// What can go wrong in a view store.
#[derive(Debug, thiserror::Error)]
pub enum ViewError {
    /// The backend failed (I/O, corruption, lock held by another process).
    #[error("view store error: {0}")]
    Backend(String),
    /// A batch would move the applied height backwards: a projector bug.
    #[error("applied height would go from {current} back to {requested}")]
    HeightRegression { current: u64, requested: u64 },
    /// A stored value is not what the store wrote.
    #[error("view store holds a malformed {what}")]
    Malformed { what: &'static str },
    /// The store was written in another [`LAYOUT`].
    #[error(
        "the views were written in layout {found} and this build reads layout {expected}: \
         rebuild them from the ledger (`medledger rebuild`)"
    )]
    Layout { found: u32, expected: u32 },
}

/// Rows of one view, in key order.
pub type Rows = Vec<(Vec<u8>, Vec<u8>)>;

/// Called with each (key, value) of a streaming visit; `Break` stops the visit.
pub type Visitor<'a> = dyn FnMut(&[u8], &[u8]) -> ControlFlow<()> + 'a;

/// A store of views. Shared between the projector (the one writer) and any number of
/// readers.
pub trait ViewStore: Send + Sync {
    /// Blocks `0..height` are reflected in the views (0 for a new store).
    fn applied_height(&self) -> Result<u64, ViewError>;

    /// Applies every op and sets the applied height, atomically. Fails with
    /// [`ViewError::HeightRegression`] (writing nothing) if the height would decrease.
    fn write(&self, batch: &ViewBatch) -> Result<(), ViewError>;

    /// The value at `key` in `view`.
    fn get(&self, view: View, key: &[u8]) -> Result<Option<Vec<u8>>, ViewError>;

    /// The values at `keys` in `view`, in the keys' order: one call for a timeline page's
    /// records (a store that can batches the lookups).
    fn get_many(&self, view: View, keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>, ViewError> {
        keys.iter().map(|k| self.get(view, k)).collect()
    }

    /// Up to `limit` rows of `view` whose keys start with `prefix`, in ascending key
    /// order, starting strictly after `after` when given (the pagination cursor).
    fn scan(
        &self,
        view: View,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Rows, ViewError> {
        let mut rows = Vec::with_capacity(limit.min(1024));
        if limit == 0 {
            return Ok(rows);
        }
        self.for_each(view, prefix, after, &mut |k, v| {
            rows.push((k.to_vec(), v.to_vec()));
            if rows.len() >= limit {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })?;
        Ok(rows)
    }

    /// Visits every row of `view` whose key starts with `prefix`, in ascending key order,
    /// starting strictly after `after` when given, in constant memory, until `visit`
    /// breaks.
    fn for_each(
        &self,
        view: View,
        prefix: &[u8],
        after: Option<&[u8]>,
        visit: &mut Visitor<'_>,
    ) -> Result<(), ViewError>;

    /// Writes `rows` of `view`, in ascending key order with one row per key, as a
    /// *range*: they lie in a key range that no other range's rows, and no batch's
    /// rows, of that view enter (a rebuild's partitions are ranges of record ids, and
    /// of grant keys). A store being loaded from empty (a rebuild's) may then store
    /// them as they are, merged with nothing; others write them in one batch, leaving
    /// the applied height as it is.
    fn write_range(
        &self,
        view: View,
        rows: &mut dyn Iterator<Item = (&[u8], &[u8])>,
    ) -> Result<(), ViewError> {
        write_range_as_batch(self, view, rows)
    }

    /// A bulk store only: at its flush, derive the count views (`patient_counts`,
    /// `stats`) from the timeline rows it merges, instead of loading their rows
    /// (views/src/derive.rs). A rebuild asks for it: its partitions, ranges of record
    /// ids, cannot count a patient's or a hospital's records.
    fn derive_counts_at_flush(&self) -> Result<(), ViewError> {
        Err(not_a_bulk_store())
    }

    /// Deletes every row of every view and resets the applied height to 0 (rebuild).
    fn clear(&self) -> Result<(), ViewError>;

    /// Makes everything written so far durable.
    fn flush(&self) -> Result<(), ViewError>;

    /// Starts making everything written so far durable and returns without waiting for
    /// it: the live projector's periodic flush, which must not stall the blocks (and the
    /// answers waiting for their verdicts) behind it. What a crash keeps is still one
    /// batch boundary for every view (the RocksDB store flushes atomically). By default
    /// the same as [`ViewStore::flush`].
    fn flush_in_background(&self) -> Result<(), ViewError> {
        self.flush()
    }

    /// Bytes the store holds in memory, by what holds them (`("block_cache", n)`, ...),
    /// for `/metrics`; empty for a store that cannot tell.
    fn memory(&self) -> Vec<(&'static str, u64)> {
        Vec::new()
    }
}

/// Why a store that is not a bulk store refuses [`ViewStore::derive_counts_at_flush`].
pub(crate) fn not_a_bulk_store() -> ViewError {
    ViewError::Backend("only a bulk store derives the count views at its flush".to_string())
}

/// [`ViewStore::write_range`] for a store that gives ranges nothing of their own:
/// `rows` in one batch, at the store's applied height.
pub(crate) fn write_range_as_batch(
    store: &(impl ViewStore + ?Sized),
    view: View,
    rows: &mut dyn Iterator<Item = (&[u8], &[u8])>,
) -> Result<(), ViewError> {
    let mut batch = ViewBatch::new(store.applied_height()?);
    for (key, value) in rows {
        batch.put(view, key, value);
    }
    store.write(&batch)
}

/// A view store implementation, chosen by configuration (`--backend`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// [`rocks::RocksViewStore`], the default.
    RocksDb,
    /// The sled store (cargo feature `sled`, on by default).
    Sled,
}

impl Backend {
    /// Every backend compiled into this build.
    pub fn compiled() -> &'static [Backend] {
        if cfg!(feature = "sled") {
            &[Backend::RocksDb, Backend::Sled]
        } else {
            &[Backend::RocksDb]
        }
    }

    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Backend::RocksDb => "rocksdb",
            Backend::Sled => "sled",
        }
    }

    /// The directory of this backend's views inside a data dir.
    pub fn dir_name(self) -> &'static str {
        match self {
            Backend::RocksDb => "views-rocksdb",
            Backend::Sled => "views-sled",
        }
    }

    /// Opens (or creates) a store of this backend at `path`. `bulk` tunes it for a
    /// rebuild into an empty store, which makes it durable with [`ViewStore::flush`]
    /// before it is used: until then a RocksDB bulk store serves reads of `records` and
    /// `grants` only (what the projection reads), and refuses the other views.
    pub fn open(self, path: &std::path::Path, bulk: bool) -> Result<Box<dyn ViewStore>, ViewError> {
        match self {
            Backend::RocksDb => Ok(Box::new(rocks::RocksViewStore::open_with(path, bulk)?)),
            #[cfg(feature = "sled")]
            Backend::Sled => Ok(Box::new(sled::SledViewStore::open_with(path, bulk)?)),
            #[cfg(not(feature = "sled"))]
            Backend::Sled => Err(ViewError::Backend(
                "this build has no sled view store (cargo feature `sled`)".into(),
            )),
        }
    }
}

impl std::str::FromStr for Backend {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "rocksdb" => Ok(Backend::RocksDb),
            "sled" => Ok(Backend::Sled),
            other => Err(format!(
                "unknown view store backend `{other}` (rocksdb or sled)"
            )),
        }
    }
}

/// The smallest key greater than every key starting with `prefix`, if any (for bounded
/// range scans).
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn owned(batch: &ViewBatch) -> Vec<(View, Vec<u8>, Option<Vec<u8>>)> {
        batch
            .ops()
            .map(|op| match op {
                ViewOp::Put { view, key, value } => (view, key.to_vec(), Some(value.to_vec())),
                ViewOp::Delete { view, key } => (view, key.to_vec(), None),
            })
            .collect()
    }

    fn arb_key() -> impl Strategy<Value = Vec<u8>> {
        // Keys that tie on their first 23 bytes (the heads the sort compares), end in
        // zeros, or are prefixes of each other: where comparing by the heads alone would
        // go wrong.
        let long = "p-00000001\0lab_result\0\u{0}\u{0}".as_bytes().to_vec();
        prop_oneof![
            prop::collection::vec(prop::sample::select(vec![0u8, 1, b'a', 0xff]), 0..20),
            prop::collection::vec(prop::sample::select(vec![0u8, b'x', 0xff]), 0..6)
                .prop_map(move |tail| [long.clone(), tail].concat()),
        ]
    }

    proptest! {
        /// The sort equals a stable sort by (view, key) of the ops as added, and `reset`
        /// leaves nothing behind.
        #[test]
        fn sort_by_key_orders_by_view_and_key_keeping_the_last_op_on_each(
            ops in prop::collection::vec(
                (prop::sample::select(View::ALL.to_vec()), arb_key(), prop::option::of(arb_key())),
                0..200,
            )
        ) {
            let mut batch = ViewBatch::new(3);
            for (i, (view, key, value)) in ops.iter().enumerate() {
                match value {
                    // Both ways of adding a put lay it out alike.
                    Some(v) if i % 2 == 0 => batch.put(*view, key, v),
                    Some(v) => batch.put_encoded(
                        *view,
                        |k| k.extend_from_slice(key),
                        |b| b.extend_from_slice(v),
                    ),
                    None => batch.delete(*view, key),
                }
                prop_assert_eq!(batch.last_value(), value.as_deref());
            }
            // A stable sort, then the last op on each key.
            let mut want = ops.clone();
            want.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
            let want: Vec<_> = want
                .iter()
                .enumerate()
                .filter(|(i, op)| want.get(i + 1).is_none_or(|next| (next.0, &next.1) != (op.0, &op.1)))
                .map(|(_, op)| op.clone())
                .collect();
            prop_assert_eq!(owned(&batch), ops.clone());
            prop_assert_eq!(batch.is_sorted_unique(), ops.is_empty());
            batch.sort_by_key();
            prop_assert_eq!(owned(&batch), want);
            prop_assert!(batch.is_sorted_unique());
            prop_assert_eq!(batch.applied_height, 3);
            batch.reset(4);
            prop_assert!(batch.is_empty());
            prop_assert_eq!(batch.byte_len(), 0);
            prop_assert_eq!(batch, ViewBatch::new(4));
        }
    }
}
