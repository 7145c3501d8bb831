//! `medledger proof verify --key PUBKEY FILE`: checks a tx proof, a consistency proof or
//! a checkpoint offline, with no server and no data dir (docs/PROOFS.md).

use std::io::Write;
use std::path::Path;

/// Documents larger than this are refused (a proof is a few KiB).
pub const PROOF_FILE_BYTES_MAX: u64 = 1024 * 1024;

/// `key` is the public key: 64 hex digits, the JSON of `GET /v1/checkpoint/key`, or a
/// file holding either. Prints what was proven and returns 0, or prints why not and
/// returns 1 (2 when the inputs cannot be read).
pub fn run_verify(key: &str, file: &Path, out: &mut dyn Write) -> i32 {
    let key_text = if Path::new(key).is_file() {
        match std::fs::read_to_string(key) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("medledger: reading the key file {key}: {e}");
                return 2;
            }
        }
    } else {
        key.to_owned()
    };
    let len = match std::fs::metadata(file) {
        Ok(m) => m.len(),
        Err(e) => {
            eprintln!("medledger: {}: {e}", file.display());
            return 2;
        }
    };
    if len > PROOF_FILE_BYTES_MAX {
        eprintln!(
            "medledger: {} is {len} bytes; a proof document is at most {PROOF_FILE_BYTES_MAX}",
            file.display()
        );
        return 2;
    }
    let bytes = match std::fs::read(file) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("medledger: {}: {e}", file.display());
            return 2;
        }
    };
    match medledger_proof::verify_json(&bytes, key_text.trim()) {
        Ok(summary) => {
            let _ = writeln!(out, "verified: {summary}");
            0
        }
        Err(e) => {
            let _ = writeln!(out, "NOT verified: {e}");
            1
        }
    }
}
