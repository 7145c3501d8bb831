//! Wrapped data keys by key id, one file each in `<data_dir>/keys/`.
//!
//! This is the only copy of a payload's key: it is not derived from the ledger and can
//! not be rebuilt, which is what makes erasure final. `store` and `destroy` return only
//! once their effect is durable (file and directory fsynced). `destroy` first writes an
//! `<id>.erased` tombstone (so a later read reports "erased", not "not found"), then
//! overwrites the key file with zeros, fsyncs, unlinks it and fsyncs the directory.
//! (On flash storage an overwrite may not reach the old cells; the wrapped key is useless
//! without the master key. Re-wrapping every key under a new master key would be the
//! remedy for a leaked disk; there is no command for it yet, see docs/PAYLOADS.md.)

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::crypto::{CryptoError, DataKey, MasterKey, WRAPPED_KEY_BYTES};
use crate::fsutil::{sync_dir, write_durably};

/// Key ids are 32 lowercase hex characters (128 random bits).
const KEY_ID_HEX_LEN: usize = 32;

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
    /// Unwrapping or randomness failed.
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    /// File I/O.
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
}

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

fn check_key_id(key_id: &str) -> Result<(), KeyStoreError> {
    let valid = key_id.len() == KEY_ID_HEX_LEN
        && key_id
            .bytes()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c));
    if valid {
        Ok(())
    } else {
        Err(KeyStoreError::InvalidKeyId)
    }
}

impl KeyStore {
    /// Opens (creating if needed) the key directory `dir`, wrapping keys with `master`.
    pub fn open(dir: &Path, master: MasterKey) -> Result<KeyStore, KeyStoreError> {
        fs::create_dir_all(dir).map_err(io_error(dir))?;
        Ok(KeyStore {
            dir: dir.to_path_buf(),
            master,
        })
    }

    fn key_path(&self, key_id: &str) -> PathBuf {
        self.dir.join(format!("{key_id}.key"))
    }

    fn tombstone_path(&self, key_id: &str) -> PathBuf {
        self.dir.join(format!("{key_id}.erased"))
    }

    /// Wraps and stores `key` under `key_id`; durable when it returns.
    pub fn store(&self, key_id: &str, key: &DataKey) -> Result<(), KeyStoreError> {
        check_key_id(key_id)?;
        let path = self.key_path(key_id);
        if self.tombstone_path(key_id).exists() {
            return Err(KeyStoreError::Erased(key_id.to_string()));
        }
        if path.exists() {
            return Err(KeyStoreError::Exists(key_id.to_string()));
        }
        let wrapped = self.master.wrap(key_id, key)?;
        write_durably(&path, &wrapped).map_err(io_error(&path))
    }

    /// The data key stored under `key_id`.
    pub fn load(&self, key_id: &str) -> Result<DataKey, KeyStoreError> {
        check_key_id(key_id)?;
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

    /// True if `key_id` was destroyed.
    pub fn is_erased(&self, key_id: &str) -> bool {
        check_key_id(key_id).is_ok() && self.tombstone_path(key_id).exists()
    }

    /// Destroys the key: afterwards nothing on this machine can decrypt its payload.
    /// Idempotent; durable when it returns.
    pub fn destroy(&self, key_id: &str) -> Result<(), KeyStoreError> {
        check_key_id(key_id)?;
        let tombstone = self.tombstone_path(key_id);
        if !tombstone.exists() {
            write_durably(&tombstone, b"").map_err(io_error(&tombstone))?;
        }
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
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(dir: &Path) -> KeyStore {
        let master = MasterKey::load_or_create(&dir.join("master.key")).unwrap();
        KeyStore::open(&dir.join("keys"), master).unwrap()
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
}
