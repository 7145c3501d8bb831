//! `medledger blocks`: block headers as JSON lines.

use std::io::Write;
use std::path::Path;

use serde_json::json;

use medledger_storage::{Block, Ledger, LedgerOptions};

/// Most headers one call prints.
pub const LIMIT_MAX: u64 = 100_000;

/// The JSON form of a block header (no transaction bytes).
pub fn header_json(block: &Block) -> serde_json::Value {
    let h = &block.header;
    json!({
        "number": h.number,
        "hash": hex::encode(block.hash()),
        "prev_hash": hex::encode(h.prev_hash),
        "data_hash": hex::encode(h.data_hash),
        "tx_count": h.tx_count,
        "timestamp_ms": h.timestamp_ms,
        "cut_reason": h.cut_reason.as_str(),
        "bytes": block.encoded_len(),
    })
}

/// Prints headers of blocks `from..from+limit` (bounded by the height), one per line.
pub fn run(data_dir: &Path, from: u64, limit: u64, out: &mut dyn Write) -> i32 {
    if limit > LIMIT_MAX {
        let _ = writeln!(
            out,
            "{}",
            json!({"error": format!("--limit is at most {LIMIT_MAX}")})
        );
        return 2;
    }
    let ledger = match Ledger::open(data_dir, LedgerOptions::default()) {
        Ok((l, _)) => l,
        Err(e) => {
            let _ = writeln!(out, "{}", json!({"error": e.to_string()}));
            return 2;
        }
    };
    for block in ledger.blocks_from(from).take(limit as usize) {
        match block {
            Ok(b) => {
                if writeln!(out, "{}", header_json(&b)).is_err() {
                    return 0; // stdout closed (e.g. piped into head)
                }
            }
            Err(e) => {
                let _ = writeln!(out, "{}", json!({"error": e.to_string()}));
                return 1;
            }
        }
    }
    0
}
