//! medledger's proofs, as a small crate an auditor's verifier can build without the rest
//! of medledger (no RocksDB):
//!
//! * [`merkle`]: RFC 6962 / RFC 9162 Merkle trees over SHA-256, inclusion and consistency
//!   proofs, and the append-only [`merkle::CompactTree`];
//! * [`ChainTree`]: the tree over block header hashes that checkpoints sign, with roots
//!   and proofs at any earlier size without a walk over the chain (the server's);
//! * [`header`]: the 88-byte block header, the one codec the ledger engine uses too;
//! * checkpoints: [`CheckpointKey`] (the server's Ed25519 key, created on first start)
//!   signs a [`CheckpointBody`] over a fixed byte layout; [`verify_checkpoint`] checks it;
//! * the proof documents ([`TxProof`], [`ConsistencyProof`], [`Checkpoint`]) with the
//!   JSON field names of issue 6, and [`build_tx_proof`] / [`build_consistency_proof`]
//!   for the server;
//! * offline verification: [`verify_tx_proof`], [`verify_consistency`] and, for the CLI,
//!   [`verify_json`].
//!
//! docs/PROOFS.md specifies the documents and the checks for verifiers in other
//! languages; `fixtures/proofs/` holds golden vectors pinned by this crate's tests.
//!
//! The server's side and the auditor's, end to end:
//!
//! ```
//! use medledger_proof::header::HeaderFields;
//! use medledger_proof::{merkle, build_tx_proof, verify_json, CheckpointBody, CheckpointKey};
//! use sha2::{Digest, Sha256};
//!
//! // The server: `CheckpointKey::load_or_create(&data_dir.join("checkpoint.key"))?`.
//! let key = CheckpointKey::from_seed(&[7; 32]);
//!
//! // A chain of two blocks: genesis, then one block of two transactions.
//! let txs: Vec<[u8; 32]> = [&b"tx a"[..], b"tx b"].iter().map(|t| Sha256::digest(t).into()).collect();
//! let genesis = HeaderFields { number: 0, timestamp_ms: 1, tx_count: 0, cut_reason: 0, format: 2,
//!     prev_hash: [0; 32], data_hash: merkle::empty_root() }.encode();
//! let block = HeaderFields { number: 1, timestamp_ms: 2, tx_count: 2, cut_reason: 5, format: 2,
//!     prev_hash: Sha256::digest(genesis).into(), data_hash: merkle::root_of_hashes(&txs) }.encode();
//!
//! // The chain tree: leaf n is the header hash of block n.
//! let leaves: Vec<_> = [genesis, block].iter()
//!     .map(|h| merkle::leaf_hash(&Sha256::digest(h))).collect();
//! let checkpoint = key.sign(&CheckpointBody {
//!     tree_size: 2, height: 2, // `ChainTip::height`: blocks 0..2 exist
//!     root: merkle::root_from_leaf_hashes(&leaves),
//!     tip_hash: Sha256::digest(block).into(),
//!     timestamp: 1_795_428_000_000,
//! });
//! let chain_path = merkle::inclusion_proof(&leaves, 1)?;
//! let proof = build_tx_proof(&block, &txs, 1, &chain_path, &checkpoint)?;
//! let json = serde_json::to_string(&proof)?;
//!
//! // The auditor, offline, with the key from `GET /v1/checkpoint/key`.
//! let public_key = serde_json::to_string(&key.public_key_doc())?;
//! let summary = verify_json(json.as_bytes(), &public_key)?;
//! assert!(summary.starts_with("OK: transaction proof verified"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod build;
mod chain_tree;
mod checkpoint;
mod document;
mod error;
pub mod header;
mod hexfield;
mod key;
pub mod merkle;
mod verify;

pub use build::{build_consistency_proof, build_tx_proof};
pub use chain_tree::ChainTree;
pub use checkpoint::{
    key_id, parse_public_key, public_key_hex, verify_checkpoint, Checkpoint, CheckpointBody,
    PublicKeyDoc, CHECKPOINT_DOMAIN, CHECKPOINT_SIGNED_LEN, KEY_ALGORITHM,
};
pub use document::{ChainProof, ConsistencyProof, Document, TxProof};
pub use ed25519_dalek::VerifyingKey;
pub use error::{ChainTreeError, HeaderError, KeyError, VerifyError};
pub use hexfield::to_hex;
pub use key::{CheckpointKey, KEY_FILE_LEN};
pub use merkle::Hash;
pub use verify::{verify_consistency, verify_json, verify_tx_proof, Verified, VerifiedConsistency};
