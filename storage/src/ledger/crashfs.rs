//! An in-memory [`SegmentDir`] for crash tests, after redb's crash test and turmoil's fs:
//! every file has a `live` image (all writes) and a `durable` image (what the last
//! successful `sync_data` made durable); a created file exists after a crash only if the
//! directory was synced after its creation.
//!
//! Every mutating call (create, write, sync, set_len, directory sync) is one numbered
//! operation. [`CrashFs::crash_at`] makes operation `k` and every later one fail, as if
//! power was lost just before it; [`CrashFs::after_crash`] then gives the file system a
//! reboot would find, optionally with the unsynced tail of each file partly persisted
//! (a torn write).

use std::collections::BTreeMap;
use std::io;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use super::fs::{segment_file_name, SegmentDir, SegmentFile};

#[derive(Clone, Debug, Default)]
struct FileImage {
    live: Vec<u8>,
    durable: Vec<u8>,
    /// The directory entry survives a crash.
    name_durable: bool,
}

#[derive(Debug, Default)]
struct State {
    files: BTreeMap<u32, FileImage>,
    ops: u64,
    crash_at: Option<u64>,
    fail_once_at: Option<u64>,
    hold_syncs: bool,
    /// A full disk: the live images together hold at most this many bytes.
    capacity: Option<u64>,
}

impl State {
    fn used(&self) -> u64 {
        self.files.values().map(|f| f.live.len() as u64).sum()
    }
}

impl State {
    /// Counts one mutating operation; fails it (and all later ones) at the crash point,
    /// or only it at the fail-once point.
    fn op(&mut self) -> io::Result<()> {
        let k = self.ops;
        self.ops += 1;
        match (self.crash_at, self.fail_once_at) {
            (Some(c), _) if k >= c => Err(io::Error::other(format!("crashfs: crashed at op {c}"))),
            (_, Some(f)) if k == f => Err(io::Error::other(format!("crashfs: op {f} failed"))),
            _ => Ok(()),
        }
    }
}

/// How much of each file's unsynced tail survives a crash.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tear {
    /// Nothing beyond the durable image (unsynced data is lost).
    None,
    /// Everything written survives (the writes reached disk, the sync never returned).
    All,
    /// The first `n` bytes of the unsynced tail survive.
    Prefix(usize),
}

/// The in-memory crash-test file system. Cloning shares the same files.
#[derive(Clone, Debug, Default)]
pub struct CrashFs {
    state: Arc<Mutex<State>>,
    released: Arc<Condvar>,
}

impl CrashFs {
    /// An empty file system that never crashes.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock is a test failure already; keep going.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Mutating operations performed so far.
    pub fn ops(&self) -> u64 {
        self.lock().ops
    }

    /// Operation `k` (0-based, counted from creation) and all later ones fail.
    pub fn crash_at(&self, k: u64) {
        self.lock().crash_at = Some(k);
    }

    /// Only operation `k` fails (an I/O error the device recovers from); later ones work.
    pub fn fail_once_at(&self, k: u64) {
        self.lock().fail_once_at = Some(k);
    }

    /// Limits the file system to `capacity` bytes (None: unlimited). A write past it
    /// writes what fits and fails with `StorageFull`, as a full disk does.
    pub fn set_capacity(&self, capacity: Option<u64>) {
        self.lock().capacity = capacity;
    }

    /// While held, every `sync_data` blocks (a slow disk), so tests can observe that
    /// nothing is acknowledged before its fsync completes.
    pub fn hold_syncs(&self, hold: bool) {
        self.lock().hold_syncs = hold;
        self.released.notify_all();
    }

    /// The file system after a power loss: files whose names were never made durable are
    /// gone; each file holds its durable image plus, per `tear`, part of its unsynced
    /// tail. Truncations that were not synced are undone likewise. The result does not
    /// crash.
    pub fn after_crash(&self, tear: Tear) -> CrashFs {
        let st = self.lock();
        let mut files = BTreeMap::new();
        for (&n, f) in &st.files {
            if !f.name_durable {
                continue;
            }
            let mut bytes = f.durable.clone();
            if f.live.len() > f.durable.len() && f.live.starts_with(&f.durable) {
                let tail = &f.live[f.durable.len()..];
                let keep = match tear {
                    Tear::None => 0,
                    Tear::All => tail.len(),
                    Tear::Prefix(k) => k.min(tail.len()),
                };
                bytes.extend_from_slice(&tail[..keep]);
            }
            files.insert(
                n,
                FileImage {
                    live: bytes.clone(),
                    durable: bytes,
                    name_durable: true,
                },
            );
        }
        CrashFs {
            state: Arc::new(Mutex::new(State {
                files,
                ..State::default()
            })),
            released: Arc::default(),
        }
    }

    /// The live bytes of a segment (for tests that tamper with them).
    pub fn contents(&self, segment: u32) -> Option<Vec<u8>> {
        self.lock().files.get(&segment).map(|f| f.live.clone())
    }

    /// Replaces a segment's bytes, live and durable (for tamper and tear tests).
    pub fn set_contents(&self, segment: u32, bytes: Vec<u8>) {
        let mut st = self.lock();
        let f = st.files.entry(segment).or_default();
        f.live = bytes.clone();
        f.durable = bytes;
        f.name_durable = true;
    }
}

impl SegmentDir for CrashFs {
    fn list(&self) -> io::Result<Vec<u32>> {
        Ok(self.lock().files.keys().copied().collect())
    }

    fn open(&self, segment: u32) -> io::Result<Arc<dyn SegmentFile>> {
        if !self.lock().files.contains_key(&segment) {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                segment_file_name(segment),
            ));
        }
        Ok(Arc::new(CrashFile {
            fs: self.clone(),
            segment,
        }))
    }

    fn create(&self, segment: u32) -> io::Result<Arc<dyn SegmentFile>> {
        let mut st = self.lock();
        st.op()?;
        if st.files.contains_key(&segment) {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                segment_file_name(segment),
            ));
        }
        st.files.insert(segment, FileImage::default());
        drop(st);
        Ok(Arc::new(CrashFile {
            fs: self.clone(),
            segment,
        }))
    }

    fn sync(&self) -> io::Result<()> {
        let mut st = self.lock();
        st.op()?;
        for f in st.files.values_mut() {
            f.name_durable = true;
        }
        Ok(())
    }

    fn free_bytes(&self) -> io::Result<Option<u64>> {
        let st = self.lock();
        Ok(st.capacity.map(|c| c.saturating_sub(st.used())))
    }

    fn describe(&self, segment: u32) -> String {
        format!("crashfs:{}", segment_file_name(segment))
    }
}

struct CrashFile {
    fs: CrashFs,
    segment: u32,
}

impl CrashFile {
    fn with<T>(
        &self,
        mutating: bool,
        f: impl FnOnce(&mut FileImage) -> io::Result<T>,
    ) -> io::Result<T> {
        let mut st = self.fs.lock();
        if mutating {
            st.op()?;
        }
        let file = st
            .files
            .get_mut(&self.segment)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "segment vanished"))?;
        f(file)
    }
}

impl SegmentFile for CrashFile {
    fn len(&self) -> io::Result<u64> {
        self.with(false, |f| Ok(f.live.len() as u64))
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.with(false, |f| {
            let start = usize::try_from(offset).map_err(io::Error::other)?;
            let src = start
                .checked_add(buf.len())
                .and_then(|end| f.live.get(start..end))
                .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?;
            buf.copy_from_slice(src);
            Ok(())
        })
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        let room = {
            let st = self.fs.lock();
            st.capacity.map(|c| c.saturating_sub(st.used()))
        };
        self.with(true, |f| {
            let start = usize::try_from(offset).map_err(io::Error::other)?;
            let mut end = start + buf.len();
            let mut full = false;
            if let Some(room) = room {
                let growth = end.saturating_sub(f.live.len()) as u64;
                if growth > room {
                    // What fits is written (a short write), then the disk is full.
                    end -= usize::try_from(growth - room).map_err(io::Error::other)?;
                    full = true;
                }
            }
            if f.live.len() < end {
                f.live.resize(end, 0);
            }
            f.live[start..end].copy_from_slice(&buf[..end - start]);
            if full {
                return Err(io::Error::new(
                    io::ErrorKind::StorageFull,
                    "crashfs: no space left",
                ));
            }
            Ok(())
        })
    }

    fn sync_data(&self) -> io::Result<()> {
        let mut st = self.fs.lock();
        while st.hold_syncs {
            st = self.fs.released.wait(st).unwrap_or_else(|p| p.into_inner());
        }
        drop(st);
        self.with(true, |f| {
            f.durable = f.live.clone();
            Ok(())
        })
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.with(true, |f| {
            f.live
                .resize(usize::try_from(len).map_err(io::Error::other)?, 0);
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsynced_writes_and_names_are_lost() {
        let fs = CrashFs::new();
        let a = fs.create(0).unwrap();
        fs.sync().unwrap();
        a.write_all_at(b"hello", 0).unwrap();
        a.sync_data().unwrap();
        a.write_all_at(b" world", 5).unwrap();
        let _b = fs.create(1).unwrap();
        let after = fs.after_crash(Tear::None);
        assert_eq!(after.list().unwrap(), vec![0]);
        assert_eq!(after.contents(0).unwrap(), b"hello");
        assert_eq!(
            fs.after_crash(Tear::Prefix(3)).contents(0).unwrap(),
            b"hello wo"
        );
        assert_eq!(
            fs.after_crash(Tear::All).contents(0).unwrap(),
            b"hello world"
        );
    }

    #[test]
    fn operations_fail_from_the_crash_point_on() {
        let fs = CrashFs::new();
        let a = fs.create(0).unwrap(); // op 0
        fs.crash_at(2);
        a.write_all_at(b"x", 0).unwrap(); // op 1
        assert!(a.sync_data().is_err()); // op 2
        assert!(a.write_all_at(b"y", 1).is_err());
        assert_eq!(fs.ops(), 4);
    }
}
