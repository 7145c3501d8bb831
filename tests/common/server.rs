//! A real `medledger serve` child process on a free loopback port, and a minimal
//! HTTP/1.1 client for it (`Connection: close`, JSON bodies with a Content-Length).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub fn free_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// Starts `medledger serve` on `addr` over `dir` (no rate limit: tests send bursts) and
/// waits until `/healthz` answers.
pub fn start(dir: &Path, addr: SocketAddr) -> Child {
    start_with_env(dir, addr, &[])
}

/// [`start`] with these environment variables set for the server.
pub fn start_with_env(dir: &Path, addr: SocketAddr, env: &[(&str, &str)]) -> Child {
    let child = Command::new(env!("CARGO_BIN_EXE_medledger"))
        .args(["serve", "--data-dir"])
        .arg(dir)
        .args(["--listen", &addr.to_string(), "--workers", "2"])
        .args(["--rate-limit-per-sec", "0"])
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_healthy(child, addr)
}

/// [`start`] with `args` added to `serve`'s, `env` set, and its standard error written
/// to `log` (to look for panics and errors after the test).
pub fn start_logged(
    dir: &Path,
    addr: SocketAddr,
    args: &[&str],
    env: &[(&str, &std::ffi::OsStr)],
    log: &Path,
) -> Child {
    start_logged_with(
        Path::new(env!("CARGO_BIN_EXE_medledger")),
        dir,
        addr,
        args,
        env,
        log,
    )
}

/// [`start_logged`] of another server binary `bin` (a release build, say).
pub fn start_logged_with(
    bin: &Path,
    dir: &Path,
    addr: SocketAddr,
    args: &[&str],
    env: &[(&str, &std::ffi::OsStr)],
    log: &Path,
) -> Child {
    let child = Command::new(bin)
        .args(["serve", "--data-dir"])
        .arg(dir)
        .args(["--listen", &addr.to_string(), "--workers", "2"])
        .args(["--rate-limit-per-sec", "0"])
        .args(args)
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    wait_healthy(child, addr)
}

/// Waits (30 s at most) until the server `child` answers `/healthz` at `addr`; kills and
/// reaps it, and panics, if it does not.
pub fn wait_healthy(mut child: Child, addr: SocketAddr) -> Child {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok((200, _)) = request(addr, "GET", "/healthz", None, None) {
            return child;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("the server at {addr} did not come up");
}

/// Mints a token with `medledger token` over `dir`'s secret.
pub fn token(dir: &Path, role: &str, sub: &str, hospital: Option<&str>) -> String {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_medledger"));
    cmd.args(["token", "--data-dir"])
        .arg(dir)
        .args(["--role", role, "--sub", sub]);
    if let Some(h) = hospital {
        cmd.args(["--hospital", h]);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .last()
        .unwrap()
        .to_owned()
}

/// One HTTP/1.1 request with `Connection: close`; returns (status, JSON body).
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> std::io::Result<(u16, Value)> {
    request_with_headers(addr, method, path, token, body, &[])
}

/// [`request`] with extra headers.
pub fn request_with_headers(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
    headers: &[(&str, &str)],
) -> std::io::Result<(u16, Value)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let body = body.unwrap_or("");
    let mut auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    for (name, value) in headers {
        auth.push_str(&format!("{name}: {value}\r\n"));
    }
    write!(s, "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let (status, _, json) = parse_answer(&raw);
    Ok((status, json))
}

/// An answer's status, its head lowercased (status line and headers), and its body as
/// JSON (`Null` when it is not), from the raw bytes of an HTTP/1.1 answer.
pub fn parse_answer(raw: &[u8]) -> (u16, String, Value) {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let json = serde_json::from_str(body).unwrap_or(Value::Null);
    (status, head.to_ascii_lowercase(), json)
}

/// A server child that is killed (and reaped) when dropped, also when a test panics.
pub struct Running(pub Child);

impl Running {
    /// Stops the server cleanly (SIGTERM: it drains, flushes the views and exits 0).
    pub fn stop(mut self) {
        let sent = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
        let status = self.0.wait().unwrap();
        assert!(
            status.success(),
            "the server exited with {status} on SIGTERM"
        );
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Creates records from `workers` threads (record `r-{w}-{i}` of patient `p-{w}`, at most
/// `per_worker` each) against the server, SIGKILLs it after `run_for` in the middle of
/// that load, and returns the ids it answered 201 before it died.
pub fn load_then_kill(
    server: &mut Child,
    addr: SocketAddr,
    token: &str,
    workers: usize,
    per_worker: usize,
    run_for: Duration,
) -> Vec<String> {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let threads: Vec<_> = (0..workers)
        .map(|w| {
            let (acked, stop, token) = (acked.clone(), stop.clone(), token.to_owned());
            std::thread::spawn(move || {
                for i in 0..per_worker {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let body = format!(
                        r#"{{"patient_id":"p-{w}","hospital_id":"h-1","record_type":"note","record_id":"r-{w}-{i}"}}"#
                    );
                    // The kill makes requests fail: only a 201 counts.
                    if let Ok((201, b)) =
                        request(addr, "POST", "/v1/records", Some(&token), Some(&body))
                    {
                        let id = b["record_id"].as_str().unwrap().to_owned();
                        acked.lock().unwrap().push(id);
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(run_for);
    server.kill().unwrap(); // SIGKILL
    server.wait().unwrap();
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    acked
}
