//! `medledger bench rebuild`: generate a ledger of realistic events (the seeded fixture
//! generator), rebuild the views from it with each backend, then time patient-timeline
//! pages on the rebuilt views. Prints one JSON object with both backends side by side.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde_json::json;

use crate::fixtures::{FixtureConfig, Fixtures};
use medledger_chaincode::{tx_hash, Event};
use medledger_storage::views::query::{Owner, TimelineFilter, Views};
use medledger_storage::views::Backend;
use medledger_storage::{Block, CutReason, Ledger, LedgerOptions};

use crate::cli::rebuild::ProgressPrinter;
use crate::rebuild;

/// Parameters of one run.
#[derive(Clone, Debug)]
pub struct RebuildParams {
    pub data_dir: PathBuf,
    pub events: u64,
    pub seed: u64,
    pub backends: Vec<Backend>,
    /// Timeline pages timed per backend.
    pub queries: usize,
}

/// At most this many events (a typo must not fill the disk).
pub const EVENTS_MAX: u64 = 100_000_000;
/// Transactions per generated block (the cutter's default MaxMessageCount).
const TXS_PER_BLOCK: usize = 500;
/// Page size of the timed timeline queries (a clinician's first screen).
const PAGE: usize = 50;

/// Runs the benchmark.
pub fn run(p: &RebuildParams) -> Result<serde_json::Value, String> {
    if p.events == 0 || p.events > EVENTS_MAX {
        return Err(format!("--events must be between 1 and {EVENTS_MAX}"));
    }
    if p.queries > 1_000_000 {
        return Err("--queries is at most 1,000,000".into());
    }
    let dir = p.data_dir.join("bench-rebuild");
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(|e| format!("clearing {}: {e}", dir.display()))?;
    }
    let (ledger, generate_secs, patients) = generate(&dir, p.events, p.seed)?;
    let ledger_bytes = dir_bytes(&dir.join("blocks"));

    let mut results = Vec::new();
    for &backend in &p.backends {
        let mut printer = ProgressPrinter::new(backend.name());
        let summary = rebuild::rebuild(&dir, &ledger, backend, &mut |pr| printer.update(pr))
            .map_err(|e| format!("rebuilding with {}: {e}", backend.name()))?;
        let views_bytes = dir_bytes(&rebuild::views_dir(&dir, backend));
        let store = rebuild::open_views(&dir, backend).map_err(|e| e.to_string())?;
        let views = Views::new(store.as_ref());
        let mut latencies = Vec::with_capacity(p.queries);
        let mut rows = 0usize;
        for i in 0..p.queries {
            let patient = &patients[(i * 7919) % patients.len()];
            let t = Instant::now();
            let page = views
                .timeline(
                    Owner::Patient(patient),
                    &TimelineFilter::default(),
                    None,
                    PAGE,
                )
                .map_err(|e| e.to_string())?;
            latencies.push(t.elapsed().as_secs_f64() * 1e6);
            rows += page.items.len();
        }
        latencies.sort_by(f64::total_cmp);
        let pct = |q: f64| {
            latencies
                .get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1)))
                .copied()
                .unwrap_or(0.0)
        };
        results.push(json!({
            "backend": backend.name(),
            "events": summary.events,
            "rejected": summary.rejected,
            "blocks": summary.blocks,
            "seconds": summary.seconds,
            "events_per_sec": summary.events_per_sec,
            "views_bytes": views_bytes,
            "timeline_queries": p.queries,
            "timeline_rows_per_page": if p.queries == 0 { 0.0 } else { rows as f64 / p.queries as f64 },
            "timeline_p50_us": pct(0.50),
            "timeline_p99_us": pct(0.99),
        }));
    }
    let ratio = match (results.first(), results.get(1)) {
        (Some(a), Some(b)) => json!({
            "rebuild_events_per_sec": format!("{} / {}", a["backend"].as_str().unwrap_or(""), b["backend"].as_str().unwrap_or("")),
            "value": a["events_per_sec"].as_f64().unwrap_or(0.0) / b["events_per_sec"].as_f64().unwrap_or(1.0).max(1e-9),
        }),
        _ => serde_json::Value::Null,
    };
    Ok(json!({
        "events": p.events,
        "seed": p.seed,
        "generate_seconds": generate_secs,
        "ledger_bytes": ledger_bytes,
        "backends": results,
        "ratio": ratio,
    }))
}

/// Writes `events` fixture events into a new ledger in `dir`, 500 per block; returns the
/// ledger, the seconds it took and a sample of patient ids.
fn generate(dir: &Path, events: u64, seed: u64) -> Result<(Ledger, f64, Vec<String>), String> {
    let started = Instant::now();
    let (ledger, _) = Ledger::open(dir, LedgerOptions::default())
        .map_err(|e| format!("creating a ledger in {}: {e}", dir.display()))?;
    let mut fixtures = Fixtures::new(FixtureConfig {
        seed,
        ..FixtureConfig::default()
    });
    let mut patients = Vec::new();
    let mut left = events;
    while left > 0 {
        let n = left.min(TXS_PER_BLOCK as u64) as usize;
        let mut txs = Vec::with_capacity(n);
        let mut hashes = Vec::with_capacity(n);
        for env in fixtures.by_ref().take(n) {
            if let Event::RecordCreated(e) = &env.event {
                if patients.len() < 10_000 && txs.len() % 10 == 0 {
                    patients.push(e.patient_id.clone());
                }
            }
            let bytes = env.encode();
            hashes.push(tx_hash(&bytes));
            txs.push(bytes);
        }
        let tip = ledger.tip();
        let ts = tip.tip_timestamp_ms + 1;
        let block = Block::new(tip.height, tip.tip_hash, ts, CutReason::Count, txs, &hashes);
        ledger.append(&block).map_err(|e| e.to_string())?;
        left -= n as u64;
    }
    if patients.is_empty() {
        patients.push("p-0000000".into());
    }
    Ok((ledger, started.elapsed().as_secs_f64(), patients))
}

/// Total bytes of the files under `dir`.
fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}
