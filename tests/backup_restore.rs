//! `medledger backup` while a real server takes writes, then `medledger restore` into a
//! new data dir: the copy verifies, and a server on it serves every record acknowledged
//! before the backup began, with its payload.

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use serde_json::Value;

mod common;
use common::server::{free_port, request, start, token, Running};

fn cli(args: &[&str]) -> (i32, Value) {
    let out = Command::new(env!("CARGO_BIN_EXE_medledger"))
        .args(args)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let json = text
        .lines()
        .last()
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or(Value::Null);
    (out.status.code().unwrap_or(-1), json)
}

/// `medledger backup --data-dir FROM --to TO`.
fn backup(from: &Path, to: &Path) -> (i32, Value) {
    cli(&["backup", "--data-dir", path(from), "--to", path(to)])
}

/// `medledger restore --from FROM --data-dir TO`.
fn restore(from: &Path, to: &Path) -> (i32, Value) {
    cli(&["restore", "--from", path(from), "--data-dir", path(to)])
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn record(id: &str, payload: bool) -> String {
    let p = if payload {
        r#","payload":{"content_type":"application/fhir+json","data":{"resourceType":"Observation","status":"final"}}"#
    } else {
        ""
    };
    format!(
        r#"{{"record_id":"{id}","patient_id":"p-1","hospital_id":"h-1","record_type":"lab_result","metadata":{{"t":"x"}}{p}}}"#
    )
}

#[test]
fn a_backup_taken_under_writes_restores_and_verifies() {
    let root = tempfile::tempdir().unwrap();
    let live = root.path().join("live");
    let dr = token(&live, "clinician", "dr-1", Some("h-1"));
    let addr = free_port();
    let server = Running(start(&live, addr));

    let (s, b) = request(
        addr,
        "POST",
        "/v1/records",
        Some(&dr),
        Some(&record("r-doc", true)),
    )
    .unwrap();
    assert_eq!(s, 201, "{b}");
    let mut acked = vec!["r-doc".to_owned()];
    for i in 0..30 {
        let id = format!("r-{i}");
        let (s, b) = request(
            addr,
            "POST",
            "/v1/records",
            Some(&dr),
            Some(&record(&id, false)),
        )
        .unwrap();
        assert_eq!(s, 201, "{b}");
        acked.push(id);
    }
    // Writes go on while the backup runs.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (stop, dr) = (stop.clone(), dr.clone());
        std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) && n < 20_000 {
                let _ = request(
                    addr,
                    "POST",
                    "/v1/records",
                    Some(&dr),
                    Some(&record(&format!("w-{n}"), false)),
                );
                n += 1;
            }
            n
        })
    };
    std::thread::sleep(std::time::Duration::from_millis(200));
    let saved = root.path().join("backup");
    let (code, report) = backup(&live, &saved);
    stop.store(true, Ordering::Relaxed);
    let written = writer.join().unwrap();
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["ok"], true);
    assert!(written > 0, "writes ran beside the backup");
    let height = report["height"].as_u64().unwrap();
    assert!(height > 31, "{report}");
    drop(server);

    // A backup is never written over, nor restored over a data dir.
    let (code, report) = backup(&live, &saved);
    assert_eq!(code, 2, "{report}");
    let (code, report) = restore(&saved, &live);
    assert_eq!(code, 2, "{report}");

    let restored = root.path().join("restored");
    let (code, report) = restore(&saved, &restored);
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["height"].as_u64(), Some(height));
    let (code, report) = cli(&["verify", "--data-dir", path(&restored)]);
    assert_eq!(code, 0, "{report}");

    let addr = free_port();
    let _server = Running(start(&restored, addr));
    // The restored data dir has the live one's secret: the same tokens work.
    for id in &acked {
        let (s, b) = request(addr, "GET", &format!("/v1/records/{id}"), Some(&dr), None).unwrap();
        assert_eq!(s, 200, "{id}: {b}");
    }
    let (s, b) = request(addr, "GET", "/v1/records/r-doc/payload", Some(&dr), None).unwrap();
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["resourceType"], "Observation");
}
