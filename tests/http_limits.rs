//! Limits and formats at the HTTP edge: the per-client rate limit (429 with Retry-After),
//! the batch route's larger body limit, the CSV export, and `serve --config`.

use actix_web::http::StatusCode;
use actix_web::test;
use serde_json::{json, Value};

use medledger::api::auth::Role;
use medledger::serve::app;

mod common;
use common::api::Env;

#[actix_web::test]
async fn the_rate_limit_answers_429_with_retry_after() {
    let env = Env::with(|c| c.rate_limit_per_sec = 5);
    let svc = test::init_service(app(env.core.state.clone())).await;
    let peer: std::net::SocketAddr = "127.0.0.1:40000".parse().unwrap();
    // A burst of twice the rate passes, then 429.
    let mut statuses = Vec::new();
    for _ in 0..12 {
        let res = test::call_service(
            &svc,
            test::TestRequest::get()
                .uri("/healthz")
                .peer_addr(peer)
                .to_request(),
        )
        .await;
        let retry = res
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_owned());
        let status = res.status();
        let body: Value = serde_json::from_slice(&test::read_body(res).await).unwrap();
        if status == StatusCode::TOO_MANY_REQUESTS {
            assert_eq!(body["error"]["code"], "rate_limited");
            assert_eq!(retry.as_deref(), Some("1"));
        }
        statuses.push(status.as_u16());
    }
    assert_eq!(&statuses[..10], &[200; 10]);
    assert_eq!(&statuses[10..], &[429, 429]);
    // Another address has its own budget.
    let res = test::call_service(
        &svc,
        test::TestRequest::get()
            .uri("/healthz")
            .peer_addr("127.0.0.2:40000".parse().unwrap())
            .to_request(),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    drop(svc);
    env.core.close();
}

#[actix_web::test]
async fn batches_may_exceed_the_json_limit_and_exports_speak_csv() {
    let env = Env::with(|c| c.rate_limit_per_sec = 0);
    let svc = test::init_service(app(env.core.state.clone())).await;
    let dr = env.token(Role::Clinician, "dr-1", Some("h-1"));

    // 300 records of ~600 bytes: ~180 KiB, over the 64 KiB of the other JSON routes.
    let filler = "x".repeat(500);
    let records: Vec<Value> = (0..300)
        .map(|i| {
            json!({"patient_id": "p-1", "hospital_id": "h-1", "record_type": "lab_result",
                "record_id": format!("r-{i:04}"),
                "metadata": {"title": format!("=cmd|' /C calc'!A{i}"), "note": filler}})
        })
        .collect();
    let body = json!({ "records": records });
    assert!(body.to_string().len() > 64 * 1024);
    let res = test::call_service(
        &svc,
        test::TestRequest::post()
            .uri("/v1/records/batch")
            .insert_header(("Authorization", dr.as_str()))
            .set_json(&body)
            .to_request(),
    )
    .await;
    let status = res.status();
    let answer: Value = serde_json::from_slice(&test::read_body(res).await).unwrap();
    assert_eq!(status, StatusCode::OK, "{answer}");
    // The same batch with a single record of 40 KiB metadata each, beyond 2 MiB: 413.
    let big = "y".repeat(10 * 1024);
    let huge: Vec<Value> = (0..300)
        .map(|i| {
            json!({"patient_id": "p-1", "hospital_id": "h-1", "record_type": "x",
            "record_id": format!("q-{i}"), "metadata": {"a": big}})
        })
        .collect();
    let res = test::call_service(
        &svc,
        test::TestRequest::post()
            .uri("/v1/records/batch")
            .insert_header(("Authorization", dr.as_str()))
            .set_json(json!({ "records": huge }))
            .to_request(),
    )
    .await;
    assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let answer: Value = serde_json::from_slice(&test::read_body(res).await).unwrap();
    assert_eq!(answer["error"]["code"], "body_too_large");

    // CSV: a header, one line per record, newest first, formulas defused.
    let res = test::call_service(
        &svc,
        test::TestRequest::get()
            .uri("/v1/patients/p-1/export")
            .insert_header(("Authorization", dr.as_str()))
            .insert_header(("Accept", "text/csv"))
            .to_request(),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res
        .headers()
        .get("content-type")
        .unwrap()
        .to_str()
        .unwrap()
        .starts_with("text/csv"));
    let text = String::from_utf8(test::read_body(res).await.to_vec()).unwrap();
    let lines: Vec<&str> = text.split("\r\n").filter(|l| !l.is_empty()).collect();
    assert_eq!(lines.len(), 301, "header + 300 records");
    assert!(lines[0].starts_with("record_id,patient_id,hospital_id,record_type"));
    assert!(lines[1].starts_with("r-"));
    // The metadata column is quoted JSON; the formula inside it is text, not a formula
    // (the field starts with `{`), and no field starts with `=`.
    assert!(lines
        .iter()
        .all(|l| !l.starts_with('=') && !l.contains(",=")));
    // NDJSON stays the default.
    let res = test::call_service(
        &svc,
        test::TestRequest::get()
            .uri("/v1/patients/p-1/export")
            .insert_header(("Authorization", dr.as_str()))
            .to_request(),
    )
    .await;
    let text = String::from_utf8(test::read_body(res).await.to_vec()).unwrap();
    assert_eq!(text.lines().count(), 300);
    for line in text.lines() {
        let v: Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["patient_id"], "p-1");
    }
    drop(svc);
    env.core.close();
}

/// `serve --config FILE`: an unknown key stops the server with the known keys listed;
/// flags beat the file.
#[::core::prelude::v1::test]
fn serve_config_file_is_checked() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("medledger.toml");
    std::fs::write(&file, "lisen = \"127.0.0.1:1\"\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_medledger"))
        .args(["serve", "--config"])
        .arg(&file)
        .arg("--data-dir")
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("unknown key `lisen`") && err.contains("listen"),
        "{err}"
    );

    // A bad value from the file is reported by the flag's own parser.
    std::fs::write(&file, "batch_timeout_ms = \"soon\"\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_medledger"))
        .args(["serve", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("soon"), "{err}");
}

/// A JSON body that stops coming is answered 408 `body_timeout` once its grace is over,
/// not held open for as long as the client likes.
#[actix_web::test]
async fn a_body_that_stops_coming_is_answered_408() {
    use actix_web::dev::Payload;
    use futures_util::StreamExt;
    let env = Env::with(|c| c.body_grace = std::time::Duration::from_millis(300));
    let svc = test::init_service(app(env.core.state.clone())).await;
    let token = env.token(Role::Clinician, "dr-1", Some("h-1"));
    // `{"record_id":` and then nothing, ever.
    let stalled = futures_util::stream::once(async {
        Ok::<_, actix_web::error::PayloadError>(actix_web::web::Bytes::from_static(
            b"{\"record_id\":",
        ))
    })
    .chain(futures_util::stream::pending());
    let req = test::TestRequest::post()
        .uri("/v1/records")
        .insert_header(("Authorization", token))
        .insert_header(("Content-Type", "application/json"))
        .to_request();
    let (req, _) = req.replace_payload(Payload::from(
        Box::pin(stalled) as std::pin::Pin<Box<dyn futures_util::Stream<Item = _>>>
    ));
    let started = std::time::Instant::now();
    let res = test::call_service(&svc, req).await;
    assert_eq!(res.status(), StatusCode::REQUEST_TIMEOUT);
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    let body: Value = serde_json::from_slice(&test::read_body(res).await).unwrap();
    assert_eq!(body["error"]["code"], "body_timeout", "{body}");
}

/// What a real server answers on a raw connection to which `send` wrote: the status,
/// the headers (lowercased names), and the body, read until the server closes.
fn raw_answer(
    addr: std::net::SocketAddr,
    send: impl FnOnce(&mut std::net::TcpStream),
) -> (u16, String, Value) {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(60)))
        .unwrap();
    send(&mut s);
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    // Up to the close (or a reset after it: what arrived before counts).
    while let Ok(n) = s.read(&mut buf) {
        if n == 0 {
            break;
        }
        raw.extend_from_slice(&buf[..n]);
    }
    common::server::parse_answer(&raw)
}

/// The answers actix's HTTP/1 layer gives before any route sees the request (a request
/// that is not HTTP/1.1, a raw non-UTF-8 path, a head of 128 KiB or more, a head that
/// never finishes) carry the one JSON error body with a stable code, like every other
/// error (vendor/actix-http/MEDLEDGER.md). They had none.
#[::core::prelude::v1::test]
fn actix_own_answers_carry_the_json_error_body() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let addr = common::server::free_port();
    let mut server = common::server::start(dir.path(), addr);
    let cases: [(&str, Vec<u8>, u16, &str); 4] = [
        (
            "a header line without a colon",
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n".to_vec(),
            400,
            "malformed_request",
        ),
        (
            "a raw non-UTF-8 path",
            b"GET /v1/records/\xff\xfe HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
            400,
            "malformed_request",
        ),
        (
            "a request line that is not HTTP",
            b"HELLO THERE\r\n\r\n".to_vec(),
            400,
            "malformed_request",
        ),
        (
            // Exactly the 128 KiB buffer and no end of the head: the server has read
            // all of it when it answers (unread bytes would make its close a reset).
            "a head of 128 KiB",
            {
                let mut head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ".to_vec();
                head.resize(128 << 10, b'a');
                head
            },
            431,
            "headers_too_large",
        ),
    ];
    for (what, bytes, status, code) in cases {
        let (got, head, body) = raw_answer(addr, |s| {
            let _ = s.write_all(&bytes);
        });
        assert_eq!(got, status, "{what}: {head}");
        assert!(
            head.contains("content-type: application/json"),
            "{what}: {head}"
        );
        assert_eq!(body["error"]["code"], code, "{what}: {body}");
        assert!(body["error"]["message"].is_string(), "{what}: {body}");
    }
    // A head that never finishes: 408 after `serve`'s 30 s.
    let started = std::time::Instant::now();
    let (got, head, body) = raw_answer(addr, |s| {
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            .unwrap();
    });
    assert_eq!(got, 408, "{head}");
    assert!(started.elapsed() >= std::time::Duration::from_secs(25));
    assert!(head.contains("content-type: application/json"), "{head}");
    assert_eq!(body["error"]["code"], "head_timeout", "{body}");
    // The server is well after all of it.
    assert_eq!(
        common::server::request(addr, "GET", "/healthz", None, None)
            .unwrap()
            .0,
        200
    );
    let _ = server.kill();
    let _ = server.wait();
}
