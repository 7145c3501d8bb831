//! Server processes: finding binaries, starting on a free loopback port, stopping on drop,
//! and reading their CPU time and memory from `/proc`.

use std::collections::BTreeSet;
use std::fs;
use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::error::{PeerError, Result};

/// Linux reports `/proc/PID/stat` times in USER_HZ ticks, which is 100 on every Linux ABI
/// this runs on (it is fixed by the kernel ABI, not by CONFIG_HZ).
const TICKS_PER_SECOND: f64 = 100.0;

/// How long a server may take to accept connections.
pub const START_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a server may take to stop after SIGTERM/SIGINT before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// Finds `name` in `PATH` or the given extra directories.
pub fn find_binary(name: &str, extra_dirs: &[PathBuf]) -> Result<PathBuf> {
    let path_dirs = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    let sbin = [PathBuf::from("/usr/sbin"), PathBuf::from("/usr/bin")];
    extra_dirs
        .iter()
        .chain(path_dirs.iter())
        .chain(sbin.iter())
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| PeerError::MissingBinary {
            binary: name.to_string(),
        })
}

/// A port on 127.0.0.1 that was free a moment ago. Another process may take it before the
/// server binds; the server then fails to start and says so.
pub fn free_port() -> Result<u16> {
    let listener =
        TcpListener::bind("127.0.0.1:0").map_err(|e| PeerError::io("bind 127.0.0.1:0", e))?;
    let port = listener
        .local_addr()
        .map_err(|e| PeerError::io("local_addr", e))?
        .port();
    Ok(port)
}

/// A server child process that is stopped (signal, then SIGKILL after a timeout) when this
/// guard is dropped, also during a panic's unwinding.
pub struct ServerProcess {
    name: &'static str,
    child: Child,
    log_path: PathBuf,
    stop_signal: i32,
}

impl ServerProcess {
    /// Spawns `command` with stdout and stderr appended to `log_path`. `stop_signal` is the
    /// server's graceful-stop signal (SIGINT is PostgreSQL's "fast shutdown").
    pub fn spawn(
        name: &'static str,
        mut command: Command,
        log_path: &Path,
        stop_signal: i32,
    ) -> Result<Self> {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log_path)
            .map_err(|e| PeerError::io_path("open log", log_path, e))?;
        let log2 = log
            .try_clone()
            .map_err(|e| PeerError::io_path("clone log", log_path, e))?;
        command
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log2));
        let child = command
            .spawn()
            .map_err(|e| PeerError::io(format!("spawn {name}"), e))?;
        Ok(ServerProcess {
            name,
            child,
            log_path: log_path.to_path_buf(),
            stop_signal,
        })
    }

    /// The server's process id (the root of its process tree).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Polls `ready` every 50 ms until it succeeds, the process exits or [`START_TIMEOUT`]
    /// passes; the error carries the log's tail.
    pub fn wait_ready(&mut self, mut ready: impl FnMut() -> bool) -> Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if ready() {
                return Ok(());
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(self.start_error(format!("exited with {status}")));
            }
            if Instant::now() > deadline {
                return Err(self.start_error(format!("not ready after {START_TIMEOUT:?}")));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// An error naming this server, with the tail of its log.
    pub fn start_error(&self, reason: String) -> PeerError {
        PeerError::Start {
            peer: self.name,
            reason,
            log: log_tail(&self.log_path),
        }
    }

    fn stop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        if let Ok(pid) = i32::try_from(self.child.id()) {
            // SAFETY: kill(2) on our own child's pid; no memory is touched.
            unsafe {
                libc::kill(pid, self.stop_signal);
            }
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The last 30 lines of a log file (or why it could not be read).
pub fn log_tail(path: &Path) -> String {
    match fs::read_to_string(path) {
        Ok(text) => {
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(30)..].join("\n")
        }
        Err(e) => format!("(no log at {}: {e})", path.display()),
    }
}

/// True once something accepts TCP connections on 127.0.0.1:`port`.
pub fn port_open(port: u16) -> bool {
    TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_millis(200),
    )
    .is_ok()
}

/// Bytes allocated on disk under `dir` (like `du -s --block-size=1`): st_blocks × 512.
pub fn disk_usage(dir: &Path) -> Result<u64> {
    let mut total = 0u64;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries = fs::read_dir(&d).map_err(|e| PeerError::io_path("read_dir", &d, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| PeerError::io_path("read_dir entry", &d, e))?;
            // A file removed while we walk (WAL recycling) is simply not counted.
            let Ok(meta) = entry.path().symlink_metadata() else {
                continue;
            };
            total += meta.blocks() * 512;
            if meta.is_dir() {
                stack.push(entry.path());
            }
        }
    }
    Ok(total)
}

/// Fields of `/proc/PID/stat` after the command name: (ppid, utime+stime, cutime+cstime)
/// in ticks.
fn stat_of(pid: u32) -> Option<(u32, u64, u64)> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain spaces: split after the last ')'.
    let rest = &text[text.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state); ppid is field 4, utime 14, stime 15, cutime 16, cstime 17.
    let num = |field: usize| fields.get(field - 3)?.parse::<u64>().ok();
    let ppid = u32::try_from(num(4)?).ok()?;
    Some((ppid, num(14)? + num(15)?, num(16)? + num(17)?))
}

/// `pid` and all its live descendants.
pub fn process_tree(pid: u32) -> Vec<u32> {
    let mut children: Vec<(u32, u32)> = Vec::new();
    if let Ok(entries) = fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(p) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            if let Some((ppid, _, _)) = stat_of(p) {
                children.push((ppid, p));
            }
        }
    }
    let mut tree = BTreeSet::from([pid]);
    loop {
        let before = tree.len();
        for &(ppid, p) in &children {
            if tree.contains(&ppid) {
                tree.insert(p);
            }
        }
        if tree.len() == before {
            break;
        }
    }
    tree.into_iter().collect()
}

/// CPU seconds (user + system) used so far by a server: its process tree's live processes,
/// plus the root's reaped children (PostgreSQL's backends of closed connections).
pub fn tree_cpu_seconds(pid: u32) -> f64 {
    let mut ticks = 0u64;
    for p in process_tree(pid) {
        if let Some((_, own, reaped)) = stat_of(p) {
            ticks += own;
            if p == pid {
                ticks += reaped;
            }
        }
    }
    ticks as f64 / TICKS_PER_SECOND
}

/// CPU seconds (user + system) of this process, all threads.
pub fn self_cpu_seconds() -> f64 {
    stat_of(std::process::id())
        .map(|(_, own, _)| own as f64 / TICKS_PER_SECOND)
        .unwrap_or(0.0)
}

/// A `/proc/PID/status` field in bytes (given in kB there).
fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let text = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = text.lines().find(|l| l.starts_with(field))?;
    let kib = line.split_whitespace().nth(1)?.parse::<u64>().ok()?;
    Some(kib * 1024)
}

/// Peak resident set of one process since start or [`reset_peak_rss`] (`VmHWM`).
pub fn peak_rss(pid: u32) -> Option<u64> {
    status_kib(pid, "VmHWM:")
}

/// Resets `VmHWM` (writes 5 to `/proc/PID/clear_refs`); needs to own the process or root.
/// Failure is not an error: the peak then counts from the process's start, and is reported
/// as such by the caller only through the figure being larger.
pub fn reset_peak_rss(pid: u32) {
    let _ = fs::write(format!("/proc/{pid}/clear_refs"), "5");
}

/// Proportional set size of a process (`Pss` in `smaps_rollup`): shared pages (PostgreSQL's
/// shared buffers) divided among the processes that map them, so a sum over a tree counts
/// each page once.
fn pss(pid: u32) -> Option<u64> {
    let mut text = String::new();
    fs::File::open(format!("/proc/{pid}/smaps_rollup"))
        .ok()?
        .read_to_string(&mut text)
        .ok()?;
    let line = text.lines().find(|l| l.starts_with("Pss:"))?;
    Some(line.split_whitespace().nth(1)?.parse::<u64>().ok()? * 1024)
}

/// Samples Σ Pss over a server's process tree every 100 ms and keeps the maximum: the peak
/// memory of a multi-process server (PostgreSQL), where one process's `VmHWM` says little.
pub struct MemorySampler {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl MemorySampler {
    /// Starts sampling `pid`'s tree.
    pub fn start(pid: u32) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicU64::new(0));
        let (s, p) = (stop.clone(), peak.clone());
        let thread = std::thread::spawn(move || {
            // Bounded: one sample per 100 ms until stopped.
            while !s.load(Ordering::Relaxed) {
                let total: u64 = process_tree(pid).into_iter().filter_map(pss).sum();
                p.fetch_max(total, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        MemorySampler {
            stop,
            peak,
            thread: Some(thread),
        }
    }

    /// Stops sampling; the largest Σ Pss seen, bytes.
    pub fn finish(mut self) -> u64 {
        self.halt();
        self.peak.load(Ordering::Relaxed)
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for MemorySampler {
    fn drop(&mut self) {
        self.halt();
    }
}

/// The uid and gid of a system user, from `/etc/passwd`.
pub fn user_ids(name: &str) -> Option<(u32, u32)> {
    let passwd = fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        (f.first() == Some(&name))
            .then(|| Some((f.get(2)?.parse().ok()?, f.get(3)?.parse().ok()?)))?
    })
}

/// True when this process runs as root.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_binary_names_the_install_script() {
        let err = find_binary("no-such-server-7f3a", &[]).expect_err("not installed");
        let message = err.to_string();
        assert!(message.contains("scripts/install-peers.sh"), "{message}");
        assert!(message.contains("no-such-server-7f3a"), "{message}");
    }

    #[test]
    fn disk_usage_counts_allocated_bytes() {
        let dir = tempfile::tempdir().expect("temp dir");
        fs::write(dir.path().join("a"), vec![1u8; 10_000]).expect("write");
        let used = disk_usage(dir.path()).expect("du");
        assert!(used >= 10_000, "{used}");
    }
}
