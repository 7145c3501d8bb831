//! The payload pipeline: `put` encrypts, chunks and stores a payload; `get` streams it
//! back decrypted and verified; `erase` destroys its key and unpins it.
//!
//! Data layout under `data_dir`: `master.key` (unless configured elsewhere),
//! `keys/keys.log` (wrapped data keys; older data dirs also hold `keys/<id>.key` files),
//! `blocks/` (the embedded blockstore), `outbox.log` (replication to Kubo, only with
//! `kubo` set). The key log and the pack log are made durable by group commit.

use std::collections::HashSet;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::stream::{self, Stream, StreamExt};
use sha2::{Digest, Sha256};

use crate::cid::{Cid, CidVersion, Codec};
use crate::crypto::{DataKey, Decryptor, Encryptor, MasterKey};
use crate::dagpb::decode_node;
use crate::error::PayloadError;
use crate::keystore::{new_key_id, KeyKind, KeyStore};
use crate::outbox::{replicate, BoundedUploads, Outbox, OutboxOp};
use crate::pinstore::{EmbeddedStore, KuboStore, PinStore, ReadFallback};
use crate::unixfs::{FileBuilder, CHUNK_BYTES};

/// Orphans unpinned or keys destroyed at once by `remove_orphans`.
const RECONCILE_CONCURRENCY: usize = 64;

/// Deepest DAG `get` follows (a 174-ary tree of depth 8 exceeds any payload).
pub(crate) const DAG_DEPTH_MAX: usize = 8;

/// 32 secret bytes in a configuration; `Debug` does not show them.
#[derive(Clone)]
pub struct SecretSeed(pub [u8; 32]);

impl std::fmt::Debug for SecretSeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretSeed(..)")
    }
}

/// How the pipeline is set up.
#[derive(Clone, Debug)]
pub struct PayloadConfig {
    /// Where keys, blocks and the outbox live.
    pub data_dir: PathBuf,
    /// The master key file; `None`: `<data_dir>/master.key`, created on first start.
    pub master_key_path: Option<PathBuf>,
    /// The master key itself, instead of a file (a cluster's nodes share one, derived
    /// from the cluster secret). Never printed.
    pub master_key_bytes: Option<SecretSeed>,
    /// Blocks uploaded at once (`IPFS_UPLOAD_CONCURRENCY`), at least 1.
    pub upload_concurrency: usize,
    /// Blocks fetched ahead on download (`IPFS_DOWNLOAD_CONCURRENCY`), at least 1.
    pub download_concurrency: usize,
    /// CID form of new payloads' DAGs.
    pub cid_version: CidVersion,
    /// Largest plaintext accepted, in bytes.
    pub max_payload_bytes: u64,
    /// A Kubo RPC API URL to replicate pinned payloads to.
    pub kubo: Option<String>,
}

impl PayloadConfig {
    /// Defaults: uploads 4, downloads 6, CIDv0, 1 GiB limit, no Kubo.
    pub fn new(data_dir: impl Into<PathBuf>) -> PayloadConfig {
        PayloadConfig {
            data_dir: data_dir.into(),
            master_key_path: None,
            master_key_bytes: None,
            upload_concurrency: 4,
            download_concurrency: 6,
            cid_version: CidVersion::V0,
            max_payload_bytes: 1 << 30,
            kubo: None,
        }
    }
}

/// What the ledger records about a stored payload; all of it is needed to read it back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredPayload {
    /// Root CID of the ciphertext's DAG.
    pub cid: Cid,
    /// Plaintext bytes.
    pub size: u64,
    /// SHA-256 of the plaintext.
    pub sha256: [u8; 32],
    /// Id of the wrapped data key.
    pub key_id: String,
    /// The content type given at upload (not stored by the pipeline; the record keeps it).
    pub content_type: String,
}

/// Orphan candidates of a reconcile (see [`Payloads::orphan_scan`]).
#[derive(Debug)]
pub struct OrphanScan {
    roots: HashSet<Cid>,
    key_ids: HashSet<String>,
    pinned_roots: usize,
    live_keys: usize,
}

impl OrphanScan {
    /// Strikes off a payload the ledger references.
    pub fn referenced(&mut self, root: &Cid, key_id: &str) {
        self.roots.remove(root);
        self.key_ids.remove(key_id);
    }

    /// Strikes off a key the ledger references by its id alone (a record's content key,
    /// [`crate::keystore::record_key_id`]).
    pub fn referenced_key(&mut self, key_id: &str) {
        self.key_ids.remove(key_id);
    }

    /// True once every candidate was struck off: the caller may stop reading the ledger.
    pub fn is_empty(&self) -> bool {
        self.roots.is_empty() && self.key_ids.is_empty()
    }
}

/// What a reconcile found and removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReconcileReport {
    /// Roots pinned before the reconcile.
    pub pinned_roots: usize,
    /// Live keys before the reconcile.
    pub live_keys: usize,
    /// Pinned roots no record names, now unpinned.
    pub orphan_roots_unpinned: usize,
    /// Live keys no record names, now destroyed.
    pub orphan_keys_destroyed: usize,
}

/// A stream of verified plaintext pieces; a verification failure is its last item.
pub type PlaintextStream = Pin<Box<dyn Stream<Item = Result<Bytes, PayloadError>> + Send>>;

/// Replication figures for metrics and `medledger ipfs status`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReplicationStatus {
    /// Pins and unpins waiting for the Kubo node.
    pub outbox_depth: usize,
    /// Failed attempts since start.
    pub failures: u64,
    /// Entries applied since start.
    pub replicated: u64,
}

/// The payload pipeline. Cheap to share behind an `Arc`.
pub struct Payloads {
    config: PayloadConfig,
    pub(crate) store: Arc<dyn PinStore>,
    /// What reads go through: the store, or with Kubo the store falling back to it.
    reader: Arc<dyn PinStore>,
    pub(crate) keys: Arc<KeyStore>,
    outbox: Option<Arc<Outbox>>,
    replicator: Option<tokio::task::JoinHandle<()>>,
    /// A garbage collection runs in the background; and another was asked for meanwhile.
    gc_running: Arc<std::sync::atomic::AtomicBool>,
    gc_again: Arc<std::sync::atomic::AtomicBool>,
    /// A failed `put` could not undo what it stored: an orphan may be left.
    left_orphan: std::sync::atomic::AtomicBool,
    /// The ledger height of the clean stop found (and removed) at open
    /// ([`Payloads::clean_stop_height`]).
    clean_stop: Option<u64>,
}

/// A file in the payload directory that says the store held no orphan when it was last
/// closed cleanly, at a ledger height ([`Payloads::mark_clean_stop`]). Removed, durably,
/// by every open: a store opened since, and not closed cleanly, has none.
pub const CLEAN_STOP_FILE: &str = "clean-stop";

/// Reads and removes (durably) the clean-stop file of `dir`: the height it names.
fn take_clean_stop(dir: &Path) -> Result<Option<u64>, PayloadError> {
    let path = dir.join(CLEAN_STOP_FILE);
    let height = match std::fs::read_to_string(&path) {
        Ok(text) => text.trim().parse::<u64>().ok(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(storage_error(e)),
    };
    std::fs::remove_file(&path).map_err(storage_error)?;
    crate::fsutil::sync_dir(dir).map_err(storage_error)?;
    Ok(height)
}

impl Drop for Payloads {
    fn drop(&mut self) {
        if let Some(task) = &self.replicator {
            task.abort();
        }
    }
}

fn storage_error(error: io::Error) -> PayloadError {
    PayloadError::Storage(error.to_string())
}

impl Payloads {
    /// Opens the pipeline with the embedded blockstore in `<data_dir>/blocks`. With
    /// `kubo` set, starts replication (needs a Tokio runtime).
    pub fn open(config: PayloadConfig) -> Result<Payloads, PayloadError> {
        let store = EmbeddedStore::open(&config.data_dir.join("blocks"))?;
        Payloads::open_with_store(config, Arc::new(store))
    }

    /// As [`Payloads::open`], over another local store (tests count its calls).
    pub fn open_with_store(
        config: PayloadConfig,
        store: Arc<dyn PinStore>,
    ) -> Result<Payloads, PayloadError> {
        assert!(config.upload_concurrency > 0 && config.download_concurrency > 0);
        crate::fsutil::create_dir_durably(&config.data_dir).map_err(storage_error)?;
        let clean_stop = take_clean_stop(&config.data_dir)?;
        let master_path = config
            .master_key_path
            .clone()
            .unwrap_or_else(|| config.data_dir.join("master.key"));
        let keys_dir = config.data_dir.join("keys");
        let master = match &config.master_key_bytes {
            Some(seed) => MasterKey::from_bytes(seed.0),
            None => {
                // A rotation a crash interrupted is finished or undone first.
                let recovered = crate::keystore::recover_rotation(&keys_dir, &master_path)?;
                if recovered != crate::keystore::RotationRecovery::None {
                    tracing::warn!(?recovered, "a master key rotation was interrupted");
                }
                MasterKey::load_or_create(&master_path)?
            }
        };
        let keys = Arc::new(KeyStore::open(&keys_dir, master)?);
        let (outbox, replicator, reader) = match &config.kubo {
            None => (None, None, Arc::clone(&store)),
            Some(url) => {
                let remote: Arc<dyn PinStore> = Arc::new(KuboStore::new(url)?);
                // Reads fall back to the node for a block missing or corrupt locally.
                let reader: Arc<dyn PinStore> = Arc::new(ReadFallback {
                    local: Arc::clone(&store),
                    remote: Arc::clone(&remote),
                });
                let outbox = Arc::new(
                    Outbox::open(&config.data_dir.join("outbox.log")).map_err(storage_error)?,
                );
                let task = tokio::spawn(replicate(
                    Arc::clone(&outbox),
                    Arc::clone(&store),
                    remote,
                    config.upload_concurrency,
                ));
                (Some(outbox), Some(task), reader)
            }
        };
        Ok(Payloads {
            config,
            store,
            reader,
            keys,
            outbox,
            replicator,
            gc_running: Arc::default(),
            gc_again: Arc::default(),
            left_orphan: Default::default(),
            clean_stop,
        })
    }

    /// The ledger height at which this store was last closed cleanly with no orphan
    /// ([`Payloads::mark_clean_stop`]), if it was, and has not been opened since: then a
    /// reconcile at that height would find nothing. `None` after a crash, or when any
    /// other open came between.
    pub fn clean_stop_height(&self) -> Option<u64> {
        self.clean_stop
    }

    /// Records, durably, that the store holds no orphan at ledger height `height`: call
    /// it last, once nothing can store a payload any more (the server stopped) and every
    /// payload stored is named by a committed record or was abandoned. The next open
    /// finds it ([`Payloads::clean_stop_height`]) and removes it. Writes nothing if a
    /// failed `put` of this process could not undo what it stored.
    pub fn mark_clean_stop(&self, height: u64) -> Result<(), PayloadError> {
        if self.left_orphan.load(std::sync::atomic::Ordering::Acquire) {
            return Ok(());
        }
        let dir = &self.config.data_dir;
        let tmp = dir.join(format!("{CLEAN_STOP_FILE}.tmp"));
        let mut file = std::fs::File::create(&tmp).map_err(storage_error)?;
        io::Write::write_all(&mut file, format!("{height}\n").as_bytes()).map_err(storage_error)?;
        file.sync_all().map_err(storage_error)?;
        std::fs::rename(&tmp, dir.join(CLEAN_STOP_FILE)).map_err(storage_error)?;
        crate::fsutil::sync_dir(dir).map_err(storage_error)
    }

    /// Stores a payload: encrypts it under a new data key, chunks the ciphertext into a
    /// UnixFS DAG, uploads its blocks through `upload_concurrency` workers, and returns
    /// once blocks, pin and wrapped key are durable (and, with Kubo, the replication is
    /// queued durably). Memory stays bounded whatever the payload's size: pieces of the
    /// body are cut to 256 KiB and each block waits for a free worker.
    pub async fn put<S>(&self, body: S, content_type: &str) -> Result<StoredPayload, PayloadError>
    where
        S: Stream<Item = Result<Bytes, io::Error>> + Send,
    {
        let key = DataKey::generate()?;
        let key_id = new_key_id()?;
        let mut encryptor = Encryptor::new(&key)?;
        let mut builder = FileBuilder::new(self.config.cid_version);
        let mut uploads =
            BoundedUploads::new(Arc::clone(&self.store), self.config.upload_concurrency);
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        let mut body = std::pin::pin!(body);
        while let Some(piece) = body.next().await {
            let piece = piece.map_err(PayloadError::Body)?;
            for slice in piece.chunks(CHUNK_BYTES) {
                size += slice.len() as u64;
                if size > self.config.max_payload_bytes {
                    // The blocks already stored are never pinned; GC takes them after a restart.
                    return Err(PayloadError::TooLarge {
                        max_bytes: self.config.max_payload_bytes,
                    });
                }
                hasher.update(slice);
                let ciphertext = encryptor.push(slice)?;
                for block in builder.push(&ciphertext) {
                    uploads.submit(block).await?;
                }
            }
        }
        let ciphertext = encryptor.finish()?;
        let mut blocks = builder.push(&ciphertext);
        let (rest, summary) = builder.finish();
        blocks.extend(rest);
        for block in blocks {
            uploads.submit(block).await?;
        }
        uploads.finish().await?;
        // The key, the pin and (with Kubo) the replication entry become durable
        // concurrently, each in its log's next group commit; the pin's sync also covers
        // this payload's blocks (same pack, written before it). A crash before all are
        // durable leaves at most an orphan (a key or a pin no record names) for
        // `reconcile`, and an outbox entry the replicator skips once the pin is gone:
        // `put` has not returned, so no record names them.
        let queued = async {
            match &self.outbox {
                Some(outbox) => outbox.push(OutboxOp::Pin(summary.root)).await,
                None => Ok(()),
            }
        };
        let (stored_key, pinned, queued) = tokio::join!(
            self.keys.store_async(&key_id, &key, KeyKind::Payload),
            self.store.pin(&summary.root),
            queued
        );
        if let Err(error) = stored_key
            .map_err(PayloadError::from)
            .and(pinned.map_err(Into::into))
            .and(queued.map_err(storage_error))
        {
            self.discard(&key_id, &summary.root).await;
            return Err(error);
        }
        Ok(StoredPayload {
            cid: summary.root,
            size,
            sha256: hasher.finalize().into(),
            key_id,
            content_type: content_type.to_string(),
        })
    }

    /// Undoes what a failed `put` made durable, as far as it can (a failure leaves an
    /// orphan for `reconcile`).
    async fn discard(&self, key_id: &str, root: &Cid) {
        let keys = Arc::clone(&self.keys);
        let id = key_id.to_string();
        let destroyed = tokio::task::spawn_blocking(move || keys.destroy(&id))
            .await
            .expect("key store panicked");
        let mut unpinned = self.store.unpin(root).await.map_err(|e| e.to_string());
        if let (Ok(()), Some(outbox)) = (&unpinned, &self.outbox) {
            // The replicator may have copied it to the node already.
            unpinned = outbox
                .push(OutboxOp::Unpin(*root))
                .await
                .map_err(|e| e.to_string());
        }
        if destroyed.is_err() || unpinned.is_err() {
            self.left_orphan
                .store(true, std::sync::atomic::Ordering::Release);
            tracing::warn!(%root, "a failed put left an orphan; reconcile removes it");
        }
    }

    /// Streams a payload's plaintext, fetching up to `download_concurrency` blocks ahead
    /// in order. Every block is checked against its CID and every piece authenticated
    /// before its bytes are yielded; the size and SHA-256 are checked at the end, and a
    /// mismatch is the stream's last item.
    pub async fn get(&self, payload: &StoredPayload) -> Result<PlaintextStream, PayloadError> {
        let keys = Arc::clone(&self.keys);
        let key_id = payload.key_id.clone();
        let key = tokio::task::spawn_blocking(move || keys.load(&key_id))
            .await
            .expect("key store panicked")?;
        let depth = leaf_depth(&*self.reader, payload.cid).await?;
        let store = Arc::clone(&self.reader);
        let leaves = leaf_cids(Arc::clone(&store), payload.cid, depth);
        let fetched = leaves
            .map(move |leaf| {
                let store = Arc::clone(&store);
                async move {
                    let cid = leaf?;
                    let block = store
                        .get_block(&cid)
                        .await?
                        .ok_or_else(|| PayloadError::NotFound(format!("block {cid} is missing")))?;
                    leaf_data(cid, block)
                }
            })
            .buffered(self.config.download_concurrency);
        Ok(decrypt_and_verify(
            Box::pin(fetched),
            key,
            payload.size,
            payload.sha256,
        ))
    }

    /// Erases a payload: destroys its key (durably, first: from then on it is unreadable),
    /// then unpins it locally and, with Kubo, queues the unpin there. Idempotent.
    pub async fn erase(&self, key_id: &str, cid: &Cid) -> Result<(), PayloadError> {
        let keys = Arc::clone(&self.keys);
        let id = key_id.to_string();
        tokio::task::spawn_blocking(move || keys.destroy(&id))
            .await
            .expect("key store panicked")?;
        self.store.unpin(cid).await?;
        if let Some(outbox) = &self.outbox {
            outbox
                .push(OutboxOp::Unpin(*cid))
                .await
                .map_err(storage_error)?;
        }
        Ok(())
    }

    /// Bytes of block data in the local store (pinned payloads plus garbage not yet
    /// collected).
    pub async fn bytes_stored(&self) -> Result<u64, PayloadError> {
        Ok(self.store.stored_bytes().await?)
    }

    /// Roots pinned in the local store. A crash after `put` pinned a payload but before
    /// its record was committed leaves a pinned root no record names; a reconcile
    /// ([`Payloads::orphan_scan`]) unpins those after comparing with the ledger.
    pub async fn pinned_roots(&self) -> Result<Vec<Cid>, PayloadError> {
        Ok(self.store.pinned_roots().await?)
    }

    /// Unpins a root no record refers to (see [`Payloads::pinned_roots`]); its blocks go
    /// at the next GC. Its key, if stored, stays: [`Payloads::remove_orphans`] destroys
    /// every key no record names.
    pub async fn unpin_orphan(&self, root: &Cid) -> Result<(), PayloadError> {
        self.store.unpin(root).await?;
        if let Some(outbox) = &self.outbox {
            outbox
                .push(OutboxOp::Unpin(*root))
                .await
                .map_err(storage_error)?;
        }
        Ok(())
    }

    /// Starts a reconcile with the ledger: every pinned root and live key is an orphan
    /// candidate until [`OrphanScan::referenced`] strikes it off. Run it only while no
    /// `put` is in flight whose record is not yet committed (at start, before serving;
    /// or with the ledger's lock held), or that payload would be taken for an orphan.
    pub async fn orphan_scan(&self) -> Result<OrphanScan, PayloadError> {
        let roots: HashSet<Cid> = self.store.pinned_roots().await?.into_iter().collect();
        let keys = Arc::clone(&self.keys);
        let key_ids: HashSet<String> =
            tokio::task::spawn_blocking(move || keys.live_payload_key_ids())
                .await
                .expect("key store panicked")?
                .into_iter()
                .collect();
        Ok(OrphanScan {
            pinned_roots: roots.len(),
            live_keys: key_ids.len(),
            roots,
            key_ids,
        })
    }

    /// Finishes a reconcile: unpins every root and destroys every key the scan did not
    /// strike off (their payloads' blocks go at the next GC; the unpins reach the Kubo
    /// replica through the outbox). Durable when it returns.
    pub async fn remove_orphans(&self, scan: OrphanScan) -> Result<ReconcileReport, PayloadError> {
        let report = ReconcileReport {
            pinned_roots: scan.pinned_roots,
            live_keys: scan.live_keys,
            orphan_roots_unpinned: scan.roots.len(),
            orphan_keys_destroyed: scan.key_ids.len(),
        };
        // Concurrent, so the unpins and erasures share group commits.
        let unpins = stream::iter(scan.roots)
            .map(|root| async move { self.unpin_orphan(&root).await })
            .buffer_unordered(RECONCILE_CONCURRENCY);
        let destroys = stream::iter(scan.key_ids)
            .map(|key_id| {
                let keys = Arc::clone(&self.keys);
                async move {
                    tokio::task::spawn_blocking(move || keys.destroy(&key_id))
                        .await
                        .expect("key store panicked")
                        .map_err(PayloadError::from)
                }
            })
            .buffer_unordered(RECONCILE_CONCURRENCY);
        let mut outcomes = unpins.chain(destroys);
        while let Some(outcome) = outcomes.next().await {
            outcome?;
        }
        Ok(report)
    }

    /// [`Payloads::orphan_scan`] and [`Payloads::remove_orphans`] in one, given every
    /// `(root, key id)` the ledger references (every record version's payload).
    pub async fn reconcile<I>(&self, referenced: I) -> Result<ReconcileReport, PayloadError>
    where
        I: IntoIterator<Item = (Cid, String)>,
    {
        let mut scan = self.orphan_scan().await?;
        for (root, key_id) in referenced {
            scan.referenced(&root, &key_id);
        }
        self.remove_orphans(scan).await
    }

    /// Whether the master key is a file this store owns (and so can rotate).
    pub fn master_key_is_a_file(&self) -> bool {
        self.config.master_key_bytes.is_none()
    }

    /// Re-wraps every key under a new master key (a file; see
    /// [`KeyStore::rotate_master`]). Refused when the master key is not a file this
    /// store owns (given from the environment, a command, or a cluster's secret).
    pub async fn rotate_master(&self) -> Result<crate::keystore::Rotation, PayloadError> {
        if !self.master_key_is_a_file() {
            return Err(PayloadError::Storage(
                "the master key does not come from a file: rotate it where it comes from".into(),
            ));
        }
        let path = self
            .config
            .master_key_path
            .clone()
            .unwrap_or_else(|| self.config.data_dir.join("master.key"));
        let keys = Arc::clone(&self.keys);
        Ok(
            tokio::task::spawn_blocking(move || keys.rotate_master(&path))
                .await
                .expect("key store panicked")?,
        )
    }

    /// The key store: payload data keys and records' content keys.
    pub fn keys(&self) -> &Arc<KeyStore> {
        &self.keys
    }

    /// fdatasync calls of the local store and the key log since open (not the outbox's),
    /// for benchmarks.
    pub fn fsyncs(&self) -> u64 {
        self.store.fsyncs() + self.keys.fsyncs()
    }

    /// Starts a garbage collection of the local store in the background (on the current
    /// Tokio runtime), so the blocks of payloads unpinned (erased) leave the disk without
    /// holding up the caller. One runs at a time; one asked for while another runs runs
    /// after it. Failures are logged.
    pub fn collect_garbage_soon(&self) {
        use std::sync::atomic::Ordering;
        self.gc_again.store(true, Ordering::Release);
        if self.gc_running.swap(true, Ordering::AcqRel) {
            return;
        }
        let (store, running, again) = (
            Arc::clone(&self.store),
            Arc::clone(&self.gc_running),
            Arc::clone(&self.gc_again),
        );
        tokio::spawn(async move {
            loop {
                again.store(false, Ordering::Release);
                match store.gc().await {
                    Ok(stats) => tracing::info!(
                        blocks_removed = stats.blocks_removed,
                        bytes_removed = stats.bytes_removed,
                        "payload store garbage collected"
                    ),
                    Err(e) => tracing::warn!(error = %e, "payload store garbage collection"),
                }
                if again.load(Ordering::Acquire) {
                    continue;
                }
                running.store(false, Ordering::Release);
                // Asked for between the check and the release: run again if no one else
                // took it.
                if !again.load(Ordering::Acquire) || running.swap(true, Ordering::AcqRel) {
                    break;
                }
            }
        });
    }

    /// Runs garbage collection on the local store.
    pub async fn gc(&self) -> Result<crate::pinstore::GcStats, PayloadError> {
        Ok(self.store.gc().await?)
    }

    /// Replication figures; `None` without a Kubo node.
    pub fn replication(&self) -> Option<ReplicationStatus> {
        self.outbox.as_ref().map(|outbox| ReplicationStatus {
            outbox_depth: outbox.depth(),
            failures: outbox.failures(),
            replicated: outbox.replicated(),
        })
    }
}

/// Depth of the leaves below `root` (0: the root is the only leaf), following first
/// children. Balanced DAGs have every leaf at this depth.
async fn leaf_depth(store: &dyn PinStore, root: Cid) -> Result<usize, PayloadError> {
    let mut cid = root;
    for depth in 0..=DAG_DEPTH_MAX {
        if cid.codec() == Codec::Raw {
            return Ok(depth);
        }
        let links = dag_links(store, root, cid, depth).await?;
        match links.first() {
            None => return Ok(depth),
            Some(child) => cid = *child,
        }
    }
    Err(PayloadError::Corrupt(format!(
        "DAG under {root} is deeper than {DAG_DEPTH_MAX}"
    )))
}

/// The links of the dag-pb node `cid`, `depth` levels under the payload `root` (a missing
/// root is the payload missing; a missing node below it, a block missing).
pub(crate) async fn dag_links(
    store: &dyn PinStore,
    root: Cid,
    cid: Cid,
    depth: usize,
) -> Result<Vec<Cid>, PayloadError> {
    let block = store.get_block(&cid).await?.ok_or_else(|| {
        if depth == 0 {
            PayloadError::NotFound(format!("payload {root}"))
        } else {
            PayloadError::NotFound(format!("block {cid} is missing"))
        }
    })?;
    let node = decode_node(&block).map_err(|e| PayloadError::Corrupt(e.to_string()))?;
    Ok(node.links)
}

/// The leaves under `root`, left to right. Fetches only parent nodes (small); leaves are
/// fetched by the caller, so it can fetch several ahead.
fn leaf_cids(
    store: Arc<dyn PinStore>,
    root: Cid,
    leaf_depth: usize,
) -> impl Stream<Item = Result<Cid, PayloadError>> + Send {
    let stack = vec![(root, 0usize)];
    stream::unfold((store, stack), move |(store, mut stack)| async move {
        loop {
            let (cid, depth) = stack.pop()?;
            if depth == leaf_depth {
                return Some((Ok(cid), (store, stack)));
            }
            let parent = match store.get_block(&cid).await {
                Ok(Some(block)) => block,
                Ok(None) => {
                    let error = PayloadError::NotFound(format!("block {cid} is missing"));
                    return Some((Err(error), (store, Vec::new())));
                }
                Err(error) => return Some((Err(error.into()), (store, Vec::new()))),
            };
            match decode_node(&parent) {
                Ok(node) if !node.links.is_empty() => {
                    stack.extend(node.links.iter().rev().map(|child| (*child, depth + 1)));
                }
                _ => {
                    let error = PayloadError::Corrupt(format!(
                        "node {cid} is not a parent at depth {depth}"
                    ));
                    return Some((Err(error), (store, Vec::new())));
                }
            }
        }
    })
}

/// The file bytes of a leaf: a raw block itself, or a dag-pb leaf's UnixFS data.
fn leaf_data(cid: Cid, block: Bytes) -> Result<Bytes, PayloadError> {
    match cid.codec() {
        Codec::Raw => Ok(block),
        Codec::DagPb => {
            let node = decode_node(&block).map_err(|e| PayloadError::Corrupt(e.to_string()))?;
            if !node.links.is_empty() {
                return Err(PayloadError::Corrupt(format!("leaf {cid} has links")));
            }
            Ok(block.slice_ref(node.data))
        }
    }
}

struct DecryptState {
    ciphertext: Pin<Box<dyn Stream<Item = Result<Bytes, PayloadError>> + Send>>,
    decryptor: Option<Decryptor>,
    hasher: Sha256,
    size: u64,
    expected_size: u64,
    expected_sha256: [u8; 32],
}

fn decrypt_and_verify(
    ciphertext: Pin<Box<dyn Stream<Item = Result<Bytes, PayloadError>> + Send>>,
    key: DataKey,
    expected_size: u64,
    expected_sha256: [u8; 32],
) -> PlaintextStream {
    let state = DecryptState {
        ciphertext,
        decryptor: Some(Decryptor::new(&key)),
        hasher: Sha256::new(),
        size: 0,
        expected_size,
        expected_sha256,
    };
    Box::pin(stream::unfold(state, |mut state| async move {
        // `decryptor` is `None` once the stream ended or failed: nothing more is yielded.
        loop {
            let decryptor = state.decryptor.as_mut()?;
            let step = match state.ciphertext.next().await {
                Some(Ok(piece)) => decryptor.push(&piece).map_err(PayloadError::from),
                Some(Err(error)) => Err(error),
                None => {
                    let decryptor = state.decryptor.take().expect("checked above");
                    let last = decryptor
                        .finish()
                        .map_err(PayloadError::from)
                        .and_then(|plain| state.account(&plain).map(|()| plain))
                        .and_then(|plain| state.verify_end().map(|()| plain));
                    return match last {
                        Ok(plain) if plain.is_empty() => None,
                        Ok(plain) => Some((Ok(Bytes::from(plain)), state)),
                        Err(error) => Some((Err(error), state)),
                    };
                }
            };
            match step.and_then(|plain| state.account(&plain).map(|()| plain)) {
                Ok(plain) if plain.is_empty() => continue,
                Ok(plain) => return Some((Ok(Bytes::from(plain)), state)),
                Err(error) => {
                    state.decryptor = None;
                    return Some((Err(error), state));
                }
            }
        }
    }))
}

impl DecryptState {
    fn account(&mut self, plain: &[u8]) -> Result<(), PayloadError> {
        self.size += plain.len() as u64;
        if self.size > self.expected_size {
            return Err(PayloadError::Corrupt(
                "payload is longer than recorded".into(),
            ));
        }
        self.hasher.update(plain);
        Ok(())
    }

    fn verify_end(&mut self) -> Result<(), PayloadError> {
        if self.size != self.expected_size {
            return Err(PayloadError::Corrupt(
                "payload size differs from the record".into(),
            ));
        }
        let digest: [u8; 32] = std::mem::take(&mut self.hasher).finalize().into();
        if digest != self.expected_sha256 {
            return Err(PayloadError::Corrupt(
                "payload SHA-256 differs from the record".into(),
            ));
        }
        Ok(())
    }
}
