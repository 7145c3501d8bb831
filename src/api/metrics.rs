//! `/metrics` in the Prometheus text format: request latency per route, submissions,
//! blocks by cut reason, queue depth, in-flight blocks, projector lag.

use std::collections::HashMap;
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
        "# HELP {name} Time to make one block durable: write, fdatasync and index (in a cluster: until a majority holds it and it is applied here)."
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

/// The cluster's gauges and counters; one node on its own is a cluster of one that leads.
fn render_cluster(out: &mut String, cluster: Option<&crate::cluster::Cluster>) {
    let (g, stats) = match cluster {
        Some(c) => (c.gauges(), Some(&c.stats)),
        None => (
            crate::cluster::ClusterGauges {
                nodes: 1,
                is_leader: true,
                ..Default::default()
            },
            None,
        ),
    };
    let count = |f: fn(&crate::cluster::ClusterStats) -> &AtomicU64| {
        stats.map_or(0, |s| f(s).load(Ordering::Relaxed))
    };
    metric(
        out,
        "medledger_cluster_nodes",
        "gauge",
        "Voters and learners in the cluster's membership.",
        g.nodes,
    );
    metric(
        out,
        "medledger_cluster_is_leader",
        "gauge",
        "1 on the node that leads (takes writes).",
        u8::from(g.is_leader),
    );
    metric(
        out,
        "medledger_cluster_term",
        "gauge",
        "The Raft term this node is in.",
        g.term,
    );
    metric(
        out,
        "medledger_cluster_leader_changes_total",
        "counter",
        "Times this node saw a new leader.",
        count(|s| &s.leader_changes),
    );
    metric(
        out,
        "medledger_cluster_snapshots_built_total",
        "counter",
        "Snapshots built here (the Raft log is purged behind them).",
        count(|s| &s.snapshots_built),
    );
    metric(
        out,
        "medledger_cluster_snapshots_installed_total",
        "counter",
        "Snapshots installed here (blocks fetched from another node's ledger).",
        count(|s| &s.snapshots_installed),
    );
    metric(
        out,
        "medledger_cluster_payload_copies_received_total",
        "counter",
        "Payload copies the leader sent here and this node now holds.",
        count(|s| &s.payload_copies_received),
    );
    metric(
        out,
        "medledger_cluster_payloads_fetched_total",
        "counter",
        "Payloads this node lacked and fetched from another node.",
        count(|s| &s.payloads_fetched),
    );
    let name = "medledger_cluster_seconds_since_quorum_ack";
    let _ = writeln!(
        out,
        "# HELP {name} On the leader: seconds since a majority last acknowledged it."
    );
    let _ = writeln!(out, "# TYPE {name} gauge");
    if let Some(s) = g.seconds_since_quorum_ack {
        let _ = writeln!(out, "{name} {s}");
    }
    let name = "medledger_cluster_replication_lag_entries";
    let _ = writeln!(
        out,
        "# HELP {name} On the leader: entries each follower lacks of the leader's log."
    );
    let _ = writeln!(out, "# TYPE {name} gauge");
    for (node, lag) in g.lag_entries {
        let _ = writeln!(out, "{name}{{node=\"{node}\"}} {lag}");
    }
}

/// The histograms of one route pattern, one per (method, status).
type RouteSeries = Vec<(actix_web::http::Method, u16, Histogram)>;

/// Request metrics: per route pattern, one histogram per (method, status).
#[derive(Default)]
pub struct Metrics {
    /// Looked up by `&str` and scanned, so a request allocates nothing here once its
    /// series exists.
    requests: Mutex<HashMap<String, RouteSeries>>,
    pub submissions_rejected: AtomicU64,
    /// Reads of clinical content put on the ledger.
    pub audit: super::audit::AuditStats,
}

impl Metrics {
    /// Records one request.
    pub fn observe(
        &self,
        method: &actix_web::http::Method,
        route: &str,
        status: u16,
        seconds: f64,
    ) {
        let mut map = self.requests.lock().unwrap_or_else(|p| p.into_inner());
        if !map.contains_key(route) {
            map.insert(route.to_owned(), Vec::new());
        }
        let series = map.get_mut(route).expect("inserted above");
        let at = match series
            .iter()
            .position(|(m, st, _)| m == method && *st == status)
        {
            Some(at) => at,
            None => {
                series.push((method.clone(), status, Histogram::default()));
                series.len() - 1
            }
        };
        let h = &mut series[at].2;
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
        let mut series: Vec<_> = map
            .iter()
            .flat_map(|(route, s)| s.iter().map(move |(m, st, h)| (m.as_str(), route, *st, h)))
            .collect();
        series.sort_by(|a, b| (a.1, a.0, a.2).cmp(&(b.1, b.0, b.2)));
        for (method, route, status, h) in series {
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

/// The process's resident set (`VmRSS` of /proc/self/status).
fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// What the two allocators hold, by kind: mimalloc (the binary's allocator, behind Rust's
/// allocations) the memory it has committed; glibc's malloc (behind RocksDB's C++) what
/// is in use and what it keeps freed without giving it back. Their sum against RSS says
/// where memory grows (docs/RELIABILITY.md "Soak").
fn heap_bytes() -> Vec<(&'static str, u64)> {
    let mut rows = Vec::with_capacity(3);
    let mut committed = 0usize;
    // SAFETY: `committed` is a valid `usize`; mimalloc skips every null out-pointer.
    unsafe {
        libmimalloc_sys::mi_process_info(
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            &mut committed,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        );
    }
    rows.push(("mimalloc_committed", committed as u64));
    if let Some((in_use, free_held)) = malloc_bytes() {
        rows.push(("malloc_in_use", in_use));
        rows.push(("malloc_free_held", free_held));
    }
    rows
}

/// glibc malloc's bytes handed out and not had back (its heaps and its own mmaps), and
/// the freed bytes it keeps; `None` off glibc.
pub fn malloc_bytes() -> Option<(u64, u64)> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallinfo2 takes no arguments and returns a plain struct.
        let info = unsafe { libc::mallinfo2() };
        Some(((info.uordblks + info.hblkhd) as u64, info.fordblks as u64))
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    None
}

/// A gauge with a `kind` label, one line per kind (nothing for no kinds).
fn by_kind(out: &mut String, name: &str, help: &str, rows: Vec<(&'static str, u64)>) {
    if rows.is_empty() {
        return;
    }
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} gauge");
    for (kind, value) in rows {
        let _ = writeln!(out, "{name}{{kind=\"{kind}\"}} {value}");
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
        "medledger_read_events_total",
        "counter",
        "Access events (RecordsRead) submitted for reads of clinical content.",
        load(&state.metrics.audit.events),
    );
    metric(
        &mut out,
        "medledger_records_read_total",
        "counter",
        "Records shown by reads of clinical content, as the access events name them.",
        load(&state.metrics.audit.records),
    );
    metric(
        &mut out,
        "medledger_break_glass_reads_total",
        "counter",
        "Reads by clinicians without a grant, under break-glass.",
        load(&state.metrics.audit.break_glass),
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
    by_kind(
        &mut out,
        "medledger_views_memory_bytes",
        "Bytes the views' store holds in memory, by what holds them (bounded: the block cache, which holds the files' index and filter blocks too, and the memtables).",
        state.views.memory(),
    );
    by_kind(
        &mut out,
        "medledger_ledger_index_memory_bytes",
        "Bytes the ledger's index (RocksDB) holds in memory, by what holds them.",
        state.ledger.index_memory(),
    );
    by_kind(
        &mut out,
        "medledger_search_memory_bytes",
        "Bytes the search index (RocksDB) holds in memory, by what holds them.",
        state.search.memory(),
    );
    by_kind(
        &mut out,
        "medledger_heap_bytes",
        "Bytes the allocators hold: mimalloc's committed memory (Rust), glibc malloc's in use and kept free (RocksDB).",
        heap_bytes(),
    );
    let (indexed, cached) = state.payloads.keys().in_memory();
    metric(
        &mut out,
        "medledger_keys_indexed",
        "gauge",
        "Key ids in the key log's in-memory index (one per payload and per record, erased ones too).",
        indexed,
    );
    metric(
        &mut out,
        "medledger_keys_cached",
        "gauge",
        "Data keys cached unwrapped (bounded).",
        cached,
    );
    if let Some(rss) = resident_bytes() {
        metric(
            &mut out,
            "medledger_resident_bytes",
            "gauge",
            "The server's resident memory (RSS).",
            rss,
        );
    }
    if let Some(free) = state.disk.free_now() {
        metric(
            &mut out,
            "medledger_disk_free_bytes",
            "gauge",
            "Free bytes on the data dir's disk (writes answer 507 below the reserve).",
            free,
        );
    }
    metric(
        &mut out,
        "medledger_disk_reserve_bytes",
        "gauge",
        "Free space kept for the views' flushes and recovery (--disk-reserve-mib).",
        state.disk.reserve(),
    );
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
    metric(
        &mut out,
        "medledger_search_indexed_height",
        "gauge",
        "Blocks the full-text search index covers.",
        state.search.height(),
    );
    metric(
        &mut out,
        "medledger_search_index_failing",
        "gauge",
        "1 while the search indexer's passes fail (it retries, backing off).",
        u64::from(state.search.error().is_some()),
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
    render_cluster(&mut out, state.cluster.as_deref());
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

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::Method;

    #[test]
    fn one_series_per_route_method_and_status_with_cumulative_buckets() {
        let m = Metrics::default();
        m.observe(&Method::POST, "/v1/records", 201, 0.002);
        m.observe(&Method::POST, "/v1/records", 201, 0.2);
        m.observe(&Method::POST, "/v1/records", 400, 0.0001);
        m.observe(&Method::GET, "/v1/records/{id}", 200, 7.0);
        let mut out = String::new();
        m.render_requests(&mut out);
        let line = |labels: &str, suffix: &str| {
            let prefix = format!("medledger_http_request_duration_seconds{suffix}{{{labels}");
            out.lines()
                .find(|l| l.starts_with(&prefix))
                .unwrap_or_else(|| panic!("no {prefix} in\n{out}"))
                .rsplit(' ')
                .next()
                .unwrap()
                .to_owned()
        };
        let created = "method=\"POST\",route=\"/v1/records\",status=\"201\"";
        assert_eq!(line(created, "_count"), "2");
        assert_eq!(line(&format!("{created},le=\"0.0025\""), "_bucket"), "1");
        assert_eq!(line(&format!("{created},le=\"0.25\""), "_bucket"), "2");
        assert_eq!(line(&format!("{created},le=\"+Inf\""), "_bucket"), "2");
        let bad = "method=\"POST\",route=\"/v1/records\",status=\"400\"";
        assert_eq!(line(&format!("{bad},le=\"0.0005\""), "_bucket"), "1");
        // Slower than the last bucket: only +Inf counts it.
        let slow = "method=\"GET\",route=\"/v1/records/{id}\",status=\"200\"";
        assert_eq!(line(&format!("{slow},le=\"5\""), "_bucket"), "0");
        assert_eq!(line(&format!("{slow},le=\"+Inf\""), "_bucket"), "1");
        // Series come out sorted by route, then method and status.
        let order: Vec<_> = out
            .lines()
            .filter_map(|l| l.strip_prefix("medledger_http_request_duration_seconds_count{"))
            .map(|l| l.rsplit_once("} ").unwrap().0)
            .collect();
        assert_eq!(order, [created, bad, slow]);
    }
}
