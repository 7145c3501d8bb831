//! Where a data dir's views live, and the swap that installs a rebuild.
//!
//! A rebuild writes beside the live views (`views-<backend>.rebuild`, and its partitions
//! in `.rebuild-parts`; `verify --views` in `.verify` and `.verify-parts`) and installs
//! its store by renames ([`install`]); [`open_views`] finishes or undoes a swap that a
//! crash interrupted, and removes what a crashed rebuild left. Both here, so the steps of
//! the swap and its undo are read together.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::{Backend, ViewStore};

use super::{io, remove_dir, RebuildError};

/// The live views' directory in `data_dir`.
pub fn views_dir(data_dir: &Path, backend: Backend) -> PathBuf {
    data_dir.join(backend.dir_name())
}

/// The directory beside `backend`'s live views in `data_dir` named by `suffix` (`old`,
/// `rebuild`, `rebuild-parts`, `verify`, `verify-parts`).
pub(super) fn sibling(data_dir: &Path, backend: Backend, suffix: &str) -> PathBuf {
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
    // Its name durable before anything is written in it (a power cut would otherwise
    // leave no views, and a rebuild of the whole ledger to make).
    medledger_storage::ledger::fs::create_dir_durably(&live)
        .map_err(io(format!("creating {}", live.display())))?;
    Ok(Arc::from(backend.open(&live, false)?))
}

/// Installs the rebuilt views in `scratch` as `backend`'s live views in `data_dir`: live
/// → `.old`, `scratch` → live, fsync `data_dir`, delete `.old`. A crash between the
/// renames leaves no live views and whole old ones, which [`open_views`] restores; after
/// the second rename the new views are live.
pub(super) fn install(
    data_dir: &Path,
    backend: Backend,
    scratch: &Path,
) -> Result<(), RebuildError> {
    let live = views_dir(data_dir, backend);
    let old = sibling(data_dir, backend, "old");
    if live.exists() {
        std::fs::rename(&live, &old).map_err(io(format!("moving {} aside", live.display())))?;
    }
    std::fs::rename(scratch, &live).map_err(io(format!("installing {}", live.display())))?;
    sync_dir(data_dir)?;
    if old.exists() {
        std::fs::remove_dir_all(&old).map_err(io(format!("removing {}", old.display())))?;
    }
    Ok(())
}

/// Makes the renames in `dir` durable.
fn sync_dir(dir: &Path) -> Result<(), RebuildError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(format!("syncing {}", dir.display())))
}
