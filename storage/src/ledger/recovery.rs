//! Opening a ledger is recovering it.
//!
//! 1. Find where the index ends: the frame of the last indexed block must be intact (the
//!    index only ever names durable, acknowledged blocks; if that frame is damaged or
//!    missing, recovery stops naming the block).
//! 2. Scan forward from there through the remaining segments, checking every frame's CRC,
//!    each block's number, its link to the previous block and its Merkle root, and
//!    re-index every block the index lacks.
//! 3. A bad frame in the last segment with no valid later block after it is a torn tail
//!    (a write that was never acknowledged): it is truncated and the truncation
//!    fdatasynced. Any other bad frame is damage in the middle: recovery stops with a
//!    [`StorageError::CorruptBlock`] naming the block number. It never skips a block.

use std::sync::Arc;

use serde::Serialize;

use super::block::{Block, BlockFrame};
use super::fs::{SegmentDir, SegmentFile};
use super::index::{BlockLocation, Index, IndexEntry};
use super::rules::{check_link, tx_id};
use super::segment::{find_frame_after, read_frame, FrameRead, FRAME_HEADER_LEN};
use super::ChainTip;
use crate::error::{Damage, StorageError};
use crate::merkle::Hash;

/// Blocks re-indexed per RocksDB batch during recovery.
const REINDEX_BATCH_BLOCKS: usize = 1024;
/// How far past the expected block number a surviving later block may be numbered.
const LATER_BLOCK_WINDOW: u64 = 1 << 32;

/// What recovery found and did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RecoveryReport {
    /// Blocks in the chain after opening.
    pub height: u64,
    /// Blocks the index covered before recovery.
    pub indexed_height_before: u64,
    /// Blocks found in the segments beyond the index and indexed now.
    pub reindexed_blocks: u64,
    /// A torn, unacknowledged tail that was cut off, if any.
    pub truncated: Option<Truncation>,
    /// The ledger was empty and a genesis block was written.
    pub created: bool,
    /// fdatasync calls recovery made.
    pub fsyncs: u64,
}

/// A torn tail removed by recovery.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Truncation {
    pub segment: u32,
    /// The segment's new length.
    pub offset: u64,
    /// Bytes removed.
    pub bytes: u64,
    /// Why the frame at `offset` was not valid.
    pub reason: String,
}

pub(crate) struct Recovered {
    pub segment: u32,
    pub file: Arc<dyn SegmentFile>,
    pub segment_len: u64,
    pub tip: ChainTip,
    pub report: RecoveryReport,
}

struct Pending {
    number: u64,
    hash: Hash,
    location: BlockLocation,
    tx_ids: Vec<[u8; 16]>,
}

fn flush(index: &Index, pending: &mut Vec<Pending>) -> Result<(), StorageError> {
    let entries: Vec<IndexEntry<'_>> = pending
        .iter()
        .map(|p| IndexEntry {
            number: p.number,
            hash: p.hash,
            location: p.location,
            tx_ids: &p.tx_ids,
        })
        .collect();
    index.put(&entries)?;
    pending.clear();
    Ok(())
}

fn io(dir: &dyn SegmentDir, segment: u32, what: &str) -> impl Fn(std::io::Error) -> StorageError {
    let context = format!("{what} {}", dir.describe(segment));
    move |e| StorageError::io(context.clone(), e)
}

pub(crate) fn recover(dir: &dyn SegmentDir, index: &Index) -> Result<Recovered, StorageError> {
    let segments = dir
        .list()
        .map_err(|e| StorageError::io("listing segments", e))?;
    let indexed = index.height()?;
    let mut report = RecoveryReport {
        indexed_height_before: indexed,
        ..RecoveryReport::default()
    };
    let Some(&last_segment) = segments.last() else {
        if indexed > 0 {
            return Err(StorageError::IndexMismatch {
                number: indexed - 1,
                reason: "the index names this block but there are no segment files".into(),
            });
        }
        let file = dir.create(0).map_err(io(dir, 0, "creating"))?;
        dir.sync()
            .map_err(|e| StorageError::io("syncing the blocks directory", e))?;
        report.fsyncs = 1;
        return Ok(Recovered {
            segment: 0,
            file,
            segment_len: 0,
            tip: ChainTip::EMPTY,
            report,
        });
    };

    // Where the scan starts: just past the last indexed block.
    let (start_segment, mut start_offset, mut tip) = if indexed == 0 {
        (segments[0], 0, ChainTip::EMPTY)
    } else {
        let n = indexed - 1;
        let loc = index
            .location(n)?
            .ok_or_else(|| StorageError::IndexMismatch {
                number: n,
                reason: "indexed_height covers it but it has no location".into(),
            })?;
        let block = read_indexed(dir, n, loc)?;
        let tip = ChainTip {
            height: indexed,
            tip_hash: block.hash(),
            tip_timestamp_ms: block.header.timestamp_ms,
            tip_format: block.header.format,
        };
        (loc.segment, loc.offset + u64::from(loc.len), tip)
    };

    let mut pending: Vec<Pending> = Vec::new();
    let mut current: Option<(u32, Arc<dyn SegmentFile>, u64)> = None;
    for (i, &segment) in segments.iter().filter(|&&s| s >= start_segment).enumerate() {
        if u64::from(segment) != u64::from(start_segment) + i as u64 {
            return Err(StorageError::CorruptBlock {
                number: tip.height,
                segment: start_segment + i as u32,
                offset: 0,
                damage: Damage::SegmentMissing,
            });
        }
        let file = dir.open(segment).map_err(io(dir, segment, "opening"))?;
        let mut file_len = file.len().map_err(io(dir, segment, "reading"))?;
        let mut offset = std::mem::take(&mut start_offset);
        loop {
            let corrupt = |damage: Damage| StorageError::CorruptBlock {
                number: tip.height,
                segment,
                offset,
                damage,
            };
            match read_frame(file.as_ref(), offset, file_len)
                .map_err(io(dir, segment, "reading"))?
            {
                FrameRead::End => break,
                FrameRead::Frame { body } => {
                    let block = Block::decode(&body).map_err(|e| corrupt(e.into()))?;
                    check_link(&block, &tip).map_err(|e| corrupt(e.into()))?;
                    let hash = block.hash();
                    let tx_ids = block
                        .txs
                        .iter()
                        .map(|t| tx_id(t).expect("check_link found an id in every tx"))
                        .collect();
                    let len = (FRAME_HEADER_LEN + body.len()) as u32;
                    pending.push(Pending {
                        number: block.header.number,
                        hash,
                        location: BlockLocation {
                            segment,
                            offset,
                            len,
                        },
                        tx_ids,
                    });
                    if pending.len() >= REINDEX_BATCH_BLOCKS {
                        flush(index, &mut pending)?;
                    }
                    report.reindexed_blocks += 1;
                    tip = ChainTip::after(&block, hash);
                    offset += u64::from(len);
                }
                FrameRead::Bad(why) => {
                    if segment != last_segment {
                        return Err(corrupt(Damage::FrameBeforeLaterSegments(why)));
                    }
                    let later = tip.height + 1..tip.height.saturating_add(LATER_BLOCK_WINDOW);
                    if let Some((at, n)) = find_frame_after(file.as_ref(), offset, file_len, later)
                        .map_err(io(dir, segment, "reading"))?
                    {
                        return Err(corrupt(Damage::FrameBeforeLaterBlock {
                            damage: why,
                            number: n,
                            offset: at,
                        }));
                    }
                    file.set_len(offset)
                        .map_err(io(dir, segment, "truncating"))?;
                    file.sync_data().map_err(io(dir, segment, "fdatasync of"))?;
                    report.fsyncs += 1;
                    report.truncated = Some(Truncation {
                        segment,
                        offset,
                        bytes: file_len - offset,
                        reason: why.to_string(),
                    });
                    file_len = offset;
                    break;
                }
            }
        }
        current = Some((segment, file, file_len));
    }
    flush(index, &mut pending)?;
    let (segment, file, segment_len) = current.ok_or_else(|| StorageError::IndexMismatch {
        number: tip.height.saturating_sub(1),
        reason: format!("the index names segment {start_segment}, which does not exist"),
    })?;
    report.height = tip.height;
    Ok(Recovered {
        segment,
        file,
        segment_len,
        tip,
        report,
    })
}

/// Reads a block the index names; any failure is an error naming it (never truncated).
pub(crate) fn read_indexed(
    dir: &dyn SegmentDir,
    number: u64,
    loc: BlockLocation,
) -> Result<Block, StorageError> {
    let file = dir
        .open(loc.segment)
        .map_err(|e| StorageError::CorruptBlock {
            number,
            segment: loc.segment,
            offset: loc.offset,
            damage: Damage::SegmentUnopenable(e),
        })?;
    read_block_at(dir, file.as_ref(), number, loc).map(BlockFrame::into_block)
}

/// Reads block `number` from the frame at `loc` of an open segment, checking the frame's
/// CRC, its length against the index and the block's number.
pub(crate) fn read_block_at(
    dir: &dyn SegmentDir,
    file: &dyn SegmentFile,
    number: u64,
    loc: BlockLocation,
) -> Result<BlockFrame, StorageError> {
    let corrupt = |damage: Damage| StorageError::CorruptBlock {
        number,
        segment: loc.segment,
        offset: loc.offset,
        damage,
    };
    let end = loc.offset + u64::from(loc.len);
    let file_len = file.len().map_err(io(dir, loc.segment, "reading"))?;
    if file_len < end {
        return Err(corrupt(Damage::SegmentShorterThanIndexed { end, file_len }));
    }
    match read_frame(file, loc.offset, end).map_err(io(dir, loc.segment, "reading"))? {
        FrameRead::Frame { body } if body.len() + FRAME_HEADER_LEN == loc.len as usize => {
            let frame = BlockFrame::parse(body).map_err(|e| corrupt(e.into()))?;
            if frame.header().number != number {
                return Err(corrupt(Damage::OtherBlock(frame.header().number)));
            }
            Ok(frame)
        }
        FrameRead::Frame { .. } => Err(corrupt(Damage::FrameLengthNotIndexed)),
        FrameRead::End => Err(corrupt(Damage::NoFrameAtIndexedOffset)),
        FrameRead::Bad(why) => Err(corrupt(why.into())),
    }
}
