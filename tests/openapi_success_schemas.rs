//! `/v1/openapi.json` is one document: every reference in it resolves within it (the
//! request and event schemas under `schemas/` are embedded as components, their
//! references rewritten), so a client or schemathesis checks every part of a schema.

use serde_json::Value;

use medledger::api::openapi;

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
