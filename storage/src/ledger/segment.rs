//! Frames in segment files: `len u32 LE | crc32c u32 LE | block bytes`.
//!
//! The CRC-32C covers the four length bytes and the block bytes, so a damaged length is
//! caught like damaged content. A frame is appended with one positional write and made
//! durable with one fdatasync by the ledger.

use std::io;

use super::block::{Block, BlockHeader, BLOCK_HEADER_LEN};
use super::fs::SegmentFile;

/// Bytes before the block in a frame.
pub const FRAME_HEADER_LEN: usize = 8;
/// Largest block a frame may hold. Blocks are bounded by the cutter (one message of at
/// most 64 MiB, or at most 100,000 messages within PreferredMaxBytes ≤ 64 MiB).
pub const FRAME_BODY_MAX: u64 = 128 * 1024 * 1024;

fn frame_crc(len_le: [u8; 4], body: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&len_le), body)
}

/// The whole frame of a block, ready to append.
pub fn encode_frame(block: &Block, out: &mut Vec<u8>) {
    out.clear();
    out.resize(FRAME_HEADER_LEN, 0);
    block.encode_into(out);
    let body_len = out.len() - FRAME_HEADER_LEN;
    let len_le = u32::try_from(body_len)
        .expect("block size is bounded far below 4 GiB")
        .to_le_bytes();
    let crc = frame_crc(len_le, &out[FRAME_HEADER_LEN..]);
    out[0..4].copy_from_slice(&len_le);
    out[4..8].copy_from_slice(&crc.to_le_bytes());
}

/// What lies at an offset of a segment.
#[derive(Debug)]
pub enum FrameRead {
    /// A whole frame with a matching CRC; `body` is the block bytes.
    Frame { body: Vec<u8> },
    /// The offset is exactly the end of the file.
    End,
    /// Not a valid frame.
    Bad(FrameDamage),
}

/// Why the bytes at an offset are not a valid frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameDamage {
    /// Fewer bytes remain than a frame header takes.
    #[error("{remaining} bytes, shorter than a frame header")]
    ShortHeader { remaining: u64 },
    /// The length field is below a block header or above [`FRAME_BODY_MAX`].
    #[error("frame length {len} is impossible")]
    ImpossibleLength { len: u64 },
    /// The length field runs past the end of the file.
    #[error("frame length {len} runs past the end of the file ({left} bytes left)")]
    PastEnd { len: u64, left: u64 },
    /// The CRC-32C does not match the length and body.
    #[error("CRC-32C mismatch")]
    CrcMismatch,
}

/// Reads the frame at `offset` of a file of length `file_len`.
pub fn read_frame(file: &dyn SegmentFile, offset: u64, file_len: u64) -> io::Result<FrameRead> {
    if offset == file_len {
        return Ok(FrameRead::End);
    }
    let remaining = file_len.saturating_sub(offset);
    if remaining < FRAME_HEADER_LEN as u64 {
        return Ok(FrameRead::Bad(FrameDamage::ShortHeader { remaining }));
    }
    let mut head = [0u8; FRAME_HEADER_LEN];
    file.read_exact_at(&mut head, offset)?;
    let len_le: [u8; 4] = head[0..4].try_into().expect("4 bytes");
    let len = u64::from(u32::from_le_bytes(len_le));
    let crc = u32::from_le_bytes(head[4..8].try_into().expect("4 bytes"));
    if len < BLOCK_HEADER_LEN as u64 || len > FRAME_BODY_MAX {
        return Ok(FrameRead::Bad(FrameDamage::ImpossibleLength { len }));
    }
    if len > remaining - FRAME_HEADER_LEN as u64 {
        return Ok(FrameRead::Bad(FrameDamage::PastEnd {
            len,
            left: remaining - FRAME_HEADER_LEN as u64,
        }));
    }
    let mut body = vec![0u8; len as usize];
    file.read_exact_at(&mut body, offset + FRAME_HEADER_LEN as u64)?;
    if frame_crc(len_le, &body) != crc {
        return Ok(FrameRead::Bad(FrameDamage::CrcMismatch));
    }
    Ok(FrameRead::Frame { body })
}

/// Looks for a valid frame holding a block numbered in `numbers` anywhere after `from`.
/// Recovery uses it to tell a torn tail (nothing valid follows) from damage in the
/// middle (a later block survives). Candidate offsets are filtered by a plausible length
/// and block number before the CRC is computed, so the scan stays cheap on garbage.
pub fn find_frame_after(
    file: &dyn SegmentFile,
    from: u64,
    file_len: u64,
    numbers: std::ops::Range<u64>,
) -> io::Result<Option<(u64, u64)>> {
    const PROBE: usize = FRAME_HEADER_LEN + 8;
    let start = from + 1;
    if file_len < start + (FRAME_HEADER_LEN + BLOCK_HEADER_LEN) as u64 {
        return Ok(None);
    }
    let mut tail = vec![0u8; (file_len - start) as usize];
    file.read_exact_at(&mut tail, start)?;
    for i in 0..tail.len().saturating_sub(PROBE) {
        let len = u64::from(u32::from_le_bytes(
            tail[i..i + 4].try_into().expect("4 bytes"),
        ));
        if len < BLOCK_HEADER_LEN as u64 || len > (tail.len() - i - FRAME_HEADER_LEN) as u64 {
            continue;
        }
        let number = u64::from_le_bytes(tail[i + 8..i + 16].try_into().expect("8 bytes"));
        if !numbers.contains(&number) {
            continue;
        }
        let body = &tail[i + FRAME_HEADER_LEN..i + FRAME_HEADER_LEN + len as usize];
        let crc = u32::from_le_bytes(tail[i + 4..i + 8].try_into().expect("4 bytes"));
        if frame_crc(tail[i..i + 4].try_into().expect("4 bytes"), body) == crc
            && BlockHeader::decode(body).is_ok()
        {
            return Ok(Some((start + i as u64, number)));
        }
    }
    Ok(None)
}
