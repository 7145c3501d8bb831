//! Every answer `/v1/openapi.json` describes with a body has a schema a client can rely
//! on: a JSON body names each field and allows no other (`additionalProperties: false`),
//! down to its nested objects and arrays, and every reference in the document resolves.
//! tests/schemathesis.rs checks real answers against these schemas; this test makes sure
//! there is something to check (a new route answering a bare `{"type": "object"}` fails).

use std::collections::BTreeSet;

use serde_json::Value;

use medledger::api::openapi;

/// Where a schema is open on purpose, and why.
const OPEN: &[(&str, &str)] = &[
    (
        "/components/schemas/record/properties/metadata",
        "the client's own JSON object",
    ),
    (
        "/components/schemas/openapi_document/properties/paths",
        "described by OpenAPI 3.1 itself",
    ),
    (
        "/components/schemas/openapi_document/properties/components",
        "described by OpenAPI 3.1 itself",
    ),
    (
        "/components/schemas/event",
        "schemas/event.json, the ledger's events as they are (one branch a type)",
    ),
];

/// The routes whose success is not JSON, by media type.
const NOT_JSON: &[(&str, &str)] = &[
    ("get /metrics", "text/plain"),
    ("get /explorer", "text/html"),
    ("get /v1/records/{id}/payload", "*/*"),
    ("get /v1/patients/{id}/export", "application/x-ndjson"),
    ("get /v1/patients/{id}/export", "text/csv"),
    ("get /v1/exports/{id}/files/{type}", "application/x-ndjson"),
];

async fn served() -> Value {
    let res = openapi::serve().await;
    assert!(res.status().is_success());
    let bytes = actix_web::body::to_bytes(res.into_body()).await.unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

/// The value at `reference` (`#/components/schemas/x`) in `doc`.
fn resolve<'a>(doc: &'a Value, reference: &str) -> Option<&'a Value> {
    doc.pointer(reference.strip_prefix('#')?)
}

/// Walks `schema` (at JSON pointer `at`) and its references, noting in `problems` each
/// object that does not list its properties and refuse others, and each array without
/// `items`; `seen` holds the pointers visited.
fn check_closed(
    doc: &Value,
    schema: &Value,
    at: &str,
    seen: &mut BTreeSet<String>,
    problems: &mut Vec<String>,
) {
    if !seen.insert(at.to_owned()) || OPEN.iter().any(|(p, _)| *p == at) {
        return;
    }
    if let Some(reference) = schema["$ref"].as_str() {
        match resolve(doc, reference) {
            Some(target) => {
                let target_at = reference.trim_start_matches('#');
                check_closed(doc, target, target_at, seen, problems);
            }
            None => problems.push(format!("{at}: `{reference}` resolves to nothing")),
        }
        return;
    }
    for keyword in ["oneOf", "anyOf", "allOf"] {
        for (i, branch) in schema[keyword].as_array().into_iter().flatten().enumerate() {
            check_closed(doc, branch, &format!("{at}/{keyword}/{i}"), seen, problems);
        }
    }
    let types: Vec<&str> = match &schema["type"] {
        Value::String(t) => vec![t.as_str()],
        Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    if types.contains(&"object") {
        let properties = schema["properties"].as_object();
        if properties.is_none_or(|p| p.is_empty()) || schema["additionalProperties"] != false {
            problems.push(format!(
                "{at}: an object without closed properties: {schema}"
            ));
        }
        for name in schema["required"].as_array().into_iter().flatten() {
            if properties.is_some_and(|p| !p.contains_key(name.as_str().unwrap_or(""))) {
                problems.push(format!("{at}: requires {name}, which it does not list"));
            }
        }
        for (name, property) in properties.into_iter().flatten() {
            check_closed(
                doc,
                property,
                &format!("{at}/properties/{name}"),
                seen,
                problems,
            );
        }
    }
    if types.contains(&"array") {
        match schema.get("items") {
            Some(items) => check_closed(doc, items, &format!("{at}/items"), seen, problems),
            // An array that is always empty needs no item schema.
            None if schema["maxItems"] == 0 => {}
            None => problems.push(format!("{at}: an array without `items`")),
        }
    }
}

#[actix_web::test]
async fn every_json_answer_but_the_errors_has_a_closed_schema() {
    let doc = served().await;
    let mut seen = BTreeSet::new();
    let mut problems = Vec::new();
    let mut not_json = BTreeSet::new();
    let mut checked = 0;
    for (path, operations) in doc["paths"].as_object().unwrap() {
        for (method, operation) in operations.as_object().unwrap() {
            let responses = operation["responses"].as_object().unwrap();
            let success = responses.keys().filter(|s| s.starts_with('2')).count();
            // A patient's erasure also answers 207; a running export's status 202.
            let two = path == "/v1/patients/{id}/erase"
                || (path == "/v1/exports/{id}" && method == "get");
            assert_eq!(success, 1 + usize::from(two), "{method} {path}");
            for (status, response) in responses {
                for (media, content) in response["content"].as_object().into_iter().flatten() {
                    let schema = &content["schema"];
                    if schema["$ref"] == "#/components/schemas/error" {
                        continue;
                    }
                    if media != "application/json" {
                        assert!(status.starts_with('2'), "{method} {path} {status}: {media}");
                        not_json.insert((format!("{method} {path}"), media.clone()));
                        continue;
                    }
                    let at = format!("/paths/{path}/{method}/responses/{status}");
                    check_closed(&doc, schema, &at, &mut seen, &mut problems);
                    checked += 1;
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    let expected: BTreeSet<(String, String)> = NOT_JSON
        .iter()
        .map(|(op, media)| ((*op).to_owned(), (*media).to_owned()))
        .collect();
    assert_eq!(not_json, expected, "the answers that are not JSON");
    // Every route but five answers JSON; the erasure of a patient, /readyz and a bulk
    // export's status twice.
    let routes = medledger::api::ROUTES.len();
    assert_eq!(checked, routes - 5 + 3);
    // No exception left over from a schema that changed.
    for (at, why) in OPEN {
        assert!(seen.contains(*at), "{at} ({why}) is not in the document");
    }
}

#[actix_web::test]
async fn every_reference_resolves() {
    fn walk(doc: &Value, v: &Value, missing: &mut Vec<String>) {
        match v {
            Value::Object(map) => {
                if let Some(Value::String(r)) = map.get("$ref") {
                    if resolve(doc, r).is_none() {
                        missing.push(r.clone());
                    }
                }
                map.values().for_each(|child| walk(doc, child, missing));
            }
            Value::Array(items) => items.iter().for_each(|child| walk(doc, child, missing)),
            _ => {}
        }
    }
    let doc = served().await;
    let mut missing = Vec::new();
    walk(&doc, &doc, &mut missing);
    assert!(missing.is_empty(), "unresolved: {missing:?}");
    // A component is no file of its own: its references name places in this document.
    for (name, schema) in doc["components"]["schemas"].as_object().unwrap() {
        assert!(schema.get("$id").is_none(), "component {name} has an $id");
    }
}
