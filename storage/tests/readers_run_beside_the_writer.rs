//! Readers (by number, by hash, by tx id, iterating) run while the writer appends, and
//! only ever see whole, durable, correctly chained blocks.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use medledger_chaincode::Envelope;
use medledger_storage::{Ledger, LedgerOptions};

#[test]
fn concurrent_readers_see_only_whole_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let options = LedgerOptions {
        segment_bytes_max: 16 * 1024,
        ..LedgerOptions::default()
    };
    let ledger = Arc::new(Ledger::open(dir.path(), options).unwrap().0);
    let done = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..3)
        .map(|r| {
            let (ledger, done) = (ledger.clone(), done.clone());
            std::thread::spawn(move || {
                let mut reads = 0u64;
                while !done.load(Ordering::Acquire) {
                    let tip = ledger.tip();
                    // The tip block is readable the moment the tip names it.
                    let last = ledger.block(tip.height - 1).unwrap().expect("tip block");
                    assert_eq!(last.hash(), tip.tip_hash);
                    assert!(last.data_hash_matches());
                    assert_eq!(
                        ledger.block_by_hash(&tip.tip_hash).unwrap().as_ref(),
                        Some(&last)
                    );
                    for tx in &last.txs {
                        let id = Envelope::tx_id_of(tx).unwrap();
                        assert_eq!(ledger.tx(&id.0).unwrap().unwrap().1, *tx);
                    }
                    // Walking from an earlier height links every block to the previous one.
                    let from = (tip.height.saturating_sub(5) + r) % tip.height;
                    let mut prev: Option<[u8; 32]> = None;
                    for b in ledger.blocks_from(from) {
                        let b = b.unwrap();
                        if let Some(h) = prev {
                            assert_eq!(b.header.prev_hash, h);
                        }
                        prev = Some(b.hash());
                    }
                    reads += 1;
                }
                reads
            })
        })
        .collect();
    for i in 0..300 {
        ledger
            .append(&common::next_block(&ledger, i * 4, 4, 100))
            .unwrap();
    }
    done.store(true, Ordering::Release);
    for r in readers {
        assert!(r.join().unwrap() > 0);
    }
    assert_eq!(ledger.tip().height, 301);
}
