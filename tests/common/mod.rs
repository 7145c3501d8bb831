//! Helpers shared by the root crate's integration tests.
#![allow(dead_code)]

pub mod api;
pub mod server;

use std::path::Path;

use medledger::fixtures::{FixtureConfig, Fixtures};
use medledger_chaincode::{tx_hash, Envelope};
use medledger_storage::{Block, CutReason, Ledger, LedgerOptions};

/// `n` fixture events (seed `seed`) in a new ledger in `dir`, `per_block` per block.
/// Returns the ledger's height.
pub fn fixture_ledger(dir: &Path, seed: u64, n: usize, per_block: usize) -> u64 {
    let (ledger, _) = Ledger::open(dir, LedgerOptions::default()).unwrap();
    let events: Vec<Envelope> = Fixtures::new(FixtureConfig {
        seed,
        patients: 500,
        ..FixtureConfig::default()
    })
    .take(n)
    .collect();
    for chunk in events.chunks(per_block) {
        append_block(&ledger, chunk);
    }
    let height = ledger.tip().height;
    ledger.close().unwrap();
    height
}

/// Appends one block holding `txs` on top of the ledger's tip (cut reason `count`).
pub fn append_block(ledger: &Ledger, txs: &[Envelope]) {
    let bytes: Vec<Vec<u8>> = txs.iter().map(Envelope::encode).collect();
    let hashes: Vec<_> = bytes.iter().map(|t| tx_hash(t)).collect();
    let tip = ledger.tip();
    let block = Block::new(
        tip.height,
        tip.tip_hash,
        tip.tip_timestamp_ms + 1,
        CutReason::Count,
        bytes,
        &hashes,
    );
    ledger.append(&block).unwrap();
}
