//! The proof documents as JSON: their fields, and which document a JSON text is.
//!
//! Field names are the contract of issue 6; hashes are lowercase hex. Unknown fields are
//! ignored when reading, so the server may add fields. docs/PROOFS.md describes every
//! field for verifiers in other languages.
//!
//! Only data lives here: the verifier (`verify.rs`) reads these types and the server's
//! builders (`build.rs`) fill them and run the verifier over the result, so the modules
//! depend one way, `document` ← `verify` ← `build`.

use serde::{Deserialize, Serialize};

use crate::checkpoint::Checkpoint;
use crate::error::VerifyError;

/// `GET /v1/tx/{tx_id}/proof`: a transaction, its inclusion in its block's `data_hash`,
/// the block header that links `data_hash` to `block_hash`, the block's inclusion in the
/// chain tree, and the signed checkpoint of that tree.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxProof {
    /// SHA-256 of the transaction's canonical envelope bytes (the leaf value).
    pub tx_hash: String,
    /// The block holding the transaction.
    pub block_number: u64,
    /// The transaction's position in its block (0-based): its leaf index.
    pub leaf_index: u64,
    /// The block's `tx_count`: the number of leaves of the tree under `data_hash`.
    pub tree_size: u64,
    /// RFC 6962 audit path of `tx_hash` under `data_hash`, from the leaf's sibling up.
    pub audit_path: Vec<String>,
    /// The block header's `data_hash`.
    pub data_hash: String,
    /// The block hash: SHA-256 of `block_header`.
    pub block_hash: String,
    /// The block's 88 header bytes (docs/FORMAT.md), 176 hex digits. It carries
    /// `block_number` at offset 0, `tree_size` (as `tx_count`) at 16 and `data_hash` at 56.
    pub block_header: String,
    /// The block's inclusion in the chain tree the checkpoint signs.
    pub chain: ChainProof,
    /// The signed checkpoint whose `root` is `chain.root`.
    pub checkpoint: Checkpoint,
}

/// The `chain` part of a [`TxProof`]: leaf `block_number` of the chain tree.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainProof {
    /// Equals the block number (genesis is leaf 0).
    pub leaf_index: u64,
    /// Equals `checkpoint.tree_size`.
    pub tree_size: u64,
    /// RFC 6962 audit path of the block hash under `root`, from the leaf's sibling up.
    pub audit_path: Vec<String>,
    /// Equals `checkpoint.root`.
    pub root: String,
}

/// `GET /v1/checkpoint/consistency?from=N&to=M`: the tree of `from` leaves is a prefix
/// of the tree of `to` leaves. To verify it offline the two signed checkpoints must come
/// along, either in `from_checkpoint` / `to_checkpoint` or from the auditor's own records.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsistencyProof {
    /// The older tree size (≥ 1).
    pub from: u64,
    /// The newer tree size (≥ `from`).
    pub to: u64,
    /// Root of the tree of `from` leaves.
    pub from_root: String,
    /// Root of the tree of `to` leaves.
    pub to_root: String,
    /// RFC 9162 consistency proof `PROOF(from, D[to])`, in the RFC's order.
    pub proof: Vec<String>,
    /// The signed checkpoint of `from` leaves, if bundled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_checkpoint: Option<Checkpoint>,
    /// The signed checkpoint of `to` leaves, if bundled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_checkpoint: Option<Checkpoint>,
}

impl ConsistencyProof {
    /// Bundles the two signed checkpoints the proof links, making a document that
    /// [`crate::verify_json`] verifies on its own.
    #[must_use]
    pub fn with_checkpoints(mut self, from: Checkpoint, to: Checkpoint) -> Self {
        self.from_checkpoint = Some(from);
        self.to_checkpoint = Some(to);
        self
    }
}

/// Which document a JSON text is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Document {
    /// A transaction proof (has `tx_hash`).
    TxProof(Box<TxProof>),
    /// A consistency proof (has `from` and `proof`).
    Consistency(Box<ConsistencyProof>),
    /// A checkpoint alone (has `signature`).
    Checkpoint(Checkpoint),
}

impl Document {
    /// Parses a JSON document and tells which one it is by its distinctive fields.
    ///
    /// # Errors
    /// [`VerifyError::MalformedJson`] (naming the serde error, e.g. a missing field) or
    /// [`VerifyError::UnknownDocument`].
    pub fn from_json(bytes: &[u8]) -> Result<Document, VerifyError> {
        let value: serde_json::Value = serde_json::from_slice(bytes).map_err(json_error)?;
        let object = value.as_object().ok_or(VerifyError::UnknownDocument)?;
        if object.contains_key("tx_hash") {
            Ok(Document::TxProof(Box::new(
                serde_json::from_value(value).map_err(json_error)?,
            )))
        } else if object.contains_key("from") && object.contains_key("proof") {
            Ok(Document::Consistency(Box::new(
                serde_json::from_value(value).map_err(json_error)?,
            )))
        } else if object.contains_key("signature") {
            Ok(Document::Checkpoint(
                serde_json::from_value(value).map_err(json_error)?,
            ))
        } else {
            Err(VerifyError::UnknownDocument)
        }
    }
}

fn json_error(e: serde_json::Error) -> VerifyError {
    VerifyError::MalformedJson(e.to_string())
}
