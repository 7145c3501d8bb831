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
    let st = state.clone();
    let page = web::block(move || {
        let views = Views::new(st.views.as_ref());
        let owner_ref = match kind {
            OwnerKind::Patient => Owner::Patient(&owner),
            OwnerKind::Clinician => Owner::Author(&owner),
            OwnerKind::Hospital => Owner::Hospital(&owner),
        };
        views.timeline(owner_ref, &query.filter(), query.cursor.as_deref(), limit)
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))?
    .map_err(query_error)?;
    #[derive(Serialize)]
    struct Page<'a> {
        items: Vec<RecordJson<'a>>,
        next_cursor: Option<&'a str>,
    }
    let mut items = Vec::with_capacity(page.items.len());
    for entry in &page.items {
        if may_read(&state, &caller, entry)? {
            ensure_key(&state, &entry.state).await;
            items.push(record_json(state.payloads.keys(), entry)?);
        }
    }
    Ok(HttpResponse::Ok().json(Page {
        items,
        next_cursor: page.next_cursor.as_deref(),
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
