//! Mutation fuzzing of every route (issue 27): for each route of `api::ROUTES`, requests
//! made from a valid one with damaged path parameters, query strings, bodies and
//! tokens. Every answer must be below 500, every 4xx must be the one JSON error body
//! (`{"error": {"code", ...}}`), every status must be one the OpenAPI document lists for
//! the operation, and no answer may name a server path. Bounded: a fixed
//! number of requests per route, the same ones on every run (`MEDLEDGER_FUZZ_ROUNDS`,
//! `MEDLEDGER_FUZZ_SEED` for more or other ones).

use actix_web::http::Method;
use actix_web::test;
use serde_json::{json, Value};

use medledger::api::auth::Role;
use medledger::api::ROUTES;
use medledger::serve::app;

#[macro_use]
mod common;
use common::api::Env;
use common::fuzz::{rounds, Rng};

/// Path segments and query values that break parsers: empty, dots, encoded NUL and
/// invalid UTF-8, a slash, huge and negative numbers, long strings.
fn nasty(rng: &mut Rng) -> String {
    let long = "a".repeat(1 + rng.below(6_000));
    let choices = [
        "",
        ".",
        "..",
        "%2e%2e",
        "%00",
        "%ff%fe",
        "r-1%2Fx",
        "%E2%98%83",
        "%F0%9F%92%A9",
        "0",
        "-1",
        "1e999",
        "NaN",
        "18446744073709551615",
        "18446744073709551616",
        "-9223372036854775808",
        "true",
        "null",
        "%5B%5D",
        "2026-13-45T99:99:99Z",
        "2026-01-01T00:00:00.000Z",
        "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff",
        long.as_str(),
    ];
    rng.pick(&choices).to_string()
}

/// A value for a path parameter: usually a real one, sometimes a nasty one.
fn param(rng: &mut Rng, route: &str, name: &str) -> String {
    if rng.below(3) == 0 {
        return nasty(rng);
    }
    match name {
        "number" => "1".into(),
        "hash" => "00".repeat(32),
        "grantee" => "dr-2".into(),
        _ if route.starts_with("/v1/patients/") => "p-1".into(),
        _ if route.starts_with("/v1/clinicians/") => "dr-1".into(),
        _ if route.starts_with("/v1/hospitals/") => "h-1".into(),
        _ => "r-1".into(),
    }
}

const QUERY_KEYS: &[&str] = &[
    "limit",
    "cursor",
    "from",
    "to",
    "type",
    "status",
    "as_of_block",
    "min_height",
    "wait",
    "purpose",
    "first",
    "second",
    "size",
    "unknown",
];

/// A damaged copy of a JSON body: bytes flipped, cut, grown, or values swapped for
/// extremes (deep nesting, huge numbers, wrong types).
fn body(rng: &mut Rng, example: &Value) -> Vec<u8> {
    let text = example.to_string().into_bytes();
    match rng.below(6) {
        0 => {
            let mut b = text;
            let at = rng.below(b.len());
            b[at] ^= 1 << rng.below(8);
            b
        }
        1 => {
            let mut b = text;
            b.truncate(rng.below(b.len()));
            b
        }
        2 => {
            let depth = 1 + rng.below(3_000);
            format!("{}{}", "[".repeat(depth), "]".repeat(depth)).into_bytes()
        }
        3 => {
            let mut v = example.clone();
            if let Some(obj) = v.as_object_mut() {
                let keys: Vec<String> = obj.keys().cloned().collect();
                if !keys.is_empty() {
                    let k = rng.pick(&keys).clone();
                    let extremes = [
                        json!(null),
                        json!(-1),
                        json!(1e300),
                        json!(u64::MAX),
                        json!("x".repeat(100_000)),
                        json!([]),
                        json!({"a": {"b": {"c": []}}}),
                        json!(true),
                        json!("\u{0}\u{ffff}"),
                    ];
                    obj.insert(k, rng.pick(&extremes).clone());
                }
            }
            v.to_string().into_bytes()
        }
        4 => (0..rng.below(512)).map(|_| rng.next() as u8).collect(),
        _ => text,
    }
}

/// The example of a route's body schema (schemas/NAME), or `{}`.
fn example(schema: Option<&str>) -> Value {
    let Some(name) = schema else {
        return json!({});
    };
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("schemas")
        .join(name);
    let schema: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    schema["examples"][0].clone()
}

#[actix_web::test]
async fn every_route_answers_damaged_requests_with_a_4xx_json_error() {
    let env = Env::new();
    let svc = test::init_service(app(env.core.state.clone())).await;
    let admin = env.token(Role::Admin, "admin-1", None);
    let dr = env.token(Role::Clinician, "dr-1", Some("h-1"));
    let patient = env.token(Role::Patient, "p-1", None);
    // Something to find: a record of p-1 at h-1, and a grant of it.
    let (s, b) = call!(
        &svc,
        test::TestRequest::post()
            .uri("/v1/records")
            .insert_header(("Authorization", dr.clone()))
            .set_json(
                json!({"record_id": "r-1", "patient_id": "p-1", "hospital_id": "h-1",
                "record_type": "note", "metadata": {"t": "x"}})
            )
    );
    assert_eq!(s.as_u16(), 201, "{b}");
    let tokens = [
        Some(admin.as_str()),
        Some(admin.as_str()),
        Some(dr.as_str()),
        Some(patient.as_str()),
        None,
        Some("Bearer not.a.token"),
        Some("Basic YWRtaW46YWRtaW4="),
    ];
    let data_dir = env.dir.path().to_string_lossy().into_owned();
    let doc = medledger::api::openapi::document();
    let mut undocumented = std::collections::BTreeSet::new();
    let per_route = rounds(60);
    let mut rng = Rng::new(6);
    let (mut answered, mut refused) = (0, 0);
    for route in ROUTES {
        let example = example(route.body);
        for _ in 0..per_route {
            // The path, its parameters filled.
            let mut path = String::new();
            for (i, part) in route.path.split('/').enumerate() {
                if i > 0 {
                    path.push('/');
                }
                match part.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
                    Some(name) => path.push_str(&param(&mut rng, route.path, name)),
                    None => path.push_str(part),
                }
            }
            // Up to three query parameters, named or not, valued or not.
            let pairs: Vec<String> = (0..rng.below(4))
                .map(|_| {
                    let k = rng.pick(QUERY_KEYS).to_string();
                    match rng.below(3) {
                        0 => k,
                        _ => format!("{k}={}", nasty(&mut rng)),
                    }
                })
                .collect();
            if !pairs.is_empty() {
                path = format!("{path}?{}", pairs.join("&"));
            }
            let method = match route.method {
                "post" => Method::POST,
                "delete" => Method::DELETE,
                _ => Method::GET,
            };
            let mut req = test::TestRequest::default()
                .method(method.clone())
                .uri(&path);
            if let Some(t) = *rng.pick(&tokens) {
                req = req.insert_header(("Authorization", t.to_owned()));
            }
            if method == Method::POST {
                req = req
                    .insert_header(("Content-Type", "application/json"))
                    .set_payload(body(&mut rng, &example));
            }
            let res = test::call_service(&svc, req.to_request()).await;
            let status = res.status();
            let res_retry_after = res.headers().contains_key("retry-after");
            let bytes = test::read_body(res).await;
            let text = String::from_utf8_lossy(&bytes);
            // 503 is an answer (views behind a `min_height`, with Retry-After); 500 never.
            assert!(
                status.as_u16() < 500
                    || (status.as_u16() == 503 && res_retry_after && text.contains("\"code\"")),
                "{} {path}: {status} {text}",
                route.method
            );
            let documented = &doc["paths"][route.path][route.method]["responses"];
            if documented.get(status.as_str()).is_none() {
                undocumented.insert(format!("{} {} {status}: {text}", route.method, route.path));
            }
            assert!(
                !text.contains(&data_dir),
                "{} {path}: an answer names the data dir: {text}",
                route.method
            );
            if status.is_client_error() || status.is_server_error() {
                refused += 1;
                let v: Value = serde_json::from_slice(&bytes).unwrap_or_else(|_| {
                    panic!(
                        "{} {path}: {status} without a JSON body: {text}",
                        route.method
                    )
                });
                assert!(
                    v["error"]["code"]
                        .as_str()
                        .is_some_and(|c| !c.is_empty()
                            && c.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')),
                    "{} {path}: {status} without an error code: {v}",
                    route.method
                );
            } else {
                answered += 1;
            }
        }
    }
    // Every answer is one the OpenAPI document lists for the operation.
    assert!(
        undocumented.is_empty(),
        "answers the OpenAPI document does not list:\n{}",
        undocumented.into_iter().collect::<Vec<_>>().join("\n")
    );
    eprintln!("{answered} answered, {refused} refused");
    assert!(
        answered > 0 && refused > 0,
        "{answered} answered, {refused} refused"
    );
}
