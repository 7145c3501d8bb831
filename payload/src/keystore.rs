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
//! old cells; the wrapped key is useless without the master key. Re-wrapping every key
//! under a new master key would be the remedy for a leaked disk; there is no command for
//! it yet, see docs/PAYLOADS.md.)

use std::collections::HashMap;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::crypto::{CryptoError, DataKey, MasterKey, WRAPPED_KEY_BYTES};
use crate::fsutil::sync_dir;
use crate::keylog::{KeyIdBytes, KeyLog, Lookup};

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

/// Durable store of wrapped data keys.
pub struct KeyStore {
    dir: PathBuf,
    master: MasterKey,
    log: KeyLog,
    /// The directory held old-layout files (`<id>.key`, `<id>.erased`) when opened. This
    /// code never writes any, so without them at open a store never looks for them (a
    /// stat and an open per lookup of a new key were a third of a sealed ingest's CPU).
    old_layout: bool,
    /// Record keys read recently, unwrapped (a timeline page opens 50 records' text; a
    /// read of the log and an unwrap per record cost a third of a page). Bounded by
    /// [`KEY_CACHE_ENTRIES`]; every hit is checked against the log's erasures, so a key
    /// destroyed is never served from here.
    cache: Mutex<HashMap<KeyIdBytes, Arc<DataKey>>>,
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
    use sha2::{Digest, Sha256};
    let mut hash = Sha256::new();
    hash.update(b"medledger-record-key-v1\0");
    hash.update(record_id.as_bytes());
    hex::encode(&hash.finalize()[..KEY_ID_HEX_LEN / 2])
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
        fs::create_dir_all(dir).map_err(io_error(dir))?;
        let log = KeyLog::open(&dir.join(KEY_LOG_FILE))?;
        let mut old_layout = false;
        for entry in fs::read_dir(dir).map_err(io_error(dir))? {
            let name = entry.map_err(io_error(dir))?.file_name();
            let name = name.to_string_lossy();
            old_layout |= name.ends_with(".key") || name.ends_with(".erased");
        }
        let store = KeyStore {
            dir: dir.to_path_buf(),
            master,
            log,
            old_layout,
            cache: Mutex::new(HashMap::new()),
        };
        // A wrong master key (another node's file, a KMS answering for another store)
        // is refused here, not found out on the first read.
        if let Some(id) = store.log.any_live_key_id() {
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

    /// The old layout's file of a key.
    fn key_path(&self, key_id: &str) -> PathBuf {
        self.dir.join(format!("{key_id}.key"))
    }

    /// The old layout's tombstone of a key.
    fn tombstone_path(&self, key_id: &str) -> PathBuf {
        self.dir.join(format!("{key_id}.erased"))
    }

    /// Wraps and stores `key` under `key_id`; durable when it returns.
    pub fn store(&self, key_id: &str, key: &DataKey) -> Result<(), KeyStoreError> {
        let lsn = self.append(key_id, key)?;
        Ok(self.log.wait_durable(lsn)?)
    }

    /// [`Self::store`] for async callers: the append is a write into the page cache on
    /// the calling task, and the wait joins the key log's next group commit.
    pub async fn store_async(&self, key_id: &str, key: &DataKey) -> Result<(), KeyStoreError> {
        let lsn = self.append(key_id, key)?;
        Ok(self.log.wait_durable_async(lsn).await?)
    }

    /// Wraps `key` and appends it to the log; the LSN to wait for.
    fn append(&self, key_id: &str, key: &DataKey) -> Result<u64, KeyStoreError> {
        let id = parse_key_id(key_id)?;
        // Ids are 128 random bits, so these never hit in practice; they keep the old
        // layout's keys from being shadowed all the same (two stats a store, only where
        // old files exist).
        if self.old_layout && self.tombstone_path(key_id).exists() {
            return Err(KeyStoreError::Erased(key_id.to_string()));
        }
        if self.old_layout && self.key_path(key_id).exists() {
            return Err(KeyStoreError::Exists(key_id.to_string()));
        }
        let wrapped = self.master.wrap(key_id, key)?;
        match self.log.append_unsynced(&id, &wrapped)? {
            Some(lsn) => Ok(lsn),
            None if self.log.is_erased(&id) => Err(KeyStoreError::Erased(key_id.to_string())),
            None => Err(KeyStoreError::Exists(key_id.to_string())),
        }
    }

    /// The data key stored under `key_id`.
    pub fn load(&self, key_id: &str) -> Result<DataKey, KeyStoreError> {
        let id = parse_key_id(key_id)?;
        match self.log.get(&id)? {
            Lookup::Wrapped(wrapped) => return Ok(self.master.unwrap(key_id, &wrapped)?),
            Lookup::Erased => return Err(KeyStoreError::Erased(key_id.to_string())),
            Lookup::Absent if !self.old_layout => {
                return Err(KeyStoreError::NotFound(key_id.to_string()))
            }
            Lookup::Absent => {}
        }
        let path = self.key_path(key_id);
        match fs::read(&path) {
            Ok(wrapped) => Ok(self.master.unwrap(key_id, &wrapped)?),
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
        let id = parse_key_id(key_id)?;
        let hit = self.cache_lock().get(&id).cloned();
        if let Some(key) = hit {
            // Checked on every hit: a destroy that ran after this key was cached.
            if self.log.is_erased(&id) {
                return Err(KeyStoreError::Erased(key_id.to_string()));
            }
            return Ok(key);
        }
        let key = Arc::new(self.load(key_id)?);
        let mut cache = self.cache_lock();
        if cache.len() >= KEY_CACHE_ENTRIES {
            // Bounded without bookkeeping: the next reads refill it.
            cache.clear();
        }
        cache.insert(id, key.clone());
        Ok(key)
    }

    fn cache_lock(&self) -> std::sync::MutexGuard<'_, HashMap<KeyIdBytes, Arc<DataKey>>> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// True if `key_id` was destroyed.
    pub fn is_erased(&self, key_id: &str) -> bool {
        parse_key_id(key_id).is_ok_and(|id| {
            self.log.is_erased(&id) || (self.old_layout && self.tombstone_path(key_id).exists())
        })
    }

    /// Destroys the key: afterwards nothing on this machine can decrypt its payload.
    /// Idempotent; durable when it returns.
    pub fn destroy(&self, key_id: &str) -> Result<(), KeyStoreError> {
        let id = parse_key_id(key_id)?;
        self.log.erase(&id)?;
        self.cache_lock().remove(&id);
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

    /// Every key id with a live (not destroyed) key, in the log and in the old layout's
    /// files, in no particular order (for the reconcile with the ledger).
    pub fn live_key_ids(&self) -> Result<Vec<String>, KeyStoreError> {
        let mut ids: Vec<String> = self.log.live_key_ids().iter().map(hex::encode).collect();
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
                match self.store_async(&key_id, &key).await {
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
        self.log.wait_written_durable_async().await?;
        Ok(found)
    }

    /// [`Self::record_key`] for callers without a runtime (tools that write a ledger
    /// themselves, tests): the same key, durable when it returns.
    pub fn record_key_blocking(&self, record_id: &str) -> Result<Arc<DataKey>, KeyStoreError> {
        let key_id = record_key_id(record_id);
        let found = match self.load_cached(&key_id) {
            Err(KeyStoreError::NotFound(_)) => {
                let key = DataKey::generate()?;
                match self.store(&key_id, &key) {
                    Ok(()) => return Ok(Arc::new(key)),
                    Err(KeyStoreError::Exists(_)) => self.load_cached(&key_id)?,
                    Err(other) => return Err(other),
                }
            }
            found => found?,
        };
        self.log.wait_written_durable()?;
        Ok(found)
    }

    /// Stores a key wrapped elsewhere under the same master key (a cluster's leader sends
    /// each record's content key to every node): checked by unwrapping it first; durable
    /// when it returns. A key already here is left as it is (`Ok`); a destroyed one stays
    /// destroyed ([`KeyStoreError::Erased`]).
    pub async fn store_wrapped(&self, key_id: &str, wrapped: &[u8]) -> Result<(), KeyStoreError> {
        let key = self.master.unwrap(key_id, wrapped)?;
        match self.store_async(key_id, &key).await {
            Ok(()) => Ok(()),
            Err(KeyStoreError::Exists(_)) => Ok(self.log.wait_written_durable_async().await?),
            Err(other) => Err(other),
        }
    }

    /// The key `key_id` wrapped anew, for sending to another node that shares the
    /// master key.
    pub fn wrapped(&self, key_id: &str) -> Result<Vec<u8>, KeyStoreError> {
        let key = self.load(key_id)?;
        Ok(self.master.wrap(key_id, &key)?.to_vec())
    }

    /// fdatasync calls the key log's group commits made since open.
    pub fn fsyncs(&self) -> u64 {
        self.log.fsyncs()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(dir: &Path) -> KeyStore {
        let master = MasterKey::load_or_create(&dir.join("master.key")).unwrap();
        KeyStore::open(&dir.join("keys"), master).unwrap()
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
        // Destroyed while cached: never answered again, and never made anew.
        store.destroy(&id).unwrap();
        assert!(matches!(
            store.load_cached(&id),
            Err(KeyStoreError::Erased(_))
        ));
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

        open(dir.path()).store(&id, &key).unwrap();
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
            store.store(&id, &key),
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
            store.store(id, &DataKey::generate().unwrap()).unwrap();
        }
        let wrapped = |store: &KeyStore, id: &str| match store.log.get(&parse_key_id(id).unwrap()) {
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
        let mut live = reopened.live_key_ids().unwrap();
        live.sort();
        let mut expected: Vec<String> = ids.iter().filter(|i| **i != ids[2]).cloned().collect();
        expected.sort();
        assert_eq!(live, expected);
    }

    #[test]
    fn old_layout_keys_are_read_listed_and_erased() {
        let dir = tempfile::tempdir().unwrap();
        // A key directory as written before the key log: one file per key, tombstones.
        let master = MasterKey::load_or_create(&dir.path().join("master.key")).unwrap();
        let keys_dir = dir.path().join("keys");
        fs::create_dir_all(&keys_dir).unwrap();
        let (old, gone) = (new_key_id().unwrap(), new_key_id().unwrap());
        let key = DataKey::generate().unwrap();
        let wrapped = master.wrap(&old, &key).unwrap();
        crate::fsutil::write_durably(&keys_dir.join(format!("{old}.key")), &wrapped).unwrap();
        crate::fsutil::write_durably(&keys_dir.join(format!("{gone}.erased")), b"").unwrap();

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
            store.store(&old, &DataKey::generate().unwrap()),
            Err(KeyStoreError::Exists(_))
        ));
        // New keys go to the log, next to the old files.
        let new = new_key_id().unwrap();
        store.store(&new, &DataKey::generate().unwrap()).unwrap();
        assert!(!keys_dir.join(format!("{new}.key")).exists());
        let mut live = store.live_key_ids().unwrap();
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
        assert_eq!(reopened.live_key_ids().unwrap(), vec![new]);
    }
}
