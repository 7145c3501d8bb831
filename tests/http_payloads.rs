//! Payloads through the HTTP API: inline JSON and base64, multipart uploads, the streamed
//! and audited read, who may read, the AbsoluteMaxBytes limit, erasure by crypto-shredding,
//! bad input, and that no plaintext payload byte reaches any file of the data dir.

use actix_web::http::StatusCode;
use actix_web::test;
use serde_json::{json, Value};

use medledger::api::auth::Role;
use medledger::serve::app;

mod common;
use common::api::Env;

fn env(absolute_max_bytes: u32) -> Env {
    Env::with(|config| {
        config.rate_limit_per_sec = 0;
        config.orderer.cutter.absolute_max_bytes = absolute_max_bytes;
        config.orderer.cutter.preferred_max_bytes = absolute_max_bytes.min(2 * 1024 * 1024);
    })
}
use medledger_views::query::Views;

macro_rules! call {
    ($svc:expr, $req:expr) => {{
        let res = test::call_service($svc, $req.to_request()).await;
        let status = res.status();
        let headers = res.headers().clone();
        let body = test::read_body(res).await;
        (status, headers, body)
    }};
}

fn json_of(body: &[u8]) -> Value {
    serde_json::from_slice(body).unwrap_or(Value::Null)
}

fn multipart(record: &Value, file: &[u8], content_type: &str) -> (String, Vec<u8>) {
    let boundary = "medledgerTESTboundary7MA4YWxk";
    let mut body = Vec::new();
    body.extend_from_slice(format!("--{boundary}\r\nContent-Disposition: form-data; name=\"record\"\r\nContent-Type: application/json\r\n\r\n{record}\r\n").as_bytes());
    body.extend_from_slice(format!("--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"scan.bin\"\r\nContent-Type: {content_type}\r\n\r\n").as_bytes());
    body.extend_from_slice(file);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

use common::files_under as files;

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[actix_web::test]
async fn payloads_round_trip_are_audited_limited_and_erased() {
    let env = env(4 * 1024 * 1024);
    let svc = test::init_service(app(env.core.state.clone())).await;
    let dr = env.token(Role::Clinician, "dr-1", Some("h-1"));
    let dr_other = env.token(Role::Clinician, "dr-9", Some("h-9"));
    let patient = env.token(Role::Patient, "p-1", None);
    let auditor = env.token(Role::Auditor, "au-1", None);
    let admin = env.token(Role::Admin, "admin-1", None);
    let marker = "PLAINTEXT-MARKER-Observation-hemoglobin-13.7-g/dL";

    // 1. An inline JSON payload (the minimum contract of POST /v1/records).
    let (s, _, b) = call!(
        &svc,
        test::TestRequest::post()
            .uri("/v1/records")
            .insert_header(("Authorization", dr.as_str()))
            .set_json(
                json!({"patient_id": "p-1", "hospital_id": "h-1", "record_type": "lab_result",
                "created_at": "2026-11-23T10:00:00Z", "metadata": {"title": "CBC"},
                "payload": {"content_type": "application/fhir+json",
                            "data": {"resourceType": "Observation", "note": marker}}})
            )
    );
    assert_eq!(s, StatusCode::CREATED, "{}", String::from_utf8_lossy(&b));
    let r1 = json_of(&b)["record_id"].as_str().unwrap().to_owned();
    let (s, _, b) = call!(
        &svc,
        test::TestRequest::get()
            .uri(&format!("/v1/records/{r1}"))
            .insert_header(("Authorization", dr.as_str()))
    );
    assert_eq!(s, StatusCode::OK);
    let rec = json_of(&b);
    assert_eq!(rec["payload"]["content_type"], "application/fhir+json");
    assert!(rec["payload"]["cid"].as_str().unwrap().starts_with("Qm"));
    let expected = json!({"resourceType": "Observation", "note": marker}).to_string();
    assert_eq!(rec["payload"]["size"], expected.len());
    let (s, h, b) = call!(
        &svc,
        test::TestRequest::get()
            .uri(&format!("/v1/records/{r1}/payload?purpose=treatment"))
            .insert_header(("Authorization", dr.as_str()))
    );
    assert_eq!(s, StatusCode::OK);
    assert_eq!(h.get("content-type").unwrap(), "application/fhir+json");
    assert_eq!(&b[..], expected.as_bytes());
    assert_eq!(
        h.get("x-payload-sha256").unwrap().to_str().unwrap(),
        rec["payload"]["sha256"].as_str().unwrap()
    );

    // 2. Who may read it: the patient yes; an auditor, another hospital no.
    for (token, status) in [
        (&patient, StatusCode::OK),
        (&auditor, StatusCode::FORBIDDEN),
        (&dr_other, StatusCode::FORBIDDEN),
    ] {
        let (s, _, _) = call!(
            &svc,
            test::TestRequest::get()
                .uri(&format!("/v1/records/{r1}/payload"))
                .insert_header(("Authorization", token.as_str()))
        );
        assert_eq!(s, status);
    }
    // Each successful read is on the ledger, in the record's access log.
    let height = env.core.state.ledger.tip().height;
    env.core.state.projector.nudge();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let trail = loop {
        let trail = Views::new(env.core.state.views.as_ref())
            .access_log("p-1", Some(&r1), None, 100)
            .unwrap()
            .items;
        if trail.len() >= 3 || std::time::Instant::now() > deadline {
            break trail;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    // Newest first: p-1's and dr-1's payload reads, after dr-1's read of the record.
    let who: Vec<(&str, &str)> = trail
        .iter()
        .map(|a| (a.reader_id.as_str(), a.what.as_str()))
        .collect();
    assert_eq!(
        who,
        [("p-1", "payload"), ("dr-1", "payload"), ("dr-1", "record")],
        "access log after height {height}"
    );

    // 3. Bytes as base64, and a 1.5 MiB multipart upload (several 256 KiB chunks).
    let bin: Vec<u8> = (0..70_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let b64 = base64_encode(&bin);
    let (s, _, b) = call!(
        &svc,
        test::TestRequest::post()
            .uri("/v1/records")
            .insert_header(("Authorization", dr.as_str()))
            .set_json(
                json!({"patient_id": "p-1", "hospital_id": "h-1", "record_type": "imaging",
                "payload": {"content_type": "application/dicom", "base64": b64}})
            )
    );
    assert_eq!(
        s,
        StatusCode::PAYLOAD_TOO_LARGE,
        "the JSON route stays small: {}",
        String::from_utf8_lossy(&b)
    );
    let small: Vec<u8> = bin[..20_000].to_vec();
    let (s, _, b) = call!(
        &svc,
        test::TestRequest::post()
            .uri("/v1/records")
            .insert_header(("Authorization", dr.as_str()))
            .set_json(
                json!({"patient_id": "p-1", "hospital_id": "h-1", "record_type": "imaging",
                "payload": {"content_type": "application/dicom", "base64": base64_encode(&small)}})
            )
    );
    assert_eq!(s, StatusCode::CREATED, "{}", String::from_utf8_lossy(&b));
    let r2 = json_of(&b)["record_id"].as_str().unwrap().to_owned();
    let (_, _, b) = call!(
        &svc,
        test::TestRequest::get()
            .uri(&format!("/v1/records/{r2}/payload"))
            .insert_header(("Authorization", dr.as_str()))
    );
    assert_eq!(&b[..], &small[..]);

    let mut big = Vec::with_capacity(1_500_000);
    while big.len() < 1_500_000 {
        big.extend_from_slice(marker.as_bytes());
        big.extend_from_slice(&(big.len() as u32).to_le_bytes());
    }
    let (ct, body) = multipart(
        &json!({"patient_id": "p-1", "hospital_id": "h-1", "record_type": "discharge_summary"}),
        &big,
        "application/pdf",
    );
    let (s, _, b) = call!(
        &svc,
        test::TestRequest::post()
            .uri("/v1/records")
            .insert_header(("Authorization", dr.as_str()))
            .insert_header(("Content-Type", ct.as_str()))
            .set_payload(body)
    );
    assert_eq!(s, StatusCode::CREATED, "{}", String::from_utf8_lossy(&b));
    let r3 = json_of(&b)["record_id"].as_str().unwrap().to_owned();
    let (s, h, b) = call!(
        &svc,
        test::TestRequest::get()
            .uri(&format!("/v1/records/{r3}/payload"))
            .insert_header(("Authorization", dr.as_str()))
    );
    assert_eq!(s, StatusCode::OK);
    assert_eq!(h.get("content-type").unwrap(), "application/pdf");
    assert!(
        b[..] == big[..],
        "the multipart payload reads back byte for byte"
    );

    // 4. Over AbsoluteMaxBytes (4 MiB here): 413, and no record.
    let huge = vec![7u8; 4 * 1024 * 1024 + 1];
    let (ct, body) = multipart(
        &json!({"record_id": "r-huge", "patient_id": "p-1", "hospital_id": "h-1", "record_type": "imaging"}),
        &huge,
        "application/dicom",
    );
    let (s, _, b) = call!(
        &svc,
        test::TestRequest::post()
            .uri("/v1/records")
            .insert_header(("Authorization", dr.as_str()))
            .insert_header(("Content-Type", ct.as_str()))
            .set_payload(body)
    );
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(json_of(&b)["error"]["code"], "payload_too_large");
    let (s, _, _) = call!(
        &svc,
        test::TestRequest::get()
            .uri("/v1/records/r-huge")
            .insert_header(("Authorization", dr.as_str()))
    );
    assert_eq!(s, StatusCode::NOT_FOUND);
    // Another hospital's clinician cannot upload, and nothing is stored for them.
    let (ct, body) = multipart(
        &json!({"patient_id": "p-1", "hospital_id": "h-1", "record_type": "imaging"}),
        b"x",
        "application/dicom",
    );
    let (s, _, _) = call!(
        &svc,
        test::TestRequest::post()
            .uri("/v1/records")
            .insert_header(("Authorization", dr_other.as_str()))
            .insert_header(("Content-Type", ct.as_str()))
            .set_payload(body)
    );
    assert_eq!(s, StatusCode::FORBIDDEN);

    // 5. Bad input: each a 400 with its code.
    for (payload, code) in [
        (json!({"content_type": "text/plain"}), "invalid_payload"),
        (
            json!({"content_type": "text/plain", "data": 1, "base64": "AA=="}),
            "invalid_payload",
        ),
        (
            json!({"content_type": "text/plain", "base64": "not base64!"}),
            "invalid_payload",
        ),
        (
            json!({"content_type": "not a mime type", "data": 1}),
            "invalid_content_type",
        ),
        (
            json!({"content_type": "text/plain", "data": 1, "extra": 2}),
            "invalid_payload",
        ),
    ] {
        let (s, _, b) = call!(
            &svc,
            test::TestRequest::post()
                .uri("/v1/records")
                .insert_header(("Authorization", dr.as_str()))
                .set_json(
                    json!({"patient_id": "p-1", "hospital_id": "h-1", "record_type": "x",
                    "payload": payload})
                )
        );
        assert_eq!(
            (s, json_of(&b)["error"]["code"].as_str()),
            (StatusCode::BAD_REQUEST, Some(code))
        );
    }
    let (s, _, b) = call!(
        &svc,
        test::TestRequest::post()
            .uri("/v1/records")
            .insert_header(("Authorization", dr.as_str()))
            .insert_header(("Content-Type", "multipart/form-data; boundary=zz"))
            .set_payload(
                "--zz\r\nContent-Disposition: form-data; name=\"file\"\r\n\r\nabc\r\n--zz--\r\n"
            )
    );
    assert_eq!(
        (s, json_of(&b)["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_multipart"))
    );
    let (s, _, b) = call!(
        &svc,
        test::TestRequest::post()
            .uri("/v1/records/batch")
            .insert_header(("Authorization", dr.as_str()))
            .set_json(
                json!({"records": [{"patient_id": "p-1", "hospital_id": "h-1", "record_type": "x",
                "payload": {"content_type": "text/plain", "data": 1}}]})
            )
    );
    assert_eq!(s, StatusCode::OK);
    assert_eq!(json_of(&b)["items"][0]["error"]["code"], "payload_in_batch");

    // 6. No plaintext payload byte in any file of the data dir (the ledger holds only
    // the CID, size and SHA-256; the views the same; blocks are ciphertext).
    env.core.state.views.flush().unwrap();
    for f in files(env.dir.path()) {
        let bytes = std::fs::read(&f).unwrap();
        assert!(
            !contains(&bytes, marker.as_bytes()),
            "plaintext payload found in {}",
            f.display()
        );
    }

    // The store's status: three payloads pinned, no Kubo node configured.
    let (s, _, b) = call!(
        &svc,
        test::TestRequest::get()
            .uri("/v1/ipfs/status")
            .insert_header(("Authorization", auditor.as_str()))
    );
    assert_eq!(s, StatusCode::OK);
    let st = json_of(&b);
    assert_eq!(st["embedded"]["pinned_payloads"], 3, "{st}");
    assert!(st["embedded"]["bytes_stored"].as_u64().unwrap() > 1_500_000);
    assert!(st["kubo"].is_null());
    let (s, _, _) = call!(
        &svc,
        test::TestRequest::get()
            .uri("/v1/ipfs/status")
            .insert_header(("Authorization", dr.as_str()))
    );
    assert_eq!(s, StatusCode::FORBIDDEN);

    // 7. Erasure: admins only; afterwards the payload is gone for everyone, the record and
    // the ledger remain, and a repeat is harmless.
    let (s, _, _) = call!(
        &svc,
        test::TestRequest::post()
            .uri(&format!("/v1/records/{r3}/erase"))
            .insert_header(("Authorization", dr.as_str()))
            .set_json(json!({"reason": "patient request"}))
    );
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _, b) = call!(
        &svc,
        test::TestRequest::post()
            .uri(&format!("/v1/records/{r3}/erase"))
            .insert_header(("Authorization", admin.as_str()))
            .set_json(json!({"reason": "patient request"}))
    );
    assert_eq!(s, StatusCode::OK, "{}", String::from_utf8_lossy(&b));
    assert_eq!(json_of(&b)["version"], 2);
    let (s, _, b) = call!(
        &svc,
        test::TestRequest::get()
            .uri(&format!("/v1/records/{r3}/payload"))
            .insert_header(("Authorization", admin.as_str()))
    );
    assert_eq!(
        (s, json_of(&b)["error"]["code"].as_str()),
        (StatusCode::GONE, Some("payload_erased"))
    );
    let (_, _, b) = call!(
        &svc,
        test::TestRequest::get()
            .uri(&format!("/v1/records/{r3}"))
            .insert_header(("Authorization", dr.as_str()))
    );
    assert_eq!(json_of(&b)["payload_erased"], true);
    let (s, _, b) = call!(
        &svc,
        test::TestRequest::post()
            .uri(&format!("/v1/records/{r3}/erase"))
            .insert_header(("Authorization", admin.as_str()))
            .set_json(json!({"reason": "again"}))
    );
    assert_eq!(s, StatusCode::OK);
    assert_eq!(json_of(&b)["already_erased"], true);
    let (s, _, b) = call!(
        &svc,
        test::TestRequest::post()
            .uri(&format!("/v1/records/{r1}/erase"))
            .insert_header(("Authorization", admin.as_str()))
            .set_json(json!({"reason": "x", "expected_version": 9}))
    );
    assert_eq!(
        (s, json_of(&b)["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("version_conflict"))
    );
    // The ledger still verifies after erasure.
    drop(svc);
    let Env { dir, core, .. } = env;
    core.close();
    drop(core);
    let mut out = Vec::new();
    let code = medledger::cli::verify::run(dir.path(), &mut out);
    assert_eq!(code, 0, "{}", String::from_utf8_lossy(&out));
}

fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}
