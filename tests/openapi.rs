//! `/v1/openapi.json` matches what the server serves, and the JSON Schemas under
//! `schemas/` match what the handlers accept:
//! - the document's (method, path) pairs are exactly the registered routes, and every one
//!   of them is routed (never the `no_route` 404);
//! - every schema file is embedded and every embedded schema is a file;
//! - each request schema's example is accepted by its route's body parser, and the same
//!   body with one unknown property is refused (`additionalProperties: false` is what the
//!   handlers' `deny_unknown_fields` enforce).

use std::collections::BTreeSet;

use actix_web::http::StatusCode;
use actix_web::test;
use serde_json::Value;

use medledger::api::auth::{self, Claims, Role};
use medledger::api::openapi::SCHEMAS;
use medledger::api::ROUTES;
use medledger::serve::{app, Core, ServeConfig};

#[actix_web::test]
async fn the_document_matches_the_routes_and_the_schemas_match_the_handlers() {
    let dir = tempfile::tempdir().unwrap();
    let config = ServeConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        workers: 1,
        ..ServeConfig::new(dir.path().to_path_buf())
    };
    let core = Core::open(&config).unwrap();
    let (secret, _) = auth::load_or_create_secret(dir.path()).unwrap();
    let admin = format!(
        "Bearer {}",
        auth::mint(
            &secret,
            &Claims {
                sub: "admin-1".into(),
                role: Role::Admin,
                hospital: None,
                exp: auth::now_secs() + 3600,
            }
        )
        .unwrap()
    );
    let svc = test::init_service(app(core.state.clone())).await;

    let res = test::call_service(
        &svc,
        test::TestRequest::get()
            .uri("/v1/openapi.json")
            .to_request(),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    let doc: Value = serde_json::from_slice(&test::read_body(res).await).unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    let documented: BTreeSet<(String, String)> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, ops)| {
            ops.as_object()
                .unwrap()
                .keys()
                .map(move |m| (m.clone(), path.clone()))
        })
        .collect();
    let served: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|r| (r.method.to_owned(), r.path.to_owned()))
        .collect();
    assert_eq!(documented, served);
    assert!(served.len() >= 25, "{}", served.len());

    // Every route is routed: whatever the answer, it is not the catch-all 404 or a 405.
    for r in ROUTES {
        let uri = r.path.replace("{number}", "0").replace(
            "{hash}",
            "0000000000000000000000000000000000000000000000000000000000000000",
        );
        let uri = uri.replace("{id}", "x").replace("{grantee}", "y");
        let req = match r.method {
            "get" => test::TestRequest::get(),
            "post" => test::TestRequest::post(),
            "delete" => test::TestRequest::delete(),
            other => panic!("method {other}"),
        }
        .uri(&uri)
        .insert_header(("Authorization", admin.as_str()));
        let res = test::call_service(&svc, req.to_request()).await;
        let status = res.status();
        let body = String::from_utf8_lossy(&test::read_body(res).await).into_owned();
        assert!(
            !body.contains("\"no_route\"") && status != StatusCode::METHOD_NOT_ALLOWED,
            "{} {uri}: {status} {body}",
            r.method
        );
    }

    // Schema files and embedded schemas are the same set; every body schema exists.
    let files: BTreeSet<String> =
        std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/schemas"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
    let embedded: BTreeSet<String> = SCHEMAS.iter().map(|(f, _)| (*f).to_owned()).collect();
    assert_eq!(files, embedded);
    for r in ROUTES {
        if let Some(body) = r.body {
            assert!(embedded.contains(body), "{} names {body}", r.path);
        }
    }

    // Each request schema's example parses; one unknown property does not.
    for r in ROUTES.iter().filter(|r| r.body.is_some()) {
        let text = SCHEMAS.iter().find(|(f, _)| Some(*f) == r.body).unwrap().1;
        let schema: Value = serde_json::from_str(text).unwrap();
        assert_eq!(schema["additionalProperties"], false, "{}", r.path);
        let example = schema["examples"][0].clone();
        assert!(example.is_object(), "{} has an example", r.path);
        let uri = r.path.replace("{id}", "p-openapi");
        for (body, should_parse) in [(example.clone(), true), (with_unknown(&example), false)] {
            let res = test::call_service(
                &svc,
                test::TestRequest::post()
                    .uri(&uri)
                    .insert_header(("Authorization", admin.as_str()))
                    .set_json(&body)
                    .to_request(),
            )
            .await;
            let status = res.status();
            let answer: Value =
                serde_json::from_slice(&test::read_body(res).await).unwrap_or(Value::Null);
            let refused_body = answer["error"]["code"] == "invalid_body";
            assert_eq!(
                !refused_body, should_parse,
                "{uri} with {body}: {status} {answer}"
            );
        }
    }
    drop(svc);
    core.close();
}

fn with_unknown(example: &Value) -> Value {
    let mut v = example.clone();
    v.as_object_mut()
        .unwrap()
        .insert("no_such_field".into(), Value::Bool(true));
    v
}

/// Every operation states its answers (each error status with the one error body, and
/// Retry-After where it is sent) and every parameter its range or form, so a schema-driven
/// fuzzer (schemathesis) can check what it gets.
#[actix_web::test]
async fn every_answer_and_every_parameter_is_described() {
    let doc = medledger::api::openapi::document();
    let error_ref = "#/components/schemas/error";
    for route in ROUTES {
        let op = &doc["paths"][route.path][route.method];
        let responses = op["responses"].as_object().unwrap();
        assert!(
            responses.get("default").is_none(),
            "{} {}: a catch-all hides what is answered",
            route.method,
            route.path
        );
        let mut expected = vec!["400", "404", "405", "429", "500", "503"];
        if route.auth {
            expected.extend(["401", "403"]);
        }
        if route.method != "get" && route.path.starts_with("/v1/") {
            expected.extend(["409", "422", "507"]);
        }
        for status in expected {
            let r = &responses
                .get(status)
                .unwrap_or_else(|| panic!("{} {}: no {status}", route.method, route.path));
            if route.path != "/readyz" || status != "503" {
                assert_eq!(
                    r["content"]["application/json"]["schema"]["$ref"], error_ref,
                    "{} {} {status}",
                    route.method, route.path
                );
            }
            if ["429", "507"].contains(&status) || (status == "503" && route.path != "/readyz") {
                assert!(
                    r["headers"]["Retry-After"].is_object(),
                    "{} {} {status}: Retry-After",
                    route.method,
                    route.path
                );
            }
        }
        for p in op["parameters"].as_array().unwrap() {
            let schema = &p["schema"];
            let what = format!("{} {} {}", route.method, route.path, p["name"]);
            match schema["type"].as_str() {
                Some("integer") => {
                    assert!(
                        schema["minimum"].is_u64() && schema["maximum"].is_u64(),
                        "{what}"
                    )
                }
                Some("string") => assert!(
                    schema["maxLength"].is_u64()
                        || schema["enum"].is_array()
                        || schema["format"].is_string()
                        || schema["pattern"].is_string(),
                    "{what}: unbounded"
                ),
                other => panic!("{what}: type {other:?}"),
            }
        }
    }
}
