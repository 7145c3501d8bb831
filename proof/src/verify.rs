//! Offline verification of the proof documents: no server, no data directory, only the
//! document and the server's public key.

use std::fmt;

use ed25519_dalek::VerifyingKey;

use crate::checkpoint::{key_id, parse_public_key, verify_checkpoint_at, CheckpointBody};
use crate::document::{ConsistencyProof, Document, TxProof};
use crate::error::VerifyError;
use crate::header::{header_hash, HeaderFields, BLOCK_HEADER_LEN};
use crate::hexfield::{parse_array, parse_hash, parse_hashes, to_hex};
use crate::merkle::{self, Hash};
use crate::Checkpoint;

/// Most hashes in a tx audit path: a block holds fewer than 2^32 transactions.
const TX_PATH_MAX: usize = 32;
/// Most hashes in a chain audit path: the tree has fewer than 2^64 leaves.
const CHAIN_PATH_MAX: usize = 64;
/// Most hashes in a consistency proof over `u64` sizes (1 + 64 + 64, rounded up).
const CONSISTENCY_PROOF_MAX: usize = 130;

/// What a verified tx proof established.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    /// The transaction's hash.
    pub tx_hash: Hash,
    /// Its block.
    pub block_number: u64,
    /// Its position in the block.
    pub leaf_index: u64,
    /// The block's transaction count.
    pub tx_count: u64,
    /// The block's hash.
    pub block_hash: Hash,
    /// The signed checkpoint the block is proven in.
    pub checkpoint: CheckpointBody,
    /// The id of the key that signed it.
    pub key_id: String,
}

/// What a verified consistency proof established.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedConsistency {
    /// The older signed checkpoint.
    pub from: CheckpointBody,
    /// The newer signed checkpoint, whose tree extends the older one.
    pub to: CheckpointBody,
    /// The id of the key that signed both.
    pub key_id: String,
}

/// Verifies a tx proof against the server's public key.
///
/// `Ok` guarantees, under Ed25519 unforgeability and SHA-256 collision resistance:
/// the holder of `key` signed a checkpoint of a chain tree of `checkpoint.tree_size`
/// blocks with root `checkpoint.root`; `block_hash` is leaf `block_number` of that tree;
/// `block_header` hashes to `block_hash` and holds `block_number`, `tree_size` (as its
/// `tx_count`) and `data_hash`; and `tx_hash` is leaf `leaf_index` of the tree of
/// `tree_size` leaves with root `data_hash`. If the block is the checkpoint's tip, its
/// hash also equals `checkpoint.tip_hash`.
///
/// # Errors
/// The first failing check, named precisely (see [`VerifyError`]).
pub fn verify_tx_proof(proof: &TxProof, key: &VerifyingKey) -> Result<Verified, VerifyError> {
    let checkpoint = verify_checkpoint_at(&proof.checkpoint, key, "checkpoint")?;
    let mut verified = check_tx_proof(proof, &checkpoint)?;
    verified.key_id = key_id(key);
    Ok(verified)
}

/// Every check of [`verify_tx_proof`] after the checkpoint's signature, against the
/// already verified `checkpoint`. `key_id` of the result is left empty.
pub(crate) fn check_tx_proof(
    proof: &TxProof,
    checkpoint: &CheckpointBody,
) -> Result<Verified, VerifyError> {
    let tx_hash = parse_hash("tx_hash", &proof.tx_hash)?;
    let data_hash = parse_hash("data_hash", &proof.data_hash)?;
    let block_hash = parse_hash("block_hash", &proof.block_hash)?;
    let header_bytes: [u8; BLOCK_HEADER_LEN] = parse_array("block_header", &proof.block_header)?;
    let tx_path = parse_hashes("audit_path", &proof.audit_path, TX_PATH_MAX)?;
    let chain_root = parse_hash("chain.root", &proof.chain.root)?;
    let chain_path = parse_hashes("chain.audit_path", &proof.chain.audit_path, CHAIN_PATH_MAX)?;

    // The chain part must be about the signed tree and about this block.
    same_number(
        "chain.tree_size",
        proof.chain.tree_size,
        "checkpoint.tree_size",
        checkpoint.tree_size,
    )?;
    same_hash(
        "chain.root",
        &chain_root,
        "checkpoint.root",
        &checkpoint.root,
    )?;
    same_number(
        "chain.leaf_index",
        proof.chain.leaf_index,
        "block_number",
        proof.block_number,
    )?;

    // The header links block_hash to data_hash.
    same_hash(
        "block_hash",
        &block_hash,
        "SHA-256(block_header)",
        &header_hash(&header_bytes),
    )?;
    let header = HeaderFields::decode(&header_bytes)?;
    same_number(
        "block_number",
        proof.block_number,
        "block_header number",
        header.number,
    )?;
    same_number(
        "tree_size",
        proof.tree_size,
        "block_header tx_count",
        u64::from(header.tx_count),
    )?;
    same_hash(
        "data_hash",
        &data_hash,
        "block_header data_hash",
        &header.data_hash,
    )?;

    merkle::verify_inclusion(
        &merkle::leaf_hash(&tx_hash),
        proof.leaf_index,
        proof.tree_size,
        &tx_path,
        &data_hash,
    )
    .map_err(VerifyError::TxInclusion)?;
    merkle::verify_inclusion(
        &merkle::leaf_hash(&block_hash),
        proof.chain.leaf_index,
        proof.chain.tree_size,
        &chain_path,
        &chain_root,
    )
    .map_err(VerifyError::ChainInclusion)?;
    // The signed tip is the last leaf; when that is this block, the two must agree.
    if proof.block_number.checked_add(1) == Some(checkpoint.height) {
        same_hash(
            "block_hash",
            &block_hash,
            "checkpoint.tip_hash",
            &checkpoint.tip_hash,
        )?;
    }
    Ok(Verified {
        tx_hash,
        block_number: proof.block_number,
        leaf_index: proof.leaf_index,
        tx_count: proof.tree_size,
        block_hash,
        checkpoint: *checkpoint,
        key_id: String::new(),
    })
}

/// Verifies that the chain tree signed in `new` extends the one signed in `old`.
///
/// `Ok` guarantees both checkpoints are signed by `key`, the proof's sizes and roots are
/// theirs, and (RFC 9162 §2.1.4.2) the first `old.tree_size` blocks of the newer tree are
/// exactly the blocks of the older one: nothing was rewritten or removed in between. The
/// bundled `from_checkpoint` / `to_checkpoint` of `proof`, if any, are not consulted.
///
/// # Errors
/// The first failing check, named precisely (see [`VerifyError`]).
pub fn verify_consistency(
    proof: &ConsistencyProof,
    old: &Checkpoint,
    new: &Checkpoint,
    key: &VerifyingKey,
) -> Result<VerifiedConsistency, VerifyError> {
    let from = verify_checkpoint_at(old, key, "from_checkpoint")?;
    let to = verify_checkpoint_at(new, key, "to_checkpoint")?;
    let from_root = parse_hash("from_root", &proof.from_root)?;
    let to_root = parse_hash("to_root", &proof.to_root)?;
    let hashes = parse_hashes("proof", &proof.proof, CONSISTENCY_PROOF_MAX)?;
    same_number(
        "from",
        proof.from,
        "from_checkpoint.tree_size",
        from.tree_size,
    )?;
    same_number("to", proof.to, "to_checkpoint.tree_size", to.tree_size)?;
    same_hash("from_root", &from_root, "from_checkpoint.root", &from.root)?;
    same_hash("to_root", &to_root, "to_checkpoint.root", &to.root)?;
    merkle::verify_consistency(proof.from, proof.to, &from_root, &to_root, &hashes)
        .map_err(VerifyError::Consistency)?;
    // Equal trees have the same last block; two signed tips for one tree contradict.
    if from.tree_size == to.tree_size {
        same_hash(
            "from_checkpoint.tip_hash",
            &from.tip_hash,
            "to_checkpoint.tip_hash",
            &to.tip_hash,
        )?;
    }
    Ok(VerifiedConsistency {
        from,
        to,
        key_id: key_id(key),
    })
}

/// Verifies any proof document for the CLI (`medledger proof verify --key KEY FILE`) and
/// returns a human summary of what was proven.
///
/// `public_key` is 64 hex digits or the saved JSON of `GET /v1/checkpoint/key`. The
/// document is told apart by its fields: a tx proof (`tx_hash`), a consistency proof
/// (`from` and `proof`, which must bundle `from_checkpoint` and `to_checkpoint`), or a
/// checkpoint alone (`signature`).
///
/// # Errors
/// The first failing check, named precisely; [`VerifyError::MissingCheckpoints`] for a
/// consistency proof without its checkpoints.
pub fn verify_json(document: &[u8], public_key: &str) -> Result<String, VerifyError> {
    let key = parse_public_key(public_key)?;
    match Document::from_json(document)? {
        Document::TxProof(proof) => Ok(verify_tx_proof(&proof, &key)?.to_string()),
        Document::Consistency(proof) => {
            let (Some(old), Some(new)) = (&proof.from_checkpoint, &proof.to_checkpoint) else {
                return Err(VerifyError::MissingCheckpoints);
            };
            Ok(verify_consistency(&proof, old, new, &key)?.to_string())
        }
        Document::Checkpoint(checkpoint) => {
            let body = verify_checkpoint_at(&checkpoint, &key, "checkpoint")?;
            Ok(format!(
                "OK: checkpoint signature verified\n{}",
                checkpoint_lines("checkpoint", &body, &key_id(&key))
            ))
        }
    }
}

impl fmt::Display for Verified {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "OK: transaction proof verified")?;
        writeln!(f, "  tx_hash      {}", to_hex(&self.tx_hash))?;
        writeln!(
            f,
            "  in block     {} (hash {}), transaction {} of {}",
            self.block_number,
            to_hex(&self.block_hash),
            self.leaf_index,
            self.tx_count
        )?;
        f.write_str(&checkpoint_lines(
            "checkpoint",
            &self.checkpoint,
            &self.key_id,
        ))
    }
}

impl fmt::Display for VerifiedConsistency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "OK: consistency proof verified: the first {} blocks are unchanged in the {}-block chain",
            self.from.tree_size, self.to.tree_size
        )?;
        f.write_str(&checkpoint_lines("from", &self.from, &self.key_id))?;
        f.write_str(&checkpoint_lines("to", &self.to, &self.key_id))
    }
}

fn checkpoint_lines(label: &str, body: &CheckpointBody, key_id: &str) -> String {
    format!(
        "  {label:<12} height {} (blocks 0..={}), root {}\n  {:<12} signed {} by key {key_id}\n",
        body.height,
        body.height.saturating_sub(1),
        to_hex(&body.root),
        "",
        utc(body.timestamp),
    )
}

fn same_number(
    field: &'static str,
    got: u64,
    expected_from: &'static str,
    expected: u64,
) -> Result<(), VerifyError> {
    if got == expected {
        return Ok(());
    }
    Err(VerifyError::Mismatch {
        field,
        got: got.to_string(),
        expected_from,
        expected: expected.to_string(),
    })
}

fn same_hash(
    field: &'static str,
    got: &Hash,
    expected_from: &'static str,
    expected: &Hash,
) -> Result<(), VerifyError> {
    if got == expected {
        return Ok(());
    }
    Err(VerifyError::Mismatch {
        field,
        got: to_hex(got),
        expected_from,
        expected: to_hex(expected),
    })
}

/// Milliseconds since the Unix epoch as RFC 3339 UTC, e.g. `2026-11-24T01:02:03.004Z`
/// (proleptic Gregorian calendar; days to dates as in H. Hinnant's `civil_from_days`).
fn utc(ms: i64) -> String {
    let days = ms.div_euclid(86_400_000);
    let in_day = ms.rem_euclid(86_400_000);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        in_day / 3_600_000,
        in_day / 60_000 % 60,
        in_day / 1000 % 60,
        in_day % 1000
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_formats_known_instants() {
        for (ms, want) in [
            (0, "1970-01-01T00:00:00.000Z"),
            (-1, "1969-12-31T23:59:59.999Z"),
            (951_782_400_000, "2000-02-29T00:00:00.000Z"),
            (1_795_428_001_000, "2026-11-23T10:00:01.000Z"),
            (4_102_444_800_000, "2100-01-01T00:00:00.000Z"),
        ] {
            assert_eq!(utc(ms), want, "{ms}");
        }
        // Extremes do not overflow or panic.
        let _ = utc(i64::MIN);
        let _ = utc(i64::MAX);
    }
}
