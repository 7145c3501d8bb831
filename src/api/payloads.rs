//! Payload routes and the glue between records and the payload pipeline
//! (`medledger-payload`): inline JSON payloads and multipart uploads on creation and
//! amendment, the streamed and decrypted read (which appends `AccessLogged`), and erasure
//! by crypto-shredding.
//!
//! Order of durability on a submission: the payload's blocks, pin and wrapped key are
//! durable first; then the event naming its CID is committed. A submission refused before
//! it reaches the ledger (busy, too large, invalid) destroys the payload's key again, so a
//! refused upload leaves nothing readable behind.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use base64::Engine as _;
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::{json, Value};

use medledger_chaincode::{Envelope, Event, PayloadRef, Sha256Digest};
use medledger_payload::{Cid, PayloadError, StoredPayload};

use super::audit::{self, Declared};
use super::auth::{Caller, Role};
use super::error::ApiError;
use super::lookup::{honour_min_height, load_record, may_read};
use super::submit::{submit_with_payload, NotAccepted};
use super::AppState;
use crate::orderer::Receipt;

type Data = web::Data<AppState>;

/// The longest content type accepted.
const CONTENT_TYPE_BYTES_MAX: usize = 127;
/// The JSON part of a multipart upload, at most.
const MULTIPART_RECORD_BYTES_MAX: usize = 64 * 1024;
/// Chunks in flight between a multipart reader and the pipeline.
const UPLOAD_CHANNEL_CHUNKS: usize = 4;

/// The HTTP answer for a pipeline error; never payload bytes in the message.
pub fn payload_error(e: PayloadError) -> ApiError {
    let status = match &e {
        PayloadError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        PayloadError::NotFound(_) => StatusCode::NOT_FOUND,
        PayloadError::Erased(_) => StatusCode::GONE,
        PayloadError::InvalidKeyId | PayloadError::Body(_) => StatusCode::BAD_REQUEST,
        PayloadError::IpfsUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        PayloadError::Corrupt(_) | PayloadError::Storage(_) => StatusCode::INTERNAL_SERVER_ERROR,
    };
    if status.is_server_error() {
        tracing::error!(code = e.code(), error = %e, "payload pipeline");
    }
    let mut err = ApiError::new(status, e.code(), e.to_string());
    if status == StatusCode::SERVICE_UNAVAILABLE {
        err.retry_after = Some(5);
    }
    err
}

/// A MIME type: `type/subtype`, token characters, optional parameters; bounded.
fn check_content_type(ct: &str) -> Result<(), ApiError> {
    let essence = ct.split(';').next().unwrap_or("").trim();
    let token = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$&^_.+-".contains(&b))
    };
    let ok = ct.len() <= CONTENT_TYPE_BYTES_MAX
        && ct.is_ascii()
        && !ct.bytes().any(|b| b.is_ascii_control())
        && essence
            .split_once('/')
            .is_some_and(|(t, s)| token(t) && token(s));
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            "invalid_content_type",
            format!("a payload's content_type is a MIME type (type/subtype) of at most {CONTENT_TYPE_BYTES_MAX} ASCII characters"),
        ))
    }
}

/// An inline payload from a JSON body: `{"content_type", "data": <JSON>}` or
/// `{"content_type", "base64": "..."}`.
pub struct InlinePayload {
    pub content_type: String,
    pub bytes: web::Bytes,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InlineBody {
    content_type: String,
    #[serde(default)]
    data: Option<Value>,
    #[serde(default)]
    base64: Option<String>,
}

pub fn parse_inline(value: Value) -> Result<InlinePayload, ApiError> {
    let body: InlineBody = serde_json::from_value(value)
        .map_err(|e| ApiError::bad_request("invalid_payload", format!("invalid payload: {e}")))?;
    check_content_type(&body.content_type)?;
    let bytes = match (body.data, body.base64) {
        (Some(data), None) => web::Bytes::from(data.to_string()),
        (None, Some(b64)) => base64::engine::general_purpose::STANDARD
            .decode(b64.as_bytes())
            .map(web::Bytes::from)
            .map_err(|_| {
                ApiError::bad_request("invalid_payload", "payload.base64 is not valid base64")
            })?,
        _ => {
            return Err(ApiError::bad_request(
                "invalid_payload",
                "a payload has exactly one of `data` (JSON) and `base64` (bytes)",
            ))
        }
    };
    Ok(InlinePayload {
        content_type: body.content_type,
        bytes,
    })
}

/// What the ledger records about a stored payload.
pub fn payload_ref(stored: &StoredPayload) -> PayloadRef {
    PayloadRef {
        cid: stored.cid.to_string(),
        size: stored.size,
        sha256: Sha256Digest(stored.sha256),
        key_id: stored.key_id.clone(),
        content_type: stored.content_type.clone(),
    }
}

/// In a cluster, sends a stored payload to the other nodes and waits until a majority
/// hold it durably (IPFS Cluster's `replication_factor_min`), before its record is
/// proposed: any node can serve it after the one that took it dies. Refused (503,
/// nothing written; the caller abandons the payload) otherwise.
pub(crate) async fn replicate(state: &AppState, stored: &StoredPayload) -> Result<(), ApiError> {
    let Some(cluster) = &state.cluster else {
        return Ok(());
    };
    cluster.replicate_payload(stored).await.map_err(|e| {
        ApiError::unavailable(
            "not_committed",
            format!("the payload did not reach a majority of the nodes; nothing was written: {e}"),
            1,
        )
    })
}

/// In a cluster, fetches a payload this node lacks (it was down when it was sent, or it
/// joined later) from the other nodes before it is read. A failure is left to the read.
async fn ensure_held(state: &AppState, stored: &StoredPayload) {
    if let Some(cluster) = &state.cluster {
        if let Err(e) = cluster.ensure_payload(&stored.cid, &stored.key_id).await {
            tracing::warn!(error = %e, "fetching a payload from the other nodes");
        }
    }
}

/// Stores bytes already in memory (an inline payload).
pub async fn store_inline(
    state: &AppState,
    inline: InlinePayload,
    in_flight: &mut InFlight<'_>,
) -> Result<StoredPayload, ApiError> {
    super::submit::disk_room(state, inline.bytes.len() as u64)?;
    let body = futures_util::stream::once(async move { Ok::<_, io::Error>(inline.bytes) });
    in_flight
        .put(state.payloads.put(body, &inline.content_type))
        .await
        .map_err(payload_error)
}

/// Sets the payload of a creation or an amendment.
pub fn attach(env: &mut Envelope, stored: &StoredPayload) {
    match &mut env.event {
        Event::RecordCreated(e) => e.payload = Some(payload_ref(stored)),
        Event::RecordAmended(e) => e.payload = Some(payload_ref(stored)),
        _ => unreachable!("only creations and amendments carry payloads"),
    }
}

/// Erases a stored payload that no accepted transaction names (its submission was refused
/// or rejected): its key is destroyed (so its blocks are unreadable) and it is unpinned,
/// here and, in a cluster, on the other nodes. A failure leaves an orphan for the
/// reconcile and is logged; `false` then.
pub async fn abandon(state: &AppState, stored: &StoredPayload) -> bool {
    let erased = state.payloads.erase(&stored.key_id, &stored.cid).await;
    if let Err(e) = &erased {
        tracing::warn!(error = %e, "could not abandon the payload of a refused submission");
    }
    if let Some(cluster) = &state.cluster {
        cluster.drop_payload(stored);
    }
    erased.is_ok()
}

/// Whether a request may have left a stored payload that no record names and that was
/// not abandoned: cancelled between its store and its commit (a client gone), an outcome
/// unknown, a failed abandon. Then the server does not mark a clean stop, and the next
/// start reconciles the payload store with the whole ledger
/// ([`medledger_payload::Payloads::mark_clean_stop`]).
#[derive(Debug, Default)]
pub struct Unresolved(AtomicBool);

impl Unresolved {
    /// A request that may store a payload; see [`InFlight`].
    pub fn begin(&self) -> InFlight<'_> {
        InFlight {
            unresolved: self,
            storing: false,
        }
    }

    /// Whether some request left its payload unresolved.
    pub fn any(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// See [`Unresolved::begin`]. From [`InFlight::storing`] (a payload's `put` begins) until
/// [`InFlight::resolve`] or [`InFlight::not_stored`], a drop (an error, a client gone)
/// marks the store as possibly holding an orphan. A request refused before its payload is
/// stored, or whose `put` failed (the pipeline undoes its own failed `put`s, and keeps
/// the store from a clean stop if that fails), leaves nothing.
pub struct InFlight<'a> {
    unresolved: &'a Unresolved,
    storing: bool,
}

impl InFlight<'_> {
    /// Runs a payload's `put`: from its start what it stores is unnamed until the record
    /// commits; a `put` that failed undid itself, so it leaves nothing.
    pub async fn put(
        &mut self,
        put: impl std::future::Future<Output = Result<StoredPayload, PayloadError>>,
    ) -> Result<StoredPayload, PayloadError> {
        self.storing();
        let stored = put.await;
        if stored.is_err() {
            self.not_stored();
        }
        stored
    }

    /// A payload's `put` begins: what it stores is unnamed until the record commits.
    pub fn storing(&mut self) {
        self.storing = true;
    }

    /// The `put` failed, or what it stored was abandoned: nothing is left unnamed.
    pub fn not_stored(&mut self) {
        self.storing = false;
    }

    /// The payload is named by a committed record, abandoned, or was never stored.
    pub fn resolve(mut self) {
        self.storing = false;
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if self.storing {
            self.unresolved.0.store(true, Ordering::Release);
        }
    }
}

/// Reads a `multipart/form-data` upload: a `record` part (the JSON body, first), then a
/// `file` part streamed into the pipeline (its Content-Type is the payload's). Returns
/// the JSON and the stored payload. `check` sees the JSON before any payload byte is
/// stored, so an unauthorized or invalid record stores nothing.
pub async fn read_multipart<T, F>(
    req: &HttpRequest,
    body: web::Payload,
    state: &AppState,
    in_flight: &mut InFlight<'_>,
    check: F,
) -> Result<(T, StoredPayload), ApiError>
where
    T: serde::de::DeserializeOwned,
    F: FnOnce(&T) -> Result<(), ApiError>,
{
    let mut multipart = actix_multipart::Multipart::new(req.headers(), body.into_inner());
    let bad = |m: String| ApiError::bad_request("invalid_multipart", m);
    // 1. The record.
    let mut field = multipart
        .next()
        .await
        .ok_or_else(|| bad("the upload has no parts; expected `record` then `file`".into()))?
        .map_err(|e| bad(format!("unreadable multipart body: {e}")))?;
    if field.name() != Some("record") {
        return Err(bad("the first part must be `record` (the JSON body)".into()));
    }
    let mut json = Vec::new();
    while let Some(chunk) = field.next().await {
        let chunk = chunk.map_err(|e| bad(format!("reading the record part: {e}")))?;
        if json.len() + chunk.len() > MULTIPART_RECORD_BYTES_MAX {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!("the record part is larger than {MULTIPART_RECORD_BYTES_MAX} bytes"),
            ));
        }
        json.extend_from_slice(&chunk);
    }
    // The next part is produced only once this one is dropped.
    drop(field);
    let record: T = serde_json::from_slice(&json)
        .map_err(|e| ApiError::bad_request("invalid_body", format!("invalid record part: {e}")))?;
    check(&record)?;
    // The whole upload's length when the client sent it: an upload the disk has no room
    // for is refused before a byte of it is stored.
    let declared = req
        .headers()
        .get(actix_web::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    super::submit::disk_room(state, declared)?;
    // 2. The file, streamed: a bounded channel between the multipart reader (not Send)
    // and the pipeline, so at most a few chunks are in memory.
    let mut field = multipart
        .next()
        .await
        .ok_or_else(|| bad("the upload has no `file` part".into()))?
        .map_err(|e| bad(format!("unreadable multipart body: {e}")))?;
    if field.name() != Some("file") {
        return Err(bad("the second part must be `file` (the payload)".into()));
    }
    let content_type = field
        .content_type()
        .map(|m| m.to_string())
        .unwrap_or_else(|| "application/octet-stream".into());
    check_content_type(&content_type)?;
    let (tx, rx) =
        tokio::sync::mpsc::channel::<Result<web::Bytes, io::Error>>(UPLOAD_CHANNEL_CHUNKS);
    let reader = async move {
        while let Some(chunk) = field.next().await {
            let item = chunk.map_err(|e| io::Error::other(e.to_string()));
            let failed = item.is_err();
            if tx.send(item).await.is_err() || failed {
                break;
            }
        }
    };
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    let (stored, ()) = futures_util::join!(
        in_flight.put(state.payloads.put(stream, &content_type)),
        reader
    );
    let stored = stored.map_err(payload_error)?;
    // Nothing may follow the file.
    if let Some(extra) = multipart.next().await {
        let _ = extra;
        if abandon(state, &stored).await {
            in_flight.not_stored();
        }
        return Err(bad("nothing may follow the `file` part".into()));
    }
    Ok((record, stored))
}

/// Whether a request body is multipart.
pub fn is_multipart(req: &HttpRequest) -> bool {
    req.headers()
        .get(actix_web::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.trim_start()
                .to_ascii_lowercase()
                .starts_with("multipart/form-data")
        })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadQuery {
    /// Why the payload is read (recorded on the ledger with the read).
    purpose: Option<String>,
    /// A clinician without a grant reads in an emergency: the reason.
    break_glass: Option<String>,
    /// Read one's own writes: the views reflect at least this many blocks first.
    min_height: Option<u64>,
}

fn stored_of(p: &PayloadRef) -> Result<StoredPayload, ApiError> {
    let cid: Cid = p
        .cid
        .parse()
        .map_err(|_| ApiError::internal("a record names an unreadable CID"))?;
    Ok(StoredPayload {
        cid,
        size: p.size,
        sha256: p.sha256.0,
        key_id: p.key_id.clone(),
        content_type: p.content_type.clone(),
    })
}

/// Commits an envelope whose payload (if any) is stored, as [`commit`] does; a submission
/// refused before the ledger or rejected by the contract abandons the payload.
/// `in_flight` is resolved unless the payload may be left unnamed (an outcome unknown,
/// an abandon that failed).
pub(crate) async fn commit_with_payload(
    state: &AppState,
    mut env: Envelope,
    stored: Option<StoredPayload>,
    in_flight: InFlight<'_>,
) -> Result<(Envelope, Receipt), ApiError> {
    if let Some(stored) = &stored {
        attach(&mut env, stored);
    }
    let submitted = submit_with_payload(state, &env, stored.as_ref()).await;
    let Some(stored) = stored else {
        in_flight.resolve();
        return submitted
            .map(|receipt| (env, receipt))
            .map_err(ApiError::from);
    };
    match submitted {
        Ok(receipt) => {
            in_flight.resolve();
            Ok((env, receipt))
        }
        Err(NotAccepted::Refused(e) | NotAccepted::Rejected(e)) => {
            // No accepted transaction names this payload.
            if abandon(state, &stored).await {
                in_flight.resolve();
            }
            Err(e)
        }
        Err(NotAccepted::Unknown(e)) => Err(e),
    }
}

/// `GET /v1/records/{id}/payload[?purpose=...]`: the current version's payload,
/// decrypted and streamed (checked against its size and SHA-256 at the end). Auditors
/// may not read payloads. Every read is on the ledger before the payload leaves
/// (`RecordsRead`, see [`audit`]); a read that cannot be recorded is refused.
pub async fn read(
    state: Data,
    caller: Caller,
    path: web::Path<String>,
    query: web::Query<ReadQuery>,
) -> Result<HttpResponse, ApiError> {
    let record_id = path.into_inner();
    let declared = Declared::parse(
        &caller,
        query.purpose.as_deref(),
        query.break_glass.as_deref(),
        true,
    )?;
    honour_min_height(&state, query.min_height).await?;
    let entry = load_record(&state, &record_id).await?;
    if caller.role() == Role::Auditor
        || !(declared.is_break_glass() || may_read(&state, &caller, &entry)?)
    {
        return Err(ApiError::forbidden(format!(
            "you may not read the payload of record `{record_id}`"
        )));
    }
    let s = &entry.state;
    if s.payload_erased {
        return Err(ApiError::new(
            StatusCode::GONE,
            "payload_erased",
            format!("the payload of record `{record_id}` was erased"),
        ));
    }
    let Some(p) = &s.payload else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "no_payload",
            format!("record `{record_id}` has no payload"),
        ));
    };
    let stored = stored_of(p)?;
    ensure_held(&state, &stored).await;
    let stream = state.payloads.get(&stored).await.map_err(payload_error)?;
    let read = [(s.patient_id.as_str(), record_id.as_str())];
    audit::record(&state, &caller, &declared, "payload", &read).await?;
    // A failure mid-stream (a corrupt block, a size or SHA-256 mismatch at the end) cuts
    // the connection short of Content-Length, so the client can tell.
    let body = stream.map(|item| {
        item.map_err(|e| {
            tracing::error!(code = e.code(), "payload stream failed");
            io::Error::other(e.code())
        })
    });
    Ok(HttpResponse::Ok()
        .content_type(stored.content_type.clone())
        .insert_header(("X-Payload-Sha256", hex::encode(stored.sha256)))
        .insert_header(("X-Payload-Cid", stored.cid.to_string()))
        .no_chunking(stored.size)
        .streaming(body))
}

/// `GET /v1/ipfs/status` (auditors and admins): the payload store and the replication
/// outbox (depth, failures, entries replicated since start).
pub async fn status(state: Data, caller: Caller) -> Result<HttpResponse, ApiError> {
    if !matches!(caller.role(), Role::Admin | Role::Auditor) {
        return Err(ApiError::forbidden(
            "the payload store's status is for the auditor and admin roles",
        ));
    }
    let bytes = state.payloads.bytes_stored().await.map_err(payload_error)?;
    let pinned = state
        .payloads
        .pinned_roots()
        .await
        .map_err(payload_error)?
        .len();
    let replication = state.payloads.replication().map(|r| {
        json!({
            "outbox_depth": r.outbox_depth,
            "failures": r.failures,
            "replicated": r.replicated,
        })
    });
    Ok(HttpResponse::Ok().json(json!({
        "embedded": {"bytes_stored": bytes, "pinned_payloads": pinned},
        "kubo": replication,
    })))
}
