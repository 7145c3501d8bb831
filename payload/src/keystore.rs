//! Wrapped data keys by key id.
//!
//! This is the only copy of a payload's key: it is not derived from the ledger and can
//! not be rebuilt, which is what makes erasure final. New keys go to the key log
//! `<keys>/keys.log` ([`crate::keylog`]): fixed-size records, made durable by group commit
//! (one fdatasync for every key stored while the previous sync ran). `store` and `destroy`
//! return only once their effect is durable.
//!
//! Data dirs written before the key log hold one file per key, `<keys>/<key_id>.key`,
//! and `<keys>/<key_id>.erased` tombstones. They are read as before (read old, write new):
//! `load` looks in the log first, then for the key's file. Destroying a key kept in a file
//! appends a durable tombstone to the log, then overwrites the file with zeros, fsyncs,
//! unlinks it and fsyncs the directory. (On flash storage an overwrite may not reach the
//! old cells; the wrapped key is useless without the master key, and
//! [`KeyStore::rotate_master`] re-wraps every key under a new one, after which the old
//! master key can be destroyed.)

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};

use crate::crypto::{CryptoError, DataKey, MasterKey, WRAPPED_KEY_BYTES};
use crate::fsutil::sync_dir;
pub use crate::keylog::KeyIdBytes;
use crate::keylog::{KeyLog, Lookup};

pub use crate::keylog::KeyLogError;

/// Key ids are 32 lowercase hex characters (128 random bits).
const KEY_ID_HEX_LEN: usize = 32;
/// The key log's file name in the key directory.
pub const KEY_LOG_FILE: &str = "keys.log";

/// Errors of the key store.
#[derive(Debug, thiserror::Error)]
pub enum KeyStoreError {
    /// The key id is not 32 lowercase hex characters.
    #[error("invalid key id (expected 32 lowercase hex characters)")]
    InvalidKeyId,
    /// No key was ever stored under this id.
    #[error("no key {0}")]
    NotFound(String),
    /// The key was destroyed.
    #[error("key {0} was erased")]
    Erased(String),
    /// The key exists already.
    #[error("key {0} exists already")]
    Exists(String),
    /// The master key given does not unwrap the keys stored here.
    #[error(
        "the master key does not unwrap the keys in {0}: it is not the key they were stored with"
    )]
    WrongMasterKey(PathBuf),
    /// Unwrapping or randomness failed.
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    /// The key log failed (I/O, damage recovery will not guess about, poisoned).
    #[error(transparent)]
    Log(#[from] KeyLogError),
    /// File I/O on the old layout's files.
    #[error("key store {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
}

/// What a stored key is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyKind {
    /// A payload's data key: an orphan (for the reconcile) when no record names it.
    Payload,
    /// A record's content key ([`record_key_id`]): never an orphan. A record whose
    /// submission was refused after its text was sealed keeps its id, and may be created
    /// later under the same key; destroying the key would make the id unusable for good.
    Record,
}

/// Durable store of wrapped data keys.
pub struct KeyStore {
    dir: PathBuf,
    /// The master key and the log of keys wrapped under it. Every use holds the read
    /// lock while it touches the log, so a master key rotation, which holds the write
    /// lock, sees every key appended before it and none after.
    current: RwLock<Arc<Keys>>,
    /// The directory held old-layout files (`<id>.key`, `<id>.erased`) when opened. This
    /// code never writes any, so without them at open a store never looks for them (a
    /// stat and an open per lookup of a new key were a third of a sealed ingest's CPU).
    old_layout: AtomicBool,
    /// Record keys read recently, unwrapped (a timeline page opens 50 records' text; a
    /// read of the log and an unwrap per record cost a third of a page). Bounded by
    /// [`KEY_CACHE_ENTRIES`]; a hit is checked against the log's erasures whenever a key
    /// was destroyed since it was cached, so a key destroyed is never served from here.
    cache: Mutex<foldhash::HashMap<KeyIdBytes, Cached>>,
    /// Keys destroyed since the store was opened: a cached key that saw the current
    /// count needs no look at the log (checking every hit was a tenth of a page's CPU).
    erasures: AtomicU64,
}

/// A key in the cache, with the erasure count read before it was loaded.
struct Cached {
    key: Arc<DataKey>,
    erasures: u64,
}

/// The master key and the key log wrapped under it.
struct Keys {
    master: MasterKey,
    log: KeyLog,
}

/// Unwrapped keys the cache holds at most (~64 bytes each with the map's overhead).
pub const KEY_CACHE_ENTRIES: usize = 65_536;

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> KeyStoreError + '_ {
    move |source| KeyStoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A fresh random key id.
pub fn new_key_id() -> Result<String, KeyStoreError> {
    let mut bytes = [0u8; KEY_ID_HEX_LEN / 2];
    getrandom::fill(&mut bytes).map_err(|e| CryptoError::Random(e.to_string()))?;
    Ok(hex::encode(bytes))
}

/// The key id of a record's content key, the key its clinical text is sealed under:
/// the first 16 bytes of SHA-256(`"medledger-record-key-v1\0"` ‖ record id), in hex. Derived,
/// so a record's key is found from its id alone, and one id names one key for life
/// (after erasure it stays erased).
pub fn record_key_id(record_id: &str) -> String {
    hex::encode(record_key_bytes(record_id))
}

/// [`record_key_id`]'s bytes.
pub fn record_key_bytes(record_id: &str) -> KeyIdBytes {
    use sha2::{Digest, Sha256};
    let mut hash = Sha256::new();
    hash.update(b"medledger-record-key-v1\0");
    hash.update(record_id.as_bytes());
    let mut id = [0u8; KEY_ID_HEX_LEN / 2];
    id.copy_from_slice(&hash.finalize()[..KEY_ID_HEX_LEN / 2]);
    id
}

/// The raw bytes of a valid key id.
fn parse_key_id(key_id: &str) -> Result<KeyIdBytes, KeyStoreError> {
    let valid = key_id.len() == KEY_ID_HEX_LEN
        && key_id
            .bytes()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c));
    if !valid {
        return Err(KeyStoreError::InvalidKeyId);
    }
    let mut bytes = [0u8; KEY_ID_HEX_LEN / 2];
    hex::decode_to_slice(key_id, &mut bytes).map_err(|_| KeyStoreError::InvalidKeyId)?;
    Ok(bytes)
}

impl KeyStore {
    /// Opens (creating if needed) the key directory `dir`, wrapping keys with `master`,
    /// and recovers its key log.
    pub fn open(dir: &Path, master: MasterKey) -> Result<KeyStore, KeyStoreError> {
        crate::fsutil::create_dir_durably(dir).map_err(io_error(dir))?;
        let log = KeyLog::open(&dir.join(KEY_LOG_FILE))?;
        let mut old_layout = false;
        for entry in fs::read_dir(dir).map_err(io_error(dir))? {
            let name = entry.map_err(io_error(dir))?.file_name();
            let name = name.to_string_lossy();
            old_layout |= name.ends_with(".key") || name.ends_with(".erased");
        }
        let any_live = log.any_live_key_id()?;
        let store = KeyStore {
            dir: dir.to_path_buf(),
            current: RwLock::new(Arc::new(Keys { master, log })),
            old_layout: AtomicBool::new(old_layout),
            cache: Mutex::new(foldhash::HashMap::default()),
            erasures: AtomicU64::new(0),
        };
        // A wrong master key (another node's file, a KMS answering for another store)
        // is refused here, not found out on the first read.
        if let Some(id) = any_live {
            match store.load(&hex::encode(id)) {
                Err(KeyStoreError::Crypto(CryptoError::Unwrap { .. })) => {
                    return Err(KeyStoreError::WrongMasterKey(dir.to_path_buf()))
                }
                Err(other) => return Err(other),
                Ok(_) => {}
            }
        }
        Ok(store)
    }

    /// The master key and the log, for one use (held only while the log is touched).
    fn keys(&self) -> RwLockReadGuard<'_, Arc<Keys>> {
        self.current.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether old-layout files may exist (see the field).
    fn old_layout(&self) -> bool {
        self.old_layout.load(Ordering::Acquire)
    }

    /// The old layout's file of a key.
    fn key_path(&self, key_id: &str) -> PathBuf {
        self.dir.join(format!("{key_id}.key"))
    }

    /// The old layout's tombstone of a key.
    fn tombstone_path(&self, key_id: &str) -> PathBuf {
        self.dir.join(format!("{key_id}.erased"))
    }

    /// Wraps and stores `key` under `key_id`; durable when it returns.
    pub fn store(&self, key_id: &str, key: &DataKey, kind: KeyKind) -> Result<(), KeyStoreError> {
        let (keys, lsn) = self.append(key_id, key, kind)?;
        Ok(keys.log.wait_durable(lsn)?)
    }

    /// [`Self::store`] for async callers: the append is a write into the page cache on
    /// the calling task, and the wait joins the key log's next group commit.
    pub async fn store_async(
        &self,
        key_id: &str,
        key: &DataKey,
        kind: KeyKind,
    ) -> Result<(), KeyStoreError> {
        let (keys, lsn) = self.append(key_id, key, kind)?;
        Ok(keys.log.wait_durable_async(lsn).await?)
    }

    /// Wraps `key` and appends it to the log; the log and the LSN to wait for. (A
    /// rotation after the append copies the key into its new log and makes it durable
    /// there; waiting on the old log then still returns once the key is durable.)
    fn append(
        &self,
        key_id: &str,
        key: &DataKey,
        kind: KeyKind,
    ) -> Result<(Arc<Keys>, u64), KeyStoreError> {
        let id = parse_key_id(key_id)?;
        // Ids are 128 random bits, so these never hit in practice; they keep the old
        // layout's keys from being shadowed all the same (two stats a store, only where
        // old files exist).
        if self.old_layout() && self.tombstone_path(key_id).exists() {
            return Err(KeyStoreError::Erased(key_id.to_string()));
        }
        if self.old_layout() && self.key_path(key_id).exists() {
            return Err(KeyStoreError::Exists(key_id.to_string()));
        }
        let keys = self.keys();
        let wrapped = keys.master.wrap(key_id, key)?;
        match keys
            .log
            .append_unsynced(&id, &wrapped, kind == KeyKind::Record)?
        {
            Some(lsn) => Ok((Arc::clone(&keys), lsn)),
            None if keys.log.is_erased(&id) => Err(KeyStoreError::Erased(key_id.to_string())),
            None => Err(KeyStoreError::Exists(key_id.to_string())),
        }
    }

    /// The data key stored under `key_id`.
    pub fn load(&self, key_id: &str) -> Result<DataKey, KeyStoreError> {
        let id = parse_key_id(key_id)?;
        let keys = self.keys();
        match keys.log.get(&id)? {
            Lookup::Wrapped(wrapped) => return Ok(keys.master.unwrap(key_id, &wrapped)?),
            Lookup::Erased => return Err(KeyStoreError::Erased(key_id.to_string())),
            Lookup::Absent if !self.old_layout() => {
                return Err(KeyStoreError::NotFound(key_id.to_string()))
            }
            Lookup::Absent => {}
        }
        let path = self.key_path(key_id);
        match fs::read(&path) {
            Ok(wrapped) => Ok(keys.master.unwrap(key_id, &wrapped)?),
            Err(error) if error.kind() == io::ErrorKind::NotFound => {
                if self.tombstone_path(key_id).exists() {
                    Err(KeyStoreError::Erased(key_id.to_string()))
                } else {
                    Err(KeyStoreError::NotFound(key_id.to_string()))
                }
            }
            Err(error) => Err(io_error(&path)(error)),
        }
    }

    /// [`Self::load`], through a bounded cache of unwrapped keys: for keys read again and
    /// again (records' content keys). A destroyed key is never answered from the cache.
    pub fn load_cached(&self, key_id: &str) -> Result<Arc<DataKey>, KeyStoreError> {
        self.load_cached_id(&parse_key_id(key_id)?)
    }

    /// [`Self::load_cached`] by the id's bytes ([`record_key_bytes`]).
    pub fn load_cached_id(&self, id: &KeyIdBytes) -> Result<Arc<DataKey>, KeyStoreError> {
        // Read before the lookup: a destroy counts after it removed its key from here.
        let erasures = self.erasures.load(Ordering::Acquire);
        let hit = self
            .cache_lock()
            .get(id)
            .map(|c| (c.key.clone(), c.erasures));
        if let Some((key, seen)) = hit {
            if seen == erasures {
                return Ok(key);
            }
            // A key was destroyed since this one was cached: its destroy removed it from
            // here, but may have raced with the load that put it back. The log says.
            if self.keys().log.is_erased(id) {
                return Err(KeyStoreError::Erased(hex::encode(id)));
            }
            if let Some(c) = self.cache_lock().get_mut(id) {
                c.erasures = c.erasures.max(erasures);
            }
            return Ok(key);
        }
        let key = Arc::new(self.load(&hex::encode(id))?);
        let mut cache = self.cache_lock();
        if cache.len() >= KEY_CACHE_ENTRIES {
            // Bounded without bookkeeping: the next reads refill it.
            cache.clear();
        }
        cache.insert(
            *id,
            Cached {
                key: key.clone(),
                erasures,
            },
        );
        Ok(key)
    }

    fn cache_lock(&self) -> std::sync::MutexGuard<'_, foldhash::HashMap<KeyIdBytes, Cached>> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// True if `key_id` was destroyed.
    pub fn is_erased(&self, key_id: &str) -> bool {
        parse_key_id(key_id).is_ok_and(|id| {
            self.keys().log.is_erased(&id)
                || (self.old_layout() && self.tombstone_path(key_id).exists())
        })
    }

    /// Destroys the key: afterwards nothing on this machine can decrypt its payload.
    /// Idempotent; durable when it returns.
    pub fn destroy(&self, key_id: &str) -> Result<(), KeyStoreError> {
        let id = parse_key_id(key_id)?;
        self.keys().log.erase(&id)?;
        self.cache_lock().remove(&id);
        // After the removal: a key cached before this count is checked on its next hit.
        self.erasures.fetch_add(1, Ordering::AcqRel);
        // A key of the old layout: its file goes too (the log's tombstone, durable now,
        // answers "erased" whatever happens to the file from here on).
        let path = self.key_path(key_id);
        match OpenOptions::new().write(true).open(&path) {
            Ok(mut file) => {
                file.write_all(&[0u8; WRAPPED_KEY_BYTES])
                    .and_then(|()| file.sync_all())
                    .map_err(io_error(&path))?;
                drop(file);
                fs::remove_file(&path).map_err(io_error(&path))?;
                sync_dir(&self.dir).map_err(io_error(&self.dir))
            }
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(error) => Err(io_error(&path)(error)),
        }
    }

    /// Every key id with a live (not destroyed) payload key ([`KeyKind::Payload`]), in the
    /// log and in the old layout's files, in no particular order: the reconcile's
    /// candidates. (Records' content keys stored before [`KeyKind`] existed are in the
    /// log as payload keys.)
    pub fn live_payload_key_ids(&self) -> Result<Vec<String>, KeyStoreError> {
        let mut ids: Vec<String> = self
            .keys()
            .log
            .live_payload_key_ids()?
            .iter()
            .map(hex::encode)
            .collect();
        for entry in fs::read_dir(&self.dir).map_err(io_error(&self.dir))? {
            let entry = entry.map_err(io_error(&self.dir))?;
            let name = entry.file_name();
            let Some(key_id) = name.to_str().and_then(|n| n.strip_suffix(".key")) else {
                continue;
            };
            if parse_key_id(key_id).is_ok() && !self.is_erased(key_id) {
                ids.push(key_id.to_string());
            }
        }
        Ok(ids)
    }

    /// The content key of `record_id`, stored first if the record has none yet (a new
    /// record, or one written before sealing); durable when it returns. Two callers
    /// racing to create it both get the one that was stored. A destroyed key stays
    /// destroyed: [`KeyStoreError::Erased`].
    pub async fn record_key(&self, record_id: &str) -> Result<Arc<DataKey>, KeyStoreError> {
        let key_id = record_key_id(record_id);
        let found = match self.load_cached(&key_id) {
            Err(KeyStoreError::NotFound(_)) => {
                let key = DataKey::generate()?;
                match self.store_async(&key_id, &key, KeyKind::Record).await {
                    Ok(()) => return Ok(Arc::new(key)),
                    // Stored meanwhile by a racing caller.
                    Err(KeyStoreError::Exists(_)) => self.load_cached(&key_id)?,
                    Err(other) => return Err(other),
                }
            }
            found => found?,
        };
        // The key found may have been appended by a caller still waiting for its group
        // commit: nothing sealed under it may be acknowledged before it is durable.
        let keys = Arc::clone(&self.keys());
        keys.log.wait_written_durable_async().await?;
        Ok(found)
    }

    /// [`Self::record_key`] for callers without a runtime (tools that write a ledger
    /// themselves, tests): the same key, durable when it returns.
    pub fn record_key_blocking(&self, record_id: &str) -> Result<Arc<DataKey>, KeyStoreError> {
        let key_id = record_key_id(record_id);
        let found = match self.load_cached(&key_id) {
            Err(KeyStoreError::NotFound(_)) => {
                let key = DataKey::generate()?;
                match self.store(&key_id, &key, KeyKind::Record) {
                    Ok(()) => return Ok(Arc::new(key)),
                    Err(KeyStoreError::Exists(_)) => self.load_cached(&key_id)?,
                    Err(other) => return Err(other),
                }
            }
            found => found?,
        };
        self.keys().log.wait_written_durable()?;
        Ok(found)
    }

    /// Stores a key wrapped elsewhere under the same master key (a cluster's leader sends
    /// each record's content key to every node): checked by unwrapping it first; durable
    /// when it returns. A key already here is left as it is (`Ok`); a destroyed one stays
    /// destroyed ([`KeyStoreError::Erased`]).
    pub async fn store_wrapped(
        &self,
        key_id: &str,
        wrapped: &[u8],
        kind: KeyKind,
    ) -> Result<(), KeyStoreError> {
        let key = self.keys().master.unwrap(key_id, wrapped)?;
        match self.store_async(key_id, &key, kind).await {
            Ok(()) => Ok(()),
            Err(KeyStoreError::Exists(_)) => {
                let keys = Arc::clone(&self.keys());
                Ok(keys.log.wait_written_durable_async().await?)
            }
            Err(other) => Err(other),
        }
    }

    /// A key derived from the current master key for `purpose` ([`MasterKey::derive`]):
    /// stored nowhere, and another after a master key rotation.
    pub fn derived_key(&self, purpose: &str) -> DataKey {
        self.keys().master.derive(purpose)
    }

    /// The key `key_id` wrapped anew, for sending to another node that shares the
    /// master key.
    pub fn wrapped(&self, key_id: &str) -> Result<Vec<u8>, KeyStoreError> {
        let key = self.load(key_id)?;
        Ok(self.keys().master.wrap(key_id, &key)?.to_vec())
    }

    /// fdatasync calls the key log's group commits made since open.
    pub fn fsyncs(&self) -> u64 {
        self.keys().log.fsyncs()
    }

    /// Key ids the key log's in-memory index holds (live and erased), and the keys
    /// cached unwrapped: what the store holds in memory grows with the first.
    pub fn in_memory(&self) -> (usize, usize) {
        (self.keys().log.indexed(), self.cache_lock().len())
    }
}

/// The next key log a master key rotation writes, beside `keys.log`.
pub const KEY_LOG_NEXT_FILE: &str = "keys.log.next";

/// The file a master key rotation writes the next master key to: `<master>.next`.
pub fn next_master_path(master_path: &Path) -> PathBuf {
    let mut name = master_path.as_os_str().to_owned();
    name.push(".next");
    PathBuf::from(name)
}

/// What a master key rotation did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rotation {
    /// Live keys unwrapped with the old master key and wrapped with the new one.
    pub keys_rewrapped: u64,
    /// Erased keys (tombstones) carried into the new log.
    pub erased_kept: u64,
}

/// How far a rotation goes before it stops as if the process died there (crash-point
/// tests); [`RotateStep::Done`] is a whole rotation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum RotateStep {
    /// The next master key file is durable.
    NextMaster,
    /// The next key log is durable, not yet in place.
    NextLog,
    /// The next log is `keys.log` (the commit point); the master key file is the old one.
    LogRenamed,
    /// Everything: the next master key is the master key.
    Done,
}

/// What [`recover_rotation`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RotationRecovery {
    /// No rotation was under way.
    None,
    /// A rotation had not reached its commit point: its files were removed, the old
    /// master key stays.
    RolledBack,
    /// A rotation had passed its commit point: the next master key was put in place.
    RolledForward,
}

fn remove_if_present(path: &Path) -> Result<bool, KeyStoreError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(io_error(path)(e)),
    }
}

fn sync_dir_of(path: &Path) -> Result<(), KeyStoreError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    sync_dir(dir).map_err(io_error(dir))
}

/// Finishes or undoes a master key rotation that a crash interrupted, before the key
/// store in `dir` opens with the master key file at `master_path`. Never guesses: a
/// rotation is committed once its new log is `keys.log`, and which master key unwraps
/// that log's keys says whether it got there.
/// - `keys.log.next` exists: the commit point was not reached; the next log and the next
///   master key are removed (the old ones were never changed).
/// - only `<master>.next` exists: if the current master key unwraps a live key of
///   `keys.log`, the rotation never committed (removed); if the next one does, it did,
///   and the next master key file is renamed into place; if neither, the open fails.
///   A log with no live key depends on neither key: the old one stays.
pub fn recover_rotation(dir: &Path, master_path: &Path) -> Result<RotationRecovery, KeyStoreError> {
    let next_log = dir.join(KEY_LOG_NEXT_FILE);
    let next_master = next_master_path(master_path);
    if remove_if_present(&next_log)? {
        sync_dir_of(&next_log)?;
        if remove_if_present(&next_master)? {
            sync_dir_of(&next_master)?;
        }
        return Ok(RotationRecovery::RolledBack);
    }
    if !next_master.exists() {
        return Ok(RotationRecovery::None);
    }
    let log = KeyLog::open(&dir.join(KEY_LOG_FILE))?;
    let probe = match log.any_live_key_id()? {
        Some(id) => match log.get(&id)? {
            Lookup::Wrapped(wrapped) => Some((hex::encode(id), wrapped)),
            Lookup::Erased | Lookup::Absent => None,
        },
        None => None,
    };
    let Some((key_id, wrapped)) = probe else {
        remove_if_present(&next_master)?;
        sync_dir_of(&next_master)?;
        return Ok(RotationRecovery::RolledBack);
    };
    if MasterKey::load_or_create(master_path)?
        .unwrap(&key_id, &wrapped)
        .is_ok()
    {
        remove_if_present(&next_master)?;
        sync_dir_of(&next_master)?;
        return Ok(RotationRecovery::RolledBack);
    }
    if MasterKey::load_or_create(&next_master)?
        .unwrap(&key_id, &wrapped)
        .is_ok()
    {
        fs::rename(&next_master, master_path).map_err(io_error(master_path))?;
        sync_dir_of(master_path)?;
        return Ok(RotationRecovery::RolledForward);
    }
    Err(KeyStoreError::WrongMasterKey(dir.to_path_buf()))
}

impl KeyStore {
    /// Re-wraps every key under a new random master key, which replaces the file at
    /// `master_path` (docs/PAYLOADS.md, "Master key rotation"). Online: every other use
    /// of the store waits meanwhile (a few seconds per million keys). Crash-safe with
    /// [`recover_rotation`] at the next open. Afterwards the old master key file is gone
    /// and nothing on disk is wrapped under it.
    pub fn rotate_master(&self, master_path: &Path) -> Result<Rotation, KeyStoreError> {
        self.rotate_master_until(master_path, RotateStep::Done)
    }

    /// [`Self::rotate_master`], stopping after `stop` as if the process died there (for
    /// crash-point tests; the store must then be dropped and opened again).
    #[doc(hidden)]
    pub fn rotate_master_until(
        &self,
        master_path: &Path,
        stop: RotateStep,
    ) -> Result<Rotation, KeyStoreError> {
        let mut current = self.current.write().unwrap_or_else(|e| e.into_inner());
        let next_log = self.dir.join(KEY_LOG_NEXT_FILE);
        let next_master_file = next_master_path(master_path);
        // Leftovers of a rotation that stopped before its commit point.
        remove_if_present(&next_log)?;
        remove_if_present(&next_master_file)?;
        let next = MasterKey::load_or_create(&next_master_file)?;
        if stop == RotateStep::NextMaster {
            return Ok(Rotation {
                keys_rewrapped: 0,
                erased_kept: 0,
            });
        }
        let mut contents = current.log.contents()?;
        for (id, wrapped, _) in &mut contents.keys {
            let key_id = hex::encode(*id);
            let key = current.master.unwrap(&key_id, wrapped.as_slice())?;
            *wrapped = next.wrap(&key_id, &key)?;
        }
        // Keys of the old layout join the new log, so no file stays wrapped under the
        // old master key.
        let mut old_files = Vec::new();
        if self.old_layout() {
            let known: std::collections::HashSet<KeyIdBytes> = contents
                .keys
                .iter()
                .map(|(id, _, _)| *id)
                .chain(contents.erased.iter().copied())
                .collect();
            for entry in fs::read_dir(&self.dir).map_err(io_error(&self.dir))? {
                let path = entry.map_err(io_error(&self.dir))?.path();
                let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
                let (key_id, erased) =
                    match (name.strip_suffix(".key"), name.strip_suffix(".erased")) {
                        (Some(k), _) => (k.to_owned(), false),
                        (_, Some(k)) => (k.to_owned(), true),
                        _ => continue,
                    };
                let Ok(id) = parse_key_id(&key_id) else {
                    continue;
                };
                old_files.push(path.clone());
                if known.contains(&id) {
                    continue;
                }
                if erased {
                    contents.erased.push(id);
                } else {
                    let wrapped = fs::read(&path).map_err(io_error(&path))?;
                    let key = current.master.unwrap(&key_id, &wrapped)?;
                    // Old-layout keys predate the kinds: payload keys, as the log's.
                    contents.keys.push((id, next.wrap(&key_id, &key)?, false));
                }
            }
        }
        let rotation = Rotation {
            keys_rewrapped: contents.keys.len() as u64,
            erased_kept: contents.erased.len() as u64,
        };
        crate::keylog::write_new(&next_log, &contents).map_err(io_error(&next_log))?;
        if stop == RotateStep::NextLog {
            return Ok(rotation);
        }
        // The commit point.
        let log_path = self.dir.join(KEY_LOG_FILE);
        fs::rename(&next_log, &log_path).map_err(io_error(&log_path))?;
        sync_dir(&self.dir).map_err(io_error(&self.dir))?;
        if stop == RotateStep::LogRenamed {
            return Ok(rotation);
        }
        // From here the store uses the new log and key, whatever fails next: the old log
        // file is gone, and a key appended to it would be lost. (If the master key file
        // is not renamed below, the next open puts it in place: recover_rotation.)
        let log = KeyLog::open(&log_path)?;
        *current = Arc::new(Keys { master: next, log });
        self.cache_lock().clear();
        fs::rename(&next_master_file, master_path).map_err(io_error(master_path))?;
        sync_dir_of(master_path)?;
        for path in old_files {
            remove_if_present(&path)?;
        }
        sync_dir(&self.dir).map_err(io_error(&self.dir))?;
        self.old_layout.store(false, Ordering::Release);
        Ok(rotation)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(dir: &Path) -> KeyStore {
        let master = MasterKey::load_or_create(&dir.join("master.key")).unwrap();
        KeyStore::open(&dir.join("keys"), master).unwrap()
    }

    /// A store with 40 keys, 5 of them destroyed: each key's id and a text sealed
    /// under it (to check, after any crash, that every live key still opens its text).
    /// A record, and a text sealed under its key (nonce, ciphertext).
    type SealedText = (String, [u8; 12], Vec<u8>);

    fn populated(dir: &Path) -> (KeyStore, Vec<SealedText>, Vec<String>) {
        let store = open(dir);
        let mut live = Vec::new();
        let mut erased = Vec::new();
        for i in 0..40 {
            let record = format!("r-{i}");
            let key = store.record_key_blocking(&record).unwrap();
            let (n, c) = crate::crypto::seal_text(&key, &record, "metadata", "text").unwrap();
            if i % 8 == 0 {
                store.destroy(&record_key_id(&record)).unwrap();
                erased.push(record);
            } else {
                live.push((record, n, c));
            }
        }
        (store, live, erased)
    }

    fn check_every_key(store: &KeyStore, live: &[SealedText], erased: &[String]) {
        for (record, n, c) in live {
            let key = store.load(&record_key_id(record)).unwrap();
            assert_eq!(
                crate::crypto::open_text(&key, record, "metadata", n, c).unwrap(),
                "text"
            );
        }
        for record in erased {
            assert!(store.is_erased(&record_key_id(record)));
        }
    }

    #[test]
    fn a_rotation_cut_at_any_step_rolls_back_or_forward_and_loses_no_key() {
        let cases: Vec<(RotateStep, Option<u64>, RotationRecovery)> = vec![
            (RotateStep::NextMaster, None, RotationRecovery::RolledBack),
            (RotateStep::NextLog, None, RotationRecovery::RolledBack),
            (RotateStep::NextLog, Some(0), RotationRecovery::RolledBack),
            (RotateStep::NextLog, Some(15), RotationRecovery::RolledBack),
            (
                RotateStep::NextLog,
                Some(16 + 82 * 3 + 40),
                RotationRecovery::RolledBack,
            ),
            (
                RotateStep::LogRenamed,
                None,
                RotationRecovery::RolledForward,
            ),
            (RotateStep::Done, None, RotationRecovery::None),
        ];
        for (stop, truncate, expected) in cases {
            let dir = tempfile::tempdir().unwrap();
            let master_path = dir.path().join("master.key");
            let (store, live, erased) = populated(dir.path());
            let old_master = fs::read(&master_path).unwrap();
            let report = store.rotate_master_until(&master_path, stop).unwrap();
            drop(store);
            if let Some(len) = truncate {
                let next = dir.path().join("keys").join(KEY_LOG_NEXT_FILE);
                OpenOptions::new()
                    .write(true)
                    .open(&next)
                    .unwrap()
                    .set_len(len)
                    .unwrap();
            }
            let recovered = recover_rotation(&dir.path().join("keys"), &master_path).unwrap();
            assert_eq!(recovered, expected, "{stop:?} {truncate:?}");
            assert!(!dir.path().join("keys").join(KEY_LOG_NEXT_FILE).exists());
            assert!(!next_master_path(&master_path).exists());
            let rotated = fs::read(&master_path).unwrap() != old_master;
            assert_eq!(rotated, stop >= RotateStep::LogRenamed, "{stop:?}");
            if stop == RotateStep::Done {
                assert_eq!((report.keys_rewrapped, report.erased_kept), (35, 5));
            }
            // The store opens (the master key unwraps its keys) and every key is there.
            let store = open(dir.path());
            check_every_key(&store, &live, &erased);
            // And the next rotation from here completes.
            store.rotate_master(&master_path).unwrap();
            check_every_key(&store, &live, &erased);
            drop(store);
            check_every_key(&open(dir.path()), &live, &erased);
        }
    }

    #[test]
    fn a_rotation_online_keeps_keys_stored_meanwhile_and_the_old_master_opens_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let master_path = dir.path().join("master.key");
        let (store, mut live, erased) = populated(dir.path());
        let store = Arc::new(store);
        let old_master = MasterKey::load_or_create(&master_path).unwrap();
        let writer = {
            let store = Arc::clone(&store);
            std::thread::spawn(move || {
                (100..400)
                    .map(|i| {
                        let record = format!("r-{i}");
                        let key = store.record_key_blocking(&record).unwrap();
                        let (n, c) =
                            crate::crypto::seal_text(&key, &record, "metadata", "text").unwrap();
                        (record, n, c)
                    })
                    .collect::<Vec<_>>()
            })
        };
        for _ in 0..3 {
            store.rotate_master(&master_path).unwrap();
        }
        live.extend(writer.join().unwrap());
        check_every_key(&store, &live, &erased);
        drop(store);
        let store = open(dir.path());
        check_every_key(&store, &live, &erased);
        // Nothing in the key directory unwraps with the first master key any more.
        let log = KeyLog::open(&dir.path().join("keys").join(KEY_LOG_FILE)).unwrap();
        let contents = log.contents().unwrap();
        assert_eq!(contents.keys.len(), live.len());
        for (id, wrapped, _) in &contents.keys {
            assert!(old_master.unwrap(&hex::encode(id), wrapped).is_err());
        }
    }

    #[test]
    fn record_keys_are_one_per_record_cached_and_never_served_once_destroyed() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let a = store.record_key_blocking("r-1").unwrap();
        let again = store.record_key_blocking("r-1").unwrap();
        let (n, c) = crate::crypto::seal_text(&a, "r-1", "metadata", "text").unwrap();
        assert_eq!(
            crate::crypto::open_text(&again, "r-1", "metadata", &n, &c).unwrap(),
            "text"
        );
        let other = store.record_key_blocking("r-2").unwrap();
        assert!(crate::crypto::open_text(&other, "r-1", "metadata", &n, &c).is_err());
        // Durable: a store opened again finds the same key.
        drop(store);
        let store = open(dir.path());
        let id = record_key_id("r-1");
        let cached = store.load_cached(&id).unwrap();
        assert_eq!(
            crate::crypto::open_text(&cached, "r-1", "metadata", &n, &c).unwrap(),
            "text"
        );
        let other_id = record_key_id("r-2");
        store.load_cached(&other_id).unwrap();
        // Destroyed while cached: never answered again, and never made anew.
        store.destroy(&id).unwrap();
        assert!(matches!(
            store.load_cached(&id),
            Err(KeyStoreError::Erased(_))
        ));
        // A load that raced with the destroy put the key back after its removal, with
        // the count of erasures before it: the log is asked, and says erased.
        let raw = parse_key_id(&id).unwrap();
        store.cache_lock().insert(
            raw,
            Cached {
                key: cached.clone(),
                erasures: 0,
            },
        );
        assert!(matches!(
            store.load_cached(&id),
            Err(KeyStoreError::Erased(_))
        ));
        // A key cached before another's erasure is still served (checked once).
        assert!(store.load_cached(&other_id).is_ok());
        assert_eq!(
            store.cache_lock()[&parse_key_id(&other_id).unwrap()].erasures,
            1
        );
        assert!(matches!(
            store.record_key_blocking("r-1"),
            Err(KeyStoreError::Erased(_))
        ));
        assert_eq!(id.len(), 32);
        assert_ne!(record_key_id("r-1"), record_key_id("r-2"));
    }

    #[test]
    fn stored_keys_survive_reopen_and_destroy_is_final() {
        let dir = tempfile::tempdir().unwrap();
        let id = new_key_id().unwrap();
        let key = DataKey::generate().unwrap();
        let mut enc = crate::crypto::Encryptor::new(&key).unwrap();
        let mut ciphertext = enc.push(b"secret").unwrap();
        ciphertext.extend(enc.finish().unwrap());

        open(dir.path()).store(&id, &key, KeyKind::Payload).unwrap();
        let store = open(dir.path());
        let loaded = store.load(&id).unwrap();
        let mut dec = crate::crypto::Decryptor::new(&loaded);
        let mut plaintext = dec.push(&ciphertext).unwrap();
        plaintext.extend(dec.finish().unwrap());
        assert_eq!(plaintext, b"secret");

        store.destroy(&id).unwrap();
        store.destroy(&id).unwrap();
        assert!(matches!(
            open(dir.path()).load(&id),
            Err(KeyStoreError::Erased(_))
        ));
        assert!(matches!(
            store.store(&id, &key, KeyKind::Payload),
            Err(KeyStoreError::Erased(_))
        ));
        assert!(!store.key_path(&id).exists());
        let other = new_key_id().unwrap();
        assert!(matches!(
            store.load(&other),
            Err(KeyStoreError::NotFound(_))
        ));
    }

    #[test]
    fn rejects_path_like_key_ids() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        for id in ["../master", "", "ABCDEF0123456789ABCDEF0123456789", "x"] {
            assert!(matches!(store.load(id), Err(KeyStoreError::InvalidKeyId)));
            assert!(matches!(
                store.destroy(id),
                Err(KeyStoreError::InvalidKeyId)
            ));
        }
    }

    /// Every file under `dir`, read whole.
    fn all_file_bytes(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
        let mut out = Vec::new();
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                out.extend(all_file_bytes(&path));
            } else {
                out.push((path.clone(), fs::read(&path).unwrap()));
            }
        }
        out
    }

    fn contains(haystack: &[u8], needle: &[u8]) -> bool {
        haystack.windows(needle.len()).any(|w| w == needle)
    }

    #[test]
    fn erasure_leaves_no_byte_of_the_wrapped_key_in_any_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let ids: Vec<String> = (0..5).map(|_| new_key_id().unwrap()).collect();
        for id in &ids {
            store
                .store(id, &DataKey::generate().unwrap(), KeyKind::Payload)
                .unwrap();
        }
        let wrapped =
            |store: &KeyStore, id: &str| match store.keys().log.get(&parse_key_id(id).unwrap()) {
                Ok(Lookup::Wrapped(w)) => w,
                _ => panic!("key {id} is not live"),
            };
        let doomed = wrapped(&store, &ids[2]);
        let kept = wrapped(&store, &ids[3]);
        let files = all_file_bytes(dir.path());
        assert!(files.iter().any(|(_, bytes)| contains(bytes, &doomed)));

        store.destroy(&ids[2]).unwrap();
        // The wrapped key's random part (nonce and sealed key, 60 bytes) is gone from
        // every file; its neighbours are intact.
        for (path, bytes) in all_file_bytes(dir.path()) {
            assert!(
                !contains(&bytes, &doomed[1..]),
                "{} keeps it",
                path.display()
            );
        }
        assert!(all_file_bytes(dir.path())
            .iter()
            .any(|(_, bytes)| contains(bytes, &kept)));
        let reopened = open(dir.path());
        assert!(matches!(
            reopened.load(&ids[2]),
            Err(KeyStoreError::Erased(_))
        ));
        reopened.load(&ids[3]).unwrap();
        let mut live = reopened.live_payload_key_ids().unwrap();
        live.sort();
        let mut expected: Vec<String> = ids.iter().filter(|i| **i != ids[2]).cloned().collect();
        expected.sort();
        assert_eq!(live, expected);
    }

    /// A key directory as written before the key log: one file per key (`old`), and a
    /// tombstone (`gone`), wrapped under `<dir>/master.key`.
    struct OldLayout {
        keys_dir: PathBuf,
        old: String,
        gone: String,
        key: DataKey,
        wrapped: [u8; WRAPPED_KEY_BYTES],
    }

    fn old_layout(dir: &Path) -> OldLayout {
        let master = MasterKey::load_or_create(&dir.join("master.key")).unwrap();
        let keys_dir = dir.join("keys");
        fs::create_dir_all(&keys_dir).unwrap();
        let (old, gone) = (new_key_id().unwrap(), new_key_id().unwrap());
        let key = DataKey::generate().unwrap();
        let wrapped = master.wrap(&old, &key).unwrap();
        crate::fsutil::write_durably(&keys_dir.join(format!("{old}.key")), &wrapped).unwrap();
        crate::fsutil::write_durably(&keys_dir.join(format!("{gone}.erased")), b"").unwrap();
        OldLayout {
            keys_dir,
            old,
            gone,
            key,
            wrapped,
        }
    }

    #[test]
    fn old_layout_keys_are_read_listed_and_erased() {
        let dir = tempfile::tempdir().unwrap();
        let OldLayout {
            keys_dir,
            old,
            gone,
            key,
            wrapped,
        } = old_layout(dir.path());

        let store = open(dir.path());
        let mut enc = crate::crypto::Encryptor::new(&key).unwrap();
        let mut ciphertext = enc.push(b"old note").unwrap();
        ciphertext.extend(enc.finish().unwrap());
        let mut dec = crate::crypto::Decryptor::new(&store.load(&old).unwrap());
        let mut plaintext = dec.push(&ciphertext).unwrap();
        plaintext.extend(dec.finish().unwrap());
        assert_eq!(plaintext, b"old note");
        assert!(matches!(store.load(&gone), Err(KeyStoreError::Erased(_))));
        assert!(matches!(
            store.store(&old, &DataKey::generate().unwrap(), KeyKind::Payload),
            Err(KeyStoreError::Exists(_))
        ));
        // New keys go to the log, next to the old files.
        let new = new_key_id().unwrap();
        store
            .store(&new, &DataKey::generate().unwrap(), KeyKind::Payload)
            .unwrap();
        assert!(!keys_dir.join(format!("{new}.key")).exists());
        let mut live = store.live_payload_key_ids().unwrap();
        live.sort();
        let mut expected = vec![old.clone(), new.clone()];
        expected.sort();
        assert_eq!(live, expected);

        store.destroy(&old).unwrap();
        assert!(!keys_dir.join(format!("{old}.key")).exists());
        for (path, bytes) in all_file_bytes(dir.path()) {
            assert!(
                !contains(&bytes, &wrapped[1..]),
                "{} keeps it",
                path.display()
            );
        }
        let reopened = open(dir.path());
        assert!(matches!(reopened.load(&old), Err(KeyStoreError::Erased(_))));
        assert_eq!(reopened.live_payload_key_ids().unwrap(), vec![new.clone()]);
    }

    #[test]
    fn a_rotation_takes_the_old_layouts_keys_into_the_log_and_removes_their_files() {
        let dir = tempfile::tempdir().unwrap();
        let master_path = dir.path().join("master.key");
        let OldLayout {
            keys_dir,
            old,
            gone,
            key,
            ..
        } = old_layout(dir.path());
        let store = open(dir.path());
        let (n, c) = crate::crypto::seal_text(&key, "r", "metadata", "old").unwrap();
        let report = store.rotate_master(&master_path).unwrap();
        assert_eq!((report.keys_rewrapped, report.erased_kept), (1, 1));
        assert!(!keys_dir.join(format!("{old}.key")).exists());
        assert!(!keys_dir.join(format!("{gone}.erased")).exists());
        drop(store);
        let store = open(dir.path());
        let loaded = store.load(&old).unwrap();
        assert_eq!(
            crate::crypto::open_text(&loaded, "r", "metadata", &n, &c).unwrap(),
            "old"
        );
        assert!(store.is_erased(&gone));
    }
}
