//! A patient's summary and the live aggregates over HTTP: what they count, what each
//! caller sees of them, that the summary is a read on the ledger, and that bad queries
//! are refused with their codes. (Their counts against a model of the fixtures, on every
//! backend, live and rebuilt: tests/views_match_a_model.rs.)

use actix_web::http::StatusCode;
use actix_web::test;
use serde_json::{json, Value};

use medledger::api::auth::Role;
use medledger::serve::app;

mod common;
use common::api::Env;

macro_rules! call {
    ($svc:expr, $token:expr, $req:expr) => {{
        let req = $req.insert_header(("Authorization", $token.clone()));
        let res = test::call_service($svc, req.to_request()).await;
        let status = res.status();
        let body: Value =
            serde_json::from_slice(&test::read_body(res).await).unwrap_or(Value::Null);
        (status, body)
    }};
}

fn record(id: &str, patient: &str, hospital: &str, record_type: &str, created_at: &str) -> Value {
    json!({"record_id": id, "patient_id": patient, "hospital_id": hospital,
        "record_type": record_type, "created_at": created_at,
        "metadata": {"title": "a title"}})
}

#[actix_web::test]
async fn a_summary_counts_shows_the_newest_and_is_a_read_on_the_ledger() {
    let env = Env::new();
    let svc = test::init_service(app(env.core.state.clone())).await;
    let admin = env.token(Role::Admin, "admin-1", None);
    let patient = env.token(Role::Patient, "p-1", None);
    let granted = env.token(Role::Clinician, "dr-g", Some("h-2"));
    let scoped = env.token(Role::Clinician, "dr-s", Some("h-2"));
    let auditor = env.token(Role::Auditor, "au-1", None);

    let records = [
        record("r-1", "p-1", "h-1", "lab_result", "2026-10-03T10:00:00Z"),
        record("r-2", "p-1", "h-1", "lab_result", "2026-11-05T10:00:00Z"),
        record("r-3", "p-1", "h-2", "imaging", "2026-11-06T10:00:00Z"),
        record("r-4", "p-1", "h-2", "lab_result", "2026-09-01T10:00:00Z"),
        record("r-5", "p-2", "h-1", "lab_result", "2026-11-07T10:00:00Z"),
    ];
    let (status, body) = call!(
        &svc,
        admin,
        test::TestRequest::post()
            .uri("/v1/records/batch")
            .set_json(json!({ "records": records }))
    );
    assert_eq!(
        (status, &body["failed"]),
        (StatusCode::OK, &json!(0)),
        "{body}"
    );
    let (status, body) = call!(
        &svc,
        admin,
        test::TestRequest::post()
            .uri("/v1/records/r-1/status")
            .set_json(json!({"status": "archived", "reason": "superseded"}))
    );
    assert_eq!(status, StatusCode::CREATED, "{body}");
    for (grantee, scope) in [("dr-g", json!([])), ("dr-s", json!(["imaging"]))] {
        let (status, body) = call!(
            &svc,
            patient,
            test::TestRequest::post()
                .uri("/v1/patients/p-1/grants")
                .set_json(json!({"grantee_id": grantee, "scope": scope}))
        );
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    let height = body["height"].as_u64().unwrap();
    assert!(height > 0);
    // Read one's writes: the views hold every block the ledger holds now (the reads
    // recorded before included).
    macro_rules! summary {
        ($token:expr) => {{
            let tip = env.core.state.ledger.tip().height;
            let uri = format!("/v1/patients/p-1/summary?min_height={tip}");
            call!(&svc, $token, test::TestRequest::get().uri(&uri))
        }};
    }

    let (status, s) = summary!(patient);
    assert_eq!(status, StatusCode::OK, "{s}");
    assert_eq!(s["records"], 4);
    assert_eq!(
        s["by_status"],
        json!({"active": 3, "archived": 1, "entered_in_error": 0})
    );
    let by_type = s["by_type"].as_array().unwrap();
    assert_eq!(by_type.len(), 2, "{s}");
    assert_eq!(by_type[0]["record_type"], "imaging");
    assert_eq!(by_type[0]["latest"]["record_id"], "r-3");
    assert_eq!(by_type[1]["record_type"], "lab_result");
    assert_eq!(by_type[1]["total"], 3);
    assert_eq!(
        by_type[1]["by_status"],
        json!({"active": 2, "archived": 1, "entered_in_error": 0})
    );
    // The newest by creation, not by the last change.
    assert_eq!(by_type[1]["latest"]["record_id"], "r-2");
    assert_eq!(
        by_type[1]["latest"]["metadata"],
        json!({"title": "a title"})
    );
    assert_eq!(s["active"]["count"], 3);
    let active: Vec<&str> = s["active"]["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["record_id"].as_str().unwrap())
        .collect();
    assert_eq!(active, ["r-3", "r-2", "r-4"]);
    let grantees: Vec<&str> = s["grants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["grantee_id"].as_str().unwrap())
        .collect();
    assert_eq!(grantees, ["dr-g", "dr-s"]);
    // The grants list pages: a full page says where the next starts, the last says none.
    let (status, page) = call!(
        &svc,
        patient,
        test::TestRequest::get().uri("/v1/patients/p-1/grants?limit=1")
    );
    assert_eq!(
        (
            status,
            page["items"][0]["grantee_id"].as_str(),
            page["next_after"].as_str()
        ),
        (StatusCode::OK, Some("dr-g"), Some("dr-g")),
        "{page}"
    );
    let (_, page) = call!(
        &svc,
        patient,
        test::TestRequest::get().uri("/v1/patients/p-1/grants?limit=1&after=dr-g")
    );
    assert_eq!(
        (page["items"][0]["grantee_id"].as_str(), &page["next_after"]),
        (Some("dr-s"), &Value::Null),
        "{page}"
    );
    let (_, page) = call!(
        &svc,
        patient,
        test::TestRequest::get().uri("/v1/patients/p-1/grants?limit=2")
    );
    assert_eq!(
        (page["items"].as_array().unwrap().len(), &page["next_after"]),
        (2, &Value::Null),
        "{page}"
    );
    assert_eq!(s["last_read"], Value::Null, "nothing was read before");

    // The summary was a read: the next one names it, and the access log holds it with
    // the records it showed.
    let (_, again) = summary!(auditor);
    assert_eq!(again["last_read"]["what"], "summary", "{again}");
    assert_eq!(again["last_read"]["reader"]["id"], "p-1");
    assert_eq!(
        again["grants"],
        Value::Null,
        "grants are the patient's and admins'"
    );
    let tip = env.core.state.ledger.tip().height;
    let (status, log) = call!(
        &svc,
        auditor,
        test::TestRequest::get().uri(&format!("/v1/patients/p-1/access-log?min_height={tip}"))
    );
    assert_eq!(status, StatusCode::OK, "{log}");
    let first = &log["items"][0];
    assert_eq!(first["what"], "summary");
    assert_eq!(first["reader"]["id"], "au-1");
    assert_eq!(
        first["record_ids"],
        json!(["r-3", "r-2", "r-4"]),
        "each record shown once"
    );

    // A clinician with a grant sees what it covers, and no grants or reads.
    let (status, g) = summary!(granted);
    assert_eq!(status, StatusCode::OK, "{g}");
    assert_eq!(
        (&g["records"], &g["grants"], &g["last_read"]),
        (&json!(4), &Value::Null, &Value::Null)
    );
    let (status, g) = summary!(scoped);
    assert_eq!(status, StatusCode::OK, "{g}");
    assert_eq!(g["records"], 1);
    assert_eq!(g["by_type"].as_array().unwrap().len(), 1);
    assert_eq!(g["active"]["items"][0]["record_id"], "r-3");
    assert!(!g.to_string().contains("lab_result"), "{g}");

    // Clear refusals.
    for (uri, code) in [
        ("/v1/patients/p%20x/summary", "invalid_id"),
        ("/v1/patients/p-1/summary?extra=1", "invalid_query"),
        (
            "/v1/patients/p-1/summary?purpose=curiosity",
            "invalid_purpose",
        ),
    ] {
        let (status, e) = call!(&svc, admin, test::TestRequest::get().uri(uri));
        assert_eq!(
            (status, e["error"]["code"].as_str()),
            (StatusCode::BAD_REQUEST, Some(code)),
            "{uri}: {e}"
        );
    }
    let (status, empty) = call!(
        &svc,
        admin,
        test::TestRequest::get().uri("/v1/patients/p-none/summary")
    );
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (&empty["records"], &empty["by_type"]),
        (&json!(0), &json!([]))
    );
}

#[actix_web::test]
async fn stats_group_filter_and_keep_to_the_callers_hospital() {
    let env = Env::new();
    let svc = test::init_service(app(env.core.state.clone())).await;
    let admin = env.token(Role::Admin, "admin-1", None);
    let records = [
        record("r-1", "p-1", "h-1", "lab_result", "2026-10-03T10:00:00Z"),
        record("r-2", "p-1", "h-1", "lab_result", "2026-11-05T10:00:00Z"),
        record("r-3", "p-2", "h-1", "imaging", "2026-11-30T23:59:59.999Z"),
        record("r-4", "p-3", "h-2", "lab_result", "2026-12-01T00:00:00Z"),
    ];
    let (status, body) = call!(
        &svc,
        admin,
        test::TestRequest::post()
            .uri("/v1/records/batch")
            .set_json(json!({ "records": records }))
    );
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = call!(
        &svc,
        admin,
        test::TestRequest::post()
            .uri("/v1/records/r-2/status")
            .set_json(json!({"status": "entered_in_error", "reason": "wrong patient"}))
    );
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let height = body["height"].as_u64().unwrap();
    macro_rules! stats {
        ($token:expr, $query:expr) => {{
            let uri = format!("/v1/stats?min_height={height}&{}", $query);
            call!(&svc, $token, test::TestRequest::get().uri(&uri))
        }};
    }

    let (status, s) = stats!(admin.clone(), "");
    assert_eq!(status, StatusCode::OK, "{s}");
    assert_eq!(s["group_by"], json!(["month"]));
    assert_eq!(s["total"], 4);
    assert_eq!(
        s["groups"],
        json!([{"month": "2026-12", "count": 1}, {"month": "2026-11", "count": 2}, {"month": "2026-10", "count": 1}])
    );
    let (_, s) = stats!(
        admin.clone(),
        "group_by=hospital,status&from=2026-11&to=2026-12"
    );
    assert_eq!(
        s["groups"],
        json!([{"hospital_id": "h-1", "status": "active", "count": 1},
               {"hospital_id": "h-1", "status": "entered_in_error", "count": 1}])
    );
    let (_, s) = stats!(admin.clone(), "group_by=type&status=active&hospital_id=h-1");
    assert_eq!(
        s["groups"],
        json!([{"record_type": "imaging", "count": 1}, {"record_type": "lab_result", "count": 1}])
    );
    let (_, s) = stats!(admin.clone(), "group_by=&type=lab_result");
    assert_eq!(s["groups"], json!([{"count": 3}]));

    // A clinician sees its own hospital's, by default; another's is refused.
    let dr = env.token(Role::Clinician, "dr-2", Some("h-2"));
    let (status, s) = stats!(dr.clone(), "group_by=hospital");
    assert_eq!(status, StatusCode::OK, "{s}");
    assert_eq!(s["groups"], json!([{"hospital_id": "h-2", "count": 1}]));
    let (status, _) = stats!(dr, "hospital_id=h-1");
    assert_eq!(status, StatusCode::FORBIDDEN);
    let patient = env.token(Role::Patient, "p-1", None);
    assert_eq!(stats!(patient, "").0, StatusCode::FORBIDDEN);

    for (query, code) in [
        ("group_by=ward", "invalid_group_by"),
        ("from=2026-13", "invalid_month"),
        ("to=2026-1", "invalid_month"),
        ("from=2026-11&to=2026-11", "invalid_range"),
        ("hospital_id=h%201", "invalid_id"),
        ("status=lost", "invalid_query"),
    ] {
        let (status, e) = stats!(admin.clone(), query);
        assert_eq!(
            (status, e["error"]["code"].as_str()),
            (StatusCode::BAD_REQUEST, Some(code)),
            "{query}: {e}"
        );
    }
}
