//! The HTTP API (actix-web): record submission and queries under `/v1`, health, readiness
//! and metrics. Every answer is JSON; every error has the body of [`error::ApiError`].
//!
//! A submission is answered only after the block holding it is durable (the orderer's
//! receipt) and the projector has applied it: the answer is the contract's verdict, so a
//! 2xx is never followed by a rejection. Every write answer carries its `height`; reads
//! take `?min_height=` to see one's own writes.

pub mod access_log;
pub mod audit;
pub mod auth;
pub mod bulk_export;
pub mod cluster;
pub mod erasure;
pub mod error;
pub mod explorer;
pub mod export;
pub mod grants;
pub mod jwks;
pub mod keys;
pub mod limits;
pub mod lookup;
pub mod metrics;
pub mod openapi;
pub mod payloads;
pub mod records;
pub mod search;
pub mod slow_body;
pub mod submit;
pub mod summary;
pub mod timelines;

use std::sync::Arc;
use std::time::Duration;

use actix_web::{web, HttpResponse};
use serde_json::json;

use medledger_storage::Ledger;
use medledger_views::projector::Projector;
use medledger_views::ViewStore;

use crate::explorer::Explorer;
use crate::orderer::Orderer;
use auth::Auth;
use error::ApiError;

/// The projector lag (blocks) above which `/readyz` answers 503.
pub const READY_LAG_BLOCKS_MAX: u64 = 1_000;
/// The most a submission waits for the contract's verdict (the views to apply its block).
pub const PROJECTED_WAIT: Duration = Duration::from_secs(10);
/// Page size when `limit` is not given.
pub(crate) const PAGE_LIMIT_DEFAULT: usize = 50;
/// JSON request bodies above this are refused with 413.
pub const JSON_BODY_BYTES_MAX: usize = 64 * 1024;

/// What every handler shares.
pub struct AppState {
    pub ledger: Arc<Ledger>,
    pub orderer: Arc<Orderer>,
    pub views: Arc<dyn ViewStore>,
    pub projector: Arc<Projector>,
    pub explorer: Explorer,
    /// The encrypted payload pipeline.
    pub payloads: Arc<medledger_payload::Payloads>,
    pub auth: Auth,
    /// Whether reads of clinical content wait for their access event (`--audit-reads`).
    pub audit_reads: audit::AuditReads,
    /// The per-client rate limit (none: off).
    pub rate_limit: Option<limits::RateLimiter>,
    /// A request body's grace before it must keep coming (`slow_body`).
    pub body_grace: std::time::Duration,
    pub metrics: metrics::Metrics,
    /// This node's cluster (none: one node on its own).
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
    /// Whether a request may have left a stored payload unnamed (no clean stop then).
    pub payloads_unresolved: payloads::Unresolved,
    /// The data dir's free space against the reserve (507 `storage_full` below it).
    pub disk: crate::disk::DiskSpace,
    /// Bulk exports (`POST /v1/exports`).
    pub exports: bulk_export::Exports,
    /// The full-text search index and its indexer (`GET /v1/search`).
    pub search: Arc<crate::search::Search>,
}

/// One route: how it is registered and how `/v1/openapi.json` describes it.
#[derive(Clone, Copy, Debug)]
pub struct RouteDoc {
    /// `get`, `post` or `delete`.
    pub method: &'static str,
    /// The path, with `{name}` parameters (the syntax actix and OpenAPI share).
    pub path: &'static str,
    pub summary: &'static str,
    /// Group in the OpenAPI document.
    pub tag: &'static str,
    /// Whether a bearer token is required.
    pub auth: bool,
    /// The JSON Schema of the request body, a file under `schemas/`.
    pub body: Option<&'static str>,
}

/// Declares every route once: the registration and [`ROUTES`] come from this one table,
/// so the OpenAPI document cannot drift from what the server serves.
macro_rules! routes {
    ($( $method:ident $path:literal => $handler:path, $tag:literal, auth: $auth:literal, body: $body:expr, $summary:literal; )*) => {
        /// Every route the server serves (`/v1/openapi.json` is built from it).
        pub const ROUTES: &[RouteDoc] = &[ $( RouteDoc {
            method: stringify!($method),
            path: $path,
            summary: $summary,
            tag: $tag,
            auth: $auth,
            body: $body,
        } ),* ];

        /// Static paths first: actix tries routes in order, a static one by comparing
        /// the path and one with `{..}` by running its regex, so a request for a static
        /// path no longer runs the regexes of every route declared before it (~5% of a
        /// search's CPU). No static path is matched by a pattern of the same method
        /// declared before it (`api::tests`), so the order changes no answer.
        fn register_routes(cfg: &mut web::ServiceConfig) {
            $( if !$path.contains('{') { cfg.route($path, web::$method().to($handler)); } )*
            $( if $path.contains('{') { cfg.route($path, web::$method().to($handler)); } )*
        }
    };
}

routes! {
    get "/healthz" => healthz, "ops", auth: false, body: None, "The process answers.";
    get "/readyz" => readyz, "ops", auth: false, body: None, "Ready: the ledger is healthy, the views hold every block acknowledged before the start and are within 1,000 blocks.";
    get "/metrics" => metrics::render, "ops", auth: false, body: None, "Prometheus metrics.";
    get "/explorer" => explorer_page, "explorer", auth: false, body: None, "The block explorer web page.";
    get "/v1/openapi.json" => openapi::serve, "ops", auth: false, body: None, "This document.";
    post "/v1/records" => records::create, "records", auth: true, body: Some("new_record.json"), "Create a record; answered once its block is durable and the contract accepted it.";
    post "/v1/records/batch" => records::create_batch, "records", auth: true, body: Some("new_records.json"), "Create up to 1,000 records; each item gets its own outcome.";
    get "/v1/records/{id}" => records::get, "records", auth: true, body: None, "A record now, or as of the first N blocks (`as_of_block`).";
    get "/v1/records/{id}/history" => records::history, "records", auth: true, body: None, "Every version of a record with its block and tx.";
    get "/v1/records/{id}/payload" => payloads::read, "payloads", auth: true, body: None, "The record's payload, decrypted and streamed; the read is on the ledger (RecordsRead) before it is answered.";
    get "/v1/records/{id}/access-log" => access_log::record_access_log, "audit", auth: true, body: None, "Who read this record, newest first (its patient, auditors, admins).";
    get "/v1/patients/{id}/access-log" => access_log::patient_access_log, "audit", auth: true, body: None, "Who read what of this patient's records, newest first (the patient, auditors, admins).";
    get "/v1/ipfs/status" => payloads::status, "payloads", auth: true, body: None, "The payload store and the IPFS replication outbox.";
    post "/v1/records/{id}/erase" => erasure::erase_record, "records", auth: true, body: Some("erasure.json"), "Erase a record: its clinical text in every version and every payload it had (admins).";
    post "/v1/keys/rotate-jwt" => keys::rotate_jwt, "ops", auth: true, body: Some("jwt_rotation.json"), "Replace the JWT secret; old tokens stay accepted for a grace period (admins).";
    post "/v1/keys/rotate" => keys::rotate_keys, "ops", auth: true, body: None, "Re-wrap every data key under a new master key (admins).";
    post "/v1/patients/{id}/erase" => erasure::erase_patient, "records", auth: true, body: Some("patient_erasure.json"), "Forget a patient: erase every record, every version (admins).";
    post "/v1/records/{id}/amendments" => records::amend, "records", auth: true, body: Some("amendment.json"), "Amend a record (409 on a stale `expected_version`).";
    post "/v1/records/{id}/status" => records::change_status, "records", auth: true, body: Some("status_change.json"), "Change a record's status.";
    get "/v1/patients/{id}/records" => timelines::patient_timeline, "records", auth: true, body: None, "A patient's records, newest first, filtered and paged.";
    get "/v1/patients/{id}/summary" => summary::patient_summary, "records", auth: true, body: None, "A patient's records at a glance: counts by type and status, the newest of each type, active records, open grants, the last read.";
    post "/v1/exports" => bulk_export::start, "records", auth: true, body: Some("new_export.json"), "Start a bulk export (admins, auditors): 202 with its status URL; one NDJSON file per record type.";
    get "/v1/exports/{id}" => bulk_export::status, "records", auth: true, body: None, "A bulk export: 202 with X-Progress while it runs, 200 with its files and their SHA-256 once done.";
    get "/v1/exports/{id}/files/{type}" => bulk_export::file, "records", auth: true, body: None, "One NDJSON file of a complete bulk export.";
    delete "/v1/exports/{id}" => bulk_export::delete, "records", auth: true, body: None, "Delete a finished bulk export and its files.";
    get "/v1/search" => search::search, "records", auth: true, body: None, "Records whose metadata or reasons hold every word of q, newest first, only those the caller may read, with the words marked.";
    get "/v1/stats" => summary::stats, "records", auth: true, body: None, "Counts of records by hospital, type, month and status (admins, auditors; a clinician its hospital's).";
    get "/v1/patients/{id}/export" => export::patient_export, "records", auth: true, body: None, "A patient's whole timeline as NDJSON, or CSV with `Accept: text/csv`.";
    post "/v1/patients/{id}/grants" => grants::grant, "grants", auth: true, body: Some("grant.json"), "Grant a clinician access to a patient's records.";
    get "/v1/patients/{id}/grants" => grants::list_grants, "grants", auth: true, body: None, "A patient's grants.";
    delete "/v1/patients/{id}/grants/{grantee}" => grants::revoke, "grants", auth: true, body: None, "Revoke a grant.";
    get "/v1/clinicians/{id}/records" => timelines::clinician_timeline, "records", auth: true, body: None, "A clinician's records, newest first.";
    get "/v1/hospitals/{id}/records" => timelines::hospital_timeline, "records", auth: true, body: None, "A hospital's records, newest first.";
    post "/v1/cluster/learners" => cluster::add_learner, "ops", auth: true, body: Some("new_node.json"), "Add a node as a learner; answered once it caught up (admins, on the leader).";
    post "/v1/cluster/voters" => cluster::set_voters, "ops", auth: true, body: Some("voters.json"), "Make exactly these nodes the voters: promote or remove (admins, on the leader).";
    post "/v1/cluster/leader" => cluster::transfer_leader, "ops", auth: true, body: Some("leader.json"), "Hand the leadership to another voter; answered once it leads (admins, on the leader).";
    get "/v1/cluster" => cluster::status, "ops", auth: true, body: None, "The cluster's nodes, leader, term and heights (auditors, admins).";
    get "/v1/chain" => explorer::chain, "explorer", auth: true, body: None, "Height, tip, genesis, totals and the cutter's settings.";
    get "/v1/blocks" => explorer::blocks, "explorer", auth: true, body: None, "Block headers, newest first by default.";
    get "/v1/blocks/by-hash/{hash}" => explorer::block_by_hash, "explorer", auth: true, body: None, "A block by its header hash.";
    get "/v1/blocks/{number}" => explorer::block, "explorer", auth: true, body: None, "A block by number, with its transaction list.";
    get "/v1/tx/{id}" => explorer::tx, "explorer", auth: true, body: None, "A transaction, where it is, and the contract's verdict.";
    get "/v1/tx/{id}/proof" => explorer::tx_proof, "explorer", auth: true, body: None, "Inclusion proof of a transaction up to a signed checkpoint.";
    get "/v1/checkpoint" => explorer::checkpoint, "explorer", auth: true, body: None, "The latest signed checkpoint.";
    get "/v1/checkpoint/keys" => explorer::checkpoint_keys, "explorer", auth: false, body: None, "The checkpoint signing key and the keys rotated out (Ed25519).";
    post "/v1/checkpoint/rotate" => explorer::rotate_checkpoint_key, "explorer", auth: true, body: None, "A new checkpoint signing key; the old one stays published (admins).";
    get "/v1/checkpoint/key" => explorer::checkpoint_key, "explorer", auth: false, body: None, "The checkpoint signing key (Ed25519).";
    get "/v1/checkpoint/consistency" => explorer::consistency, "explorer", auth: true, body: None, "Consistency proof between two checkpoints.";
    get "/v1/activity" => explorer::activity, "explorer", auth: true, body: None, "Blocks and transactions per minute or hour.";
}

/// The JSON body limit of the batch route (1,000 records of about 1 KiB).
pub const BATCH_BODY_BYTES_MAX: usize = 2 * 1024 * 1024;

/// Registers every route, the extractors' limits and error bodies, and the 404 body.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.app_data(json_config(JSON_BODY_BYTES_MAX))
        .app_data(web::QueryConfig::default().error_handler(|err, _| {
            ApiError::bad_request("invalid_query", format!("invalid query string: {err}")).into()
        }))
        .app_data(web::PathConfig::default().error_handler(|err, _| {
            ApiError::bad_request("invalid_path", format!("invalid path: {err}")).into()
        }));
    register_routes(cfg);
    cfg.default_service(web::to(|req: actix_web::HttpRequest| async move {
        // A path served under other methods: 405 with the methods it takes.
        let allowed = methods_of(req.path());
        if allowed.is_empty() {
            return Err::<HttpResponse, _>(ApiError::new(
                actix_web::http::StatusCode::NOT_FOUND,
                "no_route",
                "no such route",
            ));
        }
        let allow = allowed.join(", ");
        let mut res = actix_web::ResponseError::error_response(&ApiError::new(
            actix_web::http::StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("this route takes {allow}"),
        ));
        if let Ok(v) = actix_web::http::header::HeaderValue::from_str(&allow) {
            res.headers_mut().insert(actix_web::http::header::ALLOW, v);
        }
        Ok(res)
    }));
}

/// The methods (upper case) of the routes whose pattern `path` matches.
fn methods_of(path: &str) -> Vec<String> {
    let segments: Vec<&str> = path.split('/').collect();
    let mut methods: Vec<String> = ROUTES
        .iter()
        .filter(|r| {
            let pattern: Vec<&str> = r.path.split('/').collect();
            pattern.len() == segments.len()
                && pattern
                    .iter()
                    .zip(&segments)
                    .all(|(p, s)| p == s || (p.starts_with('{') && !s.is_empty()))
        })
        .map(|r| r.method.to_ascii_uppercase())
        .collect();
    methods.sort();
    methods.dedup();
    methods
}

/// The JSON extractor's settings: a body limit and this API's error bodies.
pub fn json_config(limit: usize) -> web::JsonConfig {
    web::JsonConfig::default()
        .limit(limit)
        .error_handler(|err, _| json_error(err).into())
}

/// For handlers that read their JSON body themselves: the body must be declared JSON
/// (`application/json` or a `+json` type), as the `web::Json` extractor requires.
pub(crate) fn require_json(req: &actix_web::HttpRequest) -> Result<(), ApiError> {
    let json = req
        .headers()
        .get(actix_web::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .is_some_and(|m| m == "application/json" || m.ends_with("+json"));
    if json {
        Ok(())
    } else {
        Err(json_error(actix_web::error::JsonPayloadError::ContentType))
    }
}

pub(crate) fn json_error(err: actix_web::error::JsonPayloadError) -> ApiError {
    use actix_web::error::JsonPayloadError as E;
    match err {
        E::Overflow { limit } | E::OverflowKnownLength { limit, .. } => ApiError::new(
            actix_web::http::StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("the JSON body is larger than {limit} bytes"),
        ),
        E::ContentType => ApiError::new(
            actix_web::http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "the body must be `application/json`",
        ),
        E::Deserialize(e) => {
            ApiError::bad_request("invalid_body", format!("invalid JSON body: {e}"))
        }
        E::Payload(p) if slow_body::is_timeout(&p) => ApiError::new(
            actix_web::http::StatusCode::REQUEST_TIMEOUT,
            "body_timeout",
            format!(
                "{}; after the first seconds it must come at {} KiB/s or faster",
                slow_body::BODY_TIMEOUT_MESSAGE,
                slow_body::BODY_BYTES_PER_SEC / 1024
            ),
        ),
        other => ApiError::bad_request("invalid_body", format!("unreadable body: {other}")),
    }
}

/// The block explorer's page: one self-contained file, embedded in the binary. It asks
/// for a token and calls the JSON routes; nothing it shows is served without one.
async fn explorer_page() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header((
            "Content-Security-Policy",
            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src 'self'",
        ))
        .insert_header(("X-Content-Type-Options", "nosniff"))
        .body(include_str!("explorer.html"))
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let lag = state.projector.lag();
    let poisoned = state.ledger.poisoned();
    let projector_error = state.projector.error();
    // Not ready until the views hold every block acknowledged before this start: before
    // that, reads of acknowledged records would wait (or answer 503).
    let caught_up = state.projector.caught_up_with_start();
    let ready = poisoned.is_none()
        && projector_error.is_none()
        && caught_up
        && lag.blocks <= READY_LAG_BLOCKS_MAX;
    let body = json!({
        "ready": ready,
        "height": state.ledger.tip().height,
        "views_height": state.projector.applied_height(),
        "projector_lag_blocks": lag.blocks,
        "projector_lag_seconds": lag.seconds,
        "views_caught_up_with_start": caught_up,
        "start_height": state.projector.start_height(),
        // Without the server's paths: the log has them whole.
        "ledger_error": poisoned.as_deref().map(error::without_paths),
        "projector_error": projector_error.as_deref().map(error::without_paths),
    });
    if ready {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}

#[cfg(test)]
mod tests {
    use super::ROUTES;

    /// Whether `pattern` (with `{name}` segments) matches the static `path`.
    fn matches(pattern: &str, path: &str) -> bool {
        let (a, b): (Vec<&str>, Vec<&str>) =
            (pattern.split('/').collect(), path.split('/').collect());
        a.len() == b.len()
            && a.iter()
                .zip(&b)
                .all(|(p, s)| (p.starts_with('{') && !s.is_empty()) || p == s)
    }

    /// `register_routes` puts static paths before patterns: that changes no answer only
    /// while no pattern declared before a static path of the same method matches it.
    #[test]
    fn no_pattern_declared_earlier_shadows_a_static_path() {
        for (i, r) in ROUTES.iter().enumerate() {
            if r.path.contains('{') {
                continue;
            }
            for earlier in &ROUTES[..i] {
                assert!(
                    !(earlier.method == r.method
                        && earlier.path.contains('{')
                        && matches(earlier.path, r.path)),
                    "{} {} is declared after {}, which matches it",
                    r.method,
                    r.path,
                    earlier.path
                );
            }
        }
        assert!(matches("/v1/records/{id}", "/v1/records/batch"));
    }
}
