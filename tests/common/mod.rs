//! Helpers shared by the root crate's integration tests.
#![allow(dead_code)]

/// Sends a request to an actix test service; returns its status and JSON body (or the
/// body as a JSON string). For test files that declare `#[macro_use] mod common;`.
#[allow(unused_macros)]
macro_rules! call {
    ($svc:expr, $req:expr) => {{
        let res = actix_web::test::call_service($svc, $req.to_request()).await;
        let status = res.status();
        let body = actix_web::test::read_body(res).await;
        let value: serde_json::Value = serde_json::from_slice(&body)
            .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(&body).into()));
        (status, value)
    }};
}

pub mod api;
pub mod fuzz;
pub mod server;

/// Runs `cmd` with `args` and panics with its standard error if it fails; `needs_root`
/// names what the test does that only root may (network namespaces, loop mounts).
pub fn run_as_root(cmd: &str, args: &[&str], needs_root: &str) {
    let out = std::process::Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {}: {} ({needs_root} need root)",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

use std::path::Path;

use medledger::fixtures::{FixtureConfig, Fixtures};
use medledger_chaincode::{tx_hash, Envelope};
use medledger_storage::{Block, CutReason, Ledger, LedgerOptions};

/// Every file under `dir`, recursively (tests that search a data dir's bytes).
pub fn files_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// Copies a directory tree (a closed data dir, closed views).
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
    // Sealed as the server seals them, with the keys a server on `dir` would use.
    let keys = medledger::clinical::open_keys(dir).unwrap();
    let events: Vec<Envelope> = events
        .into_iter()
        .map(|mut env| {
            medledger::clinical::seal_blocking(&keys, &mut env).unwrap();
            env
        })
        .collect();
    drop(keys);
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
