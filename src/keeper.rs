//! The key keeper: makes every node's key store follow what its ledger says.
//!
//! It reads the blocks the views have applied, in order, and
//! - for every erasure the contract accepted, destroys the record's content key and the
//!   data keys of its payloads (the erase route does it at once; the keeper finishes an
//!   erasure a crash cut short, and on a cluster's other nodes it is how erasure reaches
//!   their key stores);
//! - in a cluster, for every record event sealed under a key this node lacks (it was
//!   down when the leader sent the key), fetches the key from the other nodes; and for
//!   every accepted creation or amendment whose payload it lacks, fetches the payload:
//!   a majority held it when the record was acknowledged, every node holds it in time.
//!
//! Its progress is a height in `<data_dir>/keeper.height`, written after each pass (not
//! synced: after a crash it repeats a pass, and every step is idempotent).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use actix_web::web;
use medledger_chaincode::envelope::Subject;
use medledger_chaincode::{Envelope, Event};
use medledger_views::query::Views;

use crate::api::AppState;
use crate::cluster::{KeyAnswer, PayloadFetch};

/// The keeper's progress file in the data dir.
pub const KEEPER_HEIGHT_FILE: &str = "keeper.height";
/// How often it looks for new blocks.
const POLL: Duration = Duration::from_millis(100);
/// Blocks read per pass.
const BLOCKS_PER_PASS: u64 = 1_000;

/// The running keeper; stopped by [`Keeper::stop`] or when dropped.
pub struct Keeper {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Keeper {
    /// Starts the keeper over `state`'s ledger, views and key store.
    pub fn start(state: web::Data<AppState>, data_dir: PathBuf) -> std::io::Result<Keeper> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("medledger-keeper".into())
            .spawn(move || run(&state, data_dir.join(KEEPER_HEIGHT_FILE), &flag))?;
        Ok(Keeper {
            stop,
            thread: Some(thread),
        })
    }

    /// Stops the keeper and waits for it (it ends its current step first).
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Keeper {
    fn drop(&mut self) {
        self.stop();
    }
}

fn run(state: &AppState, progress: PathBuf, stop: &AtomicBool) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "the key keeper could not start");
            return;
        }
    };
    let mut done: u64 = std::fs::read_to_string(&progress)
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(0);
    while !stop.load(Ordering::Acquire) {
        let applied = state.projector.applied_height();
        if done >= applied {
            std::thread::sleep(POLL);
            continue;
        }
        let to = applied.min(done + BLOCKS_PER_PASS);
        match runtime.block_on(pass(state, done, to, stop)) {
            Ok(reached) => {
                done = reached;
                if let Err(e) = std::fs::write(&progress, done.to_string()) {
                    tracing::warn!(error = %e, "the key keeper could not save its progress");
                }
            }
            Err(e) => {
                // Tried again at the next pass; nothing after the failed block is skipped.
                tracing::warn!(error = %e, "the key keeper will retry");
                std::thread::sleep(POLL * 10);
            }
        }
    }
}

/// Keeps the keys of blocks `from..to`; the height reached (`to` unless stopped).
async fn pass(state: &AppState, from: u64, to: u64, stop: &AtomicBool) -> Result<u64, String> {
    for number in from..to {
        if stop.load(Ordering::Acquire) {
            return Ok(number);
        }
        let Some(block) = state.ledger.block(number).map_err(|e| e.to_string())? else {
            return Ok(number);
        };
        for (position, tx) in block.txs.iter().enumerate() {
            // Only a record's events name keys or payloads; a read's is passed over
            // without decoding it.
            if !matches!(Envelope::subject_of(tx), Some(Subject::Record(_))) {
                continue;
            }
            let Ok(env) = Envelope::decode(tx) else {
                continue; // the projector recorded it as undecodable
            };
            keep(state, &env, number, position as u32).await?;
        }
    }
    Ok(to)
}

async fn keep(state: &AppState, env: &Envelope, block: u64, position: u32) -> Result<(), String> {
    let Some(record_id) = env.event.record_id() else {
        return Ok(());
    };
    if let Event::PayloadErased(_) = &env.event {
        if accepted(state, block, position)? {
            crate::api::erasure::destroy_record(state, record_id)
                .await
                .map_err(|e| e.message)?;
        }
        return Ok(());
    }
    if let Some(cluster) = &state.cluster {
        keep_payload(state, cluster, env, block, position).await?;
    }
    let sealed = env
        .event
        .clinical_fields()
        .iter()
        .any(|(_, v)| v.is_sealed());
    let Some(cluster) = &state.cluster else {
        return Ok(());
    };
    if !sealed {
        return Ok(());
    }
    match cluster.ensure_record_key(record_id).await? {
        Some(KeyAnswer::Wrapped(_)) => {
            tracing::info!(record_id, "fetched a record's key this node lacked");
        }
        Some(KeyAnswer::Absent) => {
            // A majority held it when its block was proposed; none answering now holds
            // it. Reads of the record here answer 503 key_unavailable.
            tracing::error!(record_id, "no other node holds this record's key");
        }
        Some(KeyAnswer::Erased) | None => {}
    }
    Ok(())
}

/// Whether the contract accepted the transaction at `position` of `block` (the views
/// record every rejection).
fn accepted(state: &AppState, block: u64, position: u32) -> Result<bool, String> {
    Ok(Views::new(state.views.as_ref())
        .rejection(block, position)
        .map_err(|e| e.to_string())?
        .is_none())
}

/// In a cluster, fetches the payload of an accepted creation or amendment when this node
/// lacks it.
async fn keep_payload(
    state: &AppState,
    cluster: &crate::cluster::Cluster,
    env: &Envelope,
    block: u64,
    position: u32,
) -> Result<(), String> {
    let payload = match &env.event {
        Event::RecordCreated(e) => e.payload.as_ref(),
        Event::RecordAmended(e) => e.payload.as_ref(),
        _ => None,
    };
    let Some(p) = payload else {
        return Ok(());
    };
    if !accepted(state, block, position)? {
        return Ok(()); // its payload was dropped with the submission
    }
    let Ok(root) = p.cid.parse() else {
        tracing::error!(block, position, "a record names an unreadable CID");
        return Ok(());
    };
    match cluster.ensure_payload(&root, &p.key_id).await? {
        PayloadFetch::Absent => {
            // A majority held it when its record was acknowledged; none answering now
            // holds it. Reads of it here answer 404 until one does.
            tracing::error!(block, position, "no other node holds this payload");
        }
        PayloadFetch::Held | PayloadFetch::Erased => {}
    }
    Ok(())
}
