//! The SST files of a bulk RocksDB store (a rebuild's): the merged runs, written as SST
//! files by [`SstOutput`], and the key ranges ([`ViewStore::write_range`]), each written
//! at once as an SST file of its own; [`SstLoader::finish`] ingests them all into the
//! bottom level at the store's flush.
//!
//! Here, beside the RocksDB store, and not in the `bulk` module: the runs and their merge
//! are the same for every store, and only this store writes SST files.
//!
//! [`ViewStore::write_range`]: crate::ViewStore::write_range

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use rocksdb::{IngestExternalFileOptions, Options, SstFileWriter, DB};

use super::{backend, cf_options};
use crate::bulk::{self, BulkLoader, RowSink};
use crate::{View, ViewBatch, ViewError};

/// Bytes of an SST file before the merge starts the next one (RocksDB's default target
/// file size).
const SST_FILE_BYTES: u64 = 64 << 20;

/// One key range's SST file ([`SstLoader::add_range`]).
struct RangeFile {
    view: View,
    path: PathBuf,
    /// Its first and last keys: the ranges of a view must not overlap.
    first_key: Vec<u8>,
    last_key: Vec<u8>,
}

/// What a bulk RocksDB store loads: the runs of its batches, and its key ranges as SST
/// files of their own.
pub(super) struct SstLoader {
    runs: BulkLoader,
    /// The SST files of the ranges written so far.
    ranges: Mutex<Vec<RangeFile>>,
    /// The next range's number, for its file's name.
    next_range: AtomicUsize,
}

impl SstLoader {
    /// A loader that writes the store's batches as `runs`, and its ranges as SST files in
    /// the runs' directory.
    pub(super) fn new(runs: BulkLoader) -> Self {
        SstLoader {
            runs,
            ranges: Mutex::new(Vec::new()),
            next_range: AtomicUsize::new(0),
        }
    }

    /// Refuses a read of `view` while rows are not yet in the store: it would answer
    /// from part of them.
    pub(super) fn check_readable(&self, view: View) -> Result<(), ViewError> {
        if !self.ranges.lock().expect("SST loader lock").is_empty() {
            return Err(bulk::not_readable_yet(view));
        }
        self.runs.check_readable(view)
    }

    /// Derives the count views at [`SstLoader::finish`] ([`BulkLoader::derive_counts`]).
    pub(super) fn derive_counts(&self) {
        self.runs.derive_counts();
    }

    /// Writes one batch's rows as a run ([`BulkLoader::add_run`]).
    pub(super) fn add_run(&self, batch: &ViewBatch) -> Result<(), ViewError> {
        self.runs.add_run(batch)
    }

    /// Writes a key range (see [`ViewStore::write_range`]): `rows` of `view`, in key
    /// order, into an SST file of its own, ingested by [`SstLoader::finish`] beside the
    /// merged runs, never merged with anything. (Ranges that overlapped would still give
    /// the right views, each key being written once, but RocksDB would put them in level
    /// 0 and compact them: debug builds check that none do.)
    ///
    /// [`ViewStore::write_range`]: crate::ViewStore::write_range
    pub(super) fn add_range(
        &self,
        view: View,
        rows: &mut dyn Iterator<Item = (&[u8], &[u8])>,
    ) -> Result<(), ViewError> {
        let mut rows = rows.peekable();
        let Some(&(first, _)) = rows.peek() else {
            return Ok(());
        };
        let first_key = first.to_vec();
        let range = self.next_range.fetch_add(1, Ordering::Relaxed);
        let path = self
            .runs
            .scratch_dir()?
            .join(format!("range-{range:07}-{}.sst", view.name()));
        let options = cf_options(view.name(), None);
        let mut writer = SstFileWriter::create(&options);
        writer.open(&path).map_err(backend)?;
        let mut last: &[u8] = &first_key;
        for (key, value) in rows {
            // RocksDB checks the order too, and fails the file.
            writer.put(key, value).map_err(backend)?;
            last = key;
        }
        let last_key = last.to_vec();
        writer.finish().map_err(backend)?;
        self.ranges
            .lock()
            .expect("SST loader lock")
            .push(RangeFile {
                view,
                path,
                first_key,
                last_key,
            });
        Ok(())
    }

    /// Merges every view's runs into SST files, written with the view's column family
    /// options, and ingests them, and the ranges' files, into `db`; then deletes the
    /// runs.
    pub(super) fn finish(&self, db: &DB) -> Result<(), ViewError> {
        let options: Vec<Options> = View::ALL
            .into_iter()
            .map(|view| cf_options(view.name(), None))
            .collect();
        let files = self.runs.merge_views(|view| {
            Ok(SstOutput {
                options: &options[view as usize - 1],
                dir: self.runs.dir(),
                view,
                writer: None,
                paths: Vec::new(),
            })
        })?;
        let mut ranges = self.ranges.lock().expect("SST loader lock");
        let mut by_view: Vec<(View, Vec<PathBuf>)> = View::ALL
            .into_iter()
            .map(|view| (view, Vec::new()))
            .collect();
        for (view, paths) in files {
            by_view[view as usize - 1].1.extend(paths);
        }
        ranges.sort_by(|a, b| (a.view, &a.first_key).cmp(&(b.view, &b.first_key)));
        debug_assert!(
            ranges
                .windows(2)
                .all(|w| w[0].view != w[1].view || w[0].last_key < w[1].first_key),
            "the ranges of a view overlap"
        );
        for range in ranges.drain(..) {
            by_view[range.view as usize - 1].1.push(range.path);
        }
        drop(ranges);
        let mut ingest = IngestExternalFileOptions::default();
        ingest.set_move_files(true);
        for (view, paths) in by_view {
            if paths.is_empty() {
                continue;
            }
            let cf = db
                .cf_handle(view.name())
                .expect("every view's column family is created on open");
            db.ingest_external_file_cf_opts(cf, &ingest, paths)
                .map_err(backend)?;
        }
        self.clear()
    }

    /// Forgets every run and range (the store is being cleared, or they are ingested).
    pub(super) fn clear(&self) -> Result<(), ViewError> {
        self.ranges.lock().expect("SST loader lock").clear();
        self.runs.clear()
    }
}

/// The SST files a merge writes, started one after the other.
struct SstOutput<'a> {
    options: &'a Options,
    dir: &'a Path,
    view: View,
    writer: Option<SstFileWriter<'a>>,
    paths: Vec<PathBuf>,
}

impl RowSink for SstOutput<'_> {
    type Done = Vec<PathBuf>;

    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), ViewError> {
        if self.writer.is_none() {
            let path = self
                .dir
                .join(format!("{}-{:04}.sst", self.view.name(), self.paths.len()));
            let writer = SstFileWriter::create(self.options);
            writer.open(&path).map_err(backend)?;
            self.writer = Some(writer);
            self.paths.push(path);
        }
        let writer = self.writer.as_mut().expect("opened above");
        writer.put(key, value).map_err(backend)?;
        if writer.file_size() >= SST_FILE_BYTES {
            self.close()?;
        }
        Ok(())
    }

    fn finish(mut self) -> Result<Vec<PathBuf>, ViewError> {
        self.close()?;
        Ok(self.paths)
    }
}

impl SstOutput<'_> {
    fn close(&mut self) -> Result<(), ViewError> {
        if let Some(mut writer) = self.writer.take() {
            writer.finish().map_err(backend)?;
        }
        Ok(())
    }
}
