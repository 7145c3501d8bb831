//! Helpers shared by the storage tests: deterministic envelopes and chained blocks.
#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;

use medledger_chaincode::{Envelope, Event, RecordCreated, Timestamp, TxId};
use medledger_storage::ledger::crashfs::CrashFs;
use medledger_storage::{Block, CutReason, Ledger, LedgerOptions};

/// Canonical bytes of a small, valid envelope; `n` makes it unique, `pad` grows it.
pub fn envelope_bytes(n: u64, pad: usize) -> Vec<u8> {
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&n.to_be_bytes());
    id[8] = 0x70;
    Envelope {
        tx_id: TxId(id),
        submitter: "dr-1".into(),
        submitted_at: Timestamp(1_795_428_000_000 + n as i64),
        event: Event::RecordCreated(RecordCreated {
            record_id: format!("r-{n}"),
            patient_id: format!("p-{}", n % 7),
            author_id: "dr-1".into(),
            hospital_id: "h-1".into(),
            record_type: "clinical_note".into(),
            created_at: Timestamp(1_795_428_000_000),
            version: 1,
            metadata: "x".repeat(pad).into(),
            payload: None,
        }),
    }
    .encode()
}

/// The block that extends `ledger`'s tip with `tx_count` fresh transactions, numbered
/// from `first_tx`.
pub fn next_block(ledger: &Ledger, first_tx: u64, tx_count: usize, pad: usize) -> Block {
    let tip = ledger.tip();
    let txs = (0..tx_count as u64)
        .map(|i| envelope_bytes(first_tx + i, pad))
        .collect();
    Block::from_txs(
        tip.height,
        tip.tip_hash,
        tip.tip_timestamp_ms + 1,
        CutReason::Count,
        txs,
    )
}

pub fn small_segments() -> LedgerOptions {
    LedgerOptions {
        segment_bytes_max: 4096,
        ..LedgerOptions::default()
    }
}

/// Opens a ledger over an in-memory crash fs with its index under `index`.
pub fn open_mem(fs: &CrashFs, index: &Path) -> Ledger {
    Ledger::open_with(Arc::new(fs.clone()), index, small_segments())
        .expect("open")
        .0
}

/// Copies a directory tree (a closed RocksDB index, a data dir).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// The transaction rule the server verifies with: every tx is a canonical envelope.
#[allow(dead_code)]
/// The engine's tests check that transactions decode; the clinical form a block format
/// requires is the server's rule (tested there).
pub fn is_envelope(_format: u8, tx: &[u8]) -> Result<(), String> {
    Envelope::decode(tx).map(drop).map_err(|e| e.to_string())
}
