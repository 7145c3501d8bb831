//! `medledger payloads reconcile --data-dir D`: removes payloads no record names.
//!
//! Opens the ledger first: its index lock is held by a running server, so this refuses
//! to run beside one (a submission in flight there has a stored payload whose record is
//! not yet committed, which would look orphaned). Then it opens the payload store as
//! `serve` does, reads the ledger, unpins every root and destroys every key no record
//! version names, and prints one JSON object with the counts.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::json;

use medledger_payload::{PayloadConfig, Payloads};
use medledger_storage::{Ledger, LedgerOptions};

use crate::reconcile::{on_own_runtime, reconcile_payloads};

/// Where the payload store lives and how it replicates (as `serve` is given them).
#[derive(Clone, Debug)]
pub struct ReconcileParams {
    pub data_dir: PathBuf,
    /// The master key file (none: `<data_dir>/payloads/master.key`).
    pub master_key: Option<PathBuf>,
    /// The Kubo node the server replicates to: unpins are queued for it in the outbox.
    pub ipfs_api: Option<String>,
}

/// Runs the reconcile; prints its JSON and returns 0, or prints why not and returns 2.
pub fn run_reconcile(params: &ReconcileParams, out: &mut dyn Write) -> i32 {
    match reconcile(params) {
        Ok(report) => {
            let _ = writeln!(out, "{report}");
            0
        }
        Err(message) => {
            eprintln!("medledger: {message}");
            2
        }
    }
}

fn reconcile(p: &ReconcileParams) -> Result<serde_json::Value, String> {
    let blocks = p.data_dir.join("blocks");
    if !blocks.is_dir() {
        // Opening would create an empty ledger; there is nothing to reconcile with.
        return Err(format!("no ledger in {}", p.data_dir.display()));
    }
    let (ledger, _) = Ledger::open(&p.data_dir, LedgerOptions::default()).map_err(|e| {
        format!(
            "cannot open the ledger in {} (is a server running on it? stop it first): {e}",
            p.data_dir.display()
        )
    })?;
    let payload_dir = p.data_dir.join("payloads");
    let report = open_payloads(&payload_dir, p).and_then(|(payloads, runtime)| {
        let report = reconcile_payloads(&ledger, &payloads)
            .map_err(|e| e.to_string())
            .and_then(|report| {
                // The orphans' blocks, and those of uploads a crash cut short.
                let collected = on_own_runtime(|runtime| runtime.block_on(payloads.gc()))
                    .map_err(|e| format!("starting a runtime: {e}"))?
                    .map_err(|e| format!("collecting garbage: {e}"))?;
                // Reconciled, and nothing else holds the store: the next `serve` at this
                // height starts without a reconcile.
                payloads
                    .mark_clean_stop(ledger.tip().height)
                    .map_err(|e| e.to_string())?;
                Ok((report, collected))
            });
        drop(payloads);
        if let Some(runtime) = runtime {
            runtime.shutdown_background();
        }
        report
    });
    let height = ledger.tip().height;
    let closed = ledger.close().map_err(|e| e.to_string());
    let (report, collected) = report?;
    closed?;
    Ok(json!({
        "ledger_height": height,
        "pinned_roots": report.pinned_roots,
        "live_keys": report.live_keys,
        "orphan_roots_unpinned": report.orphan_roots_unpinned,
        "orphan_keys_destroyed": report.orphan_keys_destroyed,
        "blocks_removed": collected.blocks_removed,
        "bytes_removed": collected.bytes_removed,
    }))
}

/// The store as `serve` opens it; with Kubo on a runtime of its own (its replication task
/// needs one; what it has not copied stays queued in the durable outbox).
fn open_payloads(
    dir: &Path,
    p: &ReconcileParams,
) -> Result<(Payloads, Option<tokio::runtime::Runtime>), String> {
    let mut config = PayloadConfig::new(dir);
    config.master_key_path = p.master_key.clone();
    config.kubo = p.ipfs_api.clone();
    let opened =
        |config| Payloads::open(config).map_err(|e| format!("opening the payload store: {e}"));
    match &p.ipfs_api {
        None => Ok((opened(config)?, None)),
        Some(_) => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .map_err(|e| format!("starting a runtime: {e}"))?;
            let payloads = {
                let _guard = runtime.enter();
                opened(config)?
            };
            Ok((payloads, Some(runtime)))
        }
    }
}
