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

/// Creates the directory `dir` (and any missing parents) durably: a directory's name is on
/// disk only once the directory holding it is fsynced, so every directory this creates is
/// synced in its parent, and `dir`'s parent is synced even when `dir` was there already
/// (a process that died before its sync may have left it). Without this, a power cut can
/// take away a whole directory whose files were each fsynced (tests/power_loss.rs found
/// `payloads/keys` so: every content key in it gone).
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
    sync_parent_dir(dir)?;
    for d in created.iter().skip(1) {
        sync_parent_dir(d)?;
    }
    Ok(())
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
