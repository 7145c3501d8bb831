//! The server's checkpoint signing key: a 32-byte Ed25519 seed in a file only its owner
//! can read, created on first start.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::path::{Path, PathBuf};

use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use zeroize::Zeroizing;

use crate::checkpoint::{key_id, Checkpoint, CheckpointBody, PublicKeyDoc};
use crate::error::KeyError;

/// Length of the key file: the raw Ed25519 seed (RFC 8032 private key), nothing else.
pub const KEY_FILE_LEN: u64 = 32;

/// The checkpoint signing key. Its `Debug` shows the key id only, never the seed, and
/// the seed is wiped from memory when the key is dropped.
pub struct CheckpointKey {
    signing: SigningKey,
    key_id: String,
}

impl std::fmt::Debug for CheckpointKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckpointKey")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

impl CheckpointKey {
    /// The key with this seed (for tests and golden vectors; the server uses
    /// [`CheckpointKey::load_or_create`]).
    #[must_use]
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        let signing = SigningKey::from_bytes(seed);
        let key_id = key_id(&signing.verifying_key());
        CheckpointKey { signing, key_id }
    }

    /// Loads the key at `path`, or creates one there if nothing is there yet.
    ///
    /// A new key is 32 bytes from the operating system's random generator, written to a
    /// temporary sibling file created with mode 0600, fsynced, then hard-linked into place
    /// (which never replaces a file another process created meanwhile: that key is loaded
    /// instead), and the directory fsynced. The parent directory must exist.
    ///
    /// # Errors
    /// [`KeyError::Permissions`] if an existing file is readable or writable by group or
    /// others, [`KeyError::BadLength`] unless it is exactly 32 bytes,
    /// [`KeyError::NotAFile`], [`KeyError::Random`], and [`KeyError::Io`] naming the path.
    pub fn load_or_create(path: &Path) -> Result<Self, KeyError> {
        match fs::symlink_metadata(path) {
            Ok(_) => Self::load(path),
            Err(e) if e.kind() == ErrorKind::NotFound => Self::create(path),
            Err(source) => Err(io(path, source)),
        }
    }

    /// Loads an existing key file, with the checks of [`CheckpointKey::load_or_create`].
    ///
    /// # Errors
    /// As [`CheckpointKey::load_or_create`].
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        let mut file = File::open(path).map_err(|e| io(path, e))?;
        let meta = file.metadata().map_err(|e| io(path, e))?;
        if !meta.is_file() {
            return Err(KeyError::NotAFile {
                path: path.to_path_buf(),
            });
        }
        check_private(path, &meta)?;
        if meta.len() != KEY_FILE_LEN {
            return Err(KeyError::BadLength {
                path: path.to_path_buf(),
                len: meta.len(),
            });
        }
        let mut seed = Zeroizing::new([0u8; 32]);
        file.read_exact(seed.as_mut()).map_err(|e| io(path, e))?;
        // The file could have grown between the metadata and the read.
        let mut extra = [0u8; 1];
        if file.read(&mut extra).map_err(|e| io(path, e))? != 0 {
            return Err(KeyError::BadLength {
                path: path.to_path_buf(),
                len: KEY_FILE_LEN + 1,
            });
        }
        Ok(Self::from_seed(&seed))
    }

    fn create(path: &Path) -> Result<Self, KeyError> {
        let mut seed = Zeroizing::new([0u8; 32]);
        getrandom::fill(seed.as_mut()).map_err(|e| KeyError::Random(e.to_string()))?;
        let tmp = temporary_path(path);
        match fs::remove_file(&tmp) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(io(&tmp, e)),
        }
        let mut options = OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(&tmp).map_err(|e| io(&tmp, e))?;
        let written = file.write_all(seed.as_ref()).and_then(|()| file.sync_all());
        drop(file);
        let linked = written.and_then(|()| fs::hard_link(&tmp, path));
        // The temporary name is ours alone; remove it whatever happened.
        let removed = fs::remove_file(&tmp);
        match linked {
            Ok(()) => {}
            // Another process created the key first: use that one.
            Err(e) if e.kind() == ErrorKind::AlreadyExists => return Self::load(path),
            Err(e) => return Err(io(path, e)),
        }
        removed.map_err(|e| io(&tmp, e))?;
        sync_parent(path)?;
        Ok(Self::from_seed(&seed))
    }

    /// The public key that verifies this key's checkpoints.
    #[must_use]
    pub fn verifying_key(&self) -> VerifyingKey {
        self.signing.verifying_key()
    }

    /// The key id (see [`crate::key_id`]).
    #[must_use]
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The JSON of `GET /v1/checkpoint/key`.
    #[must_use]
    pub fn public_key_doc(&self) -> PublicKeyDoc {
        PublicKeyDoc::new(&self.verifying_key())
    }

    /// Signs a checkpoint. Deterministic (Ed25519): the same body gives the same bytes.
    ///
    /// # Panics
    /// If `body` breaks the checkpoint invariants (`tree_size == height >= 1`): the server
    /// builds it from its chain tip, so that would be a bug, and signing it would publish
    /// a checkpoint no verifier accepts.
    #[must_use]
    pub fn sign(&self, body: &CheckpointBody) -> Checkpoint {
        assert!(
            body.check_shape().is_ok(),
            "checkpoint invariant broken: tree_size {} height {}",
            body.tree_size,
            body.height
        );
        let signature = self.signing.sign(&body.signed_bytes());
        Checkpoint::from_parts(body, &signature, self.key_id.clone())
    }
}

fn io(path: &Path, source: std::io::Error) -> KeyError {
    KeyError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// `<path>.tmp-<pid>`: unique among live processes, next to the key so the link stays on
/// one file system.
fn temporary_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".tmp-{}", std::process::id()));
    path.with_file_name(name)
}

#[cfg(unix)]
fn check_private(path: &Path, meta: &fs::Metadata) -> Result<(), KeyError> {
    use std::os::unix::fs::PermissionsExt;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(KeyError::Permissions {
            path: path.to_path_buf(),
            mode,
        });
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_private(_path: &Path, _meta: &fs::Metadata) -> Result<(), KeyError> {
    // No mode bits to check; the data directory's ACLs are the operator's to set.
    Ok(())
}

/// Fsyncs the directory holding `path`, so the new name survives a crash.
fn sync_parent(path: &Path) -> Result<(), KeyError> {
    #[cfg(unix)]
    {
        let parent = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        File::open(parent)
            .and_then(|dir| dir.sync_all())
            .map_err(|e| io(parent, e))?;
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(unix)]
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn creates_once_with_mode_0600_then_loads_the_same_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("checkpoint.key");
        let first = CheckpointKey::load_or_create(&path).unwrap();
        let meta = fs::metadata(&path).unwrap();
        assert_eq!(meta.len(), KEY_FILE_LEN);
        #[cfg(unix)]
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        let again = CheckpointKey::load_or_create(&path).unwrap();
        assert_eq!(first.verifying_key(), again.verifying_key());
        assert_eq!(first.key_id(), again.key_id());
        // Only the key file is left behind.
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1);
        // A second key elsewhere is a different key.
        let other = CheckpointKey::load_or_create(&dir.path().join("other.key")).unwrap();
        assert_ne!(other.key_id(), first.key_id());
        assert!(format!("{first:?}").contains(first.key_id()));
    }

    #[cfg(unix)]
    #[test]
    fn refuses_a_key_others_can_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("checkpoint.key");
        CheckpointKey::load_or_create(&path).unwrap();
        for mode in [0o640, 0o604, 0o660, 0o644, 0o602] {
            fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
            let err = CheckpointKey::load_or_create(&path).unwrap_err();
            assert!(
                matches!(err, KeyError::Permissions { mode: m, .. } if m == mode),
                "{err}"
            );
            assert!(err.to_string().contains("chmod 600"), "{err}");
        }
        fs::set_permissions(&path, fs::Permissions::from_mode(0o400)).unwrap();
        CheckpointKey::load_or_create(&path).unwrap();
    }

    #[test]
    fn refuses_a_file_of_the_wrong_length_or_kind() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("checkpoint.key");
        for len in [0usize, 31, 33, 64] {
            fs::write(&path, vec![7u8; len]).unwrap();
            #[cfg(unix)]
            fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
            let err = CheckpointKey::load_or_create(&path).unwrap_err();
            assert!(
                matches!(err, KeyError::BadLength { len: l, .. } if l == len as u64),
                "{err}"
            );
        }
        let sub = dir.path().join("a-directory");
        fs::create_dir(&sub).unwrap();
        #[cfg(unix)]
        fs::set_permissions(&sub, fs::Permissions::from_mode(0o700)).unwrap();
        assert!(matches!(
            CheckpointKey::load_or_create(&sub),
            Err(KeyError::NotAFile { .. })
        ));
        let missing_parent = dir.path().join("no-such-dir").join("checkpoint.key");
        assert!(matches!(
            CheckpointKey::load_or_create(&missing_parent),
            Err(KeyError::Io { .. })
        ));
    }

    #[test]
    fn loads_what_from_seed_makes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("checkpoint.key");
        let seed = [42u8; 32];
        fs::write(&path, seed).unwrap();
        #[cfg(unix)]
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        let loaded = CheckpointKey::load_or_create(&path).unwrap();
        assert_eq!(
            loaded.verifying_key(),
            CheckpointKey::from_seed(&seed).verifying_key()
        );
    }
}
