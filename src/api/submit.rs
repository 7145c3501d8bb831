//! The submission path every write route shares: the envelope a caller's event travels
//! in, the orderer's refusals as answers, and `commit`, which answers with the
//! contract's verdict (durable and accepted, or the contract's code).

use actix_web::http::StatusCode;
use serde::Deserialize;
use serde_json::{json, Value};

use medledger_chaincode::contract::{ContractError, RecordState};
use medledger_chaincode::{Envelope, Event, Timestamp, TxId};
use medledger_views::query::Views;

use super::auth::Caller;
use super::error::ApiError;
use super::{AppState, PROJECTED_WAIT};
use crate::clinical::{self, ClinicalError};
use crate::orderer::{Receipt, SubmitError};

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
        // Every other rejection: the event is well-formed but breaks a rule. Listed, not
        // a wildcard, so a new rule is a compile error here until it has its answer.
        ContractError::RecordEnteredInError { .. }
        | ContractError::StatusUnchanged { .. }
        | ContractError::PayloadAlreadyErased { .. }
        | ContractError::PatientMismatch { .. }
        | ContractError::RecordMismatch { .. }
        | ContractError::GrantToSelf { .. }
        | ContractError::GrantAlreadyExpired { .. }
        | ContractError::GrantMismatch { .. }
        | ContractError::NotARecordEvent { .. }
        | ContractError::NotAGrantEvent { .. } => StatusCode::UNPROCESSABLE_ENTITY,
    };
    ApiError::new(status, e.code(), e.to_string())
}

pub(crate) fn submit_error(e: SubmitError) -> ApiError {
    match e {
        SubmitError::TooLarge { .. } => {
            ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", e.to_string())
        }
        SubmitError::Invalid(inner) => ApiError::bad_request("invalid_field", inner.to_string()),
        // The server seals before it submits: reaching this is a bug, not the caller's.
        SubmitError::Unsealed(_) => ApiError::internal(e.to_string()).with_code("unsealed"),
        SubmitError::Busy => ApiError::unavailable("busy", e.to_string(), 1),
        SubmitError::Closed => ApiError::unavailable("shutting_down", e.to_string(), 5),
        SubmitError::StorageFull(_) => ApiError::storage_full(e.to_string()),
        SubmitError::Failed(_) | SubmitError::WriterStopped => {
            ApiError::internal(e.to_string()).with_code("ledger_failed")
        }
        SubmitError::NotCommitted(_) => ApiError::unavailable("not_committed", e.to_string(), 1),
        SubmitError::Uncertain(_) => ApiError::unavailable("outcome_unknown", e.to_string(), 1),
    }
}

impl ApiError {
    fn with_code(mut self, code: &'static str) -> Self {
        self.code = code;
        self
    }
}

/// The answer when clinical text cannot be sealed or opened.
pub(crate) fn clinical_error(e: &ClinicalError) -> ApiError {
    match e {
        ClinicalError::Erased { .. } => ApiError::new(StatusCode::GONE, e.code(), e.to_string()),
        ClinicalError::KeyMissing { .. } => ApiError::unavailable(e.code(), e.to_string(), 1),
        ClinicalError::Failed { record_id, .. } => {
            tracing::error!(error = %e, "clinical text");
            ApiError::internal(format!(
                "the clinical text of record `{record_id}` could not be sealed or opened"
            ))
            .with_code(e.code())
        }
    }
}

pub(crate) fn store_error(e: impl std::fmt::Display) -> ApiError {
    ApiError::internal(format!("view store: {e}")).with_code("store_error")
}

/// The query of a write route: it takes no parameters, and refuses any (`?wait=` is gone:
/// every answer waits for the contract's verdict).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WriteQuery {}

/// Submits `env` and answers with the contract's verdict: the receipt once the block
/// holding it is durable **and** the projector has applied it and the contract accepted
/// it. A transaction the contract rejected in commit order (a concurrent write won) is
/// answered 409 with the contract's code; a 2xx is never followed by a rejection.
pub(crate) async fn commit(state: &AppState, env: &Envelope) -> Result<Receipt, ApiError> {
    Ok(submit_for_verdict(state, env).await?)
}

/// [`commit`], telling apart what became of a submission that was not accepted (a
/// caller holding a stored payload abandons it unless the transaction may be in the
/// ledger).
pub(crate) async fn submit_for_verdict(
    state: &AppState,
    env: &Envelope,
) -> Result<Receipt, NotAccepted> {
    submit_with_payload(state, env, None).await
}

/// [`submit_for_verdict`] of an envelope naming `payload` (stored here): in a cluster
/// the payload goes to a majority while the record's text is sealed and its key goes
/// there too, and the block is proposed once all of it is held.
pub(crate) async fn submit_with_payload(
    state: &AppState,
    env: &Envelope,
    payload: Option<&medledger_payload::StoredPayload>,
) -> Result<Receipt, NotAccepted> {
    env.check_limits()
        .map_err(|e| NotAccepted::Refused(ApiError::bad_request("invalid_field", e.to_string())))?;
    ensure_projecting(state).map_err(NotAccepted::Refused)?;
    let mut sealed = env.clone();
    let replicated = async {
        match payload {
            Some(p) => super::payloads::replicate(state, p).await,
            None => Ok(()),
        }
    };
    let (was_sealed, replicated) =
        futures_util::future::join(seal_for_ledger(state, &mut sealed), replicated).await;
    was_sealed.and(replicated).map_err(NotAccepted::Refused)?;
    let env = &sealed;
    let span = tracing::info_span!("ledger.commit", block = tracing::field::Empty);
    let submitted = {
        use tracing::Instrument as _;
        state.orderer.submit(env).instrument(span.clone()).await
    };
    let receipt = match submitted {
        Ok(receipt) => receipt,
        // The block write failed: whether this transaction reached the disk is unknown.
        Err(
            e @ (SubmitError::Failed(_) | SubmitError::WriterStopped | SubmitError::Uncertain(_)),
        ) => return Err(NotAccepted::Unknown(submit_error(e))),
        Err(
            e @ (SubmitError::TooLarge { .. }
            | SubmitError::Invalid(_)
            | SubmitError::Unsealed(_)
            | SubmitError::Busy
            | SubmitError::Closed
            | SubmitError::StorageFull(_)
            | SubmitError::NotCommitted(_)),
        ) => return Err(NotAccepted::Refused(submit_error(e))),
    };
    span.record("block", crate::telemetry::otel_int(receipt.block_number));
    state.projector.nudge();
    verdict(state, &receipt).await?;
    Ok(receipt)
}

/// Seals `env`'s clinical text (the ledger never holds it in the clear) and, in a
/// cluster, gets its record's key to a majority: what a submission needs before the
/// orderer.
pub(crate) async fn seal_for_ledger(state: &AppState, env: &mut Envelope) -> Result<(), ApiError> {
    // Before the record's key is written: on a full disk nothing of it is.
    disk_room(state, 0)?;
    clinical::seal(state.payloads.keys(), env)
        .await
        .map_err(|e| clinical_error(&e))?;
    replicate_key(state, env).await
}

/// Refuses a write of about `incoming` bytes with 507 `storage_full` (Retry-After) when
/// the data dir's disk is down to its reserve (crate::disk).
pub(crate) fn disk_room(state: &AppState, incoming: u64) -> Result<(), ApiError> {
    state.disk.check(incoming).map_err(|e| {
        ApiError::storage_full(e.to_string())
            .with_details(json!({"free_bytes": e.free, "reserve_bytes": e.reserve}))
    })
}

/// In a cluster, sends the content key of `env`'s record to the other nodes and waits for
/// a majority before the block that needs it is proposed (docs/CLUSTER.md, "Keys").
async fn replicate_key(state: &AppState, env: &Envelope) -> Result<(), ApiError> {
    let (Some(cluster), Some(record_id)) = (&state.cluster, env.event.record_id()) else {
        return Ok(());
    };
    if env.event.clinical_fields().is_empty() {
        return Ok(());
    }
    cluster.replicate_key(record_id).await.map_err(|e| {
        ApiError::unavailable(
            "not_committed",
            format!(
                "the record's key did not reach a majority of the nodes; nothing was written: {e}"
            ),
            1,
        )
    })
}

/// In a cluster, fetches the content key of `record` from the other nodes when this node
/// lacks it (it was down when the leader sent it), so a read here does not wait for the
/// key keeper. A failure is left to the read, which answers 503 `key_unavailable`.
pub(crate) async fn ensure_key(state: &AppState, record: &RecordState) {
    let Some(cluster) = &state.cluster else {
        return;
    };
    if !record.metadata.is_sealed() {
        return;
    }
    if let Err(e) = cluster.ensure_record_key(&record.record_id).await {
        tracing::warn!(error = %e, "fetching a record's key from the other nodes");
    }
}

/// Refuses a write before the ledger when the projector has stopped for good: its
/// verdict would never come.
pub(crate) fn ensure_projecting(state: &AppState) -> Result<(), ApiError> {
    match state.projector.halted() {
        None => Ok(()),
        Some(why) => Err(ApiError::unavailable(
            "projector_stopped",
            format!("writes are refused: the views' projector stopped ({why}); see /readyz"),
            30,
        )),
    }
}

/// Why a submission has no acceptance to answer with, by what became of it.
pub(crate) enum NotAccepted {
    /// It never reached the ledger: invalid, too large, the queue full, shutting down, or
    /// the projector stopped.
    Refused(ApiError),
    /// It is in the ledger and the contract rejected it in commit order (409, the
    /// contract's code).
    Rejected(ApiError),
    /// Whether it is in the ledger (a failed block write), or its verdict (the views did
    /// not reach its block in time, 503), is not known.
    Unknown(ApiError),
}

impl From<NotAccepted> for ApiError {
    fn from(v: NotAccepted) -> ApiError {
        match v {
            NotAccepted::Refused(e) | NotAccepted::Rejected(e) | NotAccepted::Unknown(e) => e,
        }
    }
}

/// Waits until the views hold the receipt's block and reads the contract's verdict on the
/// transaction there.
/// Never [`NotAccepted::Refused`]: the transaction is in the ledger.
pub(crate) async fn verdict(state: &AppState, receipt: &Receipt) -> Result<(), NotAccepted> {
    let height = receipt.block_number + 1;
    let where_ = json!({"tx_id": receipt.tx_id.to_string(), "block_number": receipt.block_number,
        "position": receipt.position, "height": height});
    if let Err(e) = state.projector.reached(height, PROJECTED_WAIT).await {
        return Err(NotAccepted::Unknown(
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
            Err(NotAccepted::Rejected(
                ApiError::new(StatusCode::CONFLICT, code, r.message).with_details(details),
            ))
        }
        Err(e) => Err(NotAccepted::Unknown(store_error(e))),
    }
}

pub(crate) fn receipt_json(receipt: &Receipt, record_id: &str, version: u32) -> Value {
    json!({
        "tx_id": receipt.tx_id.to_string(),
        "record_id": record_id,
        "version": version,
        "block_number": receipt.block_number,
        "position": receipt.position,
        "height": receipt.block_number + 1,
    })
}
