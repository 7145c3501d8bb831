//! Block explorer routes (auditors and admins): the chain, blocks, transactions with
//! their validation outcome, activity, and (with the checkpoint key) proofs.
//!
//! Block and transaction lists never carry payload bytes or record metadata: a block
//! lists each transaction's id, type, size and hash. `GET /v1/tx/{id}` returns the whole
//! envelope (it holds record metadata), which only these roles may read.

use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Value};

use medledger_chaincode::{tx_hash, Envelope, Timestamp, TxId};
use medledger_storage::{Block, StorageError};

use super::auth::Caller;
use super::error::ApiError;
use super::AppState;
use crate::orderer::CutPolicy;

type Data = web::Data<AppState>;

/// Blocks in one page of `GET /v1/blocks`, at most.
pub const BLOCKS_PAGE_MAX: u64 = 100;
/// Buckets in one activity series, at most.
pub const ACTIVITY_BUCKETS_MAX: usize = 1_440;

pub(super) fn require_explorer(caller: &Caller) -> Result<(), ApiError> {
    if caller.may_explore() {
        Ok(())
    } else {
        Err(ApiError::forbidden(
            "the block explorer is for the auditor and admin roles",
        ))
    }
}

pub(super) fn storage_error(e: impl std::fmt::Display) -> ApiError {
    tracing::error!(error = %e, "explorer: storage error");
    ApiError::internal("the ledger could not be read")
}

/// A failed read of a block: a block that does not read (an I/O error, EIO from a
/// failing disk) or reads damaged is named, by number, with a code of its own; the log
/// keeps the file and offset, the answer only the block.
pub(super) fn block_read_error(e: StorageError) -> ApiError {
    let (code, number, what) = match &e {
        StorageError::BlockRead { number, .. } => {
            (BLOCK_UNREADABLE, *number, "could not be read from disk")
        }
        StorageError::CorruptBlock { number, .. } => (BLOCK_CORRUPT, *number, "is damaged on disk"),
        _ => return storage_error(e),
    };
    tracing::error!(error = %e, block = number, "a block of the ledger could not be read");
    ApiError::new(
        actix_web::http::StatusCode::INTERNAL_SERVER_ERROR,
        code,
        format!("block {number} {what}; the ledger's other blocks are unaffected"),
    )
    .with_details(json!({ "block": number }))
}

/// The code of a block that does not read (an I/O error).
pub const BLOCK_UNREADABLE: &str = "block_unreadable";
/// The code of a block found damaged.
pub const BLOCK_CORRUPT: &str = "block_corrupt";

fn hex32(h: &[u8; 32]) -> String {
    hex::encode(h)
}

fn time_text(ms: i64) -> String {
    Timestamp(ms).to_string()
}

/// A block's header fields and its transaction list (no metadata, no payload).
pub fn block_json(block: &Block) -> Value {
    let h = &block.header;
    let txs: Vec<Value> = block
        .txs
        .iter()
        .enumerate()
        .map(|(position, bytes)| {
            let (tx_id, kind, submitter) = match Envelope::decode(bytes) {
                Ok(env) => (
                    env.tx_id.to_string(),
                    env.event.kind().as_str(),
                    Some(env.submitter),
                ),
                Err(_) => (
                    Envelope::tx_id_of(bytes).map_or_else(String::new, |id| id.to_string()),
                    "undecodable",
                    None,
                ),
            };
            json!({
                "position": position,
                "tx_id": tx_id,
                "tx_hash": hex32(&tx_hash(bytes)),
                "type": kind,
                "size": bytes.len(),
                "submitter": submitter,
            })
        })
        .collect();
    json!({
        "number": h.number,
        "hash": hex32(&block.hash()),
        "prev_hash": hex32(&h.prev_hash),
        "data_hash": hex32(&h.data_hash),
        "timestamp": time_text(h.timestamp_ms),
        "timestamp_ms": h.timestamp_ms,
        "tx_count": h.tx_count,
        "cut_reason": h.cut_reason.as_str(),
        "byte_size": block.encoded_len(),
        "txs": txs,
    })
}

/// `GET /v1/chain`.
pub async fn chain(state: Data, caller: Caller) -> Result<HttpResponse, ApiError> {
    require_explorer(&caller)?;
    let tip = state.ledger.tip();
    let genesis = state.ledger.block(0).map_err(block_read_error)?;
    let prev_hash = if tip.height >= 2 {
        state
            .ledger
            .block(tip.height - 1)
            .map_err(storage_error)?
            .map(|b| hex32(&b.header.prev_hash))
    } else {
        None
    };
    let totals = state.explorer.snapshot().map_err(storage_error)?.totals();
    let (events, rejected) = state.projector.counts();
    let cutter = &state.orderer.config().cutter;
    Ok(HttpResponse::Ok().json(json!({
        "height": tip.height,
        "tip_hash": (tip.height > 0).then(|| hex32(&tip.tip_hash)),
        "tip_timestamp": (tip.height > 0).then(|| time_text(tip.tip_timestamp_ms)),
        "prev_hash": prev_hash,
        "genesis_hash": genesis.map(|b| hex32(&b.hash())),
        "totals": {
            "blocks": totals.blocks,
            "tx": totals.txs,
            "records": totals.records,
            "patients": totals.patients,
            "projected_events": events,
            "rejected_tx": rejected,
        },
        "cutter": {
            "batch_timeout_ms": cutter.batch_timeout.as_millis() as u64,
            "max_message_count": cutter.max_message_count,
            "preferred_max_bytes": cutter.preferred_max_bytes,
            "absolute_max_bytes": cutter.absolute_max_bytes,
            "cut_policy": match cutter.policy {
                CutPolicy::Strict => "strict",
                CutPolicy::Eager => "eager",
            },
        },
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlocksQuery {
    /// The first block listed (the newest when `order=desc`, the default).
    from: Option<u64>,
    limit: Option<u64>,
    order: Option<String>,
}

/// `GET /v1/blocks?from=N&limit=K&order=desc|asc`.
pub async fn blocks(
    state: Data,
    caller: Caller,
    q: web::Query<BlocksQuery>,
) -> Result<HttpResponse, ApiError> {
    require_explorer(&caller)?;
    let limit = q.limit.unwrap_or(20);
    if !(1..=BLOCKS_PAGE_MAX).contains(&limit) {
        return Err(ApiError::bad_request(
            "invalid_limit",
            format!("limit must be between 1 and {BLOCKS_PAGE_MAX}"),
        ));
    }
    let descending = match q.order.as_deref() {
        None | Some("desc") => true,
        Some("asc") => false,
        Some(_) => {
            return Err(ApiError::bad_request(
                "invalid_order",
                "order must be `desc` or `asc`",
            ))
        }
    };
    let height = state.ledger.tip().height;
    let numbers: Vec<u64> = if height == 0 {
        Vec::new()
    } else if descending {
        let from = q.from.unwrap_or(height - 1).min(height - 1);
        (0..=from).rev().take(limit as usize).collect()
    } else {
        let from = q.from.unwrap_or(0);
        (from..height).take(limit as usize).collect()
    };
    let mut items = Vec::with_capacity(numbers.len());
    for n in &numbers {
        if let Some(block) = state.ledger.block(*n).map_err(block_read_error)? {
            let mut v = block_json(&block);
            // The list is for browsing; a block's transactions are one more request away.
            v.as_object_mut().expect("object").remove("txs");
            items.push(v);
        }
    }
    let next = match (descending, numbers.last()) {
        (true, Some(&last)) if last > 0 => Some(last - 1),
        (false, Some(&last)) if last + 1 < height => Some(last + 1),
        _ => None,
    };
    Ok(HttpResponse::Ok().json(json!({"height": height, "blocks": items, "next_from": next})))
}

/// `GET /v1/blocks/{number}`.
pub async fn block(
    state: Data,
    caller: Caller,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    require_explorer(&caller)?;
    let text = path.into_inner();
    let number: u64 = text.parse().map_err(|_| {
        ApiError::bad_request(
            "invalid_block_number",
            "a block number is a decimal integer",
        )
    })?;
    match state.ledger.block(number).map_err(block_read_error)? {
        Some(b) => Ok(HttpResponse::Ok().json(block_json(&b))),
        None => Err(ApiError::not_found("block", &text)),
    }
}

fn parse_hash(text: &str, code: &'static str, what: &str) -> Result<[u8; 32], ApiError> {
    let mut out = [0u8; 32];
    if text.len() != 64 || hex::decode_to_slice(text, &mut out).is_err() {
        return Err(ApiError::bad_request(
            code,
            format!("{what} is 64 hex digits (32 bytes)"),
        ));
    }
    Ok(out)
}

/// `GET /v1/blocks/by-hash/{hex}`.
pub async fn block_by_hash(
    state: Data,
    caller: Caller,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    require_explorer(&caller)?;
    let text = path.into_inner().to_ascii_lowercase();
    let hash = parse_hash(&text, "invalid_hash", "a block hash")?;
    match state
        .ledger
        .block_by_hash(&hash)
        .map_err(block_read_error)?
    {
        Some(b) => Ok(HttpResponse::Ok().json(block_json(&b))),
        None => Err(ApiError::not_found("block", &text)),
    }
}

/// The transaction named by a path: where it is, and its block (read once); 400 for a
/// malformed id, 404 for an unknown one.
fn find_tx(
    state: &AppState,
    text: &str,
) -> Result<(medledger_storage::TxLocation, Block), ApiError> {
    let id = TxId::parse(text).ok_or_else(|| {
        ApiError::bad_request("invalid_tx_id", "a tx id is a UUID (8-4-4-4-12 hex digits)")
    })?;
    state
        .ledger
        .tx_with_block(&id.0)
        .map_err(block_read_error)?
        .ok_or_else(|| ApiError::not_found("transaction", text))
}

/// `GET /v1/tx/{tx_id}`: the envelope, where it is, and what the contract made of it.
pub async fn tx(
    state: Data,
    caller: Caller,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    require_explorer(&caller)?;
    let (loc, block) = find_tx(&state, &path.into_inner())?;
    let bytes = &block.txs[loc.position as usize];
    let envelope = Envelope::decode(bytes).map_err(storage_error)?;
    let validation = if state.projector.applied_height() <= loc.block {
        json!({"status": "pending", "reason": "the views have not reached this block yet"})
    } else {
        let views = medledger_views::query::Views::new(state.views.as_ref());
        match views
            .rejection(loc.block, loc.position)
            .map_err(storage_error)?
        {
            None => json!({"status": "valid"}),
            Some(r) => json!({"status": "rejected", "code": r.code, "message": r.message}),
        }
    };
    Ok(HttpResponse::Ok().json(json!({
        "tx_id": envelope.tx_id.to_string(),
        "tx_hash": hex32(&tx_hash(bytes)),
        "block_number": loc.block,
        "position": loc.position,
        "size": bytes.len(),
        "type": envelope.event.kind().as_str(),
        "submitter": envelope.submitter,
        "submitted_at": envelope.submitted_at.to_string(),
        "event": serde_json::to_value(&envelope.event).map_err(storage_error)?,
        "validation": validation,
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActivityQuery {
    /// `minute` or `hour`.
    bucket: Option<String>,
    /// How many buckets, ending now.
    buckets: Option<usize>,
}

/// `GET /v1/activity?bucket=minute|hour&buckets=N`: blocks and transactions per bucket.
pub async fn activity(
    state: Data,
    caller: Caller,
    q: web::Query<ActivityQuery>,
) -> Result<HttpResponse, ApiError> {
    require_explorer(&caller)?;
    let (bucket, bucket_ms) = match q.bucket.as_deref() {
        None | Some("minute") => ("minute", 60_000),
        Some("hour") => ("hour", 3_600_000),
        Some(_) => {
            return Err(ApiError::bad_request(
                "invalid_bucket",
                "bucket must be `minute` or `hour`",
            ))
        }
    };
    let buckets = q.buckets.unwrap_or(60);
    if !(1..=ACTIVITY_BUCKETS_MAX).contains(&buckets) {
        return Err(ApiError::bad_request(
            "invalid_buckets",
            format!("buckets must be between 1 and {ACTIVITY_BUCKETS_MAX}"),
        ));
    }
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    // Buckets end on a bucket boundary after now, so consecutive polls line up.
    let end_ms = (now_ms / bucket_ms + 1) * bucket_ms;
    let snapshot = state.explorer.snapshot().map_err(storage_error)?;
    let series: Vec<Value> = snapshot
        .activity(end_ms, bucket_ms, buckets)
        .into_iter()
        .map(|b| json!({"start": time_text(b.start_ms), "blocks": b.blocks, "tx": b.txs}))
        .collect();
    Ok(HttpResponse::Ok().json(json!({"bucket": bucket, "series": series})))
}

fn explorer_error(e: crate::explorer::ExplorerError) -> ApiError {
    use crate::explorer::{ChainTreeError, ExplorerError};
    match e {
        ExplorerError::NoBlocks => {
            ApiError::unavailable("no_blocks", "the ledger has no blocks yet", 1)
        }
        ExplorerError::Tree(ChainTreeError::SizeTooLarge { tree_size, size }) => {
            ApiError::bad_request(
                "invalid_range",
                format!("tree size {tree_size} is above the chain's {size} blocks"),
            )
        }
        ExplorerError::Tree(e) => ApiError::bad_request("invalid_range", e.to_string()),
        ExplorerError::Storage(e) => storage_error(e),
    }
}

/// `GET /v1/checkpoint`: the latest signed checkpoint of the whole chain.
pub async fn checkpoint(state: Data, caller: Caller) -> Result<HttpResponse, ApiError> {
    require_explorer(&caller)?;
    let snapshot = state.explorer.snapshot().map_err(storage_error)?;
    let c = state
        .explorer
        .latest_checkpoint(&snapshot)
        .map_err(explorer_error)?;
    Ok(HttpResponse::Ok().json(c))
}

/// `GET /v1/checkpoint/key`: the public key checkpoints are signed with. Public: an
/// auditor pins it once, out of band, and then trusts nothing else from the server.
pub async fn checkpoint_key(state: Data) -> HttpResponse {
    HttpResponse::Ok().json(state.explorer.key_doc())
}

/// `GET /v1/checkpoint/keys`: the key that signs now and every key rotated out (public
/// halves, with when each stopped signing), so a checkpoint signed before a rotation
/// verifies. Public, as `/v1/checkpoint/key`.
pub async fn checkpoint_keys(state: Data) -> Result<HttpResponse, ApiError> {
    let retired = state.explorer.retired_keys().map_err(|e| {
        tracing::error!(error = %e, "reading the retired checkpoint keys");
        ApiError::internal("the retired checkpoint keys could not be read")
    })?;
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "current": state.explorer.key_doc(),
        "retired": retired,
    })))
}

/// `POST /v1/checkpoint/rotate` (admins): a new checkpoint signing key; the old one's
/// public half joins `GET /v1/checkpoint/keys`. 409 `checkpoint_key_not_rotatable` in a
/// cluster (its key derives from the cluster secret).
pub async fn rotate_checkpoint_key(state: Data, caller: Caller) -> Result<HttpResponse, ApiError> {
    caller.admin_only("rotating the checkpoint key")?;
    if !state.explorer.key_is_rotatable() {
        return Err(ApiError::new(
            actix_web::http::StatusCode::CONFLICT,
            "checkpoint_key_not_rotatable",
            "the checkpoint key derives from the cluster secret",
        ));
    }
    let st = state.clone();
    let doc = web::block(move || st.explorer.rotate_key())
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
        .map_err(|e| {
            tracing::error!(error = %e, "checkpoint key rotation");
            ApiError::internal(
                "the checkpoint key rotation failed; the old key stays (see the log)",
            )
        })?;
    Ok(HttpResponse::Ok().json(doc))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsistencyQuery {
    from: u64,
    to: Option<u64>,
}

/// `GET /v1/checkpoint/consistency?from=N[&to=M]`: the RFC 9162 consistency proof between
/// the trees of N and M blocks (M: the whole chain), with both checkpoints signed.
pub async fn consistency(
    state: Data,
    caller: Caller,
    q: web::Query<ConsistencyQuery>,
) -> Result<HttpResponse, ApiError> {
    require_explorer(&caller)?;
    let snapshot = state.explorer.snapshot().map_err(storage_error)?;
    let to = q.to.unwrap_or(snapshot.height());
    if q.from == 0 || q.from > to || to > snapshot.height() {
        return Err(ApiError::bad_request(
            "invalid_range",
            format!(
                "need 1 <= from <= to <= {} (the chain's blocks); got from={} to={to}",
                snapshot.height(),
                q.from
            ),
        ));
    }
    let tree = snapshot.tree();
    let proof = tree
        .consistency_proof(q.from, to)
        .map_err(|e| explorer_error(crate::explorer::ExplorerError::Tree(e)))?;
    let from_root = tree.root(q.from).map_err(|e| explorer_error(e.into()))?;
    let to_root = tree.root(to).map_err(|e| explorer_error(e.into()))?;
    let doc = medledger_proof::build_consistency_proof(q.from, to, &from_root, &to_root, &proof)
        .map_err(|e| ApiError::internal(format!("consistency proof failed its own check: {e}")))?;
    let from_cp = state
        .explorer
        .checkpoint_of(&snapshot, q.from)
        .map_err(explorer_error)?;
    let to_cp = if to == snapshot.height() {
        state.explorer.latest_checkpoint(&snapshot)
    } else {
        state.explorer.checkpoint_of(&snapshot, to)
    }
    .map_err(explorer_error)?;
    Ok(HttpResponse::Ok().json(doc.with_checkpoints(from_cp, to_cp)))
}

/// `GET /v1/tx/{tx_id}/proof`: the tx's inclusion in its block's `data_hash`, the
/// header linking `data_hash` to the block hash, the block's inclusion in the chain
/// tree, and the signed checkpoint of that tree (docs/PROOFS.md).
pub async fn tx_proof(
    state: Data,
    caller: Caller,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    require_explorer(&caller)?;
    let (loc, block) = find_tx(&state, &path.into_inner())?;
    let snapshot = state.explorer.snapshot().map_err(storage_error)?;
    let checkpoint = state
        .explorer
        .latest_checkpoint(&snapshot)
        .map_err(explorer_error)?;
    let chain_path = snapshot
        .tree()
        .inclusion_proof(loc.block, checkpoint.tree_size)
        .map_err(|e| explorer_error(e.into()))?;
    let proof = medledger_proof::build_tx_proof(
        &block.header.encode(),
        &block.tx_hashes(),
        loc.position as usize,
        &chain_path,
        &checkpoint,
    )
    .map_err(|e| ApiError::internal(format!("tx proof failed its own check: {e}")))?;
    Ok(HttpResponse::Ok().json(proof))
}
