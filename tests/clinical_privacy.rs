//! No clinical plaintext in the data dir, and erasure that erases everything.
//!
//! Records whose metadata, reasons, access purposes and payloads carry unique marker
//! strings are written, amended with new payloads, changed and read. Before erasure no
//! marker may appear in the ledger's segments or the payload store; after erasing one
//! record and then its patient, no marker of erased content may appear in any byte of any
//! file under the data dir (segments, index, views' SST and log files, payload store, key
//! log), the reads show the records as erased with their structural fields only, a
//! rebuild of the views brings nothing back, and `verify` passes. A second patient's
//! records stay readable throughout. And a real server's log at trace level holds none
//! of a record's text.

use actix_web::http::StatusCode;
use actix_web::test;
use serde_json::{json, Value};

use medledger::api::auth::Role;
use medledger::serve::app;

#[macro_use]
mod common;
use common::api::Env;
use common::files_under as files;

/// The markers found in the files under `dir` whose path contains one of `parts` (all
/// files when `parts` is empty), with the file they were found in.
fn markers_in(dir: &std::path::Path, parts: &[&str], markers: &[String]) -> Vec<String> {
    let mut found = Vec::new();
    for path in files(dir) {
        let name = path.to_string_lossy();
        if !parts.is_empty() && !parts.iter().any(|p| name.contains(p)) {
            continue;
        }
        let bytes = std::fs::read(&path).unwrap();
        for m in markers {
            if bytes.windows(m.len()).any(|w| w == m.as_bytes()) {
                found.push(format!("{m} in {name}"));
            }
        }
    }
    found
}

#[actix_web::test]
async fn no_plaintext_on_disk_and_erasure_erases_every_version() {
    let env = Env::with(|config| config.rate_limit_per_sec = 0);
    let data_dir = env.dir.path().to_path_buf();
    let svc = test::init_service(app(env.core.state.clone())).await;
    let dr = env.token(Role::Clinician, "dr-1", Some("h-1"));
    let admin = env.token(Role::Admin, "admin-1", None);

    // Three records of p-1 (the first erased on its own, the rest with the patient) and
    // one of p-2 (kept). Every clinical field of every version carries its own marker.
    let mut erased_markers = Vec::new();
    let mut kept_markers = Vec::new();
    let mut ids = Vec::new();
    for (n, patient) in [(1, "p-1"), (2, "p-1"), (3, "p-1"), (4, "p-2")] {
        let m = |what: &str| format!("MARKER-{what}-{n}-zq");
        let (s, b) = call!(
            &svc,
            test::TestRequest::post()
                .uri("/v1/records")
                .insert_header(("Authorization", dr.as_str()))
                .set_json(json!({"patient_id": patient, "hospital_id": "h-1",
                    "record_type": "lab_result", "metadata": {"note": m("meta1")},
                    "payload": {"content_type": "text/plain", "data": m("payload1")}}))
        );
        assert_eq!(s, StatusCode::CREATED, "{b}");
        let id = b["record_id"].as_str().unwrap().to_owned();
        let (s, b) = call!(
            &svc,
            test::TestRequest::post()
                .uri(&format!("/v1/records/{id}/amendments"))
                .insert_header(("Authorization", dr.as_str()))
                .set_json(
                    json!({"reason": m("reason2"), "metadata": {"note": m("meta2")},
                    "payload": {"content_type": "text/plain", "data": m("payload2")}})
                )
        );
        assert_eq!(s, StatusCode::CREATED, "{b}");
        let (s, b) = call!(
            &svc,
            test::TestRequest::post()
                .uri(&format!("/v1/records/{id}/status"))
                .insert_header(("Authorization", dr.as_str()))
                .set_json(json!({"status": "archived", "reason": m("status3")}))
        );
        assert_eq!(s, StatusCode::CREATED, "{b}");
        let res = test::call_service(
            &svc,
            test::TestRequest::get()
                // The purpose is a code; the one free text of a read is a
                // break-glass reason.
                .uri(&format!(
                    "/v1/records/{id}/payload?purpose=emergency&break_glass={}",
                    m("purpose")
                ))
                .insert_header(("Authorization", dr.as_str()))
                .to_request(),
        )
        .await;
        assert_eq!(res.status(), StatusCode::OK);
        // An inline string payload is stored as its JSON text.
        assert_eq!(
            test::read_body(res).await,
            format!("\"{}\"", m("payload2")).as_bytes()
        );
        let markers = [
            "meta1", "payload1", "reason2", "meta2", "payload2", "status3", "purpose",
        ]
        .map(m);
        if patient == "p-1" {
            erased_markers.extend(markers);
        } else {
            kept_markers.extend(markers);
        }
        ids.push(id);
    }
    // The reads show the text (the round trip works)...
    let (s, b) = call!(
        &svc,
        test::TestRequest::get()
            .uri(&format!("/v1/records/{}/history", ids[0]))
            .insert_header(("Authorization", dr.as_str()))
    );
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b["items"][0]["metadata"]["note"], "MARKER-meta1-1-zq");
    assert_eq!(b["items"][1]["metadata"]["note"], "MARKER-meta2-1-zq");
    // ... while the ledger and the payload store hold none of it: sealed before written.
    env.core.state.projector.nudge();
    let all: Vec<String> = erased_markers
        .iter()
        .chain(&kept_markers)
        .cloned()
        .collect();
    let leaks = markers_in(&data_dir, &["blocks", "payloads"], &all);
    assert!(
        leaks.is_empty(),
        "plaintext in the ledger or payloads: {leaks:?}"
    );

    let stored_before = env.core.state.payloads.bytes_stored().await.unwrap();
    // Erase the first record on its own, then the patient (who has two more).
    let (s, b) = call!(
        &svc,
        test::TestRequest::post()
            .uri(&format!("/v1/records/{}/erase", ids[0]))
            .insert_header(("Authorization", admin.as_str()))
            .set_json(json!({"reason": "MARKER-erasure-reason-zq"}))
    );
    assert_eq!(s, StatusCode::OK, "{b}");
    erased_markers.push("MARKER-erasure-reason-zq".into());
    let (s, b) = call!(
        &svc,
        test::TestRequest::post()
            .uri("/v1/patients/p-1/erase")
            .insert_header(("Authorization", dr.as_str()))
            .set_json(json!({"reason": "r"}))
    );
    assert_eq!(s, StatusCode::FORBIDDEN, "admins only: {b}");
    // An id the ledger could never hold is refused, not "forgotten" with nothing done.
    let (s, b) = call!(
        &svc,
        test::TestRequest::post()
            .uri(&format!("/v1/patients/{}/erase", "p".repeat(129)))
            .insert_header(("Authorization", admin.as_str()))
            .set_json(json!({"reason": "r"}))
    );
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_id")),
        "{b}"
    );
    let (s, b) = call!(
        &svc,
        test::TestRequest::post()
            .uri("/v1/patients/p-1/erase")
            .insert_header(("Authorization", admin.as_str()))
            .set_json(json!({"reason": "MARKER-patient-erasure-zq"}))
    );
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(
        (b["erased"].as_u64(), b["already_erased"].as_u64()),
        (Some(2), Some(1)),
        "{b}"
    );
    erased_markers.push("MARKER-patient-erasure-zq".into());

    // Erased records: structural fields only, in every version; no further change.
    for id in &ids[..3] {
        let (s, b) = call!(
            &svc,
            test::TestRequest::get()
                .uri(&format!("/v1/records/{id}/history"))
                .insert_header(("Authorization", dr.as_str()))
        );
        assert_eq!(s, StatusCode::OK);
        let items = b["items"].as_array().unwrap();
        assert_eq!(items.len(), 4, "{b}");
        for v in items {
            assert_eq!(
                (v["erased"].as_bool(), &v["metadata"]),
                (Some(true), &Value::Null),
                "{v}"
            );
            assert_eq!(v["patient_id"], "p-1");
        }
        let res = test::call_service(
            &svc,
            test::TestRequest::get()
                .uri(&format!("/v1/records/{id}/payload"))
                .insert_header(("Authorization", dr.as_str()))
                .to_request(),
        )
        .await;
        assert_eq!(res.status(), StatusCode::GONE);
        let (s, b) = call!(
            &svc,
            test::TestRequest::post()
                .uri(&format!("/v1/records/{id}/amendments"))
                .insert_header(("Authorization", dr.as_str()))
                .set_json(json!({"reason": "after", "metadata": {"n": 1}}))
        );
        assert_eq!(
            (s, &b["error"]["code"]),
            (StatusCode::GONE, &json!("record_erased"))
        );
    }
    let (s, b) = call!(
        &svc,
        test::TestRequest::get()
            .uri("/v1/patients/p-1/records")
            .insert_header(("Authorization", dr.as_str()))
    );
    assert_eq!(s, StatusCode::OK);
    assert!(
        b["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["erased"] == true),
        "{b}"
    );
    // The other patient's record is untouched.
    let (s, b) = call!(
        &svc,
        test::TestRequest::get()
            .uri(&format!("/v1/records/{}", ids[3]))
            .insert_header(("Authorization", dr.as_str()))
    );
    assert_eq!(
        (s, &b["metadata"]["note"]),
        (StatusCode::OK, &json!("MARKER-meta2-4-zq"))
    );
    assert_eq!(b["erased"], false);

    // The erased payloads' blocks leave the embedded store (a GC the erasure started):
    // what is left is about the kept record's two payloads.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let left = env.core.state.payloads.bytes_stored().await.unwrap();
        if left < stored_before / 3 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{left} of {stored_before} bytes stored"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }

    // Every byte of every file: no marker of erased content anywhere.
    env.core.close();
    let leaks = markers_in(&data_dir, &[], &erased_markers);
    assert!(leaks.is_empty(), "erased text on disk: {leaks:?}");
    drop(svc);
    drop(env.core);

    // The ledger verifies without a key, and a rebuild brings nothing back.
    let mut out = Vec::new();
    assert_eq!(
        medledger::cli::verify::run(&data_dir, &mut out),
        0,
        "{}",
        String::from_utf8_lossy(&out)
    );
    let mut out = Vec::new();
    assert_eq!(
        medledger::cli::rebuild::run_rebuild(
            &data_dir,
            medledger_views::Backend::RocksDb,
            &mut out
        ),
        0,
        "{}",
        String::from_utf8_lossy(&out)
    );
    let leaks = markers_in(&data_dir, &[], &erased_markers);
    assert!(
        leaks.is_empty(),
        "erased text on disk after the rebuild: {leaks:?}"
    );
}

/// The server's own log, at the most verbose level, over a record's life: created,
/// amended, read, refused (bad JSON in its metadata, an amendment after its erasure) and
/// erased. No marker of its clinical text may appear in what it printed.
#[::core::prelude::v1::test]
fn the_server_log_holds_no_clinical_text() {
    use common::server::{free_port, request, start_logged, token, Running};
    let dir = tempfile::tempdir().unwrap();
    let addr = free_port();
    let log_path = dir.path().join("server.log");
    let data = dir.path().join("data");
    let mut server = Running(start_logged(
        &data,
        addr,
        &[],
        &[("RUST_LOG", "trace".as_ref())],
        &log_path,
    ));
    let dr = token(&data, "clinician", "dr-1", Some("h-1"));
    let admin = token(&data, "admin", "admin-1", None);
    let markers = [
        "LOGMARK-meta",
        "LOGMARK-reason",
        "LOGMARK-purpose",
        "LOGMARK-bad",
    ];
    let (s, b) = request(
        addr,
        "POST",
        "/v1/records",
        Some(&dr),
        Some(r#"{"record_id":"r-1","patient_id":"p-1","hospital_id":"h-1","record_type":"note","metadata":{"n":"LOGMARK-meta"},"payload":{"content_type":"text/plain","data":"x"}}"#),
    )
    .unwrap();
    assert_eq!(s, 201, "{b}");
    let (s, b) = request(
        addr,
        "POST",
        "/v1/records/r-1/amendments",
        Some(&dr),
        Some(r#"{"reason":"LOGMARK-reason","metadata":{"n":"LOGMARK-meta"}}"#),
    )
    .unwrap();
    assert_eq!(s, 201, "{b}");
    let (s, _) = request(
        addr,
        "GET",
        "/v1/records/r-1/payload?purpose=emergency&break_glass=LOGMARK-purpose",
        Some(&dr),
        None,
    )
    .unwrap();
    assert_eq!(s, 200);
    let (s, _) = request(
        addr,
        "POST",
        "/v1/records",
        Some(&dr),
        Some(r#"{"patient_id":"p-1","hospital_id":"h-1","record_type":"note","metadata":"LOGMARK-bad"}"#),
    )
    .unwrap();
    assert_eq!(s, 400);
    let (s, b) = request(
        addr,
        "POST",
        "/v1/records/r-1/erase",
        Some(&admin),
        Some(r#"{"reason":"LOGMARK-reason"}"#),
    )
    .unwrap();
    assert_eq!(s, 200, "{b}");
    let (s, _) = request(
        addr,
        "POST",
        "/v1/records/r-1/amendments",
        Some(&dr),
        Some(r#"{"reason":"LOGMARK-reason"}"#),
    )
    .unwrap();
    assert_eq!(s, 410);
    let _ = server.0.kill();
    let _ = server.0.wait();
    let text = std::fs::read_to_string(&log_path).unwrap();
    assert!(
        text.len() > 1000,
        "the trace log was written: {} bytes",
        text.len()
    );
    for m in markers {
        assert!(!text.contains(m), "{m} in the server log");
    }
}
