//! A full disk refuses a block and writes nothing of it, without poisoning the ledger:
//! once space is freed the same block is taken, and a reopen finds exactly what was
//! acknowledged.

mod common;

use std::sync::Arc;

use common::{next_block, small_segments};
use medledger_storage::ledger::crashfs::{CrashFs, Tear};
use medledger_storage::ledger::verify::verify;
use medledger_storage::{Ledger, LedgerOptions, StorageError};

fn open(fs: &CrashFs, index: &std::path::Path, reserve_bytes: u64) -> Ledger {
    let options = LedgerOptions {
        reserve_bytes,
        ..small_segments()
    };
    Ledger::open_with(Arc::new(fs.clone()), index, options)
        .expect("open")
        .0
}

fn used(fs: &CrashFs) -> u64 {
    (0..64)
        .filter_map(|s| fs.contents(s))
        .map(|c| c.len() as u64)
        .sum()
}

#[test]
fn a_block_that_would_eat_into_the_reserve_is_refused_until_space_is_freed() {
    let tmp = tempfile::tempdir().unwrap();
    let fs = CrashFs::new();
    let reserve = 2_000;
    let ledger = open(&fs, tmp.path(), reserve);
    for i in 0..3 {
        ledger.append(&next_block(&ledger, i * 4, 4, 50)).unwrap();
    }
    let before = ledger.tip();
    let block = next_block(&ledger, 100, 4, 50);
    // Room for the block, but not for the block and the reserve.
    fs.set_capacity(Some(used(&fs) + reserve + 100));
    let err = ledger.append(&block).unwrap_err();
    match &err {
        StorageError::NoSpace { free, reserve: r } => {
            assert_eq!(*free, Some(reserve + 100));
            assert_eq!(*r, reserve);
        }
        other => panic!("expected NoSpace, got {other}"),
    }
    assert!(err.to_string().contains("disk is full"), "{err}");
    assert_eq!(ledger.tip(), before, "nothing was appended");
    assert!(ledger.poisoned().is_none(), "a full disk does not poison");

    // Space freed: the same block is taken, and the next.
    fs.set_capacity(None);
    ledger.append(&block).unwrap();
    ledger.append(&next_block(&ledger, 200, 4, 50)).unwrap();
    assert_eq!(ledger.tip().height, before.height + 2);
}

#[test]
fn a_write_that_finds_the_disk_full_is_undone_and_the_ledger_goes_on() {
    let tmp = tempfile::tempdir().unwrap();
    let fs = CrashFs::new();
    // No reserve: the write itself meets the full disk, half-way through the frame.
    let ledger = open(&fs, &tmp.path().join("index"), 0);
    for i in 0..3 {
        ledger.append(&next_block(&ledger, i * 4, 4, 50)).unwrap();
    }
    let before = ledger.tip();
    let block = next_block(&ledger, 100, 4, 50);
    let base = used(&fs);
    fs.set_capacity(Some(base + 40));
    let err = ledger.append(&block).unwrap_err();
    assert!(
        matches!(err, StorageError::NoSpace { free: None, .. }),
        "expected NoSpace, got {err}"
    );
    assert_eq!(ledger.tip(), before);
    assert!(ledger.poisoned().is_none());
    // Refused again while the disk stays full, and the partial frame never stays.
    assert_eq!(used(&fs), base, "the short write was cut back");
    assert!(ledger.append(&block).is_err());
    assert_eq!(used(&fs), base);

    fs.set_capacity(None);
    ledger.append(&block).unwrap();
    let acknowledged = ledger.tip();
    drop(ledger);

    // A power loss now keeps every acknowledged block and nothing else.
    for tear in [Tear::None, Tear::All] {
        let rebooted = fs.after_crash(tear);
        let index = tempfile::tempdir().unwrap();
        let reopened = open(&rebooted, index.path(), 0);
        assert_eq!(reopened.tip(), acknowledged, "{tear:?}");
        verify(&reopened, &common::is_envelope).expect("the chain verifies");
    }
}
