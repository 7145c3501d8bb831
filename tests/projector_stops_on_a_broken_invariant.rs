//! The projector retries what may pass (I/O) but stops on a broken invariant, and says
//! why: here a block below the tip is corrupt on disk, so every retry would fail alike
//! (issue 21). The server then refuses writes before the ledger (`projector_stopped`)
//! instead of ordering transactions whose verdict would never come.

use std::sync::Arc;
use std::time::{Duration, Instant};

use medledger_storage::{Ledger, LedgerOptions};
use medledger_views::projector::Projector;

mod common;

#[test]
fn a_corrupt_block_stops_the_projector_with_its_number() {
    let dir = tempfile::tempdir().unwrap();
    let height = common::fixture_ledger(dir.path(), 7, 400, 20);
    assert_eq!(height, 21, "genesis and 20 blocks of 20 events");
    // Flip one byte in the middle of the segment: a block well below the tip, which
    // opening the ledger (it checks the tail) does not read.
    let segment = dir.path().join("blocks/seg-000000.log");
    let mut bytes = std::fs::read(&segment).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    std::fs::write(&segment, &bytes).unwrap();

    let (ledger, _) = Ledger::open(dir.path(), LedgerOptions::default()).unwrap();
    let store = medledger_views::rebuild::open_views(dir.path(), medledger_views::Backend::RocksDb)
        .unwrap();
    let projector = Projector::start(Arc::new(ledger), store).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let why = loop {
        if let Some(why) = projector.halted() {
            break why;
        }
        assert!(
            Instant::now() < deadline,
            "the projector did not stop: {:?}",
            projector.error()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let stopped_at = projector.applied_height();
    assert!(
        0 < stopped_at && stopped_at < height,
        "stopped at {stopped_at} of {height}"
    );
    assert!(
        why.contains(&format!("stopped at block {stopped_at}")) && why.contains("corrupt"),
        "{why}"
    );
    // It stays stopped: no retry moves it, and no later block is applied.
    std::thread::sleep(Duration::from_millis(700));
    assert_eq!(projector.applied_height(), stopped_at);
    assert!(projector.halted().is_some());
    projector.shutdown();
}
