//! The server's side: building the proof documents from the ledger's hashes.
//!
//! Every builder runs the offline verifier's own checks over what it built before it
//! returns it, so a server bug or corrupt block becomes an error here, not a document an
//! auditor rejects later. That is why this module sits above both `document` (the types
//! it fills) and `verify` (the checks it reuses).

use crate::checkpoint::Checkpoint;
use crate::document::{ChainProof, ConsistencyProof, TxProof};
use crate::error::VerifyError;
use crate::header::{header_hash, HeaderFields, BLOCK_HEADER_LEN};
use crate::hexfield::{hex_list, to_hex};
use crate::merkle::{self, Hash};
use crate::verify;

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
    let header = HeaderFields::decode(block_header)?;
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
