//! The RocksDB view store: one column family per view, plus `view_meta` for the applied
//! height and layout, written in one `WriteBatch`.
//!
//! Views are derived data, so writes skip RocksDB's write-ahead log (it cost the live
//! projector a third of its time: every row written twice, with a CRC). What is durable
//! is what [`ViewStore::flush`] wrote to SST files, and `atomic_flush` writes every
//! column family's memtable out together: after a crash every view, and the applied
//! height, come back at the same batch boundary, and the projector replays the blocks
//! since from the ledger.
//!
//! A bulk store (a rebuild's, [`RocksViewStore::open_with`]) starts empty and writes no
//! view through its memtables: every row goes through the `bulk` module's runs, or as a
//! key range, into SST files (`rocks/sst.rs`) ingested at its flush.

mod sst;

use std::path::Path;

use rocksdb::{
    BlockBasedOptions, ColumnFamilyDescriptor, Direction, IteratorMode, Options, ReadOptions,
    WriteBatch, WriteOptions, DB,
};

use self::sst::SstLoader;
use super::bulk::BulkLoader;
use super::{prefix_end, View, ViewBatch, ViewError, ViewOp, ViewStore, Visitor};

const CF_META: &str = "view_meta";
const KEY_HEIGHT: &[u8] = b"applied_height";

/// Views in RocksDB.
pub struct RocksViewStore {
    db: DB,
    /// A bulk (rebuild) store's loader of every view.
    bulk: Option<SstLoader>,
}

fn backend(e: rocksdb::Error) -> ViewError {
    ViewError::Backend(e.into_string())
}

impl RocksViewStore {
    /// Opens (or creates) the store at `path`.
    pub fn open(path: &Path) -> Result<Self, ViewError> {
        Self::open_with(path, false)
    }

    /// Opens (or creates) the store at `path`; `bulk` for a rebuild, which must find it
    /// empty: every view is loaded through sorted runs and readable after
    /// [`ViewStore::flush`] (see the `bulk` module).
    pub fn open_with(path: &Path, bulk: bool) -> Result<Self, ViewError> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        opts.set_max_background_jobs(2);
        // No WAL (see the module docs): column families must flush together.
        opts.set_atomic_flush(true);
        // Bound the memtables of all column families together: the live store's memory
        // stays flat however long it runs (a bulk store's hold only its height).
        opts.set_db_write_buffer_size(512 << 20);
        // The live store writes its flushes and compactions with direct I/O, and keeps
        // what it reads, and each flush's blocks, in one block cache. Written through the
        // page cache, a flush (256 MiB of `records`) or a compaction left that much dirty
        // data for the kernel to write back at once, and the ledger's fdatasync, which
        // every acknowledgement waits for, waited behind it: 0.1-0.6 s stalls in
        // sustained submissions. On a filesystem without O_DIRECT the store keeps the page
        // cache.
        let live_cache = (!bulk).then(|| rocksdb::Cache::new_lru_cache(LIVE_BLOCK_CACHE_BYTES));
        if live_cache.is_some() && direct_io_supported(path)? {
            opts.set_use_direct_io_for_flush_and_compaction(true);
        }
        let cfs = column_families()
            .map(|name| ColumnFamilyDescriptor::new(name, cf_options(name, live_cache.as_ref())));
        let db = DB::open_cf_descriptors(&opts, path, cfs).map_err(backend)?;
        let store = RocksViewStore { db, bulk: None };
        if live_cache.is_some() {
            // Each flush puts the blocks it writes in the block cache too: with direct
            // I/O the page cache no longer holds them, and reads of what was just written
            // (timeline pages, records) would go to the disk. (Not in the Rust options.)
            for name in column_families() {
                store
                    .db
                    .set_options_cf(
                        store.cf(name),
                        &[(
                            "block_based_table_factory",
                            "{prepopulate_block_cache=kFlushOnly;}",
                        )],
                    )
                    .map_err(backend)?;
            }
        }
        let meta = store.meta()?;
        super::check_layout(meta)?;
        if !bulk {
            return Ok(store);
        }
        Ok(RocksViewStore {
            bulk: Some(SstLoader::new(BulkLoader::for_store(path, meta)?)),
            ..store
        })
    }

    /// The stored applied height and layout, if any.
    fn meta(&self) -> Result<Option<(u64, u32)>, ViewError> {
        let value = self
            .db
            .get_cf(self.cf(CF_META), KEY_HEIGHT)
            .map_err(backend)?;
        value.map(|v| super::decode_meta(&v)).transpose()
    }

    /// Refuses a read of a view a bulk store is still loading.
    fn readable(&self, view: View) -> Result<(), ViewError> {
        match &self.bulk {
            Some(loader) => loader.check_readable(view),
            None => Ok(()),
        }
    }

    fn cf(&self, name: &str) -> &rocksdb::ColumnFamily {
        self.db
            .cf_handle(name)
            .expect("every view's column family is created on open")
    }
}

impl ViewStore for RocksViewStore {
    fn memory(&self) -> Vec<(&'static str, u64)> {
        // Every view's column family uses the one live block cache.
        medledger_storage::ledger::index::rocksdb_memory(&self.db, column_families())
    }

    fn applied_height(&self) -> Result<u64, ViewError> {
        Ok(self.meta()?.map_or(0, |(height, _)| height))
    }

    fn write(&self, batch: &ViewBatch) -> Result<(), ViewError> {
        let current = self.applied_height()?;
        if batch.applied_height < current {
            return Err(ViewError::HeightRegression {
                current,
                requested: batch.applied_height,
            });
        }
        let height = |wb: &mut WriteBatch| {
            wb.put_cf(
                self.cf(CF_META),
                KEY_HEIGHT,
                super::encode_meta(batch.applied_height),
            )
        };
        if let Some(loader) = &self.bulk {
            // Every row goes to the loader, one run per batch; the new height only once
            // the run is written.
            loader.add_run(batch)?;
            let mut wb = WriteBatch::default();
            height(&mut wb);
            return self.db.write_opt(wb, &no_wal()).map_err(backend);
        }
        // Sized up front: a batch can be tens of MiB, and growing it by doubling copied
        // it over and over.
        let bytes: usize = batch.ops().map(|op| op.byte_len() + 16).sum();
        let mut wb = WriteBatch::with_capacity_bytes(bytes + 64);
        for op in batch.ops() {
            match op {
                ViewOp::Put { view, key, value } => wb.put_cf(self.cf(view.name()), key, value),
                ViewOp::Delete { view, key } => wb.delete_cf(self.cf(view.name()), key),
            }
        }
        height(&mut wb);
        self.db.write_opt(wb, &no_wal()).map_err(backend)
    }

    fn derive_counts_at_flush(&self) -> Result<(), ViewError> {
        match &self.bulk {
            Some(loader) => {
                loader.derive_counts();
                Ok(())
            }
            None => Err(crate::not_a_bulk_store()),
        }
    }

    fn write_range(
        &self,
        view: View,
        rows: &mut dyn Iterator<Item = (&[u8], &[u8])>,
    ) -> Result<(), ViewError> {
        match &self.bulk {
            // An SST file of its own, ingested at the flush beside the merged runs.
            Some(loader) => loader.add_range(view, rows),
            None => super::write_range_as_batch(self, view, rows),
        }
    }

    fn get(&self, view: View, key: &[u8]) -> Result<Option<Vec<u8>>, ViewError> {
        self.readable(view)?;
        self.db.get_cf(self.cf(view.name()), key).map_err(backend)
    }

    /// RocksDB's batched MultiGet: one snapshot, the keys' blocks looked up together.
    fn get_many(&self, view: View, keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>, ViewError> {
        self.readable(view)?;
        self.db
            .batched_multi_get_cf(self.cf(view.name()), keys, false)
            .into_iter()
            .map(|r| r.map(|v| v.map(|v| v.to_vec())).map_err(backend))
            .collect()
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
        if let Some(loader) = &self.bulk {
            loader.clear()?;
        }
        // One batch over every column family, the height included, so a crash leaves all
        // or nothing cleared: never some views empty under the old height, which the
        // projector would take as current and never refill.
        let mut wb = WriteBatch::default();
        for name in column_families() {
            let cf = self.cf(name);
            // [empty key, last key) and then the last key: exactly the keys present,
            // including the empty key and keys of any length (a fixed end bound such as
            // 1024 bytes of 0xff misses longer keys). The one writer (the projector) is
            // the one that clears, so no key lands past `last` in between.
            let last = self.db.iterator_cf(cf, IteratorMode::End).next();
            if let Some(item) = last {
                let (last, _) = item.map_err(backend)?;
                if !last.is_empty() {
                    wb.delete_range_cf(cf, b"".as_slice(), &last);
                }
                wb.delete_cf(cf, &last);
            }
        }
        self.db.write_opt(wb, &no_wal()).map_err(backend)
    }

    fn flush_in_background(&self) -> Result<(), ViewError> {
        if self.bulk.is_some() {
            return self.flush();
        }
        // The memtables are switched now, together (`atomic_flush`), and written out by
        // RocksDB's background threads: a crash before they are on disk loses them all
        // and keeps the previous flush's batch boundary.
        let cfs: Vec<_> = column_families().map(|n| self.cf(n)).collect();
        let mut options = rocksdb::FlushOptions::default();
        options.set_wait(false);
        self.db.flush_cfs_opt(&cfs, &options).map_err(backend)
    }

    fn flush(&self) -> Result<(), ViewError> {
        // Every column family's memtable to synced SSTs, together (`atomic_flush`).
        let cfs: Vec<_> = column_families().map(|n| self.cf(n)).collect();
        if let Some(loader) = &self.bulk {
            // Ingested files are synced before RocksDB records them.
            loader.finish(&self.db)?;
        }
        self.db
            .flush_cfs_opt(&cfs, &rocksdb::FlushOptions::default())
            .map_err(backend)?;
        if self.bulk.is_some() {
            // A rebuild's views are installed only if all of them are on disk: no
            // memtable may still hold a row.
            for name in column_families() {
                for property in [
                    "rocksdb.num-entries-active-mem-table",
                    "rocksdb.num-immutable-mem-table",
                ] {
                    let left = self
                        .db
                        .property_int_value_cf(self.cf(name), property)
                        .map_err(backend)?
                        .unwrap_or(0);
                    if left != 0 {
                        return Err(ViewError::Backend(format!(
                            "after the flush, {name} still has {property} = {left}"
                        )));
                    }
                }
            }
        }
        Ok(())
    }
}

/// The live store's block cache, shared by every view.
const LIVE_BLOCK_CACHE_BYTES: usize = 512 << 20;

/// Whether files in `dir` (created if missing) can be opened with O_DIRECT: some
/// filesystems refuse it (tmpfs before Linux 6.6), and RocksDB would then fail its first
/// flush.
pub fn direct_io_supported(dir: &Path) -> Result<bool, ViewError> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::create_dir_all(dir)
        .map_err(|e| ViewError::Backend(format!("{}: {e}", dir.display())))?;
    let probe = dir.join("direct-io-probe");
    let supported = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(libc::O_DIRECT)
        .open(&probe)
        .is_ok();
    let _ = std::fs::remove_file(&probe);
    Ok(supported)
}

/// The options of column family `name`; `live_cache` is the live store's block cache.
fn cf_options(name: &str, live_cache: Option<&rocksdb::Cache>) -> Options {
    let mut cf = Options::default();
    cf.set_compression_type(rocksdb::DBCompressionType::Lz4);
    let mut table = match live_cache {
        Some(cache) => medledger_storage::ledger::index::cached_table(cache),
        None => BlockBasedOptions::default(),
    };
    if name == View::Records.name() {
        // A `records` row holds the record's whole state (metadata included), so
        // this memtable fills ~20 times faster than a timeline's, and
        // `atomic_flush` flushes every view when it is full. Larger, it makes the
        // timelines' L0 files fewer and larger, and so their compactions, which
        // rewrite the level below each time (keys by patient land everywhere):
        // ~20% less background CPU per record under sustained submissions.
        cf.set_write_buffer_size(256 << 20);
    }
    let looked_up = [
        View::Records,
        View::Grants,
        View::PatientCounts,
        View::Stats,
    ];
    if looked_up.iter().any(|v| v.name() == name) {
        // The projector looks up every record an event names, most often
        // one that does not exist yet, and the counts each block changes: a bloom
        // filter answers those misses, and keeps a hit from searching every level.
        table.set_bloom_filter(10.0, false);
        // The same in the memtable, which a miss otherwise searches through.
        cf.set_memtable_whole_key_filtering(true);
        cf.set_memtable_prefix_bloom_ratio(0.02);
    }
    cf.set_block_based_table_factory(&table);
    cf
}

/// Every column family: one per view, then `view_meta`.
fn column_families() -> impl Iterator<Item = &'static str> {
    View::ALL.iter().map(|v| v.name()).chain([CF_META])
}

fn no_wal() -> WriteOptions {
    let mut write = WriteOptions::default();
    write.disable_wal(true);
    write
}

impl RocksViewStore {
    fn for_each_from(
        &self,
        view: View,
        prefix: &[u8],
        after: Option<&[u8]>,
        visit: &mut Visitor<'_>,
    ) -> Result<(), ViewError> {
        let mut read = ReadOptions::default();
        if let Some(end) = prefix_end(prefix) {
            read.set_iterate_upper_bound(end);
        }
        let start = match after {
            Some(a) if a >= prefix => a,
            _ => prefix,
        };
        let iter = self.db.iterator_cf_opt(
            self.cf(view.name()),
            read,
            IteratorMode::From(start, Direction::Forward),
        );
        for item in iter {
            let (k, v) = item.map_err(backend)?;
            if !k.starts_with(prefix) {
                break;
            }
            if after.is_some_and(|a| k.as_ref() <= a) {
                continue;
            }
            if visit(&k, &v).is_break() {
                break;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn all_rows(s: &RocksViewStore) -> Vec<super::super::Rows> {
        View::ALL
            .into_iter()
            .map(|view| s.scan(view, b"", None, usize::MAX).unwrap())
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        /// With more runs than one merge may read, the loader merges the earliest first
        /// until the rest fit: the store ends the same as a plain store given the same
        /// batches.
        #[test]
        fn merges_in_several_passes_end_like_a_plain_store(
            merge_runs_max in 2usize..5,
            batches in prop::collection::vec(
                prop::collection::vec(
                    (0..View::ALL.len(), 0u8..12, prop::option::weighted(0.7, 0u8..4)),
                    0..12,
                ),
                1..16,
            )
        ) {
            let dir = tempfile::tempdir().unwrap();
            let plain = RocksViewStore::open(&dir.path().join("plain")).unwrap();
            let path = dir.path().join("bulk");
            let mut bulk = RocksViewStore::open_with(&path, true).unwrap();
            bulk.bulk = Some(SstLoader::new(
                BulkLoader::with_merge_runs_max(path.join(crate::bulk::RUNS_DIR), merge_runs_max)
                    .unwrap(),
            ));
            for (i, ops) in batches.iter().enumerate() {
                let mut b = ViewBatch::new(i as u64 + 1);
                for &(view, k, value) in ops {
                    match value {
                        Some(v) => b.put(View::ALL[view], [b'k', k], vec![v; usize::from(v)]),
                        None => b.delete(View::ALL[view], [b'k', k]),
                    }
                }
                plain.write(&b).unwrap();
                bulk.write(&b).unwrap();
            }
            bulk.flush().unwrap();
            prop_assert_eq!(all_rows(&bulk), all_rows(&plain));
            prop_assert!(!path.join(crate::bulk::RUNS_DIR).exists());
        }
    }
}
