//! `medledger bench ingest`: durable ingest through the library API.
//!
//! The events are generated first (the input data set, outside the timing); then
//! `submitters` concurrent tasks each submit one event at a time through
//! [`Orderer::submit`] and wait for its receipt (so every event is acknowledged only after
//! the fsync of its block), until all are committed. Everything the library does per
//! submission — sealing its clinical text (a new content key per record, durable in the
//! key log's group commits), limit checks, canonical encoding, hashing, queueing, cutting,
//! Merkle root, write, fdatasync, index, receipt — is inside the timing; the time spent
//! sealing is also reported on its own. Prints one JSON object
//! with throughput, block statistics and per-submission latency percentiles.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use medledger_storage::{CutReason, Ledger, LedgerOptions};

use crate::orderer::{CutPolicy, CutterConfig, Orderer, OrdererConfig, SubmitError};
use crate::workload::RecordGenerator;

/// Parameters of one ingest run.
#[derive(Clone, Debug)]
pub struct IngestParams {
    pub data_dir: PathBuf,
    pub events: u64,
    pub record_bytes: usize,
    pub submitters: usize,
    pub cutter: CutterConfig,
    pub inflight_blocks_max: usize,
}

/// Upper bounds so a typo cannot exhaust the machine.
pub const EVENTS_MAX: u64 = 100_000_000;
pub const SUBMITTERS_MAX: usize = 100_000;
pub const RECORD_BYTES_MAX: usize = 1024 * 1024;

/// Runs the benchmark and returns its JSON report.
pub fn run(p: &IngestParams) -> Result<serde_json::Value, String> {
    if p.events == 0 || p.events > EVENTS_MAX {
        return Err(format!("--events must be between 1 and {EVENTS_MAX}"));
    }
    if p.submitters == 0 || p.submitters > SUBMITTERS_MAX {
        return Err(format!(
            "--submitters must be between 1 and {SUBMITTERS_MAX}"
        ));
    }
    if p.record_bytes > RECORD_BYTES_MAX {
        return Err(format!("--record-bytes is at most {RECORD_BYTES_MAX}"));
    }
    let (ledger, recovery) = Ledger::open(&p.data_dir, LedgerOptions::default())
        .map_err(|e| format!("cannot open the ledger in {}: {e}", p.data_dir.display()))?;
    let ledger = Arc::new(ledger);
    let keys = Arc::new(crate::clinical::open_keys(&p.data_dir)?);
    let seal_ns = Arc::new(AtomicU64::new(0));
    let start_height = ledger.tip().height;
    let fsyncs_before = ledger.fsyncs();
    let config = OrdererConfig {
        cutter: p.cutter.clone(),
        inflight_blocks_max: p.inflight_blocks_max,
        queue_capacity: (p.submitters * 2).max(1024),
    };
    let orderer = Arc::new(Orderer::start(ledger.clone(), config).map_err(|e| e.to_string())?);
    let generator = RecordGenerator::new(p.record_bytes);
    let record_bytes_actual = generator.envelope(0).encode().len();
    let envelopes: Arc<Vec<_>> = Arc::new((0..p.events).map(|i| generator.envelope(i)).collect());
    let per_task = (p.events as usize).div_ceil(p.submitters) + 1;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let next = Arc::new(AtomicU64::new(0));
    let busy = Arc::new(AtomicU64::new(0));
    let cpu_before = process_cpu_seconds();
    let started = Instant::now();
    let latencies: Result<Vec<Vec<u32>>, String> = runtime.block_on(async {
        let mut tasks = Vec::with_capacity(p.submitters);
        for _ in 0..p.submitters {
            let (orderer, envelopes, next, busy, keys, seal_ns) = (
                orderer.clone(),
                envelopes.clone(),
                next.clone(),
                busy.clone(),
                keys.clone(),
                seal_ns.clone(),
            );
            tasks.push(tokio::spawn(async move {
                let mut lat_us = Vec::with_capacity(per_task);
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                    let Some(env) = envelopes.get(i) else {
                        return Ok(lat_us);
                    };
                    let t0 = Instant::now();
                    let mut env = env.clone();
                    crate::clinical::seal(&keys, &mut env)
                        .await
                        .map_err(|e| e.to_string())?;
                    seal_ns.fetch_add(t0.elapsed().as_nanos() as u64, Ordering::Relaxed);
                    loop {
                        match orderer.submit(&env).await {
                            Ok(_) => break,
                            Err(SubmitError::Busy) => {
                                busy.fetch_add(1, Ordering::Relaxed);
                                tokio::time::sleep(Duration::from_micros(200)).await;
                            }
                            Err(e) => return Err(e.to_string()),
                        }
                    }
                    lat_us.push(t0.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
                }
            }));
        }
        let mut all = Vec::with_capacity(tasks.len());
        for t in tasks {
            all.push(t.await.map_err(|e| e.to_string())??);
        }
        Ok(all)
    });
    let seconds = started.elapsed().as_secs_f64();
    let cpu_seconds = process_cpu_seconds()
        .zip(cpu_before)
        .map(|(after, before)| after - before);
    let latencies = latencies?;
    orderer.shutdown();
    ledger.close().map_err(|e| e.to_string())?;
    let mut lat: Vec<u32> = latencies.into_iter().flatten().collect();
    lat.sort_unstable();
    let pct = |q: f64| percentile_ms(&lat, q);
    let stats = orderer.stats();
    let blocks = ledger.tip().height - start_height;
    let block_bytes = stats.block_bytes.load(Ordering::Relaxed);
    let reasons: serde_json::Map<String, serde_json::Value> = CutReason::ALL
        .iter()
        .map(|r| {
            let n = stats.blocks_by_reason[usize::from(r.as_u8())].load(Ordering::Relaxed);
            (r.as_str().to_string(), json!(n))
        })
        .filter(|(_, v)| v.as_u64() != Some(0))
        .collect();
    let events = lat.len() as u64;
    Ok(json!({
        "events": events,
        "blocks": blocks,
        "seconds": round3(seconds),
        "events_per_sec": (events as f64 / seconds).round(),
        "cpu_seconds": cpu_seconds.map(round3),
        "cpu_us_per_event": cpu_seconds.map(|c| round3(c * 1e6 / lat.len().max(1) as f64)),
        "mib_per_sec": round3(block_bytes as f64 / seconds / (1024.0 * 1024.0)),
        "fsyncs": ledger.fsyncs() - fsyncs_before,
        "key_fsyncs": keys.fsyncs(),
        "seal_us_mean": round3(seal_ns.load(Ordering::Relaxed) as f64 / 1e3 / events.max(1) as f64),
        "p50_ms": round3(pct(0.50)),
        "p99_ms": round3(pct(0.99)),
        "p999_ms": round3(pct(0.999)),
        "max_ms": round3(pct(1.0)),
        "mean_block_txs": round3(events as f64 / blocks.max(1) as f64),
        "mean_block_bytes": block_bytes / blocks.max(1),
        "cut_reasons": reasons,
        "busy_retries": busy.load(Ordering::Relaxed),
        "record_bytes": record_bytes_actual,
        "submitters": p.submitters,
        "batch_timeout_ms": p.cutter.batch_timeout.as_millis() as u64,
        "max_message_count": p.cutter.max_message_count,
        "preferred_max_bytes": p.cutter.preferred_max_bytes,
        "cut_policy": match p.cutter.policy { CutPolicy::Strict => "strict", CutPolicy::Eager => "eager" },
        "max_inflight_blocks": p.inflight_blocks_max,
        "recovered_blocks_on_open": recovery.reindexed_blocks,
        "note": "events generated before the timing; all library work per submission timed, sealing included (seal_us_mean: its share per event, key creation's group commit included)",
    }))
}

/// User + system CPU time of this process so far (Linux `/proc/self/stat`), if readable.
pub fn process_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    // USER_HZ is 100 on every Linux this runs on.
    Some(ticks / 100.0)
}

/// `x` to three decimals, as the benches print figures.
pub(super) fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// The `q` quantile (nearest rank) of latencies in microseconds, sorted ascending, in
/// milliseconds; 0 for none.
pub(super) fn percentile_ms(sorted_us: &[u32], q: f64) -> f64 {
    if sorted_us.is_empty() {
        return 0.0;
    }
    let idx = ((sorted_us.len() as f64 * q).ceil() as usize).clamp(1, sorted_us.len()) - 1;
    f64::from(sorted_us[idx]) / 1000.0
}
