//! Reads that fall back from the local store to a replica: a block missing or corrupt
//! locally is fetched from the IPFS node and served only if it hashes to its CID. Every
//! other operation is the local store's.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

use super::{GcStats, PinStore, PinStoreError};
use crate::cid::Cid;
use crate::unixfs::Block;

/// The local store, with `remote` as a read replica.
pub struct ReadFallback {
    /// The store every operation goes to first (and the only one written).
    pub local: Arc<dyn PinStore>,
    /// The replica reads fall back to.
    pub remote: Arc<dyn PinStore>,
}

impl ReadFallback {
    async fn read_remote(&self, cid: &Cid) -> Result<Option<Bytes>, PinStoreError> {
        match self.remote.get_block(cid).await? {
            Some(bytes) if cid.verifies(&bytes) => {
                tracing::warn!(%cid, "block read from the IPFS replica (missing or corrupt locally)");
                Ok(Some(bytes))
            }
            Some(bytes) => Err(PinStoreError::CidMismatch {
                expected: *cid,
                actual: format!(
                    "{} bytes from the replica that do not hash to it",
                    bytes.len()
                ),
            }),
            None => Ok(None),
        }
    }
}

#[async_trait]
impl PinStore for ReadFallback {
    async fn put_block(&self, block: Block) -> Result<(), PinStoreError> {
        self.local.put_block(block).await
    }

    async fn get_block(&self, cid: &Cid) -> Result<Option<Bytes>, PinStoreError> {
        match self.local.get_block(cid).await {
            Ok(Some(bytes)) => Ok(Some(bytes)),
            Ok(None) | Err(PinStoreError::Corrupt(_)) => self.read_remote(cid).await,
            Err(e) => Err(e),
        }
    }

    async fn has_block(&self, cid: &Cid) -> Result<bool, PinStoreError> {
        Ok(self.local.has_block(cid).await? || self.remote.has_block(cid).await?)
    }

    async fn pin(&self, root: &Cid) -> Result<(), PinStoreError> {
        self.local.pin(root).await
    }

    async fn unpin(&self, root: &Cid) -> Result<(), PinStoreError> {
        self.local.unpin(root).await
    }

    async fn is_pinned(&self, root: &Cid) -> Result<bool, PinStoreError> {
        self.local.is_pinned(root).await
    }

    async fn pinned_roots(&self) -> Result<Vec<Cid>, PinStoreError> {
        self.local.pinned_roots().await
    }

    async fn sync(&self) -> Result<(), PinStoreError> {
        self.local.sync().await
    }

    async fn gc(&self) -> Result<GcStats, PinStoreError> {
        self.local.gc().await
    }

    async fn stored_bytes(&self) -> Result<u64, PinStoreError> {
        self.local.stored_bytes().await
    }
}
