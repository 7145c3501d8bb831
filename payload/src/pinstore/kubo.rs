//! A Kubo node (or any node serving Kubo's RPC API) as a pin store, through
//! `ipfs-api-backend-hyper`.
//!
//! Works around the client's known flaws (issue 5): blocks go up with `block/put` (never
//! `add`, whose NDJSON answer the client parses as one object), health uses `version`
//! (never `id`, which fails on Kubo ≥ 0.22). The client opens a connection per request
//! (`pool_max_idle_per_host(0)`); the pipeline's bounded worker pool bounds how many.
//!
//! `block/get` and `block/stat` on a block the node lacks ask the network and may not
//! return; they run under a timeout, after which the block counts as absent. GC is the
//! node's own (`ipfs repo gc`; the client has no `repo/gc`), so [`PinStore::gc`] and
//! [`PinStore::stored_bytes`] answer [`PinStoreError::Unsupported`].

use std::io::Cursor;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::TryStreamExt;
use ipfs_api_backend_hyper::{request::BlockPut, IpfsApi, IpfsClient, TryFromUri};

use super::{GcStats, PinStore, PinStoreError};
use crate::cid::{Cid, Codec};
use crate::unixfs::Block;

/// How long a lookup of a possibly absent block may take before it counts as absent.
pub const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

/// A pin store backed by a node's HTTP RPC API.
pub struct KuboStore {
    client: IpfsClient,
    lookup_timeout: Duration,
}

fn unavailable(error: ipfs_api_backend_hyper::Error) -> PinStoreError {
    PinStoreError::Unavailable(error.to_string())
}

impl KuboStore {
    /// A store for the RPC API at `api_url` (e.g. `http://127.0.0.1:5001`). Does not
    /// contact the node; see [`KuboStore::health`].
    pub fn new(api_url: &str) -> Result<KuboStore, PinStoreError> {
        let client = IpfsClient::from_str(api_url)
            .map_err(|e| PinStoreError::Unavailable(format!("bad API URL {api_url}: {e}")))?;
        Ok(KuboStore {
            client,
            lookup_timeout: LOOKUP_TIMEOUT,
        })
    }

    /// Changes the lookup timeout (tests use a short one).
    pub fn with_lookup_timeout(mut self, timeout: Duration) -> KuboStore {
        self.lookup_timeout = timeout;
        self
    }

    /// The node's version string; an error if it does not answer.
    pub async fn health(&self) -> Result<String, PinStoreError> {
        let version = self.client.version().await.map_err(unavailable)?;
        Ok(version.version)
    }
}

fn is_not_pinned(error: &ipfs_api_backend_hyper::Error) -> bool {
    match error {
        ipfs_api_backend_hyper::Error::Api(api) => api.message.contains("not pinned"),
        _ => false,
    }
}

#[async_trait]
impl PinStore for KuboStore {
    async fn put_block(&self, block: Block) -> Result<(), PinStoreError> {
        let options = BlockPut {
            format: Some(match block.cid.codec() {
                Codec::Raw => "raw",
                Codec::DagPb => "dag-pb",
            }),
            mhtype: Some("sha2-256"),
            mhlen: Some(32),
            pin: Some(false),
        };
        let response = self
            .client
            .block_put_with_options(Cursor::new(block.data), options)
            .await
            .map_err(unavailable)?;
        // Compare parsed CIDs: js-ipfs answers CIDv0 for dag-pb, Kubo CIDv1.
        let returned: Result<Cid, _> = response.key.parse();
        match returned {
            Ok(cid) if cid.same_content(&block.cid) => Ok(()),
            _ => Err(PinStoreError::CidMismatch {
                expected: block.cid,
                actual: response.key,
            }),
        }
    }

    async fn get_block(&self, cid: &Cid) -> Result<Option<Bytes>, PinStoreError> {
        let text = cid.to_string();
        let fetch = self
            .client
            .block_get(&text)
            .map_ok(|chunk| chunk.to_vec())
            .try_concat();
        let data = match tokio::time::timeout(self.lookup_timeout, fetch).await {
            Err(_elapsed) => return Ok(None),
            Ok(result) => result.map_err(unavailable)?,
        };
        if !cid.verifies(&data) {
            return Err(PinStoreError::Corrupt(*cid));
        }
        Ok(Some(Bytes::from(data)))
    }

    async fn has_block(&self, cid: &Cid) -> Result<bool, PinStoreError> {
        let text = cid.to_string();
        match tokio::time::timeout(self.lookup_timeout, self.client.block_stat(&text)).await {
            Err(_elapsed) => Ok(false),
            Ok(Ok(_)) => Ok(true),
            Ok(Err(ipfs_api_backend_hyper::Error::Api(_))) => Ok(false),
            Ok(Err(error)) => Err(unavailable(error)),
        }
    }

    async fn pin(&self, root: &Cid) -> Result<(), PinStoreError> {
        // Every block must be local first: pin/add would otherwise search the network.
        let text = root.to_string();
        if !self.has_block(root).await? {
            return Err(PinStoreError::Missing(*root));
        }
        let pinning = self.client.pin_add(&text, true);
        match tokio::time::timeout(self.lookup_timeout * 4, pinning).await {
            Err(_elapsed) => Err(PinStoreError::Missing(*root)),
            Ok(result) => result.map(|_| ()).map_err(unavailable),
        }
    }

    async fn unpin(&self, root: &Cid) -> Result<(), PinStoreError> {
        match self.client.pin_rm(&root.to_string(), true).await {
            Ok(_) => Ok(()),
            Err(error) if is_not_pinned(&error) => Ok(()),
            Err(error) => Err(unavailable(error)),
        }
    }

    async fn is_pinned(&self, root: &Cid) -> Result<bool, PinStoreError> {
        let text = root.to_string();
        match self.client.pin_ls(Some(&text), Some("recursive")).await {
            Ok(response) => Ok(!response.keys.is_empty()),
            Err(ipfs_api_backend_hyper::Error::Api(_)) => Ok(false),
            Err(error) => Err(unavailable(error)),
        }
    }

    async fn pinned_roots(&self) -> Result<Vec<Cid>, PinStoreError> {
        let response = self
            .client
            .pin_ls(None, Some("recursive"))
            .await
            .map_err(unavailable)?;
        // A node may hold pins in CID forms this crate does not handle; they are not ours.
        Ok(response
            .keys
            .keys()
            .filter_map(|text| text.parse().ok())
            .collect())
    }

    async fn sync(&self) -> Result<(), PinStoreError> {
        Ok(()) // The node makes its own writes durable before answering.
    }

    async fn gc(&self) -> Result<GcStats, PinStoreError> {
        Err(PinStoreError::Unsupported(
            "gc on a Kubo node (run `ipfs repo gc`)",
        ))
    }

    async fn stored_bytes(&self) -> Result<u64, PinStoreError> {
        Err(PinStoreError::Unsupported(
            "stored bytes of a Kubo node (see `ipfs repo stat`)",
        ))
    }
}
