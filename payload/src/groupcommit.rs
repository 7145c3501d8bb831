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
//! Async callers (a payload's pin and key, on the runtime's workers) append under the
//! log's lock without blocking on a sync, then [`GroupCommit::wait_durable_async`]: a
//! group's leader hands its fdatasync to the blocking pool (one thread per group, not one
//! per caller) and the followers await the leader's publication, so a payload costs no
//! thread hand-off of its own.
//!
//! A failed fdatasync poisons the commit for good (fjall's rule: after a failed fsync the
//! state of the page cache is unknown, so no later sync may be trusted to cover earlier
//! writes); reopening the log recovers from what is on disk.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

/// What a sync leader runs: fdatasync the log's file and return the LSN it covers (the
/// LSN written before the sync started).
pub(crate) type SyncFn<'a> = &'a dyn Fn() -> io::Result<u64>;

/// A [`SyncFn`] a leader can take to the blocking pool.
pub(crate) type SharedSyncFn = Arc<dyn Fn() -> io::Result<u64> + Send + Sync>;

/// The sync of a log whose state `log` guards: `current` reads, under the lock, the file
/// being written and the LSN written to it, so the fdatasync (without the lock) covers at
/// least that LSN.
pub(crate) fn file_sync<T: Send + 'static>(
    log: Arc<Mutex<T>>,
    current: fn(&T) -> (Arc<std::fs::File>, u64),
) -> SharedSyncFn {
    Arc::new(move || {
        let (file, covered_lsn) = current(&log.lock().unwrap_or_else(|p| p.into_inner()));
        file.sync_data()?;
        Ok(covered_lsn)
    })
}

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
pub(crate) struct GroupCommit {
    state: Mutex<State>,
    /// Wakes blocking waiters when a sync ends.
    synced: Condvar,
    /// Wakes async waiters when a sync ends (a count of the syncs ended).
    published: tokio::sync::watch::Sender<u64>,
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
            synced: Condvar::new(),
            published: tokio::sync::watch::Sender::new(0),
            fsyncs: AtomicU64::new(0),
        }
    }

    /// Ends the sync a leader ran for `lsn` with its `outcome`, and wakes every waiter,
    /// blocking or async.
    fn publish(
        &self,
        mut state: MutexGuard<'_, State>,
        outcome: io::Result<u64>,
        lsn: u64,
    ) -> Result<(), CommitError> {
        self.fsyncs.fetch_add(1, Ordering::Relaxed);
        state.syncing = false;
        let result = match outcome {
            Ok(covered_lsn) => {
                assert!(covered_lsn >= lsn, "a sync must cover its leader's write");
                state.durable_lsn = state.durable_lsn.max(covered_lsn);
                Ok(())
            }
            Err(error) => {
                state.poisoned = true;
                Err(CommitError::Io(error))
            }
        };
        drop(state);
        self.synced.notify_all();
        self.published.send_modify(|ended| *ended += 1);
        result
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
            self.publish(self.lock(), outcome, lsn)?;
            state = self.lock();
        }
    }

    /// [`Self::wait_durable`] for async callers: a leader runs `sync` on the blocking pool
    /// (and publishes its outcome even if this future is dropped meanwhile); followers
    /// await the publication without holding a thread.
    pub(crate) async fn wait_durable_async(
        self: &Arc<Self>,
        lsn: u64,
        sync: &SharedSyncFn,
    ) -> Result<(), CommitError> {
        // Subscribed before the state is read, so a sync that ends after the check is seen.
        let mut published = self.published.subscribe();
        loop {
            // Decided under the lock, acted on without it (a guard is never held across
            // an await).
            let lead = {
                let mut state = self.lock();
                if state.poisoned {
                    return Err(CommitError::Poisoned);
                }
                if state.durable_lsn >= lsn {
                    return Ok(());
                }
                let lead = !state.syncing;
                state.syncing = true;
                lead
            };
            if lead {
                let (commit, sync) = (Arc::clone(self), Arc::clone(sync));
                tokio::task::spawn_blocking(move || {
                    let outcome = sync();
                    commit.publish(commit.lock(), outcome, lsn)
                })
                .await
                .expect("a group commit's sync panicked")?;
                continue;
            }
            published
                .changed()
                .await
                .expect("the sender lives as long as the commit");
        }
    }

    /// Records that everything up to `lsn` is durable by other means (a GC that wrote and
    /// fsynced a whole new file).
    pub(crate) fn mark_durable(&self, lsn: u64) {
        let mut state = self.lock();
        state.durable_lsn = state.durable_lsn.max(lsn);
        drop(state);
        self.synced.notify_all();
        self.published.send_modify(|ended| *ended += 1);
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

    #[test]
    fn async_writers_share_syncs_with_blocking_ones_and_a_failure_poisons() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .build()
            .unwrap();
        let commit = Arc::new(GroupCommit::new(0));
        let written = Arc::new(AtomicU64::new(0));
        let sync: SharedSyncFn = {
            let written = Arc::clone(&written);
            Arc::new(move || {
                let covered = written.load(Ordering::SeqCst);
                std::thread::sleep(std::time::Duration::from_micros(300));
                Ok(covered)
            })
        };
        runtime.block_on(async {
            let mut tasks = tokio::task::JoinSet::new();
            for _ in 0..64 {
                let (commit, written, sync) =
                    (Arc::clone(&commit), Arc::clone(&written), Arc::clone(&sync));
                tasks.spawn(async move {
                    for _ in 0..20 {
                        let lsn = written.fetch_add(10, Ordering::SeqCst) + 10;
                        commit.wait_durable_async(lsn, &sync).await.unwrap();
                        assert!(commit.lock().durable_lsn >= lsn);
                    }
                });
            }
            // A blocking writer among them, on the blocking pool.
            let blocking = {
                let (commit, written, sync) =
                    (Arc::clone(&commit), Arc::clone(&written), Arc::clone(&sync));
                tokio::task::spawn_blocking(move || {
                    for _ in 0..20 {
                        let lsn = written.fetch_add(10, Ordering::SeqCst) + 10;
                        commit.wait_durable(lsn, &*sync).unwrap();
                    }
                })
            };
            while let Some(done) = tasks.join_next().await {
                done.unwrap();
            }
            blocking.await.unwrap();
        });
        // 1,300 writes; most syncs cover many of them.
        assert!(commit.fsyncs() < 650, "{} fsyncs", commit.fsyncs());
        let failing: SharedSyncFn = Arc::new(|| Err(io::Error::other("disk gone")));
        runtime.block_on(async {
            assert!(matches!(
                commit.wait_durable_async(u64::MAX, &failing).await,
                Err(CommitError::Io(_))
            ));
            assert!(matches!(
                commit.wait_durable_async(u64::MAX, &sync).await,
                Err(CommitError::Poisoned)
            ));
        });
    }
}
