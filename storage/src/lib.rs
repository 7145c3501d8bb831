//! medledger's storage layer: the block format, append-only segment files with one
//! fdatasync per block, the RocksDB block/tx index, crash recovery, verification, and
//! RFC 6962 Merkle trees and proofs, and the store of the materialized views.
//!
//! Nothing here knows HTTP; the only dependency inward is the chaincode's event types.

pub mod error;
pub mod ledger;
/// RFC 6962 Merkle trees and proofs; they live in `medledger-proof` so a verifier can
/// build without RocksDB, and keep this path for storage's users.
pub use medledger_proof::merkle;
pub mod views;

pub use error::StorageError;
pub use ledger::block::{Block, BlockFrame, BlockHeader, CutReason, BLOCK_HEADER_LEN};
pub use ledger::{
    AppendReceipt, BlockLocation, ChainTip, Ledger, LedgerOptions, RecoveryReport, TxLocation,
};
pub use merkle::Hash;
