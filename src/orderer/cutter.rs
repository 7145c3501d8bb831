//! The block cutter: Hyperledger Fabric's block-cutting rules as a pure, deterministic
//! state machine, plus our `eager` policy.
//!
//! The rules are those of Fabric's `orderer/common/blockcutter/blockcutter.go`
//! (`Ordered`) and the BatchTimeout timer handling of
//! `orderer/consensus/etcdraft/chain.go`:
//!
//! 1. A message larger than `preferred_max_bytes` cuts the pending batch (if any, reason
//!    [`CutReason::Bytes`]) and then goes out alone (reason [`CutReason::Oversize`]).
//! 2. Otherwise, if the message would take the pending batch past `preferred_max_bytes`,
//!    the pending batch is cut first (reason [`CutReason::Bytes`]).
//! 3. The message is appended; at `max_message_count` messages the batch is cut (reason
//!    [`CutReason::Count`]).
//!
//! The timer starts when a batch becomes pending and is not re-armed while it runs (an
//! overflow cut keeps the old deadline); it stops whenever nothing is pending. When it
//! fires, the pending batch is cut (reason [`CutReason::Timeout`]).
//!
//! With [`CutPolicy::Eager`] the caller also reports when the block writer is idle and
//! no message is queued; the pending batch is then cut at once (reason
//! [`CutReason::Idle`]), so a lone submission waits one fsync rather than the timer.
//!
//! Nothing here reads a clock or starts a thread: the caller passes time in as
//! [`Instant`]s and decides when to call [`Cutter::on_timer`] (see [`Cutter::deadline`]).
//! The module depends on `std` only (and on the storage crate for [`CutReason`]).

use std::fmt;
use std::mem;
use std::time::{Duration, Instant};

/// Why a block was cut: the storage crate owns it, as it is a byte of the block header.
pub use medledger_storage::CutReason;

/// When, besides Fabric's own rules, a pending batch is cut.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum CutPolicy {
    /// Fabric exactly: only count, bytes, oversize and BatchTimeout cut a batch.
    Strict,
    /// Fabric's rules, plus [`Cutter::on_writer_idle`] cuts the pending batch at once.
    #[default]
    Eager,
}

/// The largest `max_message_count` [`CutterConfig::validate`] accepts.
pub const LIMIT_MAX_MESSAGE_COUNT: u32 = 100_000;
/// The largest `absolute_max_bytes` [`CutterConfig::validate`] accepts (64 MiB).
pub const LIMIT_ABSOLUTE_MAX_BYTES: u32 = 64 * 1024 * 1024;
// Every block the cutter may cut is one the ledger accepts: no more transactions than a
// block may hold, and its frame (header, then each transaction after its 4-byte length;
// at most AbsoluteMaxBytes of transactions, PreferredMaxBytes being no larger) within a
// segment frame's bound.
const _: () =
    assert!(LIMIT_MAX_MESSAGE_COUNT <= medledger_storage::ledger::block::BLOCK_TX_COUNT_MAX);
const _: () = assert!(
    medledger_storage::BLOCK_HEADER_LEN as u64
        + LIMIT_ABSOLUTE_MAX_BYTES as u64
        + 4 * LIMIT_MAX_MESSAGE_COUNT as u64
        <= medledger_storage::ledger::segment::FRAME_BODY_MAX
);

/// The longest `batch_timeout` [`CutterConfig::validate`] accepts (60 s).
pub const LIMIT_BATCH_TIMEOUT: Duration = Duration::from_secs(60);

/// The cutter's knobs (Fabric's `BatchTimeout` and `BatchSize` channel settings, plus
/// the cut policy). Only a config that passes [`CutterConfig::validate`] can build a
/// [`Cutter`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CutterConfig {
    /// BatchTimeout: a pending batch is cut at most this long after it became pending.
    pub batch_timeout: Duration,
    /// MaxMessageCount: a batch is cut when it holds this many messages.
    pub max_message_count: u32,
    /// PreferredMaxBytes: a batch of several messages never exceeds this many bytes; a
    /// larger message goes alone in its own batch.
    pub preferred_max_bytes: u32,
    /// AbsoluteMaxBytes: no message is larger (enforced at ingress, asserted here).
    pub absolute_max_bytes: u32,
    /// Whether an idle writer cuts the pending batch.
    pub policy: CutPolicy,
}

impl Default for CutterConfig {
    /// 10 ms, 500 messages, 2 MiB preferred, 10 MiB absolute, [`CutPolicy::Eager`].
    /// (Fabric's BatchTimeout default is 2 s; ours is far lower because every submitter
    /// waits for the block holding its transaction.)
    fn default() -> Self {
        CutterConfig {
            batch_timeout: Duration::from_millis(10),
            max_message_count: 500,
            preferred_max_bytes: 2 * 1024 * 1024,
            absolute_max_bytes: 10 * 1024 * 1024,
            policy: CutPolicy::Eager,
        }
    }
}

impl CutterConfig {
    /// Checks Fabric's channel-config rules (every knob > 0, `preferred_max_bytes <=
    /// absolute_max_bytes`) and our bounds (`max_message_count <=`
    /// [`LIMIT_MAX_MESSAGE_COUNT`], `absolute_max_bytes <=` [`LIMIT_ABSOLUTE_MAX_BYTES`],
    /// `batch_timeout <=` [`LIMIT_BATCH_TIMEOUT`]). Reports the first rule broken.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.batch_timeout.is_zero() {
            return Err(ConfigError::Zero {
                knob: "batch_timeout",
            });
        }
        if self.max_message_count == 0 {
            return Err(ConfigError::Zero {
                knob: "max_message_count",
            });
        }
        if self.preferred_max_bytes == 0 {
            return Err(ConfigError::Zero {
                knob: "preferred_max_bytes",
            });
        }
        if self.absolute_max_bytes == 0 {
            return Err(ConfigError::Zero {
                knob: "absolute_max_bytes",
            });
        }
        if self.preferred_max_bytes > self.absolute_max_bytes {
            return Err(ConfigError::PreferredAboveAbsolute {
                preferred_max_bytes: self.preferred_max_bytes,
                absolute_max_bytes: self.absolute_max_bytes,
            });
        }
        if self.max_message_count > LIMIT_MAX_MESSAGE_COUNT {
            return Err(ConfigError::TooLarge {
                knob: "max_message_count",
                value: u64::from(self.max_message_count),
                limit: u64::from(LIMIT_MAX_MESSAGE_COUNT),
                unit: "messages",
            });
        }
        if self.absolute_max_bytes > LIMIT_ABSOLUTE_MAX_BYTES {
            return Err(ConfigError::TooLarge {
                knob: "absolute_max_bytes",
                value: u64::from(self.absolute_max_bytes),
                limit: u64::from(LIMIT_ABSOLUTE_MAX_BYTES),
                unit: "bytes",
            });
        }
        if self.batch_timeout > LIMIT_BATCH_TIMEOUT {
            return Err(ConfigError::BatchTimeoutTooLong {
                batch_timeout: self.batch_timeout,
                limit: LIMIT_BATCH_TIMEOUT,
            });
        }
        Ok(())
    }
}

/// Why a [`CutterConfig`] was rejected; its `Display` names the knob and the limit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfigError {
    /// A knob that must be greater than zero is zero.
    Zero {
        /// The knob's field name in [`CutterConfig`].
        knob: &'static str,
    },
    /// `preferred_max_bytes` is larger than `absolute_max_bytes`.
    PreferredAboveAbsolute {
        /// The configured PreferredMaxBytes.
        preferred_max_bytes: u32,
        /// The configured AbsoluteMaxBytes.
        absolute_max_bytes: u32,
    },
    /// A numeric knob is above our bound.
    TooLarge {
        /// The knob's field name in [`CutterConfig`].
        knob: &'static str,
        /// The configured value.
        value: u64,
        /// The largest value accepted.
        limit: u64,
        /// The unit of `value` and `limit`, for the message.
        unit: &'static str,
    },
    /// `batch_timeout` is above [`LIMIT_BATCH_TIMEOUT`].
    BatchTimeoutTooLong {
        /// The configured BatchTimeout.
        batch_timeout: Duration,
        /// The longest BatchTimeout accepted.
        limit: Duration,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Zero { knob } => write!(f, "cutter config: {knob} must be greater than 0"),
            ConfigError::PreferredAboveAbsolute {
                preferred_max_bytes,
                absolute_max_bytes,
            } => write!(
                f,
                "cutter config: preferred_max_bytes ({preferred_max_bytes} bytes) must not \
                 exceed absolute_max_bytes ({absolute_max_bytes} bytes)"
            ),
            ConfigError::TooLarge {
                knob,
                value,
                limit,
                unit,
            } => write!(
                f,
                "cutter config: {knob} is {value} {unit}, above the limit of {limit} {unit}"
            ),
            ConfigError::BatchTimeoutTooLong {
                batch_timeout,
                limit,
            } => write!(
                f,
                "cutter config: batch_timeout is {batch_timeout:?}, above the limit of {limit:?}"
            ),
        }
    }
}

impl std::error::Error for ConfigError {}

/// A cut batch: messages in submission order and why it was cut.
///
/// A batch from [`Cutter`] is never empty, holds at most `max_message_count` messages,
/// and, if it holds more than one message, at most `preferred_max_bytes` bytes.
#[derive(Debug)]
pub struct Batch<M> {
    /// The messages, in the order they were passed to [`Cutter::ordered`].
    pub messages: Vec<M>,
    /// Why the batch was cut.
    pub reason: CutReason,
    /// The sum of the messages' sizes, in bytes.
    pub bytes: u64,
}

/// Fabric's block cutter plus the BatchTimeout timer and the eager policy.
///
/// Deterministic: its output depends only on the config and the sequence of calls and
/// `Instant`s passed in. Every message passed to [`Cutter::ordered`] comes out exactly
/// once, in submission order, in some [`Batch`]. Between calls, a batch is pending if
/// and only if the timer is running ([`Cutter::deadline`] is `Some`).
#[derive(Debug)]
pub struct Cutter<M> {
    config: CutterConfig,
    pending: Vec<M>,
    pending_bytes: u64,
    deadline: Option<Instant>,
}

/// Pending-batch capacity reserved up front, at most (a large `max_message_count` must
/// not allocate a huge vector for a batch that may hold one message).
const PENDING_CAPACITY_MAX: usize = 1024;

impl<M> Cutter<M> {
    /// A cutter with nothing pending and no timer running.
    ///
    /// # Panics
    /// If `config.validate()` fails.
    pub fn new(config: CutterConfig) -> Self {
        if let Err(e) = config.validate() {
            panic!("invalid block cutter config: {e}");
        }
        let pending = Vec::with_capacity(Self::pending_capacity(&config));
        Cutter {
            config,
            pending,
            pending_bytes: 0,
            deadline: None,
        }
    }

    /// The config the cutter was built with.
    pub fn config(&self) -> &CutterConfig {
        &self.config
    }

    /// Fabric's `Ordered(msg)` plus the etcdraft timer rule. `size` is the message's
    /// encoded size in bytes. Returns the 0, 1 or 2 batches cut, in order; the message
    /// is either in the last returned batch or pending.
    ///
    /// Afterwards the timer runs if and only if a batch is pending; a timer already
    /// running is not re-armed, so an overflow cut keeps the old deadline.
    ///
    /// # Panics
    /// If `size > absolute_max_bytes` (the caller rejects such messages at ingress).
    pub fn ordered(&mut self, msg: M, size: u32, now: Instant) -> Vec<Batch<M>> {
        assert!(
            size <= self.config.absolute_max_bytes,
            "message of {size} bytes exceeds absolute_max_bytes ({}); it must be rejected at ingress",
            self.config.absolute_max_bytes
        );
        let size_bytes = u64::from(size);
        let preferred_bytes = u64::from(self.config.preferred_max_bytes);
        let mut out = Vec::new();

        if size_bytes > preferred_bytes {
            // Rule 1: the pending batch first, then the message alone.
            if let Some(batch) = self.cut(CutReason::Bytes) {
                out.push(batch);
            }
            let alone = Batch {
                messages: vec![msg],
                reason: CutReason::Oversize,
                bytes: size_bytes,
            };
            Self::check_batch(&self.config, &alone);
            out.push(alone);
        } else {
            // Rule 2: cut the pending batch if the message would overflow it.
            if self.pending_bytes + size_bytes > preferred_bytes {
                if let Some(batch) = self.cut(CutReason::Bytes) {
                    out.push(batch);
                }
            }
            // Rule 3: append; cut at MaxMessageCount.
            self.pending.push(msg);
            self.pending_bytes += size_bytes;
            assert!(
                self.pending_bytes <= preferred_bytes,
                "pending batch of {} bytes exceeds preferred_max_bytes",
                self.pending_bytes
            );
            if self.pending.len() >= Self::max_count(&self.config) {
                if let Some(batch) = self.cut(CutReason::Count) {
                    out.push(batch);
                }
            }
        }

        // etcdraft: start the timer if a batch is pending and it is not running; stop it
        // if nothing is pending.
        if self.pending.is_empty() {
            self.deadline = None;
        } else if self.deadline.is_none() {
            // An unrepresentable deadline fires at once: the batch is cut early, never late.
            self.deadline = Some(now.checked_add(self.config.batch_timeout).unwrap_or(now));
        }
        self.check_state();
        assert!(out.len() <= 2, "one message cuts at most two batches");
        out
    }

    /// When the pending batch must be cut by the BatchTimeout timer; `None` if no timer
    /// is running (which is exactly when nothing is pending).
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// The timer fired. If a timer is running and `now >= deadline`, the timer stops and
    /// the pending batch is cut with reason [`CutReason::Timeout`] (an empty pending
    /// batch cuts nothing, like Fabric's "empty cut" warning). If `now` is before the
    /// deadline, or no timer is running, nothing changes and `None` is returned.
    pub fn on_timer(&mut self, now: Instant) -> Option<Batch<M>> {
        match self.deadline {
            Some(deadline) if now >= deadline => {
                self.deadline = None;
                let batch = self.cut(CutReason::Timeout);
                self.check_state();
                batch
            }
            _ => None,
        }
    }

    /// Eager policy only: the writer is idle and no message is queued, so the pending
    /// batch (if any) is cut with reason [`CutReason::Idle`] and the timer stops. With
    /// [`CutPolicy::Strict`] this never cuts and changes nothing.
    pub fn on_writer_idle(&mut self) -> Option<Batch<M>> {
        match self.config.policy {
            CutPolicy::Strict => None,
            CutPolicy::Eager => {
                self.deadline = None;
                let batch = self.cut(CutReason::Idle);
                self.check_state();
                batch
            }
        }
    }

    /// Shutdown: the pending batch (if any) is cut with reason [`CutReason::Drain`] and
    /// the timer stops. Afterwards nothing is pending.
    pub fn drain(&mut self) -> Option<Batch<M>> {
        self.deadline = None;
        let batch = self.cut(CutReason::Drain);
        self.check_state();
        batch
    }

    /// Messages in the pending batch.
    pub fn pending_count(&self) -> usize {
        self.pending.len()
    }

    /// Bytes in the pending batch (the sum of its messages' sizes).
    pub fn pending_bytes(&self) -> u64 {
        self.pending_bytes
    }

    /// Takes the pending batch, if it is not empty. Leaves the timer alone.
    fn cut(&mut self, reason: CutReason) -> Option<Batch<M>> {
        if self.pending.is_empty() {
            return None;
        }
        let capacity = Self::pending_capacity(&self.config);
        let batch = Batch {
            messages: mem::replace(&mut self.pending, Vec::with_capacity(capacity)),
            reason,
            bytes: mem::replace(&mut self.pending_bytes, 0),
        };
        Self::check_batch(&self.config, &batch);
        Some(batch)
    }

    /// The invariants of every batch the cutter returns.
    fn check_batch(config: &CutterConfig, batch: &Batch<M>) {
        let n = batch.messages.len();
        assert!(n > 0, "a cut batch is never empty");
        assert!(
            n <= Self::max_count(config),
            "a batch of {n} messages exceeds max_message_count ({})",
            config.max_message_count
        );
        if n > 1 {
            assert!(
                batch.bytes <= u64::from(config.preferred_max_bytes),
                "a batch of {n} messages and {} bytes exceeds preferred_max_bytes ({})",
                batch.bytes,
                config.preferred_max_bytes
            );
        } else {
            assert!(
                batch.bytes <= u64::from(config.absolute_max_bytes),
                "a single-message batch of {} bytes exceeds absolute_max_bytes ({})",
                batch.bytes,
                config.absolute_max_bytes
            );
        }
    }

    /// The invariants between calls.
    fn check_state(&self) {
        assert!(
            self.pending.is_empty() == self.deadline.is_none(),
            "the timer runs if and only if a batch is pending"
        );
        assert!(self.pending.len() < Self::max_count(&self.config));
        assert!(self.pending_bytes <= u64::from(self.config.preferred_max_bytes));
        assert!(!self.pending.is_empty() || self.pending_bytes == 0);
    }

    fn max_count(config: &CutterConfig) -> usize {
        usize::try_from(config.max_message_count).unwrap_or(usize::MAX)
    }

    fn pending_capacity(config: &CutterConfig) -> usize {
        Self::max_count(config).min(PENDING_CAPACITY_MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const POLICIES: [CutPolicy; 2] = [CutPolicy::Strict, CutPolicy::Eager];
    const TIMEOUT: Duration = Duration::from_millis(10);

    fn config(
        policy: CutPolicy,
        count: u32,
        preferred_bytes: u32,
        absolute_bytes: u32,
    ) -> CutterConfig {
        CutterConfig {
            batch_timeout: TIMEOUT,
            max_message_count: count,
            preferred_max_bytes: preferred_bytes,
            absolute_max_bytes: absolute_bytes,
            policy,
        }
    }

    /// A cutter with count 3, preferred 100 bytes, absolute 1000 bytes.
    fn small(policy: CutPolicy) -> Cutter<u32> {
        Cutter::new(config(policy, 3, 100, 1000))
    }

    fn ids(batch: &Batch<u32>) -> Vec<u32> {
        batch.messages.clone()
    }

    #[test]
    fn default_config() {
        let c = CutterConfig::default();
        assert_eq!(c.batch_timeout, Duration::from_millis(10));
        assert_eq!(c.max_message_count, 500);
        assert_eq!(c.preferred_max_bytes, 2 * 1024 * 1024);
        assert_eq!(c.absolute_max_bytes, 10 * 1024 * 1024);
        assert_eq!(c.policy, CutPolicy::Eager);
        assert_eq!(CutPolicy::default(), CutPolicy::Eager);
        assert_eq!(c.validate(), Ok(()));
    }

    #[test]
    fn validate_rejects_bad_configs() {
        let ok = CutterConfig::default();
        let cases: Vec<(CutterConfig, &str)> = vec![
            (
                CutterConfig {
                    batch_timeout: Duration::ZERO,
                    ..ok.clone()
                },
                "batch_timeout must be greater than 0",
            ),
            (
                CutterConfig {
                    max_message_count: 0,
                    ..ok.clone()
                },
                "max_message_count must be greater than 0",
            ),
            (
                CutterConfig {
                    preferred_max_bytes: 0,
                    ..ok.clone()
                },
                "preferred_max_bytes must be greater than 0",
            ),
            (
                CutterConfig {
                    absolute_max_bytes: 0,
                    ..ok.clone()
                },
                "absolute_max_bytes must be greater than 0",
            ),
            (
                CutterConfig {
                    preferred_max_bytes: 11,
                    absolute_max_bytes: 10,
                    ..ok.clone()
                },
                "preferred_max_bytes (11 bytes) must not exceed absolute_max_bytes (10 bytes)",
            ),
            (
                CutterConfig {
                    max_message_count: 100_001,
                    ..ok.clone()
                },
                "max_message_count is 100001 messages, above the limit of 100000 messages",
            ),
            (
                CutterConfig {
                    absolute_max_bytes: 64 * 1024 * 1024 + 1,
                    ..ok.clone()
                },
                "absolute_max_bytes is 67108865 bytes, above the limit of 67108864 bytes",
            ),
            (
                CutterConfig {
                    batch_timeout: Duration::from_millis(60_001),
                    ..ok.clone()
                },
                "batch_timeout is 60.001s, above the limit of 60s",
            ),
        ];
        for (c, message) in cases {
            let err = c.validate().expect_err(message);
            assert!(
                err.to_string().contains(message),
                "{err} should contain {message}"
            );
            let _: &dyn std::error::Error = &err;
        }
        let edge = CutterConfig {
            batch_timeout: LIMIT_BATCH_TIMEOUT,
            max_message_count: LIMIT_MAX_MESSAGE_COUNT,
            preferred_max_bytes: LIMIT_ABSOLUTE_MAX_BYTES,
            absolute_max_bytes: LIMIT_ABSOLUTE_MAX_BYTES,
            policy: CutPolicy::Strict,
        };
        assert_eq!(edge.validate(), Ok(()));
        let one = config(CutPolicy::Strict, 1, 1, 1);
        assert_eq!(one.validate(), Ok(()));
    }

    #[test]
    #[should_panic(expected = "invalid block cutter config")]
    fn new_panics_on_invalid_config() {
        let _ = Cutter::<u32>::new(config(CutPolicy::Eager, 0, 1, 1));
    }

    #[test]
    #[should_panic(expected = "exceeds absolute_max_bytes")]
    fn ordered_asserts_absolute_max() {
        let mut c = small(CutPolicy::Eager);
        let _ = c.ordered(1, 1001, Instant::now());
    }

    #[test]
    fn oversize_message_alone_without_pending() {
        for policy in POLICIES {
            let mut c = small(policy);
            let t = Instant::now();
            let out = c.ordered(1, 101, t);
            assert_eq!(out.len(), 1);
            assert_eq!(ids(&out[0]), vec![1]);
            assert_eq!(out[0].reason, CutReason::Oversize);
            assert_eq!(out[0].bytes, 101);
            assert_eq!(c.pending_count(), 0);
            assert_eq!(c.pending_bytes(), 0);
            assert_eq!(c.deadline(), None);
            // Exactly absolute_max_bytes is accepted, and goes alone.
            let out = c.ordered(2, 1000, t);
            assert_eq!(out.len(), 1);
            assert_eq!(out[0].reason, CutReason::Oversize);
            assert_eq!(out[0].bytes, 1000);
        }
    }

    #[test]
    fn oversize_message_cuts_pending_first() {
        for policy in POLICIES {
            let mut c = small(policy);
            let t = Instant::now();
            assert!(c.ordered(1, 30, t).is_empty());
            assert!(c.ordered(2, 40, t).is_empty());
            assert_eq!(c.deadline(), Some(t + TIMEOUT));
            let out = c.ordered(3, 500, t + Duration::from_millis(1));
            assert_eq!(out.len(), 2);
            assert_eq!(ids(&out[0]), vec![1, 2]);
            assert_eq!(out[0].reason, CutReason::Bytes);
            assert_eq!(out[0].bytes, 70);
            assert_eq!(ids(&out[1]), vec![3]);
            assert_eq!(out[1].reason, CutReason::Oversize);
            assert_eq!(out[1].bytes, 500);
            assert_eq!(c.pending_count(), 0);
            assert_eq!(c.deadline(), None, "the timer stops");
        }
    }

    #[test]
    fn message_of_exactly_preferred_bytes_is_not_oversize() {
        for policy in POLICIES {
            let mut c = small(policy);
            let t = Instant::now();
            assert!(c.ordered(1, 100, t).is_empty());
            assert_eq!(c.pending_bytes(), 100);
            // Filling exactly to preferred does not cut; one more byte does.
            let out = c.ordered(2, 1, t);
            assert_eq!(out.len(), 1);
            assert_eq!(ids(&out[0]), vec![1]);
            assert_eq!(out[0].reason, CutReason::Bytes);
        }
    }

    #[test]
    fn overflow_cuts_pending_and_starts_new_batch() {
        for policy in POLICIES {
            let mut c = small(policy);
            let t = Instant::now();
            assert!(c.ordered(1, 60, t).is_empty());
            assert!(c.ordered(2, 40, t).is_empty());
            assert_eq!(c.pending_bytes(), 100);
            let out = c.ordered(3, 10, t);
            assert_eq!(out.len(), 1);
            assert_eq!(ids(&out[0]), vec![1, 2]);
            assert_eq!(out[0].reason, CutReason::Bytes);
            assert_eq!(out[0].bytes, 100);
            assert_eq!(c.pending_count(), 1);
            assert_eq!(c.pending_bytes(), 10);
        }
    }

    #[test]
    fn count_cut_at_exactly_max_message_count() {
        for policy in POLICIES {
            let mut c = small(policy);
            let t = Instant::now();
            assert!(c.ordered(1, 1, t).is_empty());
            assert!(c.ordered(2, 1, t).is_empty());
            assert_eq!(c.pending_count(), 2);
            let out = c.ordered(3, 1, t);
            assert_eq!(out.len(), 1);
            assert_eq!(ids(&out[0]), vec![1, 2, 3]);
            assert_eq!(out[0].reason, CutReason::Count);
            assert_eq!(out[0].bytes, 3);
            assert_eq!(c.pending_count(), 0);
            assert_eq!(c.deadline(), None, "the timer stops");
        }
    }

    #[test]
    fn overflow_then_count_cuts_two_batches() {
        for policy in POLICIES {
            let mut c = Cutter::new(config(policy, 1, 100, 1000));
            let t = Instant::now();
            // With a count of 1 every message is cut on its own.
            let out = c.ordered(1, 50, t);
            assert_eq!(out.len(), 1);
            assert_eq!(out[0].reason, CutReason::Count);
            assert_eq!(c.deadline(), None);

            let mut c = Cutter::new(config(policy, 2, 100, 1000));
            assert!(c.ordered(1, 90, t).is_empty());
            // Overflow cuts [1]; [2] starts a batch; count 2 not reached.
            let out = c.ordered(2, 20, t);
            assert_eq!(out.len(), 1);
            assert_eq!(out[0].reason, CutReason::Bytes);
            let out = c.ordered(3, 85, t);
            assert_eq!(out.len(), 1);
            assert_eq!(ids(&out[0]), vec![2]);
            assert_eq!(out[0].reason, CutReason::Bytes);
            let out = c.ordered(4, 5, t);
            assert_eq!(out.len(), 1);
            assert_eq!(ids(&out[0]), vec![3, 4]);
            assert_eq!(out[0].reason, CutReason::Count);
        }
    }

    #[test]
    fn timeout_cuts_pending() {
        for policy in POLICIES {
            let mut c = small(policy);
            let t = Instant::now();
            assert_eq!(c.deadline(), None);
            assert!(c.ordered(1, 10, t).is_empty());
            assert_eq!(c.deadline(), Some(t + TIMEOUT));
            assert!(c.ordered(2, 10, t + Duration::from_millis(5)).is_empty());
            assert_eq!(c.deadline(), Some(t + TIMEOUT), "not re-armed");
            let batch = c.on_timer(t + TIMEOUT).expect("the timer cuts");
            assert_eq!(ids(&batch), vec![1, 2]);
            assert_eq!(batch.reason, CutReason::Timeout);
            assert_eq!(batch.bytes, 20);
            assert_eq!(c.deadline(), None);
            assert_eq!(c.pending_count(), 0);
            // A late timer call cuts too.
            assert!(c.ordered(3, 10, t + TIMEOUT).is_empty());
            let batch = c.on_timer(t + 5 * TIMEOUT).expect("late timer cuts");
            assert_eq!(ids(&batch), vec![3]);
        }
    }

    #[test]
    fn empty_timeout_cuts_nothing() {
        for policy in POLICIES {
            let mut c = small(policy);
            let t = Instant::now();
            assert!(c.on_timer(t).is_none());
            assert!(c.on_timer(t + TIMEOUT).is_none());
            assert_eq!(c.deadline(), None);
            // After a count cut the timer is stopped; firing it cuts nothing.
            for i in 0..3 {
                let _ = c.ordered(i, 1, t);
            }
            assert_eq!(c.deadline(), None);
            assert!(c.on_timer(t + TIMEOUT).is_none());
        }
    }

    #[test]
    fn timer_not_rearmed_after_overflow_cut() {
        for policy in POLICIES {
            let mut c = small(policy);
            let t0 = Instant::now();
            assert!(c.ordered(1, 80, t0).is_empty());
            let t1 = t0 + Duration::from_millis(7);
            let out = c.ordered(2, 80, t1);
            assert_eq!(out.len(), 1);
            assert_eq!(out[0].reason, CutReason::Bytes);
            assert_eq!(c.deadline(), Some(t0 + TIMEOUT), "the old deadline stays");
            let batch = c.on_timer(t0 + TIMEOUT).expect("cut at the old deadline");
            assert_eq!(ids(&batch), vec![2]);
            assert_eq!(batch.reason, CutReason::Timeout);
            // The next batch gets a fresh deadline.
            let t2 = t0 + Duration::from_millis(30);
            assert!(c.ordered(3, 1, t2).is_empty());
            assert_eq!(c.deadline(), Some(t2 + TIMEOUT));
        }
    }

    #[test]
    fn timer_stopped_when_nothing_pending() {
        for policy in POLICIES {
            let mut c = small(policy);
            let t = Instant::now();
            assert!(c.ordered(1, 10, t).is_empty());
            assert!(c.deadline().is_some());
            // Oversize: pending cut, message alone, nothing pending.
            assert_eq!(c.ordered(2, 200, t).len(), 2);
            assert_eq!(c.deadline(), None);
            assert!(c.ordered(3, 10, t).is_empty());
            assert!(c.deadline().is_some());
            assert!(c.drain().is_some());
            assert_eq!(c.deadline(), None);
        }
    }

    #[test]
    fn on_timer_before_deadline_does_nothing() {
        for policy in POLICIES {
            let mut c = small(policy);
            let t = Instant::now();
            assert!(c.ordered(1, 10, t).is_empty());
            assert!(c.on_timer(t).is_none());
            assert!(c.on_timer(t + TIMEOUT - Duration::from_nanos(1)).is_none());
            assert_eq!(c.pending_count(), 1);
            assert_eq!(c.deadline(), Some(t + TIMEOUT));
        }
    }

    #[test]
    fn eager_idle_cuts_pending() {
        let mut c = small(CutPolicy::Eager);
        let t = Instant::now();
        assert!(c.on_writer_idle().is_none());
        assert!(c.ordered(1, 10, t).is_empty());
        assert!(c.ordered(2, 15, t).is_empty());
        let batch = c.on_writer_idle().expect("eager cuts when idle");
        assert_eq!(ids(&batch), vec![1, 2]);
        assert_eq!(batch.reason, CutReason::Idle);
        assert_eq!(batch.bytes, 25);
        assert_eq!(c.pending_count(), 0);
        assert_eq!(c.deadline(), None);
        assert!(c.on_writer_idle().is_none());
    }

    #[test]
    fn strict_ignores_idle() {
        let mut c = small(CutPolicy::Strict);
        let t = Instant::now();
        assert!(c.ordered(1, 10, t).is_empty());
        assert!(c.on_writer_idle().is_none());
        assert_eq!(c.pending_count(), 1);
        assert_eq!(c.pending_bytes(), 10);
        assert_eq!(c.deadline(), Some(t + TIMEOUT));
    }

    #[test]
    fn drain_cuts_pending() {
        for policy in POLICIES {
            let mut c = small(policy);
            let t = Instant::now();
            assert!(c.drain().is_none());
            assert!(c.ordered(1, 10, t).is_empty());
            assert!(c.ordered(2, 10, t).is_empty());
            let batch = c.drain().expect("drain cuts pending");
            assert_eq!(ids(&batch), vec![1, 2]);
            assert_eq!(batch.reason, CutReason::Drain);
            assert_eq!(batch.bytes, 20);
            assert_eq!(c.pending_count(), 0);
            assert_eq!(c.pending_bytes(), 0);
            assert_eq!(c.deadline(), None);
            assert!(c.drain().is_none());
        }
    }

    #[test]
    fn config_is_kept() {
        let cfg = config(CutPolicy::Strict, 7, 70, 700);
        let c: Cutter<u32> = Cutter::new(cfg.clone());
        assert_eq!(c.config(), &cfg);
    }

    // ---- model-based property test ----

    #[derive(Clone, Debug)]
    enum Op {
        /// A message of this many bytes.
        Msg(u32),
        /// Advance the clock by this many milliseconds.
        Advance(u64),
        /// Call `on_timer` at the current time.
        Timer,
        /// Advance the clock to the deadline (if any), then call `on_timer`.
        FireAtDeadline,
        /// Call `on_writer_idle`.
        Idle,
        /// Call `drain`.
        Drain,
    }

    /// The reference: Fabric's rules written out over a list of (id, size), with time in
    /// milliseconds since the start.
    struct Model {
        count: usize,
        preferred_bytes: u64,
        timeout_ms: u64,
        eager: bool,
        pending: Vec<(u32, u64)>,
        deadline_ms: Option<u64>,
    }

    type Cut = (Vec<u32>, CutReason);

    impl Model {
        fn take(&mut self, reason: CutReason, out: &mut Vec<Cut>) {
            if !self.pending.is_empty() {
                let ids = self.pending.iter().map(|&(id, _)| id).collect();
                self.pending.clear();
                out.push((ids, reason));
            }
        }

        fn bytes(&self) -> u64 {
            self.pending.iter().map(|&(_, s)| s).sum()
        }

        fn message(&mut self, id: u32, size: u64, now_ms: u64) -> Vec<Cut> {
            let mut out = Vec::new();
            if size > self.preferred_bytes {
                self.take(CutReason::Bytes, &mut out);
                out.push((vec![id], CutReason::Oversize));
            } else {
                if self.bytes() + size > self.preferred_bytes {
                    self.take(CutReason::Bytes, &mut out);
                }
                self.pending.push((id, size));
                if self.pending.len() >= self.count {
                    self.take(CutReason::Count, &mut out);
                }
            }
            if self.pending.is_empty() {
                self.deadline_ms = None;
            } else if self.deadline_ms.is_none() {
                self.deadline_ms = Some(now_ms + self.timeout_ms);
            }
            out
        }

        fn timer(&mut self, now_ms: u64) -> Vec<Cut> {
            let mut out = Vec::new();
            if let Some(d) = self.deadline_ms {
                if now_ms >= d {
                    self.deadline_ms = None;
                    self.take(CutReason::Timeout, &mut out);
                }
            }
            out
        }

        fn idle(&mut self) -> Vec<Cut> {
            let mut out = Vec::new();
            if self.eager {
                self.deadline_ms = None;
                self.take(CutReason::Idle, &mut out);
            }
            out
        }

        fn drain(&mut self) -> Vec<Cut> {
            let mut out = Vec::new();
            self.deadline_ms = None;
            self.take(CutReason::Drain, &mut out);
            out
        }
    }

    fn scenario() -> impl Strategy<Value = (CutterConfig, Vec<Op>)> {
        (1u32..8, 1u32..200, 0u32..200, 1u64..30, any::<bool>()).prop_flat_map(
            |(count, preferred_bytes, extra_bytes, timeout_ms, eager)| {
                let absolute_bytes = preferred_bytes + extra_bytes;
                let cfg = CutterConfig {
                    batch_timeout: Duration::from_millis(timeout_ms),
                    max_message_count: count,
                    preferred_max_bytes: preferred_bytes,
                    absolute_max_bytes: absolute_bytes,
                    policy: if eager {
                        CutPolicy::Eager
                    } else {
                        CutPolicy::Strict
                    },
                };
                let op = prop_oneof![
                    6 => (1..=absolute_bytes).prop_map(Op::Msg),
                    // Small messages, so batches often fill up by count.
                    3 => (1..=preferred_bytes.div_ceil(4)).prop_map(Op::Msg),
                    2 => (0u64..40).prop_map(Op::Advance),
                    1 => Just(Op::Timer),
                    1 => Just(Op::FireAtDeadline),
                    1 => Just(Op::Idle),
                    1 => Just(Op::Drain),
                ];
                (Just(cfg), proptest::collection::vec(op, 0..120))
            },
        )
    }

    fn record(batch: Batch<u32>, sizes: &[u64], cfg: &CutterConfig, got: &mut Vec<Cut>) {
        let n = batch.messages.len();
        assert!(n > 0, "empty batch");
        assert!(n <= cfg.max_message_count as usize, "count bound");
        let sum: u64 = batch.messages.iter().map(|&id| sizes[id as usize]).sum();
        assert_eq!(batch.bytes, sum, "bytes is the sum of sizes");
        if n > 1 {
            assert!(sum <= u64::from(cfg.preferred_max_bytes), "preferred bound");
        }
        assert!(sum <= u64::from(cfg.absolute_max_bytes) * n as u64);
        got.push((batch.messages, batch.reason));
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        #[test]
        fn matches_reference_model((cfg, ops) in scenario()) {
            let start = Instant::now();
            let mut cutter: Cutter<u32> = Cutter::new(cfg.clone());
            let mut model = Model {
                count: cfg.max_message_count as usize,
                preferred_bytes: u64::from(cfg.preferred_max_bytes),
                timeout_ms: cfg.batch_timeout.as_millis() as u64,
                eager: cfg.policy == CutPolicy::Eager,
                pending: Vec::new(),
                deadline_ms: None,
            };
            let mut now_ms = 0u64;
            let mut sizes: Vec<u64> = Vec::new();
            let mut got: Vec<Cut> = Vec::new();
            let mut want: Vec<Cut> = Vec::new();
            let ops = ops.into_iter().chain(std::iter::once(Op::Drain));
            for op in ops {
                let now = start + Duration::from_millis(now_ms);
                match op {
                    Op::Msg(size) => {
                        let id = sizes.len() as u32;
                        sizes.push(u64::from(size));
                        let out = cutter.ordered(id, size, now);
                        prop_assert!(out.len() <= 2);
                        for b in out {
                            record(b, &sizes, &cfg, &mut got);
                        }
                        want.extend(model.message(id, u64::from(size), now_ms));
                    }
                    Op::Advance(ms) => now_ms += ms,
                    Op::Timer => {
                        if let Some(b) = cutter.on_timer(now) {
                            record(b, &sizes, &cfg, &mut got);
                        }
                        want.extend(model.timer(now_ms));
                    }
                    Op::FireAtDeadline => {
                        if let Some(d) = model.deadline_ms {
                            now_ms = now_ms.max(d);
                        }
                        let now = start + Duration::from_millis(now_ms);
                        if let Some(b) = cutter.on_timer(now) {
                            record(b, &sizes, &cfg, &mut got);
                        }
                        want.extend(model.timer(now_ms));
                    }
                    Op::Idle => {
                        if let Some(b) = cutter.on_writer_idle() {
                            record(b, &sizes, &cfg, &mut got);
                        }
                        want.extend(model.idle());
                    }
                    Op::Drain => {
                        if let Some(b) = cutter.drain() {
                            record(b, &sizes, &cfg, &mut got);
                        }
                        want.extend(model.drain());
                    }
                }
                prop_assert_eq!(&got, &want);
                prop_assert_eq!(
                    cutter.deadline(),
                    model.deadline_ms.map(|d| start + Duration::from_millis(d))
                );
                prop_assert_eq!(cutter.pending_count(), model.pending.len());
                prop_assert_eq!(cutter.pending_bytes(), model.bytes());
            }
            // After the final drain, every message came out exactly once, in order.
            prop_assert_eq!(cutter.pending_count(), 0);
            let flat: Vec<u32> = got.iter().flat_map(|(ids, _)| ids.iter().copied()).collect();
            let all: Vec<u32> = (0..sizes.len() as u32).collect();
            prop_assert_eq!(flat, all);
        }
    }
}
