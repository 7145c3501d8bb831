//! medledger's ledger engine: the block format, append-only segment files with one
//! fdatasync per block, the RocksDB block/tx index, crash recovery and verification. The
//! read model (the views, their projection and queries) is the `medledger-views` crate.
//!
//! Nothing here knows HTTP, the views or what a transaction means: a transaction is bytes
//! whose first 16 are its id (`ledger::rules`), which the index maps to its place.

pub mod error;
pub mod ledger;
/// RFC 6962 Merkle trees and proofs; they live in `medledger-proof` so a verifier can
/// build without RocksDB, and keep this path for storage's users.
pub use medledger_proof::merkle;

pub use error::StorageError;
pub use ledger::block::{
    Block, BlockDecodeError, BlockFrame, BlockHeader, CutReason, HeaderError, BLOCK_FORMAT,
    BLOCK_HEADER_LEN,
};
pub use ledger::{
    AppendReceipt, BlockLocation, ChainTip, Ledger, LedgerOptions, RecoveryReport, TxLocation,
};
pub use merkle::Hash;
