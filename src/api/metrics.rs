//! `/metrics` in the Prometheus text format: request latency per route, submissions,
//! blocks by cut reason, queue depth, in-flight blocks, projector lag.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use actix_web::{web, HttpResponse};

use medledger_storage::CutReason;

use super::AppState;

/// Upper bounds (seconds) of the latency histogram buckets.
const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

/// `medledger_block_append_seconds`: write + fdatasync + index of each block.
fn render_append_histogram(out: &mut String, h: &crate::orderer::service::AppendHistogram) {
    use crate::orderer::service::APPEND_BUCKETS;
    let name = "medledger_block_append_seconds";
    let _ = writeln!(
        out,
        "# HELP {name} Time to append one block: write, fdatasync and index."
    );
    let _ = writeln!(out, "# TYPE {name} histogram");
    let mut cumulative = 0;
    for (i, b) in APPEND_BUCKETS.iter().enumerate() {
        cumulative += h.buckets[i].load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {cumulative}");
    }
    let count = h.count.load(Ordering::Relaxed);
    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
    let sum = h.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
    let _ = writeln!(out, "{name}_sum {sum}");
    let _ = writeln!(out, "{name}_count {count}");
}

/// Request metrics, keyed by (method, route pattern, status class).
#[derive(Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(String, String, u16), Histogram>>,
    pub submissions_rejected: AtomicU64,
}

impl Metrics {
    /// Records one request.
    pub fn observe(&self, method: &str, route: &str, status: u16, seconds: f64) {
        let mut map = self.requests.lock().unwrap_or_else(|p| p.into_inner());
        let h = map
            .entry((method.to_owned(), route.to_owned(), status))
            .or_default();
        for (i, b) in BUCKETS.iter().enumerate() {
            if seconds <= *b {
                h.counts[i] += 1;
            }
        }
        h.count += 1;
        h.sum += seconds;
    }

    fn render_requests(&self, out: &mut String) {
        let map = self.requests.lock().unwrap_or_else(|p| p.into_inner());
        let _ = writeln!(
            out,
            "# HELP medledger_http_request_duration_seconds HTTP request latency by route."
        );
        let _ = writeln!(
            out,
            "# TYPE medledger_http_request_duration_seconds histogram"
        );
        for ((method, route, status), h) in map.iter() {
            let labels = format!("method=\"{method}\",route=\"{route}\",status=\"{status}\"");
            for (i, b) in BUCKETS.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "medledger_http_request_duration_seconds_bucket{{{labels},le=\"{b}\"}} {}",
                    h.counts[i]
                );
            }
            let _ = writeln!(
                out,
                "medledger_http_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {}",
                h.count
            );
            let _ = writeln!(
                out,
                "medledger_http_request_duration_seconds_sum{{{labels}}} {}",
                h.sum
            );
            let _ = writeln!(
                out,
                "medledger_http_request_duration_seconds_count{{{labels}}} {}",
                h.count
            );
        }
    }
}

fn metric(out: &mut String, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    let _ = writeln!(out, "{name} {value}");
}

/// `GET /metrics`.
pub async fn render(state: web::Data<AppState>) -> HttpResponse {
    let mut out = String::with_capacity(8192);
    let stats = state.orderer.stats();
    let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
    metric(
        &mut out,
        "medledger_submissions_total",
        "counter",
        "Transactions accepted into the orderer's queue.",
        load(&stats.submitted),
    );
    metric(
        &mut out,
        "medledger_committed_total",
        "counter",
        "Transactions durable in a block.",
        load(&stats.committed),
    );
    metric(
        &mut out,
        "medledger_rejected_busy_total",
        "counter",
        "Submissions refused because the queue was full.",
        load(&stats.rejected_busy),
    );
    metric(
        &mut out,
        "medledger_failed_blocks_total",
        "counter",
        "Blocks whose write or fsync failed.",
        load(&stats.failed_blocks),
    );
    metric(
        &mut out,
        "medledger_block_bytes_total",
        "counter",
        "Bytes of blocks written.",
        load(&stats.block_bytes),
    );
    let _ = writeln!(
        out,
        "# HELP medledger_blocks_total Blocks committed, by cut reason."
    );
    let _ = writeln!(out, "# TYPE medledger_blocks_total counter");
    for reason in CutReason::ALL {
        let n = load(&stats.blocks_by_reason[reason.as_u8() as usize]);
        let _ = writeln!(
            out,
            "medledger_blocks_total{{reason=\"{}\"}} {n}",
            reason.as_str()
        );
    }
    metric(
        &mut out,
        "medledger_queue_depth",
        "gauge",
        "Submissions waiting to be cut.",
        state.orderer.queue_depth(),
    );
    metric(
        &mut out,
        "medledger_inflight_blocks",
        "gauge",
        "Blocks cut but not yet durable.",
        stats.inflight_blocks.load(Ordering::Relaxed),
    );
    metric(
        &mut out,
        "medledger_ledger_height",
        "gauge",
        "Blocks in the ledger.",
        state.ledger.tip().height,
    );
    metric(
        &mut out,
        "medledger_ledger_fsyncs_total",
        "counter",
        "fdatasync calls by the ledger.",
        state.ledger.fsyncs(),
    );
    let lag = state.projector.lag();
    metric(
        &mut out,
        "medledger_views_height",
        "gauge",
        "Blocks reflected in the views.",
        state.projector.applied_height(),
    );
    metric(
        &mut out,
        "medledger_projector_lag_blocks",
        "gauge",
        "Committed blocks not yet in the views.",
        lag.blocks,
    );
    metric(
        &mut out,
        "medledger_projector_lag_seconds",
        "gauge",
        "Seconds since the views were last caught up.",
        lag.seconds,
    );
    let (applied, rejected) = state.projector.counts();
    metric(
        &mut out,
        "medledger_projected_total",
        "counter",
        "Transactions applied to the views since start.",
        applied,
    );
    metric(
        &mut out,
        "medledger_projected_rejected_total",
        "counter",
        "Committed transactions the contract rejected since start.",
        rejected,
    );
    render_append_histogram(&mut out, &state.orderer.stats().append_seconds);
    let pinned = state.payloads.bytes_stored().await.unwrap_or(0);
    metric(
        &mut out,
        "medledger_payload_bytes_pinned",
        "gauge",
        "Bytes in the embedded payload store (encrypted blocks, before garbage collection).",
        pinned,
    );
    let replication = state.payloads.replication().unwrap_or_default();
    metric(
        &mut out,
        "medledger_ipfs_outbox_depth",
        "gauge",
        "Pins and unpins waiting to replicate to the IPFS node (0 without one).",
        replication.outbox_depth as u64,
    );
    metric(
        &mut out,
        "medledger_ipfs_replication_failures_total",
        "counter",
        "Failed replication attempts to the IPFS node since start.",
        replication.failures,
    );
    state.metrics.render_requests(&mut out);
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(out)
}
