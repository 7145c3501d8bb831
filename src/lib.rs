//! medledger: an event-sourced, hash-chained ledger for medical records.
//!
//! - [`orderer`]: the block cutter (Hyperledger Fabric's rules, plus the eager policy)
//!   and group commit over the ledger in `medledger-storage`.
//! - [`reconcile`]: removes payloads no record names (orphans of a crash or a refused
//!   submission), at start and by `medledger payloads reconcile`.
//! - [`api`], [`serve`]: the HTTP API (actix-web) and `medledger serve`.
//! - [`explorer`]: the chain tree over block header hashes, activity and totals, for
//!   the block explorer's routes and checkpoints.
//! - [`clinical`]: clinical text sealed under record content keys, and opened for reads.
//! - [`keeper`]: keeps each node's key store in step with its ledger (erasures, keys a
//!   cluster node missed).
//! - [`cli`]: the `medledger` command's subcommands, callable from tests.
//! - [`fixtures`]: a seeded generator of realistic events, every one valid for the
//!   contract in order (tests, benchmarks, `medledger fixtures`).
//! - [`workload`]: realistic synthetic record events for benchmarks and tests.
//! - [`telemetry`]: logs, and the optional OTLP trace export.

pub mod api;
pub mod cli;
pub mod clinical;
pub mod cluster;
pub mod disk;
pub mod explorer;
pub mod fixtures;
pub mod keeper;
pub mod orderer;
pub mod reconcile;
pub mod search;
pub mod serve;
pub mod telemetry;
pub mod workload;

pub use medledger_chaincode as chaincode;
pub use medledger_storage as storage;
pub use medledger_views as views;
