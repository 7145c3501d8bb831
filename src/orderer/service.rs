//! The orderer: a bounded submission queue, a cutter thread and a writer thread.
//!
//! ```text
//! submit() ──encode, hash, size check──▶ queue (bounded; full → Busy at once)
//!                                           │
//!                      cutter thread: Fabric rules + BatchTimeout timer + eager idle cut,
//!                      builds the block (number, prev_hash, Merkle root)
//!                                           │  at most MaxInflightBlocks cut but not durable
//!                      writer thread: append (write + fdatasync + index)
//!                                           │
//!                      acker thread: answer every submitter of the block
//! ```
//! The cutter builds block N+1 while the writer syncs block N, so under load blocks fill
//! during the previous fsync (group commit: one fsync covers every transaction in a
//! block). With the eager policy a lone submission is cut as soon as the writer is idle,
//! so it waits one fsync rather than BatchTimeout.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{bounded, unbounded, Receiver, Select, Sender, TryRecvError};
use tokio::sync::oneshot;

use medledger_chaincode::{tx_hash, DecodeError, Envelope, EventError, TxHash, TxId};
use medledger_storage::{Block, Hash, Ledger, StorageError, BLOCK_FORMAT};

use super::cutter::{Batch, ConfigError, CutPolicy, Cutter, CutterConfig};

/// Orderer settings: the cutter's knobs plus the bounds of its queues.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OrdererConfig {
    pub cutter: CutterConfig,
    /// Blocks cut but not yet durable; the cutter waits when this many are in flight
    /// (the flag `--max-inflight-blocks`, named like Fabric's knobs).
    pub inflight_blocks_max: usize,
    /// Submissions waiting to be cut; a full queue answers [`SubmitError::Busy`].
    pub queue_capacity: usize,
}

impl Default for OrdererConfig {
    fn default() -> Self {
        OrdererConfig {
            cutter: CutterConfig::default(),
            inflight_blocks_max: 4,
            queue_capacity: 65_536,
        }
    }
}

impl OrdererConfig {
    /// Checks every knob is in range.
    pub fn validate(&self) -> Result<(), OrdererError> {
        self.cutter.validate()?;
        if !(1..=INFLIGHT_BLOCKS_MAX).contains(&self.inflight_blocks_max) {
            return Err(OrdererError::InflightBlocks(self.inflight_blocks_max));
        }
        if !(1..=QUEUE_CAPACITY_MAX).contains(&self.queue_capacity) {
            return Err(OrdererError::QueueCapacity(self.queue_capacity));
        }
        Ok(())
    }
}

/// The most blocks that may be in flight (cut, not yet durable).
pub const INFLIGHT_BLOCKS_MAX: usize = 64;
/// The longest submission queue.
pub const QUEUE_CAPACITY_MAX: usize = 1 << 22;

/// Why the orderer did not start.
#[derive(Debug, thiserror::Error)]
pub enum OrdererError {
    /// A cutter knob is out of range.
    #[error(transparent)]
    Cutter(#[from] ConfigError),
    #[error("max_inflight_blocks must be between 1 and {INFLIGHT_BLOCKS_MAX}, not {0}")]
    InflightBlocks(usize),
    #[error("queue_capacity must be between 1 and {QUEUE_CAPACITY_MAX}, not {0}")]
    QueueCapacity(usize),
    /// The operating system refused a thread.
    #[error("cannot start the orderer's {thread} thread: {source}")]
    Thread {
        thread: &'static str,
        source: std::io::Error,
    },
}

/// Proof that a transaction is durable: where it is in the chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Receipt {
    pub tx_id: TxId,
    pub tx_hash: TxHash,
    pub block_number: u64,
    pub position: u32,
}

/// Why a submission was not committed.
#[derive(Clone, Debug, thiserror::Error)]
pub enum SubmitError {
    /// The encoded envelope is larger than AbsoluteMaxBytes (rejected at ingress).
    #[error("the transaction is {size} bytes, more than AbsoluteMaxBytes ({max})")]
    TooLarge { size: usize, max: u32 },
    /// A field breaks its limit (rejected at ingress, nothing written).
    #[error("invalid event: {0}")]
    Invalid(#[from] EventError),
    /// Clinical text in the clear: the block format written holds it only sealed
    /// (rejected at ingress, nothing written; `verify` would refuse the block).
    #[error("clinical text must be sealed before it is ordered: {0}")]
    Unsealed(DecodeError),
    /// The submission queue is full; try again shortly.
    #[error("the orderer is busy: the submission queue is full")]
    Busy,
    /// Writing the block failed; the ledger refuses writes until restarted. Whether
    /// this transaction reached the disk is unknown.
    #[error("the ledger could not commit the block: {0}")]
    Failed(Arc<StorageError>),
    /// The disk is full (or the block would eat into the space kept in reserve for the
    /// views and recovery): nothing was written, and the ledger takes writes again once
    /// space is freed. Try again later.
    #[error("{0}")]
    StorageFull(String),
    /// The block writer thread is gone (it panicked); nothing more is committed.
    /// Whether this transaction reached the disk is unknown.
    #[error("the ledger could not commit the block: the block writer stopped")]
    WriterStopped,
    /// The orderer has shut down.
    #[error("the orderer is shut down")]
    Closed,
    /// The cluster did not commit the block (this node is not the leader, or the block
    /// was ordered after another leader's); nothing was written. Try again.
    #[error("the block was not committed: {0}")]
    NotCommitted(String),
    /// The cluster's leadership changed, or no majority answered in time, while the
    /// block was in flight: it may still be committed. Read before writing again.
    #[error("whether the block was committed is not known: {0}")]
    Uncertain(String),
}

/// A block the sink made durable: its number and its size on disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Committed {
    pub number: u64,
    pub bytes: u64,
}

/// Why a sink did not commit a block.
#[derive(Debug)]
pub enum SinkError {
    /// The local ledger failed; it refuses writes until restarted.
    Storage(Arc<StorageError>),
    /// Not committed, and never will be ([`SubmitError::NotCommitted`]).
    NotCommitted(String),
    /// Perhaps committed ([`SubmitError::Uncertain`]).
    Uncertain(String),
}

impl From<SinkError> for SubmitError {
    fn from(e: SinkError) -> SubmitError {
        match e {
            SinkError::Storage(e) if matches!(*e, StorageError::NoSpace { .. }) => {
                SubmitError::StorageFull(e.to_string())
            }
            SinkError::Storage(e) => SubmitError::Failed(e),
            SinkError::NotCommitted(why) => SubmitError::NotCommitted(why),
            SinkError::Uncertain(why) => SubmitError::Uncertain(why),
        }
    }
}

/// Where the writer thread makes each cut block durable: the local ledger (one node),
/// or a cluster's Raft log (durable on a majority, then appended to every node's ledger).
pub trait BlockSink: Send + Sync + 'static {
    fn commit(&self, block: &Block) -> Result<Committed, SinkError>;
}

impl BlockSink for Ledger {
    fn commit(&self, block: &Block) -> Result<Committed, SinkError> {
        let receipt = self
            .append(block)
            .map_err(|e| SinkError::Storage(Arc::new(e)))?;
        Ok(Committed {
            number: receipt.number,
            bytes: u64::from(receipt.location.len),
        })
    }
}

/// Counters for metrics and benchmarks.
#[derive(Debug, Default)]
pub struct OrdererStats {
    pub submitted: AtomicU64,
    pub committed: AtomicU64,
    pub rejected_busy: AtomicU64,
    pub blocks: AtomicU64,
    /// Blocks by [`medledger_storage::CutReason`] byte (one counter per reason).
    pub blocks_by_reason: [AtomicU64; medledger_storage::CutReason::ALL.len()],
    pub block_bytes: AtomicU64,
    pub inflight_blocks: AtomicUsize,
    pub failed_blocks: AtomicU64,
    /// Time of each block append: write, fdatasync and index.
    pub append_seconds: AppendHistogram,
}

/// Upper bounds (seconds) of [`AppendHistogram`]'s buckets.
pub const APPEND_BUCKETS: [f64; 12] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 2.0,
];

/// A lock-free latency histogram (non-cumulative counts per bucket, plus an overflow
/// count, the total count and the sum in microseconds).
#[derive(Debug, Default)]
pub struct AppendHistogram {
    pub buckets: [AtomicU64; APPEND_BUCKETS.len()],
    pub count: AtomicU64,
    pub sum_micros: AtomicU64,
}

impl AppendHistogram {
    pub fn observe(&self, elapsed: std::time::Duration) {
        let secs = elapsed.as_secs_f64();
        if let Some(i) = APPEND_BUCKETS.iter().position(|b| secs <= *b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
    }
}

type Reply = oneshot::Sender<Result<Receipt, SubmitError>>;

struct Submission {
    bytes: Vec<u8>,
    hash: TxHash,
    tx_id: TxId,
    reply: Reply,
}

enum Msg {
    Submit(Submission),
    Shutdown,
}

struct Job {
    block: Block,
    hashes: Vec<Hash>,
    tx_ids: Vec<TxId>,
    replies: Vec<Reply>,
}

/// A running orderer. Cheap to share (`Arc`); [`Orderer::shutdown`] drains it.
pub struct Orderer {
    queue: Sender<Msg>,
    closed: AtomicBool,
    config: OrdererConfig,
    stats: Arc<OrdererStats>,
    ledger: Arc<Ledger>,
    threads: std::sync::Mutex<Vec<JoinHandle<()>>>,
}

impl Orderer {
    /// Starts the cutter and writer threads over an open ledger.
    pub fn start(ledger: Arc<Ledger>, config: OrdererConfig) -> Result<Orderer, OrdererError> {
        let sink: Arc<dyn BlockSink> = ledger.clone();
        Orderer::start_with(ledger, sink, false, config)
    }

    /// Starts the orderer with blocks committed through a cluster's `sink`: one block in
    /// flight at a time, each built on the ledger's tip as it is then (a block of an
    /// earlier leadership may have been committed, or ours refused, in between).
    pub fn start_replicated(
        ledger: Arc<Ledger>,
        sink: Arc<dyn BlockSink>,
        mut config: OrdererConfig,
    ) -> Result<Orderer, OrdererError> {
        config.inflight_blocks_max = 1;
        Orderer::start_with(ledger, sink, true, config)
    }

    fn start_with(
        ledger: Arc<Ledger>,
        sink: Arc<dyn BlockSink>,
        follow_tip: bool,
        config: OrdererConfig,
    ) -> Result<Orderer, OrdererError> {
        config.validate()?;
        let (queue, queue_rx) = bounded(config.queue_capacity);
        let (job_tx, job_rx) = bounded::<Job>(config.inflight_blocks_max);
        // One message per block done: whether it failed.
        let (done_tx, done_rx) = unbounded::<bool>();
        let stats = Arc::new(OrdererStats::default());
        let tip = ledger.tip();
        let cutter = CutterThread {
            cutter: Cutter::new(config.cutter.clone()),
            policy: config.cutter.policy,
            queue: queue_rx,
            jobs: job_tx,
            done: done_rx,
            inflight: 0,
            inflight_max: config.inflight_blocks_max,
            next_number: tip.height,
            prev_hash: tip.tip_hash,
            last_timestamp_ms: tip.tip_timestamp_ms,
            follow_tip,
            ledger: ledger.clone(),
            resync: false,
            stats: stats.clone(),
        };
        let (ack_tx, ack_rx) = unbounded::<(Job, Result<Committed, SubmitError>)>();
        let acker_stats = stats.clone();
        let writer_stats = stats.clone();
        let threads = vec![
            std::thread::Builder::new()
                .name("medledger-cutter".into())
                .spawn(move || cutter.run())
                .map_err(|source| OrdererError::Thread {
                    thread: "cutter",
                    source,
                })?,
            std::thread::Builder::new()
                .name("medledger-writer".into())
                .spawn(move || {
                    write_blocks(sink.as_ref(), !follow_tip, &job_rx, &ack_tx, &writer_stats)
                })
                .map_err(|source| OrdererError::Thread {
                    thread: "writer",
                    source,
                })?,
            std::thread::Builder::new()
                .name("medledger-acker".into())
                .spawn(move || acknowledge(&ack_rx, &done_tx, &acker_stats))
                .map_err(|source| OrdererError::Thread {
                    thread: "acker",
                    source,
                })?,
        ];
        Ok(Orderer {
            queue,
            closed: AtomicBool::new(false),
            config,
            stats,
            ledger,
            threads: std::sync::Mutex::new(threads),
        })
    }

    /// The settings in force.
    pub fn config(&self) -> &OrdererConfig {
        &self.config
    }

    /// Counters.
    pub fn stats(&self) -> &OrdererStats {
        &self.stats
    }

    /// Submissions waiting to be cut.
    pub fn queue_depth(&self) -> usize {
        self.queue.len()
    }

    /// The ledger the orderer appends to.
    pub fn ledger(&self) -> &Arc<Ledger> {
        &self.ledger
    }

    /// Checks, encodes and enqueues one envelope; the returned receiver yields the
    /// receipt once the block holding it is durable. Fails at once (nothing enqueued)
    /// when the envelope is invalid or too large, the queue is full, or the orderer is
    /// shut down.
    pub fn enqueue(
        &self,
        envelope: &Envelope,
    ) -> Result<oneshot::Receiver<Result<Receipt, SubmitError>>, SubmitError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(SubmitError::Closed);
        }
        envelope.check_limits()?;
        // The rule `verify` applies to every block read, applied before one is written.
        envelope
            .check_format(BLOCK_FORMAT)
            .map_err(SubmitError::Unsealed)?;
        let bytes = envelope.encode();
        let max = self.config.cutter.absolute_max_bytes;
        if bytes.len() > max as usize {
            return Err(SubmitError::TooLarge {
                size: bytes.len(),
                max,
            });
        }
        let (reply, rx) = oneshot::channel();
        let submission = Submission {
            hash: tx_hash(&bytes),
            bytes,
            tx_id: envelope.tx_id,
            reply,
        };
        match self.queue.try_send(Msg::Submit(submission)) {
            Ok(()) => {
                self.stats.submitted.fetch_add(1, Ordering::Relaxed);
                Ok(rx)
            }
            Err(crossbeam_channel::TrySendError::Full(_)) => {
                self.stats.rejected_busy.fetch_add(1, Ordering::Relaxed);
                Err(SubmitError::Busy)
            }
            Err(crossbeam_channel::TrySendError::Disconnected(_)) => Err(SubmitError::Closed),
        }
    }

    /// Submits one envelope and waits until it is durable.
    pub async fn submit(&self, envelope: &Envelope) -> Result<Receipt, SubmitError> {
        let rx = self.enqueue(envelope)?;
        rx.await.unwrap_or(Err(SubmitError::Closed))
    }

    /// Submits many envelopes; each gets its own outcome, in order (one may be rejected
    /// while the others commit).
    pub async fn submit_batch(&self, envelopes: &[Envelope]) -> Vec<Result<Receipt, SubmitError>> {
        let pending: Vec<_> = envelopes.iter().map(|e| self.enqueue(e)).collect();
        let mut out = Vec::with_capacity(pending.len());
        for p in pending {
            out.push(match p {
                Ok(rx) => rx.await.unwrap_or(Err(SubmitError::Closed)),
                Err(e) => Err(e),
            });
        }
        out
    }

    /// Stops accepting submissions, cuts and commits everything already queued, and
    /// waits for the threads. Idempotent.
    pub fn shutdown(&self) {
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        // The queue may be full; the cutter drains it, so a blocking send completes.
        let _ = self.queue.send(Msg::Shutdown);
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|p| p.into_inner()));
        for t in threads {
            let _ = t.join();
        }
    }
}

impl Drop for Orderer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

struct CutterThread {
    cutter: Cutter<Submission>,
    policy: CutPolicy,
    queue: Receiver<Msg>,
    jobs: Sender<Job>,
    done: Receiver<bool>,
    inflight: usize,
    inflight_max: usize,
    next_number: u64,
    prev_hash: Hash,
    last_timestamp_ms: i64,
    /// Replicated: each block is built on the ledger's tip as it is then.
    follow_tip: bool,
    /// The ledger whose tip blocks are built on (replicated: always; one node: after a
    /// failed block).
    ledger: Arc<Ledger>,
    /// A block failed: the next one is built on the ledger's tip, once none is in flight.
    resync: bool,
    stats: Arc<OrdererStats>,
}

/// Messages taken from the queue in one go before the idle check, so a burst fills
/// blocks instead of being cut one by one.
const DRAIN_BURST_MAX: usize = 8_192;
/// While the writer is busy, how often the cutter looks at the queue. Well under one
/// fsync, so a full block is ready when the writer is free.
const QUEUE_POLL: std::time::Duration = std::time::Duration::from_micros(250);

impl CutterThread {
    fn run(mut self) {
        // Select borrows the receivers; handles of its own leave `self` free to mutate.
        let (queue, done) = (self.queue.clone(), self.done.clone());
        loop {
            if self.inflight >= self.inflight_max {
                self.wait_done();
                continue;
            }
            if self.inflight > 0 {
                // The writer is busy: wait for it rather than for each submission (a
                // parked cutter costs every submitter a futex wake-up), and look at the
                // queue every QUEUE_POLL so count and byte cuts still happen promptly.
                let mut wake = Instant::now() + QUEUE_POLL;
                if let Some(deadline) = self.cutter.deadline() {
                    wake = wake.min(deadline);
                }
                match done.recv_deadline(wake) {
                    Ok(failed) => self.finish_one(failed),
                    Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
                    Err(crossbeam_channel::RecvTimeoutError::Disconnected) => self.inflight = 0,
                }
                if !self.take_queued() {
                    return self.drain();
                }
                self.fire_timer();
                self.cut_if_idle();
                continue;
            }
            // The writer is idle: wake for the first submission and cut at once (eager).
            let mut sel = Select::new();
            let q = sel.recv(&queue);
            let d = sel.recv(&done);
            let op = match self.cutter.deadline() {
                Some(deadline) => match sel.select_deadline(deadline) {
                    Ok(op) => op,
                    Err(_) => {
                        self.fire_timer();
                        continue;
                    }
                },
                None => sel.select(),
            };
            if op.index() == d {
                if let Ok(failed) = op.recv(&done) {
                    self.finish_one(failed);
                }
            } else {
                debug_assert_eq!(op.index(), q);
                if !self.take(op.recv(&queue).ok()) || !self.take_queued() {
                    return self.drain();
                }
            }
            self.cut_if_idle();
        }
    }

    /// Takes what is queued (up to a burst); false means shut down.
    fn take_queued(&mut self) -> bool {
        for _ in 0..DRAIN_BURST_MAX {
            match self.queue.try_recv() {
                Ok(m) => {
                    if !self.take(Some(m)) {
                        return false;
                    }
                }
                Err(TryRecvError::Empty) => return true,
                Err(TryRecvError::Disconnected) => return false,
            }
        }
        true
    }

    /// Cuts the pending batch if its BatchTimeout has expired.
    fn fire_timer(&mut self) {
        if let Some(batch) = self.cutter.on_timer(Instant::now()) {
            self.emit(batch);
        }
    }

    /// Eager policy: cut what is pending when the writer is idle and nothing is queued.
    fn cut_if_idle(&mut self) {
        if self.policy == CutPolicy::Eager && self.inflight == 0 && self.queue.is_empty() {
            if let Some(batch) = self.cutter.on_writer_idle() {
                self.emit(batch);
            }
        }
    }

    /// Handles one message; false means shut down.
    fn take(&mut self, msg: Option<Msg>) -> bool {
        match msg {
            Some(Msg::Submit(s)) => {
                self.order(s);
                true
            }
            Some(Msg::Shutdown) | None => false,
        }
    }

    /// Runs one submission through the cutter's rules and emits what they cut.
    fn order(&mut self, s: Submission) {
        let size = s.bytes.len() as u32;
        for batch in self.cutter.ordered(s, size, Instant::now()) {
            self.emit(batch);
        }
    }

    /// Shutdown: everything queued is cut and committed, then the writer is released.
    fn drain(mut self) {
        while let Ok(msg) = self.queue.try_recv() {
            if let Msg::Submit(s) = msg {
                self.order(s);
            }
        }
        if let Some(batch) = self.cutter.drain() {
            self.emit(batch);
        }
        while self.inflight > 0 {
            self.wait_done();
        }
        // Dropping `jobs` ends the writer; dropping `queue` answers any late submitter
        // with Closed (its reply sender is dropped unanswered).
    }

    fn wait_done(&mut self) {
        if let Ok(failed) = self.done.recv() {
            self.finish_one(failed);
        } else {
            // The writer is gone (it only exits when `jobs` is dropped): nothing is in flight.
            self.inflight = 0;
        }
    }

    fn finish_one(&mut self, failed: bool) {
        self.inflight -= 1;
        self.resync |= failed;
        self.stats
            .inflight_blocks
            .store(self.inflight, Ordering::Relaxed);
    }

    /// Builds the block for a cut batch and hands it to the writer.
    fn emit(&mut self, batch: Batch<Submission>) {
        while self.inflight >= self.inflight_max {
            self.wait_done();
        }
        let n = batch.messages.len();
        assert!(n > 0, "a cut batch is never empty");
        let mut txs = Vec::with_capacity(n);
        let mut hashes = Vec::with_capacity(n);
        let mut tx_ids = Vec::with_capacity(n);
        let mut replies = Vec::with_capacity(n);
        for s in batch.messages {
            txs.push(s.bytes);
            hashes.push(s.hash);
            tx_ids.push(s.tx_id);
            replies.push(s.reply);
        }
        let mut from_tip = self.follow_tip;
        if self.resync {
            // A block failed (a full disk): those built on it failed with it. Wait for
            // them, then build on what the ledger really holds.
            while self.inflight > 0 {
                self.wait_done();
            }
            self.resync = false;
            from_tip = true;
        }
        if from_tip {
            let tip = self.ledger.tip();
            self.next_number = tip.height;
            self.prev_hash = tip.tip_hash;
            self.last_timestamp_ms = self.last_timestamp_ms.max(tip.tip_timestamp_ms);
        }
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        // Block timestamps never go backwards, even if the wall clock does.
        let timestamp_ms = now_ms.max(self.last_timestamp_ms);
        let block = Block::new(
            self.next_number,
            self.prev_hash,
            timestamp_ms,
            batch.reason,
            txs,
            &hashes,
        );
        self.prev_hash = block.hash();
        self.next_number += 1;
        self.last_timestamp_ms = timestamp_ms;
        self.stats.blocks_by_reason[usize::from(batch.reason.as_u8())]
            .fetch_add(1, Ordering::Relaxed);
        self.inflight += 1;
        self.stats
            .inflight_blocks
            .store(self.inflight, Ordering::Relaxed);
        let job = Job {
            block,
            hashes,
            tx_ids,
            replies,
        };
        if let Err(crossbeam_channel::SendError(job)) = self.jobs.send(job) {
            // The writer thread is gone (it panicked): nothing will be committed.
            for r in job.replies {
                let _ = r.send(Err(SubmitError::WriterStopped));
            }
            self.inflight -= 1;
        }
    }
}

/// The writer thread: commit each block through the sink (one node: write + fdatasync +
/// index) and pass the outcome to the acker. It does nothing else, so the next block's
/// write starts as soon as the previous one is durable. A failed local append poisons
/// the ledger, which then fails every later block the same way; a full disk refuses the
/// block without poisoning, and with `pipelined` blocks the ones already built on the
/// refused block are answered as it was, untried (they cannot extend the chain), until
/// the cutter starts again from the ledger's tip.
fn write_blocks(
    sink: &dyn BlockSink,
    pipelined: bool,
    jobs: &Receiver<Job>,
    acks: &Sender<(Job, Result<Committed, SubmitError>)>,
    stats: &OrdererStats,
) {
    // The number of the block that failed last, and why.
    let mut failed: Option<(u64, SubmitError)> = None;
    for job in jobs {
        let number = job.block.header.number;
        if let Some((refused, why)) = &failed {
            if pipelined && number > *refused {
                let why = why.clone();
                if acks.send((job, Err(why))).is_err() {
                    return;
                }
                continue;
            }
        }
        failed = None;
        let started = std::time::Instant::now();
        let span = tracing::info_span!(
            "block.append",
            block = crate::telemetry::otel_int(job.block.header.number),
            txs = crate::telemetry::otel_int(job.block.txs.len() as u64)
        );
        let outcome = span.in_scope(|| sink.commit(&job.block));
        stats.append_seconds.observe(started.elapsed());
        let outcome = outcome.map_err(|e| {
            let e = SubmitError::from(e);
            match &e {
                SubmitError::StorageFull(_) => {
                    tracing::warn!(block = number, error = %e, "block refused")
                }
                _ => tracing::error!(block = number, error = %e, "block commit failed"),
            }
            e
        });
        if let Err(e) = &outcome {
            failed = Some((number, e.clone()));
        }
        if acks.send((job, outcome)).is_err() {
            return;
        }
    }
}

/// The acker thread: answers every submitter of a block once its append has returned
/// (so only after the fdatasync), frees the block, and tells the cutter one fewer block
/// is in flight. Waking thousands of submitters per second is real work; doing it here
/// keeps it off the writer's path between two fsyncs.
fn acknowledge(
    acks: &Receiver<(Job, Result<Committed, SubmitError>)>,
    done: &Sender<bool>,
    stats: &OrdererStats,
) {
    for (job, outcome) in acks {
        let count = job.replies.len() as u64;
        let failed = outcome.is_err();
        match outcome {
            Ok(receipt) => {
                for (pos, ((reply, tx_id), tx_hash)) in job
                    .replies
                    .into_iter()
                    .zip(job.tx_ids)
                    .zip(job.hashes)
                    .enumerate()
                {
                    let _ = reply.send(Ok(Receipt {
                        tx_id,
                        tx_hash,
                        block_number: receipt.number,
                        position: pos as u32,
                    }));
                }
                stats.blocks.fetch_add(1, Ordering::Relaxed);
                stats.committed.fetch_add(count, Ordering::Relaxed);
                stats
                    .block_bytes
                    .fetch_add(receipt.bytes, Ordering::Relaxed);
            }
            Err(why) => {
                for reply in job.replies {
                    let _ = reply.send(Err(why.clone()));
                }
                stats.failed_blocks.fetch_add(1, Ordering::Relaxed);
            }
        }
        if done.send(failed).is_err() {
            return;
        }
    }
}
