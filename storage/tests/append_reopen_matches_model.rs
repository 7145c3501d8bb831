//! Appends and reopens against a `Vec<Block>` model: after any sequence, the ledger holds
//! exactly the model's blocks, readable by number, hash and tx id.

mod common;

use medledger_chaincode::Envelope;
use medledger_storage::ledger::rules::LinkBreak;
use medledger_storage::{Block, Ledger, StorageError};
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Op {
    Append { txs: usize, pad: usize },
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1usize..12, 0usize..600).prop_map(|(txs, pad)| Op::Append { txs, pad }),
        1 => Just(Op::Reopen),
    ]
}

fn check(ledger: &Ledger, model: &[Block]) {
    assert_eq!(ledger.tip().height, model.len() as u64);
    assert_eq!(ledger.tip().tip_hash, model.last().unwrap().hash());
    for b in model {
        assert_eq!(ledger.block(b.header.number).unwrap().as_ref(), Some(b));
        assert_eq!(ledger.block_by_hash(&b.hash()).unwrap().as_ref(), Some(b));
        for (pos, tx) in b.txs.iter().enumerate() {
            let id = Envelope::tx_id_of(tx).unwrap();
            let (loc, bytes) = ledger.tx(&id.0).unwrap().unwrap();
            assert_eq!((loc.block, loc.position as usize), (b.header.number, pos));
            assert_eq!(&bytes, tx);
        }
    }
    assert_eq!(ledger.block(model.len() as u64).unwrap(), None);
    assert_eq!(ledger.tx(&[0xff; 16]).unwrap(), None);
    let all: Vec<Block> = ledger.blocks_from(0).map(Result::unwrap).collect();
    assert_eq!(all, model);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]
    #[test]
    fn ledger_matches_model(ops in proptest::collection::vec(op(), 1..25)) {
        let dir = tempfile::tempdir().unwrap();
        let fs = medledger_storage::ledger::crashfs::CrashFs::new();
        let mut ledger = common::open_mem(&fs, dir.path());
        let mut model = vec![ledger.block(0).unwrap().unwrap()];
        let mut next_tx = 0;
        for op in ops {
            match op {
                Op::Append { txs, pad } => {
                    let block = common::next_block(&ledger, next_tx, txs, pad);
                    next_tx += txs as u64;
                    ledger.append(&block).unwrap();
                    model.push(block);
                }
                Op::Reopen => {
                    ledger.close().unwrap();
                    drop(ledger);
                    ledger = common::open_mem(&fs, dir.path());
                }
            }
            check(&ledger, &model);
        }
        // Segments rolled at the 4 KiB limit and no segment is over it unless it holds a
        // single larger block.
        prop_assert!(fs.contents(0).is_some());
    }
}

#[test]
fn appends_that_do_not_extend_the_tip_are_refused_and_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let fs = medledger_storage::ledger::crashfs::CrashFs::new();
    let ledger = common::open_mem(&fs, dir.path());
    let good = common::next_block(&ledger, 0, 2, 10);
    let mut wrong_number = good.clone();
    wrong_number.header.number = 5;
    let mut wrong_prev = good.clone();
    wrong_prev.header.prev_hash = [1; 32];
    // Recovery would refuse these on the next open, so append refuses them first: the
    // write-side and read-side checks are one function (`ledger::rules::check_link`).
    let mut wrong_root = good.clone();
    wrong_root.txs[1].push(0);
    let mut earlier = good.clone();
    earlier.header.timestamp_ms = ledger.tip().tip_timestamp_ms - 1;
    let ops = fs.ops();
    for (bad, reason) in [
        (
            &wrong_number,
            LinkBreak::Number {
                found: 5,
                expected: 1,
            },
        ),
        (&wrong_prev, LinkBreak::PrevHash),
        (&wrong_root, LinkBreak::DataHash),
        (&earlier, LinkBreak::Timestamp),
    ] {
        match ledger.append(bad) {
            Err(StorageError::DoesNotExtend { reason: got, .. }) => assert_eq!(got, reason),
            other => panic!("expected {reason:?}, got {other:?}"),
        }
    }
    assert_eq!(fs.ops(), ops, "nothing written for a refused block");
    ledger.append(&good).unwrap();
    assert!(matches!(
        ledger.append(&good),
        Err(StorageError::DoesNotExtend { .. })
    ));
    assert_eq!(ledger.tip().height, 2);
}

#[test]
fn real_files_reopen_with_segments_rolled() {
    let dir = tempfile::tempdir().unwrap();
    let mut model = Vec::new();
    {
        let (ledger, report) = Ledger::open(dir.path(), common::small_segments()).unwrap();
        assert!(report.created);
        model.push(ledger.block(0).unwrap().unwrap());
        for i in 0..30 {
            let b = common::next_block(&ledger, i * 3, 3, 200);
            ledger.append(&b).unwrap();
            model.push(b);
        }
        ledger.close().unwrap();
    }
    let (ledger, report) = Ledger::open(dir.path(), common::small_segments()).unwrap();
    assert!(!report.created);
    assert_eq!(report.reindexed_blocks, 0);
    assert_eq!(report.truncated, None);
    check(&ledger, &model);
    let segments = std::fs::read_dir(dir.path().join("blocks"))
        .unwrap()
        .count();
    assert!(
        segments > 3,
        "30 blocks of ~700 bytes roll 4 KiB segments: {segments}"
    );
}
