//! Record routes: create (one, or a batch), amend, change status, and read a record and
//! its history. The shared submission path is `submit`, lookups are `lookup`, grants,
//! timelines and the export have their own modules.

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use medledger_chaincode::contract::apply_record_event;
use medledger_chaincode::{
    Envelope, Event, RecordAmended, RecordCreated, RecordStatus, RecordStatusChanged, Timestamp,
};
use medledger_views::query::Views;
use medledger_views::values::VersionEntry;

use super::audit::{self, Declared};
use super::auth::Caller;
use super::error::ApiError;
use super::lookup::{
    check_expected, honour_min_height, load_for_read, load_for_write, query_error, version_etag,
    versioned,
};
use super::payloads;
use super::submit::{
    clinical_error, commit, contract_error, ensure_key, envelope, now, receipt_json,
    seal_for_ledger, store_error, submit_error, verdict, WriteQuery,
};
use super::{AppState, PAGE_LIMIT_DEFAULT};
use crate::clinical::{self, Opened};
use crate::orderer::SubmitError;
use medledger_payload::keystore::KeyStore;

/// Records in one batch submission, at most.
pub const BATCH_RECORDS_MAX: usize = 1_000;

type Data = web::Data<AppState>;

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
        metadata: metadata_text(body.metadata).into(),
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
    // From a payload's store until its record commits or it is abandoned.
    let mut in_flight = state.payloads_unresolved.begin();
    let (env, stored) = if payloads::is_multipart(&req) {
        let (record, stored) =
            payloads::read_multipart::<NewRecord, _>(&req, body, &state, &mut in_flight, |r| {
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
                if payloads::abandon(&state, &stored).await {
                    in_flight.resolve();
                }
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
            Some(inline) => Some(payloads::store_inline(&state, inline, &mut in_flight).await?),
            None => None,
        };
        (env, stored)
    };
    let record_id = env.event.record_id().unwrap_or_default().to_owned();
    let (_, receipt) = payloads::commit_with_payload(&state, env, stored, in_flight).await?;
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
    // Built first, then sealed all at once: their new keys share the key log's group
    // commits (and, in a cluster, their trips to the other nodes overlap), where one
    // after another each waited for its own.
    let built: Vec<Result<Envelope, ApiError>> = records
        .into_iter()
        .map(|raw| {
            serde_json::from_str::<NewRecord>(raw.get())
                .map_err(|e| ApiError::bad_request("invalid_body", format!("invalid record: {e}")))
                .and_then(|r| {
                    if r.payload.is_some() {
                        return Err(payload_in_batch());
                    }
                    creation(&state, &caller, r).map(|(env, _)| env)
                })
        })
        .collect();
    let sealed = futures_util::future::join_all(built.into_iter().map(|built| async {
        let mut env = built?;
        seal_for_ledger(&state, &mut env).await?;
        Ok::<Envelope, ApiError>(env)
    }))
    .await;
    let mut pending = Vec::new();
    for (i, sealed) in sealed.into_iter().enumerate() {
        match sealed {
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
    json!({"status": e.status.as_u16(), "error": {"code": e.code, "message": e.public_message(), "details": e.details}})
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
            reason: body.reason.into(),
            metadata: body.metadata.map(|m| Value::Object(m).to_string().into()),
            payload: None,
        }),
    );
    apply_record_event(Some(&current.state), &env.event).map_err(|e| contract_error(&e))?;
    let mut in_flight = state.payloads_unresolved.begin();
    let stored = match inline {
        Some(inline) => Some(payloads::store_inline(&state, inline, &mut in_flight).await?),
        None => None,
    };
    let (_, receipt) = payloads::commit_with_payload(&state, env, stored, in_flight).await?;
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
            reason: body.reason.into(),
        }),
    );
    apply_record_event(Some(&current.state), &env.event).map_err(|e| contract_error(&e))?;
    let receipt = commit(&state, &env).await?;
    Ok(HttpResponse::Created().json(receipt_json(&receipt, &record_id, version)))
}

/// A record as the API shows it: its current state, where that version is in the ledger,
/// and its metadata opened (canonical JSON, written out as is: never parsed and
/// re-serialised per read). An erased record shows its structural fields only.
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
    /// `null` once erased, or if the stored text is not JSON (no record the API wrote).
    pub(crate) metadata: Option<Box<serde_json::value::RawValue>>,
    payload: Option<PayloadJson<'a>>,
    payload_erased: bool,
    /// The record was erased: its clinical text and payloads are gone for good.
    erased: bool,
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

/// The record `entry` as the API shows it, its metadata opened with the record's key.
pub fn record_json<'a>(
    keys: &KeyStore,
    entry: &'a VersionEntry,
) -> Result<RecordJson<'a>, ApiError> {
    let s = &entry.state;
    let metadata = clinical::open(keys, &s.record_id, "metadata", &s.metadata)
        .map_err(|e| clinical_error(&e))?;
    Ok(RecordJson {
        record_id: &s.record_id,
        patient_id: &s.patient_id,
        hospital_id: &s.hospital_id,
        record_type: &s.record_type,
        author_id: &s.author_id,
        created_at: s.created_at,
        version: s.version,
        status: s.status,
        metadata: metadata
            .text()
            .and_then(|text| serde_json::value::RawValue::from_string(text.to_owned()).ok()),
        payload: s.payload.as_ref().map(|p| PayloadJson {
            cid: &p.cid,
            size: p.size,
            sha256: &p.sha256,
            content_type: &p.content_type,
        }),
        payload_erased: s.payload_erased,
        erased: metadata == Opened::Erased,
        updated_at: s.updated_at,
        updated_by: &s.updated_by,
        event: entry.event_kind().map(|k| k.as_str()),
        tx_id: entry.at.tx_id().to_string(),
        block_number: entry.at.block,
        position: entry.at.position,
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordQuery {
    as_of_block: Option<u64>,
    min_height: Option<u64>,
    /// Why the record is read (docs/API.md, "Reads on the ledger").
    purpose: Option<String>,
    /// A clinician without a grant reads in an emergency: the reason.
    break_glass: Option<String>,
}

/// `GET /v1/records/{id}[?as_of_block=N]`: the record as of the ledger's first N blocks.
pub async fn get(
    req: actix_web::HttpRequest,
    state: Data,
    caller: Caller,
    path: web::Path<String>,
    query: web::Query<RecordQuery>,
) -> Result<HttpResponse, ApiError> {
    let record_id = path.into_inner();
    let declared = Declared::parse(
        &caller,
        query.purpose.as_deref(),
        query.break_glass.as_deref(),
        true,
    )?;
    honour_min_height(&state, query.min_height).await?;
    let current = load_for_read(&state, &caller, &record_id, &declared).await?;
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
    ensure_key(&state, &entry.state).await;
    let etag = version_etag(&entry.at.tx_id().to_string());
    let what = if query.as_of_block.is_some() {
        "as_of"
    } else {
        "record"
    };
    let read = [(entry.state.patient_id.as_str(), record_id.as_str())];
    let shown = audit::record(&state, &caller, &declared, what, &read);
    versioned(&req, &etag, shown, || {
        Ok(HttpResponse::Ok().json(record_json(state.payloads.keys(), &entry)?))
    })
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryQuery {
    after_version: Option<u32>,
    limit: Option<usize>,
    min_height: Option<u64>,
    purpose: Option<String>,
    break_glass: Option<String>,
}

/// `GET /v1/records/{id}/history`: every version, oldest first, each with its block and tx.
pub async fn history(
    req: actix_web::HttpRequest,
    state: Data,
    caller: Caller,
    path: web::Path<String>,
    query: web::Query<HistoryQuery>,
) -> Result<HttpResponse, ApiError> {
    let record_id = path.into_inner();
    let declared = Declared::parse(
        &caller,
        query.purpose.as_deref(),
        query.break_glass.as_deref(),
        true,
    )?;
    honour_min_height(&state, query.min_height).await?;
    let current = load_for_read(&state, &caller, &record_id, &declared).await?;
    ensure_key(&state, &current.state).await;
    // A page of versions is a function of the query and the current version.
    let etag = version_etag(&current.at.tx_id().to_string());
    let read = [(current.state.patient_id.as_str(), record_id.as_str())];
    let shown = audit::record(&state, &caller, &declared, "history", &read);
    versioned(&req, &etag, shown, || {
        let views = Views::new(state.views.as_ref());
        let limit = query.limit.unwrap_or(PAGE_LIMIT_DEFAULT);
        let versions = views
            .record_history(&record_id, query.after_version.unwrap_or(0), limit)
            .map_err(query_error)?;
        let next = (versions.len() == limit)
            .then(|| versions.last().map(|v| v.state.version))
            .flatten()
            .filter(|&v| v < current.state.version);
        let keys = state.payloads.keys();
        let items = versions
            .iter()
            .map(|v| record_json(keys, v))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(HttpResponse::Ok().json(json!({
            "items": items,
            "next_after_version": next,
        })))
    })
    .await
}
