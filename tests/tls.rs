//! HTTPS on the API (`--tls-cert`, `--tls-key`), tested with a real TLS client: curl
//! (OpenSSL), trusting only the test certificate of fixtures/tls/.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::server::{free_port, request, token, Running};

const CERT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/tls/localhost.pem");
const KEY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/tls/localhost.key");

/// curl against the server: (exit code, HTTP status, body).
fn curl(addr: SocketAddr, path: &str, extra: &[&str]) -> (i32, u16, String) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10", "-o", "-", "-w", "\n%{http_code}"])
        .args(extra)
        .arg(format!("https://{addr}{path}"))
        .output()
        .expect("curl (installed by scripts/setup-test.sh)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (
        out.status.code().unwrap_or(-1),
        status.trim().parse().unwrap_or(0),
        body.to_owned(),
    )
}

fn serve_tls(dir: &Path, addr: SocketAddr, cert: &str, key: &str) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_medledger"))
        .args(["serve", "--data-dir"])
        .arg(dir)
        .args(["--listen", &addr.to_string(), "--workers", "2"])
        .args([
            "--rate-limit-per-sec",
            "0",
            "--tls-cert",
            cert,
            "--tls-key",
            key,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn the_api_answers_over_https_to_a_client_that_trusts_its_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let addr = free_port();
    let server = Running(serve_tls(dir.path(), addr, CERT, KEY));
    let trust = ["--cacert", CERT];
    let deadline = Instant::now() + Duration::from_secs(30);
    while curl(addr, "/healthz", &trust).1 != 200 {
        assert!(Instant::now() < deadline, "no HTTPS answer from {addr}");
        std::thread::sleep(Duration::from_millis(100));
    }
    // A write and a read with a bearer token, over TLS 1.3 and over TLS 1.2.
    let bearer = format!(
        "Authorization: Bearer {}",
        token(dir.path(), "clinician", "dr-1", Some("h-1"))
    );
    let record = r#"{"record_id":"r-tls","patient_id":"p-1","hospital_id":"h-1","record_type":"lab_result","metadata":{"code":"x"}}"#;
    let (code, status, body) = curl(
        addr,
        "/v1/records",
        &[
            "--cacert",
            CERT,
            "-H",
            &bearer,
            "-H",
            "Content-Type: application/json",
            "--data",
            record,
        ],
    );
    assert_eq!((code, status), (0, 201), "{body}");
    for version in [&["--tlsv1.3"][..], &["--tlsv1.2", "--tls-max", "1.2"]] {
        let mut args = vec!["--cacert", CERT, "-H", &bearer];
        args.extend(version);
        let (code, status, body) = curl(addr, "/v1/records/r-tls", &args);
        assert_eq!((code, status), (0, 200), "{version:?}: {body}");
        assert!(body.contains("\"record_id\":\"r-tls\""), "{body}");
    }
    // A client that does not trust the certificate refuses the server (curl's exit 60).
    let (code, status, _) = curl(addr, "/healthz", &[]);
    assert_eq!((code, status), (60, 0));
    // Below TLS 1.2 there is no handshake (curl's exit 35).
    let (code, _, _) = curl(addr, "/healthz", &["--cacert", CERT, "--tls-max", "1.1"]);
    assert_ne!(code, 0, "a TLS 1.1 handshake succeeded");
    // Plain HTTP on the TLS port gets no HTTP answer, and the server stays up.
    let plain = request(addr, "GET", "/healthz", None, None);
    assert!(
        !matches!(plain, Ok((200, _))),
        "plain HTTP answered on the TLS port"
    );
    assert_eq!(curl(addr, "/healthz", &trust).1, 200);
    server.stop();
}

#[test]
fn a_key_that_does_not_match_its_certificate_stops_the_start_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let other_key = dir.path().join("other.key");
    // The EC test key of the JWT fixtures: a key, but not this certificate's.
    std::fs::write(&other_key, include_bytes!("../fixtures/jwt/test-ec.pem")).unwrap();
    let not_pem = dir.path().join("not.pem");
    std::fs::write(&not_pem, b"hello").unwrap();
    for (cert, key, says) in [
        (
            CERT,
            other_key.to_str().unwrap(),
            "do not make a server identity",
        ),
        (not_pem.to_str().unwrap(), KEY, "holds no CERTIFICATE block"),
        (CERT, not_pem.to_str().unwrap(), "is not a PEM private key"),
    ] {
        let child = serve_tls(&dir.path().join("data"), free_port(), cert, key);
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains("medledger: TLS: "), "{stderr}");
        assert!(stderr.contains(says), "{says}: {stderr}");
    }
    // One of the pair alone is a usage error.
    let out = Command::new(env!("CARGO_BIN_EXE_medledger"))
        .args(["serve", "--tls-cert", CERT])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--tls-key"));
}
