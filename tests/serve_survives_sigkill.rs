//! A real `medledger serve` process on a free loopback port: submit records, SIGKILL it,
//! restart it, and every acknowledged record is there.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

fn free_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

fn start(dir: &Path, addr: SocketAddr) -> Child {
    let mut child = Command::new(env!("CARGO_BIN_EXE_medledger"))
        .args(["serve", "--data-dir"])
        .arg(dir)
        .args(["--listen", &addr.to_string(), "--workers", "2"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok((200, _)) = request(addr, "GET", "/healthz", None, None) {
            return child;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("the server did not come up");
}

/// One HTTP/1.1 request with `Connection: close`; returns (status, JSON body).
fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> std::io::Result<(u16, Value)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let body = body.unwrap_or("");
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(s, "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let status: u16 = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let json = text
        .split("\r\n\r\n")
        .nth(1)
        .and_then(|b| serde_json::from_str(b).ok())
        .unwrap_or(Value::Null);
    Ok((status, json))
}

#[test]
fn every_acknowledged_record_survives_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_medledger"))
        .args(["token", "--data-dir"])
        .arg(dir.path())
        .args(["--role", "clinician", "--sub", "dr-1", "--hospital", "h-1"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let token = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .last()
        .unwrap()
        .to_owned();

    let addr = free_port();
    let mut server = start(dir.path(), addr);
    // Submitters on 8 threads; the server is killed while they run.
    let acked = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let workers: Vec<_> = (0..8)
        .map(|w| {
            let (acked, stop, token) = (acked.clone(), stop.clone(), token.clone());
            std::thread::spawn(move || {
                let mut i = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) && i < 2_000 {
                    let body = format!(r#"{{"patient_id":"p-{w}","hospital_id":"h-1","record_type":"note","record_id":"r-{w}-{i}"}}"#);
                    if let Ok((201, b)) = request(addr, "POST", "/v1/records", Some(&token), Some(&body)) {
                        acked.lock().unwrap().push(b["record_id"].as_str().unwrap().to_owned());
                    }
                    i += 1;
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1_500));
    server.kill().unwrap(); // SIGKILL
    server.wait().unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for w in workers {
        w.join().unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() > 10,
        "some records were acknowledged before the kill: {}",
        acked.len()
    );

    let mut server = start(dir.path(), addr);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, ready) = request(addr, "GET", "/readyz", None, None).unwrap();
        if ready["projector_lag_blocks"] == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "the views caught up");
        std::thread::sleep(Duration::from_millis(50));
    }
    for id in &acked {
        let (status, rec) = request(
            addr,
            "GET",
            &format!("/v1/records/{id}"),
            Some(&token),
            None,
        )
        .unwrap();
        assert_eq!(
            status, 200,
            "acknowledged record {id} is missing after SIGKILL: {rec}"
        );
    }
    server.kill().unwrap();
    server.wait().unwrap();
}
