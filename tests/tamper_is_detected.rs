//! Flipping any bit of any segment file makes `medledger verify` fail and name the block
//! whose frame holds the flipped byte.

mod common;

use std::path::Path;

use medledger::cli;
use medledger_storage::{Block, CutReason, Ledger, LedgerOptions};

fn verify_json(dir: &Path) -> (i32, serde_json::Value) {
    let mut out = Vec::new();
    let code = cli::verify::run(dir, &mut out);
    (code, serde_json::from_slice(&out).unwrap())
}

#[test]
fn every_flipped_bit_is_found_and_named() {
    let original = tempfile::tempdir().unwrap();
    // (segment, start, end, block number) of every frame.
    let mut frames = Vec::new();
    {
        let options = LedgerOptions {
            segment_bytes_max: 4096,
            ..LedgerOptions::default()
        };
        let (ledger, _) = Ledger::open(original.path(), options).unwrap();
        let gen = medledger::workload::RecordGenerator::new(300);
        for n in 1..=24u64 {
            let tip = ledger.tip();
            let txs: Vec<Vec<u8>> = (0..3)
                .map(|i| gen.sealed_envelope(n * 10 + i).encode())
                .collect();
            let block =
                Block::from_txs(n, tip.tip_hash, tip.tip_timestamp_ms, CutReason::Count, txs);
            ledger.append(&block).unwrap();
        }
        for n in 0..=24u64 {
            let loc = ledger.index().location(n).unwrap().unwrap();
            frames.push((loc.segment, loc.offset, loc.offset + u64::from(loc.len), n));
        }
        ledger.close().unwrap();
    }
    let (code, json) = verify_json(original.path());
    assert_eq!(code, 0, "{json}");
    assert_eq!(json["verify"]["blocks"], 25);

    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for _ in 0..120 {
        let (segment, start, end, number) = frames[(next() % frames.len() as u64) as usize];
        let at = start + next() % (end - start);
        let work = tempfile::tempdir().unwrap();
        common::copy_dir(original.path(), work.path());
        let path = work
            .path()
            .join("blocks")
            .join(format!("seg-{segment:06}.log"));
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[at as usize] ^= 1 << (next() % 8);
        std::fs::write(&path, &bytes).unwrap();
        let (code, json) = verify_json(work.path());
        assert_eq!(code, 1, "flip at segment {segment} offset {at}: {json}");
        assert_eq!(
            json["block"], number,
            "flip at segment {segment} offset {at}: {json}"
        );
    }
}

#[test]
fn verify_of_a_missing_ledger_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let (code, json) = verify_json(&dir.path().join("nothing-here"));
    assert_eq!(code, 2);
    assert!(
        json["error"].as_str().unwrap().contains("no ledger"),
        "{json}"
    );
}
