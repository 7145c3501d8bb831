//! Group commit for an append-only file: many writers, one `fdatasync` per group.
//!
//! Every write to a log (append or in-place overwrite) takes a position in a logical
//! sequence, the *LSN*: the count of bytes written to the log since it was opened, across
//! files (the pack log's GC swaps files; the LSN keeps counting). A writer that needs its
//! bytes durable calls [`GroupCommit::wait_durable`] with the LSN after its write. If no
//! sync is running it leads one: it asks the log for the LSN written so far (everything up
//! to it has been handed to the kernel), fdatasyncs without holding any lock, and
//! publishes that LSN as durable. A writer arriving while a sync runs waits for it and,
//! if its bytes came too late to be covered, the next leader's sync covers it together
//! with everyone else who arrived meanwhile. So N concurrent writers cost about two
//! fsyncs, not N (leader/follower, as in the ledger's orderer and in most databases'
//! write-ahead logs).
//!
//! A failed fdatasync poisons the commit for good (fjall's rule: after a failed fsync the
//! state of the page cache is unknown, so no later sync may be trusted to cover earlier
//! writes); reopening the log recovers from what is on disk.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};

/// What a sync leader runs: fdatasync the log's file and return the LSN it covers (the
/// LSN written before the sync started).
pub(crate) type SyncFn<'a> = &'a dyn Fn() -> io::Result<u64>;

/// Why a wait for durability failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CommitError {
    /// This or an earlier fdatasync failed; nothing more is made durable until reopened.
    #[error("an earlier fdatasync failed; the log refuses writes until reopened")]
    Poisoned,
    /// The fdatasync this caller led failed.
    #[error("fdatasync failed: {0}")]
    Io(#[from] io::Error),
}

#[derive(Default)]
struct State {
    /// Every write with an LSN up to here is durable.
    durable_lsn: u64,
    /// A leader is syncing (without the lock held).
    syncing: bool,
    poisoned: bool,
}

/// The group-commit state of one log. Cheap to share by reference.
#[derive(Default)]
pub(crate) struct GroupCommit {
    state: Mutex<State>,
    synced: Condvar,
    fsyncs: AtomicU64,
}

impl GroupCommit {
    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is a few integers changed atomically under the lock; go on after a
        // panic elsewhere.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A commit whose log is durable up to `durable_lsn` (what was on disk at open).
    pub(crate) fn new(durable_lsn: u64) -> GroupCommit {
        GroupCommit {
            state: Mutex::new(State {
                durable_lsn,
                ..State::default()
            }),
            ..GroupCommit::default()
        }
    }

    /// Returns once every write up to `lsn` is durable, leading a sync with `sync` if none
    /// is running. The caller must hold no lock `sync` takes.
    pub(crate) fn wait_durable(&self, lsn: u64, sync: SyncFn<'_>) -> Result<(), CommitError> {
        let mut state = self.lock();
        loop {
            if state.poisoned {
                return Err(CommitError::Poisoned);
            }
            if state.durable_lsn >= lsn {
                return Ok(());
            }
            if state.syncing {
                state = self.synced.wait(state).unwrap_or_else(|p| p.into_inner());
                continue;
            }
            state.syncing = true;
            drop(state);
            let outcome = sync();
            self.fsyncs.fetch_add(1, Ordering::Relaxed);
            state = self.lock();
            state.syncing = false;
            match outcome {
                Ok(covered_lsn) => {
                    assert!(covered_lsn >= lsn, "a sync must cover its leader's write");
                    state.durable_lsn = state.durable_lsn.max(covered_lsn);
                    self.synced.notify_all();
                }
                Err(error) => {
                    state.poisoned = true;
                    self.synced.notify_all();
                    return Err(CommitError::Io(error));
                }
            }
        }
    }

    /// Records that everything up to `lsn` is durable by other means (a GC that wrote and
    /// fsynced a whole new file).
    pub(crate) fn mark_durable(&self, lsn: u64) {
        let mut state = self.lock();
        state.durable_lsn = state.durable_lsn.max(lsn);
        self.synced.notify_all();
    }

    /// True once a sync failed.
    pub(crate) fn is_poisoned(&self) -> bool {
        self.lock().poisoned
    }

    /// fdatasync calls led so far.
    pub(crate) fn fsyncs(&self) -> u64 {
        self.fsyncs.load(Ordering::Relaxed)
    }

    /// Counts an fsync made outside [`Self::wait_durable`] (recovery, GC).
    pub(crate) fn count_fsync(&self) {
        self.fsyncs.fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn concurrent_writers_share_syncs_and_a_failure_poisons() {
        let commit = Arc::new(GroupCommit::new(0));
        let written = Arc::new(AtomicU64::new(0));
        let threads: Vec<_> = (0..32)
            .map(|_| {
                let (commit, written) = (Arc::clone(&commit), Arc::clone(&written));
                std::thread::spawn(move || {
                    for _ in 0..50 {
                        let lsn = written.fetch_add(10, Ordering::SeqCst) + 10;
                        let sync = || {
                            let covered = written.load(Ordering::SeqCst);
                            std::thread::sleep(std::time::Duration::from_micros(200));
                            Ok(covered)
                        };
                        commit.wait_durable(lsn, &sync).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        // 1,600 writes; with 32 writers most syncs cover many of them.
        assert!(commit.fsyncs() < 1_600, "{} fsyncs", commit.fsyncs());
        let failing = || Err(io::Error::other("disk gone"));
        assert!(matches!(
            commit.wait_durable(u64::MAX, &failing),
            Err(CommitError::Io(_))
        ));
        let fine = || Ok(u64::MAX);
        assert!(matches!(
            commit.wait_durable(u64::MAX, &fine),
            Err(CommitError::Poisoned)
        ));
    }
}
