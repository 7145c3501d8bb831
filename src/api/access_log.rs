//! The accounting of disclosures: who read what of a patient's records, or of one record,
//! newest first, from the `RecordsRead` events on the ledger (see [`super::audit`]).

use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Value};

use medledger_chaincode::RecordsRead;
use medledger_views::query::Views;
use medledger_views::values::AccessLogEntry;

use super::auth::Caller;
use super::error::ApiError;
use super::lookup::{honour_min_height, load_record, query_error};
use super::submit::clinical_error;
use super::{AppState, PAGE_LIMIT_DEFAULT};
use crate::clinical;

type Data = web::Data<AppState>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessLogQuery {
    limit: Option<usize>,
    /// `<block>-<position>` of the last entry of the previous page.
    cursor: Option<String>,
    min_height: Option<u64>,
}

fn cursor_of(text: &str) -> Result<(u64, u32), ApiError> {
    text.split_once('-')
        .and_then(|(b, p)| Some((b.parse().ok()?, p.parse().ok()?)))
        .ok_or_else(|| {
            ApiError::bad_request(
                "invalid_cursor",
                "cursor is the `next_cursor` of the previous page",
            )
        })
}

fn entry_json(state: &AppState, e: &AccessLogEntry) -> Result<Value, ApiError> {
    let reason = match &e.break_glass {
        None => None,
        Some(sealed) => {
            let key = RecordsRead::key_name(&e.patient_id);
            clinical::open(state.payloads.keys(), &key, "break_glass", sealed)
                .map_err(|e| clinical_error(&e))?
                .text()
                .map(str::to_owned)
                // Erased with the patient: the fact stays, the reason is gone.
                .or(Some(String::new()))
        }
    };
    Ok(json!({
        "block_number": e.at.block,
        "position": e.at.position,
        "tx_id": e.at.tx_id().to_string(),
        "read_at": e.read_at,
        "reader": {"id": e.reader_id, "role": e.reader_role, "hospital": e.reader_hospital},
        "what": e.what,
        "purpose": e.purpose,
        "break_glass": e.break_glass.is_some(),
        "break_glass_reason": reason.filter(|r| !r.is_empty()),
        "patient_id": e.patient_id,
        "record_ids": e.record_ids,
    }))
}

async fn page(
    state: &Data,
    patient_id: &str,
    record: Option<&str>,
    query: &AccessLogQuery,
) -> Result<HttpResponse, ApiError> {
    // The views refuse a limit out of range (400 invalid_limit).
    let limit = query.limit.unwrap_or(PAGE_LIMIT_DEFAULT);
    let after = query.cursor.as_deref().map(cursor_of).transpose()?;
    let (st, patient, record_id) = (
        state.clone(),
        patient_id.to_owned(),
        record.map(str::to_owned),
    );
    let page = web::block(move || {
        Views::new(st.views.as_ref()).access_log(&patient, record_id.as_deref(), after, limit)
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))?
    .map_err(query_error)?;
    let items = page
        .items
        .iter()
        .map(|e| entry_json(state, e))
        .collect::<Result<Vec<_>, _>>()?;
    let next_cursor = page.next.map(|(b, p)| format!("{b}-{p}"));
    Ok(HttpResponse::Ok()
        .insert_header(("Cache-Control", "private, no-store"))
        .json(json!({"items": items, "next_cursor": next_cursor})))
}

/// `GET /v1/patients/{id}/access-log`: the reads of this patient's records (the patient,
/// auditors, admins).
pub async fn patient_access_log(
    state: Data,
    caller: Caller,
    path: web::Path<String>,
    query: web::Query<AccessLogQuery>,
) -> Result<HttpResponse, ApiError> {
    let patient_id = path.into_inner();
    if !caller.may_read_access_log_of(&patient_id) {
        return Err(ApiError::forbidden(format!(
            "you may not read the access log of `{patient_id}`"
        )));
    }
    honour_min_height(&state, query.min_height).await?;
    page(&state, &patient_id, None, &query).await
}

/// `GET /v1/records/{id}/access-log`: the reads of one record (its patient, auditors,
/// admins).
pub async fn record_access_log(
    state: Data,
    caller: Caller,
    path: web::Path<String>,
    query: web::Query<AccessLogQuery>,
) -> Result<HttpResponse, ApiError> {
    let record_id = path.into_inner();
    honour_min_height(&state, query.min_height).await?;
    let record = load_record(&state, &record_id).await?;
    if !caller.may_read_access_log_of(&record.state.patient_id) {
        return Err(ApiError::forbidden(format!(
            "you may not read the access log of record `{record_id}`"
        )));
    }
    page(
        &state,
        &record.state.patient_id,
        Some(record_id.as_str()),
        &query,
    )
    .await
}
