//! Reconciling the payload store with the ledger (issue 23): payloads no record names.
//!
//! A `put` makes a payload's blocks, pin and key durable before its record is submitted,
//! so a crash in between, a submission refused whose payload could not be abandoned, or a
//! torn group commit leaves a pinned root or a live key that no transaction names: an
//! orphan. The reconcile reads every transaction of the ledger, strikes off the payload
//! (root CID and key id) of every record version, then unpins the roots and destroys the
//! keys left over.
//!
//! It must not run while a submission is in flight, or that submission's payload (stored,
//! its record not yet committed) would be taken for an orphan. `serve` runs it before the
//! HTTP server accepts a request; `medledger payloads reconcile` holds the ledger open,
//! whose index lock (RocksDB's `LOCK`) keeps a server off the data dir meanwhile.
//!
//! A transaction that does not decode stops the reconcile with an error naming it: a
//! reference it might hold cannot be ruled out, and destroying a key is final.

use medledger_chaincode::{Envelope, Event};
use medledger_payload::keystore::record_key_id;
use medledger_payload::{Cid, OrphanScan, PayloadError, Payloads, ReconcileReport};
use medledger_storage::{Ledger, StorageError};

/// Why a reconcile stopped (nothing was unpinned or destroyed unless it says so).
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// Reading the ledger failed.
    #[error("reading the ledger: {0}")]
    Ledger(#[from] StorageError),
    /// A transaction did not decode, so the payload it names (if any) is unknown.
    #[error("transaction {position} of block {block} does not decode: {reason}")]
    Decode {
        /// Its block.
        block: u64,
        /// Its position in the block.
        position: usize,
        /// The decoder's message.
        reason: String,
    },
    /// A record names a CID that does not parse, so it cannot be matched to a pin.
    #[error("transaction {position} of block {block} names an unreadable CID")]
    BadCid {
        /// Its block.
        block: u64,
        /// Its position in the block.
        position: usize,
    },
    /// The payload store failed.
    #[error("the payload store: {0}")]
    Payloads(#[from] PayloadError),
    /// The runtime the store's operations run on could not start.
    #[error("starting a runtime for the reconcile: {0}")]
    Runtime(std::io::Error),
}

/// Strikes off `scan`'s candidates every payload the ledger's transactions name; stops
/// reading early once none is left. Returns the blocks read.
pub fn strike_referenced(ledger: &Ledger, scan: &mut OrphanScan) -> Result<u64, ReconcileError> {
    let height = ledger.tip().height;
    for number in 0..height {
        if scan.is_empty() {
            return Ok(number);
        }
        let frame = ledger
            .block_frame(number)?
            .ok_or(StorageError::IndexMismatch {
                number,
                reason: "below the height but unreadable".into(),
            })?;
        for (position, bytes) in frame.txs().enumerate() {
            let envelope = Envelope::decode(bytes).map_err(|e| ReconcileError::Decode {
                block: number,
                position,
                reason: e.to_string(),
            })?;
            // Records' content keys are no candidates (KeyKind::Record), except those an
            // older version stored as payload keys: named by their record id, so any
            // event of the record strikes one off (the one that made the key may have
            // been refused by the contract and still be in the ledger; the key is kept
            // all the same, as the ledger holds text sealed under it).
            if let Some(record_id) = envelope.event.record_id() {
                scan.referenced_key(&record_key_id(record_id));
            }
            let payload = match &envelope.event {
                Event::RecordCreated(e) => e.payload.as_ref(),
                Event::RecordAmended(e) => e.payload.as_ref(),
                _ => None,
            };
            if let Some(payload) = payload {
                let root: Cid = payload.cid.parse().map_err(|_| ReconcileError::BadCid {
                    block: number,
                    position,
                })?;
                scan.referenced(&root, &payload.key_id);
            }
        }
    }
    Ok(height)
}

/// Reconciles `payloads` with `ledger`: unpins every pinned root and destroys every live
/// key no transaction names. Call it only while nothing submits (see the module
/// documentation). Runs the store's operations on a runtime of its own, on a thread of its
/// own, so it may be called from inside another runtime (as `Core::open` is in tests).
pub fn reconcile_payloads(
    ledger: &Ledger,
    payloads: &Payloads,
) -> Result<ReconcileReport, ReconcileError> {
    on_own_runtime(|runtime| {
        let mut scan = runtime.block_on(payloads.orphan_scan())?;
        strike_referenced(ledger, &mut scan)?;
        Ok(runtime.block_on(payloads.remove_orphans(scan))?)
    })
    .map_err(ReconcileError::Runtime)?
}

/// Runs `work` with a current-thread runtime of its own, on a thread of its own, so a
/// caller inside another runtime (tests, `Core::open`) may block on the payload store's
/// operations. Fails only if the runtime does not start.
pub fn on_own_runtime<T: Send>(
    work: impl FnOnce(&tokio::runtime::Runtime) -> T + Send,
) -> std::io::Result<T> {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                Ok(work(&runtime))
            })
            .join()
            .expect("a thread of the payload store's panicked")
    })
}
