//! Payload encryption: AES-256-GCM in 64 KiB pieces with STREAM nonces, and the master
//! key that wraps each payload's data key. Formats: docs/PAYLOADS.md.
//!
//! Ciphertext = header ‖ piece₀ ‖ … ‖ pieceₙ. Every piece is `ciphertext ‖ tag` of
//! exactly `PIECE_PLAINTEXT_BYTES` plaintext bytes except the last, which holds 0 to
//! `PIECE_PLAINTEXT_BYTES` bytes. Piece i's nonce is `prefix (7) ‖ i (u32 BE) ‖ last (1)`
//! and its AAD is the header, so pieces cannot be reordered, dropped, duplicated or
//! truncated (a missing last piece fails: no piece before it carries the flag), and
//! the header cannot be altered.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};

/// Plaintext bytes per piece.
pub const PIECE_PLAINTEXT_BYTES: usize = 64 * 1024;
/// AES-GCM tag bytes per piece.
pub const TAG_BYTES: usize = 16;
/// Ciphertext bytes of a full piece.
const PIECE_CIPHERTEXT_BYTES: usize = PIECE_PLAINTEXT_BYTES + TAG_BYTES;
/// Header: magic (4) ‖ format version (1) ‖ suite (1) ‖ piece plaintext bytes (u32 LE)
/// ‖ nonce prefix (7).
pub const HEADER_BYTES: usize = 17;
const MAGIC: &[u8; 4] = b"MLPE";
const FORMAT_VERSION: u8 = 1;
/// AES-256-GCM with STREAM nonces.
const SUITE_AES256GCM_STREAM: u8 = 1;
const NONCE_PREFIX_BYTES: usize = 7;
const _: () = assert!(HEADER_BYTES == 4 + 1 + 1 + 4 + NONCE_PREFIX_BYTES);
const _: () = assert!(NONCE_PREFIX_BYTES + 4 + 1 == 12);

/// Bytes of a data key and of the master key.
pub const KEY_BYTES: usize = 32;
/// Wrapped key: version (1) ‖ nonce (12) ‖ encrypted key (32) ‖ tag (16).
pub const WRAPPED_KEY_BYTES: usize = 1 + 12 + KEY_BYTES + TAG_BYTES;
const WRAP_VERSION: u8 = 1;
const WRAP_AAD_PREFIX: &[u8] = b"medledger-key-wrap-v1\0";

/// What went wrong in encryption, decryption or key handling. Messages never carry
/// payload or key bytes.
#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    /// The ciphertext does not start with a header this version reads.
    #[error("payload ciphertext has no valid header")]
    BadHeader,
    /// A piece failed authentication: tampered, reordered, or the wrong key.
    #[error("payload piece {piece} failed authentication (tampered, reordered or wrong key)")]
    Authentication {
        /// Index of the failing piece.
        piece: u64,
    },
    /// The ciphertext ended before its last piece.
    #[error("payload ciphertext is truncated")]
    Truncated,
    /// Bytes follow the last piece.
    #[error("payload ciphertext has bytes after its last piece")]
    TrailingData,
    /// An earlier call already failed; the stream is not trusted any further.
    #[error("payload decryption already failed")]
    AlreadyFailed,
    /// More than 2^32 pieces (256 TiB).
    #[error("payload is too large to encrypt")]
    TooLarge,
    /// A wrapped data key failed to unwrap (wrong master key, wrong key id, or damaged).
    #[error("wrapped data key {key_id} does not unwrap with this master key")]
    Unwrap {
        /// The key id the wrapped key was looked up by.
        key_id: String,
    },
    /// The master key file is readable by others.
    #[error("master key {path} has mode {mode:o}; it must be 0600 (chmod 600)")]
    MasterKeyPermissions {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The master key file is not 32 bytes.
    #[error("master key {path} is {len} bytes; it must be exactly 32")]
    MasterKeyLength {
        /// The file.
        path: PathBuf,
        /// Its length.
        len: u64,
    },
    /// Sealed clinical text failed authentication: tampered, moved to another record or
    /// field, or the wrong key.
    #[error("sealed {field} failed authentication (tampered, moved or wrong key)")]
    Unseal {
        /// The field it was read from.
        field: &'static str,
    },
    /// The operating system's random source failed.
    #[error("random source failed: {0}")]
    Random(String),
    /// I/O on a key file.
    #[error("key file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
}

fn random_bytes<const N: usize>() -> Result<[u8; N], CryptoError> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).map_err(|e| CryptoError::Random(e.to_string()))?;
    Ok(bytes)
}

/// 32 secret bytes, zeroed on drop.
struct SecretBytes([u8; KEY_BYTES]);

impl Drop for SecretBytes {
    fn drop(&mut self) {
        for byte in self.0.iter_mut() {
            // Volatile so the compiler does not drop the wipe of memory about to be freed.
            unsafe { std::ptr::write_volatile(byte, 0) };
        }
    }
}

/// A payload's random 256-bit data key.
pub struct DataKey(SecretBytes);

impl DataKey {
    /// A fresh key from the operating system's random source.
    pub fn generate() -> Result<DataKey, CryptoError> {
        Ok(DataKey(SecretBytes(random_bytes()?)))
    }

    fn cipher(&self) -> Aes256Gcm {
        Aes256Gcm::new(&self.0 .0.into())
    }

    /// HMAC-SHA256 keyed with this key, ready for input: clone it for each message, so
    /// the key's two blocks are hashed once.
    pub fn hmac_sha256(&self) -> hmac::Hmac<sha2::Sha256> {
        <hmac::Hmac<sha2::Sha256> as hmac::Mac>::new_from_slice(&self.0 .0)
            .expect("HMAC takes a key of any length")
    }
}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DataKey(..)")
    }
}

fn piece_nonce(prefix: &[u8; NONCE_PREFIX_BYTES], index: u32, last: bool) -> [u8; 12] {
    let mut nonce = [0u8; 12];
    nonce[..NONCE_PREFIX_BYTES].copy_from_slice(prefix);
    nonce[NONCE_PREFIX_BYTES..11].copy_from_slice(&index.to_be_bytes());
    nonce[11] = u8::from(last);
    nonce
}

/// The ciphertext length of a `plaintext_bytes`-byte payload.
pub fn ciphertext_len(plaintext_bytes: u64) -> u64 {
    // The last piece holds 0..=PIECE_PLAINTEXT_BYTES bytes; there is always one.
    let pieces = plaintext_bytes
        .div_ceil(PIECE_PLAINTEXT_BYTES as u64)
        .max(1);
    HEADER_BYTES as u64 + plaintext_bytes + pieces * TAG_BYTES as u64
}

/// Encrypts a payload pushed in any slicing. Holds at most one piece.
pub struct Encryptor {
    cipher: Aes256Gcm,
    header: [u8; HEADER_BYTES],
    prefix: [u8; NONCE_PREFIX_BYTES],
    next_piece: u32,
    pending: Vec<u8>,
    header_written: bool,
}

impl Encryptor {
    /// An encryptor under `key` with a fresh random nonce prefix.
    pub fn new(key: &DataKey) -> Result<Encryptor, CryptoError> {
        let prefix: [u8; NONCE_PREFIX_BYTES] = random_bytes()?;
        let mut header = [0u8; HEADER_BYTES];
        header[..4].copy_from_slice(MAGIC);
        header[4] = FORMAT_VERSION;
        header[5] = SUITE_AES256GCM_STREAM;
        header[6..10].copy_from_slice(&(PIECE_PLAINTEXT_BYTES as u32).to_le_bytes());
        header[10..].copy_from_slice(&prefix);
        Ok(Encryptor {
            cipher: key.cipher(),
            header,
            prefix,
            next_piece: 0,
            pending: Vec::with_capacity(PIECE_CIPHERTEXT_BYTES),
            header_written: false,
        })
    }

    /// Encrypts `plaintext`; returns the ciphertext completed so far (the header first).
    pub fn push(&mut self, mut plaintext: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let mut out = Vec::with_capacity(plaintext.len() + HEADER_BYTES + 2 * TAG_BYTES);
        self.write_header(&mut out);
        while !plaintext.is_empty() {
            if self.pending.len() == PIECE_PLAINTEXT_BYTES {
                // A full piece is sealed only once more plaintext shows it is not the last.
                self.seal(false, &mut out)?;
            }
            let take = (PIECE_PLAINTEXT_BYTES - self.pending.len()).min(plaintext.len());
            self.pending.extend_from_slice(&plaintext[..take]);
            plaintext = &plaintext[take..];
        }
        Ok(out)
    }

    /// Seals the last piece (possibly empty) and returns the remaining ciphertext.
    pub fn finish(mut self) -> Result<Vec<u8>, CryptoError> {
        let mut out = Vec::with_capacity(self.pending.len() + HEADER_BYTES + TAG_BYTES);
        self.write_header(&mut out);
        self.seal(true, &mut out)?;
        Ok(out)
    }

    fn write_header(&mut self, out: &mut Vec<u8>) {
        if !self.header_written {
            out.extend_from_slice(&self.header);
            self.header_written = true;
        }
    }

    fn seal(&mut self, last: bool, out: &mut Vec<u8>) -> Result<(), CryptoError> {
        assert!(self.pending.len() <= PIECE_PLAINTEXT_BYTES);
        let nonce = piece_nonce(&self.prefix, self.next_piece, last);
        self.cipher
            .encrypt_in_place(Nonce::from_slice(&nonce), &self.header, &mut self.pending)
            .map_err(|_| CryptoError::TooLarge)?;
        out.extend_from_slice(&self.pending);
        self.pending.clear();
        self.next_piece = self
            .next_piece
            .checked_add(1)
            .ok_or(CryptoError::TooLarge)?;
        Ok(())
    }
}

/// Decrypts and authenticates a payload pushed in any slicing. Returns plaintext only
/// from authenticated pieces; after an error it returns that error forever.
pub struct Decryptor {
    cipher: Aes256Gcm,
    header: Option<[u8; HEADER_BYTES]>,
    piece_ciphertext_bytes: usize,
    next_piece: u32,
    pending: Vec<u8>,
    failed: bool,
}

impl Decryptor {
    /// A decryptor under `key`.
    pub fn new(key: &DataKey) -> Decryptor {
        Decryptor {
            cipher: key.cipher(),
            header: None,
            piece_ciphertext_bytes: PIECE_CIPHERTEXT_BYTES,
            next_piece: 0,
            pending: Vec::with_capacity(2 * PIECE_CIPHERTEXT_BYTES),
            failed: false,
        }
    }

    /// Takes more ciphertext; returns the plaintext of the pieces it completed.
    pub fn push(&mut self, ciphertext: &[u8]) -> Result<Vec<u8>, CryptoError> {
        if self.failed {
            return Err(CryptoError::AlreadyFailed);
        }
        let result = self.push_inner(ciphertext);
        self.failed = result.is_err();
        result
    }

    fn push_inner(&mut self, mut ciphertext: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let mut out = Vec::with_capacity(ciphertext.len());
        while !ciphertext.is_empty() {
            // Fill to one byte past a full piece: only then is that piece not the last.
            let want = if self.header.is_none() {
                HEADER_BYTES
            } else {
                self.piece_ciphertext_bytes + 1
            };
            let take = want
                .saturating_sub(self.pending.len())
                .min(ciphertext.len());
            self.pending.extend_from_slice(&ciphertext[..take]);
            ciphertext = &ciphertext[take..];
            if self.header.is_none() && self.pending.len() == HEADER_BYTES {
                self.read_header()?;
            } else if self.pending.len() == want {
                let rest = self.pending.split_off(self.piece_ciphertext_bytes);
                self.open_piece(false, &mut out)?;
                self.pending = rest;
            }
        }
        Ok(out)
    }

    /// Authenticates the last piece and returns its plaintext.
    pub fn finish(mut self) -> Result<Vec<u8>, CryptoError> {
        if self.failed {
            return Err(CryptoError::AlreadyFailed);
        }
        if self.header.is_none() || self.pending.len() < TAG_BYTES {
            return Err(CryptoError::Truncated);
        }
        let mut out = Vec::with_capacity(self.pending.len());
        self.open_piece(true, &mut out)?;
        Ok(out)
    }

    fn read_header(&mut self) -> Result<(), CryptoError> {
        let header: [u8; HEADER_BYTES] = self.pending[..HEADER_BYTES]
            .try_into()
            .expect("pending holds exactly a header");
        let piece_bytes = u32::from_le_bytes(header[6..10].try_into().expect("4 bytes"));
        if &header[..4] != MAGIC
            || header[4] != FORMAT_VERSION
            || header[5] != SUITE_AES256GCM_STREAM
            || piece_bytes as usize != PIECE_PLAINTEXT_BYTES
        {
            return Err(CryptoError::BadHeader);
        }
        self.header = Some(header);
        self.pending.clear();
        Ok(())
    }

    fn open_piece(&mut self, last: bool, out: &mut Vec<u8>) -> Result<(), CryptoError> {
        let header = self.header.expect("pieces follow the header");
        let prefix: [u8; NONCE_PREFIX_BYTES] = header[10..].try_into().expect("7 bytes");
        let nonce = piece_nonce(&prefix, self.next_piece, last);
        let piece = u64::from(self.next_piece);
        self.cipher
            .decrypt_in_place(Nonce::from_slice(&nonce), &header, &mut self.pending)
            .map_err(|_| {
                if last && piece > 0 && self.pending.len() == self.piece_ciphertext_bytes {
                    // A full piece that should not be the last: the stream was cut.
                    CryptoError::Truncated
                } else {
                    CryptoError::Authentication { piece }
                }
            })?;
        out.extend_from_slice(&self.pending);
        self.pending.clear();
        self.next_piece = self
            .next_piece
            .checked_add(1)
            .ok_or(CryptoError::TooLarge)?;
        Ok(())
    }
}

/// The key that wraps every data key. Never leaves the process.
pub struct MasterKey(SecretBytes);

impl MasterKey {
    /// The master key of these 32 bytes (a cluster derives its nodes' common master key
    /// from the cluster secret).
    pub fn from_bytes(bytes: [u8; KEY_BYTES]) -> MasterKey {
        MasterKey(SecretBytes(bytes))
    }

    /// Loads the master key at `path`, or creates it (random, mode 0600, fsynced) if the
    /// file does not exist. Fails if the file is readable or writable by group or others,
    /// or is not exactly 32 bytes.
    pub fn load_or_create(path: &Path) -> Result<MasterKey, CryptoError> {
        let io_error = |source| CryptoError::Io {
            path: path.to_path_buf(),
            source,
        };
        match fs::metadata(path) {
            Ok(meta) => {
                let mode = meta.permissions().mode() & 0o777;
                if mode & 0o077 != 0 {
                    return Err(CryptoError::MasterKeyPermissions {
                        path: path.to_path_buf(),
                        mode,
                    });
                }
                if meta.len() != KEY_BYTES as u64 {
                    return Err(CryptoError::MasterKeyLength {
                        path: path.to_path_buf(),
                        len: meta.len(),
                    });
                }
                let mut key = SecretBytes([0u8; KEY_BYTES]);
                File::open(path)
                    .and_then(|mut f| f.read_exact(&mut key.0))
                    .map_err(io_error)?;
                Ok(MasterKey(key))
            }
            Err(error) if error.kind() == io::ErrorKind::NotFound => {
                let key = SecretBytes(random_bytes()?);
                let mut file = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(path)
                    .map_err(io_error)?;
                file.write_all(&key.0).map_err(io_error)?;
                file.sync_all().map_err(io_error)?;
                crate::fsutil::sync_parent_dir(path).map_err(io_error)?;
                Ok(MasterKey(key))
            }
            Err(error) => Err(io_error(error)),
        }
    }

    #[cfg(test)]
    pub(crate) fn from_bytes_for_test(bytes: [u8; KEY_BYTES]) -> MasterKey {
        MasterKey(SecretBytes(bytes))
    }

    fn cipher(&self) -> Aes256Gcm {
        Aes256Gcm::new(&self.0 .0.into())
    }

    /// Wraps `data_key` for storage under `key_id` (the key id is authenticated, so a
    /// wrapped key moved to another id does not unwrap).
    pub fn wrap(
        &self,
        key_id: &str,
        data_key: &DataKey,
    ) -> Result<[u8; WRAPPED_KEY_BYTES], CryptoError> {
        let nonce: [u8; 12] = random_bytes()?;
        let mut sealed = Vec::with_capacity(KEY_BYTES + TAG_BYTES);
        sealed.extend_from_slice(&data_key.0 .0);
        self.cipher()
            .encrypt_in_place(Nonce::from_slice(&nonce), &wrap_aad(key_id), &mut sealed)
            .map_err(|_| CryptoError::TooLarge)?;
        let mut wrapped = [0u8; WRAPPED_KEY_BYTES];
        wrapped[0] = WRAP_VERSION;
        wrapped[1..13].copy_from_slice(&nonce);
        wrapped[13..].copy_from_slice(&sealed);
        sealed.iter_mut().for_each(|b| *b = 0);
        Ok(wrapped)
    }

    /// A key derived from this one for `purpose` (HMAC-SHA256 of the purpose under the
    /// master key): the same master key gives the same key, any other an unrelated one.
    pub fn derive(&self, purpose: &str) -> DataKey {
        use hmac::Mac;
        let mut mac = <hmac::Hmac<sha2::Sha256> as Mac>::new_from_slice(&self.0 .0)
            .expect("HMAC takes a key of any length");
        mac.update(b"medledger-derived-key-v1\0");
        mac.update(purpose.as_bytes());
        let mut key = SecretBytes([0u8; KEY_BYTES]);
        key.0.copy_from_slice(&mac.finalize().into_bytes());
        DataKey(key)
    }

    /// Unwraps a key made by [`MasterKey::wrap`] for the same `key_id`.
    pub fn unwrap(&self, key_id: &str, wrapped: &[u8]) -> Result<DataKey, CryptoError> {
        let error = || CryptoError::Unwrap {
            key_id: key_id.to_string(),
        };
        if wrapped.len() != WRAPPED_KEY_BYTES || wrapped[0] != WRAP_VERSION {
            return Err(error());
        }
        let mut sealed = wrapped[13..].to_vec();
        self.cipher()
            .decrypt_in_place(
                Nonce::from_slice(&wrapped[1..13]),
                &wrap_aad(key_id),
                &mut sealed,
            )
            .map_err(|_| error())?;
        let mut key = SecretBytes([0u8; KEY_BYTES]);
        key.0.copy_from_slice(&sealed);
        sealed.iter_mut().for_each(|b| *b = 0);
        Ok(DataKey(key))
    }
}

/// The associated data of a sealed clinical field: it binds the ciphertext to its record
/// and field, so it cannot be moved to another record or field and still open.
const SEAL_AAD_PREFIX: &[u8] = b"medledger-clinical-v1\0";

fn seal_aad(record_id: &str, field: &str) -> Vec<u8> {
    let mut aad = SEAL_AAD_PREFIX.to_vec();
    aad.extend_from_slice(record_id.as_bytes());
    aad.push(0);
    aad.extend_from_slice(field.as_bytes());
    aad
}

/// Seals clinical text of `record_id`'s `field` (`metadata`, `reason`, `purpose`) under
/// the record's content key: AES-256-GCM with a random 96-bit nonce and
/// `"medledger-clinical-v1\0" ‖ record_id ‖ 0x00 ‖ field` as associated data. Returns the
/// nonce and the ciphertext with its tag (docs/FORMAT.md, "Sealed clinical text").
pub fn seal_text(
    key: &DataKey,
    record_id: &str,
    field: &str,
    text: &str,
) -> Result<([u8; 12], Vec<u8>), CryptoError> {
    let nonce: [u8; 12] = random_bytes()?;
    let mut sealed = Vec::with_capacity(text.len() + TAG_BYTES);
    sealed.extend_from_slice(text.as_bytes());
    key.cipher()
        .encrypt_in_place(
            Nonce::from_slice(&nonce),
            &seal_aad(record_id, field),
            &mut sealed,
        )
        .map_err(|_| CryptoError::TooLarge)?;
    Ok((nonce, sealed))
}

/// Opens what [`seal_text`] sealed for the same record and field.
pub fn open_text(
    key: &DataKey,
    record_id: &str,
    field: &'static str,
    nonce: &[u8; 12],
    ciphertext_and_tag: &[u8],
) -> Result<String, CryptoError> {
    let mut text = ciphertext_and_tag.to_vec();
    key.cipher()
        .decrypt_in_place(
            Nonce::from_slice(nonce),
            &seal_aad(record_id, field),
            &mut text,
        )
        .map_err(|_| CryptoError::Unseal { field })?;
    String::from_utf8(text).map_err(|_| CryptoError::Unseal { field })
}

fn wrap_aad(key_id: &str) -> Vec<u8> {
    let mut aad = WRAP_AAD_PREFIX.to_vec();
    aad.extend_from_slice(key_id.as_bytes());
    aad
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A vector for a reader of docs/FORMAT.md: key 32 × 0x01, nonce 12 × 0x02, record
    /// `r-1`, field `metadata`, text `{"n":1}` (checked against Python's `cryptography`).
    #[test]
    fn sealed_text_vector_and_binding() {
        let key = DataKey(SecretBytes([1; KEY_BYTES]));
        let aad = seal_aad("r-1", "metadata");
        assert_eq!(aad, b"medledger-clinical-v1\0r-1\0metadata");
        let mut sealed = br#"{"n":1}"#.to_vec();
        key.cipher()
            .encrypt_in_place(Nonce::from_slice(&[2; 12]), &aad, &mut sealed)
            .unwrap();
        assert_eq!(
            hex::encode(&sealed),
            "7cf4a76b7066bc9f7269b6b2792252a175f67546d0c50e"
        );
        assert_eq!(
            open_text(&key, "r-1", "metadata", &[2; 12], &sealed).unwrap(),
            r#"{"n":1}"#
        );
        // Another record, another field, another key, one flipped bit: all refused.
        let other = DataKey(SecretBytes([3; KEY_BYTES]));
        assert!(open_text(&key, "r-2", "metadata", &[2; 12], &sealed).is_err());
        assert!(open_text(&key, "r-1", "reason", &[2; 12], &sealed).is_err());
        assert!(open_text(&other, "r-1", "metadata", &[2; 12], &sealed).is_err());
        let mut flipped = sealed.clone();
        flipped[0] ^= 1;
        assert!(open_text(&key, "r-1", "metadata", &[2; 12], &flipped).is_err());
        // Random nonces: the same text seals differently every time, and opens.
        let (n1, c1) = seal_text(&key, "r-1", "metadata", "same").unwrap();
        let (n2, c2) = seal_text(&key, "r-1", "metadata", "same").unwrap();
        assert_ne!((n1, &c1), (n2, &c2));
        assert_eq!(
            open_text(&key, "r-1", "metadata", &n2, &c2).unwrap(),
            "same"
        );
    }

    const SEG: usize = PIECE_PLAINTEXT_BYTES;

    fn encrypt(key: &DataKey, plaintext: &[u8], piece: usize) -> Vec<u8> {
        let mut enc = Encryptor::new(key).unwrap();
        let mut out = Vec::new();
        for slice in plaintext.chunks(piece.max(1)) {
            out.extend(enc.push(slice).unwrap());
        }
        out.extend(enc.finish().unwrap());
        out
    }

    fn decrypt(key: &DataKey, ciphertext: &[u8], piece: usize) -> Result<Vec<u8>, CryptoError> {
        let mut dec = Decryptor::new(key);
        let mut out = Vec::new();
        for slice in ciphertext.chunks(piece.max(1)) {
            out.extend(dec.push(slice)?);
        }
        out.extend(dec.finish()?);
        Ok(out)
    }

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 % 256) as u8).collect()
    }

    #[test]
    fn round_trips_at_piece_edges() {
        let key = DataKey::generate().unwrap();
        for len in [0, 1, SEG - 1, SEG, SEG + 1, 2 * SEG, 5 * SEG + 3] {
            let plaintext = pattern(len);
            for piece in [1000, SEG, SEG + TAG_BYTES, 262_144] {
                let ciphertext = encrypt(&key, &plaintext, piece);
                assert_eq!(ciphertext.len() as u64, ciphertext_len(len as u64));
                assert_eq!(
                    decrypt(&key, &ciphertext, piece).unwrap(),
                    plaintext,
                    "len {len}"
                );
            }
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(24))]
        #[test]
        fn round_trips_any_length_in_any_slicing(
            len in 0usize..(3 * SEG + 100),
            enc_piece in 1usize..(2 * SEG),
            dec_piece in 1usize..(2 * SEG),
        ) {
            let key = DataKey::generate().unwrap();
            let plaintext = pattern(len);
            let ciphertext = encrypt(&key, &plaintext, enc_piece);
            proptest::prop_assert_eq!(ciphertext.len() as u64, ciphertext_len(len as u64));
            proptest::prop_assert_eq!(decrypt(&key, &ciphertext, dec_piece).unwrap(), plaintext);
        }
    }

    #[test]
    fn tampering_fails() {
        let key = DataKey::generate().unwrap();
        let ciphertext = encrypt(&key, &pattern(3 * SEG), SEG);
        for position in [
            0,
            5,
            HEADER_BYTES,
            HEADER_BYTES + SEG + 20,
            ciphertext.len() - 1,
        ] {
            let mut bad = ciphertext.clone();
            bad[position] ^= 1;
            assert!(decrypt(&key, &bad, 4096).is_err(), "flip at {position}");
        }
    }

    #[test]
    fn reordering_dropping_and_truncating_fail() {
        let key = DataKey::generate().unwrap();
        let ciphertext = encrypt(&key, &pattern(3 * SEG + 10), SEG);
        let seg = |i: usize| {
            let start = HEADER_BYTES + i * (SEG + TAG_BYTES);
            &ciphertext[start..(start + SEG + TAG_BYTES).min(ciphertext.len())]
        };
        let header = &ciphertext[..HEADER_BYTES];
        let swapped = [header, seg(1), seg(0), seg(2), seg(3)].concat();
        assert!(matches!(
            decrypt(&key, &swapped, 999),
            Err(CryptoError::Authentication { piece: 0 })
        ));
        let dropped = [header, seg(0), seg(2), seg(3)].concat();
        assert!(decrypt(&key, &dropped, 999).is_err());
        let no_last = [header, seg(0), seg(1), seg(2)].concat();
        assert!(matches!(
            decrypt(&key, &no_last, 999),
            Err(CryptoError::Truncated)
        ));
        for cut in [0, HEADER_BYTES, HEADER_BYTES + 10, ciphertext.len() - 1] {
            assert!(
                decrypt(&key, &ciphertext[..cut], 999).is_err(),
                "cut at {cut}"
            );
        }
        let extended = [&ciphertext[..], b"x"].concat();
        assert!(decrypt(&key, &extended, 999).is_err());
    }

    #[test]
    fn wrong_key_fails() {
        let key = DataKey::generate().unwrap();
        let other = DataKey::generate().unwrap();
        let ciphertext = encrypt(&key, b"hello", 5);
        assert!(matches!(
            decrypt(&other, &ciphertext, 5),
            Err(CryptoError::Authentication { piece: 0 })
        ));
    }

    #[test]
    fn wrap_binds_the_key_id() {
        let master = MasterKey::from_bytes_for_test([9; KEY_BYTES]);
        let key = DataKey::generate().unwrap();
        let wrapped = master.wrap("id-a", &key).unwrap();
        let unwrapped = master.unwrap("id-a", &wrapped).unwrap();
        assert_eq!(unwrapped.0 .0, key.0 .0);
        assert!(master.unwrap("id-b", &wrapped).is_err());
        let other = MasterKey::from_bytes_for_test([8; KEY_BYTES]);
        assert!(other.unwrap("id-a", &wrapped).is_err());
    }

    #[test]
    fn master_key_is_created_0600_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        let first = MasterKey::load_or_create(&path).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let again = MasterKey::load_or_create(&path).unwrap();
        assert_eq!(first.0 .0, again.0 .0);
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let error = MasterKey::load_or_create(&path).err().unwrap();
        assert!(matches!(
            error,
            CryptoError::MasterKeyPermissions { mode: 0o644, .. }
        ));
        assert!(error.to_string().contains("chmod 600"));
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        fs::write(&path, [1u8; 31]).unwrap();
        assert!(matches!(
            MasterKey::load_or_create(&path),
            Err(CryptoError::MasterKeyLength { len: 31, .. })
        ));
    }
}
