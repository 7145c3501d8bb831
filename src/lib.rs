//! medledger: an event-sourced, hash-chained ledger for medical records.
//!
//! - [`orderer`]: the block cutter (Hyperledger Fabric's rules, plus the eager policy)
//!   and group commit over the ledger in `medledger-storage`.
//! - [`cli`]: the `medledger` command's subcommands, callable from tests.
//! - [`workload`]: realistic synthetic record events for benchmarks and tests.

pub mod cli;
pub mod orderer;
pub mod workload;

pub use medledger_chaincode as chaincode;
pub use medledger_storage as storage;
