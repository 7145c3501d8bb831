//! The block: a fixed 88-byte little-endian header and the envelopes in order.
//!
//! ```text
//! offset size field
//!      0   88 header                 (medledger_proof::header: number, timestamp_ms,
//!                                     tx_count, cut_reason, format, prev_hash, data_hash)
//!     88      body: tx_count × (len u32 LE ‖ canonical envelope bytes)
//! ```
//! The header's bytes are written and read by `medledger_proof::header`, the one codec
//! the ledger and an auditor's verifier share; [`BlockHeader`] adds what the ledger means
//! by them (a [`CutReason`] it knows). The block hash is SHA-256 of the 88 header bytes.
//! docs/FORMAT.md has the full layout and fixtures/ golden vectors.

use medledger_proof::header::HeaderFields;
use sha2::{Digest, Sha256};

use crate::merkle::{self, Hash};

pub use medledger_proof::header::{BLOCK_FORMAT, BLOCK_HEADER_LEN};
pub use medledger_proof::HeaderError;

/// Most transactions one block may hold (the cutter's MaxMessageCount is at most this).
pub const BLOCK_TX_COUNT_MAX: u32 = 100_000;

/// Why bytes are not a block this ledger could have written. Every variant names the
/// first check that failed; the ledger never guesses past one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BlockDecodeError {
    /// The 88 header bytes are short or of an unknown layout.
    #[error(transparent)]
    Header(#[from] HeaderError),
    /// The header's cut reason byte names no [`CutReason`].
    #[error("unknown cut reason {cut_reason}")]
    UnknownCutReason {
        /// The byte at offset 20.
        cut_reason: u8,
    },
    /// The header claims more transactions than a block may hold.
    #[error("tx_count {tx_count} is over the limit of {BLOCK_TX_COUNT_MAX}")]
    TooManyTxs {
        /// The header's `tx_count`.
        tx_count: u32,
    },
    /// The body ends inside the 4-byte length of a transaction.
    #[error("body ends inside the length of tx {index}")]
    TruncatedTxLength {
        /// The transaction's position in the block.
        index: u32,
    },
    /// A transaction's length runs past the end of the block.
    #[error("tx {index} claims {len} bytes, {remaining} remain")]
    TruncatedTx {
        /// The transaction's position in the block.
        index: u32,
        /// Its length as written.
        len: usize,
        /// The bytes left in the block.
        remaining: usize,
    },
    /// Bytes follow the last transaction the header counts.
    #[error("{extra} bytes after the last transaction")]
    TrailingBytes {
        /// How many.
        extra: usize,
    },
}

/// Why a block was cut. Stored in the header as one byte: the values are part of the
/// on-disk format and are never renumbered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum CutReason {
    /// The first block of a chain, holding no transactions.
    Genesis = 0,
    /// MaxMessageCount was reached.
    Count = 1,
    /// The next message would have taken the batch past PreferredMaxBytes.
    Bytes = 2,
    /// One message larger than PreferredMaxBytes, alone in its block.
    Oversize = 3,
    /// BatchTimeout expired.
    Timeout = 4,
    /// Eager policy: the writer was idle and nothing else was queued.
    Idle = 5,
    /// Shutdown: what was pending when the orderer stopped.
    Drain = 6,
}

impl CutReason {
    /// Every reason, in byte order.
    pub const ALL: [CutReason; 7] = [
        CutReason::Genesis,
        CutReason::Count,
        CutReason::Bytes,
        CutReason::Oversize,
        CutReason::Timeout,
        CutReason::Idle,
        CutReason::Drain,
    ];

    /// The header byte.
    pub fn as_u8(self) -> u8 {
        self as u8
    }

    /// The reason for a header byte, if it names one.
    pub fn from_u8(v: u8) -> Option<Self> {
        CutReason::ALL.get(usize::from(v)).copied()
    }

    /// The stable lowercase name used in JSON and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            CutReason::Genesis => "genesis",
            CutReason::Count => "count",
            CutReason::Bytes => "bytes",
            CutReason::Oversize => "oversize",
            CutReason::Timeout => "timeout",
            CutReason::Idle => "idle",
            CutReason::Drain => "drain",
        }
    }
}

impl std::fmt::Display for CutReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A block header. Its hash is SHA-256 of [`BlockHeader::encode`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockHeader {
    pub number: u64,
    pub timestamp_ms: i64,
    pub tx_count: u32,
    pub cut_reason: CutReason,
    /// The block format: [`BLOCK_FORMAT`] for every block this code writes; older
    /// blocks keep theirs (docs/FORMAT.md says what each format's envelopes hold).
    pub format: u8,
    pub prev_hash: Hash,
    pub data_hash: Hash,
}

impl BlockHeader {
    /// The fixed little-endian layout, as `medledger_proof::header` writes it.
    pub fn encode(&self) -> [u8; BLOCK_HEADER_LEN] {
        HeaderFields::from(*self).encode()
    }

    /// Reads the header at the start of `bytes` (a header, or a whole encoded block),
    /// rejecting a short input, an unknown format or cut reason, or non-zero reserved
    /// bytes.
    pub fn decode(bytes: &[u8]) -> Result<BlockHeader, BlockDecodeError> {
        let (fields, _body) = HeaderFields::parse_prefix(bytes)?;
        BlockHeader::try_from(fields)
    }

    /// The block hash: SHA-256 of the encoded header.
    pub fn hash(&self) -> Hash {
        HeaderFields::from(*self).hash()
    }
}

impl From<BlockHeader> for HeaderFields {
    fn from(h: BlockHeader) -> HeaderFields {
        HeaderFields {
            number: h.number,
            timestamp_ms: h.timestamp_ms,
            tx_count: h.tx_count,
            cut_reason: h.cut_reason.as_u8(),
            format: h.format,
            prev_hash: h.prev_hash,
            data_hash: h.data_hash,
        }
    }
}

impl TryFrom<HeaderFields> for BlockHeader {
    type Error = BlockDecodeError;

    /// Fails only on a cut reason byte this ledger does not know: the proof crate's
    /// codec carries any byte there (see its module docs), the ledger writes only these.
    fn try_from(f: HeaderFields) -> Result<BlockHeader, BlockDecodeError> {
        let cut_reason =
            CutReason::from_u8(f.cut_reason).ok_or(BlockDecodeError::UnknownCutReason {
                cut_reason: f.cut_reason,
            })?;
        Ok(BlockHeader {
            number: f.number,
            timestamp_ms: f.timestamp_ms,
            tx_count: f.tx_count,
            cut_reason,
            format: f.format,
            prev_hash: f.prev_hash,
            data_hash: f.data_hash,
        })
    }
}

/// A block: header plus the canonical bytes of its envelopes, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Block {
    pub header: BlockHeader,
    pub txs: Vec<Vec<u8>>,
}

impl Block {
    /// Builds a block whose `data_hash` is the Merkle root of `tx_hashes`, which must be
    /// the SHA-256 of each of `txs` (the caller usually has them already; checked in
    /// debug builds).
    pub fn new(
        number: u64,
        prev_hash: Hash,
        timestamp_ms: i64,
        cut_reason: CutReason,
        txs: Vec<Vec<u8>>,
        tx_hashes: &[Hash],
    ) -> Block {
        assert_eq!(txs.len(), tx_hashes.len(), "one hash per transaction");
        assert!(
            txs.len() <= BLOCK_TX_COUNT_MAX as usize,
            "too many transactions"
        );
        assert!(
            !txs.is_empty() || cut_reason == CutReason::Genesis,
            "only genesis is empty"
        );
        debug_assert!(txs
            .iter()
            .zip(tx_hashes)
            .all(|(t, h)| Sha256::digest(t).as_slice() == h));
        let header = BlockHeader {
            number,
            timestamp_ms,
            tx_count: txs.len() as u32,
            cut_reason,
            format: BLOCK_FORMAT,
            prev_hash,
            data_hash: merkle::root_of_hashes(tx_hashes),
        };
        Block { header, txs }
    }

    /// Like [`Block::new`], hashing the transactions itself.
    pub fn from_txs(
        number: u64,
        prev_hash: Hash,
        timestamp_ms: i64,
        cut_reason: CutReason,
        txs: Vec<Vec<u8>>,
    ) -> Block {
        let hashes: Vec<Hash> = txs.iter().map(|t| Sha256::digest(t).into()).collect();
        Block::new(number, prev_hash, timestamp_ms, cut_reason, txs, &hashes)
    }

    /// The genesis block: number 0, no transactions, zero prev_hash.
    pub fn genesis(timestamp_ms: i64) -> Block {
        Block::new(
            0,
            [0; 32],
            timestamp_ms,
            CutReason::Genesis,
            Vec::new(),
            &[],
        )
    }

    /// The block hash (of the header).
    pub fn hash(&self) -> Hash {
        self.header.hash()
    }

    /// SHA-256 of every transaction, in order.
    pub fn tx_hashes(&self) -> Vec<Hash> {
        self.txs.iter().map(|t| Sha256::digest(t).into()).collect()
    }

    /// Whether `data_hash` is the Merkle root of the transactions.
    pub fn data_hash_matches(&self) -> bool {
        merkle::root_of_hashes(&self.tx_hashes()) == self.header.data_hash
    }

    /// Encoded size in bytes.
    pub fn encoded_len(&self) -> usize {
        BLOCK_HEADER_LEN + self.txs.iter().map(|t| 4 + t.len()).sum::<usize>()
    }

    /// Appends the encoded block (header then body) to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.reserve(self.encoded_len());
        out.extend_from_slice(&self.header.encode());
        for tx in &self.txs {
            let len = u32::try_from(tx.len()).expect("an envelope is far below 4 GiB");
            out.extend_from_slice(&len.to_le_bytes());
            out.extend_from_slice(tx);
        }
    }

    /// Parses an encoded block. Checks the layout only (lengths, count, no trailing
    /// bytes); chain links and the data hash are the caller's to check.
    pub fn decode(bytes: &[u8]) -> Result<Block, BlockDecodeError> {
        let header = check_layout(bytes)?;
        Ok(Block {
            header,
            txs: TxSlices::of(bytes).map(<[u8]>::to_vec).collect(),
        })
    }
}

/// Checks an encoded block's layout as [`Block::decode`] does; returns its header.
fn check_layout(bytes: &[u8]) -> Result<BlockHeader, BlockDecodeError> {
    let header = BlockHeader::decode(bytes)?;
    if header.tx_count > BLOCK_TX_COUNT_MAX {
        return Err(BlockDecodeError::TooManyTxs {
            tx_count: header.tx_count,
        });
    }
    let mut rest = &bytes[BLOCK_HEADER_LEN..];
    for index in 0..header.tx_count {
        let Some((len, tail)) = rest.split_first_chunk::<4>() else {
            return Err(BlockDecodeError::TruncatedTxLength { index });
        };
        let len = u32::from_le_bytes(*len) as usize;
        if len > tail.len() {
            return Err(BlockDecodeError::TruncatedTx {
                index,
                len,
                remaining: tail.len(),
            });
        }
        rest = &tail[len..];
    }
    if !rest.is_empty() {
        return Err(BlockDecodeError::TrailingBytes { extra: rest.len() });
    }
    Ok(header)
}

/// The transactions of an encoded block whose layout [`check_layout`] accepted.
struct TxSlices<'a> {
    rest: &'a [u8],
}

impl<'a> TxSlices<'a> {
    fn of(checked: &'a [u8]) -> Self {
        TxSlices {
            rest: &checked[BLOCK_HEADER_LEN..],
        }
    }
}

impl<'a> Iterator for TxSlices<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let (len, tail) = self.rest.split_first_chunk::<4>()?;
        let (tx, rest) = tail.split_at(u32::from_le_bytes(*len) as usize);
        self.rest = rest;
        Some(tx)
    }
}

/// A block as read from its segment: the encoded bytes, their layout checked, with the
/// transactions lent out as slices of them. A rebuild reads every block this way: one
/// allocation per block instead of one per transaction, which the projection's thread
/// then had to free for the reader's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockFrame {
    header: BlockHeader,
    bytes: Vec<u8>,
}

impl BlockFrame {
    /// Takes an encoded block, checking its layout as [`Block::decode`] does.
    pub fn parse(bytes: Vec<u8>) -> Result<BlockFrame, BlockDecodeError> {
        Ok(BlockFrame {
            header: check_layout(&bytes)?,
            bytes,
        })
    }

    /// The block's header.
    pub fn header(&self) -> &BlockHeader {
        &self.header
    }

    /// The canonical bytes of each envelope, in order.
    pub fn txs(&self) -> impl Iterator<Item = &[u8]> + '_ {
        TxSlices::of(&self.bytes)
    }

    /// The block, each transaction copied out.
    pub fn into_block(self) -> Block {
        Block {
            txs: TxSlices::of(&self.bytes).map(<[u8]>::to_vec).collect(),
            header: self.header,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_and_hash_is_of_the_encoding() {
        let b = Block::from_txs(
            7,
            [3; 32],
            1_000,
            CutReason::Count,
            vec![b"a".to_vec(), b"bc".to_vec()],
        );
        let enc = b.header.encode();
        assert_eq!(BlockHeader::decode(&enc).unwrap(), b.header);
        assert_eq!(b.hash(), <[u8; 32]>::from(Sha256::digest(enc)));
        let mut bytes = Vec::new();
        b.encode_into(&mut bytes);
        assert_eq!(bytes.len(), b.encoded_len());
        assert_eq!(Block::decode(&bytes).unwrap(), b);
        assert!(b.data_hash_matches());
    }

    #[test]
    fn decode_rejects_bad_layouts() {
        let b = Block::from_txs(1, [0; 32], 5, CutReason::Idle, vec![b"xyz".to_vec()]);
        let mut bytes = Vec::new();
        b.encode_into(&mut bytes);
        // A frame accepts exactly what decode accepts, and refuses it for the same reason.
        let rejected = |bytes: &[u8]| {
            let decoded = Block::decode(bytes).expect_err("a bad layout");
            assert_eq!(
                BlockFrame::parse(bytes.to_vec()).expect_err("a bad layout"),
                decoded
            );
            decoded
        };
        for cut in 0..BLOCK_HEADER_LEN {
            assert_eq!(
                rejected(&bytes[..cut]),
                BlockDecodeError::Header(HeaderError::TooShort { got: cut }),
                "prefix {cut}"
            );
        }
        for cut in BLOCK_HEADER_LEN..BLOCK_HEADER_LEN + 4 {
            assert_eq!(
                rejected(&bytes[..cut]),
                BlockDecodeError::TruncatedTxLength { index: 0 },
                "prefix {cut}"
            );
        }
        for cut in BLOCK_HEADER_LEN + 4..bytes.len() {
            assert_eq!(
                rejected(&bytes[..cut]),
                BlockDecodeError::TruncatedTx {
                    index: 0,
                    len: 3,
                    remaining: cut - BLOCK_HEADER_LEN - 4
                },
                "prefix {cut}"
            );
        }
        let mut extra = bytes.clone();
        extra.push(0);
        assert_eq!(
            rejected(&extra),
            BlockDecodeError::TrailingBytes { extra: 1 }
        );
        let mut bad_reason = bytes.clone();
        bad_reason[20] = 99;
        assert_eq!(
            rejected(&bad_reason),
            BlockDecodeError::UnknownCutReason { cut_reason: 99 }
        );
        let mut bad_format = bytes.clone();
        bad_format[21] = 3;
        assert_eq!(
            rejected(&bad_format),
            BlockDecodeError::Header(HeaderError::UnknownFormat { format: 3 })
        );
        let mut reserved = bytes.clone();
        reserved[23] = 1;
        assert_eq!(
            rejected(&reserved),
            BlockDecodeError::Header(HeaderError::ReservedNotZero { reserved: [0, 1] })
        );
        let mut too_many = bytes;
        too_many[16..20].copy_from_slice(&(BLOCK_TX_COUNT_MAX + 1).to_le_bytes());
        assert_eq!(
            rejected(&too_many),
            BlockDecodeError::TooManyTxs {
                tx_count: BLOCK_TX_COUNT_MAX + 1
            }
        );
    }

    /// The texts end up in `StorageError::CorruptBlock` and `medledger verify`'s report.
    #[test]
    fn decode_error_messages() {
        let cases = [
            (
                BlockDecodeError::Header(HeaderError::TooShort { got: 3 }),
                "header needs 88 bytes, got 3",
            ),
            (
                BlockDecodeError::UnknownCutReason { cut_reason: 99 },
                "unknown cut reason 99",
            ),
            (
                BlockDecodeError::TooManyTxs { tx_count: 100_001 },
                "tx_count 100001 is over the limit of 100000",
            ),
            (
                BlockDecodeError::TruncatedTxLength { index: 2 },
                "body ends inside the length of tx 2",
            ),
            (
                BlockDecodeError::TruncatedTx {
                    index: 0,
                    len: 3,
                    remaining: 1,
                },
                "tx 0 claims 3 bytes, 1 remain",
            ),
            (
                BlockDecodeError::TrailingBytes { extra: 1 },
                "1 bytes after the last transaction",
            ),
        ];
        for (err, msg) in cases {
            assert_eq!(err.to_string(), msg);
        }
    }

    #[test]
    fn a_frame_lends_the_transactions_decode_copies() {
        let txs: Vec<Vec<u8>> = vec![b"a".to_vec(), Vec::new(), vec![7; 300], b"xyz".to_vec()];
        let b = Block::from_txs(4, [9; 32], 5, CutReason::Idle, txs.clone());
        let mut bytes = Vec::new();
        b.encode_into(&mut bytes);
        let frame = BlockFrame::parse(bytes.clone()).unwrap();
        assert_eq!(frame.header(), &b.header);
        assert_eq!(frame.txs().collect::<Vec<_>>(), txs);
        assert_eq!(frame.into_block(), Block::decode(&bytes).unwrap());
        let genesis = Block::genesis(1);
        let mut bytes = Vec::new();
        genesis.encode_into(&mut bytes);
        assert_eq!(BlockFrame::parse(bytes).unwrap().txs().count(), 0);
    }

    #[test]
    fn cut_reason_bytes_are_stable() {
        let expected = [
            (CutReason::Genesis, 0, "genesis"),
            (CutReason::Count, 1, "count"),
            (CutReason::Bytes, 2, "bytes"),
            (CutReason::Oversize, 3, "oversize"),
            (CutReason::Timeout, 4, "timeout"),
            (CutReason::Idle, 5, "idle"),
            (CutReason::Drain, 6, "drain"),
        ];
        for (reason, byte, name) in expected {
            assert_eq!(reason.as_u8(), byte);
            assert_eq!(CutReason::from_u8(byte), Some(reason));
            assert_eq!(reason.as_str(), name);
            assert_eq!(reason.to_string(), name);
            assert_eq!(CutReason::ALL[usize::from(byte)], reason);
        }
        for byte in 7..=u8::MAX {
            assert_eq!(CutReason::from_u8(byte), None);
        }
    }
}
