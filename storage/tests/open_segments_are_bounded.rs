//! Reading a ledger of hundreds of segments end to end holds at most
//! `OPEN_SEGMENTS_MAX` of them open (issue 27: every segment a reader touched used to stay
//! open for the ledger's life). Its own test binary, so the count of this process's open
//! descriptors is this test's alone.

mod common;

use medledger_storage::ledger::OPEN_SEGMENTS_MAX;
use medledger_storage::Ledger;

fn open_descriptors() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

#[test]
fn reading_every_segment_keeps_at_most_the_bound_open() {
    let dir = tempfile::tempdir().unwrap();
    let (ledger, _) = Ledger::open(dir.path(), common::small_segments()).unwrap();
    // 4 KiB segments of blocks of ~1.5 KiB: two blocks a segment.
    for i in 0..(OPEN_SEGMENTS_MAX as u64 * 8) {
        let block = common::next_block(&ledger, i * 3, 3, 300);
        ledger.append(&block).unwrap();
    }
    let segments = std::fs::read_dir(dir.path().join("blocks"))
        .unwrap()
        .count();
    assert!(
        segments > 3 * OPEN_SEGMENTS_MAX,
        "{segments} segments are too few to show the bound"
    );
    let before = open_descriptors();
    for _ in 0..2 {
        for block in ledger.blocks_from(0) {
            block.unwrap();
        }
    }
    let opened = open_descriptors().saturating_sub(before);
    assert!(
        opened <= OPEN_SEGMENTS_MAX,
        "{opened} more descriptors after reading {segments} segments"
    );
    // Reading again still reads every block right after evictions.
    assert_eq!(
        ledger.blocks_from(0).count() as u64,
        ledger.tip().height,
        "every block read"
    );
}
