//! Rebuilding the views from the ledger, and checking live views against a rebuild.
//!
//! A rebuild never touches the live views until it is complete: it projects every block
//! into `views-<backend>.rebuild/` (blocks read and checked in parallel with rayon, views
//! written in large batches without a WAL), makes that durable, then swaps directories:
//! live → `.old`, `.rebuild` → live, fsync the data dir, delete `.old`. [`open_views`]
//! finishes or undoes a swap a crash interrupted. Whatever state a crash leaves, the views
//! opened are consistent with their applied height, and the projector catches up.

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use rayon::prelude::*;
use serde::Serialize;
use sha2::{Digest, Sha256};

use medledger_storage::views::project::Projection;
use medledger_storage::views::{Backend, View, ViewBatch, ViewError, ViewStore};
use medledger_storage::{BlockFrame, Ledger, StorageError};

/// Blocks read and decoded together by the rayon pool.
const READ_CHUNK_BLOCKS: u64 = 64;
/// Ops buffered before a rebuild writes a batch.
pub const WRITE_BATCH_OPS: usize = 256 * 1024;

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
    pub blocks_done: u64,
    pub blocks_total: u64,
    pub events: u64,
}

/// Why a rebuild or a check failed.
#[derive(Debug, thiserror::Error)]
pub enum RebuildError {
    #[error(transparent)]
    Ledger(#[from] StorageError),
    #[error(transparent)]
    Views(#[from] ViewError),
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
/// swap that a crash interrupted.
pub fn open_views(data_dir: &Path, backend: Backend) -> Result<Arc<dyn ViewStore>, RebuildError> {
    let live = views_dir(data_dir, backend);
    let old = sibling(data_dir, backend, "old");
    let scratch = sibling(data_dir, backend, "rebuild");
    if !live.exists() && old.exists() {
        // Crashed between the two renames: the old views are whole; the projector will
        // catch them up.
        std::fs::rename(&old, &live).map_err(io(format!("restoring {}", old.display())))?;
        sync_dir(data_dir)?;
    }
    for leftover in [old, scratch] {
        if leftover.exists() {
            std::fs::remove_dir_all(&leftover)
                .map_err(io(format!("removing {}", leftover.display())))?;
        }
    }
    Ok(Arc::from(backend.open(&live, false)?))
}

/// Projects blocks `store.applied_height()..to` of `ledger` into `store` in batches of
/// about `batch_ops` ops ([`WRITE_BATCH_OPS`] normally), reading blocks in parallel and
/// writing each batch while the next is projected. Does not flush.
///
/// The projection decodes the transactions itself. Decoded by the readers, every
/// event's strings were allocated on one thread and freed on another, and the allocator's
/// cross-thread frees cost both sides more than the decoding did: decoding on the
/// projection's thread took 10% off a rebuild's CPU.
pub fn project_range(
    ledger: &Ledger,
    store: &dyn ViewStore,
    to: u64,
    batch_ops: usize,
    progress: &mut dyn FnMut(Progress),
) -> Result<RebuildSummary, RebuildError> {
    let started = Instant::now();
    let from = store.applied_height()?;
    let mut projection = Projection::for_rebuild(store, batch_ops)?;
    let (mut events, mut rejected) = (0u64, 0u64);
    type Blocks = Vec<(u64, BlockFrame)>;
    let (tx, rx) = crossbeam_channel::bounded::<Result<Blocks, StorageError>>(4);
    // The writer thread takes one batch at a time while the projection goes on; the
    // projection takes the next batch only after the last one is written.
    let (batch_tx, batch_rx) = crossbeam_channel::bounded::<ViewBatch>(0);
    // The writer hands each written batch back, for the projection to reuse its memory.
    let (done_tx, done_rx) = crossbeam_channel::bounded::<Result<ViewBatch, ViewError>>(1);
    let mut in_flight = false;
    std::thread::scope(|scope| -> Result<(), RebuildError> {
        scope.spawn(move || {
            for mut batch in batch_rx {
                batch.sort_by_key();
                if done_tx.send(store.write(&batch).map(|()| batch)).is_err() {
                    return;
                }
            }
        });
        scope.spawn(move || {
            let mut start = from;
            while start < to {
                let end = (start + READ_CHUNK_BLOCKS).min(to);
                let chunk: Result<Blocks, StorageError> = (start..end)
                    .into_par_iter()
                    .map(|n| {
                        let frame = ledger.block_frame(n)?.ok_or(StorageError::IndexMismatch {
                            number: n,
                            reason: "missing during rebuild".into(),
                        })?;
                        Ok((n, frame))
                    })
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
                let outcome = projection.apply_block(number, frame.txs())?;
                events += u64::from(outcome.applied) + u64::from(outcome.rejected);
                rejected += u64::from(outcome.rejected);
                if projection.pending_ops() >= batch_ops {
                    if in_flight {
                        let written = done_rx.recv().expect("the writer answers every batch")?;
                        projection.recycle(written);
                    }
                    batch_tx
                        .send(projection.take_batch())
                        .expect("the writer runs until the channel closes");
                    in_flight = true;
                }
                progress(Progress {
                    blocks_done: number + 1 - from,
                    blocks_total: to - from,
                    events,
                });
            }
        }
        if in_flight {
            done_rx.recv().expect("the writer answers every batch")?;
        }
        drop(batch_tx);
        Ok(())
    })?;
    store.write(&projection.take_batch())?;
    Ok(RebuildSummary {
        events,
        rejected,
        blocks: to - from,
        seconds: 0.0,
        events_per_sec: 0.0,
    }
    .timed(started.elapsed().as_secs_f64()))
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
    if scratch.exists() {
        std::fs::remove_dir_all(&scratch).map_err(io(format!("removing {}", scratch.display())))?;
    }
    let started = Instant::now();
    let summary = {
        let store = backend.open(&scratch, true)?;
        let summary = project_range(
            ledger,
            store.as_ref(),
            ledger.tip().height,
            WRITE_BATCH_OPS,
            progress,
        )?;
        store.flush()?;
        summary
    };
    // A rebuild's time includes making the views durable (the last memtables flushed),
    // not only the projection.
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
    if scratch.exists() {
        std::fs::remove_dir_all(&scratch).map_err(io(format!("removing {}", scratch.display())))?;
    }
    let result = (|| {
        let rebuilt = backend.open(&scratch, true)?;
        project_range(
            ledger,
            rebuilt.as_ref(),
            height.min(ledger.tip().height),
            WRITE_BATCH_OPS,
            progress,
        )?;
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
