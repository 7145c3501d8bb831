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
    (
        "new_export.json",
        include_str!("../../schemas/new_export.json"),
    ),
    ("error.json", include_str!("../../schemas/error.json")),
    ("event.json", include_str!("../../schemas/event.json")),
];

/// The component name of a schema file (`new_record.json` → `new_record`).
fn component(file: &str) -> &str {
    file.strip_suffix(".json").unwrap_or(file)
}

/// A query parameter: name, JSON Schema (with its range or values), description.
pub(super) type Param = (&'static str, Value, &'static str);

/// An integer from `min` to `max` (None: the largest a client's JSON integer holds).
pub(super) fn int(min: u64, max: Option<u64>) -> Value {
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
        "/v1/patients/{id}/export" | "/v1/patients/{id}/summary" => read(vec![min_height], true),
        "/v1/stats" => super::summary::query_params(min_height),
        "/v1/search" => {
            let mut params = super::search::query_params(min_height);
            params.push(purpose.clone());
            params
        }
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
    let creates = [
        "/v1/records",
        "/v1/records/{id}/amendments",
        "/v1/records/{id}/status",
        "/v1/patients/{id}/grants",
    ];
    let status = if r.method == "post" && creates.contains(&r.path) {
        "201"
    } else if r.method == "post" && r.path == "/v1/exports" {
        "202"
    } else {
        "200"
    };
    let (description, content) = content(r);
    let mut body = json!({"description": description, "content": content});
    if r.path == "/v1/records/{id}/payload" {
        // What the record names, so a client checks the bytes it streamed against it.
        body["headers"] = json!({
            "X-Payload-Sha256": {"required": true, "description": "SHA-256 of the payload, as the record's `payload.sha256`.", "schema": hash()},
            "X-Payload-Cid": {"required": true, "description": "The stored payload's CID, as the record's `payload.cid`.", "schema": {"type": "string", "minLength": 1}}
        });
    }
    (status, body)
}

/// The content of route `r`'s success: a component of [`success_schemas`] for every JSON
/// answer, the media type of the others. A route missing here falls back to a bare
/// `{"type": "object"}`, which tests/openapi_success_schemas.rs refuses.
fn content(r: &super::RouteDoc) -> (&'static str, Value) {
    let name = match (r.method, r.path) {
        ("get", "/healthz") => "health",
        ("get", "/readyz") => "readiness",
        ("get", "/v1/openapi.json") => "openapi_document",
        ("get", "/v1/records/{id}") => "record",
        ("get", "/v1/records/{id}/history") => "record_history",
        (
            "get",
            "/v1/patients/{id}/records"
            | "/v1/clinicians/{id}/records"
            | "/v1/hospitals/{id}/records",
        ) => "record_page",
        ("get", "/v1/patients/{id}/access-log" | "/v1/records/{id}/access-log") => {
            "access_log_page"
        }
        ("post", "/v1/records" | "/v1/records/{id}/amendments" | "/v1/records/{id}/status") => {
            "receipt"
        }
        ("post", "/v1/records/batch") => "batch_outcome",
        ("post", "/v1/records/{id}/erase") => "record_erasure_report",
        ("post", "/v1/patients/{id}/erase") => "patient_erasure_report",
        ("post", "/v1/patients/{id}/grants") | ("delete", "/v1/patients/{id}/grants/{grantee}") => {
            "grant_receipt"
        }
        ("get", "/v1/patients/{id}/grants") => "grant_page",
        ("get", "/v1/patients/{id}/summary") => "patient_summary",
        ("get", "/v1/stats") => "stats",
        ("get", "/v1/search") => "search_page",
        ("post", "/v1/exports") => "export_started",
        ("get", "/v1/exports/{id}") => "export_status",
        ("delete", "/v1/exports/{id}") => "export_deleted",
        ("get", "/v1/ipfs/status") => "payload_store",
        ("post", "/v1/keys/rotate") => "master_key_rotated",
        ("post", "/v1/keys/rotate-jwt") => "jwt_rotated",
        ("get", "/v1/cluster")
        | ("post", "/v1/cluster/learners" | "/v1/cluster/voters" | "/v1/cluster/leader") => {
            "cluster"
        }
        ("get", "/v1/chain") => "chain",
        ("get", "/v1/blocks") => "block_page",
        ("get", "/v1/blocks/{number}" | "/v1/blocks/by-hash/{hash}") => "block",
        ("get", "/v1/tx/{id}") => "tx",
        ("get", "/v1/tx/{id}/proof") => "tx_proof",
        ("get", "/v1/checkpoint") => "checkpoint",
        ("get", "/v1/checkpoint/key") | ("post", "/v1/checkpoint/rotate") => "checkpoint_key",
        ("get", "/v1/checkpoint/keys") => "checkpoint_keys",
        ("get", "/v1/checkpoint/consistency") => "consistency_proof",
        ("get", "/v1/activity") => "activity",
        _ => return content_of(r.path),
    };
    ("Success.", json_of(name))
}

/// A JSON body of component `name`.
fn json_of(name: &str) -> Value {
    json!({"application/json": {"schema": reference(name)}})
}

/// The success of a route whose body is not JSON: its media type.
fn content_of(path: &str) -> (&'static str, Value) {
    let text = json!({"type": "string"});
    match path {
        "/metrics" => (
            "Prometheus metrics, text exposition format 0.0.4.",
            json!({"text/plain": {"schema": text}}),
        ),
        "/explorer" => (
            "The explorer page (HTML, scripts inline).",
            json!({"text/html": {"schema": text}}),
        ),
        "/v1/records/{id}/payload" => (
            "The payload's bytes, with the content type it was stored with.",
            // Any bytes: OpenAPI 3.1 leaves binary content without a schema (a JSON
            // payload is not a string).
            json!({"*/*": {}}),
        ),
        "/v1/exports/{id}/files/{type}" => (
            "The file's records, a line each (each line a `record`); X-Sha256 is the manifest's checksum.",
            json!({"application/x-ndjson": {"schema": text}}),
        ),
        "/v1/patients/{id}/export" => (
            "A line a record: NDJSON (each line a `record`), or CSV after a header line.",
            json!({"application/x-ndjson": {"schema": text}, "text/csv": {"schema": text}}),
        ),
        _ => (
            "Success.",
            json!({"application/json": {"schema": {"type": "object"}}}),
        ),
    }
}

// The pieces the success bodies are built of.

pub(super) fn id() -> Value {
    json!({"type": "string", "minLength": 1, "maxLength": medledger_chaincode::limits::ID_LEN_MAX})
}

pub(super) fn time() -> Value {
    json!({"type": "string", "format": "date-time"})
}

/// Counts, heights, block numbers and positions.
pub(super) fn count() -> Value {
    json!({"type": "integer", "minimum": 0})
}

/// A height or version that exists only from 1.
fn positive() -> Value {
    json!({"type": "integer", "minimum": 1})
}

fn tx_id() -> Value {
    json!({"type": "string", "format": "uuid"})
}

/// Lowercase hex of `digits` digits.
fn hex(digits: usize) -> Value {
    json!({"type": "string", "pattern": format!("^[0-9a-f]{{{digits}}}$")})
}

/// A SHA-256 hash in hex.
fn hash() -> Value {
    hex(64)
}

pub(super) fn reference(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

pub(super) fn array(items: Value) -> Value {
    json!({"type": "array", "items": items})
}

/// A closed object: every property required, no other allowed, so a field the server
/// adds or drops fails schemathesis' check until the document says so.
pub(super) fn closed(properties: Value) -> Value {
    closed_optional(properties, &[])
}

/// [`closed`], but the `optional` properties may be absent.
pub(super) fn closed_optional(properties: Value, optional: &[&str]) -> Value {
    let required: Vec<&String> = properties
        .as_object()
        .expect("properties")
        .keys()
        .filter(|k| !optional.contains(&k.as_str()))
        .collect();
    json!({"type": "object", "additionalProperties": false, "required": required, "properties": properties})
}

/// The success bodies, by component name: schemathesis checks every answer against them.
fn success_schemas() -> Vec<(&'static str, Value)> {
    let mut schemas = record_schemas();
    schemas.extend(write_schemas());
    schemas.extend(explorer_schemas());
    schemas.extend(ops_schemas());
    schemas.extend(super::summary::schemas());
    schemas.extend(super::bulk_export::schemas());
    schemas.extend(super::search::schemas());
    schemas
}

/// A record, its pages and history, who read it, and a write's receipt.
fn record_schemas() -> Vec<(&'static str, Value)> {
    let record = closed(json!({
        "record_id": id(), "patient_id": id(), "hospital_id": id(),
        "record_type": {"type": "string", "minLength": 1, "maxLength": medledger_chaincode::limits::RECORD_TYPE_LEN_MAX},
        "author_id": id(), "created_at": time(), "version": positive(),
        "status": {"type": "string", "enum": ["active", "archived", "entered_in_error"]},
        "metadata": {"type": ["object", "null"]},
        "payload": {"oneOf": [{"type": "null"}, closed(json!({
            "cid": {"type": "string"}, "size": count(), "sha256": hash(),
            "content_type": {"type": "string"}
        }))]},
        "payload_erased": {"type": "boolean"}, "erased": {"type": "boolean"},
        "updated_at": time(), "updated_by": id(),
        "event": {"type": ["string", "null"]},
        "tx_id": tx_id(), "block_number": count(), "position": count()
    }));
    let reader = closed(
        json!({"id": id(), "role": {"type": "string", "enum": ["patient", "clinician", "auditor", "admin"]}, "hospital": {"type": ["string", "null"]}}),
    );
    let read = closed(json!({
        "block_number": count(), "position": count(), "tx_id": tx_id(),
        "read_at": time(), "reader": reader,
        "what": {"type": "string", "enum": medledger_chaincode::READ_KINDS},
        "purpose": {"type": "string", "enum": medledger_chaincode::READ_PURPOSES},
        "break_glass": {"type": "boolean"}, "break_glass_reason": {"type": ["string", "null"]},
        "patient_id": id(), "record_ids": array(id())
    }));
    let records = array(reference("record"));
    vec![
        ("record", record),
        (
            "record_page",
            closed(json!({"items": records, "next_cursor": {"type": ["string", "null"]}})),
        ),
        (
            "record_history",
            closed(
                json!({"items": records, "next_after_version": {"type": ["integer", "null"], "minimum": 1}}),
            ),
        ),
        (
            "access_log_page",
            closed(json!({"items": array(read), "next_cursor": {"type": ["string", "null"]}})),
        ),
        (
            "receipt",
            closed(
                json!({"tx_id": tx_id(), "record_id": id(), "version": positive(), "block_number": count(), "position": count(), "height": positive()}),
            ),
        ),
    ]
}

/// The answers of the other writes: batches, grants, erasures.
fn write_schemas() -> Vec<(&'static str, Value)> {
    // A batch item's error is the body of an error answer, with its status beside it.
    let item_error = closed(json!({
        "status": {"type": "integer", "minimum": 400, "maximum": 599},
        "error": closed(json!({"code": {"type": "string", "pattern": "^[a-z_]+$"}, "message": {"type": "string"}, "details": {}}))
    }));
    let item_created = closed(json!({"status": {"const": 201}, "result": reference("receipt")}));
    let grant = closed(json!({
        "patient_id": id(), "grantee_id": id(), "granted_by": id(), "granted_at": time(),
        "expires_at": {"type": ["string", "null"], "format": "date-time"},
        "scope": array(json!({"type": "string"}))
    }));
    // A record erased before: what it was, without a transaction (none was made).
    let already_erased = closed(
        json!({"record_id": id(), "version": positive(), "already_erased": {"const": true}}),
    );
    vec![
        (
            "batch_outcome",
            closed(json!({
                "items": array(json!({"oneOf": [item_created, item_error]})),
                "committed": count(), "failed": count()
            })),
        ),
        (
            "grant_receipt",
            closed(json!({
                "tx_id": tx_id(), "patient_id": id(), "grantee_id": id(),
                "block_number": count(), "position": count(), "height": positive()
            })),
        ),
        (
            "grant_page",
            closed(json!({"items": array(grant), "next_after": {"type": ["string", "null"]}})),
        ),
        (
            "record_erasure_report",
            json!({"oneOf": [reference("receipt"), already_erased]}),
        ),
        (
            "patient_erasure_report",
            // `patient_id` is the path's, echoed unchecked: an id above the limit (no
            // patient has one) is "erased" with nothing found, not refused.
            closed(json!({
                "patient_id": {"type": "string", "minLength": 1}, "erased": count(), "already_erased": count(),
                "failed": array(closed(json!({"record_id": id(), "code": {"type": "string", "pattern": "^[a-z_]+$"}})))
            })),
        ),
    ]
}

/// Every event type (`EventKind::as_str`), as a block's transaction list names them.
const EVENT_KINDS: [&str; 8] = [
    "record_created",
    "record_amended",
    "record_status_changed",
    "access_granted",
    "access_revoked",
    "payload_erased",
    "access_logged",
    "records_read",
];

/// The block explorer's answers and the proofs.
fn explorer_schemas() -> Vec<(&'static str, Value)> {
    let header = json!({
        "number": count(), "hash": hash(), "prev_hash": hash(), "data_hash": hash(),
        "timestamp": time(), "timestamp_ms": {"type": "integer"}, "tx_count": count(),
        "cut_reason": {"type": "string", "enum": ["genesis", "count", "bytes", "oversize", "timeout", "idle", "drain"]},
        "byte_size": count()
    });
    // A transaction the server cannot decode is still listed: no id (when even that is
    // unreadable), type `undecodable`, no submitter.
    let mut kinds = EVENT_KINDS.to_vec();
    kinds.push("undecodable");
    let listed_tx = closed(json!({
        "position": count(), "tx_id": {"oneOf": [tx_id(), {"const": ""}]}, "tx_hash": hash(),
        "type": {"type": "string", "enum": kinds}, "size": count(),
        "submitter": {"type": ["string", "null"]}
    }));
    let mut block = header.clone();
    block["txs"] = array(listed_tx);
    let validation = json!({"oneOf": [
        closed(json!({"status": {"const": "pending"}, "reason": {"type": "string"}})),
        closed(json!({"status": {"const": "valid"}})),
        closed(json!({"status": {"const": "rejected"}, "code": {"type": "string"}, "message": {"type": "string"}})),
    ]});
    let hashes = array(hash());
    let nullable_hash = json!({"type": ["string", "null"], "pattern": "^[0-9a-f]{64}$"});
    let key = json!({"key_id": hex(16), "public_key": hash(), "algorithm": {"const": medledger_proof::KEY_ALGORITHM}});
    let mut retired_key = key.clone();
    retired_key["retired_at_ms"] = json!({"type": "integer"});
    vec![
        (
            "chain",
            closed(json!({
                "height": count(),
                // Null before the first block (and `prev_hash` before the second).
                "tip_hash": nullable_hash, "prev_hash": nullable_hash,
                "genesis_hash": nullable_hash,
                "tip_timestamp": {"type": ["string", "null"], "format": "date-time"},
                "totals": closed(json!({
                    "blocks": count(), "tx": count(), "records": count(), "patients": count(),
                    "projected_events": count(), "rejected_tx": count()
                })),
                "cutter": closed(json!({
                    "batch_timeout_ms": count(), "max_message_count": count(),
                    "preferred_max_bytes": count(), "absolute_max_bytes": count(),
                    "cut_policy": {"type": "string", "enum": ["strict", "eager"]}
                }))
            })),
        ),
        ("block_summary", closed(header)),
        ("block", closed(block)),
        (
            "block_page",
            closed(json!({
                "height": count(), "blocks": array(reference("block_summary")),
                "next_from": {"type": ["integer", "null"], "minimum": 0}
            })),
        ),
        (
            "tx",
            closed(json!({
                "tx_id": tx_id(), "tx_hash": hash(), "block_number": count(), "position": count(),
                "size": count(), "type": {"type": "string", "enum": EVENT_KINDS},
                "submitter": {"type": "string"}, "submitted_at": time(),
                "event": reference("event"), "validation": validation
            })),
        ),
        (
            "checkpoint",
            closed(json!({
                "tree_size": positive(), "root": hash(), "tip_hash": hash(), "height": positive(),
                "timestamp": {"type": "integer"}, "signature": hex(128), "key_id": hex(16)
            })),
        ),
        (
            "tx_proof",
            closed(json!({
                "tx_hash": hash(), "block_number": count(), "leaf_index": count(),
                "tree_size": positive(), "audit_path": hashes, "data_hash": hash(),
                "block_hash": hash(), "block_header": hex(2 * 88),
                "chain": closed(json!({"leaf_index": count(), "tree_size": positive(), "audit_path": hashes, "root": hash()})),
                "checkpoint": reference("checkpoint")
            })),
        ),
        (
            "consistency_proof",
            closed(json!({
                "from": positive(), "to": positive(), "from_root": hash(), "to_root": hash(),
                "proof": hashes, "from_checkpoint": reference("checkpoint"),
                "to_checkpoint": reference("checkpoint")
            })),
        ),
        ("checkpoint_key", closed(key)),
        (
            "checkpoint_keys",
            closed(
                json!({"current": reference("checkpoint_key"), "retired": array(closed(retired_key))}),
            ),
        ),
        (
            "activity",
            closed(json!({
                "bucket": {"type": "string", "enum": ["minute", "hour"]},
                "series": array(closed(json!({"start": time(), "blocks": count(), "tx": count()})))
            })),
        ),
    ]
}

/// Health, readiness, this document, the payload store, key rotations and the cluster.
fn ops_schemas() -> Vec<(&'static str, Value)> {
    let nullable_count = json!({"type": ["integer", "null"], "minimum": 0});
    let node = closed_optional(
        json!({
            "id": positive(), "role": {"type": "string", "enum": ["leader", "follower", "learner"]},
            "http": {"type": "string"}, "raft": {"type": "string"},
            "committed_height": count(), "applied_height": count(), "lag_blocks": count(),
            "lag_entries": count()
        }),
        // This node's heights; the others' lag only on the leader.
        &[
            "committed_height",
            "applied_height",
            "lag_blocks",
            "lag_entries",
        ],
    );
    // One node on its own: no cluster, this node's heights.
    let alone = closed(json!({
        "cluster_id": {"type": "null"}, "node_id": {"type": "null"},
        "leader_id": {"type": "null"}, "term": {"type": "null"},
        "nodes": {"type": "array", "maxItems": 0},
        "committed_height": count(), "applied_height": count()
    }));
    let clustered = closed(json!({
        "cluster_id": {"type": "string", "minLength": 1, "maxLength": 64},
        "node_id": positive(), "leader_id": {"type": ["integer", "null"], "minimum": 1},
        "term": count(),
        "state": {"type": "string", "enum": ["Learner", "Follower", "Candidate", "Leader", "Shutdown"]},
        "last_log_index": nullable_count, "last_applied_index": nullable_count,
        "snapshot_index": nullable_count, "purged_index": nullable_count,
        "nodes": array(node)
    }));
    vec![
        ("health", closed(json!({"status": {"const": "ok"}}))),
        (
            "readiness",
            closed(json!({
                "ready": {"type": "boolean"}, "height": count(), "views_height": count(),
                "projector_lag_blocks": count(),
                "projector_lag_seconds": {"type": "number", "minimum": 0},
                "views_caught_up_with_start": {"type": "boolean"}, "start_height": count(),
                "ledger_error": {"type": ["string", "null"]},
                "projector_error": {"type": ["string", "null"]}
            })),
        ),
        (
            "openapi_document",
            closed(json!({
                "openapi": {"const": "3.1.0"},
                "info": closed(json!({"title": {"type": "string"}, "version": {"type": "string"}, "description": {"type": "string"}})),
                "servers": array(closed(json!({"url": {"type": "string"}}))),
                "paths": {"type": "object"}, "components": {"type": "object"}
            })),
        ),
        (
            "payload_store",
            closed(json!({
                "embedded": closed(json!({"bytes_stored": count(), "pinned_payloads": count()})),
                // Without a Kubo node to replicate to: null.
                "kubo": {"oneOf": [{"type": "null"}, closed(json!({"outbox_depth": count(), "failures": count(), "replicated": count()}))]}
            })),
        ),
        (
            "master_key_rotated",
            closed(json!({
                "keys_rewrapped": count(), "erased_kept": count(),
                "seconds": {"type": "number", "minimum": 0}
            })),
        ),
        (
            "jwt_rotated",
            // Unix seconds.
            closed(json!({"previous_accepted_until": count()})),
        ),
        ("cluster", json!({"oneOf": [alone, clustered]})),
    ]
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
        ("500", "internal, store_error, ledger_failed; block_unreadable, block_corrupt (details.block: a block the disk cannot read, or reads damaged): the message names no path.", false),
        ("503", "busy, shutting_down, views_behind, search_behind, projection_timeout, projector_stopped; in a cluster no_leader, not_committed, outcome_unknown.", true),
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
                   "content": json_of("patient_erasure_report")}),
        );
    }
    if r.path == "/v1/exports/{id}" && r.method == "get" {
        out.insert(
            "202".to_owned(),
            json!({"description": "Still running: X-Progress tells how far (the body is the same manifest, so far).",
                   "headers": {"X-Progress": {"schema": {"type": "string"}},
                               "Retry-After": {"schema": {"type": "integer", "minimum": 1}}},
                   "content": json_of("export_status")}),
        );
    }
    if r.path == "/v1/exports/{id}/files/{type}" {
        out.insert(
            "409".to_owned(),
            error_response(
                "export_not_complete: the files are read once the export is complete.",
                false,
            ),
        );
    }
    if r.path == "/v1/exports" {
        out.insert(
            "409".to_owned(),
            error_response("too_many_exports: delete finished exports first.", false),
        );
    }
    if r.path == "/readyz" {
        out.insert(
            "503".to_owned(),
            json!({"description": "Not ready: the readiness report says why.",
                   "content": json_of("readiness")}),
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
            parameters.push(json!({"name": name, "in": "query", "required": matches!((r.path, name), ("/v1/checkpoint/consistency", "from") | ("/v1/search", "q")), "description": description, "schema": schema}));
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
        // One name for a request body and an answer would describe one with the other.
        let replaced = schemas.insert(name.to_owned(), schema);
        assert!(replaced.is_none(), "two schemas are named `{name}`");
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
