//! Errors: why a proof was rejected ([`VerifyError`]), why header bytes are not a block
//! header ([`HeaderError`]), why the chain tree cannot answer ([`ChainTreeError`]) and
//! why the checkpoint key could not be loaded ([`KeyError`]).

use std::path::PathBuf;

use crate::header::BLOCK_HEADER_LEN;
use crate::merkle::ProofError;

/// Why a proof document, checkpoint or public key was rejected.
///
/// Any `Err` means the document must not be trusted; the variant names the first check
/// that failed, and its message is meant to be shown to the auditor as it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// The input is not JSON of the expected shape.
    #[error("malformed JSON: {0}")]
    MalformedJson(String),
    /// The JSON is none of the documents this crate verifies.
    #[error(
        "unknown document: expected a tx proof (has \"tx_hash\"), a consistency proof \
         (has \"from\" and \"proof\") or a checkpoint (has \"signature\")"
    )]
    UnknownDocument,
    /// A hex field does not hold what it must.
    #[error("field `{field}`: {reason}")]
    MalformedHex {
        /// The JSON path of the field, e.g. `chain.audit_path[2]`.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A list of hashes is longer than any valid proof over a `u64`-sized tree.
    #[error("field `{field}` has {len} hashes, more than the {max} any valid proof has")]
    TooManyHashes {
        /// The JSON path of the list.
        field: String,
        /// Its length.
        len: usize,
        /// The bound.
        max: usize,
    },
    /// The public key given to the verifier is not an Ed25519 public key in a known form.
    #[error("public key: {0}")]
    MalformedPublicKey(String),
    /// The checkpoint names another key than the one the verifier was given.
    #[error(
        "checkpoint was signed by key {checkpoint_key_id}, but the given key is {given_key_id}"
    )]
    WrongKey {
        /// `key_id` in the checkpoint.
        checkpoint_key_id: String,
        /// `key_id` of the key given to the verifier.
        given_key_id: String,
    },
    /// The Ed25519 signature does not verify over the checkpoint's signed bytes.
    #[error("checkpoint signature does not verify with the given key")]
    BadSignature,
    /// A checkpoint's `tree_size` and `height` differ (the chain tree has one leaf per block).
    #[error("checkpoint tree_size {tree_size} differs from its height {height}")]
    CheckpointSizeMismatch {
        /// `tree_size` in the checkpoint.
        tree_size: u64,
        /// `height` in the checkpoint.
        height: u64,
    },
    /// A checkpoint of an empty chain (every chain has its genesis block).
    #[error("checkpoint covers no blocks (tree_size 0)")]
    EmptyCheckpoint,
    /// A field of the proof disagrees with the signed checkpoint or with another field.
    #[error("`{field}` is {got}, but {expected_from} is {expected}")]
    Mismatch {
        /// The field that disagrees, e.g. `chain.root`.
        field: &'static str,
        /// Its value.
        got: String,
        /// Where the expected value comes from, e.g. `checkpoint.root`.
        expected_from: &'static str,
        /// The expected value.
        expected: String,
    },
    /// `block_header` is not a block header of a known format.
    #[error("block_header: {0}")]
    Header(#[from] HeaderError),
    /// The tx audit path does not prove `tx_hash` under `data_hash`.
    #[error("transaction inclusion (audit_path into data_hash): {0}")]
    TxInclusion(ProofError),
    /// The chain audit path does not prove `block_hash` under the checkpoint's root.
    #[error("block inclusion (chain.audit_path into chain.root): {0}")]
    ChainInclusion(ProofError),
    /// The consistency proof does not link the two roots.
    #[error("consistency (proof from from_root to to_root): {0}")]
    Consistency(ProofError),
    /// A consistency proof was given without the signed checkpoints it links.
    #[error(
        "a consistency proof alone proves nothing: add the two signed checkpoints as \
         \"from_checkpoint\" and \"to_checkpoint\" (e.g. the one you kept and a new one \
         from GET /v1/checkpoint)"
    )]
    MissingCheckpoints,
}

/// Why bytes are not a block header (docs/FORMAT.md). The ledger engine's block errors
/// and the verifier's [`VerifyError::Header`] both carry it, so the two say the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HeaderError {
    /// Fewer bytes than a header.
    #[error("header needs {BLOCK_HEADER_LEN} bytes, got {got}")]
    TooShort {
        /// The number of bytes given.
        got: usize,
    },
    /// More bytes than a header where a header alone was expected.
    #[error("{extra} bytes after the {BLOCK_HEADER_LEN}-byte header")]
    TrailingBytes {
        /// The number of bytes past the header.
        extra: usize,
    },
    /// A format byte outside [`crate::header::BLOCK_FORMAT_OLDEST`] to
    /// [`crate::header::BLOCK_FORMAT`]: the rest of the layout cannot be trusted, so
    /// nothing else is read.
    #[error(
        "unknown block format {format} (formats {} to {} are known)",
        crate::header::BLOCK_FORMAT_OLDEST,
        crate::header::BLOCK_FORMAT
    )]
    UnknownFormat {
        /// The format byte (offset 21).
        format: u8,
    },
    /// The reserved bytes (offsets 22 and 23) are not zero, as format 1 writes them.
    #[error("reserved header bytes are {:02x} {:02x}, not zero", reserved[0], reserved[1])]
    ReservedNotZero {
        /// The two reserved bytes.
        reserved: [u8; 2],
    },
}

/// Why a [`crate::ChainTree`] cannot give a root or a proof: the request is outside the
/// tree, never a fault of the tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChainTreeError {
    /// The leaf is not in the tree of the size asked for.
    #[error("leaf {index} is not below tree size {tree_size}")]
    IndexOutOfRange {
        /// The leaf index asked for.
        index: u64,
        /// The tree size it was asked in.
        tree_size: u64,
    },
    /// The size asked for is larger than the tree has grown.
    #[error("tree size {tree_size} is above the current size {size}")]
    SizeTooLarge {
        /// The size asked for.
        tree_size: u64,
        /// The tree's size.
        size: u64,
    },
    /// A consistency range other than `1 <= from <= to`.
    #[error("invalid consistency range {from}..{to}: need 1 <= from <= to")]
    InvalidRange {
        /// The older size asked for.
        from: u64,
        /// The newer size asked for.
        to: u64,
    },
}

/// Why the checkpoint signing key could not be loaded or created.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// Reading, writing or inspecting the key file failed.
    #[error("checkpoint key {path}: {source}")]
    Io {
        /// The key file (or its temporary sibling).
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The key file can be read by others than its owner.
    #[error(
        "checkpoint key {path} has mode {mode:o}; it must not be readable by group or others \
         (chmod 600 it, and check nobody copied it)"
    )]
    Permissions {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The key file is not a 32-byte Ed25519 seed.
    #[error("checkpoint key {path} is {len} bytes, expected a 32-byte Ed25519 seed")]
    BadLength {
        /// The key file.
        path: PathBuf,
        /// Its length in bytes.
        len: u64,
    },
    /// The key path exists but is not a regular file.
    #[error("checkpoint key {path} is not a regular file")]
    NotAFile {
        /// The key path.
        path: PathBuf,
    },
    /// The operating system's random number generator failed.
    #[error("no randomness for a new checkpoint key: {0}")]
    Random(String),
}
