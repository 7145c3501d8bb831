//! The projector: a thread that tails the ledger and applies each committed block to the
//! views, one block per atomic [`ViewBatch`](crate::ViewBatch) carrying
//! the new applied height, so a crash never applies a block twice or half. On start it
//! catches up from the store's height.
//!
//! It runs behind the writer and never blocks it: the orderer only [`nudges`] it after a
//! block is durable (a poll every [`POLL_INTERVAL`] covers a missed nudge). The contract
//! judges each transaction here, in commit order, and every write's answer waits for
//! that verdict ([`Projector::reached`]); readers that need a height reflected wait the
//! same way.
//!
//! The applied height is kept in one place, a tokio watch channel, and every wait for a
//! height waits on it: [`Projector::reached`] awaits it without holding a thread, and
//! [`Projector::wait_for_height`] (shutdown, tests) blocks its thread on the same
//! channel. The projector's condition variable only wakes the projector itself.
//!
//! The views are derived data, so their writes skip a write-ahead log: the projector
//! starts making them durable ([`ViewStore::flush_in_background`], which does not stall
//! the blocks behind it) at most every [`FLUSH_INTERVAL`], and the server flushes and
//! waits at shutdown. After a crash the store comes back at the height of its last flush,
//! with every view at that same height, and the projector replays the blocks since.
//!
//! [`nudges`]: Projector::nudge

use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::{Context, Poll, Wake, Waker};
use std::thread::{JoinHandle, Thread};
use std::time::{Duration, Instant};

use medledger_storage::{Ledger, StorageError};

use crate::changes::{Changes, Touched};
use crate::project::Projection;
use crate::{ViewError, ViewStore};

/// How often the projector looks for new blocks when nobody nudges it.
pub const POLL_INTERVAL: Duration = Duration::from_millis(20);
/// How long the projector waits before retrying after a store or ledger error; each
/// failure in a row doubles it, up to [`RETRY_INTERVAL_MAX`]. Nudges (every write sends
/// one) do not cut it short, so a failing store is not retried, and logged, at the rate
/// of writes.
const RETRY_INTERVAL: Duration = Duration::from_millis(250);
/// The longest wait between retries: what the views may trail once the cause is gone.
const RETRY_INTERVAL_MAX: Duration = Duration::from_secs(4);
/// How often the projector makes the views durable while it applies blocks: what a crash
/// can make it replay (about a second of blocks).
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(1);

/// How far the views trail the ledger.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Lag {
    /// Committed blocks not yet applied.
    pub blocks: u64,
    /// Seconds since the views were last caught up (0 when caught up).
    pub seconds: f64,
}

struct State {
    /// When the applied height last equalled the ledger's.
    caught_up_at: Instant,
    /// The last error, cleared by the next successful block.
    error: Option<String>,
}

struct Shared {
    state: Mutex<State>,
    /// Set by [`Projector::nudge`], taken by the thread before it looks at the ledger.
    nudged: AtomicBool,
    /// Wakes the projector's thread: signalled on a nudge or a stop.
    wake: Condvar,
    stop: AtomicBool,
    /// Set when an invariant breach stopped the thread ([`ProjectError::Invariant`]).
    halted: AtomicBool,
    events: AtomicU64,
    rejected: AtomicU64,
    /// The applied height: blocks `0..height` are in the views. Only the thread changes
    /// it, under the `state` lock (so [`Projector::lag`] reads it and `caught_up_at`
    /// together). Every wait for a height watches it: a request waiting for its verdict
    /// ([`Projector::reached`]) holds no thread.
    height: tokio::sync::watch::Sender<u64>,
}

/// Wakes the thread blocked in [`Projector::wait_for_height`] when the height changes.
struct Unpark(Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Why the projector did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("reading the views' height: {0}")]
    Height(ViewError),
    /// The views hold more blocks than the ledger: they are another ledger's.
    #[error(
        "the views are at height {applied} but the ledger has only {tip} blocks: \
         they belong to another ledger; rebuild them (`medledger rebuild`)"
    )]
    AheadOfLedger { applied: u64, tip: u64 },
    #[error("starting the projector thread: {0}")]
    Thread(std::io::Error),
}

/// Why a block could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum ProjectError {
    /// Reading the block or writing the views failed in a way that may pass (I/O, a full
    /// disk): the projector retries every `RETRY_INTERVAL` (500 ms).
    #[error("{0}")]
    Transient(String),
    /// An invariant is broken (the views belong to another ledger or layout, a stored
    /// value is malformed, the ledger holds a corrupt block or lacks one its tip counts):
    /// retrying cannot help, so the projector stops and `/readyz` says why.
    #[error("{0}")]
    Invariant(String),
}

impl From<ViewError> for ProjectError {
    fn from(e: ViewError) -> Self {
        match e {
            ViewError::Backend(_) => ProjectError::Transient(e.to_string()),
            ViewError::HeightRegression { .. }
            | ViewError::Malformed { .. }
            | ViewError::Layout { .. } => ProjectError::Invariant(e.to_string()),
        }
    }
}

impl From<StorageError> for ProjectError {
    fn from(e: StorageError) -> Self {
        match e {
            StorageError::Io { .. }
            | StorageError::BlockRead { .. }
            | StorageError::Index(_)
            | StorageError::NoSpace { .. } => ProjectError::Transient(e.to_string()),
            StorageError::Poisoned(_)
            | StorageError::CorruptBlock { .. }
            | StorageError::IndexMismatch { .. }
            | StorageError::DoesNotExtend { .. }
            | StorageError::InUse { .. }
            | StorageError::BlockTooLarge { .. }
            | StorageError::InvalidOption(_) => ProjectError::Invariant(e.to_string()),
        }
    }
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
    /// The ledger's height when the projector started: until the views reach it they
    /// lack blocks that were acknowledged before the start (see [`Projector::caught_up_with_start`]).
    start_height: u64,
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
    /// When each timeline last changed (raised after each block's rows are written).
    changes: Arc<Changes>,
}

impl Projector {
    /// Starts projecting `ledger` into `store` from the store's applied height, flushing
    /// the views every [`FLUSH_INTERVAL`].
    pub fn start(ledger: Arc<Ledger>, store: Arc<dyn ViewStore>) -> Result<Projector, StartError> {
        Self::start_with_flush_interval(ledger, store, FLUSH_INTERVAL)
    }

    /// [`Projector::start`] with another flush interval (tests that kill the process
    /// within a second use a shorter one).
    pub fn start_with_flush_interval(
        ledger: Arc<Ledger>,
        store: Arc<dyn ViewStore>,
        flush_interval: Duration,
    ) -> Result<Projector, StartError> {
        let applied = store.applied_height().map_err(StartError::Height)?;
        let tip = ledger.tip().height;
        if applied > tip {
            return Err(StartError::AheadOfLedger { applied, tip });
        }
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                caught_up_at: Instant::now(),
                error: None,
            }),
            nudged: AtomicBool::new(false),
            wake: Condvar::new(),
            stop: AtomicBool::new(false),
            halted: AtomicBool::new(false),
            events: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            height: tokio::sync::watch::Sender::new(applied),
        });
        let changes = Arc::new(Changes::new(applied));
        let thread = {
            let (ledger, shared, changes) = (ledger.clone(), shared.clone(), changes.clone());
            std::thread::Builder::new()
                .name("projector".into())
                .spawn(move || run(&ledger, store.as_ref(), &shared, &changes, flush_interval))
                .map_err(StartError::Thread)?
        };
        Ok(Projector {
            ledger,
            start_height: tip,
            shared,
            thread: Mutex::new(Some(thread)),
            changes,
        })
    }

    /// Tells the projector a block was committed (cheap; call after every receipt: only
    /// the first nudge since the thread last looked takes the lock and wakes it).
    pub fn nudge(&self) {
        if !self.shared.nudged.swap(true, Ordering::AcqRel) {
            // Taking the lock orders this wake-up after the thread's check of `nudged`.
            drop(lock(&self.shared.state));
            self.shared.wake.notify_all();
        }
    }

    /// When each timeline last changed, for HTTP validators.
    pub fn changes(&self) -> &Changes {
        &self.changes
    }

    /// Blocks `0..applied_height` are in the views.
    pub fn applied_height(&self) -> u64 {
        *self.shared.height.borrow()
    }

    /// Whether the views hold every block the ledger held when the projector started
    /// (after a restart, the blocks since the views' last flush are replayed first).
    pub fn caught_up_with_start(&self) -> bool {
        self.applied_height() >= self.start_height
    }

    /// The ledger's height when the projector started.
    pub fn start_height(&self) -> u64 {
        self.start_height
    }

    /// How far the views trail the ledger.
    pub fn lag(&self) -> Lag {
        let tip = self.ledger.tip().height;
        let state = lock(&self.shared.state);
        let blocks = tip.saturating_sub(*self.shared.height.borrow());
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

    /// Why the projector stopped for good (an invariant breach), if it did: no verdict
    /// will come until the server is restarted (and the views rebuilt, if they are at
    /// fault).
    pub fn halted(&self) -> Option<String> {
        self.shared
            .halted
            .load(Ordering::Acquire)
            .then(|| self.error().unwrap_or_default())
    }

    /// The last error the projector hit, if it has not recovered since (it retries).
    pub fn error(&self) -> Option<String> {
        lock(&self.shared.state).error.clone()
    }

    /// Waits until the views reflect blocks `0..height`, at most `timeout`, blocking the
    /// thread; gives up at once when the projector is shut down.
    ///
    /// It waits on the height's watch channel, as [`Projector::reached`] does, polling
    /// the same future by hand and parking the thread between wake-ups (the channel needs
    /// no runtime): one record of the height and one way to wait for it.
    ///
    /// The future is polled outside tokio's cooperative budget: called from async code
    /// (the server's shutdown, tests) whose task has spent its budget, tokio would answer
    /// every poll "not yet" and leave the wake-up to a scheduler this thread blocks, and
    /// the wait would run out its timeout with the height long reached.
    pub fn wait_for_height(&self, height: u64, timeout: Duration) -> Result<(), WaitTimeout> {
        let deadline = Instant::now() + timeout;
        let mut rx = self.shared.height.subscribe();
        let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
        let mut cx = Context::from_waker(&waker);
        let mut reached = pin!(tokio::task::coop::unconstrained(
            rx.wait_for(|h| *h >= height)
        ));
        loop {
            if let Poll::Ready(result) = reached.as_mut().poll(&mut cx) {
                // An error is the sender gone, which lives as long as `self`.
                if result.is_ok() {
                    return Ok(());
                }
                break;
            }
            let now = Instant::now();
            if now >= deadline || self.shared.stop.load(Ordering::Acquire) {
                break;
            }
            // A wake-up between the poll and here is not lost: it leaves the thread's
            // token, and this returns at once. Spurious returns just poll again.
            std::thread::park_timeout(deadline - now);
        }
        Err(WaitTimeout {
            wanted: height,
            reached: self.applied_height(),
        })
    }

    /// [`Projector::wait_for_height`] for async callers: waits without holding a thread.
    pub async fn reached(&self, height: u64, timeout: Duration) -> Result<(), WaitTimeout> {
        let mut rx = self.shared.height.subscribe();
        let waited = tokio::time::timeout(timeout, async {
            rx.wait_for(|h| *h >= height).await.map(|_| ())
        })
        .await;
        match waited {
            Ok(Ok(())) => Ok(()),
            _ => Err(WaitTimeout {
                wanted: height,
                reached: *rx.borrow(),
            }),
        }
    }

    /// Stops the thread after the block it is applying. Blocks already applied stay; the
    /// next start catches up from there.
    pub fn shutdown(&self) {
        self.shared.stop.store(true, Ordering::Release);
        self.shared.wake.notify_all();
        // Wakes every watcher of the height without changing it: those blocked in
        // `wait_for_height` see the stop and give up.
        self.shared.height.send_modify(|_| {});
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

fn run(
    ledger: &Ledger,
    store: &dyn ViewStore,
    shared: &Shared,
    changes: &Changes,
    flush_interval: Duration,
) {
    // Blocks applied since the last flush, and when that was.
    let mut unflushed = false;
    let mut flushed_at = Instant::now();
    let mut retry = RETRY_INTERVAL;
    while !shared.stop.load(Ordering::Acquire) {
        shared.nudged.store(false, Ordering::Release);
        if unflushed && flushed_at.elapsed() >= flush_interval {
            if let Err(e) = store.flush_in_background() {
                tracing::error!(error = %e, retry_in_ms = retry.as_millis() as u64, "projector: cannot flush the views; retrying");
                lock(&shared.state).error = Some(format!("flushing the views: {e}"));
                back_off(shared, &mut retry);
                continue;
            }
            unflushed = false;
            flushed_at = Instant::now();
        }
        let applied = *shared.height.borrow();
        let tip = ledger.tip().height;
        if applied < tip {
            match apply(ledger, store, applied) {
                Ok((events, rejected, touched)) => {
                    // After the rows are written, before anyone sees the new height.
                    changes.raise(&touched, applied + 1);
                    unflushed = true;
                    shared.events.fetch_add(events, Ordering::Relaxed);
                    shared.rejected.fetch_add(rejected, Ordering::Relaxed);
                    let mut state = lock(&shared.state);
                    // Wakes every waiter for this height, async or blocked.
                    shared.height.send_replace(applied + 1);
                    state.error = None;
                    retry = RETRY_INTERVAL;
                    if applied + 1 >= ledger.tip().height {
                        state.caught_up_at = Instant::now();
                    }
                }
                Err(ProjectError::Transient(e)) => {
                    tracing::error!(block = applied, error = %e, retry_in_ms = retry.as_millis() as u64, "projector: cannot apply block; retrying");
                    lock(&shared.state).error = Some(format!("block {applied}: {e}"));
                    back_off(shared, &mut retry);
                }
                Err(ProjectError::Invariant(e)) => {
                    tracing::error!(block = applied, error = %e, "projector: invariant broken; stopped");
                    lock(&shared.state).error = Some(format!("stopped at block {applied}: {e}"));
                    shared.halted.store(true, Ordering::Release);
                    break;
                }
            }
            continue;
        }
        let mut state = lock(&shared.state);
        state.caught_up_at = Instant::now();
        if !shared.nudged.load(Ordering::Acquire) && !shared.stop.load(Ordering::Acquire) {
            // Idle: wake for a nudge or the poll (which also looks for a flush due).
            drop(shared.wake.wait_timeout(state, POLL_INTERVAL));
        }
    }
    if unflushed {
        if let Err(e) = store.flush() {
            tracing::error!(error = %e, "projector: cannot flush the views at shutdown");
        }
    }
}

/// Waits `retry` (or until the projector stops), whatever nudges arrive, and doubles it
/// for the next failure in a row.
fn back_off(shared: &Shared, retry: &mut Duration) {
    let until = Instant::now() + *retry;
    *retry = (*retry * 2).min(RETRY_INTERVAL_MAX);
    let mut state = lock(&shared.state);
    while !shared.stop.load(Ordering::Acquire) {
        let now = Instant::now();
        if now >= until {
            return;
        }
        state = match shared.wake.wait_timeout(state, until - now) {
            Ok((guard, _)) => guard,
            Err(poisoned) => poisoned.into_inner().0,
        };
    }
}

/// Applies block `number` in one batch; returns the applied and rejected transactions
/// and the timelines the block changed.
fn apply(
    ledger: &Ledger,
    store: &dyn ViewStore,
    number: u64,
) -> Result<(u64, u64, Touched), ProjectError> {
    let frame = ledger.block_frame(number)?.ok_or_else(|| {
        ProjectError::Invariant(format!(
            "block {number} is below the tip but not in the ledger"
        ))
    })?;
    let mut projection = Projection::new(store)?;
    if projection.height() != number {
        return Err(ProjectError::Invariant(format!(
            "the views are at height {}, expected {number}: another writer?",
            projection.height()
        )));
    }
    let outcome = projection.apply_block(number, frame.txs())?;
    let mut batch = projection.take_batch()?;
    batch.sort_by_key();
    store.write(&batch)?;
    let touched = projection.take_touched();
    Ok((
        u64::from(outcome.applied),
        u64::from(outcome.rejected),
        touched,
    ))
}
