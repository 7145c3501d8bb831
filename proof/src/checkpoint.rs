//! Signed checkpoints: what the server asserts about its chain tree, and the exact bytes
//! its Ed25519 key signs.
//!
//! A checkpoint says "after `height` blocks, the RFC 6962 tree whose leaf `n` is the
//! header hash of block `n` has `tree_size` leaves and root `root`, and the last block's
//! hash is `tip_hash`". `height` means what it means in storage (`ChainTip::height`):
//! blocks `0..height` exist, so the tip is block `height - 1` and, one leaf per block,
//! `tree_size == height` in every valid checkpoint. Both names are kept because the
//! proof contract uses both; the verifier rejects a checkpoint where they differ.
//!
//! The signature is Ed25519 (RFC 8032, pure, no pre-hash) over [`CHECKPOINT_SIGNED_LEN`]
//! bytes, never over JSON text:
//!
//! ```text
//! offset size field
//!      0   24 "medledger-checkpoint-v1\n" (ASCII; domain separation and version)
//!     24    8 tree_size  u64 LE
//!     32   32 root
//!     64   32 tip_hash
//!     96    8 height     u64 LE
//!    104    8 timestamp  i64 LE (milliseconds since the Unix epoch, UTC, when signed)
//! ```

use ed25519_dalek::{Signature, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::VerifyError;
use crate::hexfield::{parse_array, parse_hash, to_hex};
use crate::merkle::Hash;

/// The domain-separation prefix of the signed bytes. A signature made for any other
/// purpose or version cannot be taken for a checkpoint signature.
pub const CHECKPOINT_DOMAIN: &[u8; 24] = b"medledger-checkpoint-v1\n";
/// Length of the signed bytes.
pub const CHECKPOINT_SIGNED_LEN: usize = CHECKPOINT_DOMAIN.len() + 8 + 32 + 32 + 8 + 8;
const _: () = assert!(CHECKPOINT_SIGNED_LEN == 112);

/// The value of `algorithm` in [`PublicKeyDoc`].
pub const KEY_ALGORITHM: &str = "ed25519";

/// What a checkpoint asserts, with hashes as bytes. See the module docs for the meaning
/// of each field and the bytes that are signed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckpointBody {
    /// Leaves of the chain tree (one per block).
    pub tree_size: u64,
    /// Root of the chain tree of `tree_size` leaves.
    pub root: Hash,
    /// Header hash of block `height - 1`.
    pub tip_hash: Hash,
    /// Number of blocks (`ChainTip::height`): blocks `0..height` exist.
    pub height: u64,
    /// When the checkpoint was signed, milliseconds since the Unix epoch (UTC).
    pub timestamp: i64,
}

impl CheckpointBody {
    /// The bytes the checkpoint key signs (layout in the module docs).
    #[must_use]
    pub fn signed_bytes(&self) -> [u8; CHECKPOINT_SIGNED_LEN] {
        let mut out = [0u8; CHECKPOINT_SIGNED_LEN];
        out[..24].copy_from_slice(CHECKPOINT_DOMAIN);
        out[24..32].copy_from_slice(&self.tree_size.to_le_bytes());
        out[32..64].copy_from_slice(&self.root);
        out[64..96].copy_from_slice(&self.tip_hash);
        out[96..104].copy_from_slice(&self.height.to_le_bytes());
        out[104..112].copy_from_slice(&self.timestamp.to_le_bytes());
        out
    }

    /// Checks what every valid checkpoint satisfies: at least one block (genesis), and
    /// one leaf per block (`tree_size == height`).
    ///
    /// # Errors
    /// [`VerifyError::EmptyCheckpoint`] or [`VerifyError::CheckpointSizeMismatch`].
    pub fn check_shape(&self) -> Result<(), VerifyError> {
        if self.tree_size != self.height {
            return Err(VerifyError::CheckpointSizeMismatch {
                tree_size: self.tree_size,
                height: self.height,
            });
        }
        if self.tree_size == 0 {
            return Err(VerifyError::EmptyCheckpoint);
        }
        Ok(())
    }
}

/// A signed checkpoint as JSON (`GET /v1/checkpoint`): hashes, the signature (64 bytes)
/// and the key id in lowercase hex. Made by `CheckpointKey::sign`, checked by
/// [`verify_checkpoint`]. Unknown JSON fields are ignored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// See [`CheckpointBody::tree_size`].
    pub tree_size: u64,
    /// See [`CheckpointBody::root`].
    pub root: String,
    /// See [`CheckpointBody::tip_hash`].
    pub tip_hash: String,
    /// See [`CheckpointBody::height`].
    pub height: u64,
    /// See [`CheckpointBody::timestamp`].
    pub timestamp: i64,
    /// Ed25519 signature over [`CheckpointBody::signed_bytes`], 128 hex digits.
    pub signature: String,
    /// [`key_id`] of the signing key, 16 hex digits.
    pub key_id: String,
}

impl Checkpoint {
    /// Assembles the JSON form of a signed body (the server normally calls
    /// `CheckpointKey::sign` instead).
    #[must_use]
    pub fn from_parts(body: &CheckpointBody, signature: &Signature, key_id: String) -> Self {
        Checkpoint {
            tree_size: body.tree_size,
            root: to_hex(&body.root),
            tip_hash: to_hex(&body.tip_hash),
            height: body.height,
            timestamp: body.timestamp,
            signature: to_hex(&signature.to_bytes()),
            key_id,
        }
    }

    /// The body with its hashes decoded; errors name `prefix.field`.
    pub(crate) fn body_at(&self, prefix: &str) -> Result<CheckpointBody, VerifyError> {
        Ok(CheckpointBody {
            tree_size: self.tree_size,
            root: parse_hash(&format!("{prefix}.root"), &self.root)?,
            tip_hash: parse_hash(&format!("{prefix}.tip_hash"), &self.tip_hash)?,
            height: self.height,
            timestamp: self.timestamp,
        })
    }
}

/// Verifies a checkpoint against the server's public key and returns what it asserts.
///
/// `Ok` guarantees the holder of `key` signed exactly these field values and that they
/// are well formed (`tree_size == height >= 1`).
///
/// # Errors
/// [`VerifyError::MalformedHex`] naming the field, [`VerifyError::WrongKey`] if the
/// checkpoint names another key, [`VerifyError::BadSignature`], and the errors of
/// [`CheckpointBody::check_shape`].
pub fn verify_checkpoint(
    checkpoint: &Checkpoint,
    key: &VerifyingKey,
) -> Result<CheckpointBody, VerifyError> {
    verify_checkpoint_at(checkpoint, key, "checkpoint")
}

/// [`verify_checkpoint`], naming fields under `prefix` (e.g. `from_checkpoint.root`).
pub(crate) fn verify_checkpoint_at(
    checkpoint: &Checkpoint,
    key: &VerifyingKey,
    prefix: &str,
) -> Result<CheckpointBody, VerifyError> {
    let body = checkpoint.body_at(prefix)?;
    let signature: [u8; 64] = parse_array(&format!("{prefix}.signature"), &checkpoint.signature)?;
    // Parsed only to name a malformed id precisely; the comparison is on the text.
    parse_array::<8>(&format!("{prefix}.key_id"), &checkpoint.key_id)?;
    let given = key_id(key);
    if checkpoint.key_id != given {
        return Err(VerifyError::WrongKey {
            checkpoint_key_id: checkpoint.key_id.clone(),
            given_key_id: given,
        });
    }
    // verify_strict: also rejects small-order keys and non-canonical signatures, so one
    // checkpoint has one valid signature.
    key.verify_strict(&body.signed_bytes(), &Signature::from_bytes(&signature))
        .map_err(|_| VerifyError::BadSignature)?;
    body.check_shape()?;
    Ok(body)
}

/// The key id: lowercase hex of the first 8 bytes of SHA-256 of the 32-byte public key.
#[must_use]
pub fn key_id(key: &VerifyingKey) -> String {
    let digest = Sha256::digest(key.as_bytes());
    to_hex(&digest[..8])
}

/// The public key as the verifier takes it: 64 lowercase hex digits of the 32 bytes.
#[must_use]
pub fn public_key_hex(key: &VerifyingKey) -> String {
    to_hex(key.as_bytes())
}

/// The JSON of `GET /v1/checkpoint/key`:
/// `{"key_id": "…16 hex…", "public_key": "…64 hex…", "algorithm": "ed25519"}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublicKeyDoc {
    /// [`key_id`] of the key.
    pub key_id: String,
    /// [`public_key_hex`] of the key.
    pub public_key: String,
    /// Always [`KEY_ALGORITHM`].
    pub algorithm: String,
}

impl PublicKeyDoc {
    /// The document for `key`.
    #[must_use]
    pub fn new(key: &VerifyingKey) -> Self {
        PublicKeyDoc {
            key_id: key_id(key),
            public_key: public_key_hex(key),
            algorithm: KEY_ALGORITHM.to_string(),
        }
    }
}

/// Reads a public key given to the verifier: either 64 lowercase hex digits, or the JSON
/// of `GET /v1/checkpoint/key` (so `--key` can take the saved response). Surrounding
/// whitespace is ignored.
///
/// # Errors
/// [`VerifyError::MalformedPublicKey`] saying why.
pub fn parse_public_key(text: &str) -> Result<VerifyingKey, VerifyError> {
    let text = text.trim();
    let bad = |why: String| VerifyError::MalformedPublicKey(why);
    let (hex_text, claimed_id) = if text.starts_with('{') {
        let doc: PublicKeyDoc =
            serde_json::from_str(text).map_err(|e| bad(format!("not a key document ({e})")))?;
        if doc.algorithm != KEY_ALGORITHM {
            return Err(bad(format!(
                "algorithm is {:?}, only {KEY_ALGORITHM:?} is supported",
                doc.algorithm
            )));
        }
        (doc.public_key, Some(doc.key_id))
    } else {
        (text.to_string(), None)
    };
    let bytes: [u8; 32] = parse_array("public_key", &hex_text).map_err(|e| bad(e.to_string()))?;
    let key = VerifyingKey::from_bytes(&bytes)
        .map_err(|_| bad("the 32 bytes are not an Ed25519 public key".into()))?;
    if let Some(claimed) = claimed_id {
        let actual = key_id(&key);
        if claimed != actual {
            return Err(bad(format!(
                "key_id {claimed} does not match the public key, whose id is {actual}"
            )));
        }
    }
    Ok(key)
}
