//! `GET /v1/search`: records whose metadata or reasons hold every word of a query, newest
//! first, only those the caller may read (filtered inside the index's scan, so a page of
//! `limit` holds that many readable hits when they exist), with the matched words marked.

use std::collections::HashMap;

use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};
use serde_json::json;

use medledger_chaincode::contract::GrantState;
use medledger_chaincode::Timestamp;
use medledger_views::query::{Views, PAGE_LIMIT_MAX};
use medledger_views::values::VersionEntry;

use super::audit::{self, Declared};
use super::auth::{Caller, Role};
use super::error::ApiError;
use super::lookup::{check_id, honour_min_height, page_limit, READ_WAIT};
use super::records::{record_json, RecordJson};
use super::submit::{ensure_key, now, store_error};
use super::AppState;
use crate::search::terms::{self, Highlight};
use crate::search::{Query, SearchError, QUERY_WORDS_MAX};

type Data = web::Data<AppState>;

/// A query's text, bytes at most.
pub const QUERY_BYTES_MAX: usize = 512;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchParams {
    q: String,
    patient_id: Option<String>,
    hospital_id: Option<String>,
    #[serde(rename = "type")]
    record_type: Option<String>,
    from: Option<Timestamp>,
    to: Option<Timestamp>,
    limit: Option<usize>,
    cursor: Option<String>,
    min_height: Option<u64>,
    purpose: Option<String>,
}

#[derive(Serialize)]
struct HitJson<'a> {
    record: RecordJson<'a>,
    highlights: Vec<Highlight>,
}

#[derive(Serialize)]
struct PageJson<'a> {
    items: Vec<HitJson<'a>>,
    next_cursor: Option<String>,
    /// The ledger height the index covered when the query ran.
    indexed_height: u64,
}

fn invalid_search(message: impl Into<String>) -> ApiError {
    ApiError::bad_request("invalid_search", message.into())
}

/// A cursor is `<created_at ms>.<record id>` of the last hit shown.
fn parse_cursor(text: &str) -> Result<(i64, String), ApiError> {
    let bad = || ApiError::bad_request("invalid_cursor", "the cursor is not one this route gave");
    let (ms, record_id) = text.split_once('.').ok_or_else(bad)?;
    let ms: i64 = ms.parse().map_err(|_| bad())?;
    if !medledger_chaincode::is_valid_id(record_id) {
        return Err(bad());
    }
    Ok((ms, record_id.to_owned()))
}

/// `GET /v1/search?q=`: a page of the records holding every word of `q` that the caller
/// may read. Patients search their own records; clinicians their hospital's and those of
/// patients whose grant covers the record's type; auditors and admins every record. The
/// hits shown are a read on the ledger (`what: search`).
pub async fn search(
    state: Data,
    caller: Caller,
    params: web::Query<SearchParams>,
) -> Result<HttpResponse, ApiError> {
    let params = params.into_inner();
    if params.q.len() > QUERY_BYTES_MAX {
        return Err(invalid_search(format!(
            "q is at most {QUERY_BYTES_MAX} bytes"
        )));
    }
    let words = terms::words(&params.q);
    if words.is_empty() || words.len() > QUERY_WORDS_MAX {
        return Err(invalid_search(format!(
            "q must hold 1 to {QUERY_WORDS_MAX} words (runs of letters and digits)"
        )));
    }
    for (what, id) in [
        ("a patient id", &params.patient_id),
        ("a hospital id", &params.hospital_id),
    ] {
        if let Some(id) = id {
            check_id(what, id)?;
        }
    }
    if let Some(t) = &params.record_type {
        if !medledger_chaincode::is_valid_record_type(t) {
            return Err(ApiError::bad_request(
                "invalid_type",
                "type is a record type: lowercase letters, digits and _",
            ));
        }
    }
    if let (Some(from), Some(to)) = (params.from, params.to) {
        if from > to {
            return Err(ApiError::bad_request("invalid_range", "from is after to"));
        }
    }
    let limit = page_limit(params.limit)?;
    let after = params.cursor.as_deref().map(parse_cursor).transpose()?;
    // A patient searches its own records only.
    let patient_id = match caller.role() {
        Role::Patient => match &params.patient_id {
            Some(p) if p != caller.id() => {
                return Err(ApiError::forbidden(format!(
                    "you may not search the records of `{p}`"
                )))
            }
            _ => Some(caller.id().to_owned()),
        },
        _ => params.patient_id.clone(),
    };
    let declared = Declared::parse(&caller, params.purpose.as_deref(), None, false)?;
    honour_min_height(&state, params.min_height).await?;
    if let Some(height) = params.min_height {
        state
            .search
            .reached(height, READ_WAIT)
            .await
            .map_err(|reached| {
                ApiError::unavailable(
                    "search_behind",
                    format!("the search index holds {reached} blocks, not yet {height}"),
                    1,
                )
                .with_details(json!({"min_height": height, "indexed_height": reached}))
            })?;
    }
    let query = Query {
        words: words.clone(),
        patient_id,
        hospital_id: params.hospital_id.clone(),
        record_type: params.record_type.clone(),
        from_ms: params.from.map(|t| t.0),
        to_ms: params.to.map(|t| t.0),
        after,
        limit,
    };
    let st = state.clone();
    let reader = caller.clone();
    let (indexed_height, found, entries) = web::block(move || -> Result<_, ApiError> {
        let indexed_height = st.search.height();
        let views = Views::new(st.views.as_ref());
        // A clinician reads its hospital's records, and others' through the patient's
        // grant: each patient's grant is read once per query.
        let mut grants: HashMap<String, Option<GrantState>> = HashMap::new();
        let now = now();
        let found = st
            .search
            .search(&query, |p| match reader.role() {
                Role::Admin | Role::Auditor => Ok(true),
                Role::Patient => Ok(p.patient_id == reader.id()),
                Role::Clinician => {
                    if reader.hospital() == Some(p.hospital_id.as_str()) {
                        return Ok(true);
                    }
                    if !grants.contains_key(&p.patient_id) {
                        let grant = views
                            .grant(&p.patient_id, reader.id())
                            .map_err(|e| SearchError::Views(e.to_string()))?;
                        grants.insert(p.patient_id.clone(), grant);
                    }
                    Ok(grants[&p.patient_id].as_ref().is_some_and(|g| {
                        g.grantee_id == reader.id() && g.allows(&p.record_type, now)
                    }))
                }
            })
            .map_err(|e| match e {
                SearchError::Views(m) => store_error(medledger_views::ViewError::Backend(m)),
                other => ApiError::internal(other.to_string()),
            })?;
        let keys: Vec<&str> = found.hits.iter().map(|h| h.record_id.as_str()).collect();
        let entries = views.records(&keys).map_err(store_error)?;
        Ok((indexed_height, found, entries))
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))??;
    // The views hold every record the index names (the index follows them). A hit was
    // authorized on its patient, hospital and type, which never change.
    let shown: Vec<&VersionEntry> = entries.iter().flatten().collect();
    let reads: Vec<(&str, &str)> = shown
        .iter()
        .map(|e| (e.state.patient_id.as_str(), e.state.record_id.as_str()))
        .collect();
    audit::record(&state, &caller, &declared, "search", &reads).await?;
    let mut items = Vec::with_capacity(shown.len());
    for entry in shown {
        ensure_key(&state, &entry.state).await;
        let record = record_json(state.payloads.keys(), entry)?;
        let highlights = record
            .metadata
            .as_ref()
            .map(|m| terms::highlights(m.get(), &words))
            .unwrap_or_default();
        items.push(HitJson { record, highlights });
    }
    Ok(HttpResponse::Ok().json(PageJson {
        items,
        next_cursor: found.next.map(|(ms, id)| format!("{ms}.{id}")),
        indexed_height,
    }))
}

/// The route's query parameters, for the OpenAPI document.
pub(super) fn query_params(min_height: super::openapi::Param) -> Vec<super::openapi::Param> {
    use super::openapi::int;
    let id = json!({"type": "string", "pattern": "^[A-Za-z0-9._:@-]{1,128}$"});
    let time = json!({"type": "string", "format": "date-time"});
    vec![
        (
            "q",
            json!({"type": "string", "minLength": 1, "maxLength": QUERY_BYTES_MAX}),
            "Required: 1 to 8 words (runs of letters and digits, any case); a hit holds every one in its metadata's values or its reasons.",
        ),
        ("patient_id", id.clone(), "Only this patient's records (a patient: its own, the default)."),
        ("hospital_id", id, "Only this hospital's records."),
        (
            "type",
            json!({"type": "string", "pattern": format!("^[a-z0-9_]{{1,{}}}$", medledger_chaincode::limits::RECORD_TYPE_LEN_MAX)}),
            "Only this record type.",
        ),
        ("from", time.clone(), "Created at or after (RFC 3339)."),
        ("to", time, "Created at or before (RFC 3339)."),
        ("limit", int(1, Some(PAGE_LIMIT_MAX as u64)), "Page size (default 50)."),
        (
            "cursor",
            json!({"type": "string", "pattern": "^-?[0-9]+\\.[A-Za-z0-9._:@-]{1,128}$"}),
            "The previous page's next_cursor.",
        ),
        (
            min_height.0,
            min_height.1,
            "Read one's own writes: answer once the views and the search index hold this many blocks (a write's `height`); waits at most 5 s each, then 503 views_behind or search_behind.",
        ),
    ]
}

/// The route's success body, for the OpenAPI document.
pub(super) fn schemas() -> Vec<(&'static str, serde_json::Value)> {
    use super::openapi::{array, closed, count, reference};
    vec![(
        "search_page",
        closed(json!({
            "items": array(closed(json!({
                "record": reference("record"),
                "highlights": array(closed(json!({
                    "field": {"type": "string"},
                    "fragment": {"type": "string"}
                })))
            }))),
            "next_cursor": {"type": ["string", "null"]},
            "indexed_height": count()
        })),
    )]
}
