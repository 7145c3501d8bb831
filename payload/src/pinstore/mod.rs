//! Where blocks live: the [`PinStore`] trait and its two implementations, the embedded
//! blockstore ([`EmbeddedStore`]) and a Kubo node over its RPC API ([`KuboStore`]).

mod embedded;
mod fallback;
mod kubo;

use async_trait::async_trait;
use bytes::Bytes;

use crate::cid::Cid;
use crate::unixfs::Block;

pub use embedded::EmbeddedStore;
pub use fallback::ReadFallback;
pub use kubo::KuboStore;

/// What a garbage collection removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GcStats {
    /// Blocks removed.
    pub blocks_removed: u64,
    /// Bytes of block data removed.
    pub bytes_removed: u64,
    /// Blocks kept.
    pub blocks_kept: u64,
}

/// Errors of a pin store. Messages name CIDs, never block bytes.
#[derive(Debug, thiserror::Error)]
pub enum PinStoreError {
    /// A block's bytes do not hash to its CID (on put), or a store returned another CID.
    #[error("block does not match its CID {expected} (got {actual})")]
    CidMismatch {
        /// The CID computed here.
        expected: Cid,
        /// What the bytes or the node said.
        actual: String,
    },
    /// A stored block failed verification on read; it was not served.
    #[error("stored block {0} is corrupt")]
    Corrupt(Cid),
    /// Pinning needs a block the store does not have.
    #[error("block {0} is missing")]
    Missing(Cid),
    /// A dag-pb block could not be decoded.
    #[error("block {cid} is not a valid dag-pb node: {reason}")]
    InvalidBlock {
        /// The block.
        cid: Cid,
        /// What is wrong.
        reason: String,
    },
    /// The remote node did not answer or answered with an error.
    #[error("IPFS node unavailable: {0}")]
    Unavailable(String),
    /// This store cannot do that.
    #[error("not supported by this pin store: {0}")]
    Unsupported(&'static str),
    /// A failed fsync left the store in an unknown state; it refuses writes until reopened.
    #[error("pin store is poisoned after a failed write; restart to recover")]
    Poisoned,
    /// Local I/O.
    #[error("pin store I/O: {0}")]
    Io(#[from] std::io::Error),
}

/// A content-addressed block store with recursive pins.
///
/// Object safe, so a server can hold `Arc<dyn PinStore>`. Guarantees every implementation
/// keeps (checked by the conformance suite in `tests/pinstore_conformance.rs`):
/// `get_block` returns only bytes that hash to the CID; `pin` fails with
/// [`PinStoreError::Missing`] unless the root's whole DAG is present; after `sync` or
/// `pin` returns, blocks put before it and the pin survive a crash; `gc` never removes a
/// block reachable from a pinned root.
#[async_trait]
pub trait PinStore: Send + Sync {
    /// Stores `block` (idempotent). Not necessarily durable before [`PinStore::sync`].
    async fn put_block(&self, block: Block) -> Result<(), PinStoreError>;
    /// The block's bytes, verified against `cid`, or `None` if the store lacks it.
    async fn get_block(&self, cid: &Cid) -> Result<Option<Bytes>, PinStoreError>;
    /// True if the store holds the block.
    async fn has_block(&self, cid: &Cid) -> Result<bool, PinStoreError>;
    /// Pins `root` and everything it links to; durable when it returns.
    async fn pin(&self, root: &Cid) -> Result<(), PinStoreError>;
    /// Removes the pin on `root` (idempotent); durable when it returns.
    async fn unpin(&self, root: &Cid) -> Result<(), PinStoreError>;
    /// True if `root` is pinned recursively.
    async fn is_pinned(&self, root: &Cid) -> Result<bool, PinStoreError>;
    /// Every root pinned recursively, in no particular order (to reconcile pins with
    /// the ledger after a crash between `pin` and the record's commit).
    async fn pinned_roots(&self) -> Result<Vec<Cid>, PinStoreError>;
    /// Makes every block put so far durable.
    async fn sync(&self) -> Result<(), PinStoreError>;
    /// Removes blocks no pinned root reaches (see each implementation for which ones).
    async fn gc(&self) -> Result<GcStats, PinStoreError>;
    /// Bytes of block data held.
    async fn stored_bytes(&self) -> Result<u64, PinStoreError>;
    /// fdatasync calls this store made since it was opened (0 where it does none itself),
    /// for benchmarks: group commit shows as far fewer fsyncs than payloads.
    fn fsyncs(&self) -> u64 {
        0
    }
}
