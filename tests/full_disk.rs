//! A full disk, for real: `medledger serve` on a small loop-mounted ext4 file system this
//! test makes, filled under load. Writes must answer 507 `storage_full` with Retry-After
//! (never a 500), reads of acknowledged records keep answering 200, and once space is
//! freed the same process takes writes again by itself. At the end nothing acknowledged
//! is lost and `verify` and `verify --views` pass.
//!
//! Needs root (mount), as CI runs; the file system is unmounted at the end.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use medledger::storage::ledger::fs::free_bytes_at;
use serde_json::Value;

mod common;
use common::server::{free_port, request, start_logged, token, Running};

const MIB: u64 = 1 << 20;
/// The file system, and the reserve the server keeps on it.
const DISK_MIB: u64 = 256;
const RESERVE_MIB: u64 = 64;

fn run(cmd: &str, args: &[&str]) {
    common::run_as_root(cmd, args, "loop mounts");
}

/// A loop-mounted ext4 file system of `DISK_MIB`, unmounted when dropped.
struct SmallDisk {
    mount: PathBuf,
}

impl SmallDisk {
    fn new(dir: &Path) -> SmallDisk {
        let image = dir.join("disk.img");
        std::fs::File::create(&image)
            .unwrap()
            .set_len(DISK_MIB * MIB)
            .unwrap();
        run("mkfs.ext4", &["-q", "-F", image.to_str().unwrap()]);
        let mount = dir.join("mnt");
        std::fs::create_dir(&mount).unwrap();
        run(
            "mount",
            &[
                "-o",
                "loop",
                image.to_str().unwrap(),
                mount.to_str().unwrap(),
            ],
        );
        SmallDisk { mount }
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        // Lazy: a server still holding files (a failed test) does not keep it mounted.
        let _ = Command::new("umount").arg("-l").arg(&self.mount).status();
    }
}

/// Grows `file` until the file system has at most `free` bytes left.
fn fill_until(file: &Path, free: u64) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(file)
        .unwrap();
    let chunk = vec![0x5a_u8; MIB as usize];
    loop {
        let now = free_bytes_at(file.parent().unwrap()).unwrap();
        if now <= free {
            break;
        }
        let n = (now - free).min(MIB) as usize;
        match f.write_all(&chunk[..n]) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::StorageFull => break,
            Err(e) => panic!("filling the disk: {e}"),
        }
    }
    f.sync_all().unwrap();
}

/// (status, Retry-After, body) of one request.
fn call(addr: SocketAddr, token: &str, body: &str) -> (u16, Option<String>, Value) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "POST /v1/records HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let (status, head, body) = common::server::parse_answer(&raw);
    let retry_after = head
        .lines()
        .find_map(|l| l.strip_prefix("retry-after: "))
        .map(str::to_owned);
    (status, retry_after, body)
}

/// A record with a 24 KiB payload (random bytes: encrypted anyway, so incompressible).
fn body(n: u64) -> String {
    let mut x = n.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let bytes: Vec<u8> = (0..24 * 1024)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(bytes);
    format!(
        r#"{{"patient_id":"p-{p}","hospital_id":"h-1","record_type":"imaging","record_id":"r-{n}","metadata":{{"n":{n}}},"payload":{{"content_type":"application/octet-stream","base64":"{b64}"}}}}"#,
        p = n % 5
    )
}

fn medledger(args: &[&str], data: &Path) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_medledger"))
        .args(args)
        .arg("--data-dir")
        .arg(data)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn a_full_disk_refuses_writes_keeps_reads_and_recovers_without_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let disk = SmallDisk::new(tmp.path());
    let data = disk.mount.join("data");
    let log = tmp.path().join("server.log");
    let addr = free_port();
    let reserve = RESERVE_MIB.to_string();
    let mut server = Running(start_logged(
        &data,
        addr,
        &["--disk-reserve-mib", &reserve],
        &[],
        &log,
    ));
    let tok = token(&data, "clinician", "dr-1", Some("h-1"));

    // Leave a few MiB above the reserve, then write until the disk says no.
    let filler = disk.mount.join("filler");
    fill_until(&filler, (RESERVE_MIB + 6) * MIB);
    let mut acked = Vec::new();
    let mut refused = 0;
    let mut n = 0;
    while refused < 20 {
        n += 1;
        assert!(n < 2_000, "2,000 writes and the disk never filled");
        let (status, retry_after, b) = call(addr, &tok, &body(n));
        match status {
            201 => acked.push(b["record_id"].as_str().unwrap().to_owned()),
            507 => {
                assert_eq!(b["error"]["code"], "storage_full", "{b}");
                assert_eq!(retry_after.as_deref(), Some("5"), "{b}");
                let message = b["error"]["message"].as_str().unwrap();
                assert!(!message.contains(disk.mount.to_str().unwrap()), "{message}");
                refused += 1;
            }
            other => panic!("write {n} answered {other}: {b}"),
        }
    }
    assert!(acked.len() >= 20, "only {} writes fit", acked.len());
    eprintln!(
        "{} writes acknowledged, then {refused} refused with {} MiB free",
        acked.len(),
        free_bytes_at(&disk.mount).unwrap() / MIB
    );

    // While the disk stays full: every acknowledged record reads 200, and the free space
    // is on /metrics.
    for id in &acked {
        let (status, b) =
            request(addr, "GET", &format!("/v1/records/{id}"), Some(&tok), None).unwrap();
        assert_eq!(status, 200, "{id}: {b}");
    }
    let (status, _) = request(addr, "GET", "/readyz", None, None).unwrap();
    assert_eq!(status, 200, "a full disk is not a broken server");

    // Space freed: the same process takes writes again, within seconds.
    std::fs::remove_file(&filler).unwrap();
    let freed = Instant::now();
    loop {
        n += 1;
        let (status, _, b) = call(addr, &tok, &body(n));
        if status == 201 {
            acked.push(b["record_id"].as_str().unwrap().to_owned());
            break;
        }
        assert_eq!(status, 507, "{b}");
        assert!(
            freed.elapsed() < Duration::from_secs(10),
            "still refused 10 s after space was freed: {b}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    for _ in 0..20 {
        n += 1;
        let (status, _, b) = call(addr, &tok, &body(n));
        assert_eq!(status, 201, "{b}");
        acked.push(b["record_id"].as_str().unwrap().to_owned());
    }

    // Nothing acknowledged is lost, across a SIGKILL and a restart; the chain and the
    // views verify (the views after a clean stop: a SIGKILL leaves them to catch up).
    let _ = server.0.kill();
    let _ = server.0.wait();
    let (ok, out) = medledger(&["verify"], &data);
    assert!(ok, "verify: {out}");
    let server = Running(common::server::start(&data, addr));
    for id in &acked {
        let (status, b) =
            request(addr, "GET", &format!("/v1/records/{id}"), Some(&tok), None).unwrap();
        assert_eq!(status, 200, "{id}: {b}");
    }
    server.stop();
    let (ok, out) = medledger(&["verify", "--views"], &data);
    assert!(ok, "verify --views: {out}");

    // The log said so, without a line per refused write or per projector retry.
    let log = std::fs::read_to_string(&log).unwrap();
    let errors = log.lines().filter(|l| l.contains("ERROR")).count();
    let warnings = log.lines().filter(|l| l.contains("WARN")).count();
    eprintln!("the server logged {errors} ERROR and {warnings} WARN lines");
    assert!(errors <= 10, "{errors} ERROR lines:\n{log}");
    drop(disk);
}
