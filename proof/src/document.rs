//! The proof documents as JSON, and the helpers the server builds them with.
//!
//! Field names are the contract of issue 6; hashes are lowercase hex. Unknown fields are
//! ignored when reading, so the server may add fields. docs/PROOFS.md describes every
//! field for verifiers in other languages.

use serde::{Deserialize, Serialize};

use crate::checkpoint::Checkpoint;
use crate::error::VerifyError;
use crate::header::{header_hash, HeaderFields, BLOCK_HEADER_LEN};
use crate::hexfield::to_hex;
use crate::merkle::{self, Hash};
use crate::verify;

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

/// Builds the tx proof for the transaction at `position` of a block, and checks it.
///
/// `block_header` is the block's encoded header (storage's `BlockHeader::encode`),
/// `tx_hashes` the SHA-256 of each of its envelopes in order, `chain_audit_path` the
/// inclusion proof of its header hash in the chain tree of `checkpoint.tree_size` leaves,
/// and `checkpoint` a signed checkpoint of that tree.
///
/// `Ok` guarantees the document passes every check of [`crate::verify_tx_proof`] except
/// the signature (this function has no public key; the checkpoint came from the server's
/// own key).
///
/// # Errors
/// The [`VerifyError`] the verifier would report: the position is out of range, the
/// hashes do not match the header's `data_hash`, the chain path does not lead to the
/// checkpoint's root, and so on. Any of these is a bug or corruption on the server.
pub fn build_tx_proof(
    block_header: &[u8; BLOCK_HEADER_LEN],
    tx_hashes: &[Hash],
    position: usize,
    chain_audit_path: &[Hash],
    checkpoint: &Checkpoint,
) -> Result<TxProof, VerifyError> {
    let header = HeaderFields::parse(block_header)?;
    let tx_hash = *tx_hashes.get(position).ok_or(VerifyError::TxInclusion(
        merkle::ProofError::IndexOutOfRange {
            index: position as u64,
            tree_size: tx_hashes.len() as u64,
        },
    ))?;
    let leaves: Vec<Hash> = tx_hashes.iter().map(|h| merkle::leaf_hash(h)).collect();
    let audit_path =
        merkle::inclusion_proof(&leaves, position).map_err(VerifyError::TxInclusion)?;
    let proof = TxProof {
        tx_hash: to_hex(&tx_hash),
        block_number: header.number,
        leaf_index: position as u64,
        tree_size: tx_hashes.len() as u64,
        audit_path: hex_list(&audit_path),
        data_hash: to_hex(&header.data_hash),
        block_hash: to_hex(&header_hash(block_header)),
        block_header: to_hex(block_header),
        chain: ChainProof {
            leaf_index: header.number,
            tree_size: checkpoint.tree_size,
            audit_path: hex_list(chain_audit_path),
            root: checkpoint.root.clone(),
        },
        checkpoint: checkpoint.clone(),
    };
    let body = checkpoint.body_at("checkpoint")?;
    body.check_shape()?;
    verify::check_tx_proof(&proof, &body)?;
    Ok(proof)
}

/// Builds a consistency proof document from the chain tree's proof, and checks that the
/// proof links the two roots.
///
/// # Errors
/// [`VerifyError::Consistency`] if it does not (a bug on the server).
pub fn build_consistency_proof(
    from: u64,
    to: u64,
    from_root: &Hash,
    to_root: &Hash,
    proof: &[Hash],
) -> Result<ConsistencyProof, VerifyError> {
    merkle::verify_consistency(from, to, from_root, to_root, proof)
        .map_err(VerifyError::Consistency)?;
    Ok(ConsistencyProof {
        from,
        to,
        from_root: to_hex(from_root),
        to_root: to_hex(to_root),
        proof: hex_list(proof),
        from_checkpoint: None,
        to_checkpoint: None,
    })
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

fn hex_list(hashes: &[Hash]) -> Vec<String> {
    hashes.iter().map(|h| to_hex(h)).collect()
}
