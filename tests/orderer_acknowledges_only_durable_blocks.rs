//! The orderer answers a submitter only after the block holding its transaction is
//! durable; it cuts blocks by the Fabric rules (and the eager idle cut); it rejects bad
//! input at ingress and reports a failed fsync to every submitter of the block.

use std::sync::Arc;
use std::time::Duration;

use medledger::orderer::{CutPolicy, CutterConfig, Orderer, OrdererConfig, SubmitError};
use medledger::workload::RecordGenerator;
use medledger_chaincode::Envelope;
use medledger_storage::ledger::crashfs::CrashFs;
use medledger_storage::{CutReason, Ledger, LedgerOptions};

fn ledger_on(fs: &CrashFs, index: &std::path::Path) -> Arc<Ledger> {
    Arc::new(
        Ledger::open_with(Arc::new(fs.clone()), index, LedgerOptions::default())
            .unwrap()
            .0,
    )
}

fn file_ledger(dir: &std::path::Path) -> Arc<Ledger> {
    Arc::new(Ledger::open(dir, LedgerOptions::default()).unwrap().0)
}

fn config(policy: CutPolicy, timeout_ms: u64, count: u32) -> OrdererConfig {
    OrdererConfig {
        cutter: CutterConfig {
            batch_timeout: Duration::from_millis(timeout_ms),
            max_message_count: count,
            policy,
            ..CutterConfig::default()
        },
        ..OrdererConfig::default()
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn no_receipt_before_the_fsync_returns() {
    let index = tempfile::tempdir().unwrap();
    let fs = CrashFs::new();
    let ledger = ledger_on(&fs, index.path());
    let orderer = Orderer::start(ledger.clone(), config(CutPolicy::Eager, 10, 500)).unwrap();
    let gen = RecordGenerator::new(300);
    fs.hold_syncs(true);
    let mut pending: Vec<_> = (0..20)
        .map(|i| orderer.enqueue(&gen.sealed_envelope(i)).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(100));
    for rx in &mut pending {
        assert!(
            rx.try_recv().is_err(),
            "acknowledged while the fsync is held"
        );
    }
    assert_eq!(
        ledger.tip().height,
        1,
        "no block is visible before it is durable"
    );
    fs.hold_syncs(false);
    let rt = runtime();
    let receipts: Vec<_> = pending
        .into_iter()
        .map(|rx| rt.block_on(rx).unwrap().unwrap())
        .collect();
    for r in &receipts {
        let (loc, bytes) = ledger
            .tx(&r.tx_id.0)
            .unwrap()
            .expect("acknowledged tx is readable");
        assert_eq!((loc.block, loc.position), (r.block_number, r.position));
        assert_eq!(medledger_chaincode::tx_hash(&bytes), r.tx_hash);
    }
    // Power cut right now: every acknowledged transaction is in the durable image
    // (a fresh index forces recovery to find them in the segments alone).
    let rebooted = fs.after_crash(medledger_storage::ledger::crashfs::Tear::None);
    let fresh_index = tempfile::tempdir().unwrap();
    let after = ledger_on(&rebooted, fresh_index.path());
    for r in &receipts {
        assert!(
            after.tx(&r.tx_id.0).unwrap().is_some(),
            "acknowledged {} lost",
            r.tx_id
        );
    }
    orderer.shutdown();
}

#[test]
fn eager_cuts_a_lone_submission_when_idle_and_strict_waits_for_the_timer() {
    let rt = runtime();
    for (policy, reason) in [
        (CutPolicy::Eager, CutReason::Idle),
        (CutPolicy::Strict, CutReason::Timeout),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let ledger = file_ledger(dir.path());
        // A long timer makes the difference visible: strict waits for it, eager does not.
        let orderer = Orderer::start(ledger.clone(), config(policy, 300, 500)).unwrap();
        let env = RecordGenerator::new(256).sealed_envelope(1);
        let t0 = std::time::Instant::now();
        let receipt = rt.block_on(orderer.submit(&env)).unwrap();
        let waited = t0.elapsed();
        let block = ledger.block(receipt.block_number).unwrap().unwrap();
        assert_eq!(block.header.cut_reason, reason, "{policy:?}");
        assert_eq!(block.txs.len(), 1);
        match policy {
            CutPolicy::Strict => assert!(waited >= Duration::from_millis(300), "{waited:?}"),
            CutPolicy::Eager => assert!(waited < Duration::from_millis(300), "{waited:?}"),
        }
        orderer.shutdown();
    }
}

#[test]
fn count_cuts_fill_blocks_under_load_and_receipts_match_the_chain() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let ledger = file_ledger(dir.path());
    let orderer =
        Arc::new(Orderer::start(ledger.clone(), config(CutPolicy::Strict, 5_000, 50)).unwrap());
    let gen = RecordGenerator::new(200);
    let envs: Vec<Envelope> = (0..500).map(|i| gen.sealed_envelope(i)).collect();
    let results = rt.block_on(orderer.submit_batch(&envs));
    for (env, r) in envs.iter().zip(&results) {
        let r = r.as_ref().unwrap();
        assert_eq!(r.tx_id, env.tx_id);
        let block = ledger.block(r.block_number).unwrap().unwrap();
        assert_eq!(block.txs[r.position as usize], env.encode());
        assert_eq!(block.header.cut_reason, CutReason::Count);
        assert_eq!(block.txs.len(), 50);
    }
    assert_eq!(ledger.tip().height, 11);
    orderer.shutdown();
}

#[test]
fn bad_input_is_rejected_at_ingress_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = file_ledger(dir.path());
    let mut cfg = config(CutPolicy::Eager, 10, 500);
    cfg.cutter.preferred_max_bytes = 2048;
    cfg.cutter.absolute_max_bytes = 4096;
    let orderer = Orderer::start(ledger.clone(), cfg).unwrap();
    let big = RecordGenerator::new(5000).sealed_envelope(1);
    assert!(matches!(
        orderer.enqueue(&big),
        Err(SubmitError::TooLarge { max: 4096, .. })
    ));
    let mut invalid = RecordGenerator::new(100).sealed_envelope(2);
    invalid.submitter = String::new();
    assert!(matches!(
        orderer.enqueue(&invalid),
        Err(SubmitError::Invalid(_))
    ));
    // Between PreferredMaxBytes and AbsoluteMaxBytes: accepted, alone in its block.
    let oversize = RecordGenerator::new(3000).sealed_envelope(3);
    let r = runtime().block_on(orderer.submit(&oversize)).unwrap();
    let block = ledger.block(r.block_number).unwrap().unwrap();
    assert_eq!(
        (block.header.cut_reason, block.txs.len()),
        (CutReason::Oversize, 1)
    );
    assert_eq!(ledger.tip().height, 2);
    orderer.shutdown();
    assert!(matches!(
        orderer.enqueue(&oversize),
        Err(SubmitError::Closed)
    ));
}

#[test]
fn a_full_queue_answers_busy_at_once() {
    let index = tempfile::tempdir().unwrap();
    let fs = CrashFs::new();
    let ledger = ledger_on(&fs, index.path());
    let mut cfg = config(CutPolicy::Eager, 10, 1);
    cfg.queue_capacity = 4;
    cfg.inflight_blocks_max = 1;
    let orderer = Orderer::start(ledger, cfg).unwrap();
    let gen = RecordGenerator::new(200);
    fs.hold_syncs(true);
    // One block is stuck in its fsync, one more waits to be handed over, the queue fills.
    let mut accepted = Vec::new();
    let mut busy = 0;
    for i in 0..50 {
        match orderer.enqueue(&gen.sealed_envelope(i)) {
            Ok(rx) => accepted.push(rx),
            Err(SubmitError::Busy) => busy += 1,
            Err(e) => panic!("{e}"),
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    assert!(
        busy > 0 && accepted.len() <= 4 + 2,
        "accepted {}, busy {busy}",
        accepted.len()
    );
    fs.hold_syncs(false);
    let rt = runtime();
    for rx in accepted {
        rt.block_on(rx).unwrap().unwrap();
    }
    orderer.shutdown();
}

#[test]
fn a_failed_fsync_fails_the_block_and_everything_after() {
    let index = tempfile::tempdir().unwrap();
    let fs = CrashFs::new();
    let ledger = ledger_on(&fs, index.path());
    let orderer = Orderer::start(ledger.clone(), config(CutPolicy::Eager, 10, 500)).unwrap();
    let gen = RecordGenerator::new(200);
    let rt = runtime();
    rt.block_on(orderer.submit(&gen.sealed_envelope(0)))
        .unwrap();
    fs.fail_once_at(fs.ops() + 1); // the next block's fdatasync
    assert!(matches!(
        rt.block_on(orderer.submit(&gen.sealed_envelope(1))),
        Err(SubmitError::Failed(_))
    ));
    for i in 2..5 {
        assert!(matches!(
            rt.block_on(orderer.submit(&gen.sealed_envelope(i))),
            Err(SubmitError::Failed(_))
        ));
    }
    assert_eq!(ledger.tip().height, 2);
    orderer.shutdown();
}

#[test]
fn a_full_disk_refuses_blocks_and_the_orderer_goes_on_once_space_is_freed() {
    let index = tempfile::tempdir().unwrap();
    let fs = CrashFs::new();
    let ledger = ledger_on(&fs, index.path());
    // Blocks of 10, four in flight: the blocks built on a refused one are in the pipe.
    let orderer = Orderer::start(ledger.clone(), config(CutPolicy::Eager, 10, 10)).unwrap();
    let gen = RecordGenerator::new(500);
    let rt = runtime();
    let used = || -> u64 {
        (0..4)
            .filter_map(|s| fs.contents(s))
            .map(|c| c.len() as u64)
            .sum()
    };
    // One block of 10 measures a block; then room for one and a half more.
    let before = used();
    let first: Vec<_> = (0..10)
        .map(|i| orderer.enqueue(&gen.sealed_envelope(i)).unwrap())
        .collect();
    for rx in first {
        rt.block_on(rx).unwrap().unwrap();
    }
    let block = used() - before;
    fs.set_capacity(Some(used() + block * 3 / 2));
    // Syncs held while 200 are queued: four blocks are cut and in flight; the second
    // meets the full disk, and the two behind it were built on it.
    fs.hold_syncs(true);
    let pending: Vec<_> = (10..210)
        .map(|i| (i, orderer.enqueue(&gen.sealed_envelope(i)).unwrap()))
        .collect();
    std::thread::sleep(Duration::from_millis(100));
    let inflight = &orderer.stats().inflight_blocks;
    assert_eq!(inflight.load(std::sync::atomic::Ordering::Relaxed), 4);
    fs.hold_syncs(false);
    let (mut acked, mut refused) = (Vec::new(), Vec::new());
    for (i, rx) in pending {
        match rt.block_on(rx).unwrap() {
            Ok(receipt) => acked.push(receipt),
            Err(SubmitError::StorageFull(why)) => {
                assert!(why.contains("disk is full"), "{why}");
                refused.push(i);
            }
            Err(other) => panic!("submission {i}: {other}"),
        }
    }
    assert!(
        !acked.is_empty() && !refused.is_empty(),
        "{} acked",
        acked.len()
    );
    assert!(ledger.poisoned().is_none(), "a full disk does not poison");
    for r in &acked {
        assert!(
            ledger.tx(&r.tx_id.0).unwrap().is_some(),
            "acknowledged and present"
        );
    }
    for &i in &refused {
        let tx_id = gen.sealed_envelope(i).tx_id;
        assert!(ledger.tx(&tx_id.0).unwrap().is_none(), "refused and absent");
    }

    // Space freed: everything is taken again, on a chain that verifies.
    fs.set_capacity(None);
    let height = ledger.tip().height;
    for i in 210..260 {
        rt.block_on(orderer.submit(&gen.sealed_envelope(i)))
            .unwrap();
    }
    assert!(ledger.tip().height > height);
    orderer.shutdown();
    medledger_storage::ledger::verify::verify(&ledger, &|_, _| Ok(())).unwrap();
}

#[test]
fn shutdown_commits_everything_queued() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = file_ledger(dir.path());
    let orderer =
        Orderer::start(ledger.clone(), config(CutPolicy::Strict, 60_000, 100_000)).unwrap();
    let gen = RecordGenerator::new(200);
    let pending: Vec<_> = (0..300)
        .map(|i| orderer.enqueue(&gen.sealed_envelope(i)).unwrap())
        .collect();
    orderer.shutdown();
    let rt = runtime();
    for rx in pending {
        let r = rt.block_on(rx).unwrap().unwrap();
        assert!(ledger.tx(&r.tx_id.0).unwrap().is_some());
    }
    let last = ledger.block(ledger.tip().height - 1).unwrap().unwrap();
    assert_eq!(last.header.cut_reason, CutReason::Drain);
}
