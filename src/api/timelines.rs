//! Timeline routes: a patient's, a clinician's or a hospital's records, newest first,
//! filtered and paged, with only what the caller may read.

use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};

use medledger_chaincode::{RecordStatus, Timestamp};
use medledger_views::query::{Owner, TimelineFilter, Views, PAGE_LIMIT_MAX};

use super::auth::Caller;
use super::error::ApiError;
use super::lookup::{honour_min_height, may_read, query_error};
use super::records::{record_json, RecordJson};
use super::submit::ensure_key;
use super::{AppState, PAGE_LIMIT_DEFAULT};

type Data = web::Data<AppState>;

/// Reads of a timeline one request makes, at most, to fill a page with rows the caller
/// may read (each reads up to the page's size in rows it returns).
const PAGE_READS_MAX: usize = 8;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimelineQuery {
    #[serde(rename = "type")]
    record_type: Option<String>,
    status: Option<RecordStatus>,
    from: Option<Timestamp>,
    to: Option<Timestamp>,
    limit: Option<usize>,
    cursor: Option<String>,
    min_height: Option<u64>,
}

impl TimelineQuery {
    fn filter(&self) -> TimelineFilter {
        TimelineFilter {
            record_type: self.record_type.clone(),
            status: self.status,
            from: self.from,
            to: self.to,
        }
    }
}

#[derive(Clone, Copy)]
enum OwnerKind {
    Patient,
    Clinician,
    Hospital,
}

async fn timeline(
    state: Data,
    caller: Caller,
    kind: OwnerKind,
    owner: String,
    query: TimelineQuery,
) -> Result<HttpResponse, ApiError> {
    let allowed = match kind {
        OwnerKind::Patient => caller.may_list_patient(&owner),
        OwnerKind::Clinician => caller.may_list_clinician(&owner),
        OwnerKind::Hospital => caller.may_list_hospital(&owner),
    };
    if !allowed {
        return Err(ApiError::forbidden(format!(
            "you may not list the records of `{owner}`"
        )));
    }
    let limit = query.limit.unwrap_or(PAGE_LIMIT_DEFAULT);
    if limit == 0 || limit > PAGE_LIMIT_MAX {
        return Err(ApiError::bad_request(
            "invalid_limit",
            format!("limit must be between 1 and {PAGE_LIMIT_MAX}"),
        ));
    }
    honour_min_height(&state, query.min_height).await?;
    #[derive(Serialize)]
    struct Page<'a> {
        items: Vec<RecordJson<'a>>,
        next_cursor: Option<String>,
    }
    // A page holds `limit` rows the caller may read, whatever it may not read between
    // them: rows are fetched until the page is full or the timeline ends, so neither a
    // short page nor a cursor tells that hidden rows exist (up to PAGE_READS_MAX
    // reads of the timeline per request; past that the page is short and has a cursor).
    let mut entries = Vec::with_capacity(limit);
    let mut cursor = query.cursor.clone();
    let mut reads = 0usize;
    let filter = query.filter();
    loop {
        let want = limit - entries.len();
        let (st, owner, filter, after) =
            (state.clone(), owner.clone(), filter.clone(), cursor.clone());
        let page = web::block(move || {
            let views = Views::new(st.views.as_ref());
            let owner_ref = match kind {
                OwnerKind::Patient => Owner::Patient(&owner),
                OwnerKind::Clinician => Owner::Author(&owner),
                OwnerKind::Hospital => Owner::Hospital(&owner),
            };
            views.timeline(owner_ref, &filter, after.as_deref(), want)
        })
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
        .map_err(query_error)?;
        reads += 1;
        for entry in page.items {
            if may_read(&state, &caller, &entry)? {
                entries.push(entry);
            }
        }
        cursor = page.next_cursor;
        if entries.len() >= limit || cursor.is_none() || reads >= PAGE_READS_MAX {
            break;
        }
    }
    let mut items = Vec::with_capacity(entries.len());
    for entry in &entries {
        ensure_key(&state, &entry.state).await;
        items.push(record_json(state.payloads.keys(), entry)?);
    }
    Ok(HttpResponse::Ok().json(Page {
        items,
        next_cursor: cursor,
    }))
}

/// `GET /v1/patients/{id}/records`.
pub async fn patient_timeline(
    state: Data,
    caller: Caller,
    path: web::Path<String>,
    query: web::Query<TimelineQuery>,
) -> Result<HttpResponse, ApiError> {
    timeline(
        state,
        caller,
        OwnerKind::Patient,
        path.into_inner(),
        query.into_inner(),
    )
    .await
}

/// `GET /v1/clinicians/{id}/records`.
pub async fn clinician_timeline(
    state: Data,
    caller: Caller,
    path: web::Path<String>,
    query: web::Query<TimelineQuery>,
) -> Result<HttpResponse, ApiError> {
    timeline(
        state,
        caller,
        OwnerKind::Clinician,
        path.into_inner(),
        query.into_inner(),
    )
    .await
}

/// `GET /v1/hospitals/{id}/records`.
pub async fn hospital_timeline(
    state: Data,
    caller: Caller,
    path: web::Path<String>,
    query: web::Query<TimelineQuery>,
) -> Result<HttpResponse, ApiError> {
    timeline(
        state,
        caller,
        OwnerKind::Hospital,
        path.into_inner(),
        query.into_inner(),
    )
    .await
}
