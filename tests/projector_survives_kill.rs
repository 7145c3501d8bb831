//! The projector applies each block exactly once, even when its process is killed.
//!
//! A child process (this test binary, re-run with `MEDLEDGER_PROJECTOR_CHILD` set) projects
//! a ledger into RocksDB views and is SIGKILLed at a random moment, several times over.
//! Each restart catches up from the height of the views' last flush. At the end the views must be byte for
//! byte what a single clean rebuild produces: a block applied twice would leave
//! `rejected` rows (its creations meet existing records), a block applied by half would
//! lose rows, and either changes the digests.

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use medledger_storage::{Ledger, LedgerOptions};
use medledger_views::projector::Projector;
use medledger_views::rebuild::{
    digest_views, open_views, project_all, Plan, PARTITION_BYTES, WRITE_BATCH_OPS,
};
use medledger_views::Backend;

const CHILD_ENV: &str = "MEDLEDGER_PROJECTOR_CHILD";
const KILLS: u64 = 6;

/// Projects the ledger in the given data dir until killed (or done, then waits to be
/// killed). Does nothing in a normal test run.
#[test]
fn projector_child() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let dir = Path::new(&dir);
    let (ledger, _) = Ledger::open(dir, LedgerOptions::default()).unwrap();
    let store = open_views(dir, Backend::RocksDb).unwrap();
    // Views are durable only once flushed: flush far more often than the default, so
    // that kills 100 to 700 ms apart still see the height move.
    let _projector =
        Projector::start_with_flush_interval(Arc::new(ledger), store, Duration::from_millis(50))
            .unwrap();
    std::thread::sleep(Duration::from_secs(60));
}

#[test]
fn killing_the_projector_never_applies_a_block_twice_or_half() {
    let dir = tempfile::tempdir().unwrap();
    let height = common::fixture_ledger(dir.path(), 11, 40_000, 40);
    let exe = std::env::current_exe().unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);

    let mut heights = Vec::new();
    for round in 0..KILLS {
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "projector_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, dir.path())
            .spawn()
            .unwrap();
        // Pseudo-random kill times between 100 and 700 ms (opening takes some of it).
        std::thread::sleep(Duration::from_millis(100 + (round * 2_654_435_761) % 600));
        child.kill().unwrap();
        child.wait().unwrap();
        let store = open_views(dir.path(), Backend::RocksDb).unwrap();
        heights.push(store.applied_height().unwrap());
        assert!(Instant::now() < deadline, "bounded in time");
    }
    assert!(
        heights.windows(2).all(|w| w[0] <= w[1]),
        "the applied height never goes back: {heights:?}"
    );
    assert!(
        heights.iter().any(|&h| 1 < h && h < height),
        "at least one kill landed mid-projection: {heights:?} of {height}"
    );

    // Finish in this process, then compare with a clean rebuild.
    let (ledger, _) = Ledger::open(dir.path(), LedgerOptions::default()).unwrap();
    let ledger = Arc::new(ledger);
    let live = open_views(dir.path(), Backend::RocksDb).unwrap();
    let projector = Projector::start(ledger.clone(), live.clone()).unwrap();
    projector
        .wait_for_height(height, Duration::from_secs(60))
        .unwrap();
    projector.shutdown();

    let clean = Backend::RocksDb
        .open(&dir.path().join("clean"), true)
        .unwrap();
    let plan = Plan {
        work_dir: &dir.path().join("parts"),
        batch_ops: WRITE_BATCH_OPS,
        partition_bytes: PARTITION_BYTES,
    };
    let summary = project_all(&ledger, clean.as_ref(), height, &plan, &mut |_| {}).unwrap();
    clean.flush().unwrap();
    assert_eq!(summary.rejected, 0, "fixtures are all valid");
    assert_eq!(
        digest_views(live.as_ref()).unwrap(),
        digest_views(clean.as_ref()).unwrap()
    );
}
