//! `medledger bench rebuild`: generate a ledger of realistic events (the seeded fixture
//! generator, plus 10,000 records of one patient, `p-bench-10k`, spread through it),
//! rebuild the views from it with each backend (peak RSS measured per backend), then time
//! pages of 50 of that patient's timeline (the first page, and pages at random cursors)
//! and first pages of typical patients. Prints one JSON object, backends side by side.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde_json::json;

use crate::fixtures::{FixtureConfig, Fixtures};
use medledger_chaincode::{tx_hash, Envelope, Event, RecordCreated, Timestamp, TxId};
use medledger_storage::{Block, CutReason, Ledger, LedgerOptions};
use medledger_views::query::{Owner, TimelineFilter, Views};
use medledger_views::Backend;

use crate::cli::rebuild::ProgressPrinter;
use medledger_views::rebuild;

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
/// The patient with many records, and how many.
const BIG_PATIENT: &str = "p-bench-10k";
const BIG_PATIENT_RECORDS: u64 = 10_000;

/// The `i`th record of [`BIG_PATIENT`].
fn big_patient_record(i: u64) -> Envelope {
    let at = Timestamp(1_767_225_600_000 + i as i64 * 60_000);
    let tx =
        uuid::Uuid::from_u64_pair(0x0190_0000_0000_7000 | (i << 16), 0x8000_0000_0000_0000 | i);
    Envelope {
        tx_id: TxId(*tx.as_bytes()),
        submitter: "dr-0000-000".into(),
        submitted_at: at,
        event: Event::RecordCreated(RecordCreated {
            record_id: format!("r-bench10k-{i:05}"),
            patient_id: BIG_PATIENT.into(),
            author_id: "dr-0000-000".into(),
            hospital_id: "h-0000".into(),
            record_type: ["lab_result", "clinical_note", "vital_signs"][(i % 3) as usize].into(),
            created_at: at,
            version: 1,
            metadata: format!("{{\"title\":\"observation {i}\"}}").into(),
            payload: None,
        }),
    }
}

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
        reset_peak_rss();
        let summary = rebuild::rebuild(&dir, &ledger, backend, &mut |pr| printer.update(pr))
            .map_err(|e| format!("rebuilding with {}: {e}", backend.name()))?;
        let peak_rss = peak_rss_bytes();
        let views_bytes = dir_bytes(&rebuild::views_dir(&dir, backend));
        let store = rebuild::open_views(&dir, backend).map_err(|e| e.to_string())?;
        let views = Views::new(store.as_ref());
        let all = TimelineFilter::default();
        let big = Owner::Patient(BIG_PATIENT);
        // Every page's cursor of the big patient's timeline.
        let mut cursors: Vec<Option<String>> = vec![None];
        let mut big_rows = 0usize;
        loop {
            let page = views
                .timeline(big, &all, cursors.last().unwrap().as_deref(), PAGE)
                .map_err(|e| e.to_string())?;
            big_rows += page.items.len();
            match page.next_cursor {
                Some(c) => cursors.push(Some(c)),
                None => break,
            }
        }
        let mut first = Vec::with_capacity(p.queries);
        let mut random = Vec::with_capacity(p.queries);
        let mut typical = Vec::with_capacity(p.queries);
        for i in 0..p.queries {
            let t = Instant::now();
            let page = views
                .timeline(big, &all, None, PAGE)
                .map_err(|e| e.to_string())?;
            first.push(t.elapsed().as_secs_f64() * 1e6);
            std::hint::black_box(page);
            let cursor = &cursors[(i * 7919) % cursors.len()];
            let t = Instant::now();
            let page = views
                .timeline(big, &all, cursor.as_deref(), PAGE)
                .map_err(|e| e.to_string())?;
            random.push(t.elapsed().as_secs_f64() * 1e6);
            std::hint::black_box(page);
            let patient = &patients[(i * 7919) % patients.len()];
            let t = Instant::now();
            let page = views
                .timeline(Owner::Patient(patient), &all, None, PAGE)
                .map_err(|e| e.to_string())?;
            typical.push(t.elapsed().as_secs_f64() * 1e6);
            std::hint::black_box(page);
        }
        let pct = |v: &mut Vec<f64>, q: f64| {
            v.sort_by(f64::total_cmp);
            v.get(((v.len() as f64 * q) as usize).min(v.len().saturating_sub(1)))
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
            "peak_rss_bytes": peak_rss,
            "views_bytes": views_bytes,
            "timeline_queries": p.queries,
            "big_patient_records": big_rows,
            "big_first_page_p50_us": pct(&mut first, 0.50),
            "big_first_page_p99_us": pct(&mut first, 0.99),
            "big_random_page_p50_us": pct(&mut random, 0.50),
            "big_random_page_p99_us": pct(&mut random, 0.99),
            "typical_patient_first_page_p50_us": pct(&mut typical, 0.50),
            "typical_patient_first_page_p99_us": pct(&mut typical, 0.99),
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
    // One record of the big patient every `every` events (or half of a small run).
    let big = BIG_PATIENT_RECORDS.min(events / 2).max(1);
    let every = (events / big).max(1);
    let (mut made, mut big_made) = (0u64, 0u64);
    let mut stream = std::iter::from_fn(|| {
        made += 1;
        if made % every == 0 && big_made < big {
            big_made += 1;
            Some(big_patient_record(big_made))
        } else {
            fixtures.next()
        }
    });
    let mut left = events;
    while left > 0 {
        let n = left.min(TXS_PER_BLOCK as u64) as usize;
        let mut txs = Vec::with_capacity(n);
        let mut hashes = Vec::with_capacity(n);
        for env in stream.by_ref().take(n) {
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

/// Resets the kernel's peak-RSS mark of this process (Linux: `5` to clear_refs).
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// The peak resident set since the last reset (Linux `VmHWM`), or 0 if unknown.
fn peak_rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
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
