//! Rebuilding the views from the ledger, and checking live views against a rebuild.
//!
//! A rebuild never touches the live views until it is complete: it projects every block
//! into `views-<backend>.rebuild/` (see [`project_all`]: blocks read and checked in
//! parallel with rayon, transactions partitioned by what they are about, partitions
//! projected on every core, views written in large batches without a WAL), makes that
//! durable, then swaps directories: live → `.old`, `.rebuild` → live, fsync the data dir,
//! delete `.old`. [`open_views`] finishes or undoes a swap a crash interrupted. Whatever
//! state a crash leaves, the views opened are consistent with their applied height, and
//! the projector catches up.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rayon::prelude::*;
use serde::Serialize;
use sha2::{Digest, Sha256};

use medledger_chaincode::{Envelope, Subject};
use medledger_storage::{BlockFrame, Ledger, StorageError};
use medledger_views::project::Projection;
use medledger_views::{Backend, View, ViewBatch, ViewError, ViewStore};

/// Blocks read and decoded together by the rayon pool.
const READ_CHUNK_BLOCKS: u64 = 64;
/// Ops buffered before a rebuild writes a batch.
pub const WRITE_BATCH_OPS: usize = 256 * 1024;
/// Envelope bytes a rebuild's partition holds, about: a partition's records are in memory
/// while it is projected, one partition per core.
pub const PARTITION_BYTES: u64 = 32 << 20;
/// Most partitions a rebuild makes (one open file each while it reads the ledger).
/// Beyond 16 GiB of ledger, partitions grow past [`PARTITION_BYTES`].
const PARTITIONS_MAX: u64 = 512;
/// Buffer of each partition file being written, and read.
const PARTITION_BUFFER_BYTES: usize = 64 << 10;

/// What a rebuild did.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct RebuildSummary {
    pub events: u64,
    pub rejected: u64,
    pub blocks: u64,
    /// For [`rebuild`], from opening the scratch store until the views are flushed.
    pub seconds: f64,
    pub events_per_sec: f64,
}

impl RebuildSummary {
    /// This summary over `seconds` (events per second follow).
    fn timed(self, seconds: f64) -> Self {
        RebuildSummary {
            seconds,
            events_per_sec: self.events as f64 / seconds.max(1e-9),
            ..self
        }
    }
}

/// Progress so far, for a progress bar.
#[derive(Clone, Copy, Debug)]
pub struct Progress {
    pub stage: Stage,
    /// Blocks read, or partitions projected, of `total`.
    pub done: u64,
    pub total: u64,
    /// Events read, or projected.
    pub events: u64,
}

/// The two stages of [`project_all`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// Reading the blocks into partitions.
    Reading,
    /// Projecting the partitions.
    Projecting,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Reading => "reading",
            Stage::Projecting => "projecting",
        }
    }

    /// What [`Progress::done`] counts.
    pub fn unit(self) -> &'static str {
        match self {
            Stage::Reading => "blocks",
            Stage::Projecting => "partitions",
        }
    }
}

/// How [`project_all`] goes: batch and partition sizes, and where its partitions are
/// kept while it runs.
#[derive(Clone, Copy, Debug)]
pub struct Plan<'a> {
    /// A scratch directory (emptied, then removed).
    pub work_dir: &'a Path,
    /// Ops in a batch ([`WRITE_BATCH_OPS`]).
    pub batch_ops: usize,
    /// Envelope bytes in a partition, about ([`PARTITION_BYTES`]).
    pub partition_bytes: u64,
}

/// Why a rebuild or a check failed.
#[derive(Debug, thiserror::Error)]
pub enum RebuildError {
    #[error(transparent)]
    Ledger(#[from] StorageError),
    #[error(transparent)]
    Views(#[from] ViewError),
    #[error("a rebuild projects into empty views, and these are at height {height}")]
    NotEmpty { height: u64 },
    #[error(
        "not enough free space in {dir}: rebuilding the views of a ledger of {ledger} bytes \
         needs at least {needed} bytes (its partitions, about the ledger's size, and the \
         new views), and {available} are free"
    )]
    NoSpace {
        dir: String,
        ledger: u64,
        needed: u64,
        available: u64,
    },
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> RebuildError {
    let what = what.into();
    move |source| RebuildError::Io { what, source }
}

/// The live views' directory in `data_dir`.
pub fn views_dir(data_dir: &Path, backend: Backend) -> PathBuf {
    data_dir.join(backend.dir_name())
}

fn sibling(data_dir: &Path, backend: Backend, suffix: &str) -> PathBuf {
    data_dir.join(format!("{}.{suffix}", backend.dir_name()))
}

/// Opens the live views of `backend` in `data_dir`, first finishing or undoing a rebuild
/// swap that a crash interrupted, and removing what a crashed rebuild or
/// `verify --views` left. The caller holds `data_dir`'s ledger open.
pub fn open_views(data_dir: &Path, backend: Backend) -> Result<Arc<dyn ViewStore>, RebuildError> {
    let live = views_dir(data_dir, backend);
    let old = sibling(data_dir, backend, "old");
    if !live.exists() && old.exists() {
        // Crashed between the two renames: the old views are whole; the projector will
        // catch them up.
        std::fs::rename(&old, &live).map_err(io(format!("restoring {}", old.display())))?;
        sync_dir(data_dir)?;
    }
    // What a crashed swap, rebuild or `verify --views` left: the old views, the scratch
    // stores and their partitions (about the ledger's size). Every caller holds the
    // ledger open, whose index lock keeps a second process, and so a running verify, out.
    for suffix in ["old", "rebuild", "rebuild-parts", "verify", "verify-parts"] {
        remove_dir(&sibling(data_dir, backend, suffix))?;
    }
    Ok(Arc::from(backend.open(&live, false)?))
}

/// Projects blocks `0..to` of `ledger` into `store`, which must be empty, and brings it
/// to height `to`. Does not flush.
///
/// Two stages, each on every core:
/// 1. *Reading*: the blocks are read and checked in parallel, and each transaction is
///    appended to one of the partition files in `plan.work_dir`, chosen by its
///    [`Subject`] (the record, or the patient and grantee of a grant), read from its
///    bytes without decoding them. Partitions are ranges of record ids and of grant
///    keys, cut at quantiles of a sample of the ledger ([`SAMPLE_BLOCKS`] blocks) so
///    that each holds about `plan.partition_bytes` of transactions. A partition thus
///    holds, in ledger order, every transaction about its subjects.
/// 2. *Projecting*: one thread per core takes partitions one after the other and projects
///    each with [`Projection::for_partitions`]. Subjects never affect each other, so a
///    partition needs no state but its own: its records and grants stay in memory,
///    nothing is read back from the store, and each record's current row is written
///    once. The views keyed by record id first (`records`, `record_versions`, `audit`)
///    and `grants` get one segment per partition ([`ViewStore::write_segment`]: for
///    RocksDB, SST files merged with nothing); the others go in batches of
///    `plan.batch_ops` ops, sorted and written as they fill (for RocksDB, runs merged at
///    the flush). No two partitions write the same key.
///
/// The partitions take about the ledger's size in temporary disk, removed as they are
/// projected. Through one projection that read its states back from the store, a
/// rebuild kept one core busy with the projection and the other with RocksDB's
/// memtables, flushes and compactions of `records`.
pub fn project_all(
    ledger: &Ledger,
    store: &dyn ViewStore,
    to: u64,
    plan: &Plan<'_>,
    progress: &mut dyn FnMut(Progress),
) -> Result<RebuildSummary, RebuildError> {
    let started = Instant::now();
    let height = store.applied_height()?;
    if height != 0 {
        return Err(RebuildError::NotEmpty { height });
    }
    let bytes = ledger.approximate_bytes_below(to)?;
    let count = bytes
        .div_ceil(plan.partition_bytes.max(1))
        .clamp(1, PARTITIONS_MAX);
    let count = usize::try_from(count).expect("at most PARTITIONS_MAX");
    let (records, grants) = sample_bounds(ledger, to, count)?;
    let parts = Partitions {
        dir: plan.work_dir,
        count,
        records,
        grants,
    };
    remove_dir(parts.dir)?;
    std::fs::create_dir_all(parts.dir).map_err(io(format!("creating {}", parts.dir.display())))?;
    let result = parts
        .fill(ledger, to, progress)
        .and_then(|read| parts.project(store, plan.batch_ops, read, progress));
    remove_dir(parts.dir)?;
    let (events, rejected) = result?;
    // Every partition is written: the views are at height `to`.
    store.write(&ViewBatch::new(to))?;
    Ok(RebuildSummary {
        events,
        rejected,
        blocks: to,
        seconds: 0.0,
        events_per_sec: 0.0,
    }
    .timed(started.elapsed().as_secs_f64()))
}

/// Removes `dir` and everything in it, if it exists.
fn remove_dir(dir: &Path) -> Result<(), RebuildError> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(io(format!("removing {}", dir.display()))(e))
        }
        _ => Ok(()),
    }
}

/// A rebuild's partition files: `part-NNNNN` in `dir`, each a sequence of transactions
/// `block (u64 LE) | position (u32 LE) | length (u32 LE) | canonical envelope bytes`.
///
/// Partition `p` holds the transactions about the record ids from `records[p - 1]`
/// (from the least for the first) up to `records[p]` (excluded; to the greatest for
/// the last), and likewise the grants by (patient id, grantee id) in `grants`.
struct Partitions<'a> {
    dir: &'a Path,
    count: usize,
    records: Vec<Vec<u8>>,
    grants: Vec<(Vec<u8>, Vec<u8>)>,
}

/// What the threads of [`Partitions::project`] share.
#[derive(Default)]
struct Shared {
    /// The next partition to take.
    next: AtomicUsize,
    /// A thread failed: the others stop.
    failed: AtomicBool,
    /// Partitions projected, and their transactions, and those rejected.
    done: AtomicU64,
    events: AtomicU64,
    rejected: AtomicU64,
}

/// Block `n`, which must be below the ledger's height.
fn read_block(ledger: &Ledger, n: u64) -> Result<BlockFrame, StorageError> {
    ledger.block_frame(n)?.ok_or(StorageError::IndexMismatch {
        number: n,
        reason: "missing during rebuild".into(),
    })
}

/// Blocks read, evenly through the ledger, to choose the partitions' boundaries.
const SAMPLE_BLOCKS: u64 = 256;

/// Boundaries that cut blocks `0..to` into about `count` partitions of about as many
/// transactions each: quantiles of the record ids, and of the grant keys, that the
/// transactions of [`SAMPLE_BLOCKS`] blocks spread through the ledger are about.
#[allow(clippy::type_complexity)]
fn sample_bounds(
    ledger: &Ledger,
    to: u64,
    count: usize,
) -> Result<(Vec<Vec<u8>>, Vec<(Vec<u8>, Vec<u8>)>), RebuildError> {
    let step = to.div_ceil(SAMPLE_BLOCKS).max(1);
    let blocks: Vec<u64> = (0..to)
        .step_by(usize::try_from(step).unwrap_or(usize::MAX))
        .collect();
    let samples = blocks
        .into_par_iter()
        .map(|n| {
            let frame = read_block(ledger, n)?;
            let (mut records, mut grants) = (Vec::new(), Vec::new());
            for tx in frame.txs() {
                match Envelope::subject_of(tx) {
                    Some(Subject::Record(id)) => records.push(id.to_vec()),
                    Some(Subject::Grant(p, g)) => grants.push((p.to_vec(), g.to_vec())),
                    None => {}
                }
            }
            Ok((records, grants))
        })
        .collect::<Result<Vec<_>, StorageError>>()?;
    let (records, grants): (Vec<_>, Vec<_>) = samples.into_iter().unzip();
    Ok((
        quantiles(records.into_iter().flatten().collect(), count),
        quantiles(grants.into_iter().flatten().collect(), count),
    ))
}

/// The `count - 1` values that cut sorted `sample` into `count` parts of equal size
/// (fewer where the sample repeats itself; none for an empty sample).
fn quantiles<T: Ord + Clone>(mut sample: Vec<T>, count: usize) -> Vec<T> {
    sample.sort_unstable();
    if sample.is_empty() {
        return Vec::new();
    }
    let mut bounds: Vec<T> = (1..count)
        .map(|i| sample[i * sample.len() / count].clone())
        .collect();
    bounds.dedup();
    bounds
}

impl Partitions<'_> {
    fn path(&self, partition: usize) -> PathBuf {
        self.dir.join(format!("part-{partition:05}"))
    }

    /// The partition of a transaction: by its subject; bytes that have none (they will
    /// not decode, and are rejected whatever partition projects them) go to the first.
    fn of(&self, tx: &[u8]) -> usize {
        match Envelope::subject_of(tx) {
            Some(Subject::Record(id)) => self.records.partition_point(|b| b.as_slice() <= id),
            Some(Subject::Grant(patient, grantee)) => self
                .grants
                .partition_point(|(p, g)| (p.as_slice(), g.as_slice()) <= (patient, grantee)),
            None => 0,
        }
    }

    /// Stage 1: reads blocks `0..to` into the partition files; returns the transactions
    /// read.
    fn fill(
        &self,
        ledger: &Ledger,
        to: u64,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<u64, RebuildError> {
        let mut files = (0..self.count)
            .map(|p| {
                let path = self.path(p);
                File::create(&path)
                    .map(|f| BufWriter::with_capacity(PARTITION_BUFFER_BYTES, f))
                    .map_err(io(format!("creating {}", path.display())))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut events = 0u64;
        type Blocks = Vec<(u64, BlockFrame)>;
        let (tx, rx) = crossbeam_channel::bounded::<Result<Blocks, StorageError>>(4);
        std::thread::scope(|scope| -> Result<(), RebuildError> {
            scope.spawn(move || {
                let mut start = 0;
                while start < to {
                    let end = (start + READ_CHUNK_BLOCKS).min(to);
                    let chunk: Result<Blocks, StorageError> = (start..end)
                        .into_par_iter()
                        .map(|n| Ok((n, read_block(ledger, n)?)))
                        .collect();
                    let failed = chunk.is_err();
                    if tx.send(chunk).is_err() || failed {
                        return;
                    }
                    start = end;
                }
            });
            // By value: an early return drops the receiver, which stops the reader.
            for chunk in rx {
                for (number, frame) in chunk? {
                    for (position, bytes) in frame.txs().enumerate() {
                        let p = self.of(bytes);
                        let mut head = [0u8; 16];
                        head[..8].copy_from_slice(&number.to_le_bytes());
                        let position = u32::try_from(position).expect("< 2^32 txs a block");
                        head[8..12].copy_from_slice(&position.to_le_bytes());
                        let len = u32::try_from(bytes.len()).expect("a block is < 4 GiB");
                        head[12..].copy_from_slice(&len.to_le_bytes());
                        if let Err(e) = files[p]
                            .write_all(&head)
                            .and_then(|()| files[p].write_all(bytes))
                        {
                            return Err(io(format!("writing {}", self.path(p).display()))(e));
                        }
                        events += 1;
                    }
                    progress(Progress {
                        stage: Stage::Reading,
                        done: number + 1,
                        total: to,
                        events,
                    });
                }
            }
            Ok(())
        })?;
        for (p, mut file) in files.into_iter().enumerate() {
            file.flush()
                .map_err(io(format!("writing {}", self.path(p).display())))?;
        }
        Ok(events)
    }

    /// Stage 2: projects every partition into `store`, one thread per core; returns the
    /// transactions projected and those rejected. Each partition file is removed once
    /// projected.
    fn project(
        &self,
        store: &dyn ViewStore,
        batch_ops: usize,
        read: u64,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<(u64, u64), RebuildError> {
        let shared = Shared::default();
        let threads = rayon::current_num_threads().clamp(1, self.count);
        let report = |progress: &mut dyn FnMut(Progress)| {
            progress(Progress {
                stage: Stage::Projecting,
                done: shared.done.load(Ordering::Relaxed),
                total: self.count as u64,
                events: shared.events.load(Ordering::Relaxed),
            })
        };
        let outcome = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..threads)
                .map(|_| {
                    scope.spawn(|| {
                        let result = self.project_some(store, batch_ops, &shared);
                        if result.is_err() {
                            shared.failed.store(true, Ordering::Relaxed);
                        }
                        result
                    })
                })
                .collect();
            while !workers.iter().all(|w| w.is_finished()) {
                report(progress);
                std::thread::sleep(Duration::from_millis(50));
            }
            workers
                .into_iter()
                .map(|w| w.join().expect("a partition worker panicked"))
                .collect::<Result<Vec<()>, RebuildError>>()
        });
        outcome?;
        report(progress);
        let projected = shared.events.into_inner();
        assert_eq!(projected, read, "every transaction read is projected");
        Ok((projected, shared.rejected.into_inner()))
    }

    /// One worker of [`Partitions::project`]: projects the next partition not taken, until
    /// none is left (or a worker failed).
    fn project_some(
        &self,
        store: &dyn ViewStore,
        batch_ops: usize,
        shared: &Shared,
    ) -> Result<(), RebuildError> {
        let mut projection = Projection::for_partitions(batch_ops);
        let mut tx = Vec::new();
        loop {
            let p = shared.next.fetch_add(1, Ordering::Relaxed);
            if p >= self.count || shared.failed.load(Ordering::Relaxed) {
                break;
            }
            let path = self.path(p);
            let file = File::open(&path).map_err(io(format!("opening {}", path.display())))?;
            let mut input = BufReader::with_capacity(PARTITION_BUFFER_BYTES, file);
            let (mut n, mut bad) = (0u64, 0u64);
            loop {
                let mut head = [0u8; 16];
                match input.read_exact(&mut head) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
                    Err(e) => return Err(io(format!("reading {}", path.display()))(e)),
                }
                let number = u64::from_le_bytes(head[..8].try_into().expect("8 bytes"));
                let position = u32::from_le_bytes(head[8..12].try_into().expect("4 bytes"));
                let len = u32::from_le_bytes(head[12..].try_into().expect("4 bytes"));
                tx.resize(len as usize, 0);
                if let Err(e) = input.read_exact(&mut tx) {
                    return Err(io(format!("reading {}", path.display()))(e));
                }
                if !projection.apply_tx(number, position, &tx)? {
                    bad += 1;
                }
                n += 1;
                if projection.batch_full() {
                    projection.write_batch(store)?;
                }
            }
            projection.end_partition(store)?;
            std::fs::remove_file(&path).map_err(io(format!("removing {}", path.display())))?;
            shared.events.fetch_add(n, Ordering::Relaxed);
            shared.rejected.fetch_add(bad, Ordering::Relaxed);
            shared.done.fetch_add(1, Ordering::Relaxed);
        }
        if projection.pending_ops() > 0 {
            projection.write_batch(store)?;
        }
        Ok(())
    }
}

/// Drops the `backend` views of `data_dir` and rebuilds them from block 0 (see the module
/// docs for how the swap survives a crash).
pub fn rebuild(
    data_dir: &Path,
    ledger: &Ledger,
    backend: Backend,
    progress: &mut dyn FnMut(Progress),
) -> Result<RebuildSummary, RebuildError> {
    let live = views_dir(data_dir, backend);
    let old = sibling(data_dir, backend, "old");
    let scratch = sibling(data_dir, backend, "rebuild");
    remove_dir(&scratch)?;
    check_free_space(
        data_dir,
        ledger.approximate_bytes_below(ledger.tip().height)?,
        backend,
    )?;
    let started = Instant::now();
    let parts = sibling(data_dir, backend, "rebuild-parts");
    let summary = (|| {
        let store = backend.open(&scratch, true)?;
        let plan = Plan {
            work_dir: &parts,
            batch_ops: WRITE_BATCH_OPS,
            partition_bytes: PARTITION_BYTES,
        };
        let summary = project_all(ledger, store.as_ref(), ledger.tip().height, &plan, progress)?;
        store.flush()?;
        Ok(summary)
    })();
    let summary = match summary {
        Ok(summary) => summary,
        Err(e) => {
            // The live views are untouched; the scratch store is thrown away now rather
            // than left taking disk until the next rebuild.
            let _ = std::fs::remove_dir_all(&scratch);
            return Err(e);
        }
    };
    // A rebuild's time includes making the views durable (the runs merged, the SST files
    // ingested and synced), not only the projection.
    let summary = summary.timed(started.elapsed().as_secs_f64());
    if live.exists() {
        std::fs::rename(&live, &old).map_err(io(format!("moving {} aside", live.display())))?;
    }
    std::fs::rename(&scratch, &live).map_err(io(format!("installing {}", live.display())))?;
    sync_dir(data_dir)?;
    if old.exists() {
        std::fs::remove_dir_all(&old).map_err(io(format!("removing {}", old.display())))?;
    }
    Ok(summary)
}

/// Refuses to start a rebuild of a ledger of `ledger_bytes` into `backend` views in `dir`
/// when the filesystem has less free than the least the rebuild will write, so that it
/// fails at once rather than when the disk is full: the partitions take about the
/// ledger's size; RocksDB's new views at least half as much again (a rebuild peaks near
/// twice the ledger), sled's four times the ledger (1M and 10M events: 4.0-4.1 times).
pub fn check_free_space(
    dir: &Path,
    ledger_bytes: u64,
    backend: Backend,
) -> Result<(), RebuildError> {
    let needed = match backend {
        Backend::RocksDb => ledger_bytes.saturating_add(ledger_bytes / 2),
        Backend::Sled => ledger_bytes.saturating_mul(5),
    };
    let available = free_bytes(dir)?;
    if available < needed {
        return Err(RebuildError::NoSpace {
            dir: dir.display().to_string(),
            ledger: ledger_bytes,
            needed,
            available,
        });
    }
    Ok(())
}

/// Bytes an unprivileged process may still write on `dir`'s filesystem.
fn free_bytes(dir: &Path) -> Result<u64, RebuildError> {
    use std::os::unix::ffi::OsStrExt;
    let what = || format!("reading the free space of {}", dir.display());
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|e| io(what())(std::io::Error::new(std::io::ErrorKind::InvalidInput, e)))?;
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is a NUL-terminated string and `stat` a writable statvfs, both live
    // for the call.
    if unsafe { libc::statvfs(path.as_ptr(), &mut stat) } != 0 {
        return Err(io(what())(std::io::Error::last_os_error()));
    }
    // The fields are u64 here, narrower on some 32-bit targets.
    #[allow(clippy::useless_conversion)]
    let (blocks, block_bytes) = (u64::from(stat.f_bavail), u64::from(stat.f_frsize));
    Ok(blocks.saturating_mul(block_bytes))
}

fn sync_dir(dir: &Path) -> Result<(), RebuildError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(format!("syncing {}", dir.display())))
}

/// One view's rows and digest.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct ViewDigest {
    pub view: &'static str,
    pub rows: u64,
    /// SHA-256 over every (key length u32 LE, key, value length u32 LE, value) in key
    /// order, lowercase hex.
    pub sha256: String,
}

/// Digests every view of `store`.
pub fn digest_views(store: &dyn ViewStore) -> Result<Vec<ViewDigest>, ViewError> {
    View::ALL
        .iter()
        .map(|&view| {
            let mut hasher = Sha256::new();
            let mut rows = 0u64;
            store.for_each(view, b"", None, &mut |k, v| {
                hasher.update((k.len() as u32).to_le_bytes());
                hasher.update(k);
                hasher.update((v.len() as u32).to_le_bytes());
                hasher.update(v);
                rows += 1;
                ControlFlow::Continue(())
            })?;
            Ok(ViewDigest {
                view: view.name(),
                rows,
                sha256: hex::encode(hasher.finalize()),
            })
        })
        .collect()
}

/// Where two stores first differ.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Difference {
    pub view: &'static str,
    /// The first key (hex) present in one store and not the other, or with other bytes.
    pub key: String,
    /// The key as text where it is printable (ids are).
    pub key_text: String,
    pub in_live: bool,
    pub in_rebuilt: bool,
}

/// The first key, in view then key order, where `live` and `rebuilt` differ.
pub fn first_difference(
    live: &dyn ViewStore,
    rebuilt: &dyn ViewStore,
) -> Result<Option<Difference>, ViewError> {
    const PAGE: usize = 4096;
    for view in View::ALL {
        let (mut after_a, mut after_b): (Option<Vec<u8>>, Option<Vec<u8>>) = (None, None);
        let (mut a, mut b) = (Vec::new().into_iter(), Vec::new().into_iter());
        let (mut next_a, mut next_b) = (None, None);
        loop {
            if next_a.is_none() {
                if a.len() == 0 {
                    a = live.scan(view, b"", after_a.as_deref(), PAGE)?.into_iter();
                }
                next_a = a.next();
                if let Some((k, _)) = &next_a {
                    after_a = Some(k.clone());
                }
            }
            if next_b.is_none() {
                if b.len() == 0 {
                    b = rebuilt
                        .scan(view, b"", after_b.as_deref(), PAGE)?
                        .into_iter();
                }
                next_b = b.next();
                if let Some((k, _)) = &next_b {
                    after_b = Some(k.clone());
                }
            }
            let diff = |key: &[u8], in_live, in_rebuilt| Difference {
                view: view.name(),
                key: hex::encode(key),
                key_text: String::from_utf8_lossy(key).into_owned(),
                in_live,
                in_rebuilt,
            };
            match (&next_a, &next_b) {
                (None, None) => break,
                (Some((k, _)), None) => return Ok(Some(diff(k, true, false))),
                (None, Some((k, _))) => return Ok(Some(diff(k, false, true))),
                (Some((ka, va)), Some((kb, vb))) => {
                    if ka < kb {
                        return Ok(Some(diff(ka, true, false)));
                    }
                    if kb < ka {
                        return Ok(Some(diff(kb, false, true)));
                    }
                    if va != vb {
                        return Ok(Some(diff(ka, true, true)));
                    }
                    next_a = None;
                    next_b = None;
                }
            }
        }
    }
    Ok(None)
}

/// The outcome of `verify --views`.
#[derive(Clone, Debug, Serialize)]
pub struct ViewsReport {
    pub ok: bool,
    pub backend: &'static str,
    /// The height both stores were compared at (the live views').
    pub height: u64,
    pub views: Vec<ViewDigest>,
    pub first_difference: Option<Difference>,
}

/// Rebuilds the views into a scratch directory up to the live views' height and compares
/// every view, byte for byte.
pub fn verify_views(
    data_dir: &Path,
    ledger: &Ledger,
    backend: Backend,
    progress: &mut dyn FnMut(Progress),
) -> Result<ViewsReport, RebuildError> {
    let live = open_views(data_dir, backend)?;
    let height = live.applied_height()?;
    let scratch = sibling(data_dir, backend, "verify");
    remove_dir(&scratch)?;
    // Views ahead of the ledger are compared up to the ledger's tip.
    let to = height.min(ledger.tip().height);
    let result = (|| {
        check_free_space(data_dir, ledger.approximate_bytes_below(to)?, backend)?;
        let rebuilt = backend.open(&scratch, true)?;
        let parts = sibling(data_dir, backend, "verify-parts");
        let plan = Plan {
            work_dir: &parts,
            batch_ops: WRITE_BATCH_OPS,
            partition_bytes: PARTITION_BYTES,
        };
        project_all(ledger, rebuilt.as_ref(), to, &plan, progress)?;
        // A bulk store's views are all readable once flushed.
        rebuilt.flush()?;
        let live_digests = digest_views(live.as_ref())?;
        let rebuilt_digests = digest_views(rebuilt.as_ref())?;
        let heights_match = rebuilt.applied_height()? == height;
        let first_difference = if live_digests == rebuilt_digests {
            None
        } else {
            first_difference(live.as_ref(), rebuilt.as_ref())?
        };
        Ok(ViewsReport {
            ok: heights_match && first_difference.is_none() && live_digests == rebuilt_digests,
            backend: backend.name(),
            height,
            views: live_digests,
            first_difference,
        })
    })();
    let _ = std::fs::remove_dir_all(&scratch);
    result
}
