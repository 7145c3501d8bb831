//! `medledger serve` with `OTEL_ENABLED=true` exports its spans over OTLP/HTTP.
//!
//! A collector stand-in on loopback takes the exporter's `POST /v1/traces` requests and
//! decodes their protobuf bodies with the OpenTelemetry project's own message types. The
//! test submits a record under a caller's W3C `traceparent` and checks that the request
//! span joins that trace with the route and status, that the wait for the block's fsync
//! is its child, that the writer's block append is exported too, and that neither the
//! record's metadata nor its payload appears in anything exported.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::server::{self, Running};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, KeyValue};
use opentelemetry_proto::tonic::trace::v1::{span::SpanKind, Span};
use prost::Message;

/// One request the collector received: path, content type, body.
type Received = (String, String, Vec<u8>);

/// Answers every HTTP/1.1 request on `listener` with 200 and an empty body, and sends
/// what it got on `tx`. Stops with the test process (daemon threads).
fn collector(listener: TcpListener, tx: mpsc::Sender<Received>) {
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { return };
            let tx = tx.clone();
            std::thread::spawn(move || serve_connection(conn, &tx));
        }
    });
}

fn serve_connection(conn: TcpStream, tx: &mpsc::Sender<Received>) {
    conn.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut out = conn.try_clone().unwrap();
    let mut reader = BufReader::new(conn);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let path = line.split(' ').nth(1).unwrap_or("").to_owned();
        let (mut length, mut content_type) = (0usize, String::new());
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).unwrap_or(0) == 0 {
                return;
            }
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            let (name, value) = header.split_once(':').unwrap_or((header, ""));
            match name.to_ascii_lowercase().as_str() {
                "content-length" => length = value.trim().parse().unwrap(),
                "content-type" => content_type = value.trim().to_owned(),
                "transfer-encoding" => panic!("the exporter sent a chunked body"),
                _ => {}
            }
        }
        assert!(length <= 16 << 20, "an export of {length} bytes");
        let mut body = vec![0; length];
        reader.read_exact(&mut body).unwrap();
        let _ = tx.send((path, content_type, body));
        let answer =
            "HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\nContent-Length: 0\r\n\r\n";
        if out.write_all(answer.as_bytes()).is_err() {
            return;
        }
    }
}

fn attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a any_value::Value> {
    attrs
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| v.value.as_ref())
}

#[test]
fn spans_reach_the_collector_in_the_callers_trace_and_carry_no_clinical_data() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let collector_url = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::channel();
    collector(listener, tx);

    let dir = tempfile::tempdir().unwrap();
    let addr = server::free_port();
    let mut srv = Running(server::start_with_env(
        dir.path(),
        addr,
        &[
            ("OTEL_ENABLED", "true"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &collector_url),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
            ("OTEL_SERVICE_NAME", "medledger-test"),
        ],
    ));
    let token = server::token(dir.path(), "clinician", "dr-1", Some("h-1"));

    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller_span = "00f067aa0ba902b7";
    let marker = "MARKER-a9c4e1";
    let body = format!(
        r#"{{"patient_id":"p-1","hospital_id":"h-1","record_type":"lab_result",
            "metadata":{{"note":"{marker}-metadata"}},
            "payload":{{"content_type":"text/plain","data":"{marker}-payload"}}}}"#
    );
    let traceparent = format!("00-{trace_id}-{caller_span}-01");
    let (status, receipt) = server::request_with_headers(
        addr,
        "POST",
        "/v1/records",
        Some(&token),
        Some(&body),
        &[("traceparent", &traceparent)],
    )
    .unwrap();
    assert_eq!(status, 201, "{receipt}");

    // Collect exports until the request's span, its commit and a block append are in.
    let mut spans: Vec<Span> = Vec::new();
    let mut bodies: Vec<Vec<u8>> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    let has = |spans: &[Span], name: &str| spans.iter().any(|s| s.name == name);
    while !(has(&spans, "POST /v1/records")
        && has(&spans, "ledger.commit")
        && has(&spans, "block.append"))
    {
        let left = deadline.saturating_duration_since(Instant::now());
        let (path, content_type, body) = rx
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("spans missing after 30 s; got {spans:?}"));
        assert_eq!(path, "/v1/traces");
        assert_eq!(content_type, "application/x-protobuf");
        let export = ExportTraceServiceRequest::decode(body.as_slice()).unwrap();
        for rs in &export.resource_spans {
            let resource = rs.resource.as_ref().unwrap();
            assert_eq!(
                attr(&resource.attributes, "service.name"),
                Some(&any_value::Value::StringValue("medledger-test".into()))
            );
            spans.extend(rs.scope_spans.iter().flat_map(|s| s.spans.iter().cloned()));
        }
        bodies.push(body);
    }

    let request = spans.iter().find(|s| s.name == "POST /v1/records").unwrap();
    assert_eq!(
        hex::encode(&request.trace_id),
        trace_id,
        "joins the caller's trace"
    );
    assert_eq!(hex::encode(&request.parent_span_id), caller_span);
    assert_eq!(request.kind, SpanKind::Server as i32);
    assert_eq!(
        attr(&request.attributes, "http.route"),
        Some(&any_value::Value::StringValue("/v1/records".into()))
    );
    assert_eq!(
        attr(&request.attributes, "http.response.status_code"),
        Some(&any_value::Value::IntValue(201))
    );
    assert_eq!(
        attr(&request.attributes, "http.request.method"),
        Some(&any_value::Value::StringValue("POST".into()))
    );

    let commit = spans.iter().find(|s| s.name == "ledger.commit").unwrap();
    assert_eq!(commit.trace_id, request.trace_id);
    assert_eq!(
        commit.parent_span_id, request.span_id,
        "the commit is the request's child"
    );
    assert_eq!(
        attr(&commit.attributes, "block"),
        Some(&any_value::Value::IntValue(
            receipt["block_number"].as_i64().unwrap()
        ))
    );
    assert!(
        commit.end_time_unix_nano - commit.start_time_unix_nano
            <= request.end_time_unix_nano - request.start_time_unix_nano
    );
    let append = spans.iter().find(|s| s.name == "block.append").unwrap();
    assert!(attr(&append.attributes, "txs").is_some());

    // Nothing clinical in any export: no metadata, no payload, no record id.
    let record_id = receipt["record_id"].as_str().unwrap();
    for body in &bodies {
        for needle in [marker, record_id, "p-1"] {
            assert!(
                !body.windows(needle.len()).any(|w| w == needle.as_bytes()),
                "`{needle}` exported"
            );
        }
    }

    // SIGTERM: the server drains and exits cleanly with the exporter on.
    let pid = srv.0.id().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = srv.0.try_wait().unwrap() {
            assert!(status.success(), "{status}");
            break;
        }
        assert!(Instant::now() < deadline, "no exit 30 s after SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
}
