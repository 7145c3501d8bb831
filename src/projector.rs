//! The projector: a thread that tails the ledger and applies each committed block to the
//! views, one block per atomic [`ViewBatch`](medledger_storage::views::ViewBatch) carrying
//! the new applied height, so a crash never applies a block twice or half. On start it
//! catches up from the store's height.
//!
//! It runs behind the writer and never blocks it: the orderer only [`nudges`] it after a
//! block is durable (a poll every [`POLL`] covers a missed nudge). Readers that need
//! their own write reflected (read-your-writes) call [`Projector::wait_for_height`].
//!
//! [`nudges`]: Projector::nudge

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use medledger_storage::views::project::Projection;
use medledger_storage::views::ViewStore;
use medledger_storage::Ledger;

/// How often the projector looks for new blocks when nobody nudges it.
pub const POLL: Duration = Duration::from_millis(20);
/// How long the projector waits before retrying after a store or ledger error.
const RETRY: Duration = Duration::from_millis(500);

/// How far the views trail the ledger.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Lag {
    /// Committed blocks not yet applied.
    pub blocks: u64,
    /// Seconds since the views were last caught up (0 when caught up).
    pub seconds: f64,
}

struct State {
    /// Blocks `0..applied` are in the views.
    applied: u64,
    /// When `applied` last equalled the ledger's height.
    caught_up_at: Instant,
    /// The last error, cleared by the next successful block.
    error: Option<String>,
    nudged: bool,
}

struct Shared {
    state: Mutex<State>,
    /// Signalled when `applied` grows (waiters) and on a nudge or stop (the thread).
    changed: Condvar,
    stop: AtomicBool,
    events: AtomicU64,
    rejected: AtomicU64,
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Waiting for a height timed out.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("the views reached height {reached}, not {wanted}, within the time allowed")]
pub struct WaitTimeout {
    pub wanted: u64,
    pub reached: u64,
}

/// The running projector.
pub struct Projector {
    ledger: Arc<Ledger>,
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Projector {
    /// Starts projecting `ledger` into `store` from the store's applied height.
    pub fn start(ledger: Arc<Ledger>, store: Arc<dyn ViewStore>) -> Result<Projector, String> {
        let applied = store
            .applied_height()
            .map_err(|e| format!("reading the views' height: {e}"))?;
        let tip = ledger.tip().height;
        if applied > tip {
            return Err(format!(
                "the views are at height {applied} but the ledger has only {tip} blocks: \
                 they belong to another ledger; rebuild them (`medledger rebuild`)"
            ));
        }
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                applied,
                caught_up_at: Instant::now(),
                error: None,
                nudged: false,
            }),
            changed: Condvar::new(),
            stop: AtomicBool::new(false),
            events: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
        });
        let thread = {
            let (ledger, shared) = (ledger.clone(), shared.clone());
            std::thread::Builder::new()
                .name("projector".into())
                .spawn(move || run(&ledger, store.as_ref(), &shared))
                .map_err(|e| format!("starting the projector thread: {e}"))?
        };
        Ok(Projector {
            ledger,
            shared,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Tells the projector a block was committed (cheap; call after every receipt).
    pub fn nudge(&self) {
        lock(&self.shared.state).nudged = true;
        self.shared.changed.notify_all();
    }

    /// Blocks `0..applied_height` are in the views.
    pub fn applied_height(&self) -> u64 {
        lock(&self.shared.state).applied
    }

    /// How far the views trail the ledger.
    pub fn lag(&self) -> Lag {
        let tip = self.ledger.tip().height;
        let state = lock(&self.shared.state);
        let blocks = tip.saturating_sub(state.applied);
        let seconds = if blocks == 0 {
            0.0
        } else {
            state.caught_up_at.elapsed().as_secs_f64()
        };
        Lag { blocks, seconds }
    }

    /// Events applied and rejected since start.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.shared.events.load(Ordering::Relaxed),
            self.shared.rejected.load(Ordering::Relaxed),
        )
    }

    /// The last error the projector hit, if it has not recovered since (it retries).
    pub fn error(&self) -> Option<String> {
        lock(&self.shared.state).error.clone()
    }

    /// Waits until the views reflect blocks `0..height`, at most `timeout`.
    pub fn wait_for_height(&self, height: u64, timeout: Duration) -> Result<(), WaitTimeout> {
        let deadline = Instant::now() + timeout;
        let mut state = lock(&self.shared.state);
        while state.applied < height {
            let now = Instant::now();
            if now >= deadline || self.shared.stop.load(Ordering::Acquire) {
                return Err(WaitTimeout {
                    wanted: height,
                    reached: state.applied,
                });
            }
            state = self
                .shared
                .changed
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        Ok(())
    }

    /// Stops the thread after the block it is applying. Blocks already applied stay; the
    /// next start catches up from there.
    pub fn shutdown(&self) {
        self.shared.stop.store(true, Ordering::Release);
        self.shared.changed.notify_all();
        let handle = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(handle) = handle {
            let _ = handle.join();
        }
    }
}

impl Drop for Projector {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn run(ledger: &Ledger, store: &dyn ViewStore, shared: &Shared) {
    while !shared.stop.load(Ordering::Acquire) {
        let applied = lock(&shared.state).applied;
        let tip = ledger.tip().height;
        if applied < tip {
            match apply(ledger, store, applied) {
                Ok((events, rejected)) => {
                    shared.events.fetch_add(events, Ordering::Relaxed);
                    shared.rejected.fetch_add(rejected, Ordering::Relaxed);
                    let mut state = lock(&shared.state);
                    state.applied = applied + 1;
                    state.error = None;
                    if state.applied >= ledger.tip().height {
                        state.caught_up_at = Instant::now();
                    }
                    drop(state);
                    shared.changed.notify_all();
                }
                Err(e) => {
                    tracing::error!(block = applied, error = %e, "projector: cannot apply block; retrying");
                    let mut state = lock(&shared.state);
                    state.error = Some(format!("block {applied}: {e}"));
                    let _ = shared.changed.wait_timeout(state, RETRY);
                }
            }
            continue;
        }
        let mut state = lock(&shared.state);
        state.caught_up_at = Instant::now();
        if !state.nudged && !shared.stop.load(Ordering::Acquire) {
            state = shared
                .changed
                .wait_timeout(state, POLL)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        state.nudged = false;
    }
}

/// Applies block `number` in one batch; returns (applied, rejected) transactions.
fn apply(ledger: &Ledger, store: &dyn ViewStore, number: u64) -> Result<(u64, u64), String> {
    let block = ledger
        .block(number)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("block {number} is not in the ledger"))?;
    let mut projection = Projection::new(store).map_err(|e| e.to_string())?;
    if projection.height() != number {
        return Err(format!(
            "the views are at height {}, expected {number}: another writer?",
            projection.height()
        ));
    }
    let outcome = projection
        .apply_block(number, block.txs.iter().map(|t| (t.as_slice(), None)))
        .map_err(|e| e.to_string())?;
    store
        .write(&projection.take_batch())
        .map_err(|e| e.to_string())?;
    Ok((u64::from(outcome.applied), u64::from(outcome.rejected)))
}
