//! The storage layer's errors. Operating errors (I/O, a full disk, corrupt bytes found on
//! open) are values; a broken invariant inside the layer is a panic.

use std::io;

use crate::ledger::block::BlockDecodeError;
use crate::ledger::rules::LinkBreak;
use crate::ledger::segment::FrameDamage;

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
    /// Reading block `number` failed: an I/O error (EIO from a failing disk, say), not
    /// bytes found wrong. The block may read again later; nothing was changed.
    #[error("reading block {number} failed while {context}: {source}")]
    BlockRead {
        number: u64,
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
    #[error("block {number} is corrupt ({damage}) in segment {segment} at offset {offset}")]
    CorruptBlock {
        number: u64,
        segment: u32,
        offset: u64,
        damage: Damage,
    },
    /// The index and the segment files disagree.
    #[error("the index disagrees with the segment files at block {number}: {reason}")]
    IndexMismatch { number: u64, reason: String },
    /// A block handed to `append` does not extend the tip (the same rules recovery
    /// checks, so nothing is made durable that a reopen would refuse). Nothing was
    /// written.
    #[error("block {got} does not extend the chain: {reason} (height {height})")]
    DoesNotExtend {
        got: u64,
        height: u64,
        reason: LinkBreak,
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
    /// The disk is full, or the block would take its free space below the reserve kept
    /// for the index, the views and recovery. Nothing was written and the ledger is not
    /// poisoned: appends succeed again once space is freed.
    #[error("{}", no_space_message(*.free, *.reserve))]
    NoSpace { free: Option<u64>, reserve: u64 },
    /// A block is larger than a frame may be.
    #[error("block of {len} bytes exceeds the frame limit of {max} bytes")]
    BlockTooLarge { len: u64, max: u64 },
    /// The ledger options are out of range.
    #[error("invalid ledger option: {0}")]
    InvalidOption(String),
}

fn no_space_message(free: Option<u64>, reserve: u64) -> String {
    match free {
        Some(free) => format!(
            "the disk is full: {free} bytes free, {reserve} kept in reserve for the index, \
             the views and recovery; nothing was written"
        ),
        None => "the disk is full: a write found no space; nothing was written".to_string(),
    }
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

/// What is wrong with a block found on disk (in [`StorageError::CorruptBlock`]).
#[derive(Debug, thiserror::Error)]
pub enum Damage {
    /// Its frame is not whole (short, impossible length, CRC mismatch).
    #[error(transparent)]
    Frame(#[from] FrameDamage),
    /// The frame is whole but its bytes are not a block.
    #[error(transparent)]
    Layout(#[from] BlockDecodeError),
    /// The block does not extend the chain before it.
    #[error(transparent)]
    Link(#[from] LinkBreak),
    /// A bad frame that is not a torn tail: segments follow the one holding it.
    #[error("{0}, and later segments exist")]
    FrameBeforeLaterSegments(FrameDamage),
    /// A bad frame that is not a torn tail: a valid later block survives after it.
    #[error("{damage}, and block {number} survives after it at offset {offset}")]
    FrameBeforeLaterBlock {
        damage: FrameDamage,
        number: u64,
        offset: u64,
    },
    /// The segment file that should hold it does not exist.
    #[error("segment file is missing")]
    SegmentMissing,
    /// The segment file the index names cannot be opened.
    #[error("its segment cannot be opened: {0}")]
    SegmentUnopenable(io::Error),
    /// The segment is shorter than the index says.
    #[error("the index says it ends at {end} but the segment has {file_len} bytes")]
    SegmentShorterThanIndexed { end: u64, file_len: u64 },
    /// The frame at its indexed place holds another block.
    #[error("holds block {0}")]
    OtherBlock(u64),
    /// The frame at its indexed place has another length than the index says.
    #[error("frame length differs from the index")]
    FrameLengthNotIndexed,
    /// The segment ends at its indexed place.
    #[error("no frame at the indexed offset")]
    NoFrameAtIndexedOffset,
}
