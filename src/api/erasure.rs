//! Erasure: a record, or a patient's every record, made unreadable for good.
//!
//! The `PayloadErased` event is committed first (durable and accepted), then the record's
//! content key is destroyed (its metadata, reasons and access purposes in every version),
//! then the data key of every payload any version named, and the payloads are unpinned.
//! The ledger and the views hold only ciphertext of format-2 records, so nothing readable
//! is left for a rebuild to bring back. Repeating a request finishes a destruction that
//! failed half way (it is idempotent).

use std::collections::BTreeMap;

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::json;

use medledger_chaincode::contract::apply_record_event;
use medledger_chaincode::{Envelope, Event, PayloadErased};
use medledger_payload::Cid;
use medledger_views::query::{Owner, TimelineFilter, Views};
use medledger_views::values::VersionEntry;

use super::auth::Caller;
use super::error::ApiError;
use super::lookup::{check_expected, load_record, query_error};
use super::payloads::payload_error;
use super::submit::{
    clinical_error, commit, contract_error, envelope, now, receipt_json, submit_error, verdict,
};
use super::AppState;
use crate::clinical;
use crate::orderer::SubmitError;

type Data = web::Data<AppState>;

/// Records erased per round of a patient's erasure: submitted together, so they share
/// blocks, and bounded, so the orderer's queue never fills.
const PATIENT_ERASE_CHUNK: usize = 256;
/// Versions read per page while collecting a record's payloads.
const HISTORY_PAGE: usize = 1_000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Erasure {
    reason: String,
    #[serde(default)]
    expected_version: Option<u32>,
}

fn erasure_envelope(caller: &Caller, current: &VersionEntry, reason: &str) -> Envelope {
    envelope(
        caller,
        Event::PayloadErased(PayloadErased {
            record_id: current.state.record_id.clone(),
            version: current.state.version + 1,
            erased_by: caller.id().to_owned(),
            erased_at: now(),
            reason: reason.into(),
        }),
    )
}

/// Destroys the content key named `name` (a record's, or a patient's access key),
/// durably; idempotent.
async fn destroy_key(state: &AppState, name: &str) -> Result<(), ApiError> {
    let keys = state.payloads.keys().clone();
    let name = name.to_owned();
    tokio::task::spawn_blocking(move || clinical::destroy(&keys, &name))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
        .map_err(|e| clinical_error(&e))
}

/// Destroys what makes `record_id` readable: its content key, then the data key of every
/// payload any version named, unpinning those payloads. Durable when it returns;
/// idempotent.
pub(crate) async fn destroy_record(state: &AppState, record_id: &str) -> Result<(), ApiError> {
    destroy_key(state, record_id).await?;
    let mut payloads: BTreeMap<String, Cid> = BTreeMap::new();
    let views = Views::new(state.views.as_ref());
    let mut after = 0;
    loop {
        let page = views
            .record_history(record_id, after, HISTORY_PAGE)
            .map_err(query_error)?;
        for entry in &page {
            if let Some(p) = &entry.state.payload {
                let cid = p
                    .cid
                    .parse()
                    .map_err(|_| ApiError::internal("a record names an unreadable CID"))?;
                payloads.insert(p.key_id.clone(), cid);
            }
        }
        match page.last() {
            Some(last) if page.len() == HISTORY_PAGE => after = last.state.version,
            _ => break,
        }
    }
    // Only an erasure that destroys a payload key starts a GC (the keeper repeats every
    // erasure, and a GC rewrites the store's pack).
    let fresh = payloads
        .keys()
        .any(|key_id| !state.payloads.keys().is_erased(key_id));
    for (key_id, cid) in payloads {
        state
            .payloads
            .erase(&key_id, &cid)
            .await
            .map_err(payload_error)?;
    }
    if fresh {
        // The unpinned blocks leave the embedded store (ciphertext whose key is gone).
        state.payloads.collect_garbage_soon();
    }
    Ok(())
}

/// `POST /v1/records/{id}/erase` (admins): erase the record: its metadata, reasons and
/// access purposes in every version, and every payload it ever had.
pub async fn erase_record(
    state: Data,
    caller: Caller,
    path: web::Path<String>,
    body: web::Json<Erasure>,
) -> Result<HttpResponse, ApiError> {
    caller.admin_only("erasing a record")?;
    let record_id = path.into_inner();
    let body = body.into_inner();
    let current = load_record(&state, &record_id).await?;
    if current.state.payload_erased {
        destroy_record(&state, &record_id).await?;
        return Ok(HttpResponse::Ok().json(json!({
            "record_id": record_id, "version": current.state.version, "already_erased": true,
        })));
    }
    check_expected(&current, body.expected_version)?;
    let env = erasure_envelope(&caller, &current, &body.reason);
    env.check_limits()
        .map_err(|e| ApiError::bad_request("invalid_field", e.to_string()))?;
    apply_record_event(Some(&current.state), &env.event).map_err(|e| contract_error(&e))?;
    let receipt = commit(&state, &env).await?;
    destroy_record(&state, &record_id).await.map_err(|mut err| {
        err.code = "erase_incomplete";
        err.message = format!(
            "the ledger records the erasure (block {}), but its keys could not all be destroyed yet; repeat the request",
            receipt.block_number
        );
        err
    })?;
    let version = current.state.version + 1;
    Ok(HttpResponse::Ok().json(receipt_json(&receipt, &record_id, version)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatientErasure {
    reason: String,
}

/// `POST /v1/patients/{id}/erase` (admins): forget a patient: every record, every version,
/// as [`erase_record`] erases one. Records already erased have their keys destroyed again
/// (finishing an erasure cut short). A record changed while its erasure was in flight is
/// reported in `failed`; repeat the request to erase it.
pub async fn erase_patient(
    state: Data,
    caller: Caller,
    path: web::Path<String>,
    body: web::Json<PatientErasure>,
) -> Result<HttpResponse, ApiError> {
    caller.admin_only("erasing a patient")?;
    let patient_id = path.into_inner();
    super::lookup::check_id("a patient id", &patient_id)?;
    let reason = body.into_inner().reason;
    let (mut erased, mut already, mut failed) = (0u64, 0u64, Vec::new());
    let mut cursor: Option<String> = None;
    loop {
        let views = Views::new(state.views.as_ref());
        let page = views
            .timeline(
                Owner::Patient(&patient_id),
                &TimelineFilter::default(),
                cursor.as_deref(),
                PATIENT_ERASE_CHUNK,
            )
            .map_err(query_error)?;
        let mut pending = Vec::new();
        for entry in &page.items {
            let record_id = entry.state.record_id.clone();
            if entry.state.payload_erased {
                destroy_record(&state, &record_id).await?;
                already += 1;
                continue;
            }
            let env = erasure_envelope(&caller, entry, &reason);
            env.check_limits()
                .map_err(|e| ApiError::bad_request("invalid_field", e.to_string()))?;
            let mut sealed = env;
            if let Err(e) = clinical::seal(state.payloads.keys(), &mut sealed).await {
                failed.push(json!({"record_id": record_id, "code": e.code()}));
                continue;
            }
            match state.orderer.enqueue(&sealed) {
                Ok(rx) => pending.push((record_id, rx)),
                Err(e) => {
                    failed.push(json!({"record_id": record_id, "code": submit_error(e).code}))
                }
            }
        }
        state.projector.nudge();
        for (record_id, rx) in pending {
            let outcome = match rx.await.unwrap_or(Err(SubmitError::Closed)) {
                Ok(receipt) => verdict(&state, &receipt).await.map_err(ApiError::from),
                Err(e) => Err(submit_error(e)),
            };
            match outcome {
                Ok(()) => {
                    destroy_record(&state, &record_id).await?;
                    erased += 1;
                }
                Err(e) => failed.push(json!({"record_id": record_id, "code": e.code})),
            }
        }
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    if failed.is_empty() {
        // The reasons given for break-glass reads of this patient go with the records;
        // who read what stays on the ledger.
        destroy_key(
            &state,
            &medledger_chaincode::RecordsRead::key_name(&patient_id),
        )
        .await?;
    }
    let status = if failed.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::MULTI_STATUS
    };
    Ok(HttpResponse::build(status).json(json!({
        "patient_id": patient_id,
        "erased": erased,
        "already_erased": already,
        "failed": failed,
    })))
}
