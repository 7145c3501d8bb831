//! Orphaned payloads (stored, but no record names them: a crash between a payload's
//! `put` and its record's commit) are removed by `medledger payloads reconcile` and by
//! `serve` at start; the command refuses to run while a server holds the data dir; and
//! `medledger bench payloads` runs (a tiny smoke run, no figures).

use actix_web::http::StatusCode;
use futures_util::StreamExt;
use serde_json::{json, Value};

use medledger::api::auth::Role;
use medledger::cli::bench_payloads::{self, PayloadsBenchParams};
use medledger::cli::payloads::{run_reconcile, ReconcileParams};
use medledger::serve::{app, Core, ServeConfig};
use medledger_payload::{PayloadConfig, Payloads, StoredPayload};

mod common;
use common::api::Env;

fn reconcile(dir: &std::path::Path) -> (i32, Value) {
    let params = ReconcileParams {
        data_dir: dir.to_path_buf(),
        master_key: None,
        ipfs_api: None,
    };
    let mut out = Vec::new();
    let code = run_reconcile(&params, &mut out);
    let value = serde_json::from_slice(&out).unwrap_or(Value::Null);
    (code, value)
}

/// A payload stored with no record, as a crash before its record's commit leaves it.
async fn orphan(payloads: &Payloads) -> StoredPayload {
    let body = futures_util::stream::once(async {
        Ok::<_, std::io::Error>(actix_web::web::Bytes::from_static(b"orphaned note"))
    });
    payloads.put(body, "text/plain").await.unwrap()
}

async fn readable(payloads: &Payloads, payload: &StoredPayload) -> Result<(), String> {
    let mut stream = payloads
        .get(payload)
        .await
        .map_err(|e| e.code().to_string())?;
    while let Some(piece) = stream.next().await {
        piece.map_err(|e| e.code().to_string())?;
    }
    Ok(())
}

#[actix_web::test]
async fn orphans_are_reconciled_by_command_and_at_start() {
    let Env { dir, core, .. } = Env::with(|config| config.rate_limit_per_sec = 0);
    let env_token = common::api::bearer(dir.path(), Role::Clinician, "dr-1", Some("h-1"));
    let svc = actix_web::test::init_service(app(core.state.clone())).await;
    let res = actix_web::test::call_service(
        &svc,
        actix_web::test::TestRequest::post()
            .uri("/v1/records")
            .insert_header(("Authorization", env_token.as_str()))
            .set_json(json!({"patient_id": "p-1", "hospital_id": "h-1",
                "record_type": "lab_result", "created_at": "2026-11-23T10:00:00Z",
                "metadata": {"title": "CBC"},
                "payload": {"content_type": "text/plain", "data": "kept"}}))
            .to_request(),
    )
    .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    // The answer holds the app's state (and so the ledger) until dropped.
    drop(res);
    let first = orphan(&core.state.payloads).await;

    // A server holds the data dir: the command must not run beside it.
    let (code, _) = reconcile(dir.path());
    assert_eq!(code, 2);
    assert!(readable(&core.state.payloads, &first).await.is_ok());
    drop(svc);
    core.close();
    drop(core);

    let (code, report) = reconcile(dir.path());
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["pinned_roots"], 2, "{report}");
    // The kept payload's key and the orphan's (records' content keys are never
    // candidates).
    assert_eq!(report["live_keys"], 2, "{report}");
    assert_eq!(report["orphan_roots_unpinned"], 1, "{report}");
    assert_eq!(report["orphan_keys_destroyed"], 1, "{report}");
    // Its ciphertext leaves the disk too (one raw block for a small payload).
    assert_eq!(report["blocks_removed"], 1, "{report}");
    assert!(report["bytes_removed"].as_u64().unwrap() > 0, "{report}");
    let (code, again) = reconcile(dir.path());
    assert_eq!(code, 0);
    assert_eq!(again["orphan_roots_unpinned"], 0, "{again}");
    assert_eq!(again["orphan_keys_destroyed"], 0, "{again}");
    assert_eq!(again["blocks_removed"], 0, "{again}");

    // Another orphan, then a server start: it is gone before anything is served; the
    // record's payload stays.
    let payload_dir = dir.path().join("payloads");
    let second = {
        let payloads = Payloads::open(PayloadConfig::new(&payload_dir)).unwrap();
        assert_eq!(
            readable(&payloads, &first).await.unwrap_err(),
            "payload_erased"
        );
        orphan(&payloads).await
    };
    let core = Core::open(&ServeConfig::new(dir.path().to_path_buf())).unwrap();
    assert_eq!(
        readable(&core.state.payloads, &second).await.unwrap_err(),
        "payload_erased"
    );
    let roots = core.state.payloads.pinned_roots().await.unwrap();
    assert_eq!(roots.len(), 1);
    assert!(!roots.contains(&second.cid) && !roots.contains(&first.cid));
    core.close();
}

#[test]
fn bench_payloads_runs() {
    let dir = tempfile::tempdir().unwrap();
    let report = bench_payloads::run(&PayloadsBenchParams {
        data_dir: dir.path().to_path_buf(),
        payloads: 40,
        payload_bytes: 4096,
        callers: 8,
    })
    .unwrap();
    assert_eq!(report["payloads"], 40, "{report}");
    assert!(report["fsyncs"].as_u64().unwrap() > 0, "{report}");
    assert!(report["fsyncs_per_payload"].as_f64().is_some(), "{report}");
}

/// A record id whose submission was refused after its text was sealed (its content key
/// stored, no transaction names it: the orderer's queue was full, say) can still be
/// created after a restart: the reconcile at start leaves record content keys alone.
/// Destroying one would make its record id unusable for good (a destroyed record key
/// stays destroyed).
#[actix_web::test]
async fn a_refused_record_id_can_be_created_after_a_restart() {
    let Env { dir, core, .. } = Env::new();
    core.state
        .payloads
        .keys()
        .record_key("r-refused")
        .await
        .unwrap();
    core.close();
    drop(core);
    let core = Core::open(&ServeConfig::new(dir.path().to_path_buf())).unwrap();
    let token = common::api::bearer(dir.path(), Role::Clinician, "dr-1", Some("h-1"));
    let svc = actix_web::test::init_service(app(core.state.clone())).await;
    let res = actix_web::test::call_service(
        &svc,
        actix_web::test::TestRequest::post()
            .uri("/v1/records")
            .insert_header(("Authorization", token.as_str()))
            .set_json(json!({"record_id": "r-refused", "patient_id": "p-1",
                "hospital_id": "h-1", "record_type": "note", "metadata": {"t": "x"}}))
            .to_request(),
    )
    .await;
    let status = res.status();
    let body = actix_web::test::read_body(res).await;
    assert_eq!(
        status,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&body)
    );
    drop(svc);
    core.close();
}

/// A clean stop marks the payload store, and the next start at the same height skips the
/// reconcile's ledger scan; a request that left its payload unresolved (here: a guard
/// dropped unresolved, as a cancelled upload leaves it) keeps the mark off, and a crash
/// (no close) leaves none: the next start reconciles.
#[actix_web::test]
async fn a_clean_stop_skips_the_reconcile_and_anything_else_does_not() {
    let Env { dir, core, .. } = Env::new();
    let config = ServeConfig::new(dir.path().to_path_buf());
    // An orphan put straight into the store (no request guards it): a clean stop does
    // not know of it, so the next start keeps it (the scan is skipped).
    let first = orphan(&core.state.payloads).await;
    core.close();
    drop(core);
    assert!(dir.path().join("payloads/clean-stop").exists());
    let core = Core::open(&config).unwrap();
    assert!(readable(&core.state.payloads, &first).await.is_ok());
    // Every open takes the mark away, durably.
    assert!(!dir.path().join("payloads/clean-stop").exists());
    // A request left a payload unresolved: no mark, and the next start removes both.
    let second = orphan(&core.state.payloads).await;
    let mut in_flight = core.state.payloads_unresolved.begin();
    in_flight.storing();
    drop(in_flight);
    core.close();
    drop(core);
    assert!(!dir.path().join("payloads/clean-stop").exists());
    let core = Core::open(&config).unwrap();
    for p in [&first, &second] {
        assert_eq!(
            readable(&core.state.payloads, p).await.unwrap_err(),
            "payload_erased"
        );
    }
    // A crash (no close): no mark, the next start reconciles.
    let third = orphan(&core.state.payloads).await;
    drop(core);
    let core = Core::open(&config).unwrap();
    assert_eq!(
        readable(&core.state.payloads, &third).await.unwrap_err(),
        "payload_erased"
    );
    core.close();
}

/// A multipart body: `record`, then `file`, then whatever `extra` holds.
fn multipart(record: &str, file: &[u8], extra: &str) -> (String, Vec<u8>) {
    let boundary = "medledgerRECONCILEboundary";
    let mut body = Vec::new();
    body.extend_from_slice(format!("--{boundary}\r\nContent-Disposition: form-data; name=\"record\"\r\nContent-Type: application/json\r\n\r\n{record}\r\n").as_bytes());
    body.extend_from_slice(format!("--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.bin\"\r\nContent-Type: text/plain\r\n\r\n").as_bytes());
    body.extend_from_slice(file);
    body.extend_from_slice(format!("\r\n{extra}--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

/// Requests refused before their payload was stored, or whose stored payload was
/// abandoned, leave nothing unnamed: the clean stop is still marked, so the next start
/// skips the reconcile. (Each of them used to keep the mark off.)
#[actix_web::test]
async fn refused_uploads_leave_the_clean_stop_mark() {
    let Env { dir, core, .. } = Env::with(|config| config.rate_limit_per_sec = 0);
    let token = common::api::bearer(dir.path(), Role::Clinician, "dr-1", Some("h-1"));
    let svc = actix_web::test::init_service(app(core.state.clone())).await;
    let record = json!({"patient_id": "p-1", "hospital_id": "h-1",
        "record_type": "lab_result", "created_at": "2026-11-23T10:00:00Z",
        "metadata": {"title": "CBC"}});
    let other_hospital = json!({"patient_id": "p-1", "hospital_id": "h-2",
        "record_type": "lab_result", "created_at": "2026-11-23T10:00:00Z",
        "metadata": {"title": "CBC"}, "payload": {"content_type": "text/plain", "data": "x"}});
    let extra_part = "--medledgerRECONCILEboundary\r\nContent-Disposition: form-data; name=\"more\"\r\n\r\nx\r\n";
    let cases: Vec<(&str, String, Vec<u8>, u16)> = vec![
        (
            "malformed JSON",
            "application/json".into(),
            b"{\"patient_id\":".to_vec(),
            400,
        ),
        (
            "another hospital, inline payload",
            "application/json".into(),
            other_hospital.to_string().into_bytes(),
            403,
        ),
        {
            let (ct, body) = multipart("{not json", b"note", "");
            ("multipart, malformed record part", ct, body, 400)
        },
        {
            let (ct, body) = multipart(&record.to_string(), b"note", extra_part);
            (
                "multipart, a part after the file (stored, then abandoned)",
                ct,
                body,
                400,
            )
        },
    ];
    for (what, content_type, body, status) in cases {
        let res = actix_web::test::call_service(
            &svc,
            actix_web::test::TestRequest::post()
                .uri("/v1/records")
                .insert_header(("Authorization", token.as_str()))
                .insert_header(("Content-Type", content_type))
                .set_payload(body)
                .to_request(),
        )
        .await;
        assert_eq!(res.status().as_u16(), status, "{what}");
    }
    assert!(!core.state.payloads_unresolved.any());
    drop(svc);
    core.close();
    drop(core);
    assert!(dir.path().join("payloads/clean-stop").exists());
}
