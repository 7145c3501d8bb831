//! `medledger ipfs status` asks the running server for the payload store and the outbox;
//! with no server it says so and exits 2.

use std::process::Command;

mod common;
use common::server::{free_port, request, start, token, Running};

#[test]
fn ipfs_status_asks_the_running_server() {
    let dir = tempfile::tempdir().unwrap();
    let addr = free_port();
    let server = Running(start(dir.path(), addr));
    let dr = token(dir.path(), "clinician", "dr-1", Some("h-1"));
    let body = r#"{"patient_id":"p-1","hospital_id":"h-1","record_type":"note","payload":{"content_type":"text/plain","data":"x"}}"#;
    let (status, answer) = request(addr, "POST", "/v1/records", Some(&dr), Some(body)).unwrap();
    assert_eq!(status, 201, "{answer}");

    let run = || {
        Command::new(env!("CARGO_BIN_EXE_medledger"))
            .args([
                "ipfs",
                "status",
                "--url",
                &format!("http://{addr}"),
                "--data-dir",
            ])
            .arg(dir.path())
            .output()
            .unwrap()
    };
    let out = run();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["embedded"]["pinned_payloads"], 1, "{status}");
    assert!(status["kubo"].is_null());

    drop(server);
    let out = run();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no server answers"));
}
