//! Segment file I/O behind a small trait, so the ledger runs the same code on real files
//! and on `crashfs::CrashFs` (feature `test-util`, for tests only), an in-memory file
//! system that keeps a live and a durable image and can crash at any write or sync.
//!
//! Segments are numbered files in one directory; the ledger only ever appends to the
//! last one, reads any, truncates a torn tail, and syncs data and the directory.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The directory of segment files.
pub trait SegmentDir: Send + Sync + 'static {
    /// Segment numbers present, ascending.
    fn list(&self) -> io::Result<Vec<u32>>;
    /// Opens an existing segment for reading and appending.
    fn open(&self, segment: u32) -> io::Result<Arc<dyn SegmentFile>>;
    /// Creates a new, empty segment; fails if it exists. The new name is durable only
    /// after [`SegmentDir::sync`].
    fn create(&self, segment: u32) -> io::Result<Arc<dyn SegmentFile>>;
    /// Makes created names durable (fsync of the directory).
    fn sync(&self) -> io::Result<()>;
    /// A human-readable name for a segment, for errors.
    fn describe(&self, segment: u32) -> String;
    /// Bytes an unprivileged writer may still use on the file system holding the
    /// segments (statvfs's `f_bavail`), or None where that is not known.
    fn free_bytes(&self) -> io::Result<Option<u64>> {
        Ok(None)
    }
}

/// Free bytes for unprivileged writers on the file system holding `path` (statvfs).
pub fn free_bytes_at(path: &std::path::Path) -> io::Result<u64> {
    use std::os::unix::ffi::OsStrExt as _;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a path with a NUL byte"))?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `c_path` is a valid NUL-terminated string and `st` is written by statvfs
    // before it is read (only on success).
    let rc = unsafe { libc::statvfs(c_path.as_ptr(), st.as_mut_ptr()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: statvfs returned 0, so it filled `st`.
    let st = unsafe { st.assume_init() };
    // The field types differ between platforms (aliases of u64 on Linux x86_64).
    #[allow(clippy::unnecessary_cast, clippy::useless_conversion)]
    Ok((st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
}

/// Whether an I/O error says the disk (or the writer's quota) is full.
pub fn is_no_space(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
    )
}

/// One segment file. Positional I/O only, so readers and the writer share it safely.
// `len` is fallible I/O; an `is_empty` beside it would only be `len()? == 0`.
#[allow(clippy::len_without_is_empty)]
pub trait SegmentFile: Send + Sync {
    /// Current length in bytes.
    fn len(&self) -> io::Result<u64>;
    /// Reads exactly `buf.len()` bytes at `offset`.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    /// Writes all of `buf` at `offset`. Not durable until [`SegmentFile::sync_data`].
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// fdatasync: makes written data (and the file length) durable.
    fn sync_data(&self) -> io::Result<()>;
    /// Truncates to `len` bytes (durable after `sync_data`).
    fn set_len(&self, len: u64) -> io::Result<()>;
}

/// Segment file name for a number: `seg-000042.log`.
pub fn segment_file_name(segment: u32) -> String {
    format!("seg-{segment:06}.log")
}

fn parse_segment_file_name(name: &str) -> Option<u32> {
    let digits = name.strip_prefix("seg-")?.strip_suffix(".log")?;
    if digits.len() < 6 || !digits.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Segments as real files in a directory (`blocks/`).
pub struct FileSegmentDir {
    path: PathBuf,
}

impl FileSegmentDir {
    /// Uses `path`, creating it (and its parents) durably if missing.
    pub fn open(path: impl Into<PathBuf>) -> io::Result<Self> {
        let path = path.into();
        create_dir_durably(&path)?;
        Ok(FileSegmentDir { path })
    }
}

/// Creates `dir` and its missing parents, each synced in its parent, and syncs `dir`'s
/// parent even when `dir` was there (a process that died may have left it unsynced): a
/// directory's name is durable only once its parent is fsynced, and a segment directory
/// lost to a power cut would lose every block in it (tests/power_loss.rs). Every store in
/// a data dir opens its directory through this (medledger-payload's
/// `fsutil::create_dir_durably` is the same rule for the payload store; the crates share
/// no dependency to hold one copy).
pub fn create_dir_durably(dir: &Path) -> io::Result<()> {
    let mut created = Vec::new();
    let mut at = dir;
    while !at.exists() {
        created.push(at);
        match at.parent().filter(|p| !p.as_os_str().is_empty()) {
            Some(parent) => at = parent,
            None => break,
        }
    }
    std::fs::create_dir_all(dir)?;
    for d in std::iter::once(dir).chain(created.iter().skip(1).copied()) {
        let parent = d.parent().filter(|p| !p.as_os_str().is_empty());
        std::fs::File::open(parent.unwrap_or(Path::new(".")))?.sync_all()?;
    }
    Ok(())
}

impl SegmentDir for FileSegmentDir {
    fn list(&self) -> io::Result<Vec<u32>> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&self.path)? {
            let entry = entry?;
            if let Some(n) = entry.file_name().to_str().and_then(parse_segment_file_name) {
                out.push(n);
            }
        }
        out.sort_unstable();
        Ok(out)
    }

    fn open(&self, segment: u32) -> io::Result<Arc<dyn SegmentFile>> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(self.path.join(segment_file_name(segment)))?;
        Ok(Arc::new(RealSegment { file }))
    }

    fn create(&self, segment: u32) -> io::Result<Arc<dyn SegmentFile>> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(self.path.join(segment_file_name(segment)))?;
        Ok(Arc::new(RealSegment { file }))
    }

    fn sync(&self) -> io::Result<()> {
        File::open(&self.path)?.sync_all()
    }

    fn describe(&self, segment: u32) -> String {
        self.path
            .join(segment_file_name(segment))
            .display()
            .to_string()
    }

    fn free_bytes(&self) -> io::Result<Option<u64>> {
        free_bytes_at(&self.path).map(Some)
    }
}

struct RealSegment {
    file: File,
}

impl SegmentFile for RealSegment {
    fn len(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        FileExt::read_exact_at(&self.file, buf, offset)
    }
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        FileExt::write_all_at(&self.file, buf, offset)
    }
    fn sync_data(&self) -> io::Result<()> {
        // std's sync_data is fdatasync(2) on Linux.
        self.file.sync_data()
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.file.set_len(len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_names_round_trip_and_strangers_are_ignored() {
        assert_eq!(segment_file_name(42), "seg-000042.log");
        assert_eq!(parse_segment_file_name("seg-000042.log"), Some(42));
        assert_eq!(parse_segment_file_name("seg-1234567.log"), Some(1_234_567));
        for bad in [
            "seg-42.log",
            "seg-00004x.log",
            "seg-000042.log.tmp",
            "x-000042.log",
        ] {
            assert_eq!(parse_segment_file_name(bad), None);
        }
    }
}
