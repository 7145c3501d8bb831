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

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
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
    /// The log holds [`MAX_SLOTS`] records, the most its index addresses.
    #[error("key log {path} holds {MAX_SLOTS} records, the most one log can address")]
    Full {
        /// The log file.
        path: PathBuf,
    },
}

/// Records one log addresses: slot numbers are `u32`s with the top bit for the kind
/// (2^31 records of 82 bytes: 176 GB of key log).
pub(crate) const MAX_SLOTS: u32 = 1 << 31;
/// The top bit of an indexed slot number: a record's content key ([`KIND_RECORD_KEY`]).
const RECORD_KEY_BIT: u32 = 1 << 31;

/// A key being erased or erased: its tombstone ends at `tombstone_lsn`; `key_offset` is
/// the key's own record, still to be overwritten (or overwritten again: harmless) by the
/// next `erase` of it.
#[derive(Clone, Copy, Debug)]
struct Erased {
    tombstone_lsn: u64,
    key_offset: Option<u64>,
}

/// A live key's slot: its number, and whether it is a record's content key.
#[derive(Clone, Copy, Debug)]
struct Live {
    slot: u32,
    record: bool,
}

impl Live {
    fn packed(self) -> u32 {
        self.slot | if self.record { RECORD_KEY_BIT } else { 0 }
    }

    fn unpacked(packed: u32) -> Live {
        Live {
            slot: packed & !RECORD_KEY_BIT,
            record: packed & RECORD_KEY_BIT != 0,
        }
    }

    fn offset(self) -> u64 {
        offset_of(self.slot)
    }
}

/// The first 8 bytes of a key id: the live index's key.
type Prefix = [u8; 8];

fn prefix(key_id: &KeyIdBytes) -> Prefix {
    key_id[..8].try_into().expect("8 bytes")
}

/// What the log knows about its key ids, in memory: one entry per key the log holds, so
/// kept small. Key ids are random or a hash of a record id, so 8 of their 16 bytes tell
/// n keys apart but for about n^2 / 2^65 pairs (under one pair up to the log's 2^31 keys):
/// a live key is indexed by its first 8 bytes and a `u32` slot number (13 bytes a key in
/// the table, against 41 with the whole id and a slot enum); the full id is in the key's
/// record, which every lookup reads
/// anyway and compares. A key whose first 8 bytes another live key has is indexed by its
/// whole id in `collided`. Erased keys (few) are indexed by their whole id.
#[derive(Default)]
struct Index {
    live: foldhash::HashMap<Prefix, u32>,
    collided: foldhash::HashMap<KeyIdBytes, u32>,
    erased: foldhash::HashMap<KeyIdBytes, Erased>,
}

/// Where a live key is indexed.
#[derive(Clone, Copy)]
enum Found {
    /// In [`Index::live`].
    ByPrefix(Live),
    /// In [`Index::collided`].
    ByWholeId(Live),
}

impl Found {
    fn live(self) -> Live {
        match self {
            Found::ByPrefix(live) | Found::ByWholeId(live) => live,
        }
    }
}

impl Index {
    fn len(&self) -> usize {
        self.live.len() + self.collided.len() + self.erased.len()
    }

    /// Every live key's slot, in slot order.
    fn live_slots(&self) -> Vec<Live> {
        let mut slots: Vec<Live> = self
            .live
            .values()
            .chain(self.collided.values())
            .map(|packed| Live::unpacked(*packed))
            .collect();
        slots.sort_unstable_by_key(|live| live.slot);
        slots
    }

    /// The live key `key_id`, if indexed: a candidate by its prefix is read from `file`
    /// and compared.
    fn find(&self, file: &File, key_id: &KeyIdBytes) -> io::Result<Option<Found>> {
        let Some(packed) = self.live.get(&prefix(key_id)) else {
            return Ok(None);
        };
        let live = Live::unpacked(*packed);
        if read_key_id(file, live.slot)? == *key_id {
            return Ok(Some(Found::ByPrefix(live)));
        }
        Ok(self
            .collided
            .get(key_id)
            .map(|packed| Found::ByWholeId(Live::unpacked(*packed))))
    }

    /// Indexes a live key not indexed yet (checked by the caller with [`Self::find`]).
    fn insert_live(&mut self, key_id: &KeyIdBytes, live: Live) {
        match self.live.entry(prefix(key_id)) {
            std::collections::hash_map::Entry::Vacant(entry) => {
                entry.insert(live.packed());
            }
            std::collections::hash_map::Entry::Occupied(_) => {
                self.collided.insert(*key_id, live.packed());
            }
        }
    }

    /// Removes a live key found by [`Self::find`] (its prefix entry goes to a collided
    /// key sharing the prefix, if one is left, so every collided key's prefix is taken).
    fn remove_live(&mut self, key_id: &KeyIdBytes, found: Found) {
        match found {
            Found::ByWholeId(_) => {
                self.collided.remove(key_id);
            }
            Found::ByPrefix(_) => {
                let key = prefix(key_id);
                let heir = self.collided.keys().find(|id| prefix(id) == key).copied();
                match heir {
                    Some(heir) => {
                        let packed = self.collided.remove(&heir).expect("found above");
                        self.live.insert(key, packed);
                    }
                    None => {
                        self.live.remove(&key);
                    }
                }
            }
        }
    }
}

fn offset_of(slot: u32) -> u64 {
    HEADER_BYTES + u64::from(slot) * RECORD_BYTES as u64
}

/// The key id bytes of the record in `slot`.
fn read_key_id(file: &File, slot: u32) -> io::Result<KeyIdBytes> {
    let mut id = [0u8; 16];
    file.read_exact_at(&mut id, offset_of(slot) + 1)?;
    Ok(id)
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
    index: Index,
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
        let mut file_len = file.metadata().map_err(io_error)?.len();
        if file_len < HEADER_BYTES {
            // New, or created by a crash before its header was durable: no record can
            // have been acknowledged before the header was (it is synced before any).
            file.set_len(0).map_err(io_error)?;
            file.write_all_at(&header(), 0).map_err(io_error)?;
            file.sync_all().map_err(io_error)?;
            sync_parent_dir(path).map_err(io_error)?;
            file_len = HEADER_BYTES;
        }
        let mut found_header = [0u8; HEADER_BYTES as usize];
        file.read_exact_at(&mut found_header, 0).map_err(io_error)?;
        if found_header != header() {
            return Err(KeyLogError::Damaged {
                path: path.to_path_buf(),
                offset: 0,
                reason: "not a key log of format version 1",
            });
        }
        let recovered = recover(path, &file, file_len)?;
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
        if inner.index.erased.contains_key(key_id)
            || inner
                .index
                .find(&inner.file, key_id)
                .map_err(|e| self.io_error(e))?
                .is_some()
        {
            return Ok(None);
        }
        let slot = slot_of(inner.len);
        if slot >= MAX_SLOTS {
            return Err(KeyLogError::Full {
                path: self.path.clone(),
            });
        }
        let offset = inner.len;
        let lsn = Self::write(
            &mut inner,
            &encode(live_kind(record), key_id, wrapped),
            offset,
        )
        .map_err(|e| self.io_error(e))?;
        inner.len += RECORD_BYTES as u64;
        inner.index.insert_live(key_id, Live { slot, record });
        Ok(Some(lsn))
    }

    /// The wrapped key of `key_id`, or whether it was erased or is absent.
    pub(crate) fn get(&self, key_id: &KeyIdBytes) -> Result<Lookup, KeyLogError> {
        let (file, candidate) = {
            let inner = self.lock();
            if inner.index.erased.contains_key(key_id) {
                return Ok(Lookup::Erased);
            }
            match inner.index.live.get(&prefix(key_id)) {
                None => return Ok(Lookup::Absent),
                Some(packed) => (Arc::clone(&inner.file), Live::unpacked(*packed)),
            }
        };
        // Read outside the lock: a slot, once written, only ever holds its key id (an
        // erasure overwrites it in place with the same id).
        let record = self.read_record(&file, candidate.slot)?;
        if key_id_of(&record) == *key_id {
            return self.decode_live(&record, candidate.slot);
        }
        // Another key with the same first 8 bytes holds the prefix (or held it when
        // read: an erasure may have handed it on since). Rare: looked up again whole,
        // under the lock.
        let found = {
            let inner = self.lock();
            inner
                .index
                .find(&inner.file, key_id)
                .map_err(|e| self.io_error(e))?
        };
        let Some(found) = found else {
            return Ok(if self.is_erased(key_id) {
                Lookup::Erased
            } else {
                Lookup::Absent
            });
        };
        let slot = found.live().slot;
        let record = self.read_record(&file, slot)?;
        if key_id_of(&record) != *key_id {
            return Err(self.damaged(slot, "the record names another key id"));
        }
        self.decode_live(&record, slot)
    }

    fn read_record(&self, file: &File, slot: u32) -> Result<[u8; RECORD_BYTES], KeyLogError> {
        let mut record = [0u8; RECORD_BYTES];
        file.read_exact_at(&mut record, offset_of(slot))
            .map_err(|e| self.io_error(e))?;
        Ok(record)
    }

    fn damaged(&self, slot: u32, reason: &'static str) -> KeyLogError {
        KeyLogError::Damaged {
            path: self.path.clone(),
            offset: offset_of(slot),
            reason,
        }
    }

    /// What an indexed live key's record (read from `slot`) holds now.
    fn decode_live(&self, record: &[u8; RECORD_BYTES], slot: u32) -> Result<Lookup, KeyLogError> {
        match decode_kind(record) {
            Some(KIND_KEY | KIND_RECORD_KEY) => Ok(Lookup::Wrapped(
                record[17..CRC_OFFSET].try_into().expect("61 bytes"),
            )),
            // Erased in place after the index was read.
            Some(_) => Ok(Lookup::Erased),
            None => Err(self.damaged(slot, "the key's record fails its CRC")),
        }
    }

    /// True if the log has a tombstone for `key_id`.
    pub(crate) fn is_erased(&self, key_id: &KeyIdBytes) -> bool {
        self.lock().index.erased.contains_key(key_id)
    }

    /// Erases `key_id`: a durable tombstone first, then the key's own record overwritten
    /// in place and made durable. Idempotent; also for ids the log never held (their
    /// tombstone records the erasure of a key kept in the old layout, or of none).
    pub(crate) fn erase(&self, key_id: &KeyIdBytes) -> Result<(), KeyLogError> {
        let Erased {
            tombstone_lsn,
            key_offset,
        } = {
            let mut inner = self.lock();
            self.check_writable(&inner)?;
            match inner.index.erased.get(key_id).copied() {
                Some(erased) => erased,
                None => {
                    let found = inner
                        .index
                        .find(&inner.file, key_id)
                        .map_err(|e| self.io_error(e))?;
                    let offset = inner.len;
                    let tombstone_lsn = Self::write(&mut inner, &erased_record(key_id), offset)
                        .map_err(|e| self.io_error(e))?;
                    inner.len += RECORD_BYTES as u64;
                    if let Some(found) = found {
                        inner.index.remove_live(key_id, found);
                    }
                    let erased = Erased {
                        tombstone_lsn,
                        key_offset: found.map(|f| f.live().offset()),
                    };
                    inner.index.erased.insert(*key_id, erased);
                    erased
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

    /// Live keys' records and kinds (`true`: a record's content key), in slot order, read
    /// from the file a chunk at a time (a snapshot of the index).
    fn live_records(&self) -> Result<Vec<(Live, [u8; RECORD_BYTES])>, KeyLogError> {
        let (file, slots) = {
            let inner = self.lock();
            (Arc::clone(&inner.file), inner.index.live_slots())
        };
        let mut records = Vec::with_capacity(slots.len());
        let mut chunk = vec![0u8; RECOVERY_CHUNK_SLOTS * RECORD_BYTES];
        // The slots `chunk` holds: `first..first + held`.
        let (mut first, mut held) = (0u32, 0u32);
        let last = slots.last().map_or(0, |live| live.slot);
        for live in slots {
            if live.slot < first || live.slot >= first + held {
                first = live.slot;
                held = (last - first + 1).min(RECOVERY_CHUNK_SLOTS as u32);
                file.read_exact_at(&mut chunk[..held as usize * RECORD_BYTES], offset_of(first))
                    .map_err(|e| self.io_error(e))?;
            }
            let at = (live.slot - first) as usize * RECORD_BYTES;
            let record: [u8; RECORD_BYTES] =
                chunk[at..at + RECORD_BYTES].try_into().expect("82 bytes");
            records.push((live, record));
        }
        Ok(records)
    }

    /// Some live key's id, if the log holds one.
    pub(crate) fn any_live_key_id(&self) -> Result<Option<KeyIdBytes>, KeyLogError> {
        let (file, slot) = {
            let inner = self.lock();
            let first = inner.index.live.values().next().copied();
            (Arc::clone(&inner.file), first)
        };
        slot.map(|packed| read_key_id(&file, Live::unpacked(packed).slot))
            .transpose()
            .map_err(|e| self.io_error(e))
    }

    /// Key ids with a live key, records' content keys left out (the reconcile's
    /// candidates: a payload's key no record names is an orphan; a record's is not).
    pub(crate) fn live_payload_key_ids(&self) -> Result<Vec<KeyIdBytes>, KeyLogError> {
        Ok(self
            .live_records()?
            .iter()
            .filter(|(live, _)| !live.record)
            .map(|(_, bytes)| key_id_of(bytes))
            .collect())
    }

    /// Every live key's wrapped bytes and every erased key id (for a master key
    /// rotation, which holds off every other use of the log meanwhile).
    pub(crate) fn contents(&self) -> Result<Contents, KeyLogError> {
        let live = self.live_records()?;
        let erased = self.lock().index.erased.keys().copied().collect();
        let mut keys = Vec::with_capacity(live.len());
        for (live, bytes) in live {
            match decode_kind(&bytes) {
                Some(KIND_KEY | KIND_RECORD_KEY) => keys.push((
                    key_id_of(&bytes),
                    bytes[17..CRC_OFFSET].try_into().expect("61 bytes"),
                    live.record,
                )),
                // Erased in place after the index was read.
                Some(_) => {}
                None => return Err(self.damaged(live.slot, "the key's record fails its CRC")),
            }
        }
        Ok(Contents { keys, erased })
    }

    /// fdatasync calls made by group commits since open.
    pub(crate) fn fsyncs(&self) -> u64 {
        self.commit.fsyncs()
    }

    /// Key ids in the in-memory index (live and erased).
    pub(crate) fn indexed(&self) -> usize {
        self.lock().index.len()
    }
}

/// The slot a record at `offset` (past the header) is in; `u64::MAX` slots clamp.
fn slot_of(offset: u64) -> u32 {
    u32::try_from((offset - HEADER_BYTES) / RECORD_BYTES as u64).unwrap_or(u32::MAX)
}

struct Recovered {
    len: u64,
    index: Index,
}

/// Slots read at a time by recovery (~1 MiB): the log is never read whole into memory.
const RECOVERY_CHUNK_SLOTS: usize = 12_800;

/// Rebuilds the index from the log's `file_len` bytes in one pass, cutting a torn tail
/// and finishing interrupted erasures (see the module documentation); fsyncs if it
/// changed the file.
fn recover(path: &Path, file: &File, file_len: u64) -> Result<Recovered, KeyLogError> {
    let io_error = |source| KeyLogError::Io {
        path: path.to_path_buf(),
        source,
    };
    let damaged = |slot: u32, reason| KeyLogError::Damaged {
        path: path.to_path_buf(),
        offset: offset_of(slot),
        reason,
    };
    let slots = (file_len - HEADER_BYTES) / RECORD_BYTES as u64;
    if slots > u64::from(MAX_SLOTS) {
        return Err(damaged(MAX_SLOTS, "more records than one log can address"));
    }
    let slots = slots as u32;
    let mut index = Index::default();
    // Slots failing their CRC, and key records to overwrite as erased (their key has a
    // tombstone): both few.
    let mut bad: Vec<(u32, KeyIdBytes)> = Vec::new();
    let mut overwrite: Vec<(u32, KeyIdBytes)> = Vec::new();
    let mut valid_slots: u32 = 0;
    let mut chunk = vec![0u8; RECOVERY_CHUNK_SLOTS * RECORD_BYTES];
    let mut first: u32 = 0;
    while first < slots {
        let n = (slots - first).min(RECOVERY_CHUNK_SLOTS as u32);
        let bytes = &mut chunk[..n as usize * RECORD_BYTES];
        file.read_exact_at(bytes, offset_of(first))
            .map_err(io_error)?;
        for (i, record) in bytes.chunks_exact(RECORD_BYTES).enumerate() {
            let slot = first + i as u32;
            let key_id = key_id_of(record);
            let Some(kind) = decode_kind(record) else {
                bad.push((slot, key_id));
                continue;
            };
            valid_slots = slot + 1;
            match kind {
                KIND_KEY | KIND_RECORD_KEY if index.erased.contains_key(&key_id) => {
                    overwrite.push((slot, key_id));
                }
                KIND_KEY | KIND_RECORD_KEY => {
                    if index.find(file, &key_id).map_err(io_error)?.is_some() {
                        return Err(damaged(slot, "a key id is stored twice"));
                    }
                    let record = kind == KIND_RECORD_KEY;
                    index.insert_live(&key_id, Live { slot, record });
                }
                _ => {
                    if let Some(found) = index.find(file, &key_id).map_err(io_error)? {
                        index.remove_live(&key_id, found);
                        overwrite.push((found.live().slot, key_id));
                    }
                    index.erased.insert(
                        key_id,
                        Erased {
                            tombstone_lsn: 0,
                            key_offset: None,
                        },
                    );
                }
            }
        }
        first += n;
    }
    // A bad slot before the last valid one is an in-place erasure cut short, or damage.
    for (slot, key_id) in bad.iter().take_while(|(slot, _)| *slot < valid_slots) {
        if !index.erased.contains_key(key_id) {
            return Err(damaged(
                *slot,
                "a record fails its CRC and valid records follow it",
            ));
        }
        overwrite.push((*slot, *key_id));
    }
    let len = offset_of(valid_slots);
    let mut changed = false;
    if len < file_len {
        tracing::warn!(
            log = %path.display(),
            discarded_bytes = file_len - len,
            "key log: cut off a torn tail (never acknowledged)"
        );
        file.set_len(len).map_err(io_error)?;
        changed = true;
    }
    for (slot, key_id) in overwrite {
        file.write_all_at(&erased_record(&key_id), offset_of(slot))
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

    /// Ids sharing their first 8 bytes (the live index's key) and no more.
    fn sharing_prefix(n: u8) -> KeyIdBytes {
        let mut id = [0xab; 16];
        id[15] = n;
        id
    }

    #[test]
    fn ids_sharing_their_first_8_bytes_are_told_apart_across_erasure_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.log");
        let log = KeyLog::open(&path).unwrap();
        let (a, b, c) = (sharing_prefix(1), sharing_prefix(2), sharing_prefix(3));
        for (n, id) in [(1, a), (2, b), (3, c)] {
            assert!(log.append(&id, &wrapped(n)).unwrap());
            // Known whichever way it is indexed.
            assert!(!log.append(&id, &wrapped(n)).unwrap());
        }
        assert!(matches!(
            log.get(&sharing_prefix(4)).unwrap(),
            Lookup::Absent
        ));
        let check = |log: &KeyLog, live: &[(u8, KeyIdBytes)], erased: &[KeyIdBytes]| {
            for (n, id) in live {
                assert!(matches!(log.get(id).unwrap(), Lookup::Wrapped(w) if w == wrapped(*n)));
            }
            for id in erased {
                assert!(matches!(log.get(id).unwrap(), Lookup::Erased));
                assert!(log.is_erased(id));
            }
            let mut ids = log.live_payload_key_ids().unwrap();
            ids.sort();
            assert_eq!(ids, live.iter().map(|(_, id)| *id).collect::<Vec<_>>());
            assert_eq!(log.indexed(), live.len() + erased.len());
        };
        check(&log, &[(1, a), (2, b), (3, c)], &[]);
        // The prefix's holder erased: a key sharing the prefix takes its place.
        log.erase(&a).unwrap();
        check(&log, &[(2, b), (3, c)], &[a]);
        assert!(!log.append(&a, &wrapped(1)).unwrap());
        drop(log);
        let log = KeyLog::open(&path).unwrap();
        check(&log, &[(2, b), (3, c)], &[a]);
        log.erase(&c).unwrap();
        check(&log, &[(2, b)], &[a, c]);
        let rotated = dir.path().join("next.log");
        write_new(&rotated, &log.contents().unwrap()).unwrap();
        check(&KeyLog::open(&rotated).unwrap(), &[(2, b)], &[a, c]);
        // A key id stored twice under a shared prefix is damage, named by its offset.
        drop(log);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.extend_from_slice(&encode(KIND_KEY, &b, &wrapped(2)));
        std::fs::write(&path, &bytes).unwrap();
        match KeyLog::open(&path) {
            Err(KeyLogError::Damaged { offset, .. }) => assert_eq!(offset, slot_offset(5)),
            other => panic!("expected a twice-stored id, got {:?}", other.err()),
        }
    }

    #[test]
    fn recovery_reads_the_log_in_chunks_and_misses_nothing_at_their_edges() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.log");
        let many = |i: u32| {
            let mut id = [0u8; 16];
            id[..4].copy_from_slice(&i.to_le_bytes());
            id[8] = 1;
            id
        };
        let total = RECOVERY_CHUNK_SLOTS as u32 * 2 + 5;
        {
            let log = KeyLog::open(&path).unwrap();
            for i in 0..total {
                log.append_unsynced(&many(i), &wrapped(i as u8), i % 2 == 0)
                    .unwrap()
                    .unwrap();
            }
            log.wait_written_durable().unwrap();
        }
        // Key in the first slot of the second chunk: its erasure's tombstone durable, its
        // in-place overwrite torn. Key in the last slot of the first chunk: tombstone only.
        let edge = RECOVERY_CHUNK_SLOTS as u32;
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.extend_from_slice(&erased_record(&many(edge)));
        bytes.extend_from_slice(&erased_record(&many(edge - 1)));
        let torn = slot_offset(edge as usize) as usize;
        bytes[torn + 20..torn + 50].fill(0);
        std::fs::write(&path, &bytes).unwrap();

        let log = KeyLog::open(&path).unwrap();
        for i in [0, 1, edge - 2, edge + 1, total - 1] {
            assert!(
                matches!(log.get(&many(i)).unwrap(), Lookup::Wrapped(w) if w == wrapped(i as u8)),
                "key {i}"
            );
        }
        for i in [edge - 1, edge] {
            assert!(
                matches!(log.get(&many(i)).unwrap(), Lookup::Erased),
                "key {i}"
            );
        }
        assert_eq!(log.indexed(), total as usize);
        // Payload keys are the odd ones, less the erased one.
        assert_eq!(
            log.live_payload_key_ids().unwrap().len(),
            (total as usize / 2) - 1
        );
        let bytes = std::fs::read(&path).unwrap();
        for i in [edge - 1, edge] {
            let at = slot_offset(i as usize) as usize;
            assert_eq!(&bytes[at..at + RECORD_BYTES], &erased_record(&many(i)));
        }
    }

    #[test]
    fn an_indexed_key_costs_13_bytes_of_table() {
        // The live table's entry (plus hashbrown's one control byte): what a key costs
        // in memory, for every key the log holds.
        assert_eq!(std::mem::size_of::<(Prefix, u32)>(), 12);
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
        assert_eq!(log.live_payload_key_ids().unwrap(), vec![id(3)]);
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
        assert_eq!(log.live_payload_key_ids().unwrap(), vec![id(2)]);
        // A rotation's new log keeps the kinds.
        let next = dir.path().join("next.log");
        write_new(&next, &log.contents().unwrap()).unwrap();
        let rotated = KeyLog::open(&next).unwrap();
        assert!(is_live(&rotated, 1));
        assert_eq!(rotated.live_payload_key_ids().unwrap(), vec![id(2)]);
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
