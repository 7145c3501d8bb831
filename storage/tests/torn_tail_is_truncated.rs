//! A torn write of the last block (never acknowledged: its fsync did not return) is cut
//! off on open, at every byte offset inside its frame, and the ledger goes on from the
//! previous block. The same holds when the index is lost and rebuilt from the segments.

mod common;

use std::path::Path;

use medledger_storage::ledger::verify::verify;
use medledger_storage::{Block, Ledger, LedgerOptions};

fn segment(dir: &Path) -> std::path::PathBuf {
    dir.join("blocks").join("seg-000000.log")
}

#[test]
fn torn_last_frame_is_truncated_at_every_offset() {
    let dir = tempfile::tempdir().unwrap();
    let index_before_last = tempfile::tempdir().unwrap();
    let mut model: Vec<Block> = Vec::new();
    let (start, end) = {
        let (ledger, _) = Ledger::open(dir.path(), LedgerOptions::default()).unwrap();
        model.push(ledger.block(0).unwrap().unwrap());
        for i in 0..5 {
            let b = common::next_block(&ledger, i * 2, 2, 40);
            ledger.append(&b).unwrap();
            model.push(b);
        }
        ledger.close().unwrap();
        drop(ledger);
        common::copy_dir(&dir.path().join("index"), index_before_last.path());
        let (ledger, _) = Ledger::open(dir.path(), LedgerOptions::default()).unwrap();
        let last = common::next_block(&ledger, 100, 1, 20);
        let receipt = ledger.append(&last).unwrap();
        (
            receipt.location.offset,
            receipt.location.offset + u64::from(receipt.location.len),
        )
    };
    let full = std::fs::read(segment(dir.path())).unwrap();
    assert_eq!(full.len() as u64, end);

    for cut in start..end {
        for lose_index in [false, true] {
            // Rebuilding the whole index on every offset is slow; sample that variant.
            if lose_index && cut % 16 != 0 {
                continue;
            }
            let work = tempfile::tempdir().unwrap();
            std::fs::create_dir_all(work.path().join("blocks")).unwrap();
            std::fs::write(segment(work.path()), &full[..cut as usize]).unwrap();
            if !lose_index {
                common::copy_dir(index_before_last.path(), &work.path().join("index"));
            }
            let (ledger, report) = Ledger::open(work.path(), LedgerOptions::default()).unwrap();
            assert_eq!(ledger.tip().height, model.len() as u64, "cut at {cut}");
            let got: Vec<Block> = ledger.blocks_from(0).map(Result::unwrap).collect();
            assert_eq!(got, model, "cut at {cut}");
            let truncated = report.truncated.as_ref().map_or(0, |t| t.bytes);
            assert_eq!(truncated, cut - start, "cut at {cut}");
            assert!(
                verify(&ledger, &common::is_envelope).unwrap().ok,
                "cut at {cut}"
            );
            assert_eq!(
                std::fs::metadata(segment(work.path())).unwrap().len(),
                start
            );
        }
    }
}

#[test]
fn zero_filled_tail_is_truncated_and_the_ledger_appends_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let len = {
        let (ledger, _) = Ledger::open(dir.path(), LedgerOptions::default()).unwrap();
        ledger
            .append(&common::next_block(&ledger, 0, 3, 10))
            .unwrap();
        ledger.close().unwrap();
        std::fs::metadata(segment(dir.path())).unwrap().len()
    };
    // A crash after the file size grew but before the data reached the disk.
    let mut bytes = std::fs::read(segment(dir.path())).unwrap();
    bytes.extend_from_slice(&[0u8; 700]);
    std::fs::write(segment(dir.path()), &bytes).unwrap();
    let (ledger, report) = Ledger::open(dir.path(), LedgerOptions::default()).unwrap();
    assert_eq!(report.truncated.unwrap().bytes, 700);
    assert_eq!(ledger.tip().height, 2);
    ledger
        .append(&common::next_block(&ledger, 10, 1, 10))
        .unwrap();
    assert!(std::fs::metadata(segment(dir.path())).unwrap().len() > len);
    assert!(verify(&ledger, &common::is_envelope).unwrap().ok);
}

#[test]
fn damage_followed_by_a_valid_block_is_an_error_naming_the_block() {
    let dir = tempfile::tempdir().unwrap();
    let snapshot = tempfile::tempdir().unwrap();
    let locs = {
        let (ledger, _) = Ledger::open(dir.path(), LedgerOptions::default()).unwrap();
        ledger.close().unwrap();
        drop(ledger);
        // The index knows only genesis; blocks 1..=3 are found by the scan on open.
        common::copy_dir(&dir.path().join("index"), snapshot.path());
        let (ledger, _) = Ledger::open(dir.path(), LedgerOptions::default()).unwrap();
        let mut locs = Vec::new();
        for i in 0..3 {
            locs.push(
                ledger
                    .append(&common::next_block(&ledger, i * 5, 2, 30))
                    .unwrap()
                    .location,
            );
        }
        locs
    };
    std::fs::remove_dir_all(dir.path().join("index")).unwrap();
    common::copy_dir(snapshot.path(), &dir.path().join("index"));
    let mut bytes = std::fs::read(segment(dir.path())).unwrap();
    bytes[locs[1].offset as usize + 50] ^= 0x40; // inside block 2; block 3 survives
    std::fs::write(segment(dir.path()), &bytes).unwrap();
    match Ledger::open(dir.path(), LedgerOptions::default()) {
        Err(medledger_storage::StorageError::CorruptBlock { number, .. }) => assert_eq!(number, 2),
        Err(e) => panic!("expected CorruptBlock, got {e}"),
        Ok(_) => panic!("a damaged middle block must stop recovery"),
    }
    // Nothing was truncated: recovery never guesses.
    assert_eq!(std::fs::read(segment(dir.path())).unwrap(), bytes);
}
