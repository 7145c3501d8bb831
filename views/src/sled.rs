//! The sled view store: every view and the applied height in ONE sled tree, so that a
//! [`ViewBatch`] is one atomic `apply_batch`.
//!
//! # Layout
//!
//! One named tree, `views` (sled's default tree holds nothing of ours):
//!
//! | key                   | value                                                 |
//! |-----------------------|-------------------------------------------------------|
//! | `[0x00]`              | applied height (u64 LE), [`LAYOUT`](super::LAYOUT) (u32 LE) |
//! | `[view as u8] ++ key` | the view row's value                                  |
//!
//! The view byte (`View as u8`, 1 to 10 today) is the first byte of every row key, so each view
//! is one contiguous key range and rows of different views never collide. No view uses
//! 0x00 (checked at compile time below), so the height is never part of a view. Callers
//! never see the view byte: keys go in and come out without it. Because no view byte is
//! 0xff, `[view] ++ prefix` always has an end key (at worst `[view + 1]`), so a scan is a
//! bounded range that cannot run into the next view, whatever bytes the prefix holds.
//!
//! # Atomicity
//!
//! [`ViewStore::write`] turns a batch into one `sled::Batch` holding every op and the
//! height key, applied with `Tree::apply_batch`. sled seals the batch in its log as one
//! unit and recovery replays a sealed batch whole or not at all, so after any crash the
//! store holds all of a batch's rows and its height, or none of them. This needs no
//! cross-tree transaction because the height lives in the same tree as the rows. Within
//! a batch the last op on a key wins, as in RocksDB's `WriteBatch`.
//!
//! # Durability
//!
//! As in the RocksDB store, batches are not fsynced one by one: views are derived data.
//! sled writes its log to disk in the background (every 500 ms by default) and
//! [`ViewStore::flush`] makes everything written so far durable. After a crash sled
//! recovers a prefix of the batches, so the store comes back at an earlier block
//! boundary and the projector catches up from its applied height.
//!
//! # Bulk loading
//!
//! A rebuild's store ([`SledViewStore::open_with`], `bulk`) starts empty and writes its
//! batches' rows as sorted runs (the `bulk` module); its flush merges them and inserts
//! every view's rows in key order, 1,024 at a time, reading back the last row of each
//! insert. sled keeps a page's pending changes in memory until it reads the page: written
//! as they came (each batch's rows spread over the whole tree) a 1M-event rebuild held
//! 15.3 GB, in key order without the reads 12.3 GB, with them 1.4 GB (and 1.5x faster).
//! Until that flush the store refuses reads.
//!
//! # Clearing
//!
//! [`ViewStore::clear`] drops the tree and opens a new, empty one under the same name.
//! Dropping unlinks the tree from sled's metadata in one step and then frees its pages,
//! so a crash leaves either every old row with the old height or an empty store at
//! height 0, never a mix, and the cost is one pass over the tree's pages. (`Tree::clear`
//! would log one remove per key and could stop halfway with the height already gone.)
//! A read that races a clear may hold the dropped tree; sled then answers
//! `CollectionNotFound`, and the read resumes on the new tree after the last row it
//! visited. Such a read can return rows from before the clear followed by rows written
//! after it (a RocksDB iterator reads one snapshot instead), but never an error.

use std::ops::Bound;
use std::path::Path;
use std::sync::{Mutex, PoisonError, RwLock};
use std::time::Duration;

use super::bulk::{BulkLoader, RowSink};
use super::{prefix_end, View, ViewBatch, ViewError, ViewOp, ViewStore, Visitor};

/// The one tree that holds every view and the height.
const TREE_NAME: &[u8] = b"views";

/// The key of the applied height: a byte no view uses, so no view range contains it.
const HEIGHT_KEY: [u8; 1] = [0x00];

const _: () = {
    let mut i = 0;
    while i < View::ALL.len() {
        let byte = View::ALL[i] as u8;
        assert!(
            byte != HEIGHT_KEY[0],
            "a view byte would collide with the height key"
        );
        assert!(
            byte != u8::MAX,
            "a view byte of 0xff would leave some scans unbounded"
        );
        i += 1;
    }
};

/// How many times one read moves to a fresh tree after a clear dropped the one it was
/// reading. Each move needs another whole clear to race the read, so a few are plenty;
/// the bound keeps a read from spinning if the store cannot reopen its tree.
const READ_ATTEMPTS_MAX: usize = 8;

/// How long [`SledViewStore::open`] waits for sled's lock on the store's directory.
/// Dropping a store does not release the lock at once: sled's background threads keep the
/// locked file open until they finish (sled's own tests block on the lock for this
/// reason), so reopening a store this process has just dropped can find it still held.
/// A store held by another process stays locked past the wait, and `open` fails.
const OPEN_LOCK_WAIT_MS: u64 = 2_000;
const OPEN_LOCK_RETRY_MS: u64 = 10;

/// Views in sled: one tree, views as key prefixes, one atomic `apply_batch` per batch.
pub struct SledViewStore {
    db: sled::Db,
    /// The live tree. Replaced (under the write lock) only by `clear`.
    tree: RwLock<sled::Tree>,
    /// Serializes `write` and `clear`: a write's height check and its batch see the same
    /// tree and height, and a clear never drops the tree under a batch.
    writer: Mutex<()>,
    /// A bulk (rebuild) store's loader of every view.
    bulk: Option<BulkLoader>,
}

/// Rows a bulk store's flush inserts in one `apply_batch`, before it reads the last one
/// back (see the module docs).
const LOAD_BATCH_ROWS: usize = 1024;

/// Inserts one view's merged rows into the tree, in key order.
struct TreeLoad {
    tree: sled::Tree,
    view: View,
    batch: sled::Batch,
    rows: usize,
}

impl RowSink for TreeLoad {
    type Done = ();

    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), ViewError> {
        self.batch.insert(row_key(self.view, key), value);
        self.rows += 1;
        if self.rows.is_multiple_of(LOAD_BATCH_ROWS) {
            self.tree
                .apply_batch(std::mem::take(&mut self.batch))
                .map_err(backend)?;
            // sled folds a page's pending changes into the page when it reads it: read
            // the page the batch ended on.
            self.tree.get(row_key(self.view, key)).map_err(backend)?;
        }
        Ok(())
    }

    fn finish(self) -> Result<(), ViewError> {
        self.tree.apply_batch(self.batch).map_err(backend)
    }
}

fn backend(e: sled::Error) -> ViewError {
    ViewError::Backend(e.to_string())
}

/// The tree key of `key` in `view`: the view byte, then the view key.
fn row_key(view: View, key: &[u8]) -> Vec<u8> {
    let mut row = Vec::with_capacity(1 + key.len());
    row.push(view as u8);
    row.extend_from_slice(key);
    row
}

/// Opens sled at `path`, retrying while its directory lock is held.
fn open_db(path: &Path) -> Result<sled::Db, ViewError> {
    for _ in 0..OPEN_LOCK_WAIT_MS / OPEN_LOCK_RETRY_MS {
        match sled::Config::new().path(path).open() {
            // sled 0.34 reports a held lock only as an `Other` I/O error with this text.
            Err(sled::Error::Io(e)) if e.to_string().starts_with("could not acquire lock") => {
                std::thread::sleep(Duration::from_millis(OPEN_LOCK_RETRY_MS));
            }
            other => return other.map_err(backend),
        }
    }
    sled::Config::new().path(path).open().map_err(backend)
}

fn decode_height(value: Option<sled::IVec>) -> Result<u64, ViewError> {
    Ok(decode_meta(value)?.map_or(0, |(height, _)| height))
}

fn decode_meta(value: Option<sled::IVec>) -> Result<Option<(u64, u32)>, ViewError> {
    value.map(|v| super::decode_meta(&v)).transpose()
}

impl SledViewStore {
    /// Opens (or creates) the store at `path`. sled locks the directory, so a second
    /// process opening the same store fails with [`ViewError::Backend`] (after waiting
    /// up to two seconds for the lock).
    pub fn open(path: &Path) -> Result<Self, ViewError> {
        Self::open_with(path, false)
    }

    /// Opens (or creates) the store at `path`; `bulk` for a rebuild, which must find it
    /// empty (see the module docs).
    pub fn open_with(path: &Path, bulk: bool) -> Result<Self, ViewError> {
        let db = open_db(path)?;
        let tree = db.open_tree(TREE_NAME).map_err(backend)?;
        let meta = decode_meta(tree.get(HEIGHT_KEY).map_err(backend)?)?;
        super::check_layout(meta)?;
        let bulk = if bulk {
            Some(BulkLoader::for_store(path, meta)?)
        } else {
            None
        };
        Ok(SledViewStore {
            db,
            tree: RwLock::new(tree),
            writer: Mutex::new(()),
            bulk,
        })
    }

    /// Refuses a read of `view` while a bulk store is still loading.
    fn readable(&self, view: View) -> Result<(), ViewError> {
        match &self.bulk {
            Some(loader) => loader.check_readable(view),
            None => Ok(()),
        }
    }

    /// A handle to the live tree. The lock guards only which tree is live, never data,
    /// so a poisoned lock (a panic elsewhere while holding it) changes nothing here.
    fn live_tree(&self) -> sled::Tree {
        self.tree
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Runs `read` on the live tree, and again on the new one if a concurrent clear
    /// dropped the tree under it. `read` must carry its own progress across attempts.
    fn read<T>(
        &self,
        mut read: impl FnMut(&sled::Tree) -> sled::Result<T>,
    ) -> Result<T, ViewError> {
        for _ in 0..READ_ATTEMPTS_MAX {
            match read(&self.live_tree()) {
                Err(sled::Error::CollectionNotFound(_)) => continue,
                other => return other.map_err(backend),
            }
        }
        Err(ViewError::Backend(format!(
            "the view tree was dropped under one read {READ_ATTEMPTS_MAX} times"
        )))
    }

    /// Visits the rows of `view` under `prefix` in key order, strictly after `after`
    /// when given, until `visit` breaks.
    fn for_each_from(
        &self,
        view: View,
        prefix: &[u8],
        after: Option<&[u8]>,
        visit: &mut Visitor<'_>,
    ) -> Result<(), ViewError> {
        let start = row_key(view, prefix);
        let end: Bound<sled::IVec> = match prefix_end(&start) {
            Some(end) => Bound::Excluded(end.into()),
            None => Bound::Unbounded,
        };
        // A cursor before the prefix starts at the prefix, as in the RocksDB store.
        let mut from: Bound<sled::IVec> = match after {
            Some(a) if a >= prefix => Bound::Excluded(row_key(view, a).into()),
            _ => Bound::Included(start.into()),
        };
        self.read(|tree| {
            for item in tree.range((from.clone(), end.clone())) {
                let (key, value) = item?;
                assert!(
                    key.first() == Some(&(view as u8)) && key[1..].starts_with(prefix),
                    "a range inside one view's prefix returned a row outside it"
                );
                let flow = visit(&key[1..], &value);
                // If a clear drops the tree mid-visit, the retry resumes after this row.
                from = Bound::Excluded(key);
                if flow.is_break() {
                    break;
                }
            }
            Ok(())
        })
    }
}

impl ViewStore for SledViewStore {
    fn applied_height(&self) -> Result<u64, ViewError> {
        decode_height(self.read(|tree| tree.get(HEIGHT_KEY))?)
    }

    fn write(&self, batch: &ViewBatch) -> Result<(), ViewError> {
        let _writer = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        // Holding the writer lock, no clear can replace this tree before the batch lands.
        let tree = self.live_tree();
        let current = decode_height(tree.get(HEIGHT_KEY).map_err(backend)?)?;
        if batch.applied_height < current {
            return Err(ViewError::HeightRegression {
                current,
                requested: batch.applied_height,
            });
        }
        if let Some(loader) = &self.bulk {
            loader.add_run(batch)?;
            let height = super::encode_meta(batch.applied_height);
            return tree
                .insert(&HEIGHT_KEY[..], &height[..])
                .map(|_| ())
                .map_err(backend);
        }
        let mut sled_batch = sled::Batch::default();
        for op in batch.ops() {
            match op {
                ViewOp::Put { view, key, value } => sled_batch.insert(row_key(view, key), value),
                ViewOp::Delete { view, key } => sled_batch.remove(row_key(view, key)),
            }
        }
        sled_batch.insert(
            &HEIGHT_KEY[..],
            &super::encode_meta(batch.applied_height)[..],
        );
        tree.apply_batch(sled_batch).map_err(backend)
    }

    fn derive_counts_at_flush(&self) -> Result<(), ViewError> {
        match &self.bulk {
            Some(loader) => {
                loader.derive_counts();
                Ok(())
            }
            None => Err(super::not_a_bulk_store()),
        }
    }

    fn get(&self, view: View, key: &[u8]) -> Result<Option<Vec<u8>>, ViewError> {
        self.readable(view)?;
        let row = row_key(view, key);
        let value = self.read(|tree| tree.get(&row))?;
        Ok(value.map(|v| v.to_vec()))
    }

    fn for_each(
        &self,
        view: View,
        prefix: &[u8],
        after: Option<&[u8]>,
        visit: &mut Visitor<'_>,
    ) -> Result<(), ViewError> {
        self.readable(view)?;
        self.for_each_from(view, prefix, after, visit)
    }

    fn clear(&self) -> Result<(), ViewError> {
        let _writer = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(loader) = &self.bulk {
            loader.clear()?;
        }
        // Readers wait for the swap, so after it they only ever get the new tree.
        let mut live = self.tree.write().unwrap_or_else(PoisonError::into_inner);
        let dropped = self.db.drop_tree(TREE_NAME);
        // Reopen even if the drop failed: open_tree returns the tree sled's metadata names
        // now (the old one if the drop never unlinked it), so `live` is never left holding
        // a dropped handle while the store can open its tree.
        *live = self.db.open_tree(TREE_NAME).map_err(backend)?;
        dropped.map_err(backend)?;
        // A drop that failed halfway once can leave the tree linked in sled's metadata but
        // unknown to the open database; a later drop then reports nothing to drop. Never
        // report a clear that left rows behind.
        if live.first().map_err(backend)?.is_some() {
            return Err(ViewError::Backend(
                "clearing the views left rows behind".to_string(),
            ));
        }
        Ok(())
    }

    fn flush(&self) -> Result<(), ViewError> {
        if let Some(loader) = &self.bulk {
            let _writer = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
            let tree = self.live_tree();
            loader.merge_views(|view| {
                Ok(TreeLoad {
                    tree: tree.clone(),
                    view,
                    batch: sled::Batch::default(),
                    rows: 0,
                })
            })?;
            loader.clear()?;
        }
        self.db.flush().map(|_bytes| ()).map_err(backend)
    }
}
