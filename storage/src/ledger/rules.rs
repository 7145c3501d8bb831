//! The rules a block must keep to extend a chain, in one place: [`Ledger::append`] checks
//! them before it writes, recovery and verification check them on what they read (a
//! write-side and a read-side check that are the same function cannot drift apart).
//!
//! The ledger knows nothing of medical records. Its one rule about a transaction's bytes
//! is that the first [`TX_ID_LEN`] bytes are the transaction's id, which the index maps to
//! the block and position holding it (docs/FORMAT.md: every envelope begins with its id).
//!
//! [`Ledger::append`]: super::Ledger::append

use super::block::{Block, CutReason};
use super::ChainTip;

/// Bytes of a transaction id: the first bytes of every transaction.
pub const TX_ID_LEN: usize = 16;

/// The id of a transaction: its first [`TX_ID_LEN`] bytes, or `None` when it is shorter.
pub fn tx_id(tx: &[u8]) -> Option<[u8; TX_ID_LEN]> {
    tx.get(..TX_ID_LEN)?.try_into().ok()
}

/// A tx id as people read it: the UUID form, lowercase hex in groups of 8-4-4-4-12 (the
/// contract's ids are UUIDs; the same text as its `TxId` prints).
pub fn tx_id_text(id: &[u8; TX_ID_LEN]) -> String {
    let hex = hex::encode(id);
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// Why a block does not extend a chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LinkBreak {
    /// Its number is not the chain's height.
    #[error("found block {found} where block {expected} belongs")]
    Number { found: u64, expected: u64 },
    /// Its prev_hash is not the hash of the chain's last block (zeros for genesis).
    #[error("prev_hash does not match the previous block's hash")]
    PrevHash,
    /// Its timestamp is earlier than the previous block's (block time never goes back).
    #[error("timestamp is earlier than the previous block's")]
    Timestamp,
    /// Its data_hash is not the Merkle root of its transactions.
    #[error("data_hash is not the Merkle root of the transactions")]
    DataHash,
    /// Genesis (block 0) must be cut for `genesis` and hold no transaction; every later
    /// block holds at least one and has another cut reason.
    #[error(
        "block {number} breaks the genesis rule (cut reason {reason}, {tx_count} transactions)"
    )]
    Genesis {
        number: u64,
        reason: CutReason,
        tx_count: u32,
    },
    /// Its format is older than the previous block's (formats only move forward: a
    /// format-1 block after a format-2 one would hold clinical text in the clear after
    /// the chain promised ciphertext).
    #[error("block format {found} after format {previous}: a block's format never decreases")]
    Format { found: u8, previous: u8 },
    /// A transaction is too short to hold its id.
    #[error("transaction {position} is shorter than a tx id ({TX_ID_LEN} bytes)")]
    TxWithoutId { position: u32 },
}

/// Whether `block` is the next block after `tip`: its number, its link, a timestamp no
/// earlier than the previous block's, a format no older than the previous block's, the
/// genesis rule, its Merkle root and a tx id in every transaction.
pub fn check_link(block: &Block, tip: &ChainTip) -> Result<(), LinkBreak> {
    let h = &block.header;
    if h.number != tip.height {
        return Err(LinkBreak::Number {
            found: h.number,
            expected: tip.height,
        });
    }
    let expected_prev = if tip.height == 0 {
        [0; 32]
    } else {
        tip.tip_hash
    };
    if h.prev_hash != expected_prev {
        return Err(LinkBreak::PrevHash);
    }
    if tip.height > 0 && h.timestamp_ms < tip.tip_timestamp_ms {
        return Err(LinkBreak::Timestamp);
    }
    if tip.height > 0 && h.format < tip.tip_format {
        return Err(LinkBreak::Format {
            found: h.format,
            previous: tip.tip_format,
        });
    }
    let is_genesis = h.number == 0;
    if (h.cut_reason == CutReason::Genesis) != is_genesis || (h.tx_count == 0) != is_genesis {
        return Err(LinkBreak::Genesis {
            number: h.number,
            reason: h.cut_reason,
            tx_count: h.tx_count,
        });
    }
    if !block.data_hash_matches() {
        return Err(LinkBreak::DataHash);
    }
    if let Some(position) = block.txs.iter().position(|tx| tx.len() < TX_ID_LEN) {
        return Err(LinkBreak::TxWithoutId {
            position: position as u32,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tip_after(block: &Block) -> ChainTip {
        ChainTip::after(block, block.hash())
    }

    #[test]
    fn each_break_is_named() {
        let genesis = Block::genesis(1);
        assert_eq!(check_link(&genesis, &ChainTip::EMPTY), Ok(()));
        let tip = tip_after(&genesis);
        let txs = vec![vec![7u8; 20], vec![8u8; 16]];
        let good = Block::from_txs(1, genesis.hash(), 2, CutReason::Count, txs);
        assert_eq!(check_link(&good, &tip), Ok(()));

        let mut wrong_number = good.clone();
        wrong_number.header.number = 2;
        assert_eq!(
            check_link(&wrong_number, &tip),
            Err(LinkBreak::Number {
                found: 2,
                expected: 1
            })
        );
        let mut wrong_prev = good.clone();
        wrong_prev.header.prev_hash = [1; 32];
        assert_eq!(check_link(&wrong_prev, &tip), Err(LinkBreak::PrevHash));
        let mut earlier = good.clone();
        earlier.header.timestamp_ms = 0;
        assert_eq!(check_link(&earlier, &tip), Err(LinkBreak::Timestamp));
        let mut older_format = good.clone();
        older_format.header.format = tip.tip_format - 1;
        assert_eq!(
            check_link(&older_format, &tip),
            Err(LinkBreak::Format {
                found: tip.tip_format - 1,
                previous: tip.tip_format
            })
        );
        let mut newer_format = good.clone();
        newer_format.header.format = tip.tip_format + 1;
        assert_eq!(check_link(&newer_format, &tip), Ok(()));
        let mut wrong_root = good.clone();
        wrong_root.txs[0][0] ^= 1;
        assert_eq!(check_link(&wrong_root, &tip), Err(LinkBreak::DataHash));
        let mut genesis_again = Block::genesis(2);
        genesis_again.header.number = 1;
        genesis_again.header.prev_hash = genesis.hash();
        assert_eq!(
            check_link(&genesis_again, &tip),
            Err(LinkBreak::Genesis {
                number: 1,
                reason: CutReason::Genesis,
                tx_count: 0
            })
        );
        let mut mislabelled = good.clone();
        mislabelled.header.cut_reason = CutReason::Genesis;
        assert!(matches!(
            check_link(&mislabelled, &tip),
            Err(LinkBreak::Genesis { .. })
        ));
        let crowded_genesis = Block::from_txs(0, [0; 32], 1, CutReason::Count, vec![vec![1; 16]]);
        assert!(matches!(
            check_link(&crowded_genesis, &ChainTip::EMPTY),
            Err(LinkBreak::Genesis { .. })
        ));
        let short = Block::from_txs(
            1,
            genesis.hash(),
            2,
            CutReason::Count,
            vec![vec![1; 16], vec![2; 15]],
        );
        assert_eq!(
            check_link(&short, &tip),
            Err(LinkBreak::TxWithoutId { position: 1 })
        );
    }

    #[test]
    fn the_id_is_the_first_bytes() {
        let tx: Vec<u8> = (0u8..40).collect();
        assert_eq!(tx_id(&tx), Some(core::array::from_fn(|i| i as u8)));
        assert_eq!(tx_id(&tx[..15]), None);
        let id = tx_id(&tx).unwrap();
        assert_eq!(tx_id_text(&id), "00010203-0405-0607-0809-0a0b0c0d0e0f");
    }
}
