//! The machine header: cores, memory and the data disk's small-fsync rate.

use std::fs;
use std::io::Write;
use std::path::Path;
use std::time::Instant;

use crate::error::{PeerError, Result};
use crate::figures::Machine;

/// Appends timed by [`measure_machine`].
pub const FSYNC_SAMPLES: u32 = 500;

/// Describes this machine and times [`FSYNC_SAMPLES`] × (append 4 KiB + fdatasync) in a
/// temp file under `data_dir`: the rate any one-fsync-per-write store is bounded by.
pub fn measure_machine(data_dir: &Path) -> Result<Machine> {
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu_model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    let meminfo = fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let memory_bytes = meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kib| kib.parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024);
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let load_average_1m = fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok())
        .unwrap_or(f64::NAN);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    Ok(Machine {
        cores,
        cpu_model,
        memory_bytes,
        kernel,
        data_dir: data_dir.display().to_string(),
        fdatasync_per_second: fdatasync_rate(data_dir)?,
        fdatasync_samples: FSYNC_SAMPLES,
        load_average_1m,
        note: "the load generator and every server run on the same cores".into(),
    })
}

fn fdatasync_rate(dir: &Path) -> Result<f64> {
    let file = tempfile::tempfile_in(dir).map_err(|e| PeerError::io_path("tempfile in", dir, e))?;
    let mut file = std::io::BufWriter::with_capacity(0, file);
    let block = [0x5au8; 4096];
    let start = Instant::now();
    for _ in 0..FSYNC_SAMPLES {
        file.write_all(&block)
            .map_err(|e| PeerError::io("fsync probe write", e))?;
        file.get_ref()
            .sync_data()
            .map_err(|e| PeerError::io("fsync probe fdatasync", e))?;
    }
    Ok(f64::from(FSYNC_SAMPLES) / start.elapsed().as_secs_f64())
}
