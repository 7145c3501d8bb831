//! Waiting for the views to reach a height (issue 21): the projector keeps its applied
//! height in one watch channel, which `Projector::reached` awaits and
//! `Projector::wait_for_height` blocks on. A blocked wait wakes when its block is
//! applied, gives up at once when the projector shuts down, and still sees the height
//! when called from a task that has spent its cooperative budget (the server's shutdown
//! and the HTTP tests call it from async code).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use medledger::fixtures::{FixtureConfig, Fixtures};
use medledger_chaincode::Envelope;
use medledger_storage::{Ledger, LedgerOptions};
use medledger_views::projector::{Projector, WaitTimeout};
use medledger_views::rebuild::open_views;
use medledger_views::Backend;

mod common;

const SEED: u64 = 11;
const EVENTS: usize = 200;

/// A ledger of fixture blocks in `dir` and a projector caught up with it.
fn caught_up(dir: &Path) -> (Arc<Ledger>, Projector) {
    common::fixture_ledger(dir, SEED, EVENTS, 20);
    let (ledger, _) = Ledger::open(dir, LedgerOptions::default()).unwrap();
    let ledger = Arc::new(ledger);
    let store = open_views(dir, Backend::RocksDb).unwrap();
    let projector = Projector::start(ledger.clone(), store).unwrap();
    projector
        .wait_for_height(ledger.tip().height, Duration::from_secs(30))
        .unwrap();
    (ledger, projector)
}

#[test]
fn a_blocked_wait_wakes_when_its_block_is_applied() {
    let dir = tempfile::tempdir().unwrap();
    let (ledger, projector) = caught_up(dir.path());
    let tip = ledger.tip().height;
    // The fixture events after those in the ledger: valid on top of it.
    let next: Vec<Envelope> = Fixtures::new(FixtureConfig {
        seed: SEED,
        patients: 500,
        ..FixtureConfig::default()
    })
    .skip(EVENTS)
    .take(5)
    .collect();
    std::thread::scope(|scope| {
        let waiter = scope.spawn(|| {
            let started = Instant::now();
            let waited = projector.wait_for_height(tip + 1, Duration::from_secs(30));
            (waited, started.elapsed())
        });
        // Let the waiter block before its block exists.
        std::thread::sleep(Duration::from_millis(200));
        common::append_block(&ledger, &next);
        projector.nudge();
        let (waited, elapsed) = waiter.join().unwrap();
        assert_eq!(waited, Ok(()));
        assert!(elapsed < Duration::from_secs(10), "waited {elapsed:?}");
    });
    assert_eq!(projector.applied_height(), tip + 1);
    projector.shutdown();
}

#[test]
fn shutdown_ends_a_wait_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let (ledger, projector) = caught_up(dir.path());
    let tip = ledger.tip().height;
    std::thread::scope(|scope| {
        let waiter = scope.spawn(|| {
            let started = Instant::now();
            // A height no block will bring.
            let waited = projector.wait_for_height(tip + 1, Duration::from_secs(60));
            (waited, started.elapsed())
        });
        std::thread::sleep(Duration::from_millis(200));
        projector.shutdown();
        let (waited, elapsed) = waiter.join().unwrap();
        assert_eq!(
            waited,
            Err(WaitTimeout {
                wanted: tip + 1,
                reached: tip
            })
        );
        assert!(elapsed < Duration::from_secs(10), "waited {elapsed:?}");
    });
}

#[test]
fn a_wait_from_a_task_with_no_budget_left_still_sees_the_height() {
    let dir = tempfile::tempdir().unwrap();
    let (ledger, projector) = caught_up(dir.path());
    let tip = ledger.tip().height;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        // Spend the task's budget, as a handler's many awaits would: a tokio resource
        // polled now is told to yield.
        for _ in 0..10_000 {
            if !tokio::task::coop::has_budget_remaining() {
                break;
            }
            std::future::poll_fn(|cx| {
                tokio::task::coop::poll_proceed(cx).map(|p| p.made_progress())
            })
            .await;
        }
        assert!(!tokio::task::coop::has_budget_remaining());
        let started = Instant::now();
        let waited = projector.wait_for_height(tip, Duration::from_secs(5));
        assert_eq!(waited, Ok(()));
        assert!(started.elapsed() < Duration::from_secs(1));
    });
    projector.shutdown();
}
