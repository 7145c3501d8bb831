//! Crash-point sweep (after redb's crash test and SQLite's crash VFS): run a workload on
//! the in-memory crash fs, crash at every mutating operation (create, write, fdatasync,
//! truncate, directory sync), reboot with the unsynced tail lost, partly kept or fully
//! kept, and check that every acknowledged block is there, the chain verifies, and the
//! ledger accepts new blocks.
//!
//! The index (RocksDB, written without a sync after each block is durable) is rebooted in
//! four states each time: as the crash left it, lost entirely, and as it was after the
//! first and after the middle acknowledged block (what a power loss that drops its
//! unsynced WAL tail leaves). Recovery must index again, from the segments, every block
//! the index lacks.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use medledger_storage::ledger::crashfs::{CrashFs, Tear};
use medledger_storage::ledger::verify::verify;
use medledger_storage::{Block, Ledger, StorageError};

const BLOCKS: u64 = 22;

/// Runs the workload until the first failure; returns the acknowledged blocks. With
/// `snapshots`, a copy of the index is kept after each acknowledged block, in
/// `snapshots/<its number>`.
fn workload(fs: &CrashFs, index: &Path, snapshots: Option<&Path>) -> Vec<Block> {
    let Ok((ledger, _)) = Ledger::open_with(Arc::new(fs.clone()), index, common::small_segments())
    else {
        return Vec::new();
    };
    let mut acked = vec![ledger.block(0).unwrap().unwrap()];
    for i in 0..BLOCKS {
        // ~1.2 KiB blocks roll the 4 KiB segments every few blocks.
        let block = common::next_block(&ledger, i * 4, 4, 250);
        match ledger.append(&block) {
            Ok(_) => {
                if let Some(dir) = snapshots {
                    common::copy_dir(index, &dir.join(block.header.number.to_string()));
                }
                acked.push(block)
            }
            Err(_) => {
                // Poisoned: nothing is accepted afterwards, even a correct next block.
                let again = common::next_block(&ledger, 1_000 + i, 1, 0);
                assert!(matches!(
                    ledger.append(&again),
                    Err(StorageError::Poisoned(_))
                ));
                break;
            }
        }
    }
    acked
}

#[test]
fn every_crash_point_keeps_every_acknowledged_block() {
    let probe_dir = tempfile::tempdir().unwrap();
    let probe = CrashFs::new();
    assert_eq!(
        workload(&probe, probe_dir.path(), None).len() as u64,
        BLOCKS + 1
    );
    let total_ops = probe.ops();
    assert!(
        total_ops > 2 * BLOCKS,
        "each block is a write and an fsync: {total_ops}"
    );

    let mut checked = 0;
    let mut reindexed = 0;
    for k in 0..total_ops {
        let fs = CrashFs::new();
        fs.crash_at(k);
        let index = tempfile::tempdir().unwrap();
        let snapshots = tempfile::tempdir().unwrap();
        let acked = workload(&fs, index.path(), Some(snapshots.path()));
        // The index as the crash left it, none, and as of earlier acknowledged blocks.
        let mut indexes: Vec<(String, Option<PathBuf>)> = vec![
            ("at the crash".into(), Some(index.path().to_owned())),
            ("lost".into(), None),
        ];
        for b in [acked.get(1), acked.get(acked.len() / 2)]
            .into_iter()
            .flatten()
        {
            let n = b.header.number;
            let snapshot = snapshots.path().join(n.to_string());
            if snapshot.exists() {
                indexes.push((format!("as of block {n}"), Some(snapshot)));
            }
        }
        while indexes.len() < 4 {
            // Fewer than two blocks acknowledged: the index lost, again.
            indexes.push(("lost".into(), None));
        }
        for tear in [Tear::None, Tear::Prefix(1), Tear::Prefix(200), Tear::All] {
            for (index_state, index_dir) in &indexes {
                let rebooted = fs.after_crash(tear);
                let index_copy = tempfile::tempdir().unwrap();
                if let Some(dir) = index_dir {
                    common::copy_dir(dir, index_copy.path());
                }
                let (ledger, report) = Ledger::open_with(
                    Arc::new(rebooted.clone()),
                    index_copy.path(),
                    common::small_segments(),
                )
                .unwrap_or_else(|e| {
                    panic!("crash at op {k}, {tear:?}, index {index_state}: reopen failed: {e}")
                });
                reindexed += report.reindexed_blocks;
                let tear = (tear, index_state);
                let height = ledger.tip().height;
                assert!(
                    height >= acked.len() as u64,
                    "crash at op {k}, {tear:?}: {} acknowledged, {height} recovered",
                    acked.len()
                );
                for b in &acked {
                    assert_eq!(
                        ledger.block(b.header.number).unwrap().as_ref(),
                        Some(b),
                        "op {k} {tear:?}"
                    );
                }
                let report = verify(&ledger, &common::is_envelope).unwrap();
                assert!(report.ok, "crash at op {k}, {tear:?}: {report:?}");
                // The recovered ledger takes new blocks and still verifies.
                ledger
                    .append(&common::next_block(&ledger, 9_000, 2, 10))
                    .unwrap();
                assert!(verify(&ledger, &common::is_envelope).unwrap().ok);
                checked += 1;
            }
        }
    }
    assert_eq!(checked, total_ops * 16);
    // The sweep reached its purpose: recoveries that had to index blocks again.
    assert!(reindexed > total_ops, "{reindexed} blocks indexed again");
    eprintln!("{checked} crash points checked ({total_ops} operations × 4 tears × 4 indexes), {reindexed} blocks indexed again");
}

#[test]
fn a_failed_fsync_poisons_until_reopened() {
    let index = tempfile::tempdir().unwrap();
    let fs = CrashFs::new();
    let (ledger, _) =
        Ledger::open_with(Arc::new(fs.clone()), index.path(), common::small_segments()).unwrap();
    ledger
        .append(&common::next_block(&ledger, 0, 1, 10))
        .unwrap();
    // The next append is a write (op n) then an fdatasync (op n+1): fail only the fsync.
    fs.fail_once_at(fs.ops() + 1);
    let block = common::next_block(&ledger, 1, 1, 10);
    assert!(matches!(
        ledger.append(&block),
        Err(StorageError::Io { .. })
    ));
    // The device works again, but the ledger must not trust what it wrote.
    for i in 0..3 {
        let b = common::next_block(&ledger, 10 + i, 1, 10);
        match ledger.append(&b) {
            Err(StorageError::Poisoned(why)) => assert!(why.contains("fdatasync"), "{why}"),
            other => panic!("expected Poisoned, got {other:?}"),
        }
    }
    assert!(ledger.poisoned().is_some());
    drop(ledger);
    let (ledger, _) =
        Ledger::open_with(Arc::new(fs.clone()), index.path(), common::small_segments()).unwrap();
    assert!(ledger.poisoned().is_none());
    // The unsynced block was written in full and is durable now: recovery keeps it.
    assert_eq!(ledger.tip().height, 3);
    ledger
        .append(&common::next_block(&ledger, 20, 1, 10))
        .unwrap();
    assert!(verify(&ledger, &common::is_envelope).unwrap().ok);
}
