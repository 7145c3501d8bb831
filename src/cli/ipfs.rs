//! `medledger ipfs add --only-hash FILE [--cid-version 0|1]`: the CID Kubo's
//! `ipfs add --only-hash` prints for the same bytes and settings (256 KiB chunks, balanced
//! layout, 174 links per node; v1 with raw leaves), without storing anything.

use std::io::Write;
use std::path::Path;

use medledger_payload::{only_hash, CidVersion};

/// Prints the CID and returns 0, or prints why not and returns 2.
pub fn run_only_hash(file: &Path, cid_version: u8, out: &mut dyn Write) -> i32 {
    let version = match cid_version {
        0 => CidVersion::V0,
        1 => CidVersion::V1,
        other => {
            eprintln!("medledger: --cid-version must be 0 or 1, not {other}");
            return 2;
        }
    };
    let reader = match std::fs::File::open(file) {
        Ok(f) => std::io::BufReader::with_capacity(1 << 20, f),
        Err(e) => {
            eprintln!("medledger: {}: {e}", file.display());
            return 2;
        }
    };
    match only_hash(reader, version) {
        Ok(cid) => {
            let _ = writeln!(out, "{cid}");
            0
        }
        Err(e) => {
            eprintln!("medledger: reading {}: {e}", file.display());
            2
        }
    }
}
