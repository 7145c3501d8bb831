//! The replication outbox: a durable queue of pins and unpins still to be applied to the
//! Kubo replica, and the task that drains it with exponential backoff and jitter.
//!
//! File `<data_dir>/outbox.log`, one text line per event, durable before `push` returns:
//! `<seq> pin <cid>`, `<seq> unpin <cid>`, `<seq> done`. Replay keeps the entries without
//! a `done`; a torn last line is ignored (it was never acknowledged). When the queue
//! empties, the file is truncated. Lines are made durable by group commit
//! ([`crate::groupcommit`]): concurrent `push`es share one fdatasync.
//!
//! A `pin` entry may be durable before the local pin it replicates is (a payload's pin,
//! key and outbox entry become durable concurrently), and a payload may be unpinned
//! locally (erased, an orphan) before its `pin` entry is applied: the replicator skips a
//! `pin` whose root is no longer pinned locally instead of retrying it for ever.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinSet;

use crate::cid::{Cid, Codec};
use crate::dagpb::decode_node;
use crate::groupcommit::{file_sync, CommitError, GroupCommit, SharedSyncFn};
use crate::pinstore::{PinStore, PinStoreError};
use crate::unixfs::Block;

/// A change to apply to the replica.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutboxOp {
    /// Copy the DAG under the root to the replica and pin it.
    Pin(Cid),
    /// Unpin the root on the replica.
    Unpin(Cid),
}

struct State {
    file: Arc<File>,
    pending: VecDeque<(u64, OutboxOp)>,
    next_seq: u64,
    /// Bytes written since open (a truncation counts one): the group commit's LSN.
    written_lsn: u64,
}

/// The durable outbox.
pub struct Outbox {
    path: PathBuf,
    state: Arc<Mutex<State>>,
    commit: Arc<GroupCommit>,
    sync: SharedSyncFn,
    notify: Notify,
    failures: AtomicU64,
    replicated: AtomicU64,
}

fn parse_line(line: &str) -> Option<(u64, Option<OutboxOp>)> {
    let mut fields = line.split(' ');
    let seq = fields.next()?.parse().ok()?;
    let op = match (fields.next()?, fields.next()) {
        ("done", None) => None,
        ("pin", Some(cid)) => Some(OutboxOp::Pin(cid.parse().ok()?)),
        ("unpin", Some(cid)) => Some(OutboxOp::Unpin(cid.parse().ok()?)),
        _ => return None,
    };
    Some((seq, op))
}

impl Outbox {
    /// Opens or creates the outbox at `path`, replaying it.
    pub fn open(path: &Path) -> io::Result<Outbox> {
        let text = match std::fs::read(path) {
            Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(e),
        };
        let mut pending: VecDeque<(u64, OutboxOp)> = VecDeque::new();
        let mut next_seq = 0;
        let mut good_len = 0;
        for line in text.split_inclusive('\n') {
            let Some(event) = line.strip_suffix('\n').and_then(parse_line) else {
                break; // A torn tail: never acknowledged.
            };
            good_len += line.len();
            match event {
                (seq, Some(op)) => {
                    pending.push_back((seq, op));
                    next_seq = next_seq.max(seq + 1);
                }
                (seq, None) => pending.retain(|(s, _)| *s != seq),
            }
        }
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        if good_len < text.len() {
            file.set_len(good_len as u64)?;
        }
        file.sync_all()?;
        crate::fsutil::sync_parent_dir(path)?;
        let state = Arc::new(Mutex::new(State {
            file: Arc::new(file),
            pending,
            next_seq,
            written_lsn: 0,
        }));
        let sync = file_sync(Arc::clone(&state), |state| {
            (Arc::clone(&state.file), state.written_lsn)
        });
        Ok(Outbox {
            path: path.to_path_buf(),
            state,
            commit: Arc::new(GroupCommit::new(0)),
            sync,
            notify: Notify::new(),
            failures: AtomicU64::new(0),
            replicated: AtomicU64::new(0),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes `bytes` under the lock (or truncates the file when `None`) and returns the
    /// LSN to wait for.
    fn write(state: &mut State, bytes: Option<&[u8]>) -> io::Result<u64> {
        match bytes {
            Some(bytes) => {
                (&*state.file).write_all(bytes)?;
                state.written_lsn += bytes.len() as u64;
            }
            None => {
                state.file.set_len(0)?;
                state.written_lsn += 1;
            }
        }
        Ok(state.written_lsn)
    }

    async fn wait_durable(&self, lsn: u64) -> io::Result<()> {
        self.commit
            .wait_durable_async(lsn, &self.sync)
            .await
            .map_err(|error| match error {
                CommitError::Io(error) => error,
                poisoned @ CommitError::Poisoned => io::Error::other(poisoned),
            })
    }

    /// Queues `op`; durable when it returns (in the next group commit of the outbox).
    pub async fn push(&self, op: OutboxOp) -> io::Result<()> {
        let lsn = {
            let mut state = self.lock();
            if self.commit.is_poisoned() {
                return Err(io::Error::other(CommitError::Poisoned));
            }
            let seq = state.next_seq;
            let line = match op {
                OutboxOp::Pin(cid) => format!("{seq} pin {cid}\n"),
                OutboxOp::Unpin(cid) => format!("{seq} unpin {cid}\n"),
            };
            let lsn = Self::write(&mut state, Some(line.as_bytes()))?;
            state.next_seq += 1;
            state.pending.push_back((seq, op));
            lsn
        };
        self.notify.notify_one();
        self.wait_durable(lsn).await
    }

    fn front(&self) -> Option<(u64, OutboxOp)> {
        self.lock().pending.front().copied()
    }

    /// Marks `seq` applied; durable when it returns (a lost `done` only repeats an
    /// idempotent pin or unpin).
    async fn complete(&self, seq: u64) -> io::Result<()> {
        let lsn = {
            let mut state = self.lock();
            state.pending.retain(|(s, _)| *s != seq);
            if state.pending.is_empty() {
                Self::write(&mut state, None)?
            } else {
                Self::write(&mut state, Some(format!("{seq} done\n").as_bytes()))?
            }
        };
        self.wait_durable(lsn).await?;
        self.replicated.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// fdatasync calls of the outbox since open.
    pub fn fsyncs(&self) -> u64 {
        self.commit.fsyncs()
    }

    /// Entries not yet applied to the replica.
    pub fn depth(&self) -> usize {
        self.lock().pending.len()
    }

    /// Failed replication attempts since start.
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    /// Entries applied since start.
    pub fn replicated(&self) -> u64 {
        self.replicated.load(Ordering::Relaxed)
    }

    /// The outbox file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Backoff after `failures` consecutive failures: 250 ms doubling to 30 s, with ±50 %
/// jitter so many replicas do not retry in step.
fn backoff(failures: u32) -> Duration {
    let base_ms = 250u64.saturating_mul(1u64 << failures.min(7)).min(30_000);
    let mut random = [0u8; 2];
    let jitter = if getrandom::fill(&mut random).is_ok() {
        u64::from(u16::from_le_bytes(random)) % (base_ms + 1)
    } else {
        base_ms / 2
    };
    Duration::from_millis(base_ms / 2 + jitter)
}

/// Drains `outbox` into `remote` forever (the caller aborts the task to stop it).
pub(crate) async fn replicate(
    outbox: Arc<Outbox>,
    local: Arc<dyn PinStore>,
    remote: Arc<dyn PinStore>,
    concurrency: usize,
) {
    let mut consecutive_failures = 0u32;
    loop {
        let Some((seq, op)) = outbox.front() else {
            outbox.notify.notified().await;
            continue;
        };
        let result = match op {
            // Unpinned locally since (erased, an orphan whose pin never became durable):
            // its blocks may be gone, and an `unpin` entry follows if the node had it.
            OutboxOp::Pin(root) => match local.is_pinned(&root).await {
                Ok(false) => Ok(()),
                Ok(true) => copy_dag(&*local, &remote, root, concurrency).await,
                Err(error) => Err(error),
            },
            OutboxOp::Unpin(root) => remote.unpin(&root).await,
        };
        let result = match result {
            Ok(()) => outbox.complete(seq).await.map_err(|e| e.to_string()),
            Err(error) => Err(error.to_string()),
        };
        match result {
            Ok(()) => consecutive_failures = 0,
            Err(error) => {
                outbox.failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%error, ?op, "replication to the IPFS node failed; will retry");
                consecutive_failures = consecutive_failures.saturating_add(1);
                tokio::time::sleep(backoff(consecutive_failures)).await;
            }
        }
    }
}

/// Copies every block under `root` from `local` to `remote` through `concurrency`
/// workers, then pins the root on `remote`.
async fn copy_dag(
    local: &dyn PinStore,
    remote: &Arc<dyn PinStore>,
    root: Cid,
    concurrency: usize,
) -> Result<(), PinStoreError> {
    let mut uploads = BoundedUploads::new(Arc::clone(remote), concurrency);
    let mut stack = vec![root];
    while let Some(cid) = stack.pop() {
        let data = local
            .get_block(&cid)
            .await?
            .ok_or(PinStoreError::Missing(cid))?;
        if cid.codec() == Codec::DagPb {
            let node = decode_node(&data).map_err(|e| PinStoreError::InvalidBlock {
                cid,
                reason: e.to_string(),
            })?;
            stack.extend(node.links.iter().rev());
        }
        uploads.submit(Block::claimed(cid, data)).await?;
    }
    uploads.finish().await?;
    remote.pin(&root).await
}

/// At most `concurrency` `put_block` calls in flight; `submit` waits for a free worker
/// (back-pressure), so blocks never pile up in memory.
pub(crate) struct BoundedUploads {
    store: Arc<dyn PinStore>,
    workers: Arc<Semaphore>,
    tasks: JoinSet<Result<(), PinStoreError>>,
}

impl BoundedUploads {
    pub(crate) fn new(store: Arc<dyn PinStore>, concurrency: usize) -> BoundedUploads {
        assert!(concurrency > 0, "at least one upload worker");
        BoundedUploads {
            store,
            workers: Arc::new(Semaphore::new(concurrency)),
            tasks: JoinSet::new(),
        }
    }

    /// Waits for a free worker, then uploads `block` on it. Reports an earlier worker's
    /// failure, if any.
    pub(crate) async fn submit(&mut self, block: Block) -> Result<(), PinStoreError> {
        let permit = Arc::clone(&self.workers)
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        while let Some(done) = self.tasks.try_join_next() {
            done.expect("an upload worker panicked")?;
        }
        let store = Arc::clone(&self.store);
        self.tasks.spawn(async move {
            let _permit = permit;
            store.put_block(block).await
        });
        Ok(())
    }

    /// Waits for every upload; the first failure wins.
    pub(crate) async fn finish(mut self) -> Result<(), PinStoreError> {
        let mut result = Ok(());
        while let Some(done) = self.tasks.join_next().await {
            let outcome = done.expect("an upload worker panicked");
            if result.is_ok() {
                result = outcome;
            }
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cid::CidVersion;

    #[tokio::test]
    async fn replay_keeps_unfinished_entries_and_ignores_a_torn_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outbox.log");
        let a = Cid::for_block(CidVersion::V1, Codec::Raw, b"a");
        let b = Cid::for_block(CidVersion::V1, Codec::Raw, b"b");
        {
            let outbox = Outbox::open(&path).unwrap();
            outbox.push(OutboxOp::Pin(a)).await.unwrap();
            outbox.push(OutboxOp::Unpin(b)).await.unwrap();
            outbox.complete(0).await.unwrap();
        }
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(b"7 pin bafk").unwrap();
        let outbox = Outbox::open(&path).unwrap();
        assert_eq!(outbox.depth(), 1);
        assert_eq!(outbox.front(), Some((1, OutboxOp::Unpin(b))));
        outbox.push(OutboxOp::Pin(a)).await.unwrap();
        assert_eq!(outbox.front(), Some((1, OutboxOp::Unpin(b))));
        outbox.complete(1).await.unwrap();
        outbox.complete(2).await.unwrap();
        assert_eq!(outbox.depth(), 0);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
        // Truncated durably, then written again from the start.
        outbox.push(OutboxOp::Unpin(a)).await.unwrap();
        drop(outbox);
        let outbox = Outbox::open(&path).unwrap();
        assert_eq!(outbox.front(), Some((3, OutboxOp::Unpin(a))));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_pushes_share_fdatasyncs_and_all_replay() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outbox.log");
        let outbox = Arc::new(Outbox::open(&path).unwrap());
        let mut tasks = JoinSet::new();
        for i in 0..64u32 {
            let outbox = Arc::clone(&outbox);
            tasks.spawn(async move {
                for j in 0..10u32 {
                    let cid =
                        Cid::for_block(CidVersion::V1, Codec::Raw, format!("{i}-{j}").as_bytes());
                    outbox.push(OutboxOp::Pin(cid)).await.unwrap();
                }
            });
        }
        while let Some(done) = tasks.join_next().await {
            done.unwrap();
        }
        // 640 durable pushes; one fsync each before group commit.
        assert!(outbox.fsyncs() < 640, "{} fsyncs", outbox.fsyncs());
        drop(outbox);
        assert_eq!(Outbox::open(&path).unwrap().depth(), 640);
    }

    /// What a power loss during an outbox write can leave (the crash file system's model,
    /// storage/src/ledger/crashfs.rs: a prefix of the writes since the last sync): the
    /// file as the last acknowledged operation left it plus any prefix of what the next
    /// one appended, the rest of its length read as zeros or missing; a truncation is
    /// lost or kept.
    fn crash_images(before: &[u8], after: &[u8]) -> Vec<(String, Vec<u8>)> {
        if !after.starts_with(before) {
            assert!(after.is_empty(), "the outbox only appends and empties");
            return vec![
                ("the truncation lost".into(), before.to_vec()),
                ("the truncation kept".into(), vec![]),
            ];
        }
        let mut images = vec![];
        for cut in 0..=after.len() - before.len() {
            let kept = &after[..before.len() + cut];
            images.push((format!("+{cut} bytes"), kept.to_vec()));
            if kept.len() < after.len() {
                let mut zeros = kept.to_vec();
                zeros.resize(after.len(), 0);
                images.push((format!("+{cut} bytes, then zeros"), zeros));
            }
        }
        images
    }

    fn pending_of(outbox: &Outbox) -> Vec<(u64, OutboxOp)> {
        outbox.lock().pending.iter().copied().collect()
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_crash_at_any_byte_of_any_write_loses_no_acknowledged_entry() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outbox.log");
        let cid = |n: u32| Cid::for_block(CidVersion::V1, Codec::Raw, &n.to_le_bytes());
        enum Step {
            Push(OutboxOp),
            Complete(u64),
        }
        use Step::{Complete, Push};
        // Pushes and completions out of order, the queue emptied (the file truncated)
        // twice, and writes after each truncation.
        let steps = [
            Push(OutboxOp::Pin(cid(0))),
            Push(OutboxOp::Pin(cid(1))),
            Push(OutboxOp::Unpin(cid(2))),
            Complete(1),
            Push(OutboxOp::Pin(cid(3))),
            Complete(0),
            Complete(2),
            Complete(3),
            Push(OutboxOp::Unpin(cid(4))),
            Push(OutboxOp::Pin(cid(5))),
            Complete(5),
            Push(OutboxOp::Pin(cid(6))),
            Complete(4),
            Complete(6),
            Push(OutboxOp::Pin(cid(7))),
        ];
        // The file and the queue after each acknowledged step.
        let mut images = vec![(vec![], vec![])];
        {
            let outbox = Outbox::open(&path).unwrap();
            for step in &steps {
                match step {
                    Push(op) => outbox.push(*op).await.unwrap(),
                    Complete(seq) => outbox.complete(*seq).await.unwrap(),
                }
                images.push((std::fs::read(&path).unwrap(), pending_of(&outbox)));
            }
        }
        let mut crash_points = 0;
        for (step, pair) in images.windows(2).enumerate() {
            let ((file0, queue0), (file1, queue1)) = (&pair[0], &pair[1]);
            for (how, image) in crash_images(file0, file1) {
                crash_points += 1;
                let what = format!("step {step}, {how}");
                std::fs::write(&path, &image).unwrap();
                let outbox = Outbox::open(&path).unwrap();
                let found = pending_of(&outbox);
                // Every entry queued before the step and still queued after it is there;
                // nothing is there that was in neither (the interrupted step's own entry
                // may or may not be).
                for entry in queue0.iter().filter(|e| queue1.contains(e)) {
                    assert!(found.contains(entry), "{what}: lost {entry:?}: {found:?}");
                }
                for entry in &found {
                    assert!(
                        queue0.contains(entry) || queue1.contains(entry),
                        "{what}: {entry:?} came from nowhere"
                    );
                }
                // The recovered file takes a push under a sequence number of its own, and
                // it survives a reopen (a torn tail left in place would hide it).
                let next = OutboxOp::Pin(cid(1_000));
                outbox.push(next).await.unwrap();
                let (seq, _) = *pending_of(&outbox).last().unwrap();
                assert!(
                    found.iter().all(|(s, _)| *s < seq),
                    "{what}: seq {seq} reused"
                );
                drop(outbox);
                let reopened = pending_of(&Outbox::open(&path).unwrap());
                let mut expected = found.clone();
                expected.push((seq, next));
                assert_eq!(reopened, expected, "{what}: after a push and a reopen");
            }
        }
        eprintln!("{crash_points} crash points");
        assert!(crash_points >= 1_000, "{crash_points} crash points");
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        assert!(backoff(1) <= Duration::from_millis(750));
        assert!(backoff(20) <= Duration::from_millis(45_000));
        assert!(backoff(20) >= Duration::from_millis(15_000));
    }
}
