//! The HTTP API through actix's test service: every route's success and error paths,
//! with real tokens, a real ledger and real views in a temp dir.

use actix_web::http::StatusCode;
use actix_web::test;
use serde_json::{json, Value};

use medledger::api::auth::Role;
use medledger::serve::app;

#[macro_use]
mod common;
use common::api::Env;

fn env() -> Env {
    Env::new()
}

#[actix_web::test]
async fn records_flow_and_errors() {
    let env = env();
    let svc = test::init_service(app(env.core.state.clone())).await;
    let dr1 = env.token(Role::Clinician, "dr-1", Some("h-1"));
    let dr2 = env.token(Role::Clinician, "dr-2", Some("h-2"));
    let p1 = env.token(Role::Patient, "p-1", None);
    let p2 = env.token(Role::Patient, "p-2", None);

    // Health.
    let (s, _) = call!(&svc, test::TestRequest::get().uri("/healthz"));
    assert_eq!(s, StatusCode::OK);
    let (s, b) = call!(&svc, test::TestRequest::get().uri("/readyz"));
    assert_eq!(s, StatusCode::OK, "{b}");

    // No token, a bad token.
    let new = json!({"patient_id": "p-1", "hospital_id": "h-1", "record_type": "lab_result",
        "created_at": "2026-11-23T10:00:00Z", "metadata": {"title": "CBC"}});
    let (s, b) = call!(
        &svc,
        test::TestRequest::post().uri("/v1/records").set_json(&new)
    );
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("unauthorized"))
    );
    let (s, _) = call!(
        &svc,
        test::TestRequest::post()
            .uri("/v1/records")
            .insert_header(("Authorization", "Bearer x.y.z"))
            .set_json(&new)
    );
    assert_eq!(s, StatusCode::UNAUTHORIZED);

    // Create, durable and projected.
    let (s, b) = call!(
        &svc,
        test::TestRequest::post()
            .uri("/v1/records")
            .insert_header(("Authorization", dr1.as_str()))
            .set_json(&new)
    );
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let id = b["record_id"].as_str().unwrap().to_owned();
    assert_eq!(b["version"], 1);
    assert!(b["block_number"].as_u64().unwrap() >= 1);
    assert!(b["tx_id"].is_string() && b["position"].is_number());

    // Another hospital's clinician may not write for h-1.
    let (s, b) = call!(
        &svc,
        test::TestRequest::post()
            .uri("/v1/records")
            .insert_header(("Authorization", dr2.as_str()))
            .set_json(&new)
    );
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("forbidden"))
    );

    // Read: author, own patient yes; another patient and another hospital no.
    let uri = format!("/v1/records/{id}");
    for (who, want) in [
        (&dr1, StatusCode::OK),
        (&p1, StatusCode::OK),
        (&p2, StatusCode::FORBIDDEN),
        (&dr2, StatusCode::FORBIDDEN),
    ] {
        let (s, b) = call!(
            &svc,
            test::TestRequest::get()
                .uri(&uri)
                .insert_header(("Authorization", who.as_str()))
        );
        assert_eq!(s, want, "{b}");
    }
    let (_, rec) = call!(
        &svc,
        test::TestRequest::get()
            .uri(&uri)
            .insert_header(("Authorization", p1.as_str()))
    );
    assert_eq!(rec["record_id"], id.as_str());
    assert_eq!(rec["patient_id"], "p-1");
    assert_eq!(rec["hospital_id"], "h-1");
    assert_eq!(rec["record_type"], "lab_result");
    assert_eq!(rec["created_at"], "2026-11-23T10:00:00.000Z");
    assert_eq!(rec["status"], "active");
    assert_eq!(rec["metadata"]["title"], "CBC");
    let (s, b) = call!(
        &svc,
        test::TestRequest::get()
            .uri("/v1/records/r-missing")
            .insert_header(("Authorization", dr1.as_str()))
    );
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found"))
    );

    // Amend with optimistic concurrency.
    let amend = format!("/v1/records/{id}/amendments");
    let (s, b) = call!(&svc, test::TestRequest::post().uri(&amend).insert_header(("Authorization", dr1.as_str()))
        .set_json(json!({"reason": "corrected", "metadata": {"title": "CBC v2"}, "expected_version": 1})));
    assert_eq!((s, &b["version"]), (StatusCode::CREATED, &json!(2)), "{b}");
    let (s, b) = call!(
        &svc,
        test::TestRequest::post()
            .uri(&amend)
            .insert_header(("Authorization", dr1.as_str()))
            .set_json(json!({"reason": "stale", "expected_version": 1}))
    );
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("version_conflict"))
    );

    // Status: archive, then archiving again is invalid for the state.
    let status = format!("/v1/records/{id}/status");
    let (s, _) = call!(
        &svc,
        test::TestRequest::post()
            .uri(&status)
            .insert_header(("Authorization", dr1.as_str()))
            .set_json(json!({"status": "archived", "reason": "done"}))
    );
    assert_eq!(s, StatusCode::CREATED);
    let (s, b) = call!(
        &svc,
        test::TestRequest::post()
            .uri(&status)
            .insert_header(("Authorization", dr1.as_str()))
            .set_json(json!({"status": "archived", "reason": "again"}))
    );
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("status_unchanged"))
    );

    // History and time travel.
    let (s, h) = call!(
        &svc,
        test::TestRequest::get()
            .uri(&format!("/v1/records/{id}/history"))
            .insert_header(("Authorization", dr1.as_str()))
    );
    assert_eq!(s, StatusCode::OK);
    let versions: Vec<u64> = h["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["version"].as_u64().unwrap())
        .collect();
    assert_eq!(versions, [1, 2, 3]);
    let first_block = h["items"][0]["block_number"].as_u64().unwrap();
    let (s, old) = call!(
        &svc,
        test::TestRequest::get()
            .uri(&format!("/v1/records/{id}?as_of_block={}", first_block + 1))
            .insert_header(("Authorization", dr1.as_str()))
    );
    assert_eq!((s, &old["version"]), (StatusCode::OK, &json!(1)));
    let (s, _) = call!(
        &svc,
        test::TestRequest::get()
            .uri(&format!("/v1/records/{id}?as_of_block={first_block}"))
            .insert_header(("Authorization", dr1.as_str()))
    );
    assert_eq!(s, StatusCode::NOT_FOUND);

    // More records, then timelines newest first with a cursor.
    for i in 0..5 {
        let body = json!({"patient_id": "p-1", "hospital_id": "h-1", "record_type": "clinical_note",
            "created_at": format!("2026-11-1{i}T09:00:00Z")});
        let (s, _) = call!(
            &svc,
            test::TestRequest::post()
                .uri("/v1/records")
                .insert_header(("Authorization", dr1.as_str()))
                .set_json(body)
        );
        assert_eq!(s, StatusCode::CREATED);
    }
    let (s, page) = call!(
        &svc,
        test::TestRequest::get()
            .uri("/v1/patients/p-1/records?limit=4")
            .insert_header(("Authorization", p1.as_str()))
    );
    assert_eq!(s, StatusCode::OK, "{page}");
    let items = page["items"].as_array().unwrap();
    assert_eq!(items.len(), 4);
    assert_eq!(
        items[0]["record_id"],
        id.as_str(),
        "2026-11-23 is the newest"
    );
    let cursor = page["next_cursor"].as_str().unwrap();
    let (_, rest) = call!(
        &svc,
        test::TestRequest::get()
            .uri(&format!("/v1/patients/p-1/records?limit=4&cursor={cursor}"))
            .insert_header(("Authorization", p1.as_str()))
    );
    assert_eq!(rest["items"].as_array().unwrap().len(), 2);
    assert!(rest["next_cursor"].is_null());
    let (_, typed) = call!(
        &svc,
        test::TestRequest::get()
            .uri("/v1/patients/p-1/records?type=clinical_note")
            .insert_header(("Authorization", p1.as_str()))
    );
    assert_eq!(typed["items"].as_array().unwrap().len(), 5);
    let (s, b) = call!(
        &svc,
        test::TestRequest::get()
            .uri("/v1/patients/p-1/records?cursor=00ff")
            .insert_header(("Authorization", p1.as_str()))
    );
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_cursor"))
    );
    let (s, b) = call!(
        &svc,
        test::TestRequest::get()
            .uri("/v1/patients/p-1/records?limit=100000")
            .insert_header(("Authorization", p1.as_str()))
    );
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_limit"))
    );
    let (s, _) = call!(
        &svc,
        test::TestRequest::get()
            .uri("/v1/patients/p-2/records")
            .insert_header(("Authorization", p1.as_str()))
    );
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = call!(
        &svc,
        test::TestRequest::get()
            .uri("/v1/hospitals/h-1/records")
            .insert_header(("Authorization", dr2.as_str()))
    );
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, h1) = call!(
        &svc,
        test::TestRequest::get()
            .uri("/v1/hospitals/h-1/records")
            .insert_header(("Authorization", dr1.as_str()))
    );
    assert_eq!(
        (s, h1["items"].as_array().unwrap().len()),
        (StatusCode::OK, 6)
    );

    // Grants: p-1 lets dr-2 (another hospital) read; then revokes.
    let (s, b) = call!(
        &svc,
        test::TestRequest::post()
            .uri("/v1/patients/p-1/grants")
            .insert_header(("Authorization", p1.as_str()))
            .set_json(json!({"grantee_id": "dr-2"}))
    );
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let (s, _) = call!(
        &svc,
        test::TestRequest::get()
            .uri(&uri)
            .insert_header(("Authorization", dr2.as_str()))
    );
    assert_eq!(s, StatusCode::OK);
    let (s, _) = call!(
        &svc,
        test::TestRequest::post()
            .uri("/v1/patients/p-1/grants")
            .insert_header(("Authorization", p2.as_str()))
            .set_json(json!({"grantee_id": "dr-2"}))
    );
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, b) = call!(
        &svc,
        test::TestRequest::post()
            .uri("/v1/patients/p-1/grants")
            .insert_header(("Authorization", p1.as_str()))
            .set_json(json!({"grantee_id": "p-1"}))
    );
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("grant_to_self"))
    );
    let (s, _) = call!(
        &svc,
        test::TestRequest::delete()
            .uri("/v1/patients/p-1/grants/dr-2")
            .insert_header(("Authorization", p1.as_str()))
    );
    assert_eq!(s, StatusCode::OK);
    let (s, _) = call!(
        &svc,
        test::TestRequest::get()
            .uri(&uri)
            .insert_header(("Authorization", dr2.as_str()))
    );
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, b) = call!(
        &svc,
        test::TestRequest::delete()
            .uri("/v1/patients/p-1/grants/dr-2")
            .insert_header(("Authorization", p1.as_str()))
    );
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("unknown_grant"))
    );

    // Export: NDJSON, one line per record.
    let res = test::call_service(
        &svc,
        test::TestRequest::get()
            .uri("/v1/patients/p-1/export")
            .insert_header(("Authorization", p1.as_str()))
            .to_request(),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    let body = test::read_body(res).await;
    let lines: Vec<Value> = std::str::from_utf8(&body)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 6);

    // Bad bodies: malformed, unknown field, wrong type, too large, a payload (not yet).
    let post = |body: &str| {
        test::TestRequest::post()
            .uri("/v1/records")
            .insert_header(("Authorization", dr1.as_str()))
            .insert_header(("Content-Type", "application/json"))
            .set_payload(body.to_owned())
    };
    let (s, b) = call!(&svc, post("{not json"));
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_body"))
    );
    let (s, _) = call!(
        &svc,
        post(r#"{"patient_id":"p-1","hospital_id":"h-1","record_type":"x","surprise":1}"#)
    );
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, b) = call!(
        &svc,
        post(&format!(
            r#"{{"patient_id":"p-1","hospital_id":"h-1","record_type":"x","metadata":{{"t":"{}"}}}}"#,
            "a".repeat(100_000)
        ))
    );
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, Some("body_too_large"))
    );
    let (s, b) = call!(
        &svc,
        post(r#"{"patient_id":"p 1","hospital_id":"h-1","record_type":"x"}"#)
    );
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_field"))
    );
    let (s, b) = call!(
        &svc,
        test::TestRequest::post()
            .uri("/v1/records")
            .insert_header(("Authorization", dr1.as_str()))
            .insert_header(("Content-Type", "text/plain"))
            .set_payload("hi")
    );
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Some("unsupported_media_type")
        )
    );
    let (s, b) = call!(
        &svc,
        post(
            r#"{"patient_id":"p-1","hospital_id":"h-1","record_type":"x","payload":{"content_type":"text/plain","base64":"aGk="}}"#
        )
    );
    // Payloads are stored encrypted (tests/http_payloads.rs covers them in depth).
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let (s, b) = call!(&svc, test::TestRequest::get().uri("/v1/nothing"));
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("no_route"))
    );
    // A route under another method: 405 with what it takes, in the one error body.
    let res = test::call_service(
        &svc,
        test::TestRequest::put()
            .uri("/v1/patients/p-1/grants")
            .to_request(),
    )
    .await;
    assert_eq!(res.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(res.headers().get("allow").unwrap(), "GET, POST");
    let b: Value = serde_json::from_slice(&test::read_body(res).await).unwrap();
    assert_eq!(b["error"]["code"], "method_not_allowed", "{b}");
    let (s, b) = call!(
        &svc,
        test::TestRequest::default()
            .method(actix_web::http::Method::TRACE)
            .uri("/v1/records/r-1")
    );
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (StatusCode::METHOD_NOT_ALLOWED, Some("method_not_allowed"))
    );

    // Batch: per-item outcomes.
    let (s, b) = call!(&svc, test::TestRequest::post().uri("/v1/records/batch").insert_header(("Authorization", dr1.as_str()))
        .set_json(json!({"records": [new, {"patient_id": "p-1", "hospital_id": "h-2", "record_type": "x"}, {"bad": true}]})));
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(
        (b["committed"].as_u64(), b["failed"].as_u64()),
        (Some(1), Some(2))
    );
    assert_eq!(b["items"][1]["status"], 403);
    assert_eq!(b["items"][2]["status"], 400);

    // Metrics name what happened.
    let res = test::call_service(&svc, test::TestRequest::get().uri("/metrics").to_request()).await;
    let text = String::from_utf8(test::read_body(res).await.to_vec()).unwrap();
    assert!(text.contains("medledger_committed_total"));
    assert!(text.contains("route=\"/v1/records\""));
    // What holds memory: the allocators (this test binary's allocator is glibc's, so
    // malloc's in-use bytes are the process's heap) and each RocksDB by kind.
    let gauge = |line: &str| -> u64 {
        let found = text.lines().find(|l| l.starts_with(line));
        let value = found.and_then(|l| l.rsplit(' ').next()?.parse().ok());
        value.unwrap_or_else(|| panic!("/metrics has no {line}"))
    };
    assert!(gauge("medledger_heap_bytes{kind=\"malloc_in_use\"}") > 1 << 20);
    gauge("medledger_heap_bytes{kind=\"mimalloc_committed\"}");
    gauge("medledger_heap_bytes{kind=\"malloc_free_held\"}");
    for store in ["views", "ledger_index", "search"] {
        gauge(&format!(
            "medledger_{store}_memory_bytes{{kind=\"block_cache\"}}"
        ));
        gauge(&format!(
            "medledger_{store}_memory_bytes{{kind=\"memtables\"}}"
        ));
    }
    env.core.close();
}

/// A server set up for an identity provider (`--jwt-public-key`, `--jwt-issuer`,
/// `--jwt-audience`): its tokens pass whatever the case of `Bearer`; a token for another
/// service or from another issuer is a 401 in the server's own words.
#[actix_web::test]
async fn a_server_configured_for_an_identity_provider_checks_its_tokens() {
    let key_dir = tempfile::tempdir().unwrap();
    let public_key = key_dir.path().join("idp.pub.pem");
    std::fs::write(
        &public_key,
        include_bytes!("../fixtures/jwt/test-rsa.pub.pem"),
    )
    .unwrap();
    let env = Env::with(|config| {
        config.jwt_public_key = Some(public_key.clone());
        config.jwt_rules = medledger::api::auth::TokenRules {
            issuer: Some("https://idp.example/realms/h".into()),
            audience: Some("medledger".into()),
            ..Default::default()
        };
    });
    let svc = test::init_service(app(env.core.state.clone())).await;
    let signing =
        jsonwebtoken::EncodingKey::from_rsa_pem(include_bytes!("../fixtures/jwt/test-rsa.pem"))
            .unwrap();
    let token = |iss: &str, aud: &str| {
        let claims = json!({
            "sub": "admin-1", "role": "admin", "iss": iss, "aud": aud,
            "exp": medledger::api::auth::now_secs() + 300,
        });
        let header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
        jsonwebtoken::encode(&header, &claims, &signing).unwrap()
    };
    let good = token("https://idp.example/realms/h", "medledger");
    for scheme in ["Bearer", "bearer", "BEARER"] {
        let (s, b) = call!(
            &svc,
            test::TestRequest::get()
                .uri("/v1/patients/p-1/records")
                .insert_header(("Authorization", format!("{scheme} {good}")))
        );
        assert_eq!(s, StatusCode::OK, "{scheme}: {b}");
    }
    for (bad, message) in [
        (
            token("https://idp.example/realms/h", "another-service"),
            "the bearer token is not for this service (aud)",
        ),
        (
            token("https://evil.example", "medledger"),
            "the bearer token is from another issuer (iss)",
        ),
    ] {
        let (s, b) = call!(
            &svc,
            test::TestRequest::get()
                .uri("/v1/patients/p-1/records")
                .insert_header(("Authorization", format!("Bearer {bad}")))
        );
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{b}");
        assert_eq!(b["error"]["code"], "unauthorized");
        assert_eq!(b["error"]["message"], message);
    }
    // The data dir's HS256 tokens are not this server's any more.
    let (s, _) = call!(
        &svc,
        test::TestRequest::get()
            .uri("/v1/patients/p-1/records")
            .insert_header(("Authorization", env.token(Role::Admin, "admin-1", None)))
    );
    assert_eq!(s, StatusCode::UNAUTHORIZED);
}

/// A record and its history carry a validator of their version: `If-None-Match` with it
/// answers 304 until the record changes, and only to a caller who may read it.
#[actix_web::test]
async fn record_reads_answer_304_for_the_version_the_client_holds() {
    let env = env();
    let svc = test::init_service(app(env.core.state.clone())).await;
    let dr1 = env.token(Role::Clinician, "dr-1", Some("h-1"));
    let dr2 = env.token(Role::Clinician, "dr-2", Some("h-2"));
    let (s, b) = call!(
        &svc,
        test::TestRequest::post()
            .uri("/v1/records")
            .insert_header(("Authorization", dr1.clone()))
            .set_json(
                json!({"record_id": "r-c", "patient_id": "p-1", "hospital_id": "h-1",
                "record_type": "lab_result", "metadata": {"n": 1}})
            )
    );
    assert_eq!(s, StatusCode::CREATED, "{b}");
    for uri in ["/v1/records/r-c", "/v1/records/r-c/history"] {
        let get = |token: &str, etag: Option<&str>| {
            let mut req = test::TestRequest::get()
                .uri(uri)
                .insert_header(("Authorization", token.to_owned()));
            if let Some(etag) = etag {
                req = req.insert_header(("If-None-Match", etag.to_owned()));
            }
            req.to_request()
        };
        let res = test::call_service(&svc, get(&dr1, None)).await;
        assert_eq!(res.status(), StatusCode::OK, "{uri}");
        let etag = res
            .headers()
            .get("etag")
            .unwrap()
            .to_str()
            .unwrap()
            .to_owned();
        assert!(etag.starts_with("W/\""), "{uri}: {etag}");
        assert_eq!(
            res.headers().get("cache-control").unwrap(),
            "private, no-cache"
        );
        // The client holds this version: 304, no body, the same validator.
        let res = test::call_service(&svc, get(&dr1, Some(&etag))).await;
        assert_eq!(res.status(), StatusCode::NOT_MODIFIED, "{uri}");
        assert_eq!(res.headers().get("etag").unwrap().to_str().unwrap(), etag);
        assert!(test::read_body(res).await.is_empty());
        // In a list, and without the weak prefix: still a match.
        let listed = format!("\"other\", {}", etag.trim_start_matches("W/"));
        let res = test::call_service(&svc, get(&dr1, Some(&listed))).await;
        assert_eq!(res.status(), StatusCode::NOT_MODIFIED, "{uri}");
        // A caller who may not read the record learns nothing from its validator.
        let res = test::call_service(&svc, get(&dr2, Some(&etag))).await;
        assert_eq!(res.status(), StatusCode::FORBIDDEN, "{uri}");
        // A new version: the old validator no longer matches.
        let (s, b) = call!(
            &svc,
            test::TestRequest::post()
                .uri("/v1/records/r-c/amendments")
                .insert_header(("Authorization", dr1.clone()))
                .set_json(json!({"reason": "fix", "metadata": {"n": 2}}))
        );
        assert_eq!(s, StatusCode::CREATED, "{b}");
        let res = test::call_service(&svc, get(&dr1, Some(&etag))).await;
        assert_eq!(res.status(), StatusCode::OK, "{uri}");
        assert_ne!(res.headers().get("etag").unwrap().to_str().unwrap(), etag);
    }
}

/// A timeline page carries a validator of the owner's last change: `If-None-Match` with
/// it answers 304 (no rows read) until a record of the timeline or a grant of the patient
/// changes, and only for the same caller and query.
#[actix_web::test]
async fn timeline_pages_answer_304_until_the_timeline_changes() {
    let env = env();
    let svc = test::init_service(app(env.core.state.clone())).await;
    let dr1 = env.token(Role::Clinician, "dr-1", Some("h-1"));
    let dr2 = env.token(Role::Clinician, "dr-2", Some("h-2"));
    let patient = env.token(Role::Patient, "p-7", None);
    let post = |uri: &str, token: &str, body: serde_json::Value| {
        test::TestRequest::post()
            .uri(uri)
            .insert_header(("Authorization", token.to_owned()))
            .set_json(body)
            .to_request()
    };
    let create = |id: &str, patient_id: &str| {
        post(
            "/v1/records",
            &dr1,
            json!({"record_id": id, "patient_id": patient_id, "hospital_id": "h-1",
                "record_type": "note", "metadata": {"n": 1}}),
        )
    };
    let res = test::call_service(&svc, create("r-t1", "p-7")).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    // (status, etag, item count) of a GET with an optional If-None-Match.
    let get = |uri: &'static str, token: &str, etag: Option<&str>| {
        let mut req = test::TestRequest::get()
            .uri(uri)
            .insert_header(("Authorization", token.to_owned()));
        if let Some(etag) = etag {
            req = req.insert_header(("If-None-Match", etag.to_owned()));
        }
        let svc = &svc;
        let req = req.to_request();
        async move {
            let res = test::call_service(svc, req).await;
            let status = res.status();
            let etag = res
                .headers()
                .get("etag")
                .map(|v| v.to_str().unwrap().to_owned());
            if etag.is_some() {
                assert_eq!(
                    res.headers().get("cache-control").unwrap(),
                    "private, no-cache"
                );
            }
            let body = test::read_body(res).await;
            let items = match status {
                StatusCode::OK => serde_json::from_slice::<serde_json::Value>(&body).unwrap()
                    ["items"]
                    .as_array()
                    .unwrap()
                    .len(),
                _ => {
                    assert!(body.is_empty(), "{uri}: {status} {body:?}");
                    0
                }
            };
            (status, etag, items)
        }
    };
    const P7: &str = "/v1/patients/p-7/records";
    let (s, tag, n) = get(P7, &dr1, None).await;
    assert_eq!((s, n), (StatusCode::OK, 1));
    let tag = tag.expect("a patient's timeline has a validator");
    assert!(tag.starts_with("W/\""), "{tag}");
    let (s, again, _) = get(P7, &dr1, Some(&tag)).await;
    assert_eq!(
        (s, again.as_deref()),
        (StatusCode::NOT_MODIFIED, Some(&*tag))
    );
    // Another caller, or another query, does not match it.
    assert_eq!(get(P7, &patient, Some(&tag)).await.0, StatusCode::OK);
    assert_eq!(
        get("/v1/patients/p-7/records?limit=1", &dr1, Some(&tag))
            .await
            .0,
        StatusCode::OK
    );
    // Another patient's record leaves this timeline's validator alone.
    let res = test::call_service(&svc, create("r-t2", "p-8")).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    assert_eq!(get(P7, &dr1, Some(&tag)).await.0, StatusCode::NOT_MODIFIED);
    // An amendment of one of its records changes it.
    let res = test::call_service(
        &svc,
        post(
            "/v1/records/r-t1/amendments",
            &dr1,
            json!({"reason": "fix", "metadata": {"n": 2}}),
        ),
    )
    .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let (s, tag2, n) = get(P7, &dr1, Some(&tag)).await;
    assert_eq!((s, n), (StatusCode::OK, 1));
    assert_ne!(tag2.as_deref(), Some(&*tag));
    // A clinician of another hospital sees nothing, then a grant changes that.
    let (s, before, n) = get(P7, &dr2, None).await;
    assert_eq!((s, n), (StatusCode::OK, 0));
    let before = before.unwrap();
    assert_eq!(
        get(P7, &dr2, Some(&before)).await.0,
        StatusCode::NOT_MODIFIED
    );
    let res = test::call_service(
        &svc,
        post(
            "/v1/patients/p-7/grants",
            &patient,
            json!({"grantee_id": "dr-2"}),
        ),
    )
    .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let (s, _, n) = get(P7, &dr2, Some(&before)).await;
    assert_eq!((s, n), (StatusCode::OK, 1));
    // A grant that runs out changes the validator when it does, with no event.
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let soon = medledger::chaincode::Timestamp(now_ms + 1_500).to_string();
    let res = test::call_service(
        &svc,
        post(
            "/v1/patients/p-7/grants",
            &patient,
            json!({"grantee_id": "dr-3", "expires_at": soon}),
        ),
    )
    .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let dr3 = env.token(Role::Clinician, "dr-3", Some("h-3"));
    let (s, granted, n) = get(P7, &dr3, None).await;
    assert_eq!((s, n), (StatusCode::OK, 1));
    let granted = granted.unwrap();
    assert_eq!(
        get(P7, &dr3, Some(&granted)).await.0,
        StatusCode::NOT_MODIFIED
    );
    std::thread::sleep(std::time::Duration::from_millis(1_700));
    let (s, _, n) = get(P7, &dr3, Some(&granted)).await;
    assert_eq!((s, n), (StatusCode::OK, 0));
    // Its own hospital's timeline has a validator for a clinician; the records it wrote
    // have none (they may be of hospitals it no longer works at, read through grants).
    let (s, own, _) = get("/v1/hospitals/h-1/records", &dr1, None).await;
    assert_eq!(s, StatusCode::OK);
    let own = own.expect("a clinician's own hospital has a validator");
    assert_eq!(
        get("/v1/hospitals/h-1/records", &dr1, Some(&own)).await.0,
        StatusCode::NOT_MODIFIED
    );
    let (s, none, _) = get("/v1/clinicians/dr-1/records", &dr1, None).await;
    assert_eq!((s, none), (StatusCode::OK, None));
}
