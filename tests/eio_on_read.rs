//! A block of the ledger that the disk can no longer read (EIO) is named in a 500 with a
//! code of its own, never crashes the server, never leaks a path, and reads again once
//! the disk does (issue 27). The EIO comes from an `LD_PRELOAD` shim
//! (tests/eio/eio_on_read.c) loaded into the real server: while a trigger file exists,
//! every `pread` of a ledger segment fails.

use std::path::Path;
use std::process::Command;

mod common;
use common::server::{free_port, request, start_logged, token, Running};

/// Builds the shim with the C compiler every Rust build here links with.
fn build_shim(dir: &Path) -> std::path::PathBuf {
    let out = dir.join("eio_on_read.so");
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/eio/eio_on_read.c");
    let status = Command::new("cc")
        .args(["-O2", "-shared", "-fPIC", "-o"])
        .arg(&out)
        .arg(&source)
        .arg("-ldl")
        .status()
        .expect("cc runs");
    assert!(status.success(), "building the EIO shim failed");
    out
}

#[test]
fn a_block_the_disk_cannot_read_is_named_in_a_500_and_the_server_goes_on() {
    let tmp = tempfile::tempdir().unwrap();
    let shim = build_shim(tmp.path());
    let data = tmp.path().join("data");
    let trigger = tmp.path().join("eio-on");
    let addr = free_port();
    let server = Running(start_logged(
        &data,
        addr,
        &[],
        &[
            ("LD_PRELOAD", shim.as_os_str()),
            ("EIO_PATH", "/blocks/seg-".as_ref()),
            ("EIO_TRIGGER", trigger.as_os_str()),
        ],
        &tmp.path().join("serve.log"),
    ));
    let admin = token(&data, "admin", "admin-1", None);
    let get = |path: &str| request(addr, "GET", path, Some(&admin), None).unwrap();
    let mut receipts = Vec::new();
    for i in 0..3 {
        let body = format!(
            r#"{{"patient_id":"p-1","hospital_id":"h-1","record_type":"lab_result","created_at":"2026-11-23T10:0{i}:00Z","metadata":{{"title":"CBC {i}"}}}}"#
        );
        let (status, receipt) =
            request(addr, "POST", "/v1/records", Some(&admin), Some(&body)).unwrap();
        assert_eq!(status, 201, "{receipt}");
        receipts.push(receipt);
    }
    let block = receipts[0]["block_number"]
        .as_u64()
        .expect("a receipt names its block");
    let tx_id = receipts[0]["tx_id"].as_str().unwrap().to_owned();
    let record_id = receipts[0]["record_id"].as_str().unwrap().to_owned();
    let (status, shown) = get(&format!("/v1/blocks/{block}"));
    assert_eq!(status, 200);
    let hash = shown["hash"].as_str().unwrap().to_owned();

    std::fs::write(&trigger, b"").unwrap();
    let unreadable = |path: &str| {
        let (status, body) = get(path);
        assert_eq!(status, 500, "{path}: {body}");
        assert_eq!(body["error"]["code"], "block_unreadable", "{path}: {body}");
        assert_eq!(body["error"]["details"]["block"], block, "{path}: {body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(&format!("block {block}")), "{message}");
        assert!(!message.contains('/'), "a path in the answer: {message}");
    };
    unreadable(&format!("/v1/blocks/{block}"));
    unreadable(&format!("/v1/blocks/by-hash/{hash}"));
    unreadable(&format!("/v1/tx/{tx_id}"));
    unreadable(&format!("/v1/tx/{tx_id}/proof"));
    // What the views hold is still served, and the server is up.
    let (status, record) = get(&format!("/v1/records/{record_id}"));
    assert_eq!(status, 200, "{record}");
    assert_eq!(request(addr, "GET", "/healthz", None, None).unwrap().0, 200);

    // The disk reads again: so does the block, without a restart.
    std::fs::remove_file(&trigger).unwrap();
    let (status, body) = get(&format!("/v1/blocks/{block}"));
    assert_eq!(status, 200, "{body}");
    // A write made after it is answered (its verdict needs the projector, which read
    // blocks through the same disk).
    let (status, receipt) = request(
        addr,
        "POST",
        "/v1/records",
        Some(&admin),
        Some(r#"{"patient_id":"p-2","hospital_id":"h-1","record_type":"lab_result","created_at":"2026-11-23T11:00:00Z","metadata":{"title":"after"}}"#),
    )
    .unwrap();
    assert_eq!(status, 201, "{receipt}");
    let id = receipt["record_id"].as_str().unwrap();
    let (status, _) = get(&format!("/v1/records/{id}"));
    assert_eq!(status, 200);
    server.stop();
    let log = std::fs::read_to_string(tmp.path().join("serve.log")).unwrap();
    assert!(!log.contains("panicked"), "{log}");
    assert!(
        log.contains("could not be read"),
        "the EIO was not logged: {log}"
    );
}
