//! Rebuild equals live, for random event sequences with restarts at random points, on
//! every backend: blocks arrive while the projector runs; at each restart point the
//! projector is stopped and the store closed and reopened; at the end the live views must
//! hold exactly the bytes of a one-pass rebuild.

mod common;

use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;

use medledger::fixtures::{FixtureConfig, Fixtures};
use medledger_chaincode::{Envelope, Event};
use medledger_storage::{Ledger, LedgerOptions};
use medledger_views::projector::Projector;
use medledger_views::rebuild::{digest_views, project_all, Plan};
use medledger_views::{Backend, ViewStore};

/// Fixture events with some replayed (now stale) amendments and status changes mixed in,
/// so rejections are part of what must be reproduced.
fn events(seed: u64, n: usize, patients: u32) -> Vec<Envelope> {
    let mut out = Vec::with_capacity(n + n / 8);
    let fixtures = Fixtures::new(FixtureConfig {
        seed,
        patients,
        ..FixtureConfig::default()
    });
    for (i, env) in fixtures.take(n).enumerate() {
        let replay = matches!(
            env.event,
            Event::RecordAmended(_) | Event::RecordStatusChanged(_)
        ) && (i as u64 ^ seed).is_multiple_of(3);
        out.push(env.clone());
        if replay {
            let mut again = env;
            again.tx_id.0[15] ^= 0xa5;
            out.push(again);
        }
    }
    out
}

fn run(
    backend: Backend,
    seed: u64,
    n: usize,
    patients: u32,
    block_sizes: &[usize],
    restarts: &[usize],
) {
    let dir = tempfile::tempdir().unwrap();
    let (ledger, _) = Ledger::open(dir.path(), LedgerOptions::default()).unwrap();
    let ledger = Arc::new(ledger);
    let events = events(seed, n, patients);
    let live_path = dir.path().join("live");

    // Cut the events into blocks, cycling through the chosen sizes.
    let mut blocks = Vec::new();
    let (mut at, mut i) = (0, 0);
    while at < events.len() {
        let size = block_sizes[i % block_sizes.len()].min(events.len() - at);
        blocks.push(&events[at..at + size]);
        at += size;
        i += 1;
    }
    let mut stops: Vec<usize> = restarts.iter().map(|r| r % (blocks.len() + 1)).collect();
    stops.push(blocks.len());
    stops.sort();

    let mut appended = 0;
    for stop in stops {
        let store: Arc<dyn ViewStore> = Arc::from(backend.open(&live_path, false).unwrap());
        let projector = Projector::start(ledger.clone(), store.clone()).unwrap();
        while appended < stop {
            common::append_block(&ledger, blocks[appended]);
            projector.nudge();
            appended += 1;
        }
        projector
            .wait_for_height(ledger.tip().height, Duration::from_secs(30))
            .unwrap();
        projector.shutdown();
        drop(projector);
        store.flush().unwrap();
    }

    let live = backend.open(&live_path, false).unwrap();
    let rebuilt = Backend::RocksDb
        .open(&dir.path().join("rebuilt"), true)
        .unwrap();
    let height = ledger.tip().height;
    // Small batches and partitions: many of each, batches holding several partitions.
    let plan = Plan {
        work_dir: &dir.path().join("parts"),
        batch_ops: 512,
        partition_bytes: 16 << 10,
    };
    let summary = project_all(&ledger, rebuilt.as_ref(), height, &plan, &mut |_| {}).unwrap();
    rebuilt.flush().unwrap();
    assert_eq!(summary.events, events.len() as u64);
    assert_eq!(live.applied_height().unwrap(), height);
    assert_eq!(
        digest_views(live.as_ref()).unwrap(),
        digest_views(rebuilt.as_ref()).unwrap()
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 10, ..ProptestConfig::default() })]

    #[test]
    fn rebuild_equals_live_with_restarts(
        seed in any::<u64>(),
        n in 50usize..1_500,
        patients in 5u32..200,
        block_sizes in prop::collection::vec(1usize..120, 1..6),
        restarts in prop::collection::vec(any::<usize>(), 0..5),
        sled in any::<bool>(),
    ) {
        let compiled = Backend::compiled();
        let backend = if sled && compiled.contains(&Backend::Sled) { Backend::Sled } else { Backend::RocksDb };
        run(backend, seed, n, patients, &block_sizes, &restarts);
    }
}

/// Both backends at least once, whatever proptest draws.
#[test]
fn rebuild_equals_live_on_every_backend() {
    for &backend in Backend::compiled() {
        run(backend, 5, 1_200, 30, &[1, 37, 100, 3], &[4, 11, 30]);
    }
}
