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
//!
//! One concern a file:
//! - here: the entry points, [`rebuild`] and [`verify_views`], what they report and how
//!   they fail;
//! - `partition`: [`project_all`], the partitioned projection of a ledger into empty
//!   views on every core, and its partition files;
//! - `swap`: where the live and scratch views live, the swap that installs a rebuild, and
//!   [`open_views`], which finishes or undoes a swap a crash interrupted;
//! - `space`: [`check_free_space`], which refuses a rebuild the disk cannot hold;
//! - `digest`: [`digest_views`] and [`first_difference`], what `verify --views` compares.

mod digest;
mod partition;
mod space;
mod swap;

use std::path::Path;
use std::time::Instant;

use serde::Serialize;

use medledger_storage::{Ledger, StorageError};

use crate::{Backend, ViewError};

pub use self::digest::{digest_views, first_difference, Difference, ViewDigest};
pub use self::partition::{project_all, Plan, PARTITION_BYTES, WRITE_BATCH_OPS};
pub use self::space::check_free_space;
use self::swap::sibling;
pub use self::swap::{open_views, views_dir};

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
        "not enough free space in {dir}: rebuilding the views of a ledger of {ledger_bytes} \
         bytes needs at least {needed_bytes} bytes (its partitions, about the ledger's size, \
         and the new views), and {available_bytes} are free"
    )]
    NoSpace {
        dir: String,
        ledger_bytes: u64,
        needed_bytes: u64,
        available_bytes: u64,
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

/// Removes `dir` and everything in it, if it exists.
fn remove_dir(dir: &Path) -> Result<(), RebuildError> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(io(format!("removing {}", dir.display()))(e))
        }
        _ => Ok(()),
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
    swap::install(data_dir, backend, &scratch)?;
    Ok(summary)
}

/// The outcome of `verify --views`.
#[derive(Clone, Debug, Serialize)]
pub struct ViewsReport {
    /// Every view equals a rebuild, at the ledger's height (views behind the ledger are
    /// not a pass: what they lack was not checked).
    pub ok: bool,
    pub backend: &'static str,
    /// The height both stores were compared at (the live views').
    pub height: u64,
    /// The ledger's height; above `height` when the views lag (the server catches them
    /// up at its next start).
    pub ledger_height: u64,
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
    let ledger_height = ledger.tip().height;
    let to = height.min(ledger_height);
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
        let heights_match = rebuilt.applied_height()? == height && height >= ledger_height;
        let first_difference = if live_digests == rebuilt_digests {
            None
        } else {
            first_difference(live.as_ref(), rebuilt.as_ref())?
        };
        Ok(ViewsReport {
            ok: heights_match && first_difference.is_none() && live_digests == rebuilt_digests,
            backend: backend.name(),
            height,
            ledger_height,
            views: live_digests,
            first_difference,
        })
    })();
    let _ = std::fs::remove_dir_all(&scratch);
    result
}
