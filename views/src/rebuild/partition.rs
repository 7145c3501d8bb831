//! The projection of a whole ledger into empty views ([`project_all`]), which a rebuild
//! and `verify --views` share: the blocks read in parallel into partition files by what
//! each transaction is about, then the partitions projected on every core. The partition
//! files' format is here, with the only code that writes and reads them.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rayon::prelude::*;

use medledger_chaincode::{Envelope, Subject};
use medledger_storage::{BlockFrame, Ledger, StorageError};

use crate::project::Projection;
use crate::{ViewBatch, ViewStore};

use super::{io, remove_dir, Progress, RebuildError, RebuildSummary, Stage};

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

/// Projects blocks `0..to` of `ledger` into `store`, which must be empty, and brings it
/// to height `to`. Does not flush.
///
/// Two stages, each on every core:
/// 1. *Reading*: the blocks are read and checked in parallel, and each transaction is
///    appended to one of the partition files in `plan.work_dir`, chosen by its
///    [`Subject`] (the record, or the patient and grantee of a grant), read from its
///    bytes without decoding them. Partitions are ranges of record ids and of grant
///    keys, cut at quantiles of a sample of the ledger (`SAMPLE_BLOCKS`, 256 blocks) so
///    that each holds about `plan.partition_bytes` of transactions. A partition thus
///    holds, in ledger order, every transaction about its subjects.
/// 2. *Projecting*: one thread per core takes partitions one after the other and projects
///    each with [`Projection::for_partitions`]. Subjects never affect each other, so a
///    partition needs no state but its own: its records and grants stay in memory,
///    nothing is read back from the store, and each record's current row is written
///    once. The views keyed by record id first (`records`, `record_versions`, `audit`)
///    and `grants` get one key range per partition ([`ViewStore::write_range`]: for
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
    // The count views are counts of timeline rows, which a patient's records spread
    // over many partitions: the store counts them as it loads the timelines.
    store.derive_counts_at_flush()?;
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
