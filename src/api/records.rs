//! Record routes: submissions (create, batch, amend, change status, grant, revoke) and
//! reads (record, history, as-of, timelines, export).

use std::ops::ControlFlow;

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use medledger_chaincode::contract::{apply_grant_event, apply_record_event, ContractError};
use medledger_chaincode::{
    AccessGranted, AccessRevoked, Envelope, Event, RecordAmended, RecordCreated, RecordStatus,
    RecordStatusChanged, Timestamp, TxId,
};
use medledger_storage::views::query::{Owner, QueryError, TimelineFilter, Views, PAGE_LIMIT_MAX};
use medledger_storage::views::values::VersionEntry;

use medledger_payload::StoredPayload;

use super::auth::Caller;
use super::error::ApiError;
use super::payloads;
use super::{AppState, PROJECTED_WAIT};
use crate::orderer::{Receipt, SubmitError};

/// Records in one batch submission, at most.
pub const BATCH_RECORDS_MAX: usize = 1_000;
/// Page size when `limit` is not given.
const DEFAULT_LIMIT: usize = 50;

type Data = web::Data<AppState>;

pub(crate) fn now() -> Timestamp {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    Timestamp(ms)
}

fn new_tx_id() -> TxId {
    TxId(*uuid::Uuid::now_v7().as_bytes())
}

pub(crate) fn envelope(caller: &Caller, event: Event) -> Envelope {
    Envelope {
        tx_id: new_tx_id(),
        submitter: caller.id().to_owned(),
        submitted_at: now(),
        event,
    }
}

/// The HTTP status of a contract rejection.
pub(crate) fn contract_error(e: &ContractError) -> ApiError {
    let status = match e {
        ContractError::RecordExists { .. } | ContractError::VersionConflict { .. } => {
            StatusCode::CONFLICT
        }
        ContractError::UnknownRecord { .. } | ContractError::UnknownGrant { .. } => {
            StatusCode::NOT_FOUND
        }
        _ => StatusCode::UNPROCESSABLE_ENTITY,
    };
    ApiError::new(status, e.code(), e.to_string())
}

fn submit_error(e: SubmitError) -> ApiError {
    match e {
        SubmitError::TooLarge { .. } => {
            ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", e.to_string())
        }
        SubmitError::Invalid(inner) => ApiError::bad_request("invalid_field", inner.to_string()),
        SubmitError::Busy => ApiError::unavailable("busy", e.to_string(), 1),
        SubmitError::Closed => ApiError::unavailable("shutting_down", e.to_string(), 5),
        SubmitError::Failed(_) => ApiError::internal(e.to_string()).with_code("ledger_failed"),
    }
}

impl ApiError {
    fn with_code(mut self, code: &'static str) -> Self {
        self.code = code;
        self
    }
}

pub(crate) fn store_error(e: impl std::fmt::Display) -> ApiError {
    ApiError::internal(format!("view store: {e}")).with_code("store_error")
}

fn query_error(e: QueryError) -> ApiError {
    match e {
        QueryError::Store(s) => store_error(s),
        other => ApiError::bad_request(other.code(), other.to_string()),
    }
}

/// The query of a write route: it takes no parameters, and refuses any (`?wait=` is gone:
/// every answer waits for the contract's verdict).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WriteQuery {}

/// The most a read waits for the views to reach its `min_height`, or for them to catch up
/// with the ledger before it answers "does not exist".
pub const READ_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Submits `env` and answers with the contract's verdict: the receipt once the block
/// holding it is durable **and** the projector has applied it and the contract accepted
/// it. A transaction the contract rejected in commit order (a concurrent write won) is
/// answered 409 with the contract's code; a 2xx is never followed by a rejection.
pub(crate) async fn commit(state: &AppState, env: &Envelope) -> Result<Receipt, ApiError> {
    env.check_limits()
        .map_err(|e| ApiError::bad_request("invalid_field", e.to_string()))?;
    let receipt = state.orderer.submit(env).await.map_err(submit_error)?;
    state.projector.nudge();
    verdict(state, &receipt).await.map_err(ApiError::from)?;
    Ok(receipt)
}

/// Why a durable transaction has no acceptance to answer with.
pub(crate) enum NoVerdict {
    /// The contract rejected it when its block was applied (409, the contract's code).
    Rejected(ApiError),
    /// The views did not reach its block in time: the verdict is not known yet (503).
    Unknown(ApiError),
}

impl From<NoVerdict> for ApiError {
    fn from(v: NoVerdict) -> ApiError {
        match v {
            NoVerdict::Rejected(e) | NoVerdict::Unknown(e) => e,
        }
    }
}

/// Waits until the views hold the receipt's block and reads the contract's verdict on the
/// transaction there.
pub(crate) async fn verdict(state: &AppState, receipt: &Receipt) -> Result<(), NoVerdict> {
    let height = receipt.block_number + 1;
    let where_ = json!({"tx_id": receipt.tx_id.to_string(), "block_number": receipt.block_number,
        "position": receipt.position, "height": height});
    if let Err(e) = state.projector.reached(height, PROJECTED_WAIT).await {
        return Err(NoVerdict::Unknown(
            ApiError::unavailable(
                "projection_timeout",
                format!("the transaction is durable but its verdict is not known yet: {e}"),
                1,
            )
            .with_details(where_),
        ));
    }
    let views = Views::new(state.views.as_ref());
    match views.rejection(receipt.block_number, receipt.position) {
        Ok(None) => Ok(()),
        Ok(Some(r)) => {
            let mut details = where_;
            details["rejected_at_commit"] = Value::Bool(true);
            let code = ContractError::static_code(&r.code).unwrap_or("rejected_at_commit");
            Err(NoVerdict::Rejected(
                ApiError::new(StatusCode::CONFLICT, code, r.message).with_details(details),
            ))
        }
        Err(e) => Err(NoVerdict::Unknown(store_error(e))),
    }
}

fn receipt_json(receipt: &Receipt, record_id: &str, version: u32) -> Value {
    json!({
        "tx_id": receipt.tx_id.to_string(),
        "record_id": record_id,
        "version": version,
        "block_number": receipt.block_number,
        "position": receipt.position,
        "height": receipt.block_number + 1,
    })
}

/// A JSON object of metadata as compact text.
fn metadata_text(metadata: Option<Map<String, Value>>) -> String {
    Value::Object(metadata.unwrap_or_default()).to_string()
}

fn payload_in_batch() -> ApiError {
    ApiError::bad_request(
        "payload_in_batch",
        "a record with a payload is submitted on its own (POST /v1/records), not in a batch",
    )
}

// ---- Create ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewRecord {
    patient_id: String,
    hospital_id: String,
    record_type: String,
    #[serde(default)]
    record_id: Option<String>,
    #[serde(default)]
    created_at: Option<Timestamp>,
    #[serde(default)]
    metadata: Option<Map<String, Value>>,
    #[serde(default)]
    payload: Option<Value>,
}

/// Who may create `body`: a clinician of its hospital, or an admin.
fn check_create(caller: &Caller, body: &NewRecord) -> Result<(), ApiError> {
    if caller.may_write_records_of(&body.hospital_id) {
        Ok(())
    } else {
        Err(ApiError::forbidden(format!(
            "you may not write records of hospital `{}`",
            body.hospital_id
        )))
    }
}

/// Authorizes and builds a creation, checked against the contract; nothing is stored or
/// submitted. The inline payload, if any, is parsed and returned for storing.
fn creation(
    state: &AppState,
    caller: &Caller,
    body: NewRecord,
) -> Result<(Envelope, Option<payloads::InlinePayload>), ApiError> {
    check_create(caller, &body)?;
    let inline = body.payload.map(payloads::parse_inline).transpose()?;
    // A client may name the record (idempotent imports); otherwise the id is a fresh
    // UUIDv7, which no record has, so the views need not be asked.
    let named = body.record_id.is_some();
    let record_id = body
        .record_id
        .unwrap_or_else(|| format!("r-{}", uuid::Uuid::now_v7().simple()));
    let submitted = now();
    let event = Event::RecordCreated(RecordCreated {
        record_id: record_id.clone(),
        patient_id: body.patient_id,
        author_id: caller.id().to_owned(),
        hospital_id: body.hospital_id,
        record_type: body.record_type,
        created_at: body.created_at.unwrap_or(submitted),
        version: 1,
        metadata: metadata_text(body.metadata),
        payload: None,
    });
    let env = envelope(caller, event);
    env.check_limits()
        .map_err(|e| ApiError::bad_request("invalid_field", e.to_string()))?;
    let current = if named {
        Views::new(state.views.as_ref())
            .record(&record_id)
            .map_err(store_error)?
    } else {
        None
    };
    apply_record_event(current.as_ref().map(|c| &c.state), &env.event)
        .map_err(|e| contract_error(&e))?;
    Ok((env, inline))
}

/// Commits an envelope whose payload (if any) is stored; a submission refused before the
/// ledger abandons the payload.
async fn commit_with_payload(
    state: &AppState,
    mut env: Envelope,
    stored: Option<StoredPayload>,
) -> Result<(Envelope, Receipt), ApiError> {
    if let Some(stored) = &stored {
        payloads::attach(&mut env, stored);
    }
    env.check_limits()
        .map_err(|e| ApiError::bad_request("invalid_field", e.to_string()))?;
    let span = tracing::info_span!("ledger.commit", block = tracing::field::Empty);
    let submitted = {
        use tracing::Instrument as _;
        state.orderer.submit(&env).instrument(span.clone()).await
    };
    if let Ok(receipt) = &submitted {
        span.record("block", crate::telemetry::otel_int(receipt.block_number));
    }
    match submitted {
        Ok(receipt) => {
            state.projector.nudge();
            match verdict(state, &receipt).await {
                Ok(()) => Ok((env, receipt)),
                Err(NoVerdict::Rejected(e)) => {
                    // No accepted transaction names this payload: abandon it.
                    if let Some(stored) = &stored {
                        payloads::abandon(state, stored).await;
                    }
                    Err(e)
                }
                Err(NoVerdict::Unknown(e)) => Err(e),
            }
        }
        Err(e) => {
            if let Some(stored) = &stored {
                payloads::abandon_if_refused(state, stored, &e).await;
            }
            Err(submit_error(e))
        }
    }
}

/// `POST /v1/records`: a JSON body (metadata, optionally an inline payload), or
/// `multipart/form-data` with a `record` part (the same JSON, without `payload`) and a
/// `file` part streamed into the encrypted payload store (up to AbsoluteMaxBytes).
pub async fn create(
    req: actix_web::HttpRequest,
    body: web::Payload,
    state: Data,
    caller: Caller,
    _query: web::Query<WriteQuery>,
) -> Result<HttpResponse, ApiError> {
    let (env, stored) = if payloads::is_multipart(&req) {
        let (record, stored) = payloads::read_multipart::<NewRecord, _>(&req, body, &state, |r| {
            check_create(&caller, r)?;
            if r.payload.is_some() {
                return Err(ApiError::bad_request(
                    "invalid_body",
                    "with a multipart upload the payload is the `file` part, not `payload`",
                ));
            }
            Ok(())
        })
        .await?;
        match creation(&state, &caller, record) {
            Ok((env, _)) => (env, Some(stored)),
            Err(e) => {
                let _ = state.payloads.erase(&stored.key_id, &stored.cid).await;
                return Err(e);
            }
        }
    } else {
        super::require_json(&req)?;
        let mut payload = body.into_inner();
        let record: NewRecord = web::JsonBody::new(&req, &mut payload, None, false)
            .limit(super::JSON_BODY_BYTES_MAX)
            .await
            .map_err(super::json_error)?;
        let (env, inline) = creation(&state, &caller, record)?;
        let stored = match inline {
            Some(inline) => Some(payloads::store_inline(&state, inline).await?),
            None => None,
        };
        (env, stored)
    };
    let record_id = env.event.record_id().unwrap_or_default().to_owned();
    let (_, receipt) = commit_with_payload(&state, env, stored).await?;
    Ok(HttpResponse::Created().json(receipt_json(&receipt, &record_id, 1)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewRecords {
    /// Each record's JSON text, parsed on its own so that one malformed record fails
    /// alone (and without building a `Value` tree of every record first).
    records: Vec<Box<serde_json::value::RawValue>>,
}

/// `POST /v1/records/batch`: every record gets its own outcome, in order; a rejected
/// record does not stop the others.
pub async fn create_batch(
    req: actix_web::HttpRequest,
    payload: web::Payload,
    state: Data,
    caller: Caller,
    _query: web::Query<WriteQuery>,
) -> Result<HttpResponse, ApiError> {
    // A batch has its own body limit, above the other JSON routes' 64 KiB.
    super::require_json(&req)?;
    let mut payload = payload.into_inner();
    let body: NewRecords = web::JsonBody::new(&req, &mut payload, None, false)
        .limit(super::BATCH_BODY_BYTES_MAX)
        .await
        .map_err(super::json_error)?;
    let records = body.records;
    if records.is_empty() || records.len() > BATCH_RECORDS_MAX {
        return Err(ApiError::bad_request(
            "invalid_batch",
            format!(
                "a batch holds 1 to {BATCH_RECORDS_MAX} records, not {}",
                records.len()
            ),
        ));
    }
    let mut outcomes: Vec<Option<Value>> = vec![None; records.len()];
    let mut pending = Vec::new();
    for (i, raw) in records.into_iter().enumerate() {
        let built = serde_json::from_str::<NewRecord>(raw.get())
            .map_err(|e| ApiError::bad_request("invalid_body", format!("invalid record: {e}")))
            .and_then(|r| {
                if r.payload.is_some() {
                    return Err(payload_in_batch());
                }
                creation(&state, &caller, r).map(|(env, _)| env)
            });
        match built {
            Ok(env) => match state.orderer.enqueue(&env) {
                Ok(rx) => pending.push((i, env, rx)),
                Err(e) => outcomes[i] = Some(item_error(&submit_error(e))),
            },
            Err(e) => outcomes[i] = Some(item_error(&e)),
        }
    }
    let mut receipts = Vec::new();
    for (i, env, rx) in pending {
        match rx.await.unwrap_or(Err(SubmitError::Closed)) {
            Ok(receipt) => receipts.push((i, env, receipt)),
            Err(e) => outcomes[i] = Some(item_error(&submit_error(e))),
        }
    }
    state.projector.nudge();
    // The last block's verdict comes after every earlier block's (the projector applies
    // blocks in order), so this waits once; each item's own verdict is then a view read.
    for (i, env, receipt) in receipts {
        let record_id = env.event.record_id().unwrap_or_default();
        outcomes[i] = Some(match verdict(&state, &receipt).await {
            Ok(()) => json!({"status": 201, "result": receipt_json(&receipt, record_id, 1)}),
            Err(e) => item_error(&ApiError::from(e)),
        });
    }
    let items: Vec<Value> = outcomes
        .into_iter()
        .map(|o| o.unwrap_or(Value::Null))
        .collect();
    let failed = items.iter().filter(|o| o["status"] != 201).count();
    Ok(HttpResponse::Ok()
        .json(json!({"items": items, "committed": items.len() - failed, "failed": failed})))
}

fn item_error(e: &ApiError) -> Value {
    json!({"status": e.status.as_u16(), "error": {"code": e.code, "message": e.message, "details": e.details}})
}

// ---- Amend and change status ----

/// Waits until the views hold blocks `0..height`, at most [`READ_WAIT`]; past it, 503
/// `views_behind` with Retry-After.
pub(crate) async fn views_at(state: &AppState, height: u64) -> Result<(), ApiError> {
    if state.projector.applied_height() >= height {
        return Ok(());
    }
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

/// The record's current version, if `caller` may read it (404, else 403).
async fn load_for_read(
    state: &AppState,
    caller: &Caller,
    record_id: &str,
) -> Result<VersionEntry, ApiError> {
    let current = load_record(state, record_id).await?;
    if !may_read(state, caller, &current)? {
        return Err(ApiError::forbidden(format!(
            "you may not read record `{record_id}`"
        )));
    }
    Ok(current)
}

async fn load_for_write(
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Amendment {
    reason: String,
    #[serde(default)]
    metadata: Option<Map<String, Value>>,
    #[serde(default)]
    payload: Option<Value>,
    #[serde(default)]
    expected_version: Option<u32>,
}

/// `POST /v1/records/{id}/amendments`.
pub async fn amend(
    state: Data,
    caller: Caller,
    _query: web::Query<WriteQuery>,
    path: web::Path<String>,
    body: web::Json<Amendment>,
) -> Result<HttpResponse, ApiError> {
    let record_id = path.into_inner();
    let body = body.into_inner();
    let current = load_for_write(&state, &caller, &record_id).await?;
    check_expected(&current, body.expected_version)?;
    let inline = body.payload.map(payloads::parse_inline).transpose()?;
    let version = current.state.version + 1;
    let env = envelope(
        &caller,
        Event::RecordAmended(RecordAmended {
            record_id: record_id.clone(),
            version,
            author_id: caller.id().to_owned(),
            amended_at: now(),
            reason: body.reason,
            metadata: body.metadata.map(|m| Value::Object(m).to_string()),
            payload: None,
        }),
    );
    apply_record_event(Some(&current.state), &env.event).map_err(|e| contract_error(&e))?;
    let stored = match inline {
        Some(inline) => Some(payloads::store_inline(&state, inline).await?),
        None => None,
    };
    let (_, receipt) = commit_with_payload(&state, env, stored).await?;
    Ok(HttpResponse::Created().json(receipt_json(&receipt, &record_id, version)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusChange {
    status: RecordStatus,
    reason: String,
    #[serde(default)]
    expected_version: Option<u32>,
}

/// `POST /v1/records/{id}/status`.
pub async fn change_status(
    state: Data,
    caller: Caller,
    _query: web::Query<WriteQuery>,
    path: web::Path<String>,
    body: web::Json<StatusChange>,
) -> Result<HttpResponse, ApiError> {
    let record_id = path.into_inner();
    let body = body.into_inner();
    let current = load_for_write(&state, &caller, &record_id).await?;
    check_expected(&current, body.expected_version)?;
    let version = current.state.version + 1;
    let env = envelope(
        &caller,
        Event::RecordStatusChanged(RecordStatusChanged {
            record_id: record_id.clone(),
            version,
            author_id: caller.id().to_owned(),
            changed_at: now(),
            status: body.status,
            reason: body.reason,
        }),
    );
    apply_record_event(Some(&current.state), &env.event).map_err(|e| contract_error(&e))?;
    let receipt = commit(&state, &env).await?;
    Ok(HttpResponse::Created().json(receipt_json(&receipt, &record_id, version)))
}

// ---- Grants ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewGrant {
    grantee_id: String,
    #[serde(default)]
    expires_at: Option<Timestamp>,
    #[serde(default)]
    scope: Vec<String>,
}

/// `POST /v1/patients/{id}/grants`.
pub async fn grant(
    state: Data,
    caller: Caller,
    _query: web::Query<WriteQuery>,
    path: web::Path<String>,
    body: web::Json<NewGrant>,
) -> Result<HttpResponse, ApiError> {
    let patient_id = path.into_inner();
    if !caller.may_manage_grants_of(&patient_id) {
        return Err(ApiError::forbidden(format!(
            "you may not manage the grants of `{patient_id}`"
        )));
    }
    let body = body.into_inner();
    let env = envelope(
        &caller,
        Event::AccessGranted(AccessGranted {
            patient_id: patient_id.clone(),
            grantee_id: body.grantee_id.clone(),
            granted_by: caller.id().to_owned(),
            granted_at: now(),
            expires_at: body.expires_at,
            scope: body.scope,
        }),
    );
    env.check_limits()
        .map_err(|e| ApiError::bad_request("invalid_field", e.to_string()))?;
    let current = Views::new(state.views.as_ref())
        .grant(&patient_id, &body.grantee_id)
        .map_err(store_error)?;
    apply_grant_event(current.as_ref(), &env.event).map_err(|e| contract_error(&e))?;
    let receipt = commit(&state, &env).await?;
    Ok(HttpResponse::Created().json(json!({
        "tx_id": receipt.tx_id.to_string(),
        "patient_id": patient_id,
        "grantee_id": body.grantee_id,
        "block_number": receipt.block_number,
        "position": receipt.position,
        "height": receipt.block_number + 1,
    })))
}

/// `DELETE /v1/patients/{id}/grants/{grantee}`.
pub async fn revoke(
    state: Data,
    caller: Caller,
    _query: web::Query<WriteQuery>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (patient_id, grantee_id) = path.into_inner();
    if !caller.may_manage_grants_of(&patient_id) {
        return Err(ApiError::forbidden(format!(
            "you may not manage the grants of `{patient_id}`"
        )));
    }
    let env = envelope(
        &caller,
        Event::AccessRevoked(AccessRevoked {
            patient_id: patient_id.clone(),
            grantee_id: grantee_id.clone(),
            revoked_by: caller.id().to_owned(),
            revoked_at: now(),
        }),
    );
    env.check_limits()
        .map_err(|e| ApiError::bad_request("invalid_field", e.to_string()))?;
    let current = Views::new(state.views.as_ref())
        .grant(&patient_id, &grantee_id)
        .map_err(store_error)?;
    apply_grant_event(current.as_ref(), &env.event).map_err(|e| contract_error(&e))?;
    let receipt = commit(&state, &env).await?;
    Ok(HttpResponse::Ok().json(json!({
        "tx_id": receipt.tx_id.to_string(),
        "patient_id": patient_id,
        "grantee_id": grantee_id,
        "block_number": receipt.block_number,
        "position": receipt.position,
        "height": receipt.block_number + 1,
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantsQuery {
    after: Option<String>,
    limit: Option<usize>,
}

/// `GET /v1/patients/{id}/grants`.
pub async fn list_grants(
    state: Data,
    caller: Caller,
    path: web::Path<String>,
    query: web::Query<GrantsQuery>,
) -> Result<HttpResponse, ApiError> {
    let patient_id = path.into_inner();
    if !caller.may_manage_grants_of(&patient_id) {
        return Err(ApiError::forbidden(format!(
            "you may not see the grants of `{patient_id}`"
        )));
    }
    let grants = Views::new(state.views.as_ref())
        .grants(
            &patient_id,
            query.after.as_deref(),
            query.limit.unwrap_or(DEFAULT_LIMIT),
        )
        .map_err(query_error)?;
    Ok(HttpResponse::Ok().json(json!({"items": grants})))
}

// ---- Reads ----

/// A record as the API shows it: its current state, where that version is in the ledger,
/// and its metadata as stored (canonical JSON, written out as is: never parsed and
/// re-serialised per read).
#[derive(Serialize)]
pub struct RecordJson<'a> {
    record_id: &'a str,
    patient_id: &'a str,
    hospital_id: &'a str,
    record_type: &'a str,
    author_id: &'a str,
    created_at: medledger_chaincode::Timestamp,
    version: u32,
    status: medledger_chaincode::RecordStatus,
    /// `null` if the stored text is not JSON (no record the API wrote).
    metadata: Option<&'a serde_json::value::RawValue>,
    payload: Option<PayloadJson<'a>>,
    payload_erased: bool,
    updated_at: medledger_chaincode::Timestamp,
    updated_by: &'a str,
    event: Option<&'static str>,
    tx_id: String,
    block_number: u64,
    position: u32,
}

#[derive(Serialize)]
struct PayloadJson<'a> {
    cid: &'a str,
    size: u64,
    sha256: &'a medledger_chaincode::Sha256Digest,
    content_type: &'a str,
}

/// The record `entry` as the API shows it.
pub fn record_json(entry: &VersionEntry) -> RecordJson<'_> {
    let s = &entry.state;
    RecordJson {
        record_id: &s.record_id,
        patient_id: &s.patient_id,
        hospital_id: &s.hospital_id,
        record_type: &s.record_type,
        author_id: &s.author_id,
        created_at: s.created_at,
        version: s.version,
        status: s.status,
        metadata: serde_json::from_str(&s.metadata).ok(),
        payload: s.payload.as_ref().map(|p| PayloadJson {
            cid: &p.cid,
            size: p.size,
            sha256: &p.sha256,
            content_type: &p.content_type,
        }),
        payload_erased: s.payload_erased,
        updated_at: s.updated_at,
        updated_by: &s.updated_by,
        event: entry.event_kind().map(|k| k.as_str()),
        tx_id: entry.at.tx_id().to_string(),
        block_number: entry.at.block,
        position: entry.at.position,
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordQuery {
    as_of_block: Option<u64>,
    min_height: Option<u64>,
}

/// `GET /v1/records/{id}[?as_of_block=N]`: the record as of the ledger's first N blocks.
pub async fn get(
    state: Data,
    caller: Caller,
    path: web::Path<String>,
    query: web::Query<RecordQuery>,
) -> Result<HttpResponse, ApiError> {
    let record_id = path.into_inner();
    honour_min_height(&state, query.min_height).await?;
    let current = load_for_read(&state, &caller, &record_id).await?;
    let views = Views::new(state.views.as_ref());
    let entry = match query.as_of_block {
        None => current,
        Some(height) => views
            .record_as_of(&record_id, height)
            .map_err(store_error)?
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::NOT_FOUND,
                    "not_found",
                    format!("record `{record_id}` did not exist in the first {height} blocks"),
                )
            })?,
    };
    Ok(HttpResponse::Ok().json(record_json(&entry)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryQuery {
    after_version: Option<u32>,
    limit: Option<usize>,
    min_height: Option<u64>,
}

/// `GET /v1/records/{id}/history`: every version, oldest first, each with its block and tx.
pub async fn history(
    state: Data,
    caller: Caller,
    path: web::Path<String>,
    query: web::Query<HistoryQuery>,
) -> Result<HttpResponse, ApiError> {
    let record_id = path.into_inner();
    honour_min_height(&state, query.min_height).await?;
    let current = load_for_read(&state, &caller, &record_id).await?;
    let views = Views::new(state.views.as_ref());
    let limit = query.limit.unwrap_or(DEFAULT_LIMIT);
    let versions = views
        .record_history(&record_id, query.after_version.unwrap_or(0), limit)
        .map_err(query_error)?;
    let next = (versions.len() == limit)
        .then(|| versions.last().map(|v| v.state.version))
        .flatten()
        .filter(|&v| v < current.state.version);
    Ok(HttpResponse::Ok().json(json!({
        "items": versions.iter().map(record_json).collect::<Vec<_>>(),
        "next_after_version": next,
    })))
}

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
    let limit = query.limit.unwrap_or(DEFAULT_LIMIT);
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
            items.push(record_json(entry));
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

/// Exports running at once, at most; more get 503 `busy` (each holds a reading thread).
pub const EXPORTS_MAX: usize = 8;
static EXPORTS_RUNNING: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// One running export; dropping it frees its slot.
struct ExportSlot;

impl ExportSlot {
    fn take() -> Option<ExportSlot> {
        use std::sync::atomic::Ordering;
        EXPORTS_RUNNING
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < EXPORTS_MAX).then_some(n + 1)
            })
            .ok()
            .map(|_| ExportSlot)
    }
}

impl Drop for ExportSlot {
    fn drop(&mut self) {
        EXPORTS_RUNNING.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// The columns of a CSV export, in order.
pub const CSV_COLUMNS: [&str; 15] = [
    "record_id",
    "patient_id",
    "hospital_id",
    "record_type",
    "author_id",
    "created_at",
    "version",
    "status",
    "updated_at",
    "payload_cid",
    "payload_erased",
    "tx_id",
    "block_number",
    "position",
    "metadata",
];

/// One CSV field (RFC 4180): quoted when it holds a comma, quote or line break. A field
/// a spreadsheet would run as a formula (`=`, `+`, `-`, `@`, tab, CR first) gets a `'`
/// in front, so opening an export cannot execute anything.
fn csv_field(out: &mut String, text: &str) {
    let formula = text.starts_with(['=', '+', '-', '@', '\t', '\r']);
    let quote = formula || text.contains([',', '"', '\n', '\r']);
    if quote {
        out.push('"');
    }
    if formula {
        out.push('\'');
    }
    for c in text.chars() {
        if c == '"' {
            out.push('"');
        }
        out.push(c);
    }
    if quote {
        out.push('"');
    }
}

fn csv_line(fields: &[String]) -> String {
    let mut line = String::new();
    for (i, f) in fields.iter().enumerate() {
        if i > 0 {
            line.push(',');
        }
        csv_field(&mut line, f);
    }
    line.push_str("\r\n");
    line
}

fn csv_record(entry: &VersionEntry) -> String {
    let s = &entry.state;
    csv_line(&[
        s.record_id.clone(),
        s.patient_id.clone(),
        s.hospital_id.clone(),
        s.record_type.clone(),
        s.author_id.clone(),
        s.created_at.to_string(),
        s.version.to_string(),
        serde_json::to_value(s.status)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default(),
        s.updated_at.to_string(),
        s.payload
            .as_ref()
            .map(|p| p.cid.clone())
            .unwrap_or_default(),
        s.payload_erased.to_string(),
        entry.at.tx_id().to_string(),
        entry.at.block.to_string(),
        entry.at.position.to_string(),
        s.metadata.clone(),
    ])
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportQuery {
    min_height: Option<u64>,
}

/// `GET /v1/patients/{id}/export`: the whole timeline as NDJSON (or CSV with
/// `Accept: text/csv`), streamed in constant memory (a bounded channel between the
/// reading thread and the response). At most [`EXPORTS_MAX`] run at once.
pub async fn patient_export(
    req: actix_web::HttpRequest,
    state: Data,
    caller: Caller,
    path: web::Path<String>,
    query: web::Query<ExportQuery>,
) -> Result<HttpResponse, ApiError> {
    let patient_id = path.into_inner();
    if !caller.may_list_patient(&patient_id) {
        return Err(ApiError::forbidden(format!(
            "you may not export the records of `{patient_id}`"
        )));
    }
    honour_min_height(&state, query.min_height).await?;
    let csv = req
        .headers()
        .get(actix_web::http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/csv"));
    let slot = ExportSlot::take().ok_or_else(|| {
        ApiError::unavailable(
            "busy",
            format!("{EXPORTS_MAX} exports are running; try again shortly"),
            1,
        )
    })?;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<web::Bytes, ApiError>>(64);
    let st = state.clone();
    std::thread::Builder::new()
        .name("export".into())
        .spawn(move || {
            let _slot = slot;
            if csv {
                let header = csv_line(&CSV_COLUMNS.map(String::from));
                if tx.blocking_send(Ok(web::Bytes::from(header))).is_err() {
                    return;
                }
            }
            let views = Views::new(st.views.as_ref());
            let result = views.export_timeline(
                Owner::Patient(&patient_id),
                &TimelineFilter::default(),
                &mut |entry| {
                    match may_read(&st, &caller, &entry) {
                        Ok(false) => return ControlFlow::Continue(()),
                        Ok(true) => {}
                        Err(e) => {
                            let _ = tx.blocking_send(Err(e));
                            return ControlFlow::Break(());
                        }
                    }
                    let line = if csv {
                        csv_record(&entry)
                    } else {
                        let mut line = serde_json::to_string(&record_json(&entry))
                            .expect("a record serialises");
                        line.push('\n');
                        line
                    };
                    if tx.blocking_send(Ok(web::Bytes::from(line))).is_err() {
                        return ControlFlow::Break(()); // the client went away
                    }
                    ControlFlow::Continue(())
                },
            );
            if let Err(e) = result {
                let _ = tx.blocking_send(Err(query_error(e)));
            }
        })
        .map_err(|e| ApiError::internal(format!("starting the export: {e}")))?;
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    Ok(HttpResponse::Ok()
        .content_type(if csv {
            "text/csv; charset=utf-8"
        } else {
            "application/x-ndjson"
        })
        .streaming(stream))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(text: &str) -> String {
        let mut out = String::new();
        csv_field(&mut out, text);
        out
    }

    #[test]
    fn csv_fields_are_quoted_escaped_and_defused() {
        assert_eq!(field("plain"), "plain");
        assert_eq!(field("a,b"), "\"a,b\"");
        assert_eq!(field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(field("two\nlines"), "\"two\nlines\"");
        assert_eq!(field("=HYPERLINK(\"x\")"), "\"'=HYPERLINK(\"\"x\"\")\"");
        assert_eq!(field("+1"), "\"'+1\"");
        assert_eq!(field("-1"), "\"'-1\"");
        assert_eq!(field("@SUM(A1)"), "\"'@SUM(A1)\"");
        assert_eq!(field(""), "");
        assert_eq!(csv_line(&["a".into(), "b,c".into()]), "a,\"b,c\"\r\n");
    }
}
