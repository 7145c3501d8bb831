//! Durable file operations: every function returns only after its effect is on disk.

use std::fs::File;
use std::io;
use std::path::Path;

/// fsyncs the directory `dir`, making entries created, renamed or removed in it durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// fsyncs the directory holding `path`.
pub fn sync_parent_dir(path: &Path) -> io::Result<()> {
    let parent = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    sync_dir(parent)
}

/// Writes `bytes` to `path` atomically and durably: a temporary file (mode 0600) is
/// written and fsynced, renamed over `path`, and the directory fsynced. This was the key
/// store's writer before the key log (one file per key); tests keep it to write a data
/// dir as older versions did.
#[cfg(test)]
pub fn write_durably(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::fs::{self, OpenOptions};
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".tmp");
    let temporary = Path::new(&temporary);
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(temporary)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    fs::rename(temporary, path)?;
    sync_parent_dir(path)
}
