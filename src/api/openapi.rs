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

/// A query parameter: name, JSON Schema (with its range or values), description.
type Param = (&'static str, Value, &'static str);

/// An integer from `min` to `max` (None: the largest a client's JSON integer holds).
fn int(min: u64, max: Option<u64>) -> Value {
    json!({"type": "integer", "minimum": min, "maximum": max.unwrap_or(i64::MAX as u64)})
}

fn text() -> Value {
    json!({"type": "string", "minLength": 1, "maxLength": 256})
}

/// A path parameter's schema: block numbers, hashes and tx ids have their forms; every
/// other id is 1 to 128 characters (medledger_chaincode::limits::ID_LEN_MAX).
fn path_param(path: &str, name: &str) -> Value {
    match (path, name) {
        (_, "number") => int(0, None),
        (_, "hash") => json!({"type": "string", "pattern": "^[0-9a-f]{64}$"}),
        (p, "id") if p.starts_with("/v1/tx/") => json!({"type": "string", "format": "uuid"}),
        (p, _) => {
            let mut schema = json!({"type": "string", "minLength": 1, "maxLength": medledger_chaincode::limits::ID_LEN_MAX});
            // The ids docs/API.md's examples use (a test server holds them, so a
            // schema-driven client sees successes as well as 404s).
            let example = match p.split('/').nth(2) {
                Some("records") => Some("r-1"),
                Some("patients") => Some("p-1"),
                Some("hospitals") => Some("h-1"),
                Some("clinicians") => Some("dr-1"),
                _ => None,
            };
            if let (Some(example), "id") = (example, name) {
                schema["examples"] = json!([example]);
            }
            schema
        }
    }
}

/// Query parameters by route, with their ranges and formats (unknown parameters, and
/// values outside them, are refused with 400).
fn query_params(path: &str) -> Vec<Param> {
    let min_height = (
        "min_height",
        int(0, None),
        "Read one's own writes: answer once the views hold this many blocks (a write's `height`); waits at most 5 s, then 503 views_behind.",
    );
    let timeline = vec![
        ("type", text(), "Only this record type."),
        (
            "status",
            json!({"type": "string", "enum": ["active", "archived", "entered_in_error"]}),
            "Only this status.",
        ),
        (
            "from",
            json!({"type": "string", "format": "date-time"}),
            "Created at or after (RFC 3339).",
        ),
        (
            "to",
            json!({"type": "string", "format": "date-time"}),
            "Created before (RFC 3339).",
        ),
        ("limit", int(1, Some(1_000)), "Page size (default 50)."),
        ("cursor", text(), "The previous page's next_cursor."),
        min_height.clone(),
    ];
    // Every read of clinical content is recorded on the ledger with why it was made.
    let purpose = (
        "purpose",
        json!({"type": "string", "enum": medledger_chaincode::READ_PURPOSES}),
        "Why the records are read, recorded with the read (default treatment).",
    );
    let break_glass = (
        "break_glass",
        json!({"type": "string", "minLength": 1, "maxLength": medledger_chaincode::limits::REASON_LEN_MAX}),
        "Clinicians: read one patient's records without a grant in an emergency; the reason, recorded (sealed) with the read. Others: 400 break_glass_not_allowed.",
    );
    let access_log = vec![
        ("limit", int(1, Some(1_000)), "Page size (default 50)."),
        (
            "cursor",
            json!({"type": "string", "pattern": "^[0-9]+-[0-9]+$"}),
            "The previous page's next_cursor.",
        ),
        min_height.clone(),
    ];
    let read = |mut params: Vec<Param>, one_patient: bool| {
        params.push(purpose.clone());
        if one_patient {
            params.push(break_glass.clone());
        }
        params
    };
    match path {
        "/v1/patients/{id}/records" => read(timeline, true),
        "/v1/clinicians/{id}/records" | "/v1/hospitals/{id}/records" => read(timeline, false),
        "/v1/records/{id}/access-log" | "/v1/patients/{id}/access-log" => access_log,
        "/v1/records/{id}" => read(
            vec![
                (
                    "as_of_block",
                    int(0, None),
                    "The record as of the ledger's first N blocks.",
                ),
                min_height,
            ],
            true,
        ),
        "/v1/records/{id}/history" => read(
            vec![
                (
                    "after_version",
                    int(0, Some(u64::from(u32::MAX))),
                    "Versions after this one.",
                ),
                ("limit", int(1, Some(1_000)), "Page size (default 50)."),
                min_height,
            ],
            true,
        ),
        "/v1/patients/{id}/export" => read(vec![min_height], true),
        "/v1/patients/{id}/grants" => vec![
            ("after", text(), "Grantees after this id."),
            ("limit", int(1, Some(1_000)), "Page size (default 50)."),
        ],
        "/v1/blocks" => vec![
            ("from", int(0, None), "The first block listed."),
            ("limit", int(1, Some(100)), "Page size (default 20)."),
            (
                "order",
                json!({"type": "string", "enum": ["desc", "asc"]}),
                "Newest first (default) or oldest first.",
            ),
        ],
        "/v1/checkpoint/consistency" => vec![
            ("from", int(1, None), "The older tree size (required)."),
            (
                "to",
                int(1, None),
                "The newer tree size (default: the whole chain).",
            ),
        ],
        "/v1/records/{id}/payload" => read(vec![min_height], true),
        "/v1/activity" => vec![
            (
                "bucket",
                json!({"type": "string", "enum": ["minute", "hour"]}),
                "Bucket size (default minute).",
            ),
            (
                "buckets",
                int(1, Some(1_440)),
                "How many, ending now (default 60).",
            ),
        ],
        _ => Vec::new(),
    }
}

/// The error answer with `status`, for the codes docs/API.md lists.
fn error_response(description: &str, retry_after: bool) -> Value {
    let mut r = json!({
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/error"}}}
    });
    if retry_after {
        r["headers"] = json!({"Retry-After": {
            "description": "Seconds to wait before trying again.",
            "schema": {"type": "integer", "minimum": 1}
        }});
    }
    r
}

/// What a successful answer of route `r` carries.
fn success(r: &super::RouteDoc) -> (&'static str, Value) {
    let json_object = json!({"application/json": {"schema": {"type": "object"}}});
    let creates = [
        "/v1/records",
        "/v1/records/{id}/amendments",
        "/v1/records/{id}/status",
        "/v1/patients/{id}/grants",
    ];
    let status = if r.method == "post" && creates.contains(&r.path) {
        "201"
    } else {
        "200"
    };
    let of = |name: &str| json!({"application/json": {"schema": {"$ref": format!("#/components/schemas/{name}")}}});
    let content = match (r.method, r.path) {
        ("get", "/v1/records/{id}") => of("record"),
        ("get", "/v1/records/{id}/history") => of("record_history"),
        (
            "get",
            "/v1/patients/{id}/records"
            | "/v1/clinicians/{id}/records"
            | "/v1/hospitals/{id}/records",
        ) => of("record_page"),
        ("get", "/v1/patients/{id}/access-log" | "/v1/records/{id}/access-log") => {
            of("access_log_page")
        }
        ("post", "/v1/records" | "/v1/records/{id}/amendments" | "/v1/records/{id}/status") => {
            of("receipt")
        }
        _ => content_of(r.path, json_object),
    };
    (
        status,
        json!({"description": "Success.", "content": content}),
    )
}

/// The success bodies described by schema (components `record`, `record_page`,
/// `record_history`, `access_log_page`, `receipt`): schemathesis checks every answer
/// against them. Closed objects (`additionalProperties: false`), so a field the server
/// adds or drops fails the check until the document says so.
fn success_schemas() -> Vec<(&'static str, Value)> {
    let id = json!({"type": "string", "minLength": 1, "maxLength": medledger_chaincode::limits::ID_LEN_MAX});
    let time = json!({"type": "string", "format": "date-time"});
    let count = json!({"type": "integer", "minimum": 0});
    let closed = |properties: Value| {
        let required: Vec<String> = properties
            .as_object()
            .expect("properties")
            .keys()
            .cloned()
            .collect();
        json!({"type": "object", "additionalProperties": false, "required": required, "properties": properties})
    };
    let record = closed(json!({
        "record_id": id, "patient_id": id, "hospital_id": id,
        "record_type": {"type": "string", "minLength": 1, "maxLength": medledger_chaincode::limits::RECORD_TYPE_LEN_MAX},
        "author_id": id, "created_at": time, "version": {"type": "integer", "minimum": 1},
        "status": {"type": "string", "enum": ["active", "archived", "entered_in_error"]},
        "metadata": {"type": ["object", "null"]},
        "payload": {"oneOf": [{"type": "null"}, closed(json!({
            "cid": {"type": "string"}, "size": count,
            "sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
            "content_type": {"type": "string"}
        }))]},
        "payload_erased": {"type": "boolean"}, "erased": {"type": "boolean"},
        "updated_at": time, "updated_by": id,
        "event": {"type": ["string", "null"]},
        "tx_id": {"type": "string", "format": "uuid"}, "block_number": count, "position": count
    }));
    let reference = json!({"$ref": "#/components/schemas/record"});
    let reader = closed(
        json!({"id": id, "role": {"type": "string", "enum": ["patient", "clinician", "auditor", "admin"]}, "hospital": {"type": ["string", "null"]}}),
    );
    let read = closed(json!({
        "block_number": count, "position": count, "tx_id": {"type": "string", "format": "uuid"},
        "read_at": time, "reader": reader,
        "what": {"type": "string", "enum": medledger_chaincode::READ_KINDS},
        "purpose": {"type": "string", "enum": medledger_chaincode::READ_PURPOSES},
        "break_glass": {"type": "boolean"}, "break_glass_reason": {"type": ["string", "null"]},
        "patient_id": id, "record_ids": {"type": "array", "items": id}
    }));
    vec![
        ("record", record),
        (
            "record_page",
            closed(
                json!({"items": {"type": "array", "items": reference}, "next_cursor": {"type": ["string", "null"]}}),
            ),
        ),
        (
            "record_history",
            closed(
                json!({"items": {"type": "array", "items": reference}, "next_after_version": {"type": ["integer", "null"], "minimum": 1}}),
            ),
        ),
        (
            "access_log_page",
            closed(
                json!({"items": {"type": "array", "items": read}, "next_cursor": {"type": ["string", "null"]}}),
            ),
        ),
        (
            "receipt",
            closed(
                json!({"tx_id": {"type": "string", "format": "uuid"}, "record_id": id, "version": {"type": "integer", "minimum": 1}, "block_number": count, "position": count, "height": {"type": "integer", "minimum": 1}}),
            ),
        ),
    ]
}

/// The content of a success that has no schema of its own.
fn content_of(path: &str, json_object: Value) -> Value {
    match path {
        "/metrics" => json!({"text/plain": {"schema": {"type": "string"}}}),
        "/explorer" => json!({"text/html": {"schema": {"type": "string"}}}),
        "/v1/records/{id}/payload" => {
            json!({"*/*": {"schema": {"type": "string", "format": "binary"}}})
        }
        "/v1/patients/{id}/export" => json!({
            "application/x-ndjson": {"schema": {"type": "string"}},
            "text/csv": {"schema": {"type": "string"}}
        }),
        _ => json_object,
    }
}

/// Every answer route `r` can give: its success, and each error status with the codes
/// behind it (docs/API.md), `Retry-After` where it is sent.
fn responses(r: &super::RouteDoc) -> Value {
    let (ok, body) = success(r);
    let mut out = Map::new();
    out.insert(ok.to_owned(), body);
    let write = r.method != "get" && r.path.starts_with("/v1/");
    let mut errors: Vec<(&str, &str, bool)> = vec![
        ("400", "A malformed path, query or body: invalid_query, invalid_path, invalid_body, invalid_field, invalid_limit, invalid_cursor, invalid_range, ...", false),
        ("404", "not_found: the id names nothing (never said of what the ledger holds).", false),
        ("405", "method_not_allowed: `Allow` lists the methods the path takes.", false),
        ("429", "rate_limited: over the per-client rate.", true),
        ("500", "internal, store_error, ledger_failed: the message names no path.", false),
        ("503", "busy, shutting_down, views_behind, projection_timeout, projector_stopped; in a cluster no_leader, not_committed, outcome_unknown.", true),
    ];
    if r.path.starts_with("/v1/records/{id}") {
        errors.push((
            "410",
            "record_erased: the record's clinical text and payloads were erased for good.",
            false,
        ));
    }
    if r.method == "get" && super::cluster::reads_clinical_content(r.path) {
        errors.push((
            "507",
            "storage_full: the read could not be recorded on the ledger (the disk is down to half its reserve); nothing was shown.",
            true,
        ));
        errors.push((
            "410",
            "record_erased; patient_forgotten: a break-glass read of a forgotten patient cannot be recorded.",
            false,
        ));
    }
    if r.auth {
        errors.push(("401", "unauthorized: no, bad or expired token.", false));
        errors.push((
            "403",
            "forbidden: the caller may not do this (docs/API.md's rules).",
            false,
        ));
    }
    if r.body.is_some() {
        errors.push(("408", "body_timeout: the body stopped coming.", false));
        errors.push(("413", "body_too_large, too_large.", false));
        errors.push(("415", "unsupported_media_type.", false));
    }
    if write {
        errors.push((
            "307",
            "not_leader: a cluster follower; `Location` names the leader.",
            false,
        ));
        errors.push((
            "409",
            "record_exists, version_conflict, a rejection in commit order, membership_refused.",
            false,
        ));
        errors.push((
            "422",
            "The contract's codes for an event invalid in the record's state.",
            false,
        ));
        errors.push((
            "507",
            "storage_full: the disk is down to its reserve; nothing was written.",
            true,
        ));
    }
    for (status, description, retry_after) in errors {
        let mut e = error_response(description, retry_after);
        if status == "307" {
            e["headers"] = json!({"Location": {"description": "The same path on the leader.", "schema": {"type": "string"}}});
        }
        out.insert(status.to_owned(), e);
    }
    if r.path == "/v1/patients/{id}/erase" {
        out.insert(
            "207".to_owned(),
            json!({"description": "Some records could not be erased: `failed` lists them with their codes.",
                   "content": {"application/json": {"schema": {"type": "object"}}}}),
        );
    }
    if r.path == "/readyz" {
        out.insert(
            "503".to_owned(),
            json!({"description": "Not ready: the readiness report says why.",
                   "content": {"application/json": {"schema": {"type": "object"}}}}),
        );
    }
    let validated = ["/v1/records/{id}", "/v1/records/{id}/history"];
    if r.method == "get" && (r.path.ends_with("/records") || validated.contains(&r.path)) {
        out.insert(
            "304".to_owned(),
            json!({"description": "Not modified: the page's ETag matches If-None-Match.",
                   "headers": {"ETag": {"schema": {"type": "string"}}}}),
        );
    }
    Value::Object(out)
}

/// Builds the document.
pub fn document() -> Value {
    let mut paths = Map::new();
    for r in ROUTES {
        let mut parameters: Vec<Value> = r
            .path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|name| json!({"name": name, "in": "path", "required": true, "schema": path_param(r.path, name)}))
            .collect();
        for (name, schema, description) in query_params(r.path) {
            parameters.push(json!({"name": name, "in": "query", "required": r.path == "/v1/checkpoint/consistency" && name == "from", "description": description, "schema": schema}));
        }
        let mut op = json!({
            "summary": r.summary,
            "tags": [r.tag],
            "operationId": format!("{}_{}", r.method, r.path.trim_start_matches('/').replace(['/', '{', '}', '.'], "_")),
            "parameters": parameters,
            "responses": responses(r),
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
        rewrite_refs(&mut schema, component(file));
        // Its references now name places in this document: an `$id` would make a
        // JSON Schema validator resolve them against the file instead.
        if let Some(map) = schema.as_object_mut() {
            map.remove("$id");
        }
        schemas.insert(component(file).to_owned(), schema);
    }
    for (name, schema) in success_schemas() {
        schemas.insert(name.to_owned(), schema);
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

/// Points the references of component `name` into this document: a sibling file
/// (`grant.json`) at its component, one of its own parts (`#/$defs/clinical`) below it.
fn rewrite_refs(v: &mut Value, name: &str) {
    match v {
        Value::Object(map) => {
            if let Some(Value::String(r)) = map.get_mut("$ref") {
                if let Some(file) = r.strip_suffix(".json") {
                    *r = format!("#/components/schemas/{file}");
                } else if let Some(pointer) = r.strip_prefix('#') {
                    *r = format!("#/components/schemas/{name}{pointer}");
                }
            }
            for child in map.values_mut() {
                rewrite_refs(child, name);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|item| rewrite_refs(item, name)),
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
