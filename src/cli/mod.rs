//! The `medledger` subcommands. Each prints JSON on stdout and returns its exit code, so
//! tests can run them in-process.

pub mod backup;
pub mod bench_ingest;
pub mod bench_payloads;
pub mod bench_rebuild;
pub mod blocks;
pub mod cluster;
pub mod config_file;
pub mod fixtures;
pub mod ipfs;
pub mod keys;
pub mod payloads;
pub mod proof;
pub mod rebuild;
pub mod token;
pub mod verify;
