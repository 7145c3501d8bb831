//! The RocksDB view store: one column family per view, plus `view_meta` for the applied
//! height, written in one `WriteBatch` (atomic across column families through the WAL).
//! The WAL is not synced per batch: views are derived data, and after a power loss the
//! store comes back at an earlier block boundary and the projector catches up.

use std::ops::ControlFlow;
use std::path::Path;

use rocksdb::{
    ColumnFamilyDescriptor, Direction, IteratorMode, Options, ReadOptions, WriteBatch, DB,
};

use super::{prefix_end, Rows, View, ViewBatch, ViewError, ViewOp, ViewStore, Visitor};

const CF_META: &str = "view_meta";
const KEY_HEIGHT: &[u8] = b"applied_height";

/// Views in RocksDB.
pub struct RocksViewStore {
    db: DB,
}

fn backend(e: rocksdb::Error) -> ViewError {
    ViewError::Backend(e.into_string())
}

impl RocksViewStore {
    /// Opens (or creates) the store at `path`.
    pub fn open(path: &Path) -> Result<Self, ViewError> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        opts.set_max_background_jobs(2);
        let cfs = View::ALL
            .iter()
            .map(|v| v.name())
            .chain([CF_META])
            .map(|name| {
                let mut cf = Options::default();
                cf.set_compression_type(rocksdb::DBCompressionType::Lz4);
                ColumnFamilyDescriptor::new(name, cf)
            });
        let db = DB::open_cf_descriptors(&opts, path, cfs).map_err(backend)?;
        Ok(RocksViewStore { db })
    }

    fn cf(&self, name: &str) -> &rocksdb::ColumnFamily {
        self.db
            .cf_handle(name)
            .expect("every view's column family is created on open")
    }
}

impl ViewStore for RocksViewStore {
    fn applied_height(&self) -> Result<u64, ViewError> {
        match self
            .db
            .get_cf(self.cf(CF_META), KEY_HEIGHT)
            .map_err(backend)?
        {
            None => Ok(0),
            Some(v) => v
                .as_slice()
                .try_into()
                .map(u64::from_le_bytes)
                .map_err(|_| ViewError::Malformed {
                    what: "applied height",
                }),
        }
    }

    fn write(&self, batch: &ViewBatch) -> Result<(), ViewError> {
        let current = self.applied_height()?;
        if batch.applied_height < current {
            return Err(ViewError::HeightRegression {
                current,
                requested: batch.applied_height,
            });
        }
        let mut wb = WriteBatch::default();
        for op in &batch.ops {
            match op {
                ViewOp::Put { view, key, value } => wb.put_cf(self.cf(view.name()), key, value),
                ViewOp::Delete { view, key } => wb.delete_cf(self.cf(view.name()), key),
            }
        }
        wb.put_cf(
            self.cf(CF_META),
            KEY_HEIGHT,
            batch.applied_height.to_le_bytes(),
        );
        self.db.write(wb).map_err(backend)
    }

    fn get(&self, view: View, key: &[u8]) -> Result<Option<Vec<u8>>, ViewError> {
        self.db.get_cf(self.cf(view.name()), key).map_err(backend)
    }

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
        self.for_each_from(view, prefix, after, &mut |k, v| {
            rows.push((k.to_vec(), v.to_vec()));
            if rows.len() >= limit {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })?;
        Ok(rows)
    }

    fn for_each(
        &self,
        view: View,
        prefix: &[u8],
        visit: &mut Visitor<'_>,
    ) -> Result<(), ViewError> {
        self.for_each_from(view, prefix, None, visit)
    }

    fn clear(&self) -> Result<(), ViewError> {
        for name in View::ALL.iter().map(|v| v.name()).chain([CF_META]) {
            let cf = self.cf(name);
            // Every key is shorter than this bound: views key by ids of at most 128 bytes
            // plus fixed-width parts.
            let mut wb = WriteBatch::default();
            wb.delete_range_cf(cf, [0u8].as_slice(), [0xffu8; 1024].as_slice());
            self.db.write(wb).map_err(backend)?;
        }
        Ok(())
    }

    fn flush(&self) -> Result<(), ViewError> {
        self.db.flush_wal(true).map_err(backend)
    }
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
