//! What a run reports per (peer, workload), ready for a table next to medledger's.

use hdrhistogram::Histogram;

/// Latency percentiles in microseconds.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct Latency {
    /// Number of timed operations.
    pub count: u64,
    /// Median.
    pub p50_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// 99.9th percentile.
    pub p999_us: u64,
    /// Largest.
    pub max_us: u64,
    /// Arithmetic mean.
    pub mean_us: f64,
}

impl Latency {
    /// Summarises a histogram of microseconds.
    pub fn from_histogram(h: &Histogram<u64>) -> Self {
        Latency {
            count: h.len(),
            p50_us: h.value_at_quantile(0.50),
            p99_us: h.value_at_quantile(0.99),
            p999_us: h.value_at_quantile(0.999),
            max_us: h.max(),
            mean_us: h.mean(),
        }
    }
}

/// A latency histogram from 1 µs to 10 min with 3 significant digits.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("static bounds are valid")
}

/// One (peer, workload) result. Every field says its unit; `None` means "does not apply"
/// (e.g. no separate server process for SQLite), never "zero".
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Figures {
    /// `postgresql`, `sqlite`, `redis`, `nats-jetstream`.
    pub peer: String,
    /// `ingest`, `timeline`, `mixed_read`, `mixed_write`, `reindex`.
    pub workload: String,
    /// The durability setting as queried from the running peer.
    pub durability: String,
    /// True when the peer acknowledged writes only after they reached disk (fsync).
    /// A `false` row must not be compared with durable figures without saying so.
    pub acknowledged_after_disk: bool,
    /// Concurrent clients (threads, one connection each).
    pub clients: usize,
    /// Records per write call (transaction, pipeline or ack window).
    pub batch: usize,
    /// Body bytes per record.
    pub body_bytes: usize,
    /// Operations timed (write calls, page reads, or 1 for a rebuild).
    pub operations: u64,
    /// Records written or read.
    pub records: u64,
    /// Wall-clock seconds of the timed part.
    pub seconds: f64,
    /// `operations / seconds`.
    pub operations_per_second: f64,
    /// `records / seconds`.
    pub records_per_second: f64,
    /// Per-operation latency (one write call, one page, or the rebuild).
    pub latency: Latency,
    /// CPU seconds of the server's process tree during the timed part.
    pub server_cpu_seconds: Option<f64>,
    /// CPU seconds of the load generator (this process) during the timed part; for an
    /// embedded peer (SQLite) this is all the work.
    pub client_cpu_seconds: f64,
    /// Peak memory of the server during the timed part, bytes: the larger of the root
    /// process's `VmHWM` (reset before the part) and the peak of Σ Pss over its process
    /// tree sampled every 100 ms. For SQLite: this process's `VmHWM`, which includes the
    /// generated records held in memory.
    pub server_peak_memory_bytes: Option<u64>,
    /// Bytes allocated under the peer's data directory after the part.
    pub bytes_on_disk: Option<u64>,
    /// Where those bytes are, when the peer can tell (PostgreSQL: table, indexes, WAL).
    pub bytes_on_disk_breakdown: std::collections::BTreeMap<String, u64>,
    /// `bytes_on_disk` divided by the records stored so far.
    pub bytes_on_disk_per_record: Option<f64>,
    /// How the peer did the workload (chain serialisation, pipelining, what "timeline" is).
    pub notes: Vec<String>,
}

/// The machine a run happened on, measured at its start.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Machine {
    /// Logical CPUs available to this process.
    pub cores: usize,
    /// `model name` from /proc/cpuinfo.
    pub cpu_model: String,
    /// MemTotal, bytes.
    pub memory_bytes: u64,
    /// `uname -r` equivalent (/proc/sys/kernel/osrelease).
    pub kernel: String,
    /// Where the peers' data directories live.
    pub data_dir: String,
    /// 4 KiB appends each followed by fdatasync, per second, in `data_dir`.
    pub fdatasync_per_second: f64,
    /// How many appends were timed for that rate.
    pub fdatasync_samples: u32,
    /// /proc/loadavg's 1-minute figure at the start: above the core count means other
    /// work shared the machine and the figures are lower than on an idle one.
    pub load_average_1m: f64,
    /// The load generator and the servers share these cores.
    pub note: String,
}
