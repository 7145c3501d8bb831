//! A crash-point sweep over the views (issue 27): a crash may leave the views as of any
//! flush, and the projector must bring them from there to exactly what a rebuild makes.
//!
//! The views are RocksDB without a write-ahead log and with `atomic_flush`: what a crash
//! keeps of them is what the last completed flush wrote, every column family and the
//! applied height at the same block boundary (views/src/rocks.rs). The projector flushes
//! on a timer, so that boundary can be after any block, and the projector only ever sees
//! blocks the ledger has made durable (its tip moves after the fsync), so the views are
//! never ahead of the ledger. This test makes the views' image at every such boundary:
//! blocks are appended one at a time and projected, and the views are closed (flushed)
//! and copied after each. Every image is then opened as a crash would leave it, with the
//! whole ledger, and must report the height it was flushed at, catch up, and equal a
//! rebuild of the whole ledger view by view, row by row. RocksDB's own flush and
//! MANIFEST protocol are trusted here (a torn SST or MANIFEST is RocksDB's to recover).

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use medledger::fixtures::{FixtureConfig, Fixtures};
use medledger_chaincode::Envelope;
use medledger_storage::{Ledger, LedgerOptions};
use medledger_views::projector::Projector;
use medledger_views::rebuild::{digest_views, first_difference, project_all, Plan};
use medledger_views::{Backend, ViewStore};

/// Blocks of the ledger: one views image after each, so one crash point each.
const BLOCKS: usize = 60;
const PER_BLOCK: usize = 25;

fn open(path: &Path) -> Arc<dyn ViewStore> {
    Arc::from(Backend::RocksDb.open(path, false).unwrap())
}

/// Runs the projector over `store` until it has applied the ledger's every block, then
/// stops it (which flushes).
fn catch_up(ledger: &Arc<Ledger>, store: &Arc<dyn ViewStore>) {
    let projector = Projector::start(Arc::clone(ledger), Arc::clone(store)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    // Waited for in steps, so a projector that stops on a broken invariant fails the
    // test at once, with its reason.
    while projector
        .wait_for_height(ledger.tip().height, Duration::from_millis(200))
        .is_err()
    {
        assert_eq!(projector.halted(), None, "the projector stopped");
        assert!(Instant::now() < deadline, "caught up within 60 s");
    }
    projector.shutdown();
}

#[test]
fn views_left_at_any_flush_catch_up_to_exactly_a_rebuild() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (ledger, _) = Ledger::open(&data, LedgerOptions::default()).unwrap();
    let ledger = Arc::new(ledger);
    // Creations, amendments, status changes, grants and revocations, erasures: sealed as
    // the server seals them.
    let keys = medledger::clinical::open_keys(&data).unwrap();
    let events: Vec<Envelope> = Fixtures::new(FixtureConfig {
        seed: 27,
        patients: 40,
        ..FixtureConfig::default()
    })
    .take(BLOCKS * PER_BLOCK)
    .map(|mut env| {
        medledger::clinical::seal_blocking(&keys, &mut env).unwrap();
        env
    })
    .collect();
    drop(keys);

    // The views' image after each block: (the height flushed, the copy).
    let live = dir.path().join("live");
    let images = dir.path().join("images");
    let mut flushed = vec![];
    for (i, chunk) in events.chunks(PER_BLOCK).enumerate() {
        common::append_block(&ledger, chunk);
        let store = open(&live);
        catch_up(&ledger, &store);
        let height = store.applied_height().unwrap();
        assert_eq!(height, ledger.tip().height);
        drop(store);
        let image = images.join(i.to_string());
        common::copy_dir(&live, &image);
        flushed.push((height, image));
    }
    let height = ledger.tip().height;
    // What the images stand for holds only while the views flush every column family
    // together (their OPTIONS file says so).
    let options: Vec<String> = std::fs::read_dir(&live)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("OPTIONS-")
        })
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect();
    assert!(!options.is_empty(), "RocksDB writes an OPTIONS file");
    assert!(
        options.iter().all(|o| o.contains("atomic_flush=true")),
        "the views flush atomically"
    );

    let clean = Backend::RocksDb
        .open(&dir.path().join("clean"), true)
        .unwrap();
    let plan = Plan {
        work_dir: &dir.path().join("parts"),
        batch_ops: 1_000,
        partition_bytes: 1 << 20,
    };
    let summary = project_all(&ledger, clean.as_ref(), height, &plan, &mut |_| {}).unwrap();
    clean.flush().unwrap();
    let expected = digest_views(clean.as_ref()).unwrap();
    assert!(
        expected.iter().filter(|d| d.rows > 0).count() >= 8,
        "the fixtures fill the views: {expected:?}"
    );
    assert_eq!(summary.rejected, 0, "the fixtures are all valid");

    // Crash points: the views lost entirely, and as of every flush.
    let mut crash_points = 0;
    for (flushed_at, image) in std::iter::once((0, None)).chain(
        flushed
            .iter()
            .map(|(height, image)| (*height, Some(image.as_path()))),
    ) {
        crash_points += 1;
        let after = dir.path().join("after-crash");
        if let Some(image) = image {
            common::copy_dir(image, &after);
        }
        let store = open(&after);
        assert_eq!(
            store.applied_height().unwrap(),
            flushed_at,
            "the image flushed at {flushed_at} opens at its height"
        );
        catch_up(&ledger, &store);
        if digest_views(store.as_ref()).unwrap() != expected {
            panic!(
                "views flushed at height {flushed_at} of {height}, caught up, differ from \
                 a rebuild: {:?}",
                first_difference(store.as_ref(), clean.as_ref()).unwrap()
            );
        }
        drop(store);
        std::fs::remove_dir_all(&after).unwrap();
    }
    assert_eq!(crash_points, BLOCKS + 1);
    eprintln!(
        "{crash_points} crash points of the views in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}
