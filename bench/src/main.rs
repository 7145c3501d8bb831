//! `medledger-bench`: medledger measured beside its peers in one process, with ratios.
//!
//! `medledger-bench ingest` measures, in one run on one machine:
//! - the disk itself: small-write `fdatasync` calls per second, and durable sequential
//!   MiB/s when each write of a block's size is followed by `fdatasync` (the ceiling any
//!   durable log on this disk can reach);
//! - a naive durable log: one `fdatasync` per event (what an ingest path without group
//!   commit gets);
//! - medledger's embedded durable ingest (library API) at each record size;
//!
//! and prints a Markdown table with medledger's figures as ratios of the peers'.
//!
//! `medledger-bench payloads` measures durable `put`s into the embedded payload store
//! (4 KiB payloads from 64 concurrent callers by default): payloads/s and fdatasync calls
//! per payload (group commit, issue 23), beside this disk's small-write fdatasync rate
//! (what one fsync per payload would allow).
//!
//! `medledger-bench keys` stores N records' content keys (issue 24) from 64 threads, then
//! rotates the master key over all of them, and prints the seconds each took.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use medledger::cli::bench_ingest::{self, IngestParams};
use medledger::cli::bench_payloads::{self, PayloadsBenchParams};
use medledger::orderer::CutterConfig;

#[derive(Parser)]
#[command(
    name = "medledger-bench",
    about = "medledger beside its peers, with ratios"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Durable ingest: disk ceilings, one-fsync-per-event log, medledger embedded.
    Ingest {
        /// Directory for the temporary data (on the disk being measured).
        #[arg(long, default_value = "target/bench-data")]
        dir: PathBuf,
        /// Events per medledger run.
        #[arg(long, default_value_t = 2_000_000)]
        events: u64,
        /// Record sizes to run, bytes.
        #[arg(long, value_delimiter = ',', default_value = "256,1024")]
        record_bytes: Vec<usize>,
        /// Concurrent submitters.
        #[arg(long, default_value_t = 4096)]
        submitters: usize,
        /// MaxMessageCount for the medledger runs.
        #[arg(long, default_value_t = 500)]
        max_message_count: u32,
        /// Seconds for each disk probe.
        #[arg(long, default_value_t = 3)]
        probe_seconds: u64,
    },
    /// Master key rotation: N records' keys stored, then all re-wrapped.
    Keys {
        /// Directory for the temporary data (on the disk being measured).
        #[arg(long, default_value = "target/bench-data")]
        dir: PathBuf,
        /// Keys to store and rotate.
        #[arg(long, default_value_t = 1_000_000)]
        keys: u64,
    },
    /// Durable payload `put`s into the embedded store: payloads/s, fsyncs per payload.
    Payloads {
        /// Directory for the temporary data (on the disk being measured).
        #[arg(long, default_value = "target/bench-data")]
        dir: PathBuf,
        /// Payloads to store.
        #[arg(long, default_value_t = 200_000)]
        payloads: u64,
        /// Plaintext bytes per payload.
        #[arg(long, default_value_t = 4096)]
        payload_bytes: usize,
        /// Concurrent callers.
        #[arg(long, default_value_t = 64)]
        callers: usize,
        /// Seconds for the disk probe.
        #[arg(long, default_value_t = 3)]
        probe_seconds: u64,
    },
}

/// Appends `chunk` and fdatasyncs, repeatedly, for `seconds`; returns (syncs/s, MiB/s).
fn probe_durable_appends(dir: &Path, chunk: usize, seconds: u64) -> std::io::Result<(f64, f64)> {
    let path = dir.join(format!("probe-{chunk}.bin"));
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(&path)?;
    let buf = vec![0xa5u8; chunk];
    let start = Instant::now();
    let mut syncs = 0u64;
    while start.elapsed() < Duration::from_secs(seconds) {
        file.write_all(&buf)?;
        file.sync_data()?;
        syncs += 1;
    }
    let secs = start.elapsed().as_secs_f64();
    drop(file);
    std::fs::remove_file(&path)?;
    Ok((
        syncs as f64 / secs,
        syncs as f64 * chunk as f64 / secs / (1024.0 * 1024.0),
    ))
}

fn main() {
    let result = match Cli::parse().command {
        Command::Ingest {
            dir,
            events,
            record_bytes,
            submitters,
            max_message_count,
            probe_seconds,
        } => run_ingest(
            &dir,
            events,
            &record_bytes,
            submitters,
            max_message_count,
            probe_seconds,
        ),
        Command::Payloads {
            dir,
            payloads,
            payload_bytes,
            callers,
            probe_seconds,
        } => run_payloads(&dir, payloads, payload_bytes, callers, probe_seconds),
        Command::Keys { dir, keys } => run_keys(&dir, keys),
    };
    if let Err(e) = result {
        eprintln!("medledger-bench: {e}");
        std::process::exit(2);
    }
}

fn run_payloads(
    dir: &Path,
    payloads: u64,
    payload_bytes: usize,
    callers: usize,
    probe_seconds: u64,
) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let scratch = tempfile::tempdir_in(dir).map_err(|e| e.to_string())?;
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!("# medledger-bench payloads\n");
    println!("machine: {cores} cores; data on {}\n", dir.display());
    // One fdatasync per payload could reach at most this many payloads/s.
    let (naive_per_sec, _) = probe_durable_appends(scratch.path(), payload_bytes, probe_seconds)
        .map_err(|e| e.to_string())?;
    let report = bench_payloads::run(&PayloadsBenchParams {
        data_dir: scratch.path().to_path_buf(),
        payloads,
        payload_bytes,
        callers,
    })?;
    println!("{report}\n");
    let per_sec = report["payloads_per_sec"].as_f64().unwrap_or(0.0);
    println!("| payload bytes | callers | payloads/s | MiB/s | fsyncs/payload | p50 / p99 ms | one-fsync-per-payload log, payloads/s | medledger ÷ that |");
    println!("|---|---|---|---|---|---|---|---|");
    println!(
        "| {payload_bytes} | {callers} | {per_sec:.0} | {:.1} | {:.3} | {:.2} / {:.2} | {naive_per_sec:.0} | {:.1}× |",
        report["mib_per_sec"].as_f64().unwrap_or(0.0),
        report["fsyncs_per_payload"].as_f64().unwrap_or(0.0),
        report["p50_ms"].as_f64().unwrap_or(0.0),
        report["p99_ms"].as_f64().unwrap_or(0.0),
        per_sec / naive_per_sec.max(1.0),
    );
    Ok(())
}

fn run_keys(dir: &Path, keys: u64) -> Result<(), String> {
    use medledger_payload::crypto::MasterKey;
    use medledger_payload::keystore::KeyStore;
    use std::sync::atomic::{AtomicU64, Ordering};
    std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let scratch = tempfile::tempdir_in(dir).map_err(|e| e.to_string())?;
    let master_path = scratch.path().join("master.key");
    let master = MasterKey::load_or_create(&master_path).map_err(|e| e.to_string())?;
    let store = KeyStore::open(&scratch.path().join("keys"), master).map_err(|e| e.to_string())?;
    let next = AtomicU64::new(0);
    let started = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..64 {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= keys {
                    return;
                }
                store
                    .record_key_blocking(&format!("r-{i}"))
                    .expect("storing a key");
            });
        }
    });
    let stored = started.elapsed().as_secs_f64();
    let key_fsyncs = store.fsyncs();
    let started = Instant::now();
    let rotation = store
        .rotate_master(&master_path)
        .map_err(|e| e.to_string())?;
    let rotated = started.elapsed().as_secs_f64();
    let log_bytes = std::fs::metadata(scratch.path().join("keys/keys.log"))
        .map(|m| m.len())
        .unwrap_or(0);
    // Opened again: the recovery's pass over the log, and what its index holds in memory
    // (malloc's bytes in use before and after, the first store dropped).
    drop(store);
    let master = MasterKey::load_or_create(&master_path).map_err(|e| e.to_string())?;
    let in_use_before = malloc_in_use();
    let started = Instant::now();
    let store = KeyStore::open(&scratch.path().join("keys"), master).map_err(|e| e.to_string())?;
    let reopened = started.elapsed().as_secs_f64();
    let index_bytes = malloc_in_use().saturating_sub(in_use_before);
    let lookups = keys.min(1_000_000);
    let started = Instant::now();
    for i in 0..lookups {
        let id = medledger_payload::keystore::record_key_id(&format!("r-{i}"));
        store.load(&id).map_err(|e| format!("key {i}: {e}"))?;
    }
    let looked_up = started.elapsed().as_secs_f64();
    println!(
        "{}",
        serde_json::json!({
            "keys": keys,
            "store_seconds": (stored * 1000.0).round() / 1000.0,
            "keys_stored_per_sec": (keys as f64 / stored).round(),
            "key_fsyncs": key_fsyncs,
            "rotate_seconds": (rotated * 1000.0).round() / 1000.0,
            "keys_rewrapped": rotation.keys_rewrapped,
            "keys_rewrapped_per_sec": (rotation.keys_rewrapped as f64 / rotated).round(),
            "key_log_mib": (log_bytes as f64 / 1048576.0 * 10.0).round() / 10.0,
            "reopen_seconds": (reopened * 1000.0).round() / 1000.0,
            "index_mib": (index_bytes as f64 / 1048576.0 * 10.0).round() / 10.0,
            "index_bytes_per_key": (index_bytes as f64 / keys as f64).round(),
            "loads_per_sec": (lookups as f64 / looked_up).round(),
        })
    );
    Ok(())
}

/// Bytes malloc has handed out and not had back (the bench runs on the system
/// allocator): what a structure built between two calls holds, freed memory malloc keeps
/// left out.
fn malloc_in_use() -> u64 {
    medledger::api::metrics::malloc_bytes().map_or(0, |(in_use, _)| in_use)
}

fn run_ingest(
    dir: &Path,
    events: u64,
    sizes: &[usize],
    submitters: usize,
    max_message_count: u32,
    probe_seconds: u64,
) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let scratch = tempfile::tempdir_in(dir).map_err(|e| e.to_string())?;
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!("# medledger-bench ingest\n");
    println!("machine: {cores} cores; data on {}\n", dir.display());
    let (small_syncs, _) =
        probe_durable_appends(scratch.path(), 4096, probe_seconds).map_err(|e| e.to_string())?;
    let mut rows = Vec::new();
    for &bytes in sizes {
        let block_bytes = bytes * max_message_count as usize;
        let (_, disk_mib) = probe_durable_appends(scratch.path(), block_bytes, probe_seconds)
            .map_err(|e| e.to_string())?;
        // A durable log without group commit: one fdatasync per event.
        let (naive_events, _) = probe_durable_appends(scratch.path(), bytes, probe_seconds)
            .map_err(|e| e.to_string())?;
        let params = IngestParams {
            data_dir: scratch.path().join(format!("ledger-{bytes}")),
            events,
            record_bytes: bytes,
            submitters,
            cutter: CutterConfig {
                max_message_count,
                ..CutterConfig::default()
            },
            inflight_blocks_max: 4,
        };
        let report = bench_ingest::run(&params)?;
        println!("{report}");
        let eps = report["events_per_sec"].as_f64().unwrap_or(0.0);
        let mib = report["mib_per_sec"].as_f64().unwrap_or(0.0);
        rows.push(format!(
            "| {bytes} | {eps:.0} | {mib:.1} | {:.1} | {:.0} | {} | {:.2} / {:.2} | {:.0} | {:.0}× | {disk_mib:.1} | {:.0}% |",
            report["mean_block_txs"].as_f64().unwrap_or(0.0),
            report["fsyncs"].as_f64().unwrap_or(0.0) / report["seconds"].as_f64().unwrap_or(1.0),
            report["fsyncs"],
            report["p50_ms"].as_f64().unwrap_or(0.0),
            report["p99_ms"].as_f64().unwrap_or(0.0),
            naive_events,
            eps / naive_events.max(1.0),
            100.0 * mib / disk_mib.max(0.001),
        ));
    }
    println!("\nsmall-write fdatasync rate of this disk: {small_syncs:.0}/s\n");
    println!("| record bytes | medledger events/s | MiB/s | txs/block | fsyncs/s | fsyncs | p50 / p99 ms | one-fsync-per-event log, events/s | medledger ÷ that | disk durable MiB/s at block size | medledger ÷ disk |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for r in rows {
        println!("{r}");
    }
    Ok(())
}
