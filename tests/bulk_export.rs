//! Bulk exports over HTTP: a job's files hold every record in scope, once, by type, with
//! the checksums the manifest names; every record exported is a read on the ledger; who
//! may start, see and delete one; and a job a crash interrupted (its files longer than
//! its state says) resumes at the next start and ends with the same files.

use std::time::{Duration, Instant};

use actix_web::http::StatusCode;
use actix_web::test;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use medledger::api::auth::Role;
use medledger::serve::{app, Core, ServeConfig};

mod common;
use common::api::Env;

macro_rules! call {
    ($svc:expr, $token:expr, $req:expr) => {{
        let req = $req.insert_header(("Authorization", $token.clone()));
        let res = test::call_service($svc, req.to_request()).await;
        let status = res.status();
        let body = test::read_body(res).await.to_vec();
        (status, body)
    }};
}

fn json_of(body: &[u8]) -> Value {
    serde_json::from_slice(body).unwrap_or(Value::Null)
}

/// 60 records: p-0..p-9 × 6, types lab_result / imaging / note, hospitals h-1 / h-2.
fn records() -> Vec<Value> {
    (0..60)
        .map(|i| {
            let record_type = ["lab_result", "imaging", "note"][i % 3];
            json!({"record_id": format!("r-{i:02}"), "patient_id": format!("p-{}", i % 10),
                   "hospital_id": if i % 2 == 0 { "h-1" } else { "h-2" },
                   "record_type": record_type,
                   "created_at": format!("2026-11-{:02}T10:00:00Z", 1 + i % 28),
                   "metadata": {"title": format!("record {i}")}})
        })
        .collect()
}

/// Polls the export at `url` until it is no longer running (at most 30 s).
macro_rules! finished {
    ($svc:expr, $token:expr, $url:expr) => {{
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (status, body) = call!($svc, $token, test::TestRequest::get().uri($url));
            let manifest = json_of(&body);
            if status == StatusCode::OK {
                break manifest;
            }
            assert_eq!(status, StatusCode::ACCEPTED, "{manifest}");
            assert_eq!(manifest["state"], "running");
            assert!(
                Instant::now() < deadline,
                "the export did not end: {manifest}"
            );
            actix_web::rt::time::sleep(Duration::from_millis(20)).await;
        }
    }};
}

#[actix_web::test]
async fn an_export_writes_every_record_in_scope_once_by_type_and_records_the_reads() {
    let env = Env::new();
    let svc = test::init_service(app(env.core.state.clone())).await;
    let admin = env.token(Role::Admin, "admin-1", None);
    let auditor = env.token(Role::Auditor, "au-1", None);
    let (status, body) = call!(
        &svc,
        admin,
        test::TestRequest::post()
            .uri("/v1/records/batch")
            .set_json(json!({ "records": records() }))
    );
    assert_eq!(status, StatusCode::OK, "{}", json_of(&body));
    let height = json_of(&body)["items"][59]["result"]["height"]
        .as_u64()
        .unwrap();
    env.core
        .state
        .projector
        .wait_for_height(height, Duration::from_secs(10))
        .unwrap();

    // Everything, as an auditor.
    let (status, body) = call!(
        &svc,
        auditor,
        test::TestRequest::post()
            .uri("/v1/exports")
            .set_json(json!({"purpose": "public_health"}))
    );
    assert_eq!(status, StatusCode::ACCEPTED, "{}", json_of(&body));
    let url = json_of(&body)["status_url"].as_str().unwrap().to_owned();
    let manifest = finished!(&svc, auditor, &url);
    assert_eq!(manifest["state"], "complete", "{manifest}");
    assert_eq!(
        (&manifest["records"], &manifest["progress"]),
        (&json!(60), &json!(1.0))
    );
    let files = manifest["files"].as_array().unwrap();
    let types: Vec<&str> = files
        .iter()
        .map(|f| f["record_type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["imaging", "lab_result", "note"]);
    let mut seen = Vec::new();
    for f in files {
        let (status, bytes) = call!(
            &svc,
            auditor,
            test::TestRequest::get().uri(f["url"].as_str().unwrap())
        );
        assert_eq!(status, StatusCode::OK);
        assert_eq!(bytes.len() as u64, f["bytes"].as_u64().unwrap());
        assert_eq!(
            hex::encode(Sha256::digest(&bytes)),
            f["sha256"].as_str().unwrap()
        );
        let lines: Vec<Value> = bytes
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_slice(l).unwrap())
            .collect();
        assert_eq!(lines.len() as u64, f["records"].as_u64().unwrap());
        for line in lines {
            assert_eq!(line["record_type"], f["record_type"]);
            assert!(line["metadata"]["title"]
                .as_str()
                .unwrap()
                .starts_with("record "));
            seen.push(line["record_id"].as_str().unwrap().to_owned());
        }
    }
    seen.sort();
    let all: Vec<String> = (0..60).map(|i| format!("r-{i:02}")).collect();
    assert_eq!(seen, all, "every record once");

    // Each patient's access log holds the export, under the auditor, with its records.
    let tip = env.core.state.ledger.tip().height;
    let (_, body) = call!(
        &svc,
        admin,
        test::TestRequest::get().uri(&format!("/v1/patients/p-3/access-log?min_height={tip}"))
    );
    let log = json_of(&body);
    let export = log["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["what"] == "export")
        .unwrap_or_else(|| panic!("no export in {log}"));
    assert_eq!(
        (&export["reader"]["id"], &export["purpose"]),
        (&json!("au-1"), &json!("public_health"))
    );
    let mut ids: Vec<&str> = export["record_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    ids.sort();
    assert_eq!(ids, ["r-03", "r-13", "r-23", "r-33", "r-43", "r-53"]);

    // A scope: one hospital, one type, half of November.
    let (status, body) = call!(
        &svc,
        admin,
        test::TestRequest::post()
            .uri("/v1/exports")
            .set_json(json!({
            "hospital_id": "h-1", "record_type": "lab_result",
            "from": "2026-11-01T00:00:00Z", "to": "2026-11-15T00:00:00Z"}))
    );
    assert_eq!(status, StatusCode::ACCEPTED);
    let scoped_url = json_of(&body)["status_url"].as_str().unwrap().to_owned();
    let scoped = finished!(&svc, admin, &scoped_url);
    // lab_result is i % 3 == 0, h-1 is i even: i % 6 == 0, created day 1 + i % 28 < 15.
    let want = (0..60).filter(|i| i % 6 == 0 && 1 + i % 28 < 15).count();
    assert_eq!(scoped["records"], json!(want), "{scoped}");
    assert_eq!(scoped["files"].as_array().unwrap().len(), 1);

    // Who may do what: clinicians and patients may not start one; an auditor sees its
    // own only (another's is not found), an admin every one.
    let dr = env.token(Role::Clinician, "dr-1", Some("h-1"));
    let (status, _) = call!(
        &svc,
        dr,
        test::TestRequest::post()
            .uri("/v1/exports")
            .set_json(json!({}))
    );
    assert_eq!(status, StatusCode::FORBIDDEN);
    let other = env.token(Role::Auditor, "au-2", None);
    let (status, _) = call!(&svc, other, test::TestRequest::get().uri(&url));
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = call!(&svc, admin, test::TestRequest::get().uri(&url));
    assert_eq!(status, StatusCode::OK);
    for (body, code) in [
        (
            json!({"from": "2026-11-02T00:00:00Z", "to": "2026-11-01T00:00:00Z"}),
            "invalid_range",
        ),
        (json!({"purpose": "curiosity"}), "invalid_purpose"),
        (json!({"hospital_id": "h 1"}), "invalid_field"),
        (json!({"ward": "3"}), "invalid_body"),
    ] {
        let (status, e) = call!(
            &svc,
            admin,
            test::TestRequest::post()
                .uri("/v1/exports")
                .set_json(body.clone())
        );
        assert_eq!(
            (
                status,
                json_of(&e)["error"]["code"].as_str().map(str::to_owned)
            ),
            (StatusCode::BAD_REQUEST, Some(code.to_owned())),
            "{body}"
        );
    }

    // Deleted, it is gone with its files.
    let (status, _) = call!(&svc, admin, test::TestRequest::delete().uri(&scoped_url));
    assert_eq!(status, StatusCode::OK);
    let (status, _) = call!(&svc, admin, test::TestRequest::get().uri(&scoped_url));
    assert_eq!(status, StatusCode::NOT_FOUND);
    let id = scoped_url.rsplit('/').next().unwrap();
    assert!(!env.dir.path().join("exports").join(id).exists());
}

#[actix_web::test]
async fn an_interrupted_export_resumes_at_the_next_start_with_the_same_files() {
    let dir = tempfile::tempdir().unwrap();
    let config = ServeConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        workers: 1,
        ..ServeConfig::new(dir.path().to_path_buf())
    };
    let core = Core::open(&config).unwrap();
    let token = common::api::bearer(dir.path(), Role::Admin, "admin-1", None);
    let (url, manifest) = {
        let svc = test::init_service(app(core.state.clone())).await;
        let (status, body) = call!(
            &svc,
            token,
            test::TestRequest::post()
                .uri("/v1/records/batch")
                .set_json(json!({ "records": records() }))
        );
        assert_eq!(status, StatusCode::OK);
        let height = json_of(&body)["items"][59]["result"]["height"]
            .as_u64()
            .unwrap();
        core.state
            .projector
            .wait_for_height(height, Duration::from_secs(10))
            .unwrap();
        let (_, body) = call!(
            &svc,
            token,
            test::TestRequest::post()
                .uri("/v1/exports")
                .set_json(json!({}))
        );
        let url = json_of(&body)["status_url"].as_str().unwrap().to_owned();
        let manifest = finished!(&svc, token, &url);
        (url, manifest)
    };
    core.close();
    drop(core);

    // As a crash half way would leave it: the state back at the start, running, with no
    // checksums, and the files longer than that state says (lines written after it).
    let id = url.rsplit('/').next().unwrap();
    let job_dir = dir.path().join("exports").join(id);
    let state_path = job_dir.join("state.json");
    let mut state: Value = serde_json::from_slice(&std::fs::read(&state_path).unwrap()).unwrap();
    state["stage"] = json!("running");
    state["after"] = Value::Null;
    state["rows"] = json!(0);
    state["records"] = json!(0);
    state["finished_at"] = Value::Null;
    for (_, f) in state["files"].as_object_mut().unwrap() {
        f["records"] = json!(0);
        f["bytes"] = json!(0);
        f["sha256"] = Value::Null;
    }
    std::fs::write(&state_path, serde_json::to_vec(&state).unwrap()).unwrap();
    let mut note = std::fs::OpenOptions::new()
        .append(true)
        .open(job_dir.join("note.ndjson"))
        .unwrap();
    std::io::Write::write_all(&mut note, b"{\"a torn line").unwrap();
    drop(note);

    let core = Core::open(&config).unwrap();
    let svc = test::init_service(app(core.state.clone())).await;
    let resumed = finished!(&svc, token, &url);
    assert_eq!(resumed["state"], "complete", "{resumed}");
    assert_eq!(resumed["records"], manifest["records"]);
    assert_eq!(
        resumed["files"], manifest["files"],
        "the same files, the same checksums"
    );
    core.close();
}
