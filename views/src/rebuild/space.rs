//! The free-space check a rebuild makes before it starts: a rebuild that would fill the
//! disk fails at once, naming the sizes, rather than hours later with the disk full.

use std::path::Path;

use crate::Backend;

use super::{io, RebuildError};

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
    let needed_bytes = match backend {
        Backend::RocksDb => ledger_bytes.saturating_add(ledger_bytes / 2),
        Backend::Sled => ledger_bytes.saturating_mul(5),
    };
    let available_bytes = free_bytes(dir)?;
    if available_bytes < needed_bytes {
        return Err(RebuildError::NoSpace {
            dir: dir.display().to_string(),
            ledger_bytes,
            needed_bytes,
            available_bytes,
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
