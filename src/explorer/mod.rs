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
    key: std::sync::RwLock<CheckpointKey>,
    /// Where the key lives and rotates (none: a cluster's key, derived from its secret).
    key_files: Option<KeyFiles>,
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

/// The checkpoint key's file and the list of the keys it replaced (public halves only).
pub struct KeyFiles {
    /// The current key (0600).
    pub key: std::path::PathBuf,
    /// `[{"key_id", "public_key", "algorithm", "retired_at_ms"}, ...]`, oldest first.
    pub retired: std::path::PathBuf,
}

/// A checkpoint key a rotation replaced: its public half, to verify what it signed.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RetiredKey {
    #[serde(flatten)]
    pub key: medledger_proof::PublicKeyDoc,
    /// When it stopped signing (ms since the Unix epoch).
    pub retired_at_ms: i64,
}

impl KeyFiles {
    /// The keys rotated out so far (none when the list was never written).
    pub fn retired_keys(&self) -> Result<Vec<RetiredKey>, String> {
        match std::fs::read(&self.retired) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| format!("{} is not a key list: {e}", self.retired.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(format!("reading {}: {e}", self.retired.display())),
        }
    }

    fn next_key(&self) -> std::path::PathBuf {
        let mut name = self.key.as_os_str().to_owned();
        name.push(".next");
        name.into()
    }

    /// Removes what a rotation cut short left (a key never put in place).
    pub fn recover(&self) -> Result<(), String> {
        match std::fs::remove_file(self.next_key()) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(format!("removing {}: {e}", self.next_key().display())),
        }
    }
}

/// Writes `bytes` to `path` through a temporary file renamed over it, file and directory
/// fsynced.
fn write_durably(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)?;
    sync_parent(path)
}

fn sync_parent(path: &std::path::Path) -> std::io::Result<()> {
    std::fs::File::open(path.parent().unwrap_or(std::path::Path::new(".")))?.sync_all()
}

impl Explorer {
    /// `key` signs the checkpoints; with `key_files`, it can be rotated.
    pub fn new(ledger: Arc<Ledger>, key: CheckpointKey, key_files: Option<KeyFiles>) -> Explorer {
        Explorer {
            ledger,
            key: std::sync::RwLock::new(key),
            key_files,
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

    /// The public half of the key that signs checkpoints now.
    pub fn key_doc(&self) -> medledger_proof::PublicKeyDoc {
        self.key
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .public_key_doc()
    }

    /// The keys rotated out (empty for a key that never rotated or cannot).
    pub fn retired_keys(&self) -> Result<Vec<RetiredKey>, String> {
        self.key_files
            .as_ref()
            .map_or(Ok(Vec::new()), KeyFiles::retired_keys)
    }

    /// Whether the key is a file this explorer may rotate.
    pub fn key_is_rotatable(&self) -> bool {
        self.key_files.is_some()
    }

    /// Replaces the checkpoint signing key with a new one. Durable when it returns: the
    /// current key's public half is added to the retired list first (so what it signed
    /// stays verifiable), then the new key is written beside it and renamed into place
    /// (a crash between leaves the current key, which `recover` keeps). Returns the new
    /// key's public half.
    pub fn rotate_key(&self) -> Result<medledger_proof::PublicKeyDoc, String> {
        let files = self
            .key_files
            .as_ref()
            .ok_or("the checkpoint key is not a file this server owns")?;
        let mut key = self.key.write().unwrap_or_else(|e| e.into_inner());
        let mut retired = files.retired_keys()?;
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let current = key.public_key_doc();
        if !retired.iter().any(|r| r.key.key_id == current.key_id) {
            retired.push(RetiredKey {
                key: current,
                retired_at_ms: now_ms,
            });
        }
        let fail = |what: &str, e: std::io::Error| format!("{what}: {e}");
        write_durably(
            &files.retired,
            &serde_json::to_vec_pretty(&retired).expect("a key list serialises"),
        )
        .map_err(|e| fail("writing the retired key list", e))?;
        files.recover()?;
        let next = CheckpointKey::load_or_create(&files.next_key())
            .map_err(|e| format!("creating the next key: {e}"))?;
        std::fs::rename(files.next_key(), &files.key)
            .map_err(|e| fail("putting the next key in place", e))?;
        sync_parent(&files.key).map_err(|e| fail("syncing the key's directory", e))?;
        let doc = next.public_key_doc();
        *key = next;
        // The cached checkpoint was signed by the old key.
        *self.latest.lock().unwrap_or_else(|p| p.into_inner()) = None;
        Ok(doc)
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
        let key = self.key.read().unwrap_or_else(|e| e.into_inner());
        Ok(key.sign(&CheckpointBody {
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
