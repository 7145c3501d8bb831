//! The storage layer's errors. Operating errors (I/O, a full disk, corrupt bytes found on
//! open) are values; a broken invariant inside the layer is a panic.

use std::io;

/// What can go wrong in the ledger's storage.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// An I/O call failed. `context` says which file and operation.
    #[error("I/O error while {context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    /// An earlier write or fsync failed, so the state on disk is unknown; the ledger
    /// refuses every write until it is reopened (and recovered).
    #[error("the ledger is poisoned by an earlier failure ({0}); reopen it to recover")]
    Poisoned(String),
    /// A block in the middle of the chain (or one the index says was committed) is
    /// damaged. Recovery stops here rather than guess.
    #[error("block {number} is corrupt ({reason}) in segment {segment} at offset {offset}")]
    CorruptBlock {
        number: u64,
        segment: u32,
        offset: u64,
        reason: String,
    },
    /// The index and the segment files disagree.
    #[error("the index disagrees with the segment files at block {number}: {reason}")]
    IndexMismatch { number: u64, reason: String },
    /// A block handed to `append` does not extend the tip.
    #[error("block {got} does not extend the chain: {reason} (height {height})")]
    OutOfOrder {
        got: u64,
        height: u64,
        reason: &'static str,
    },
    /// The RocksDB index failed.
    #[error("index error: {0}")]
    Index(String),
    /// Another process (or another open in this one) holds the ledger: its index's lock
    /// is taken. Nothing was read or changed.
    #[error(
        "the ledger is already open: {path} is held by another medledger process on the \
         same data directory (a server, rebuild or verify), or by this one; stop it first"
    )]
    InUse { path: String },
    /// A block is larger than a frame may be.
    #[error("block of {len} bytes exceeds the frame limit of {max} bytes")]
    BlockTooLarge { len: u64, max: u64 },
    /// The ledger options are out of range.
    #[error("invalid ledger option: {0}")]
    InvalidOption(String),
}

impl StorageError {
    /// An [`StorageError::Io`] with a context string.
    pub fn io(context: impl Into<String>, source: io::Error) -> Self {
        StorageError::Io {
            context: context.into(),
            source,
        }
    }
}

impl From<rocksdb::Error> for StorageError {
    fn from(e: rocksdb::Error) -> Self {
        StorageError::Index(e.into_string())
    }
}
