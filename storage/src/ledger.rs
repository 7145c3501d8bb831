//! The ledger: an append-only chain of blocks in segment files, indexed in RocksDB.
//!
//! - [`Ledger::open`] recovers: it scans what the index does not yet cover, truncates a
//!   torn tail that was never acknowledged, stops with the block number at damage in the
//!   middle, and re-indexes what the index lacks (see [`recovery`]).
//! - [`Ledger::append`] checks that the block extends the tip, writes its frame and
//!   fdatasyncs the segment (and the directory when it creates a segment) before it
//!   returns. A failed write or sync poisons the ledger: every later append fails until
//!   it is reopened. A full disk does not: a block that would eat into the reserve, or
//!   whose write finds no space, is refused with nothing written and the next append
//!   may succeed once space is freed.
//! - Readers (by number, by hash, by tx id, from a height on) run concurrently with the
//!   writer and see exactly the blocks that are durable and indexed.

pub mod block;
/// The crash-test file system: tests only (feature `test-util`, which the workspace's
/// dev-dependencies enable), never in the server's build.
#[cfg(feature = "test-util")]
pub mod crashfs;
pub mod fs;
pub mod index;
pub mod recovery;
pub mod rules;
pub mod segment;
pub mod verify;

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use crate::error::StorageError;
use crate::merkle::Hash;
use block::{Block, BlockFrame};
use fs::{FileSegmentDir, SegmentDir, SegmentFile};
pub use index::{BlockLocation, Index, IndexEntry, TxLocation};
pub use recovery::RecoveryReport;
use rules::{check_link, tx_id, tx_id_text, TX_ID_LEN};
use segment::{encode_frame, FRAME_BODY_MAX};

/// Ledger settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LedgerOptions {
    /// A segment is closed and the next one started when a block would take it past
    /// this size (a single larger block still gets a segment of its own).
    pub segment_bytes_max: u64,
    /// The genesis block's timestamp when the ledger is created (None: the clock's).
    /// A cluster's nodes fix it, so each creates the same genesis block on its own.
    pub genesis_timestamp_ms: Option<i64>,
    /// Free space an append leaves on the segments' file system: a block that would
    /// take the free space below it is refused ([`StorageError::NoSpace`], nothing
    /// written, not poisoned), so the index and the views, which share the disk, can
    /// still flush and recovery can still run. 0: no reserve (a write fails only when
    /// the disk is full, still without poisoning the ledger).
    pub reserve_bytes: u64,
}

impl Default for LedgerOptions {
    fn default() -> Self {
        LedgerOptions {
            segment_bytes_max: 64 * 1024 * 1024,
            genesis_timestamp_ms: None,
            reserve_bytes: 0,
        }
    }
}

impl LedgerOptions {
    /// Checks the options are in range (segments of 4 KiB to 4 GiB).
    pub fn validate(&self) -> Result<(), StorageError> {
        if !(4096..=4 << 30).contains(&self.segment_bytes_max) {
            return Err(StorageError::InvalidOption(format!(
                "segment_bytes_max must be between 4096 and 4 GiB, got {}",
                self.segment_bytes_max
            )));
        }
        Ok(())
    }
}

/// The head of the chain: blocks `0..height` exist; the last has hash `tip_hash`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChainTip {
    pub height: u64,
    pub tip_hash: Hash,
    pub tip_timestamp_ms: i64,
    /// The last block's format (a block's format never decreases).
    pub tip_format: u8,
}

impl ChainTip {
    /// The tip of a chain with no blocks yet.
    pub const EMPTY: ChainTip = ChainTip {
        height: 0,
        tip_hash: [0; 32],
        tip_timestamp_ms: 0,
        tip_format: 0,
    };

    /// The tip once `block` (whose hash is `hash`) extends the chain.
    pub fn after(block: &Block, hash: Hash) -> ChainTip {
        ChainTip {
            height: block.header.number + 1,
            tip_hash: hash,
            tip_timestamp_ms: block.header.timestamp_ms,
            tip_format: block.header.format,
        }
    }
}

/// What `append` returns once the block is durable and indexed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AppendReceipt {
    pub number: u64,
    pub hash: Hash,
    pub location: BlockLocation,
}

struct Writer {
    segment: u32,
    file: Arc<dyn SegmentFile>,
    len: u64,
    poisoned: Option<String>,
    frame: Vec<u8>,
    tx_ids: Vec<[u8; 16]>,
}

/// An open ledger. Share it with `Arc`; one thread appends, any number read.
pub struct Ledger {
    dir: Arc<dyn SegmentDir>,
    index: Index,
    options: LedgerOptions,
    writer: Mutex<Writer>,
    tip: RwLock<ChainTip>,
    files: Mutex<OpenSegments>,
    fsyncs: AtomicU64,
}

/// Segment files kept open for readers, at most this many: a reader of a 64 GiB ledger
/// end to end (a rebuild, a verify) would otherwise hold ~1,000 descriptors beside the
/// rebuild's partition files and RocksDB's.
pub const OPEN_SEGMENTS_MAX: usize = 64;

/// The readers' open segment files, least recently used closed first. A file evicted
/// while a reader still holds it stays open until that reader drops it.
#[derive(Default)]
struct OpenSegments {
    files: HashMap<u32, (Arc<dyn SegmentFile>, u64)>,
    /// Uses so far; a file's last use orders eviction.
    uses: u64,
}

impl OpenSegments {
    fn get(&mut self, segment: u32) -> Option<Arc<dyn SegmentFile>> {
        self.uses += 1;
        let uses = self.uses;
        self.files.get_mut(&segment).map(|(file, used)| {
            *used = uses;
            Arc::clone(file)
        })
    }

    fn insert(&mut self, segment: u32, file: Arc<dyn SegmentFile>) {
        if self.files.len() >= OPEN_SEGMENTS_MAX {
            // A scan of at most 64 entries, once per open: cheaper than keeping an order.
            let oldest = self
                .files
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(segment, _)| *segment)
                .expect("the cache is full, so not empty");
            self.files.remove(&oldest);
        }
        self.uses += 1;
        self.files.insert(segment, (file, self.uses));
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The guarded state is only changed by code that cannot panic midway; a poisoned
    // mutex means a panic elsewhere, and the ledger's own poison flag covers I/O failure.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Ledger {
    /// Opens the ledger in `data_dir` (segments in `blocks/`, index in `index/`),
    /// creating it with a genesis block if it is empty, and recovers it.
    pub fn open(
        data_dir: &Path,
        options: LedgerOptions,
    ) -> Result<(Ledger, RecoveryReport), StorageError> {
        let dir = FileSegmentDir::open(data_dir.join("blocks")).map_err(|e| {
            StorageError::io(format!("creating {}", data_dir.join("blocks").display()), e)
        })?;
        Ledger::open_with(Arc::new(dir), &data_dir.join("index"), options)
    }

    /// Opens a ledger over any segment directory (tests pass a crash-injecting one).
    pub fn open_with(
        dir: Arc<dyn SegmentDir>,
        index_path: &Path,
        options: LedgerOptions,
    ) -> Result<(Ledger, RecoveryReport), StorageError> {
        options.validate()?;
        let index = Index::open(index_path)?;
        let rec = recovery::recover(dir.as_ref(), &index)?;
        let ledger = Ledger {
            dir,
            index,
            options,
            writer: Mutex::new(Writer {
                segment: rec.segment,
                file: rec.file,
                len: rec.segment_len,
                poisoned: None,
                frame: Vec::new(),
                tx_ids: Vec::new(),
            }),
            tip: RwLock::new(rec.tip),
            files: Mutex::new(OpenSegments::default()),
            fsyncs: AtomicU64::new(rec.report.fsyncs),
        };
        let mut report = rec.report;
        if ledger.tip().height == 0 {
            let timestamp_ms = ledger.options.genesis_timestamp_ms.unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_millis() as i64)
                    .unwrap_or(0)
            });
            ledger.append(&Block::genesis(timestamp_ms))?;
            report.created = true;
        }
        report.height = ledger.tip().height;
        Ok((ledger, report))
    }

    /// Bytes the ledger's index holds in memory, by what holds them (for `/metrics`).
    pub fn index_memory(&self) -> Vec<(&'static str, u64)> {
        self.index.memory()
    }

    /// The current head of the chain.
    pub fn tip(&self) -> ChainTip {
        *self.tip.read().unwrap_or_else(|p| p.into_inner())
    }

    /// fdatasync calls made by this ledger (segment data and directory), since open.
    pub fn fsyncs(&self) -> u64 {
        self.fsyncs.load(Ordering::Relaxed)
    }

    /// Why the ledger refuses writes, if it does.
    pub fn poisoned(&self) -> Option<String> {
        lock(&self.writer).poisoned.clone()
    }

    /// The index (for verification and tools).
    pub fn index(&self) -> &Index {
        &self.index
    }

    /// The segment directory (for verification and tools).
    pub fn segments(&self) -> &dyn SegmentDir {
        self.dir.as_ref()
    }

    /// Appends a block that extends the tip and returns once it is durable and indexed.
    ///
    /// Errors: [`StorageError::DoesNotExtend`] if the block breaks a rule of
    /// [`rules::check_link`] (its number is not the height, its prev_hash is not the tip's
    /// hash, its Merkle root is wrong, a tx has no id; nothing is written); [`StorageError::Poisoned`]
    /// if an earlier failure poisoned the ledger; [`StorageError::NoSpace`] if the disk is
    /// full or the block would eat into the reserve (nothing written, not poisoned); any
    /// other I/O error poisons it.
    pub fn append(&self, block: &Block) -> Result<AppendReceipt, StorageError> {
        let mut w = lock(&self.writer);
        if let Some(why) = &w.poisoned {
            return Err(StorageError::Poisoned(why.clone()));
        }
        let tip = self.tip();
        let h = &block.header;
        check_link(block, &tip).map_err(|reason| StorageError::DoesNotExtend {
            got: h.number,
            height: tip.height,
            reason,
        })?;
        let len = block.encoded_len() as u64;
        if len > FRAME_BODY_MAX {
            return Err(StorageError::BlockTooLarge {
                len,
                max: FRAME_BODY_MAX,
            });
        }
        let mut frame = std::mem::take(&mut w.frame);
        encode_frame(block, &mut frame);
        let result = self
            .check_space(frame.len() as u64)
            .and_then(|()| self.write_frame(&mut w, &frame));
        w.frame = frame;
        let location = match result {
            Ok(loc) => loc,
            Err(e @ StorageError::NoSpace { .. }) => return Err(e),
            Err(e) => {
                w.poisoned = Some(e.to_string());
                return Err(e);
            }
        };
        let hash = block.hash();
        let mut tx_ids = std::mem::take(&mut w.tx_ids);
        tx_ids.clear();
        tx_ids.extend(
            block
                .txs
                .iter()
                .map(|t| tx_id(t).expect("check_link found an id in every tx")),
        );
        let indexed = self.index.put(&[IndexEntry {
            number: h.number,
            hash,
            location,
            tx_ids: &tx_ids,
        }]);
        w.tx_ids = tx_ids;
        if let Err(e) = indexed {
            // The block is durable but not findable; recovery on reopen re-indexes it.
            w.poisoned = Some(e.to_string());
            return Err(e);
        }
        *self.tip.write().unwrap_or_else(|p| p.into_inner()) = ChainTip::after(block, hash);
        Ok(AppendReceipt {
            number: h.number,
            hash,
            location,
        })
    }

    /// Refuses a frame of `len` bytes that would take the free space below the reserve.
    fn check_space(&self, len: u64) -> Result<(), StorageError> {
        let reserve = self.options.reserve_bytes;
        if reserve == 0 {
            return Ok(());
        }
        let free = self
            .dir
            .free_bytes()
            .map_err(|e| StorageError::io("reading the free space of the blocks directory", e))?;
        match free {
            Some(free) if free < reserve.saturating_add(len) => Err(StorageError::NoSpace {
                free: Some(free),
                reserve,
            }),
            _ => Ok(()),
        }
    }

    /// Writes and syncs one frame, rolling to a new segment first if needed. A write
    /// that finds the disk full is undone (the segment cut back to where the frame
    /// began) and answered [`StorageError::NoSpace`]: nothing of it was synced, so the
    /// ledger stays as it was. A sync that fails is another matter (the page cache can
    /// no longer be trusted) and poisons it.
    fn write_frame(&self, w: &mut Writer, frame: &[u8]) -> Result<BlockLocation, StorageError> {
        let frame_len = frame.len() as u64;
        if w.len > 0 && w.len + frame_len > self.options.segment_bytes_max {
            let next = w.segment + 1;
            let file = self.dir.create(next).map_err(|e| {
                StorageError::io(format!("creating {}", self.dir.describe(next)), e)
            })?;
            self.dir
                .sync()
                .map_err(|e| StorageError::io("syncing the blocks directory", e))?;
            self.fsyncs.fetch_add(1, Ordering::Relaxed);
            w.segment = next;
            w.file = file;
            w.len = 0;
        }
        let offset = w.len;
        let describe = || self.dir.describe(w.segment);
        if let Err(e) = w.file.write_all_at(frame, offset) {
            // Drop the partial frame. If that works after a full disk, the ledger is as
            // it was; otherwise the poison stands and recovery truncates what remains.
            let cut = w.file.set_len(offset);
            if fs::is_no_space(&e) && cut.is_ok() {
                return Err(StorageError::NoSpace {
                    free: None,
                    reserve: self.options.reserve_bytes,
                });
            }
            return Err(StorageError::io(format!("writing {}", describe()), e));
        }
        w.file
            .sync_data()
            .map_err(|e| StorageError::io(format!("fdatasync of {}", describe()), e))?;
        self.fsyncs.fetch_add(1, Ordering::Relaxed);
        w.len += frame_len;
        Ok(BlockLocation {
            segment: w.segment,
            offset,
            len: u32::try_from(frame_len).expect("frames are at most 128 MiB"),
        })
    }

    fn file(&self, segment: u32) -> Result<Arc<dyn SegmentFile>, StorageError> {
        let mut files = lock(&self.files);
        if let Some(f) = files.get(segment) {
            return Ok(f);
        }
        let f = self
            .dir
            .open(segment)
            .map_err(|e| StorageError::io(format!("opening {}", self.dir.describe(segment)), e))?;
        files.insert(segment, f.clone());
        Ok(f)
    }

    /// Reads the block at an indexed location, checking its frame and number.
    fn read_at(&self, number: u64, loc: BlockLocation) -> Result<BlockFrame, StorageError> {
        self.file(loc.segment)
            .and_then(|file| recovery::read_block_at(self.dir.as_ref(), file.as_ref(), number, loc))
            .map_err(|e| match e {
                // Said of the block, so a reader can name it (the context keeps the file).
                StorageError::Io { context, source } => StorageError::BlockRead {
                    number,
                    context,
                    source,
                },
                e => e,
            })
    }

    /// Block `number`, if it exists.
    pub fn block(&self, number: u64) -> Result<Option<Block>, StorageError> {
        Ok(self.block_frame(number)?.map(BlockFrame::into_block))
    }

    /// Block `number` as read, if it exists: its transactions are slices of one buffer
    /// (what a rebuild reads every block as).
    pub fn block_frame(&self, number: u64) -> Result<Option<BlockFrame>, StorageError> {
        if number >= self.tip().height {
            return Ok(None);
        }
        match self.index.location(number)? {
            Some(loc) => self.read_at(number, loc).map(Some),
            None => Err(StorageError::IndexMismatch {
                number,
                reason: "below the height but not indexed".into(),
            }),
        }
    }

    /// About how many bytes of segments blocks `0..height` take (0 for none): where
    /// block `height - 1` ends, counting each earlier segment as full. A size hint (a
    /// rebuild sizes its partitions by it), not an exact figure.
    pub fn approximate_bytes_below(&self, height: u64) -> Result<u64, StorageError> {
        let Some(last) = height.checked_sub(1) else {
            return Ok(0);
        };
        let loc = self
            .index
            .location(last)?
            .ok_or_else(|| StorageError::IndexMismatch {
                number: last,
                reason: "below the height but not indexed".into(),
            })?;
        Ok(u64::from(loc.segment) * self.options.segment_bytes_max
            + loc.offset
            + u64::from(loc.len))
    }

    /// The block with this header hash, if it exists.
    pub fn block_by_hash(&self, hash: &Hash) -> Result<Option<Block>, StorageError> {
        match self.index.number_of_hash(hash)? {
            Some(n) => self.block(n),
            None => Ok(None),
        }
    }

    /// The transaction with this id: where it is and its bytes.
    pub fn tx(
        &self,
        tx_id: &[u8; TX_ID_LEN],
    ) -> Result<Option<(TxLocation, Vec<u8>)>, StorageError> {
        Ok(self
            .tx_with_block(tx_id)?
            .map(|(loc, mut block)| (loc, block.txs.swap_remove(loc.position as usize))))
    }

    /// The transaction with this id: where it is and the whole block holding it (read
    /// once), checked to hold the tx at that position.
    pub fn tx_with_block(
        &self,
        id: &[u8; TX_ID_LEN],
    ) -> Result<Option<(TxLocation, Block)>, StorageError> {
        let Some(loc) = self.index.tx(id)? else {
            return Ok(None);
        };
        let Some(block) = self.block(loc.block)? else {
            return Ok(None);
        };
        let pos = loc.position as usize;
        if pos >= block.txs.len() || tx_id(&block.txs[pos]) != Some(*id) {
            return Err(StorageError::IndexMismatch {
                number: loc.block,
                reason: format!("tx {} is not at position {pos}", tx_id_text(id)),
            });
        }
        Ok(Some((loc, block)))
    }

    /// Blocks from `from` up to the height at the time of the call, in order.
    pub fn blocks_from(&self, from: u64) -> impl Iterator<Item = Result<Block, StorageError>> + '_ {
        let end = self.tip().height;
        (from..end).map(move |n| {
            self.block(n)?.ok_or(StorageError::IndexMismatch {
                number: n,
                reason: "vanished while iterating".into(),
            })
        })
    }

    /// Makes the index durable so the next open has nothing to re-index. Called on a
    /// clean shutdown; never needed for safety.
    pub fn close(&self) -> Result<(), StorageError> {
        self.index.flush()
    }
}
