//! The key log: wrapped data keys in one append-only file of fixed-size records, made
//! durable by group commit. Format and crash rules: docs/PAYLOADS.md §2.
//!
//! ```text
//! header (16 bytes): magic "MLKEYLOG" ‖ format version u32 LE (1) ‖ record bytes u32 LE (82)
//! record (82 bytes): kind u8 (1 key, 2 erased, 3 record key) ‖ key id (16 raw bytes)
//!                    ‖ wrapped key (61 bytes; zeros in an erased record)
//!                    ‖ crc32c u32 LE over the 78 bytes before it
//! ```
//!
//! Fixed-size records make two things simple: a torn tail is a whole number of bad slots
//! (never a guess at where the next record starts), and erasure can overwrite a key's own
//! record in place. Erasing a key appends an erased record (the tombstone) and waits until
//! it is durable, then rewrites the key's record in place as an erased record (same key
//! id, zeros for the wrapped key, new CRC) and waits until that is durable. The key id
//! bytes are the same before and after the overwrite, so even a torn overwrite (bad CRC)
//! still names its key, and the tombstone, durable before the overwrite started, says it
//! was being erased. Recovery finishes what an erasure began:
//!
//! - a slot with a bad CRC followed by no valid slot is a torn tail of writes never
//!   acknowledged: cut off and fsynced;
//! - a slot with a bad CRC before a valid slot is an in-place erasure cut short if a
//!   tombstone names its key id (it is rewritten as erased), and otherwise damage: open
//!   fails naming the offset (recovery never guesses which key it held);
//! - a key record whose key has a tombstone is overwritten again (the crash came between
//!   the tombstone and the overwrite).

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::crypto::WRAPPED_KEY_BYTES;
use crate::fsutil::sync_parent_dir;
use crate::groupcommit::{file_sync, CommitError, GroupCommit, SharedSyncFn};

/// Raw bytes of a key id (its 32 hex characters decoded).
pub type KeyIdBytes = [u8; 16];

const MAGIC: &[u8; 8] = b"MLKEYLOG";
const FORMAT_VERSION: u32 = 1;
pub(crate) const HEADER_BYTES: u64 = 16;
pub(crate) const RECORD_BYTES: usize = 1 + 16 + WRAPPED_KEY_BYTES + 4;
const _: () = assert!(RECORD_BYTES == 82);
const CRC_OFFSET: usize = RECORD_BYTES - 4;
const KIND_KEY: u8 = 1;
const KIND_ERASED: u8 = 2;
/// A record's content key (a live key like [`KIND_KEY`]): never taken for an orphan, as
/// a record whose submission was refused keeps its id and may be created later.
const KIND_RECORD_KEY: u8 = 3;

/// Errors of the key log.
#[derive(Debug, thiserror::Error)]
pub enum KeyLogError {
    /// File I/O.
    #[error("key log {path}: {source}")]
    Io {
        /// The log file.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// The log holds something recovery will not guess about.
    #[error("key log {path} is damaged at byte {offset}: {reason}")]
    Damaged {
        /// The log file.
        path: PathBuf,
        /// Where the damage starts.
        offset: u64,
        /// What is wrong.
        reason: &'static str,
    },
    /// A failed write or fsync; the log refuses writes until reopened.
    #[error("key log is poisoned after a failed write; restart to recover")]
    Poisoned,
}

/// What the log knows about a key id.
#[derive(Clone, Copy, Debug)]
enum Slot {
    /// The key's record is at `offset`; `record`: a record's content key
    /// ([`KIND_RECORD_KEY`]).
    Live { offset: u64, record: bool },
    /// A tombstone ends at `tombstone_lsn`; `key_offset` is the key's own record, still
    /// to be overwritten (or overwritten again: harmless) by the next `erase` of it.
    Erased {
        tombstone_lsn: u64,
        key_offset: Option<u64>,
    },
}

/// What [`KeyLog::get`] found.
pub(crate) enum Lookup {
    /// The wrapped key.
    Wrapped([u8; WRAPPED_KEY_BYTES]),
    /// Erased in this log.
    Erased,
    /// Not in this log.
    Absent,
}

struct Inner {
    file: Arc<File>,
    /// Offset of the next append.
    len: u64,
    /// Bytes written (appended or overwritten) since open: the group commit's LSN.
    written_lsn: u64,
    index: HashMap<KeyIdBytes, Slot>,
    poisoned: bool,
}

/// The key log; see the module documentation.
pub(crate) struct KeyLog {
    path: PathBuf,
    inner: Arc<Mutex<Inner>>,
    commit: Arc<GroupCommit>,
    /// fdatasync the log, returning the LSN written before it (a group's leader runs it).
    sync: SharedSyncFn,
}

fn encode(kind: u8, key_id: &KeyIdBytes, wrapped: &[u8; WRAPPED_KEY_BYTES]) -> [u8; RECORD_BYTES] {
    let mut record = [0u8; RECORD_BYTES];
    record[0] = kind;
    record[1..17].copy_from_slice(key_id);
    record[17..CRC_OFFSET].copy_from_slice(wrapped);
    let crc = crc32c::crc32c(&record[..CRC_OFFSET]);
    record[CRC_OFFSET..].copy_from_slice(&crc.to_le_bytes());
    record
}

fn erased_record(key_id: &KeyIdBytes) -> [u8; RECORD_BYTES] {
    encode(KIND_ERASED, key_id, &[0u8; WRAPPED_KEY_BYTES])
}

/// A slot's kind if its CRC and kind are valid.
fn decode_kind(record: &[u8]) -> Option<u8> {
    let crc = u32::from_le_bytes(record[CRC_OFFSET..].try_into().expect("4 bytes"));
    let valid = crc32c::crc32c(&record[..CRC_OFFSET]) == crc
        && matches!(record[0], KIND_KEY | KIND_ERASED | KIND_RECORD_KEY);
    valid.then_some(record[0])
}

/// The kind of a live key's record.
fn live_kind(record_key: bool) -> u8 {
    if record_key {
        KIND_RECORD_KEY
    } else {
        KIND_KEY
    }
}

fn key_id_of(record: &[u8]) -> KeyIdBytes {
    record[1..17].try_into().expect("16 bytes")
}

fn header() -> [u8; HEADER_BYTES as usize] {
    let mut header = [0u8; HEADER_BYTES as usize];
    header[..8].copy_from_slice(MAGIC);
    header[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    header[12..].copy_from_slice(&(RECORD_BYTES as u32).to_le_bytes());
    header
}

/// What a key log holds: live keys (wrapped, and whether each is a record's content
/// key) and erased key ids.
pub(crate) struct Contents {
    pub(crate) keys: Vec<(KeyIdBytes, [u8; WRAPPED_KEY_BYTES], bool)>,
    pub(crate) erased: Vec<KeyIdBytes>,
}

/// Writes a new key log at `path` (which must not exist) holding `contents`, and makes
/// it durable (the file and its directory): the next log of a master key rotation.
pub(crate) fn write_new(path: &Path, contents: &Contents) -> io::Result<()> {
    let mut out = Vec::with_capacity(
        HEADER_BYTES as usize + RECORD_BYTES * (contents.keys.len() + contents.erased.len()),
    );
    out.extend_from_slice(&header());
    for (id, wrapped, record) in &contents.keys {
        out.extend_from_slice(&encode(live_kind(*record), id, wrapped));
    }
    for id in &contents.erased {
        out.extend_from_slice(&erased_record(id));
    }
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(&out)?;
    file.sync_all()?;
    sync_parent_dir(path)
}

impl KeyLog {
    /// Opens (creating if missing) the log at `path` and recovers it.
    pub(crate) fn open(path: &Path) -> Result<KeyLog, KeyLogError> {
        let io_error = |source| KeyLogError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            // Never: the log is the only copy of the keys.
            .truncate(false)
            .mode(0o600)
            .open(path)
            .map_err(io_error)?;
        let mut bytes = Vec::new();
        (&file).read_to_end(&mut bytes).map_err(io_error)?;
        if bytes.len() < HEADER_BYTES as usize {
            // New, or created by a crash before its header was durable: no record can
            // have been acknowledged before the header was (see `create_header`).
            file.set_len(0).map_err(io_error)?;
            file.write_all_at(&header(), 0).map_err(io_error)?;
            file.sync_all().map_err(io_error)?;
            sync_parent_dir(path).map_err(io_error)?;
            bytes = header().to_vec();
        }
        if bytes[..HEADER_BYTES as usize] != header() {
            return Err(KeyLogError::Damaged {
                path: path.to_path_buf(),
                offset: 0,
                reason: "not a key log of format version 1",
            });
        }
        let recovered = recover(path, &file, &bytes)?;
        let inner = Arc::new(Mutex::new(Inner {
            file: Arc::new(file),
            len: recovered.len,
            written_lsn: 0,
            index: recovered.index,
            poisoned: false,
        }));
        let sync = file_sync(Arc::clone(&inner), |inner| {
            (Arc::clone(&inner.file), inner.written_lsn)
        });
        Ok(KeyLog {
            path: path.to_path_buf(),
            inner,
            commit: Arc::new(GroupCommit::new(0)),
            sync,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Changes under the lock are index updates after a completed write; a panic
        // elsewhere leaves them consistent.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn io_error(&self, source: io::Error) -> KeyLogError {
        KeyLogError::Io {
            path: self.path.clone(),
            source,
        }
    }

    /// Writes `record` at `offset` (the end, or a key's own slot); returns the LSN after it.
    fn write(inner: &mut Inner, record: &[u8], offset: u64) -> Result<u64, io::Error> {
        // Positioned writes on a file opened without O_APPEND (Linux ignores the offset of
        // pwrite on an O_APPEND file).
        if let Err(error) = inner.file.write_all_at(record, offset) {
            inner.poisoned = true;
            return Err(error);
        }
        inner.written_lsn += record.len() as u64;
        Ok(inner.written_lsn)
    }

    fn commit_error(&self, error: CommitError) -> KeyLogError {
        match error {
            CommitError::Poisoned => KeyLogError::Poisoned,
            CommitError::Io(source) => self.io_error(source),
        }
    }

    pub(crate) fn wait_durable(&self, lsn: u64) -> Result<(), KeyLogError> {
        self.commit
            .wait_durable(lsn, &*self.sync)
            .map_err(|e| self.commit_error(e))
    }

    /// Returns once everything up to `lsn` is durable (the group commit of async callers).
    pub(crate) async fn wait_durable_async(&self, lsn: u64) -> Result<(), KeyLogError> {
        self.commit
            .wait_durable_async(lsn, &self.sync)
            .await
            .map_err(|e| self.commit_error(e))
    }

    /// Returns once every record written so far is durable: a key read from the index may
    /// have been appended by a caller still waiting for its group commit.
    pub(crate) async fn wait_written_durable_async(&self) -> Result<(), KeyLogError> {
        let lsn = self.lock().written_lsn;
        self.wait_durable_async(lsn).await
    }

    /// [`Self::wait_written_durable_async`] for blocking callers.
    pub(crate) fn wait_written_durable(&self) -> Result<(), KeyLogError> {
        let lsn = self.lock().written_lsn;
        self.wait_durable(lsn)
    }

    fn check_writable(&self, inner: &Inner) -> Result<(), KeyLogError> {
        if inner.poisoned || self.commit.is_poisoned() {
            Err(KeyLogError::Poisoned)
        } else {
            Ok(())
        }
    }

    /// Appends `wrapped` for `key_id`; returns once it is durable. `Ok(false)` (nothing
    /// written) if the log knows the key id already. (The key store appends and waits in
    /// two steps, to wait async; the tests use this.)
    #[cfg(test)]
    pub(crate) fn append(
        &self,
        key_id: &KeyIdBytes,
        wrapped: &[u8; WRAPPED_KEY_BYTES],
    ) -> Result<bool, KeyLogError> {
        let Some(lsn) = self.append_unsynced(key_id, wrapped, false)? else {
            return Ok(false);
        };
        self.wait_durable(lsn)?;
        Ok(true)
    }

    /// Appends `wrapped` for `key_id` without waiting for it to be durable: the LSN to
    /// wait for ([`Self::wait_durable_async`]), or `None` (nothing written) if the log
    /// knows the key id already. A write of 82 bytes into the page cache.
    pub(crate) fn append_unsynced(
        &self,
        key_id: &KeyIdBytes,
        wrapped: &[u8; WRAPPED_KEY_BYTES],
        record: bool,
    ) -> Result<Option<u64>, KeyLogError> {
        let mut inner = self.lock();
        self.check_writable(&inner)?;
        if inner.index.contains_key(key_id) {
            return Ok(None);
        }
        let offset = inner.len;
        let lsn = Self::write(
            &mut inner,
            &encode(live_kind(record), key_id, wrapped),
            offset,
        )
        .map_err(|e| self.io_error(e))?;
        inner.len += RECORD_BYTES as u64;
        inner.index.insert(*key_id, Slot::Live { offset, record });
        Ok(Some(lsn))
    }

    /// The wrapped key of `key_id`, or whether it was erased or is absent.
    pub(crate) fn get(&self, key_id: &KeyIdBytes) -> Result<Lookup, KeyLogError> {
        let (file, offset) = {
            let inner = self.lock();
            match inner.index.get(key_id) {
                None => return Ok(Lookup::Absent),
                Some(Slot::Erased { .. }) => return Ok(Lookup::Erased),
                Some(Slot::Live { offset, .. }) => (Arc::clone(&inner.file), *offset),
            }
        };
        let mut record = [0u8; RECORD_BYTES];
        file.read_exact_at(&mut record, offset)
            .map_err(|e| self.io_error(e))?;
        let damaged = |reason| KeyLogError::Damaged {
            path: self.path.clone(),
            offset,
            reason,
        };
        if key_id_of(&record) != *key_id {
            return Err(damaged("the record names another key id"));
        }
        match decode_kind(&record) {
            Some(KIND_KEY | KIND_RECORD_KEY) => Ok(Lookup::Wrapped(
                record[17..CRC_OFFSET].try_into().expect("61 bytes"),
            )),
            // Erased in place after the index was read.
            Some(_) => Ok(Lookup::Erased),
            None => Err(damaged("the key's record fails its CRC")),
        }
    }

    /// True if the log has a tombstone for `key_id`.
    pub(crate) fn is_erased(&self, key_id: &KeyIdBytes) -> bool {
        matches!(self.lock().index.get(key_id), Some(Slot::Erased { .. }))
    }

    /// Erases `key_id`: a durable tombstone first, then the key's own record overwritten
    /// in place and made durable. Idempotent; also for ids the log never held (their
    /// tombstone records the erasure of a key kept in the old layout, or of none).
    pub(crate) fn erase(&self, key_id: &KeyIdBytes) -> Result<(), KeyLogError> {
        let (tombstone_lsn, key_offset) = {
            let mut inner = self.lock();
            self.check_writable(&inner)?;
            match inner.index.get(key_id).copied() {
                Some(Slot::Erased {
                    tombstone_lsn,
                    key_offset,
                }) => (tombstone_lsn, key_offset),
                found => {
                    let key_offset = match found {
                        Some(Slot::Live { offset, .. }) => Some(offset),
                        _ => None,
                    };
                    let offset = inner.len;
                    let tombstone_lsn = Self::write(&mut inner, &erased_record(key_id), offset)
                        .map_err(|e| self.io_error(e))?;
                    inner.len += RECORD_BYTES as u64;
                    inner.index.insert(
                        *key_id,
                        Slot::Erased {
                            tombstone_lsn,
                            key_offset,
                        },
                    );
                    (tombstone_lsn, key_offset)
                }
            }
        };
        // The tombstone is durable before the key's bytes are touched, so a torn overwrite
        // is always recognisable as an erasure (see the module documentation).
        self.wait_durable(tombstone_lsn)?;
        let Some(key_offset) = key_offset else {
            return Ok(());
        };
        let overwrite_lsn = {
            let mut inner = self.lock();
            self.check_writable(&inner)?;
            Self::write(&mut inner, &erased_record(key_id), key_offset)
                .map_err(|e| self.io_error(e))?
        };
        self.wait_durable(overwrite_lsn)
    }

    /// Some live key's id, if the log holds one.
    pub(crate) fn any_live_key_id(&self) -> Option<KeyIdBytes> {
        self.lock()
            .index
            .iter()
            .find(|(_, slot)| matches!(slot, Slot::Live { .. }))
            .map(|(id, _)| *id)
    }

    /// Key ids with a live key, records' content keys left out (the reconcile's
    /// candidates: a payload's key no record names is an orphan; a record's is not).
    pub(crate) fn live_payload_key_ids(&self) -> Vec<KeyIdBytes> {
        self.lock()
            .index
            .iter()
            .filter(|(_, slot)| matches!(slot, Slot::Live { record: false, .. }))
            .map(|(id, _)| *id)
            .collect()
    }

    /// Every live key's wrapped bytes and every erased key id (for a master key
    /// rotation, which holds off every other use of the log meanwhile).
    pub(crate) fn contents(&self) -> Result<Contents, KeyLogError> {
        let (live, erased): (Vec<(KeyIdBytes, bool)>, Vec<KeyIdBytes>) = {
            let inner = self.lock();
            let live = inner
                .index
                .iter()
                .filter_map(|(id, s)| match s {
                    Slot::Live { record, .. } => Some((*id, *record)),
                    Slot::Erased { .. } => None,
                })
                .collect();
            let erased = inner
                .index
                .iter()
                .filter(|(_, s)| matches!(s, Slot::Erased { .. }))
                .map(|(id, _)| *id)
                .collect();
            (live, erased)
        };
        let mut keys = Vec::with_capacity(live.len());
        for (id, record) in live {
            match self.get(&id)? {
                Lookup::Wrapped(w) => keys.push((id, w, record)),
                Lookup::Erased | Lookup::Absent => {}
            }
        }
        Ok(Contents { keys, erased })
    }

    /// fdatasync calls made by group commits since open.
    pub(crate) fn fsyncs(&self) -> u64 {
        self.commit.fsyncs()
    }

    /// Key ids in the in-memory index.
    pub(crate) fn indexed(&self) -> usize {
        self.lock().index.len()
    }
}

struct Recovered {
    len: u64,
    index: HashMap<KeyIdBytes, Slot>,
}

/// Rebuilds the index from the log's bytes, cutting a torn tail and finishing interrupted
/// erasures (see the module documentation); fsyncs if it changed the file.
fn recover(path: &Path, file: &File, bytes: &[u8]) -> Result<Recovered, KeyLogError> {
    let io_error = |source| KeyLogError::Io {
        path: path.to_path_buf(),
        source,
    };
    let body = &bytes[HEADER_BYTES as usize..];
    let slots: Vec<&[u8]> = body.chunks_exact(RECORD_BYTES).collect();
    let kinds: Vec<Option<u8>> = slots.iter().map(|s| decode_kind(s)).collect();
    let valid_slots = kinds.iter().rposition(Option::is_some).map_or(0, |i| i + 1);
    let offset_of = |i: usize| HEADER_BYTES + (i * RECORD_BYTES) as u64;
    let tombstones: std::collections::HashSet<KeyIdBytes> = slots[..valid_slots]
        .iter()
        .zip(&kinds)
        .filter(|(_, kind)| **kind == Some(KIND_ERASED))
        .map(|(slot, _)| key_id_of(slot))
        .collect();
    let mut index = HashMap::new();
    let mut overwrite = Vec::new();
    for (i, (slot, kind)) in slots[..valid_slots].iter().zip(&kinds).enumerate() {
        let key_id = key_id_of(slot);
        let erased = Slot::Erased {
            tombstone_lsn: 0,
            key_offset: None,
        };
        match kind {
            None if tombstones.contains(&key_id) => {
                overwrite.push((i, key_id));
                index.insert(key_id, erased);
            }
            None => {
                return Err(KeyLogError::Damaged {
                    path: path.to_path_buf(),
                    offset: offset_of(i),
                    reason: "a record fails its CRC and valid records follow it",
                })
            }
            Some(KIND_KEY | KIND_RECORD_KEY) if tombstones.contains(&key_id) => {
                overwrite.push((i, key_id));
                index.insert(key_id, erased);
            }
            Some(kind @ (KIND_KEY | KIND_RECORD_KEY)) => match index.entry(key_id) {
                Entry::Vacant(entry) => {
                    entry.insert(Slot::Live {
                        offset: offset_of(i),
                        record: *kind == KIND_RECORD_KEY,
                    });
                }
                Entry::Occupied(_) => {
                    return Err(KeyLogError::Damaged {
                        path: path.to_path_buf(),
                        offset: offset_of(i),
                        reason: "a key id is stored twice",
                    })
                }
            },
            Some(_) => {
                index.insert(key_id, erased);
            }
        }
    }
    let len = offset_of(valid_slots);
    let mut changed = false;
    if len < bytes.len() as u64 {
        tracing::warn!(
            log = %path.display(),
            discarded_bytes = bytes.len() as u64 - len,
            "key log: cut off a torn tail (never acknowledged)"
        );
        file.set_len(len).map_err(io_error)?;
        changed = true;
    }
    for (i, key_id) in overwrite {
        file.write_all_at(&erased_record(&key_id), offset_of(i))
            .map_err(io_error)?;
        changed = true;
    }
    if changed {
        file.sync_data().map_err(io_error)?;
    }
    Ok(Recovered { len, index })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> KeyIdBytes {
        [n; 16]
    }

    fn wrapped(n: u8) -> [u8; WRAPPED_KEY_BYTES] {
        [n.wrapping_mul(37) | 1; WRAPPED_KEY_BYTES]
    }

    fn is_live(log: &KeyLog, n: u8) -> bool {
        matches!(log.get(&id(n)).unwrap(), Lookup::Wrapped(w) if w == wrapped(n))
    }

    fn log_with(path: &Path, keys: &[u8]) {
        let log = KeyLog::open(path).unwrap();
        for n in keys {
            assert!(log.append(&id(*n), &wrapped(*n)).unwrap());
        }
    }

    fn slot_offset(i: usize) -> u64 {
        HEADER_BYTES + (i * RECORD_BYTES) as u64
    }

    #[test]
    fn a_torn_tail_is_cut_and_acknowledged_keys_stay() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.log");
        log_with(&path, &[1, 2, 3]);
        // A group of two more keys torn by a crash: one whole record and 41 bytes.
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.extend_from_slice(&encode(KIND_KEY, &id(4), &wrapped(4)));
        bytes.extend_from_slice(&encode(KIND_KEY, &id(5), &wrapped(5))[..41]);
        // The whole record was torn too (its last page never reached the disk).
        let torn = bytes.len() - 41 - 10;
        bytes[torn] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();

        let log = KeyLog::open(&path).unwrap();
        assert!(is_live(&log, 1) && is_live(&log, 2) && is_live(&log, 3));
        assert!(matches!(log.get(&id(4)).unwrap(), Lookup::Absent));
        assert_eq!(std::fs::metadata(&path).unwrap().len(), slot_offset(3));
        // Appends continue where the good records end.
        assert!(log.append(&id(6), &wrapped(6)).unwrap());
        drop(log);
        let log = KeyLog::open(&path).unwrap();
        assert!(is_live(&log, 6));
    }

    #[test]
    fn damage_before_valid_records_is_an_error_naming_its_offset() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.log");
        log_with(&path, &[1, 2, 3]);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[slot_offset(1) as usize + 30] ^= 0x01;
        std::fs::write(&path, &bytes).unwrap();
        match KeyLog::open(&path) {
            Err(KeyLogError::Damaged { offset, .. }) => assert_eq!(offset, slot_offset(1)),
            other => panic!("expected damage at slot 1, got {:?}", other.err()),
        }
        // Nothing was cut: the operator still has every byte.
        assert_eq!(std::fs::read(&path).unwrap(), bytes);
    }

    #[test]
    fn recovery_finishes_an_erasure_cut_short() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.log");
        log_with(&path, &[1, 2, 3]);
        // Key 1: the tombstone is durable, the in-place overwrite never happened.
        // Key 2: the tombstone is durable, the overwrite was torn (bad CRC).
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.extend_from_slice(&erased_record(&id(1)));
        bytes.extend_from_slice(&erased_record(&id(2)));
        let slot2 = slot_offset(1) as usize;
        bytes[slot2 + 17..slot2 + 40].fill(0);
        std::fs::write(&path, &bytes).unwrap();

        let log = KeyLog::open(&path).unwrap();
        assert!(matches!(log.get(&id(1)).unwrap(), Lookup::Erased));
        assert!(matches!(log.get(&id(2)).unwrap(), Lookup::Erased));
        assert!(is_live(&log, 3));
        let bytes = std::fs::read(&path).unwrap();
        for n in [1, 2] {
            let w = wrapped(n);
            assert!(!bytes.windows(20).any(|win| win == &w[..20]), "key {n}");
        }
        assert_eq!(log.live_payload_key_ids(), vec![id(3)]);
    }

    #[test]
    fn record_keys_are_live_kept_across_reopen_and_rotation_and_never_candidates() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.log");
        let log = KeyLog::open(&path).unwrap();
        let lsn = log
            .append_unsynced(&id(1), &wrapped(1), true)
            .unwrap()
            .unwrap();
        log.wait_durable(lsn).unwrap();
        assert!(log.append(&id(2), &wrapped(2)).unwrap());
        drop(log);
        let log = KeyLog::open(&path).unwrap();
        assert!(is_live(&log, 1) && is_live(&log, 2));
        // Only the payload key is a reconcile candidate.
        assert_eq!(log.live_payload_key_ids(), vec![id(2)]);
        // A rotation's new log keeps the kinds.
        let next = dir.path().join("next.log");
        write_new(&next, &log.contents().unwrap()).unwrap();
        let rotated = KeyLog::open(&next).unwrap();
        assert!(is_live(&rotated, 1));
        assert_eq!(rotated.live_payload_key_ids(), vec![id(2)]);
        // Erased like any key.
        rotated.erase(&id(1)).unwrap();
        assert!(matches!(rotated.get(&id(1)).unwrap(), Lookup::Erased));
    }

    #[test]
    fn erase_overwrites_in_place_and_is_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.log");
        log_with(&path, &[7, 8]);
        let log = KeyLog::open(&path).unwrap();
        log.erase(&id(7)).unwrap();
        log.erase(&id(7)).unwrap();
        log.erase(&id(9)).unwrap(); // never stored: a tombstone only
        assert!(!log.append(&id(7), &wrapped(7)).unwrap());
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(
            &bytes[slot_offset(0) as usize..slot_offset(1) as usize],
            &erased_record(&id(7))
        );
        assert!(is_live(&log, 8));
        drop(log);
        let log = KeyLog::open(&path).unwrap();
        assert!(log.is_erased(&id(7)) && log.is_erased(&id(9)) && is_live(&log, 8));
    }
}
