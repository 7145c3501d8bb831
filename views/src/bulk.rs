//! Bulk loading for a rebuild's store, the same for every backend.
//!
//! A rebuild projects into an empty store and reads nothing back (its partitions keep
//! the states the contract needs), so its rows skip the store's write path: each batch's
//! rows of each view are appended, sorted, to a run file of their own, and
//! [`BulkLoader::merge_views`] merges every view's runs in key order into a [`RowSink`]
//! the store gives: for RocksDB, sorted, non-overlapping SST files that RocksDB ingests
//! into its bottom level (`rocks::sst`, which also writes each key range
//! ([`ViewStore::write_range`]) at once as an SST file of its own); for sled, inserts in
//! key order (sled writes its key ranges as runs).
//!
//! Each row is then written into an SST once and compressed once: no memtable insert,
//! no level-0 flush, no compaction. Through the memtables the views cost a rebuild more
//! CPU than its projection did.
//!
//! Runs are scratch files inside the store's directory (`bulk-runs/`), never synced: a
//! rebuild that stops before the store's flush leaves a store that is thrown away whole.
//! Until then, the store refuses reads rather than answer from part of its rows.
//!
//! Run file: rows in ascending key order, one row per key (the batch's last op on it),
//! each `tag (1 put, 0 delete) | key length (u32 LE) | value length (u32 LE) | key |
//! value`. Merging keeps, for each key, the row of the latest run; a delete that wins is
//! dropped, since the store held nothing underneath. A merge reads at most
//! [`MERGE_RUNS_MAX`] runs at once (one open file each); with more, the earliest runs
//! are merged first into one.
//!
//! [`ViewStore::write_range`]: super::ViewStore::write_range

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

use super::derive::Deriver;
use super::{View, ViewBatch, ViewError, ViewOp};
/// Buffer of each run file being read by a merge: a merge reads every run of a view at
/// once (hundreds for a long ledger).
const READ_BUFFER_BYTES: usize = 128 << 10;
/// Most runs one merge reads at once: two views merge at a time, so a rebuild holds at
/// most twice this many run files open (a process often may open only 1,024 files).
/// 10M events make ~270 runs per view.
const MERGE_RUNS_MAX: usize = 256;
/// Buffer of a run file being written.
const WRITE_BUFFER_BYTES: usize = 256 << 10;

/// The run files of a bulk store's loaded views.
pub(crate) struct BulkLoader {
    dir: PathBuf,
    /// Most runs one merge reads at once ([`MERGE_RUNS_MAX`]; less in tests).
    merge_runs_max: usize,
    /// Runs written so far: run `n` of view `v` is `run_path(n, v)` (absent when the
    /// batch had no row of `v`).
    runs: Mutex<u32>,
    /// Whether the merge derives the count views from the timelines it merges
    /// ([`BulkLoader::derive_counts`]).
    derive_counts: AtomicBool,
}

fn io(what: &Path) -> impl FnOnce(std::io::Error) -> ViewError + '_ {
    move |e| ViewError::Backend(format!("{}: {e}", what.display()))
}

/// Why a bulk store refuses to read `view`: it is still being loaded, and would answer
/// from part of its rows.
pub(crate) fn not_readable_yet(view: View) -> ViewError {
    ViewError::Backend(format!(
        "the {} view of a bulk store being loaded is readable after its flush",
        view.name()
    ))
}

/// Where a bulk store keeps its runs, inside the store's directory.
pub(crate) const RUNS_DIR: &str = "bulk-runs";

impl BulkLoader {
    /// The loader of a bulk store at `store_dir` whose stored height and layout are
    /// `meta`, keeping its runs in [`RUNS_DIR`] there (emptied; created with the first
    /// run, removed when the runs are merged). Bulk loading writes rows straight into
    /// place, with no tombstones: only right for a store that holds nothing yet, so a
    /// store with views is refused.
    pub(crate) fn for_store(store_dir: &Path, meta: Option<(u64, u32)>) -> Result<Self, ViewError> {
        if let Some((height, _)) = meta.filter(|(height, _)| *height > 0) {
            return Err(ViewError::Backend(format!(
                "{}: a bulk store is loaded from empty, and this one holds views up to \
                 height {height}",
                store_dir.display()
            )));
        }
        Self::with_merge_runs_max(store_dir.join(RUNS_DIR), MERGE_RUNS_MAX)
    }

    /// A loader keeping its runs in `dir`, merging at most `merge_runs_max` (≥ 2) runs at
    /// once ([`BulkLoader::for_store`] checks the store, and merges up to
    /// [`MERGE_RUNS_MAX`]).
    pub(crate) fn with_merge_runs_max(
        dir: PathBuf,
        merge_runs_max: usize,
    ) -> Result<Self, ViewError> {
        assert!(merge_runs_max >= 2, "a merge reads at least two runs");
        let loader = BulkLoader {
            dir,
            merge_runs_max,
            runs: Mutex::new(0),
            derive_counts: AtomicBool::new(false),
        };
        loader.remove_runs()?;
        Ok(loader)
    }

    /// Makes [`BulkLoader::merge_views`] derive the count views from the timelines it
    /// merges (views/src/derive.rs) instead of loading them from runs, which must hold
    /// none of their rows.
    pub(crate) fn derive_counts(&self) {
        self.derive_counts.store(true, Ordering::Release);
    }

    /// The directory of the runs (it may not exist yet).
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// The directory of the runs, created if missing: a store keeps its own scratch files
    /// there too (the RocksDB store's SST files), removed with the runs.
    pub(crate) fn scratch_dir(&self) -> Result<&Path, ViewError> {
        std::fs::create_dir_all(&self.dir).map_err(io(&self.dir))?;
        Ok(&self.dir)
    }

    fn run_path(&self, run: u32, view: View) -> PathBuf {
        self.dir.join(format!("run-{run:06}-{:02}", view as u8))
    }

    /// Runs not yet merged into the store: reads of the loaded views must wait for the
    /// store's flush.
    pub(crate) fn pending(&self) -> bool {
        *self.runs.lock().expect("bulk loader lock") > 0
    }

    /// Refuses a read of `view` while runs are [`pending`](BulkLoader::pending): the
    /// store would answer from part of its rows.
    pub(crate) fn check_readable(&self, view: View) -> Result<(), ViewError> {
        if self.pending() {
            return Err(not_readable_yet(view));
        }
        Ok(())
    }

    /// Writes one run: the rows of `batch` in key order with one op per key (as
    /// [`ViewBatch::sort_by_key`] leaves them; a batch not sorted is sorted on a copy),
    /// each view's rows in a file of their own. Runs may be
    /// written concurrently (a rebuild's partitions are projected on every core), as
    /// long as they never hold the same key; a later run wins a key over an earlier one.
    pub(crate) fn add_run(&self, batch: &ViewBatch) -> Result<(), ViewError> {
        if !batch.is_sorted_unique() {
            // A rebuild's batches come sorted; others are sorted on a copy.
            let mut sorted = batch.clone();
            sorted.sort_by_key();
            return self.add_run(&sorted);
        }
        let run = {
            let mut runs = self.runs.lock().expect("bulk loader lock");
            if *runs == 0 {
                std::fs::create_dir_all(&self.dir).map_err(io(&self.dir))?;
            }
            *runs += 1;
            *runs - 1
        };
        let mut ops = batch.ops().peekable();
        while let Some(view) = ops.peek().map(ViewOp::view) {
            let path = self.run_path(run, view);
            let file = File::create(&path).map_err(io(&path))?;
            let mut out = BufWriter::with_capacity(WRITE_BUFFER_BYTES, file);
            while let Some(op) = ops.next_if(|op| op.view() == view) {
                let (key, value) = match op {
                    ViewOp::Put { key, value, .. } => (key, Some(value)),
                    ViewOp::Delete { key, .. } => (key, None),
                };
                write_row(&mut out, key, value).map_err(io(&path))?;
            }
            out.flush().map_err(io(&path))?;
        }
        Ok(())
    }

    /// Merges every view's runs, in key order, into the sink `sink` makes for the view,
    /// and deletes them; returns what each view's sink finished with. The largest views
    /// go first, each taken by the next free thread (one per core): the merge ends about
    /// when the largest view's does, not when a split of the views in halves left two
    /// large ones on one thread. The runs are gone once merged: [`BulkLoader::clear`]
    /// forgets them.
    pub(crate) fn merge_views<S: RowSink>(
        &self,
        sink: impl Fn(View) -> Result<S, ViewError> + Sync,
    ) -> Result<Vec<(View, S::Done)>, ViewError> {
        let runs = *self.runs.lock().expect("bulk loader lock");
        let derive = self.derive_counts.load(Ordering::Acquire);
        if derive {
            for view in View::ALL.into_iter().filter(|v| Deriver::is_derived(*v)) {
                if (0..runs).any(|run| self.run_path(run, view).exists()) {
                    return Err(ViewError::Backend(format!(
                        "the {} view is derived at the flush, and rows of it were loaded",
                        view.name()
                    )));
                }
            }
        }
        let mut order: Vec<(u64, View)> = View::ALL
            .into_iter()
            .filter(|view| !(derive && Deriver::is_derived(*view)))
            .map(|view| {
                let bytes = (0..runs)
                    .filter_map(|run| std::fs::metadata(self.run_path(run, view)).ok())
                    .map(|m| m.len())
                    .sum();
                (bytes, view)
            })
            .collect();
        order.sort_by(|a, b| b.cmp(a));
        let next = AtomicUsize::new(0);
        let threads = rayon::current_num_threads().clamp(1, order.len());
        std::thread::scope(|scope| {
            let workers: Vec<_> = (0..threads)
                .map(|_| {
                    scope.spawn(|| {
                        let mut done = Vec::new();
                        while let Some(&(_, view)) = order.get(next.fetch_add(1, Ordering::Relaxed))
                        {
                            let mut out = sink(view)?;
                            match Deriver::fed_by(view).filter(|_| derive) {
                                None => {
                                    self.merge(view, runs, &mut |key, value| out.put(key, value))?
                                }
                                Some(mut deriver) => {
                                    let counts_view = deriver.view();
                                    let mut counts = sink(counts_view)?;
                                    let mut put = |k: &[u8], v: &[u8]| counts.put(k, v);
                                    self.merge(view, runs, &mut |key, value| {
                                        out.put(key, value)?;
                                        deriver.row(key, value, &mut put)
                                    })?;
                                    deriver.finish(&mut put)?;
                                    done.push((counts_view, counts.finish()?));
                                }
                            }
                            done.push((view, out.finish()?));
                        }
                        Ok::<_, ViewError>(done)
                    })
                })
                .collect();
            let mut merged = Vec::new();
            for worker in workers {
                merged.extend(worker.join().expect("a merge thread panicked")?);
            }
            Ok(merged)
        })
    }

    /// Forgets every run (the store is being cleared).
    pub(crate) fn clear(&self) -> Result<(), ViewError> {
        let mut runs = self.runs.lock().expect("bulk loader lock");
        *runs = 0;
        self.remove_runs()
    }

    fn remove_runs(&self) -> Result<(), ViewError> {
        match std::fs::remove_dir_all(&self.dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(&self.dir)(e)),
            _ => Ok(()),
        }
    }

    /// Merges `view`'s runs `0..runs`, calling `emit` with each row in key order, then
    /// deletes the runs.
    ///
    /// A merge reads all its runs at once, so it merges at most `merge_runs_max` of them
    /// (one open file each): with more, the earliest are first merged into one run, as few
    /// as bring the count down to `merge_runs_max`.
    fn merge(&self, view: View, runs: u32, emit: &mut Emit<'_>) -> Result<(), ViewError> {
        let mut paths: Vec<PathBuf> = (0..runs)
            .map(|run| self.run_path(run, view))
            .filter(|path| path.exists())
            .collect();
        let mut merged = 0;
        while paths.len() > self.merge_runs_max {
            let n = self
                .merge_runs_max
                .min(paths.len() - self.merge_runs_max + 1);
            let path = self
                .dir
                .join(format!("merged-{:02}-{merged:06}", view as u8));
            merged += 1;
            let file = File::create(&path).map_err(io(&path))?;
            let mut out = BufWriter::with_capacity(WRITE_BUFFER_BYTES, file);
            merge_runs(&paths[..n], |key, value| {
                write_row(&mut out, key, Some(value)).map_err(io(&path))
            })?;
            out.flush().map_err(io(&path))?;
            for done in paths.splice(..n, [path.clone()]) {
                std::fs::remove_file(&done).map_err(io(&done))?;
            }
        }
        merge_runs(&paths, emit)?;
        // The view's runs go as soon as it is merged: a rebuild's disk holds a view's
        // rows twice at most, not every view's.
        for done in &paths {
            std::fs::remove_file(done).map_err(io(done))?;
        }
        Ok(())
    }
}

/// Merges the runs at `paths` (earliest first) in key order, calling `emit` with the value
/// of each key whose row in the latest run that has it is a put. A delete that wins is
/// dropped: the runs merged are always the earliest ones, and the store was empty, so it
/// hides nothing.
fn merge_runs(
    paths: &[PathBuf],
    mut emit: impl FnMut(&[u8], &[u8]) -> Result<(), ViewError>,
) -> Result<(), ViewError> {
    let mut readers = Vec::with_capacity(paths.len());
    for (run, path) in paths.iter().enumerate() {
        let file = File::open(path).map_err(io(path))?;
        let mut reader = RunReader {
            input: BufReader::with_capacity(READ_BUFFER_BYTES, file),
            run,
            head: 0,
            key: Vec::new(),
            value: Vec::new(),
            put: false,
            done: false,
        };
        reader.advance().map_err(io(path))?;
        if !reader.done {
            readers.push(reader);
        }
    }
    let mut heap = MergeHeap::new(readers);
    let mut key = Vec::new();
    while let Some(top) = heap.top() {
        // The heap's top holds the smallest key, from the latest run among equals.
        let winner = &heap.readers[top];
        if winner.put {
            emit(&winner.key, &winner.value)?;
        }
        let head = winner.head;
        key.clear();
        key.extend_from_slice(&winner.key);
        // Drop every older row of the same key, then move on.
        while let Some(top) = heap.top() {
            let next = &heap.readers[top];
            if next.head != head || next.key != key {
                break;
            }
            let run = heap.readers[top].run;
            heap.advance_top().map_err(|e| io(&paths[run])(e))?;
        }
    }
    Ok(())
}

fn write_row(out: &mut impl Write, key: &[u8], value: Option<&[u8]>) -> std::io::Result<()> {
    let len = |n: usize| u32::try_from(n).expect("view keys and values are < 4 GiB");
    let mut head = [0u8; 9];
    head[0] = u8::from(value.is_some());
    head[1..5].copy_from_slice(&len(key.len()).to_le_bytes());
    head[5..9].copy_from_slice(&len(value.map_or(0, <[u8]>::len)).to_le_bytes());
    out.write_all(&head)?;
    out.write_all(key)?;
    out.write_all(value.unwrap_or_default())
}

/// The current row of one run being merged.
struct RunReader {
    input: BufReader<File>,
    /// The run's place among those merged: a later run wins a key.
    run: usize,
    /// The key's first 16 bytes as a big-endian integer (zero-padded): rows are compared
    /// by it first, and by their whole keys only when it ties (memcmp of keys that share
    /// long prefixes was a fifth of a merge).
    head: u128,
    key: Vec<u8>,
    value: Vec<u8>,
    put: bool,
    done: bool,
}

impl RunReader {
    fn advance(&mut self) -> std::io::Result<()> {
        let mut head = [0u8; 9];
        match self.input.read_exact(&mut head) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                self.done = true;
                return Ok(());
            }
            Err(e) => return Err(e),
        }
        let len = |b: &[u8]| u32::from_le_bytes(b.try_into().expect("4 bytes")) as usize;
        self.put = head[0] == 1;
        self.key.resize(len(&head[1..5]), 0);
        self.input.read_exact(&mut self.key)?;
        let mut first = [0u8; 16];
        let n = self.key.len().min(16);
        first[..n].copy_from_slice(&self.key[..n]);
        self.head = u128::from_be_bytes(first);
        self.value.resize(len(&head[5..9]), 0);
        self.input.read_exact(&mut self.value)
    }

    /// Merge order: smaller key first, and among equal keys the latest run first.
    fn before(&self, other: &RunReader) -> bool {
        match self
            .head
            .cmp(&other.head)
            .then_with(|| self.key.cmp(&other.key))
        {
            std::cmp::Ordering::Equal => self.run > other.run,
            ord => ord.is_lt(),
        }
    }
}

/// A binary min-heap of run readers by [`RunReader::before`].
struct MergeHeap {
    readers: Vec<RunReader>,
    /// Indices into `readers`; `heap[0]` is the first in merge order.
    heap: Vec<usize>,
}

impl MergeHeap {
    fn new(readers: Vec<RunReader>) -> Self {
        let mut heap = MergeHeap {
            heap: (0..readers.len()).collect(),
            readers,
        };
        for i in (0..heap.heap.len() / 2).rev() {
            heap.sift_down(i);
        }
        heap
    }

    fn top(&self) -> Option<usize> {
        self.heap.first().copied()
    }

    /// Moves the top reader to its next row (dropping it when it has none).
    fn advance_top(&mut self) -> std::io::Result<()> {
        let top = self.heap[0];
        self.readers[top].advance()?;
        if self.readers[top].done {
            let last = self.heap.pop().expect("the heap has a top");
            if self.heap.is_empty() {
                return Ok(());
            }
            self.heap[0] = last;
        }
        self.sift_down(0);
        Ok(())
    }

    fn sift_down(&mut self, mut i: usize) {
        loop {
            let (l, r) = (2 * i + 1, 2 * i + 2);
            let mut first = i;
            for c in [l, r] {
                if c < self.heap.len()
                    && self.readers[self.heap[c]].before(&self.readers[self.heap[first]])
                {
                    first = c;
                }
            }
            if first == i {
                return;
            }
            self.heap.swap(i, first);
            i = first;
        }
    }
}

/// Takes a merge's rows, one after the other.
type Emit<'a> = dyn FnMut(&[u8], &[u8]) -> Result<(), ViewError> + 'a;

/// Where [`BulkLoader::merge_views`] writes a view's rows, in key order.
pub(crate) trait RowSink {
    /// What the sink ends with.
    type Done: Send;
    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), ViewError>;
    fn finish(self) -> Result<Self::Done, ViewError>;
}
