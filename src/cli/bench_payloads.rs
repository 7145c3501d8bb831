//! `medledger bench payloads`: durable `put`s into the embedded payload store.
//!
//! `callers` concurrent tasks each store one payload at a time through
//! [`Payloads::put`] (encrypt, chunk, store blocks, key and pin, durable when it returns)
//! until `payloads` are stored, in a fresh store under `DATA_DIR/bench-payloads`. The
//! plaintext is made before the timing (one buffer; every `put` encrypts it under a fresh
//! key). Prints one JSON object: payloads/s, MiB/s of plaintext, latency percentiles and
//! the fdatasync calls of the pack log and the key log per payload (what group commit
//! shares: issue 23's goal is ≤ 0.05 with 64 callers and 4 KiB payloads).

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use actix_web::web::Bytes;
use serde_json::json;

use medledger_payload::{CidVersion, PayloadConfig, Payloads};

use super::bench_ingest::{percentile_ms, process_cpu_seconds, round3};

/// Parameters of one run.
#[derive(Clone, Debug)]
pub struct PayloadsBenchParams {
    pub data_dir: PathBuf,
    pub payloads: u64,
    pub payload_bytes: usize,
    pub callers: usize,
}

/// Upper bounds so a typo cannot exhaust the machine.
pub const PAYLOADS_MAX: u64 = 10_000_000;
pub const CALLERS_MAX: usize = 4096;
pub const PAYLOAD_BYTES_MAX: usize = 64 * 1024 * 1024;

/// Runs the benchmark and returns its JSON report.
pub fn run(p: &PayloadsBenchParams) -> Result<serde_json::Value, String> {
    if p.payloads == 0 || p.payloads > PAYLOADS_MAX {
        return Err(format!("--payloads must be between 1 and {PAYLOADS_MAX}"));
    }
    if p.callers == 0 || p.callers > CALLERS_MAX {
        return Err(format!("--callers must be between 1 and {CALLERS_MAX}"));
    }
    if p.payload_bytes > PAYLOAD_BYTES_MAX {
        return Err(format!("--payload-bytes is at most {PAYLOAD_BYTES_MAX}"));
    }
    let dir = p.data_dir.join("bench-payloads");
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(|e| format!("clearing {}: {e}", dir.display()))?;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let mut config = PayloadConfig::new(&dir);
    config.cid_version = CidVersion::V1;
    config.max_payload_bytes = PAYLOAD_BYTES_MAX as u64;
    let payloads = Arc::new(Payloads::open(config).map_err(|e| e.to_string())?);
    let plaintext = Bytes::from(
        (0..p.payload_bytes)
            .map(|i| (i * 31 % 251) as u8)
            .collect::<Vec<u8>>(),
    );
    let next = Arc::new(AtomicU64::new(0));
    let fsyncs_before = payloads.fsyncs();
    let cpu_before = process_cpu_seconds();
    let started = Instant::now();
    let latencies: Result<Vec<Vec<u32>>, String> = runtime.block_on(async {
        let tasks: Vec<_> = (0..p.callers)
            .map(|_| {
                let (payloads, next, plaintext) =
                    (payloads.clone(), next.clone(), plaintext.clone());
                let total = p.payloads;
                tokio::spawn(async move {
                    let mut lat_us = Vec::new();
                    while next.fetch_add(1, Ordering::Relaxed) < total {
                        let body = futures_util::stream::once({
                            let plaintext = plaintext.clone();
                            async move { Ok::<_, std::io::Error>(plaintext) }
                        });
                        let t0 = Instant::now();
                        payloads
                            .put(body, "application/octet-stream")
                            .await
                            .map_err(|e| e.to_string())?;
                        lat_us.push(t0.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
                    }
                    Ok::<_, String>(lat_us)
                })
            })
            .collect();
        let mut all = Vec::with_capacity(tasks.len());
        for task in tasks {
            all.push(task.await.map_err(|e| e.to_string())??);
        }
        Ok(all)
    });
    let seconds = started.elapsed().as_secs_f64();
    let cpu_seconds = process_cpu_seconds()
        .zip(cpu_before)
        .map(|(after, before)| after - before);
    let fsyncs = payloads.fsyncs() - fsyncs_before;
    let mut lat: Vec<u32> = latencies?.into_iter().flatten().collect();
    lat.sort_unstable();
    let pct = |q: f64| percentile_ms(&lat, q);
    let stored = lat.len() as u64;
    Ok(json!({
        "payloads": stored,
        "payload_bytes": p.payload_bytes,
        "callers": p.callers,
        "seconds": round3(seconds),
        "payloads_per_sec": (stored as f64 / seconds).round(),
        "mib_per_sec": round3(stored as f64 * p.payload_bytes as f64 / seconds / (1024.0 * 1024.0)),
        "fsyncs": fsyncs,
        "fsyncs_per_payload": round3(fsyncs as f64 / stored.max(1) as f64),
        "cpu_seconds": cpu_seconds.map(round3),
        "p50_ms": round3(pct(0.50)),
        "p99_ms": round3(pct(0.99)),
        "max_ms": round3(pct(1.0)),
        "cpus": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "store": "embedded (pack log + key log, group commit), CIDv1",
        "note": "plaintext made before the timing; encrypt, chunk, blocks, key and pin timed",
    }))
}
