//! What the block explorer knows beyond the ledger's own index: the Merkle tree over block
//! header hashes that checkpoints sign (`medledger_proof::ChainTree`, beside the rest of
//! the RFC 6962 code), per-block summaries for activity charts, and chain totals.
//!
//! [`Explorer`] follows the ledger lazily: every call first reads the blocks committed
//! since the last call (under one lock), so it never lags a block the caller could have
//! seen acknowledged. At first use it reads the whole chain once: about one second per
//! million transactions here.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, MutexGuard};

use medledger_chaincode::{Envelope, Event};
use medledger_proof::{Checkpoint, CheckpointBody, CheckpointKey};
use medledger_storage::merkle::Hash;
use medledger_storage::{Ledger, StorageError};

/// Re-exported so the API's error mapping names them where it names [`ExplorerError`].
pub use medledger_proof::{ChainTree, ChainTreeError};

/// The few header fields activity charts need, per block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockSummary {
    pub timestamp_ms: i64,
    pub tx_count: u32,
}

/// Chain totals over every committed block.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    pub blocks: u64,
    pub txs: u64,
    /// Committed `RecordCreated` transactions (a creation the contract rejected, e.g. a
    /// duplicate id, is counted too; `/v1/chain` reports rejections separately).
    pub records: u64,
    /// Distinct patients named by committed `RecordCreated` transactions.
    pub patients: u64,
}

/// One bucket of an activity series.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ActivityBucket {
    /// Start of the bucket, ms since the epoch.
    pub start_ms: i64,
    pub blocks: u64,
    pub txs: u64,
}

struct Followed {
    tree: ChainTree,
    /// Header hash of every block, by number.
    header_hashes: Vec<Hash>,
    blocks: Vec<BlockSummary>,
    totals: Totals,
    patients: HashSet<String>,
}

/// The explorer's view of one ledger.
pub struct Explorer {
    ledger: Arc<Ledger>,
    key: CheckpointKey,
    followed: Mutex<Followed>,
    /// The last checkpoint signed of the whole chain, reused while no block is added.
    latest: Mutex<Option<Checkpoint>>,
}

/// A consistent snapshot of the explorer's state, held under its lock.
pub struct Snapshot<'a> {
    guard: MutexGuard<'a, Followed>,
}

impl Snapshot<'_> {
    /// The number of blocks followed (the chain tree's size).
    pub fn height(&self) -> u64 {
        self.guard.tree.size()
    }

    pub fn tree(&self) -> &ChainTree {
        &self.guard.tree
    }

    /// The header hash of block `number`, if followed.
    pub fn header_hash(&self, number: u64) -> Option<Hash> {
        self.guard.header_hashes.get(number as usize).copied()
    }

    pub fn totals(&self) -> Totals {
        self.guard.totals
    }

    /// Blocks and transactions per bucket of `bucket_ms`, over the `buckets` buckets that
    /// end at `end_ms` (oldest first).
    pub fn activity(&self, end_ms: i64, bucket_ms: i64, buckets: usize) -> Vec<ActivityBucket> {
        assert!(bucket_ms > 0 && buckets > 0);
        let span = bucket_ms.saturating_mul(buckets as i64);
        let start_ms = end_ms.saturating_sub(span);
        let mut out: Vec<ActivityBucket> = (0..buckets)
            .map(|i| ActivityBucket {
                start_ms: start_ms + bucket_ms * i as i64,
                blocks: 0,
                txs: 0,
            })
            .collect();
        // Block timestamps never decrease (docs/FORMAT.md), so the window is a slice.
        let blocks = &self.guard.blocks;
        let first = blocks.partition_point(|b| b.timestamp_ms < start_ms);
        for b in &blocks[first..] {
            if b.timestamp_ms >= end_ms {
                break;
            }
            let i = ((b.timestamp_ms - start_ms) / bucket_ms) as usize;
            out[i].blocks += 1;
            out[i].txs += u64::from(b.tx_count);
        }
        out
    }
}

impl Explorer {
    /// `key` signs the checkpoints.
    pub fn new(ledger: Arc<Ledger>, key: CheckpointKey) -> Explorer {
        Explorer {
            ledger,
            key,
            latest: Mutex::new(None),
            followed: Mutex::new(Followed {
                tree: ChainTree::new(),
                header_hashes: Vec::new(),
                blocks: Vec::new(),
                totals: Totals::default(),
                patients: HashSet::new(),
            }),
        }
    }

    /// Reads every block committed since the last call, then returns a snapshot.
    pub fn snapshot(&self) -> Result<Snapshot<'_>, StorageError> {
        let mut guard = self.followed.lock().unwrap_or_else(|p| p.into_inner());
        let from = guard.tree.size();
        for block in self.ledger.blocks_from(from) {
            let block = block?;
            let f = &mut *guard;
            assert_eq!(block.header.number, f.tree.size(), "blocks arrive in order");
            let hash = block.hash();
            f.tree.push(&hash);
            f.header_hashes.push(hash);
            f.blocks.push(BlockSummary {
                timestamp_ms: block.header.timestamp_ms,
                tx_count: block.header.tx_count,
            });
            f.totals.blocks += 1;
            f.totals.txs += u64::from(block.header.tx_count);
            for tx in &block.txs {
                // A committed envelope always decodes (the orderer encoded it); one that
                // does not is counted as a tx only, as the views count it as rejected.
                if let Ok(Envelope {
                    event: Event::RecordCreated(c),
                    ..
                }) = Envelope::decode(tx)
                {
                    f.totals.records += 1;
                    if !f.patients.contains(&c.patient_id) {
                        f.patients.insert(c.patient_id);
                        f.totals.patients += 1;
                    }
                }
            }
        }
        Ok(Snapshot { guard })
    }

    /// The key that signs checkpoints.
    pub fn key(&self) -> &CheckpointKey {
        &self.key
    }

    /// A checkpoint of the first `tree_size` blocks, signed now.
    pub fn checkpoint_of(
        &self,
        snapshot: &Snapshot<'_>,
        tree_size: u64,
    ) -> Result<Checkpoint, ExplorerError> {
        if tree_size == 0 {
            return Err(ExplorerError::NoBlocks);
        }
        let root = snapshot.tree().root(tree_size)?;
        let tip_hash = snapshot
            .header_hash(tree_size - 1)
            .ok_or(ChainTreeError::SizeTooLarge {
                tree_size,
                size: snapshot.height(),
            })?;
        let timestamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        Ok(self.key.sign(&CheckpointBody {
            tree_size,
            root,
            tip_hash,
            height: tree_size,
            timestamp,
        }))
    }

    /// The checkpoint of the whole chain as the snapshot sees it: the cached one while
    /// no block has been added, else a new one.
    pub fn latest_checkpoint(&self, snapshot: &Snapshot<'_>) -> Result<Checkpoint, ExplorerError> {
        let size = snapshot.height();
        let mut latest = self.latest.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = latest.as_ref().filter(|c| c.tree_size == size) {
            return Ok(c.clone());
        }
        let c = self.checkpoint_of(snapshot, size)?;
        *latest = Some(c.clone());
        Ok(c)
    }
}

/// Why the explorer could not answer.
#[derive(Debug, thiserror::Error)]
pub enum ExplorerError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Tree(#[from] ChainTreeError),
    #[error("the ledger has no blocks yet")]
    NoBlocks,
}
