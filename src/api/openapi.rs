//! `GET /v1/openapi.json`: an OpenAPI 3.1 document built from [`super::ROUTES`] (the
//! table the routes are registered from, so the two cannot differ) and the JSON Schemas
//! under `schemas/` (embedded in the binary).

use std::sync::OnceLock;

use actix_web::HttpResponse;
use serde_json::{json, Map, Value};

use super::ROUTES;

/// Every schema under `schemas/`, by file name.
pub const SCHEMAS: &[(&str, &str)] = &[
    (
        "new_record.json",
        include_str!("../../schemas/new_record.json"),
    ),
    (
        "new_records.json",
        include_str!("../../schemas/new_records.json"),
    ),
    (
        "amendment.json",
        include_str!("../../schemas/amendment.json"),
    ),
    (
        "status_change.json",
        include_str!("../../schemas/status_change.json"),
    ),
    ("grant.json", include_str!("../../schemas/grant.json")),
    ("erasure.json", include_str!("../../schemas/erasure.json")),
    (
        "patient_erasure.json",
        include_str!("../../schemas/patient_erasure.json"),
    ),
    (
        "jwt_rotation.json",
        include_str!("../../schemas/jwt_rotation.json"),
    ),
    ("new_node.json", include_str!("../../schemas/new_node.json")),
    ("voters.json", include_str!("../../schemas/voters.json")),
    ("leader.json", include_str!("../../schemas/leader.json")),
    ("error.json", include_str!("../../schemas/error.json")),
    ("event.json", include_str!("../../schemas/event.json")),
];

/// The component name of a schema file (`new_record.json` → `new_record`).
fn component(file: &str) -> &str {
    file.strip_suffix(".json").unwrap_or(file)
}

/// Query parameters by route (documentation; unknown parameters are refused with 400).
fn query_params(method: &str, path: &str) -> Vec<(&'static str, &'static str, &'static str)> {
    let timeline = vec![
        ("type", "string", "Only this record type."),
        (
            "status",
            "string",
            "Only this status: active, archived, entered_in_error.",
        ),
        ("from", "string", "Created at or after (RFC 3339)."),
        ("to", "string", "Created before (RFC 3339)."),
        ("limit", "integer", "Page size, 1 to 1,000 (default 50)."),
        ("cursor", "string", "The previous page's next_cursor."),
    ];
    let min_height = (
        "min_height",
        "integer",
        "Read one's own writes: answer once the views hold this many blocks (a write's `height`); waits at most 5 s, then 503 views_behind.",
    );
    let mut timeline = timeline;
    timeline.push(min_height);
    match (method, path) {
        (_, "/v1/patients/{id}/records")
        | (_, "/v1/clinicians/{id}/records")
        | (_, "/v1/hospitals/{id}/records") => timeline,
        (_, "/v1/records/{id}") => vec![
            (
                "as_of_block",
                "integer",
                "The record as of the ledger's first N blocks.",
            ),
            min_height,
        ],
        (_, "/v1/records/{id}/history") => vec![
            ("after_version", "integer", "Versions after this one."),
            ("limit", "integer", "Page size (default 50)."),
            min_height,
        ],
        (_, "/v1/patients/{id}/export") => vec![min_height],
        (_, "/v1/patients/{id}/grants") => vec![
            ("after", "string", "Grantees after this id."),
            ("limit", "integer", "Page size (default 50)."),
        ],
        (_, "/v1/blocks") => vec![
            ("from", "integer", "The first block listed."),
            ("limit", "integer", "1 to 100 (default 20)."),
            ("order", "string", "desc (default) or asc."),
        ],
        (_, "/v1/checkpoint/consistency") => vec![
            ("from", "integer", "The older tree size (required, ≥ 1)."),
            (
                "to",
                "integer",
                "The newer tree size (default: the whole chain).",
            ),
        ],
        (_, "/v1/records/{id}/payload") => vec![
            (
                "purpose",
                "string",
                "Why the payload is read, recorded in the audit trail (default: treatment).",
            ),
            min_height,
        ],
        (_, "/v1/activity") => vec![
            ("bucket", "string", "minute (default) or hour."),
            (
                "buckets",
                "integer",
                "How many, ending now: 1 to 1,440 (default 60).",
            ),
        ],
        _ => Vec::new(),
    }
}

/// Builds the document.
pub fn document() -> Value {
    let mut paths = Map::new();
    for r in ROUTES {
        let mut parameters: Vec<Value> = r
            .path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        for (name, ty, description) in query_params(r.method, r.path) {
            parameters.push(json!({"name": name, "in": "query", "required": r.path == "/v1/checkpoint/consistency" && name == "from", "description": description, "schema": {"type": ty}}));
        }
        let ok = if r.method == "post" && r.path != "/v1/records/batch" {
            "201"
        } else {
            "200"
        };
        let mut op = json!({
            "summary": r.summary,
            "tags": [r.tag],
            "operationId": format!("{}_{}", r.method, r.path.trim_start_matches('/').replace(['/', '{', '}', '.'], "_")),
            "parameters": parameters,
            "responses": {
                ok: {"description": "Success."},
                "default": {
                    "description": "An error (docs/API.md lists the codes).",
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/error"}}}
                }
            }
        });
        if r.auth {
            op["security"] = json!([{"bearer": []}]);
        }
        if let Some(body) = r.body {
            op["requestBody"] = json!({
                "required": true,
                "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{}", component(body))}}}
            });
        }
        let entry = paths.entry(r.path.to_owned()).or_insert_with(|| json!({}));
        entry[r.method] = op;
    }
    let mut schemas = Map::new();
    for (file, text) in SCHEMAS {
        let mut schema: Value = serde_json::from_str(text).expect("the embedded schemas are JSON");
        // Refer to sibling schemas by component, as OpenAPI resolves references.
        rewrite_refs(&mut schema);
        schemas.insert(component(file).to_owned(), schema);
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "medledger",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Event-sourced, hash-chained ledger for medical records. Submissions are answered once the block holding them is durable."
        },
        "servers": [{"url": "/"}],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}}
        }
    })
}

fn rewrite_refs(v: &mut Value) {
    match v {
        Value::Object(map) => {
            if let Some(Value::String(r)) = map.get_mut("$ref") {
                if let Some(file) = r.strip_suffix(".json") {
                    *r = format!("#/components/schemas/{file}");
                }
            }
            for child in map.values_mut() {
                rewrite_refs(child);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(rewrite_refs),
        _ => {}
    }
}

/// `GET /v1/openapi.json`.
pub async fn serve() -> HttpResponse {
    static DOC: OnceLock<String> = OnceLock::new();
    let text = DOC.get_or_init(|| document().to_string());
    HttpResponse::Ok()
        .content_type("application/json")
        .body(text.as_str())
}
