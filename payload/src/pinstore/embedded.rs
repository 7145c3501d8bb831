//! The embedded blockstore: one append-only pack log in a directory.
//!
//! Layout: `<dir>/pack-<generation:020>.log`, a sequence of records
//!
//! ```text
//! kind u8 (1 block, 2 pin, 3 unpin) ‖ cid_len u8 ‖ data_len u32 LE ‖ crc32c u32 LE
//! ‖ cid bytes ‖ data bytes
//! ```
//!
//! where the CRC-32C covers kind, the two lengths, the CID and the data. Blocks are
//! appended without fsync. [`PinStore::pin`] appends a pin record and returns once the log
//! is durable up to it, so a pin on disk implies its blocks are on disk (same file,
//! written before it). Durability is a group commit ([`crate::groupcommit`]): the pins,
//! unpins and syncs of concurrent uploads share one fdatasync, led by whichever caller
//! finds no sync running; the others wait for it or for the next one. On open the log is
//! replayed; a torn or damaged tail (short record, bad CRC, bad CID) is cut off and
//! fsynced, never served. Reads verify the block's sha2-256 against its CID.
//!
//! GC rewrites the live records into `pack-<generation+1>.log.tmp`, fsyncs it, renames it,
//! fsyncs the directory, then deletes the old pack. It removes blocks not reachable from a
//! pinned root that either were already in the log when it was opened (no upload of this
//! process can own them) or are reachable from a root unpinned since; blocks of an upload
//! still in flight are kept. The copy runs without the store's lock (the old pack's bytes
//! up to the plan never change): only planning and the last step hold it, and the last
//! step copies what was appended meanwhile as it is, so puts and reads go on while a GC
//! copies gigabytes.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use bytes::Bytes;

use super::{GcStats, PinStore, PinStoreError};
use crate::cid::{Cid, Codec};
use crate::dagpb::decode_node;
use crate::fsutil::sync_dir;
use crate::groupcommit::{file_sync, CommitError, GroupCommit, SharedSyncFn};
use crate::unixfs::Block;

const RECORD_HEADER_BYTES: usize = 10;
const KIND_BLOCK: u8 = 1;
const KIND_PIN: u8 = 2;
const KIND_UNPIN: u8 = 3;
/// Largest block accepted (Kubo's default block limit is 1 MiB; ours are ≤ 256 KiB + 14).
pub const BLOCK_BYTES_MAX: usize = 1024 * 1024;
/// Blocks up to this size are appended on the calling task (a write into the page cache
/// of a few microseconds, cheaper than a hand-off to the blocking pool); larger ones on
/// the blocking pool, so a 256 KiB copy never stalls a runtime worker.
const INLINE_BLOCK_BYTES_MAX: usize = 16 * 1024;

/// Where a block's data lies in the pack.
#[derive(Clone, Debug)]
struct Entry {
    data_offset: u64,
    data_len: u32,
    links: Vec<Cid>,
    /// In the log when it was opened: no upload of this process can own it.
    settled: bool,
}

struct Inner {
    dir: PathBuf,
    generation: u64,
    file: Arc<File>,
    write_offset: u64,
    index: HashMap<Cid, Entry>,
    pins: HashSet<Cid>,
    unpinned: HashSet<Cid>,
    stored_bytes: u64,
    /// Bytes written since open, across GC's file swaps: the group commit's LSN.
    written_lsn: u64,
    poisoned: bool,
    /// Run by a GC between its copy and its last step (tests interleave writes there).
    #[cfg(test)]
    gc_pause: Option<Box<dyn FnOnce() + Send>>,
}

/// A content-addressed blockstore in a directory; see the module documentation.
pub struct EmbeddedStore {
    inner: Arc<Mutex<Inner>>,
    commit: Arc<GroupCommit>,
    /// fdatasync the current pack, returning the LSN written before it (what a group's
    /// leader runs).
    sync: SharedSyncFn,
    /// Held by the GC running, if any.
    gc_running: Arc<Mutex<()>>,
}

fn pack_name(generation: u64) -> String {
    format!("pack-{generation:020}.log")
}

fn encode_record(kind: u8, cid: &Cid, data: &[u8]) -> Vec<u8> {
    let cid_bytes = cid.to_bytes();
    assert!(cid_bytes.len() <= u8::MAX as usize);
    assert!(data.len() <= BLOCK_BYTES_MAX);
    let mut record = Vec::with_capacity(RECORD_HEADER_BYTES + cid_bytes.len() + data.len());
    record.push(kind);
    record.push(cid_bytes.len() as u8);
    record.extend_from_slice(&(data.len() as u32).to_le_bytes());
    let mut crc = crc32c::crc32c(&record[..6]);
    crc = crc32c::crc32c_append(crc, &cid_bytes);
    crc = crc32c::crc32c_append(crc, data);
    record.extend_from_slice(&crc.to_le_bytes());
    record.extend_from_slice(&cid_bytes);
    record.extend_from_slice(data);
    record
}

/// One replayed record.
struct Record {
    kind: u8,
    cid: Cid,
    data_offset: u64,
    data: Vec<u8>,
}

/// Reads the next record; `Ok(None)` at a clean end or at a torn/damaged tail.
fn read_record(reader: &mut impl Read, offset: u64) -> io::Result<Option<(Record, u64)>> {
    let mut header = [0u8; RECORD_HEADER_BYTES];
    if !read_full(reader, &mut header)? {
        return Ok(None);
    }
    let kind = header[0];
    let cid_len = header[1] as usize;
    let data_len = u32::from_le_bytes(header[2..6].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_le_bytes(header[6..10].try_into().expect("4 bytes"));
    if !(KIND_BLOCK..=KIND_UNPIN).contains(&kind) || data_len > BLOCK_BYTES_MAX || cid_len > 64 {
        return Ok(None);
    }
    let mut body = vec![0u8; cid_len + data_len];
    if !read_full(reader, &mut body)? {
        return Ok(None);
    }
    let actual = crc32c::crc32c_append(crc32c::crc32c(&header[..6]), &body);
    if actual != crc {
        return Ok(None);
    }
    let Ok(cid) = Cid::from_bytes(&body[..cid_len]) else {
        return Ok(None);
    };
    let data = body.split_off(cid_len);
    let data_offset = offset + (RECORD_HEADER_BYTES + cid_len) as u64;
    let next = data_offset + data_len as u64;
    Ok(Some((
        Record {
            kind,
            cid,
            data_offset,
            data,
        },
        next,
    )))
}

/// Fills `buf`; false if the input ended first (a torn tail when partly read).
fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<bool> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => return Ok(false),
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

fn block_links(cid: &Cid, data: &[u8]) -> Result<Vec<Cid>, PinStoreError> {
    match cid.codec() {
        Codec::Raw => Ok(Vec::new()),
        Codec::DagPb => {
            decode_node(data)
                .map(|node| node.links)
                .map_err(|e| PinStoreError::InvalidBlock {
                    cid: *cid,
                    reason: e.to_string(),
                })
        }
    }
}

impl EmbeddedStore {
    /// Opens the store in `dir` (created if missing), replaying its log and cutting off a
    /// torn tail.
    pub fn open(dir: &Path) -> Result<EmbeddedStore, PinStoreError> {
        crate::fsutil::create_dir_durably(dir)?;
        let mut generations = Vec::new();
        for entry in fs::read_dir(dir)? {
            let name = entry?.file_name();
            let name = name.to_string_lossy();
            if name.ends_with(".tmp") {
                // A GC that crashed before its rename; the old pack is still complete.
                fs::remove_file(dir.join(&*name))?;
            } else if let Some(number) = name
                .strip_prefix("pack-")
                .and_then(|n| n.strip_suffix(".log"))
            {
                if let Ok(generation) = number.parse::<u64>() {
                    generations.push(generation);
                }
            }
        }
        generations.sort_unstable();
        let generation = generations.last().copied().unwrap_or(1);
        for old in &generations[..generations.len().saturating_sub(1)] {
            // A GC renamed its new pack but crashed before deleting the old one.
            fs::remove_file(dir.join(pack_name(*old)))?;
        }
        let path = dir.join(pack_name(generation));
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)?;
        sync_dir(dir)?;
        let mut inner = Inner {
            dir: dir.to_path_buf(),
            generation,
            file: Arc::new(file),
            write_offset: 0,
            index: HashMap::new(),
            pins: HashSet::new(),
            unpinned: HashSet::new(),
            stored_bytes: 0,
            written_lsn: 0,
            poisoned: false,
            #[cfg(test)]
            gc_pause: None,
        };
        inner.replay(&path)?;
        let inner = Arc::new(Mutex::new(inner));
        let sync = file_sync(Arc::clone(&inner), |inner| {
            (Arc::clone(&inner.file), inner.written_lsn)
        });
        Ok(EmbeddedStore {
            inner,
            commit: Arc::new(GroupCommit::new(0)),
            sync,
            gc_running: Arc::default(),
        })
    }

    /// Runs `operation` under the lock on the calling task (it appends a small record at
    /// most), then waits without the lock until the log is durable up to everything
    /// written before it returned: a group commit shared with every concurrent caller.
    async fn run_durably<F>(&self, operation: F) -> Result<(), PinStoreError>
    where
        F: FnOnce(&mut Inner) -> Result<(), PinStoreError>,
    {
        let lsn = {
            let mut guard = lock(&self.inner);
            guard.check_writable(&self.commit)?;
            operation(&mut guard)?;
            guard.written_lsn
        };
        self.commit
            .wait_durable_async(lsn, &self.sync)
            .await
            .map_err(|error| match error {
                CommitError::Poisoned => PinStoreError::Poisoned,
                CommitError::Io(error) => PinStoreError::Io(error),
            })
    }

    /// fdatasync calls on the pack log since open (replay, group commits, GC).
    pub fn fsyncs(&self) -> u64 {
        self.commit.fsyncs()
    }

    /// Runs `operation` under the lock on the blocking pool.
    async fn run<T, F>(&self, operation: F) -> Result<T, PinStoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Inner) -> Result<T, PinStoreError> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || {
            let mut guard = lock(&inner);
            operation(&mut guard)
        })
        .await
        .expect("a pin store operation panicked")
    }
}

fn lock(inner: &Mutex<Inner>) -> MutexGuard<'_, Inner> {
    // A panic while holding the lock is a bug; the state is still the log's, so go on.
    inner
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Inner {
    fn replay(&mut self, path: &Path) -> Result<(), PinStoreError> {
        let file_len = self.file.metadata()?.len();
        let mut reader = BufReader::with_capacity(1 << 20, File::open(path)?);
        let mut offset = 0u64;
        while let Some((record, next)) = read_record(&mut reader, offset)? {
            match record.kind {
                KIND_BLOCK => {
                    if !record.cid.verifies(&record.data) {
                        break; // The CRC passed, yet the data is wrong: treat as a damaged tail.
                    }
                    let links = block_links(&record.cid, &record.data).unwrap_or_default();
                    self.insert_entry(
                        record.cid,
                        record.data_offset,
                        record.data.len(),
                        links,
                        true,
                    );
                }
                KIND_PIN => {
                    self.pins.insert(record.cid);
                    self.unpinned.remove(&record.cid);
                }
                _ => {
                    if self.pins.remove(&record.cid) {
                        self.unpinned.insert(record.cid);
                    }
                }
            }
            offset = next;
        }
        if offset < file_len {
            tracing::warn!(
                pack = %path.display(),
                discarded_bytes = file_len - offset,
                "embedded blockstore: cut off a torn or damaged tail"
            );
            self.file.set_len(offset)?;
            self.file.sync_all()?;
        }
        self.write_offset = offset;
        Ok(())
    }

    fn insert_entry(
        &mut self,
        cid: Cid,
        data_offset: u64,
        len: usize,
        links: Vec<Cid>,
        settled: bool,
    ) {
        let entry = Entry {
            data_offset,
            data_len: len as u32,
            links,
            settled,
        };
        if self.index.insert(cid, entry).is_none() {
            self.stored_bytes += len as u64;
        }
    }

    fn check_writable(&self, commit: &GroupCommit) -> Result<(), PinStoreError> {
        // fjall's rule: after a failed write or fsync the file's state is unknown.
        if self.poisoned || commit.is_poisoned() {
            Err(PinStoreError::Poisoned)
        } else {
            Ok(())
        }
    }

    fn append(&mut self, record: &[u8]) -> Result<u64, PinStoreError> {
        if self.poisoned {
            return Err(PinStoreError::Poisoned);
        }
        let offset = self.write_offset;
        if let Err(error) = (&*self.file).write_all(record) {
            // The file's tail is unknown now; replaying on reopen will cut it.
            self.poisoned = true;
            return Err(error.into());
        }
        self.write_offset += record.len() as u64;
        self.written_lsn += record.len() as u64;
        Ok(offset)
    }

    /// The first block of `root`'s DAG this store lacks, if any.
    fn first_missing(&self, root: &Cid) -> Option<Cid> {
        let mut stack = vec![*root];
        let mut seen = HashSet::new();
        while let Some(cid) = stack.pop() {
            if !seen.insert(cid) {
                continue;
            }
            match self.index.get(&cid) {
                Some(entry) => stack.extend(entry.links.iter().copied()),
                None => return Some(cid),
            }
        }
        None
    }

    fn reachable_from<'a>(&self, roots: impl Iterator<Item = &'a Cid>) -> HashSet<Cid> {
        let mut reached = HashSet::new();
        let mut stack: Vec<Cid> = roots.copied().collect();
        while let Some(cid) = stack.pop() {
            if reached.insert(cid) {
                if let Some(entry) = self.index.get(&cid) {
                    stack.extend(entry.links.iter().copied());
                }
            }
        }
        reached
    }

    /// GC's first step, under the lock: what to remove, and a snapshot of what to copy.
    fn gc_plan(&mut self, commit: &GroupCommit) -> Result<Option<GcPlan>, PinStoreError> {
        self.check_writable(commit)?;
        let live = self.reachable_from(self.pins.iter());
        let released = self.reachable_from(self.unpinned.iter());
        let doomed: HashSet<Cid> = self
            .index
            .iter()
            .filter(|(cid, entry)| !live.contains(cid) && (entry.settled || released.contains(cid)))
            .map(|(cid, _)| *cid)
            .collect();
        if doomed.is_empty() {
            self.unpinned.clear();
            return Ok(None);
        }
        // Sorted by offset: the new pack keeps the old order (children before parents).
        let mut kept: Vec<(Cid, u64, u32)> = self
            .index
            .iter()
            .filter(|(c, _)| !doomed.contains(c))
            .map(|(cid, entry)| (*cid, entry.data_offset, entry.data_len))
            .collect();
        kept.sort_by_key(|(_, offset, _)| *offset);
        Ok(Some(GcPlan {
            dir: self.dir.clone(),
            generation: self.generation + 1,
            file: Arc::clone(&self.file),
            copied_up_to: self.write_offset,
            kept,
            pins: self.pins.iter().copied().collect(),
            doomed,
            unpinned: self.unpinned.iter().copied().collect(),
        }))
    }

    /// GC's last step, under the lock again: what was written to the old pack while the
    /// copy ran (blocks, pins, unpins: copied as they are, after the copy, so a replay
    /// sees them in the same order), any doomed block a pin made live again meanwhile,
    /// then the new pack replaces the old one.
    fn gc_finish(
        &mut self,
        plan: &GcPlan,
        mut copy: GcCopy,
        commit: &GroupCommit,
    ) -> Result<GcStats, PinStoreError> {
        self.check_writable(commit)?;
        // The rest of the old pack's tail, written since the copy caught up.
        copy.copy_tail(&self.file, self.write_offset)?;
        let GcCopy {
            mut writer,
            mut offsets,
            mut offset,
            tail_base,
            ..
        } = copy;
        // A doomed block a pin reaches again (re-pinned while the copy ran).
        let live = self.reachable_from(self.pins.iter());
        let mut data = Vec::new();
        for cid in plan.doomed.iter().filter(|cid| live.contains(cid)) {
            let entry = &self.index[cid];
            let (data_offset, len) = copy_block(
                &self.file,
                (cid, entry.data_offset, entry.data_len),
                &mut writer,
                offset,
                &mut data,
            )?;
            offsets.insert(*cid, data_offset);
            offset += len;
        }
        let file = writer.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        commit.count_fsync();
        drop(file);
        let final_path = plan.dir.join(pack_name(plan.generation));
        fs::rename(plan.temporary(), &final_path)?;
        sync_dir(&self.dir)?;
        let new_file = OpenOptions::new()
            .read(true)
            .append(true)
            .open(&final_path)?;
        fs::remove_file(self.dir.join(pack_name(self.generation)))?;
        sync_dir(&self.dir)?;
        let mut stats = GcStats::default();
        let mut stored_bytes = 0u64;
        self.index.retain(|cid, entry| {
            let new_offset = if entry.data_offset >= plan.copied_up_to {
                // In the tail, copied as it was.
                Some(entry.data_offset - plan.copied_up_to + tail_base)
            } else {
                offsets.get(cid).copied()
            };
            match new_offset {
                Some(new_offset) => {
                    entry.data_offset = new_offset;
                    stored_bytes += u64::from(entry.data_len);
                    stats.blocks_kept += 1;
                    true
                }
                None => {
                    stats.bytes_removed += u64::from(entry.data_len);
                    stats.blocks_removed += 1;
                    false
                }
            }
        });
        self.generation = plan.generation;
        self.file = Arc::new(new_file);
        self.write_offset = offset;
        self.stored_bytes = stored_bytes;
        // Unpinned since the plan: the next GC's.
        for cid in &plan.unpinned {
            self.unpinned.remove(cid);
        }
        // The new pack holds every live block and pin and was fsynced: whatever a group
        // commit was waiting for is durable (doomed blocks are not needed by anyone).
        commit.mark_durable(self.written_lsn);
        Ok(stats)
    }
}

/// Copies the block `(cid, data offset, data length)` of the pack `from` into `writer`,
/// where its record begins at `offset`, checked against its CID on the way (`data` is
/// the buffer). Returns the block's data offset in the new pack and the record's length.
fn copy_block(
    from: &File,
    (cid, data_offset, data_len): (&Cid, u64, u32),
    writer: &mut impl Write,
    offset: u64,
    data: &mut Vec<u8>,
) -> Result<(u64, u64), PinStoreError> {
    data.resize(data_len as usize, 0);
    from.read_exact_at(data, data_offset)?;
    if !cid.verifies(data) {
        return Err(PinStoreError::Corrupt(*cid));
    }
    let record = encode_record(KIND_BLOCK, cid, data);
    writer.write_all(&record)?;
    Ok((
        offset + (record.len() - data.len()) as u64,
        record.len() as u64,
    ))
}

/// What a GC copies, planned under the lock.
struct GcPlan {
    dir: PathBuf,
    generation: u64,
    /// The pack being replaced; its first `copied_up_to` bytes never change again.
    file: Arc<File>,
    copied_up_to: u64,
    /// Blocks kept, by offset in the old pack: (CID, data offset, data length).
    kept: Vec<(Cid, u64, u32)>,
    pins: Vec<Cid>,
    doomed: HashSet<Cid>,
    /// Roots unpinned when planned: their blocks are doomed by this GC.
    unpinned: Vec<Cid>,
}

impl GcPlan {
    fn temporary(&self) -> PathBuf {
        self.dir.join(format!("{}.tmp", pack_name(self.generation)))
    }

    /// GC's middle step, without the lock: the kept blocks and the pins into the new
    /// pack, fsynced (so the last step, under the lock, syncs only the tail).
    fn copy(&self) -> Result<GcCopy, PinStoreError> {
        let mut writer = io::BufWriter::with_capacity(1 << 20, File::create(self.temporary())?);
        let mut offsets = HashMap::with_capacity(self.kept.len());
        let mut offset = 0u64;
        let mut data = Vec::new();
        for &(cid, data_offset, data_len) in &self.kept {
            let (new_offset, len) = copy_block(
                &self.file,
                (&cid, data_offset, data_len),
                &mut writer,
                offset,
                &mut data,
            )?;
            offsets.insert(cid, new_offset);
            offset += len;
        }
        for pin in &self.pins {
            let record = encode_record(KIND_PIN, pin, &[]);
            writer.write_all(&record)?;
            offset += record.len() as u64;
        }
        writer.flush()?;
        writer.get_ref().sync_data()?;
        Ok(GcCopy {
            writer,
            offsets,
            offset,
            tail_base: offset,
            tail_from: self.copied_up_to,
        })
    }
}

/// The new pack as GC's middle step left it.
struct GcCopy {
    writer: io::BufWriter<File>,
    /// Kept blocks' data offsets in the new pack.
    offsets: HashMap<Cid, u64>,
    /// Bytes written to the new pack.
    offset: u64,
    /// Where the old pack's tail (from the plan's `copied_up_to`) begins in the new one.
    tail_base: u64,
    /// The old pack's bytes up to here are in the new pack.
    tail_from: u64,
}

impl GcCopy {
    /// Appends the old pack's records from `tail_from` up to `up_to` as they are, a MiB
    /// at a time.
    fn copy_tail(&mut self, old: &File, up_to: u64) -> Result<(), PinStoreError> {
        let mut buffer = vec![0u8; 1 << 20];
        while self.tail_from < up_to {
            let n = (up_to - self.tail_from).min(buffer.len() as u64) as usize;
            old.read_exact_at(&mut buffer[..n], self.tail_from)?;
            self.writer.write_all(&buffer[..n])?;
            self.tail_from += n as u64;
            self.offset += n as u64;
        }
        Ok(())
    }
}

#[async_trait]
impl PinStore for EmbeddedStore {
    async fn put_block(&self, block: Block) -> Result<(), PinStoreError> {
        // A block built here was hashed to its CID already (a third SHA-256 pass over
        // every payload byte, half the CPU of a large upload, for nothing).
        if !block.hashed_here() && !block.cid.verifies(&block.data) {
            return Err(PinStoreError::CidMismatch {
                expected: block.cid,
                actual: "bytes with another hash".to_string(),
            });
        }
        if block.data.len() > BLOCK_BYTES_MAX {
            return Err(PinStoreError::Unsupported("blocks larger than 1 MiB"));
        }
        let links = block_links(&block.cid, &block.data)?;
        let inline = block.data.len() <= INLINE_BLOCK_BYTES_MAX;
        let commit = Arc::clone(&self.commit);
        let append = move |inner: &mut Inner| {
            inner.check_writable(&commit)?;
            if inner.index.contains_key(&block.cid) {
                return Ok(());
            }
            let record = encode_record(KIND_BLOCK, &block.cid, &block.data);
            let offset = inner.append(&record)?;
            let data_offset = offset + (record.len() - block.data.len()) as u64;
            inner.insert_entry(block.cid, data_offset, block.data.len(), links, false);
            Ok(())
        };
        if inline {
            append(&mut lock(&self.inner))
        } else {
            self.run(append).await
        }
    }

    async fn get_block(&self, cid: &Cid) -> Result<Option<Bytes>, PinStoreError> {
        let location = {
            let inner = lock(&self.inner);
            inner
                .index
                .get(cid)
                .map(|entry| (Arc::clone(&inner.file), entry.data_offset, entry.data_len))
        };
        let Some((file, offset, len)) = location else {
            return Ok(None);
        };
        let cid = *cid;
        tokio::task::spawn_blocking(move || {
            let mut data = vec![0u8; len as usize];
            file.read_exact_at(&mut data, offset)?;
            if !cid.verifies(&data) {
                return Err(PinStoreError::Corrupt(cid));
            }
            Ok(Some(Bytes::from(data)))
        })
        .await
        .expect("a block read panicked")
    }

    async fn has_block(&self, cid: &Cid) -> Result<bool, PinStoreError> {
        Ok(lock(&self.inner).index.contains_key(cid))
    }

    async fn pin(&self, root: &Cid) -> Result<(), PinStoreError> {
        let root = *root;
        self.run_durably(move |inner| {
            if let Some(missing) = inner.first_missing(&root) {
                return Err(PinStoreError::Missing(missing));
            }
            if !inner.pins.contains(&root) {
                inner.append(&encode_record(KIND_PIN, &root, &[]))?;
                inner.pins.insert(root);
                inner.unpinned.remove(&root);
            }
            Ok(())
        })
        .await
    }

    async fn unpin(&self, root: &Cid) -> Result<(), PinStoreError> {
        let root = *root;
        self.run_durably(move |inner| {
            if inner.pins.contains(&root) {
                inner.append(&encode_record(KIND_UNPIN, &root, &[]))?;
                inner.pins.remove(&root);
                inner.unpinned.insert(root);
            }
            Ok(())
        })
        .await
    }

    async fn is_pinned(&self, root: &Cid) -> Result<bool, PinStoreError> {
        Ok(lock(&self.inner).pins.contains(root))
    }

    async fn pinned_roots(&self) -> Result<Vec<Cid>, PinStoreError> {
        Ok(lock(&self.inner).pins.iter().copied().collect())
    }

    async fn sync(&self) -> Result<(), PinStoreError> {
        self.run_durably(|_| Ok(())).await
    }

    async fn gc(&self) -> Result<GcStats, PinStoreError> {
        let (inner, commit, running) = (
            Arc::clone(&self.inner),
            Arc::clone(&self.commit),
            Arc::clone(&self.gc_running),
        );
        tokio::task::spawn_blocking(move || {
            // One GC at a time; puts, pins, unpins and reads go on while it copies.
            let _running = running.lock().unwrap_or_else(|p| p.into_inner());
            let Some(plan) = lock(&inner).gc_plan(&commit)? else {
                return Ok(GcStats {
                    blocks_kept: lock(&inner).index.len() as u64,
                    ..GcStats::default()
                });
            };
            let result = plan.copy().and_then(|mut copy| {
                #[cfg(test)]
                {
                    let pause = lock(&inner).gc_pause.take();
                    if let Some(pause) = pause {
                        pause();
                    }
                }
                // Catch up with what was appended during the copy without the lock, so
                // the last step copies only what comes meanwhile.
                let written = lock(&inner).write_offset;
                copy.copy_tail(&plan.file, written)?;
                lock(&inner).gc_finish(&plan, copy, &commit)
            });
            if result.is_err() {
                // The new pack, unfinished (once renamed, there is no temporary to
                // remove; the next open settles which pack is current).
                let _ = fs::remove_file(plan.temporary());
            }
            result
        })
        .await
        .expect("a GC panicked")
    }

    fn fsyncs(&self) -> u64 {
        EmbeddedStore::fsyncs(self)
    }

    async fn stored_bytes(&self) -> Result<u64, PinStoreError> {
        Ok(lock(&self.inner).stored_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cid::CidVersion;

    fn raw_block(bytes: &[u8]) -> Block {
        Block::claimed(
            Cid::for_block(CidVersion::V1, Codec::Raw, bytes),
            Bytes::copy_from_slice(bytes),
        )
    }

    fn pack_path(dir: &Path) -> PathBuf {
        let mut packs: Vec<PathBuf> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "log"))
            .collect();
        assert_eq!(packs.len(), 1);
        packs.pop().unwrap()
    }

    #[tokio::test]
    async fn a_torn_tail_is_cut_and_never_served() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (raw_block(b"first block"), raw_block(b"second block"));
        {
            let store = EmbeddedStore::open(dir.path()).unwrap();
            store.put_block(a.clone()).await.unwrap();
            store.put_block(b.clone()).await.unwrap();
            store.sync().await.unwrap();
        }
        let path = pack_path(dir.path());
        let len = fs::metadata(&path).unwrap().len();
        OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(len - 3)
            .unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        assert_eq!(store.get_block(&a.cid).await.unwrap().unwrap(), a.data);
        assert_eq!(store.get_block(&b.cid).await.unwrap(), None);
        store.put_block(b.clone()).await.unwrap();
        store.sync().await.unwrap();
        drop(store);
        let store = EmbeddedStore::open(dir.path()).unwrap();
        assert_eq!(store.get_block(&b.cid).await.unwrap().unwrap(), b.data);
    }

    #[tokio::test]
    async fn a_flipped_byte_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        let a = raw_block(b"some block bytes");
        let store = EmbeddedStore::open(dir.path()).unwrap();
        store.put_block(a.clone()).await.unwrap();
        store.sync().await.unwrap();
        let path = pack_path(dir.path());
        let mut bytes = fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0x40;
        // Rewrite in place, so the open store's file handle sees the damage.
        OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .write_all_at(&bytes, 0)
            .unwrap();
        assert!(matches!(
            store.get_block(&a.cid).await,
            Err(PinStoreError::Corrupt(_))
        ));
        drop(store);
        let store = EmbeddedStore::open(dir.path()).unwrap();
        assert_eq!(store.get_block(&a.cid).await.unwrap(), None);
    }

    /// A GC's copy holds no lock: while it is paused between its copy and its last step,
    /// blocks are stored and read, roots pinned and unpinned, and a root whose blocks the
    /// GC meant to remove is pinned again. Afterwards (and after a reopen) everything
    /// pinned reads back, the doomed block is gone, and what was unpinned meanwhile is the
    /// next GC's.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_gc_copies_without_the_lock_and_keeps_what_was_written_meanwhile() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
        let [a, b, c, d, e] = [
            b"kept: pinned throughout".as_slice(),
            b"unpinned, then pinned again during the copy",
            b"pinned, unpinned during the copy",
            b"stored and pinned during the copy",
            b"unpinned before the GC: removed",
        ]
        .map(raw_block);
        for block in [&a, &b, &c, &e] {
            store.put_block(block.clone()).await.unwrap();
            store.pin(&block.cid).await.unwrap();
        }
        store.unpin(&b.cid).await.unwrap();
        store.unpin(&e.cid).await.unwrap();

        let (paused_tx, paused_rx) = std::sync::mpsc::channel::<()>();
        let (resume_tx, resume_rx) = std::sync::mpsc::channel::<()>();
        lock(&store.inner).gc_pause = Some(Box::new(move || {
            paused_tx.send(()).unwrap();
            resume_rx.recv().unwrap();
        }));
        let gc = tokio::spawn({
            let store = Arc::clone(&store);
            async move { store.gc().await }
        });
        tokio::task::spawn_blocking(move || paused_rx.recv().unwrap())
            .await
            .unwrap();
        let bounded = std::time::Duration::from_secs(10);
        tokio::time::timeout(bounded, async {
            assert_eq!(store.get_block(&a.cid).await.unwrap().unwrap(), a.data);
            store.put_block(d.clone()).await.unwrap();
            store.pin(&d.cid).await.unwrap();
            store.unpin(&c.cid).await.unwrap();
            store.pin(&b.cid).await.unwrap();
        })
        .await
        .expect("the store answered while the GC was copying");
        resume_tx.send(()).unwrap();
        let stats = gc.await.unwrap().unwrap();
        assert_eq!((stats.blocks_removed, stats.blocks_kept), (1, 4));

        let check = |store: Arc<EmbeddedStore>| {
            let (a, b, c, d, e) = (a.clone(), b.clone(), c.clone(), d.clone(), e.clone());
            async move {
                for block in [&a, &b, &d] {
                    assert!(store.is_pinned(&block.cid).await.unwrap());
                    assert_eq!(
                        store.get_block(&block.cid).await.unwrap().unwrap(),
                        block.data
                    );
                }
                assert!(!store.is_pinned(&c.cid).await.unwrap());
                assert_eq!(store.get_block(&e.cid).await.unwrap(), None);
            }
        };
        check(Arc::clone(&store)).await;
        // C, unpinned during the copy, goes at the next GC.
        let stats = store.gc().await.unwrap();
        assert_eq!((stats.blocks_removed, stats.blocks_kept), (1, 3));
        assert_eq!(store.get_block(&c.cid).await.unwrap(), None);
        drop(store);
        let store = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
        check(Arc::clone(&store)).await;
        assert_eq!(store.get_block(&c.cid).await.unwrap(), None);
        assert_eq!(store.pinned_roots().await.unwrap().len(), 3);
    }
}
