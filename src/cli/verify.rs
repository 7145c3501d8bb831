//! `medledger verify`: open the ledger as the server does (recovering an unacknowledged
//! torn tail, and saying so), then check every frame, link, Merkle root and index entry.

use std::io::Write;
use std::path::Path;

use serde_json::json;

use medledger_chaincode::Envelope;
use medledger_storage::ledger::verify::verify;
use medledger_storage::{Ledger, LedgerOptions, StorageError};

/// Runs the verification and prints one JSON object. Exit 0 when sound; 1 naming the
/// first bad block (`"block": N`) when damaged; 2 when the ledger cannot be read at all.
pub fn run(data_dir: &Path, out: &mut dyn Write) -> i32 {
    if !data_dir.join("blocks").is_dir() {
        let msg = format!("no ledger in {} (no blocks/ directory)", data_dir.display());
        let _ = writeln!(out, "{}", json!({"ok": false, "error": msg}));
        return 2;
    }
    let (ledger, recovery) = match Ledger::open(data_dir, LedgerOptions::default()) {
        Ok(v) => v,
        Err(e) => {
            let (code, block) = match &e {
                StorageError::CorruptBlock { number, .. }
                | StorageError::IndexMismatch { number, .. } => (1, Some(*number)),
                // Not found wrong: it could not be read, so it was not checked.
                StorageError::BlockRead { number, .. } => (2, Some(*number)),
                _ => (2, None),
            };
            let _ = writeln!(
                out,
                "{}",
                json!({"ok": false, "block": block, "error": e.to_string()})
            );
            return code;
        }
    };
    // The engine checks its own rules; every transaction must also be a canonical
    // envelope of the contract.
    let is_envelope = |format: u8, tx: &[u8]| {
        Envelope::decode_in(format, tx)
            .map(drop)
            .map_err(|e| e.to_string())
    };
    match verify(&ledger, &is_envelope) {
        Ok(report) => {
            let block = report.failure.as_ref().map(|f| f.block);
            let _ = writeln!(
                out,
                "{}",
                json!({"ok": report.ok, "block": block, "recovery": recovery, "verify": report})
            );
            i32::from(!report.ok)
        }
        Err(e) => {
            let _ = writeln!(
                out,
                "{}",
                json!({"ok": false, "recovery": recovery, "error": e.to_string()})
            );
            2
        }
    }
}
