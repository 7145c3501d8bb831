//! The block and transaction index in RocksDB:
//!
//! | column family | key | value |
//! |---|---|---|
//! | `block_loc`  | block number u64 BE | segment u32 LE, offset u64 LE, frame len u32 LE |
//! | `block_hash` | block hash (32 bytes) | block number u64 LE |
//! | `tx`         | tx id (16 bytes) | block number u64 LE, position u32 LE |
//! | `meta`       | `indexed_height` | u64 LE: blocks 0..height are indexed |
//!
//! A block is indexed only after its frame is durable, in one WriteBatch with the new
//! `indexed_height`. The WAL is written but not synced: the segment files are the truth,
//! and on open recovery re-indexes whatever a power loss took from the index.

use std::path::Path;

use rocksdb::{
    BlockBasedOptions, Cache, ColumnFamilyDescriptor, Options, WriteBatch, WriteOptions, DB,
};

use crate::error::StorageError;
use crate::merkle::Hash;

const CF_BLOCK_LOC: &str = "block_loc";
const CF_BLOCK_HASH: &str = "block_hash";
const CF_TX: &str = "tx";
const CF_META: &str = "meta";
const KEY_HEIGHT: &[u8] = b"indexed_height";

/// Where a block's frame is: segment number, byte offset, frame length (header included).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct BlockLocation {
    pub segment: u32,
    pub offset: u64,
    pub len: u32,
}

/// Where a transaction is: block number and position in the block.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct TxLocation {
    pub block: u64,
    pub position: u32,
}

/// What the index records for one block.
pub struct IndexEntry<'a> {
    pub number: u64,
    pub hash: Hash,
    pub location: BlockLocation,
    /// The tx ids of the block's transactions, in order.
    pub tx_ids: &'a [[u8; 16]],
}

/// What RocksDB `db` holds in memory for the column families `cfs`, which share one block
/// cache, by what holds it (`block_cache`, `memtables`, `table_readers`: index and filter
/// blocks kept outside the cache), from its own properties; for `/metrics` (the ledger's
/// index, the views, the search index).
pub fn rocksdb_memory<'a>(
    db: &DB,
    cfs: impl IntoIterator<Item = &'a str>,
) -> Vec<(&'static str, u64)> {
    let cfs: Vec<_> = cfs
        .into_iter()
        .filter_map(|name| db.cf_handle(name))
        .collect();
    let read = |cf, property| {
        db.property_int_value_cf(cf, property)
            .ok()
            .flatten()
            .unwrap_or(0)
    };
    let sum = |property| cfs.iter().map(|cf| read(*cf, property)).sum::<u64>();
    // Each family reports the whole shared cache's usage.
    let block_cache = cfs
        .first()
        .map_or(0, |cf| read(*cf, "rocksdb.block-cache-usage"));
    vec![
        ("block_cache", block_cache),
        ("memtables", sum("rocksdb.cur-size-all-mem-tables")),
        ("table_readers", sum("rocksdb.estimate-table-readers-mem")),
    ]
}

/// The index's memtables, all column families together.
const MEMTABLES_BYTES: usize = 64 << 20;

/// The index's block cache, shared by its column families.
const BLOCK_CACHE_BYTES: usize = 64 << 20;

/// Table options whose data, index and filter blocks all live in `cache`, those of level 0
/// pinned there (every lookup reads them). Outside the cache, the files' index and filter
/// blocks grow with the data (~2-3 MiB a minute in a soak, docs/RELIABILITY.md); inside,
/// the cache bounds them. The ledger's index, the views and the search index use it.
pub fn cached_table(cache: &Cache) -> BlockBasedOptions {
    let mut table = BlockBasedOptions::default();
    table.set_block_cache(cache);
    table.set_cache_index_and_filter_blocks(true);
    table.set_pin_l0_filter_and_index_blocks_in_cache(true);
    table
}

/// A column family's options: its memtable at most a quarter of MEMTABLES_BYTES, its
/// blocks in `cache`.
fn cf_options(cache: &Cache) -> Options {
    let table = cached_table(cache);
    let mut cf = Options::default();
    cf.set_write_buffer_size(MEMTABLES_BYTES / 4);
    cf.set_block_based_table_factory(&table);
    cf
}

/// The RocksDB index of one ledger.
pub struct Index {
    db: DB,
    write_opts: WriteOptions,
}

impl Index {
    /// Bytes RocksDB holds in memory for the index, by what holds them (one block cache
    /// for every column family).
    pub fn memory(&self) -> Vec<(&'static str, u64)> {
        rocksdb_memory(&self.db, [CF_BLOCK_LOC, CF_BLOCK_HASH, CF_TX, CF_META])
    }

    /// Opens (or creates) the index at `path`.
    pub fn open(path: &Path) -> Result<Index, StorageError> {
        super::fs::create_dir_durably(path)
            .map_err(|e| StorageError::io(format!("creating {}", path.display()), e))?;
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        opts.set_max_background_jobs(2);
        // Bounded memory (a soak's RSS grew with RocksDB's defaults: 64 MiB of memtable and
        // a 32 MiB block cache per column family, and the files' index and filter blocks
        // outside any cache, growing with the ledger): the memtables together take at most
        // MEMTABLES_BYTES, and one cache holds every block ([`cached_table`]).
        opts.set_db_write_buffer_size(MEMTABLES_BYTES);
        let cache = Cache::new_lru_cache(BLOCK_CACHE_BYTES);
        let cfs = [CF_BLOCK_LOC, CF_BLOCK_HASH, CF_TX, CF_META]
            .into_iter()
            .map(|name| ColumnFamilyDescriptor::new(name, cf_options(&cache)));
        let db = DB::open_cf_descriptors(&opts, path, cfs).map_err(|e| {
            // RocksDB takes a lock on its LOCK file before it reads anything; it says
            // "While lock file: …" when another process holds it and "lock hold by
            // current process" when this one does.
            let message = e.to_string();
            if message.contains("While lock file") || message.contains("lock hold by current") {
                StorageError::InUse {
                    path: path.join("LOCK").display().to_string(),
                }
            } else {
                StorageError::from(e)
            }
        })?;
        let mut write_opts = WriteOptions::default();
        write_opts.set_sync(false);
        Ok(Index { db, write_opts })
    }

    fn cf(&self, name: &str) -> &rocksdb::ColumnFamily {
        self.db
            .cf_handle(name)
            .expect("column families are created on open")
    }

    /// Blocks `0..height` are indexed.
    pub fn height(&self) -> Result<u64, StorageError> {
        Ok(match self.db.get_cf(self.cf(CF_META), KEY_HEIGHT)? {
            Some(v) => u64_le(&v, "indexed_height")?,
            None => 0,
        })
    }

    /// The location of block `number`, if indexed.
    pub fn location(&self, number: u64) -> Result<Option<BlockLocation>, StorageError> {
        let Some(v) = self
            .db
            .get_cf(self.cf(CF_BLOCK_LOC), number.to_be_bytes())?
        else {
            return Ok(None);
        };
        if v.len() != 16 {
            return Err(StorageError::Index(format!(
                "bad location value for block {number}"
            )));
        }
        Ok(Some(BlockLocation {
            segment: u32::from_le_bytes(v[0..4].try_into().expect("4 bytes")),
            offset: u64::from_le_bytes(v[4..12].try_into().expect("8 bytes")),
            len: u32::from_le_bytes(v[12..16].try_into().expect("4 bytes")),
        }))
    }

    /// The number of the block with this header hash, if indexed.
    pub fn number_of_hash(&self, hash: &Hash) -> Result<Option<u64>, StorageError> {
        self.db
            .get_cf(self.cf(CF_BLOCK_HASH), hash)?
            .map(|v| u64_le(&v, "block_hash"))
            .transpose()
    }

    /// Where the transaction with this id is, if indexed.
    pub fn tx(&self, tx_id: &[u8; 16]) -> Result<Option<TxLocation>, StorageError> {
        let Some(v) = self.db.get_cf(self.cf(CF_TX), tx_id)? else {
            return Ok(None);
        };
        if v.len() != 12 {
            return Err(StorageError::Index("bad tx location value".into()));
        }
        Ok(Some(TxLocation {
            block: u64::from_le_bytes(v[0..8].try_into().expect("8 bytes")),
            position: u32::from_le_bytes(v[8..12].try_into().expect("4 bytes")),
        }))
    }

    /// Indexes consecutive blocks and sets `indexed_height` past the last, atomically.
    pub fn put(&self, entries: &[IndexEntry<'_>]) -> Result<(), StorageError> {
        let Some(last) = entries.last() else {
            return Ok(());
        };
        let (loc_cf, hash_cf, tx_cf) = (
            self.cf(CF_BLOCK_LOC),
            self.cf(CF_BLOCK_HASH),
            self.cf(CF_TX),
        );
        let mut batch = WriteBatch::default();
        for e in entries {
            let mut loc = [0u8; 16];
            loc[0..4].copy_from_slice(&e.location.segment.to_le_bytes());
            loc[4..12].copy_from_slice(&e.location.offset.to_le_bytes());
            loc[12..16].copy_from_slice(&e.location.len.to_le_bytes());
            batch.put_cf(loc_cf, e.number.to_be_bytes(), loc);
            batch.put_cf(hash_cf, e.hash, e.number.to_le_bytes());
            let mut v = [0u8; 12];
            v[0..8].copy_from_slice(&e.number.to_le_bytes());
            for (pos, id) in e.tx_ids.iter().enumerate() {
                v[8..12].copy_from_slice(&(pos as u32).to_le_bytes());
                batch.put_cf(tx_cf, id, v);
            }
        }
        batch.put_cf(
            self.cf(CF_META),
            KEY_HEIGHT,
            (last.number + 1).to_le_bytes(),
        );
        self.db.write_opt(batch, &self.write_opts)?;
        Ok(())
    }

    /// Flushes memtables and syncs the WAL, so a clean close needs no re-indexing.
    pub fn flush(&self) -> Result<(), StorageError> {
        self.db.flush_wal(true)?;
        Ok(())
    }
}

fn u64_le(v: &[u8], what: &str) -> Result<u64, StorageError> {
    v.try_into()
        .map(u64::from_le_bytes)
        .map_err(|_| StorageError::Index(format!("bad {what} value")))
}
