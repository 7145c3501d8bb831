//! The space a write leaves on the data dir's disk.
//!
//! The ledger, its index, the views and the payload store share one file system. A write
//! that fills it fails somewhere in the middle: a RocksDB flush of the views (which then
//! refuse every write until they are resumed), the key log or the pin store (poisoned
//! until a restart). So the server keeps a reserve: a write is refused at the door with
//! 507 `storage_full` (nothing written) when the free space is below it, and the ledger
//! refuses a block that would eat into it ([`LedgerOptions::reserve_bytes`]). What is
//! already acknowledged keeps being projected and read from the reserve, and writes are
//! taken again by themselves once space is freed.
//!
//! [`LedgerOptions::reserve_bytes`]: medledger_storage::LedgerOptions::reserve_bytes

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// The default reserve: room for the views to flush what they hold in memory (about a
/// second of writes; 512 MiB at the very most) and for recovery.
pub const RESERVE_BYTES_DEFAULT: u64 = 256 << 20;

/// The largest reserve `--disk-reserve-mib` takes (1 TiB).
pub const RESERVE_MIB_MAX: u64 = 1 << 20;

/// How long a free-space reading is trusted while the disk is far from the reserve.
const FRESH_MS: u64 = 50;

/// Free-space checks for the data dir, cheap enough for every write: statvfs at most
/// every [`FRESH_MS`] while the free space is more than twice the reserve, on every
/// check when it is closer.
#[derive(Debug)]
pub struct DiskSpace {
    path: PathBuf,
    reserve: u64,
    started: Instant,
    /// When `free` was read, in ms since `started` plus one (0: never).
    read_at_ms: AtomicU64,
    free: AtomicU64,
}

/// A write refused because it would eat into the reserve.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StorageFull {
    pub free: u64,
    pub reserve: u64,
}

/// The ledger's words for the same refusal ([`StorageError::NoSpace`]), so a client reads
/// one message whichever of the two refused its write.
///
/// [`StorageError::NoSpace`]: medledger_storage::StorageError::NoSpace
impl std::fmt::Display for StorageFull {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let same = medledger_storage::StorageError::NoSpace {
            free: Some(self.free),
            reserve: self.reserve,
        };
        write!(f, "{same}")
    }
}

impl std::error::Error for StorageFull {}

impl DiskSpace {
    /// Checks for the file system holding `path`, keeping `reserve` bytes free (0: no
    /// check).
    pub fn new(path: PathBuf, reserve: u64) -> DiskSpace {
        DiskSpace {
            path,
            reserve,
            started: Instant::now(),
            read_at_ms: AtomicU64::new(0),
            free: AtomicU64::new(0),
        }
    }

    /// The reserve in bytes.
    pub fn reserve(&self) -> u64 {
        self.reserve
    }

    /// Free bytes now (statvfs), or None if they cannot be read.
    pub fn free_now(&self) -> Option<u64> {
        match medledger_storage::ledger::fs::free_bytes_at(&self.path) {
            Ok(free) => {
                self.free.store(free, Ordering::Relaxed);
                let now = self.started.elapsed().as_millis() as u64 + 1;
                self.read_at_ms.store(now, Ordering::Relaxed);
                Some(free)
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the data dir's free space");
                None
            }
        }
    }

    /// Refuses a write of about `incoming` bytes that would take the free space below the
    /// reserve. A free space that cannot be read lets the write through (the ledger and
    /// the stores still fail safely on a full disk).
    pub fn check(&self, incoming: u64) -> Result<(), StorageFull> {
        if self.reserve == 0 {
            return Ok(());
        }
        let now = self.started.elapsed().as_millis() as u64 + 1;
        let read_at = self.read_at_ms.load(Ordering::Relaxed);
        let cached = self.free.load(Ordering::Relaxed);
        let free = if read_at != 0
            && now.saturating_sub(read_at) < FRESH_MS
            && cached > self.reserve.saturating_mul(2).saturating_add(incoming)
        {
            cached
        } else {
            match self.free_now() {
                Some(free) => free,
                None => return Ok(()),
            }
        };
        if free < self.reserve.saturating_add(incoming) {
            return Err(StorageFull {
                free,
                reserve: self.reserve,
            });
        }
        Ok(())
    }
}

/// The bytes of a small file a user provides (a key set, a certificate), at most `max`:
/// a larger one is refused without being read whole. `what` names it in the error.
pub fn read_bounded(path: &std::path::Path, max: u64, what: &str) -> Result<Vec<u8>, String> {
    use std::io::Read as _;
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(max + 1).read_to_end(&mut bytes))
        .map_err(|e| format!("reading the {what} {}: {e}", path.display()))?;
    if bytes.len() as u64 > max {
        return Err(format!("the {what} {} is over {max} bytes", path.display()));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reserve_above_the_free_space_refuses_and_zero_turns_the_check_off() {
        let dir = tempfile::tempdir().unwrap();
        let off = DiskSpace::new(dir.path().to_path_buf(), 0);
        assert_eq!(off.check(u64::MAX), Ok(()));

        let free = DiskSpace::new(dir.path().to_path_buf(), 1)
            .free_now()
            .expect("statvfs works on a temp dir");
        assert!(free > 0);
        // A reserve no disk here has: refused, and the error names both figures.
        let full = DiskSpace::new(dir.path().to_path_buf(), u64::MAX / 4);
        let err = full.check(0).unwrap_err();
        assert_eq!(err.reserve, u64::MAX / 4);
        assert!(err.free > 0 && err.free < u64::MAX / 4);
        assert!(err.to_string().starts_with("the disk is full"));
        // A small reserve: allowed, and a write larger than the free space is not.
        let small = DiskSpace::new(dir.path().to_path_buf(), 1);
        assert_eq!(small.check(0), Ok(()));
        assert!(small.check(u64::MAX / 2).is_err());
        // A cached reading is used only far from the reserve: still refused right after.
        assert!(small.check(u64::MAX / 2).is_err());
    }
}
