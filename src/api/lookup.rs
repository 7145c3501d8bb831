//! How a request finds the record it names, and what it may see of it: lookups that never
//! answer "does not exist" for a record the ledger holds, `?min_height=`, and the read
//! rule (`may_read`).

use actix_web::http::StatusCode;
use serde_json::json;

use medledger_views::query::{QueryError, Views, PAGE_LIMIT_MAX};
use medledger_views::values::VersionEntry;

use super::auth::Caller;
use super::error::ApiError;
use super::submit::{now, store_error};
use super::AppState;

pub(crate) fn query_error(e: QueryError) -> ApiError {
    match e {
        QueryError::Store(s) => store_error(s),
        other => ApiError::bad_request(other.code(), other.to_string()),
    }
}

/// Refuses an id the ledger could never hold (400 `invalid_id`), rather than answer
/// as if it named nothing: 1 to 128 characters of `[A-Za-z0-9._:@-]`.
pub(crate) fn check_id(what: &str, id: &str) -> Result<(), ApiError> {
    if medledger_chaincode::is_valid_id(id) {
        return Ok(());
    }
    Err(ApiError::bad_request(
        "invalid_id",
        format!("{what} must be 1 to 128 characters of [A-Za-z0-9._:@-]"),
    ))
}

/// A page's `limit` (default [`super::PAGE_LIMIT_DEFAULT`]), or 400 `invalid_limit`
/// outside 1 to [`PAGE_LIMIT_MAX`].
pub(crate) fn page_limit(limit: Option<usize>) -> Result<usize, ApiError> {
    let limit = limit.unwrap_or(super::PAGE_LIMIT_DEFAULT);
    if limit == 0 || limit > PAGE_LIMIT_MAX {
        return Err(ApiError::bad_request(
            "invalid_limit",
            format!("limit must be between 1 and {PAGE_LIMIT_MAX}"),
        ));
    }
    Ok(limit)
}

/// The most a read waits for the views to reach its `min_height`, or for them to catch up
/// with the ledger before it answers "does not exist".
pub const READ_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Waits until the views hold blocks `0..height`, at most [`READ_WAIT`]; past it, 503
/// `views_behind` with Retry-After.
pub(crate) async fn views_at(state: &AppState, height: u64) -> Result<(), ApiError> {
    state
        .projector
        .reached(height, READ_WAIT)
        .await
        .map_err(|e| {
            ApiError::unavailable("views_behind", e.to_string(), 1)
                .with_details(json!({"min_height": height, "views_height": e.reached}))
        })
}

/// A read's `?min_height=`: the views reflect at least that many blocks before it is
/// answered (a client passes the `height` of its last write to read its own writes).
pub(crate) async fn honour_min_height(
    state: &AppState,
    min_height: Option<u64>,
) -> Result<(), ApiError> {
    match min_height {
        // One node acknowledges only what its ledger holds (a receipt's height is never
        // above the tip): a height above it was never acknowledged here, and neither
        // waiting nor trying again would bring it. The client's error, not the server's.
        Some(height) if state.cluster.is_none() && height > state.ledger.tip().height => {
            let tip = state.ledger.tip().height;
            Err(ApiError::bad_request(
                "min_height_ahead",
                format!(
                    "this node holds {tip} blocks: no write it acknowledged has min_height {height}"
                ),
            )
            .with_details(json!({"min_height": height, "height": tip})))
        }
        Some(height) => views_at(state, height).await,
        None => Ok(()),
    }
}

/// The record's current version, or 404. "Does not exist" is said only by views that
/// hold every block the ledger held when the lookup began: a miss while they lag waits
/// for them (at most [`READ_WAIT`], then 503) and looks again, so a record the ledger
/// holds never answers 404 (after a restart, or before the projector caught up).
pub(crate) async fn load_record(
    state: &AppState,
    record_id: &str,
) -> Result<VersionEntry, ApiError> {
    // Read the views' height before the lookup: views are monotone, so a lookup that
    // follows `seen >= tip` saw every block up to `tip`.
    let seen = state.projector.applied_height();
    let tip = state.ledger.tip().height;
    let lookup = || {
        Views::new(state.views.as_ref())
            .record(record_id)
            .map_err(store_error)
    };
    if let Some(entry) = lookup()? {
        return Ok(entry);
    }
    if seen < tip {
        views_at(state, tip).await?;
        if let Some(entry) = lookup()? {
            return Ok(entry);
        }
    }
    Err(ApiError::not_found("record", record_id))
}

/// The record's current version, if `caller` may read it, or declared break-glass (404,
/// else 403).
pub(crate) async fn load_for_read(
    state: &AppState,
    caller: &Caller,
    record_id: &str,
    declared: &super::audit::Declared,
) -> Result<VersionEntry, ApiError> {
    let current = load_record(state, record_id).await?;
    if !declared.is_break_glass() && !may_read(state, caller, &current)? {
        return Err(ApiError::forbidden(format!(
            "you may not read record `{record_id}`"
        )));
    }
    Ok(current)
}

pub(crate) async fn load_for_write(
    state: &AppState,
    caller: &Caller,
    record_id: &str,
) -> Result<VersionEntry, ApiError> {
    let current = load_record(state, record_id).await?;
    if !caller.may_write_records_of(&current.state.hospital_id) {
        return Err(ApiError::forbidden(format!(
            "you may not change records of hospital `{}`",
            current.state.hospital_id
        )));
    }
    Ok(current)
}

pub(crate) fn check_expected(
    current: &VersionEntry,
    expected: Option<u32>,
) -> Result<(), ApiError> {
    match expected {
        Some(v) if v != current.state.version => Err(ApiError::new(
            StatusCode::CONFLICT,
            "version_conflict",
            format!(
                "record `{}` is at version {}, not the expected {v}",
                current.state.record_id, current.state.version
            ),
        )
        .with_details(json!({"current_version": current.state.version}))),
        _ => Ok(()),
    }
}

/// Whether `caller` may read `entry` (looks up the caller's grant for clinicians).
pub(crate) fn may_read(
    state: &AppState,
    caller: &Caller,
    entry: &VersionEntry,
) -> Result<bool, ApiError> {
    let grant = if caller.role() == super::auth::Role::Clinician {
        Views::new(state.views.as_ref())
            .grant(&entry.state.patient_id, caller.id())
            .map_err(store_error)?
    } else {
        None
    };
    Ok(caller.may_read_record(&entry.state, grant.as_ref(), now()))
}

/// The validator of a representation that is a function of one ledger version: the tx
/// that wrote it (a record's version, or a history page up to that version, never changes
/// once written). Weak, since compression may change the bytes on the wire.
pub(crate) fn version_etag(tx_id: &str) -> String {
    format!("W/\"{tx_id}\"")
}

/// Whether the request's `If-None-Match` names `etag` (weak comparison, RFC 9110
/// section 13.1.2: `W/` ignored on both sides; `*` matches any current representation).
pub(crate) fn not_modified(req: &actix_web::HttpRequest, etag: &str) -> bool {
    let bare = |tag: &str| tag.trim().trim_start_matches("W/").to_owned();
    let ours = bare(etag);
    req.headers()
        .get_all(actix_web::http::header::IF_NONE_MATCH)
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|tag| tag.trim() == "*" || bare(tag) == ours)
}

/// A read of clinical content: 304 when the client holds this version (neither `shown`
/// nor `body` run: nothing more is read, and nothing new shown is recorded), else
/// `shown` (the read put on the ledger) then what `body` answers; either way with the
/// validator and `Cache-Control: private, no-cache` (a browser may keep it, must ask
/// again, and no shared cache may keep it at all).
pub(crate) async fn versioned(
    req: &actix_web::HttpRequest,
    etag: &str,
    shown: impl std::future::Future<Output = Result<(), ApiError>>,
    body: impl FnOnce() -> Result<actix_web::HttpResponse, ApiError>,
) -> Result<actix_web::HttpResponse, ApiError> {
    let response = if not_modified(req, etag) {
        actix_web::HttpResponse::NotModified().finish()
    } else {
        shown.await?;
        body()?
    };
    Ok(with_validator(response, etag))
}

/// `response` with the validator `etag` and `Cache-Control: private, no-cache`.
pub(crate) fn with_validator(
    mut response: actix_web::HttpResponse,
    etag: &str,
) -> actix_web::HttpResponse {
    use actix_web::http::header::{HeaderValue, CACHE_CONTROL, ETAG};
    let headers = response.headers_mut();
    headers.insert(
        ETAG,
        etag.parse().expect("a validator is a valid header value"),
    );
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("private, no-cache"));
    response
}
