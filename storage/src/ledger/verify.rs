//! Full verification of an open ledger: every frame's CRC, every block's number, hash
//! link and Merkle root, every envelope's canonical encoding, and every index entry
//! (location, hash → number, tx id → block and position). Stops at the first problem and
//! names the block.

use serde::Serialize;

use super::block::Block;
use super::index::{BlockLocation, TxLocation};
use super::rules::{check_link, tx_id, tx_id_text};
use super::segment::{read_frame, FrameRead, FRAME_HEADER_LEN};
use super::{ChainTip, Ledger};
use crate::error::StorageError;

/// The first problem verification found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct VerifyFailure {
    /// The block at fault (the one expected at the damaged position).
    pub block: u64,
    pub segment: u32,
    pub offset: u64,
    pub reason: String,
}

/// What verification checked, and the first failure if any.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    pub ok: bool,
    /// Blocks checked and found sound.
    pub blocks: u64,
    /// Transactions in those blocks.
    pub transactions: u64,
    pub segments: u64,
    /// Bytes of frames checked.
    pub bytes: u64,
    /// The chain height the ledger reports.
    pub height: u64,
    /// Hash of the last sound block, lowercase hex.
    pub tip_hash: String,
    pub failure: Option<VerifyFailure>,
}

/// The caller's rule for a transaction's bytes, given its block's format: `Err` names
/// what is wrong.
pub type TxRule = dyn Fn(u8, &[u8]) -> Result<(), String>;

/// Verifies the whole ledger. I/O errors are returned as errors; damage is reported in
/// the report (`ok: false` with the block number).
///
/// The ledger checks its own rules (frames, links, Merkle roots, tx ids, the index);
/// `check_tx` is the caller's rule for a transaction's bytes in a block of the given
/// format (the server passes the contract's envelope decoding and its rule for the
/// format), so the engine stays free of what a transaction means.
pub fn verify(ledger: &Ledger, check_tx: &TxRule) -> Result<VerifyReport, StorageError> {
    let dir = ledger.segments();
    let index = ledger.index();
    let height = ledger.tip().height;
    let mut report = VerifyReport {
        ok: false,
        blocks: 0,
        transactions: 0,
        segments: 0,
        bytes: 0,
        height,
        tip_hash: hex::encode([0u8; 32]),
        failure: None,
    };
    let mut tip = ChainTip {
        height: 0,
        tip_hash: [0; 32],
        tip_timestamp_ms: i64::MIN,
        tip_format: 0,
    };
    let segments = dir
        .list()
        .map_err(|e| StorageError::io("listing segments", e))?;
    let fail =
        |report: &mut VerifyReport, number: u64, segment: u32, offset: u64, reason: String| {
            report.failure = Some(VerifyFailure {
                block: number,
                segment,
                offset,
                reason,
            });
        };
    for (i, &segment) in segments.iter().enumerate() {
        if i > 0 && segment != segments[i - 1] + 1 {
            fail(
                &mut report,
                tip.height,
                segments[i - 1] + 1,
                0,
                "segment file is missing".into(),
            );
            return Ok(report);
        }
        report.segments += 1;
        let file = dir
            .open(segment)
            .map_err(|e| StorageError::io(format!("opening {}", dir.describe(segment)), e))?;
        let file_len = file
            .len()
            .map_err(|e| StorageError::io(format!("reading {}", dir.describe(segment)), e))?;
        let mut offset = 0u64;
        loop {
            let frame = read_frame(file.as_ref(), offset, file_len)
                .map_err(|e| StorageError::io(format!("reading {}", dir.describe(segment)), e))?;
            let body = match frame {
                FrameRead::End => break,
                FrameRead::Bad(why) => {
                    fail(&mut report, tip.height, segment, offset, why.to_string());
                    return Ok(report);
                }
                FrameRead::Frame { body } => body,
            };
            let location = BlockLocation {
                segment,
                offset,
                len: (FRAME_HEADER_LEN + body.len()) as u32,
            };
            let block = match check_block(ledger, &body, &tip, location, check_tx)? {
                Ok(block) => block,
                Err(why) => {
                    fail(&mut report, tip.height, segment, offset, why);
                    return Ok(report);
                }
            };
            report.blocks += 1;
            report.transactions += u64::from(block.header.tx_count);
            report.bytes += u64::from(location.len);
            tip = ChainTip::after(&block, block.hash());
            report.tip_hash = hex::encode(tip.tip_hash);
            offset += u64::from(location.len);
        }
    }
    if tip.height != height || index.height()? != height {
        let last = segments.last().copied().unwrap_or(0);
        let reason = format!(
            "the segments hold {} blocks, the ledger reports {height}, the index {}",
            tip.height,
            index.height()?
        );
        fail(&mut report, tip.height, last, 0, reason);
        return Ok(report);
    }
    report.ok = true;
    Ok(report)
}

/// Checks one block's bytes: layout, the chain rules, the caller's rule for each
/// transaction, and the index. Returns the decoded block when it is sound, or why not;
/// an index that cannot be read is an error.
fn check_block(
    ledger: &Ledger,
    body: &[u8],
    tip: &ChainTip,
    location: BlockLocation,
    check_tx: &TxRule,
) -> Result<Result<Block, String>, StorageError> {
    let block = match Block::decode(body) {
        Ok(block) => block,
        Err(why) => return Ok(Err(why.to_string())),
    };
    if let Err(why) = check_link(&block, tip) {
        return Ok(Err(why.to_string()));
    }
    let number = block.header.number;
    let index = ledger.index();
    if index.location(number)? != Some(location) {
        return Ok(Err("the index has another location for this block".into()));
    }
    if index.number_of_hash(&block.hash())? != Some(number) {
        return Ok(Err(
            "the index does not map this block's hash to its number".into(),
        ));
    }
    for (pos, tx) in block.txs.iter().enumerate() {
        if let Err(why) = check_tx(block.header.format, tx) {
            return Ok(Err(format!("tx {pos}: {why}")));
        }
        let id = tx_id(tx).expect("check_link found an id in every tx");
        let expected = TxLocation {
            block: number,
            position: pos as u32,
        };
        if index.tx(&id)? != Some(expected) {
            return Ok(Err(format!(
                "the index does not point tx {} at position {pos}",
                tx_id_text(&id)
            )));
        }
    }
    Ok(Ok(block))
}
