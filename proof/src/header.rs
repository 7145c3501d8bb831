//! The 88-byte block header (block format 1): the one codec for it.
//!
//! The ledger engine (`medledger-storage`, `storage/src/ledger/block.rs`) writes and
//! reads its headers through this module, and an auditor's verifier reads them here too,
//! without the storage crate (no RocksDB). One codec means the bytes the ledger hashes
//! and the bytes a proof shows cannot drift apart; the golden chain in `fixtures/golden/`
//! pins them (docs/FORMAT.md).
//!
//! ```text
//! offset size field
//!      0    8 number        u64 LE   (genesis = 0; also the block's leaf index in the chain tree)
//!      8    8 timestamp_ms  i64 LE
//!     16    4 tx_count      u32 LE   (the size of the block's transaction tree)
//!     20    1 cut_reason    u8
//!     21    1 format        u8       (= 1)
//!     22    2 reserved      zero
//!     24   32 prev_hash
//!     56   32 data_hash              (RFC 6962 root over the block's tx hashes)
//! ```
//! The block hash is SHA-256 of these 88 bytes.
//!
//! The cut reason is carried as its byte and not interpreted here: the verifier needs
//! none of it, and an auditor's older verifier keeps reading the headers of a server
//! that has since learned a new reason. The ledger engine refuses a byte it does not
//! know (storage's `CutReason`).

use sha2::{Digest, Sha256};

use crate::error::HeaderError;
use crate::merkle::Hash;

/// Size of a block header in bytes.
pub const BLOCK_HEADER_LEN: usize = 88;
/// The header format written today: 2, whose envelopes hold clinical text only sealed
/// (docs/FORMAT.md). Format 1 (clinical text in the clear) is read, never written; the
/// header layout is the same for both.
pub const BLOCK_FORMAT: u8 = 2;
/// The oldest header format this crate reads.
pub const BLOCK_FORMAT_OLDEST: u8 = 1;

/// Byte offset of `number` (u64 LE).
pub const NUMBER_OFFSET: usize = 0;
/// Byte offset of `timestamp_ms` (i64 LE).
pub const TIMESTAMP_OFFSET: usize = 8;
/// Byte offset of `tx_count` (u32 LE).
pub const TX_COUNT_OFFSET: usize = 16;
/// Byte offset of `cut_reason` (u8).
pub const CUT_REASON_OFFSET: usize = 20;
/// Byte offset of `format` (u8).
pub const FORMAT_OFFSET: usize = 21;
/// Byte offset of the two reserved (zero) bytes.
pub const RESERVED_OFFSET: usize = 22;
/// Byte offset of `prev_hash` (32 bytes).
pub const PREV_HASH_OFFSET: usize = 24;
/// Byte offset of `data_hash` (32 bytes).
pub const DATA_HASH_OFFSET: usize = 56;

const _: () = assert!(BLOCK_HEADER_LEN == 8 + 8 + 4 + 1 + 1 + 2 + 32 + 32);
const _: () = assert!(DATA_HASH_OFFSET + 32 == BLOCK_HEADER_LEN);
const _: () = assert!(PREV_HASH_OFFSET + 32 == DATA_HASH_OFFSET);

/// The fields of a block header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeaderFields {
    /// The block number; block `n` is leaf `n` of the chain tree.
    pub number: u64,
    /// Milliseconds since the Unix epoch, UTC.
    pub timestamp_ms: i64,
    /// Number of transactions, i.e. leaves of the tree whose root is `data_hash`.
    pub tx_count: u32,
    /// Why the block was cut (0 genesis … 6 drain; see docs/FORMAT.md).
    pub cut_reason: u8,
    /// The block format, [`BLOCK_FORMAT_OLDEST`] to [`BLOCK_FORMAT`].
    pub format: u8,
    /// Header hash of block `number - 1` (zeros for genesis).
    pub prev_hash: Hash,
    /// RFC 6962 root over the block's transaction hashes.
    pub data_hash: Hash,
}

impl HeaderFields {
    /// Reads exactly one header: [`BLOCK_HEADER_LEN`] bytes of a known format with zero
    /// reserved bytes. The cut reason is not interpreted.
    ///
    /// # Errors
    /// [`HeaderError::TooShort`] or [`HeaderError::TrailingBytes`] for any other length,
    /// else what [`HeaderFields::decode`] reports.
    pub fn parse(bytes: &[u8]) -> Result<HeaderFields, HeaderError> {
        let (header, rest) = HeaderFields::parse_prefix(bytes)?;
        if !rest.is_empty() {
            return Err(HeaderError::TrailingBytes { extra: rest.len() });
        }
        Ok(header)
    }

    /// Reads the header at the start of an encoded block and returns it with the bytes
    /// after it (the block's body), unchecked.
    ///
    /// # Errors
    /// [`HeaderError::TooShort`] if `bytes` is shorter than a header, else what
    /// [`HeaderFields::decode`] reports.
    pub fn parse_prefix(bytes: &[u8]) -> Result<(HeaderFields, &[u8]), HeaderError> {
        let (header, rest) = bytes
            .split_first_chunk::<BLOCK_HEADER_LEN>()
            .ok_or(HeaderError::TooShort { got: bytes.len() })?;
        Ok((HeaderFields::decode(header)?, rest))
    }

    /// Reads the header bytes, checking the format byte first and then the reserved
    /// bytes.
    ///
    /// # Errors
    /// [`HeaderError::UnknownFormat`] or [`HeaderError::ReservedNotZero`].
    pub fn decode(b: &[u8; BLOCK_HEADER_LEN]) -> Result<HeaderFields, HeaderError> {
        if !(BLOCK_FORMAT_OLDEST..=BLOCK_FORMAT).contains(&b[FORMAT_OFFSET]) {
            return Err(HeaderError::UnknownFormat {
                format: b[FORMAT_OFFSET],
            });
        }
        let reserved: [u8; 2] = array(b, RESERVED_OFFSET);
        if reserved != [0, 0] {
            return Err(HeaderError::ReservedNotZero { reserved });
        }
        Ok(HeaderFields {
            number: u64::from_le_bytes(array(b, NUMBER_OFFSET)),
            timestamp_ms: i64::from_le_bytes(array(b, TIMESTAMP_OFFSET)),
            tx_count: u32::from_le_bytes(array(b, TX_COUNT_OFFSET)),
            cut_reason: b[CUT_REASON_OFFSET],
            format: b[FORMAT_OFFSET],
            prev_hash: array(b, PREV_HASH_OFFSET),
            data_hash: array(b, DATA_HASH_OFFSET),
        })
    }

    /// The header bytes: reserved bytes zero, integers
    /// little-endian. [`HeaderFields::decode`] of them returns `self`.
    #[must_use]
    pub fn encode(&self) -> [u8; BLOCK_HEADER_LEN] {
        let mut out = [0u8; BLOCK_HEADER_LEN];
        out[NUMBER_OFFSET..TIMESTAMP_OFFSET].copy_from_slice(&self.number.to_le_bytes());
        out[TIMESTAMP_OFFSET..TX_COUNT_OFFSET].copy_from_slice(&self.timestamp_ms.to_le_bytes());
        out[TX_COUNT_OFFSET..CUT_REASON_OFFSET].copy_from_slice(&self.tx_count.to_le_bytes());
        out[CUT_REASON_OFFSET] = self.cut_reason;
        out[FORMAT_OFFSET] = self.format;
        out[PREV_HASH_OFFSET..DATA_HASH_OFFSET].copy_from_slice(&self.prev_hash);
        out[DATA_HASH_OFFSET..].copy_from_slice(&self.data_hash);
        out
    }

    /// The block hash: SHA-256 of [`HeaderFields::encode`].
    #[must_use]
    pub fn hash(&self) -> Hash {
        header_hash(&self.encode())
    }
}

/// The block hash: SHA-256 of the header bytes.
#[must_use]
pub fn header_hash(header: &[u8; BLOCK_HEADER_LEN]) -> Hash {
    Sha256::digest(header).into()
}

/// `N` bytes of `b` from `at`; the offsets are constants inside the header.
fn array<const N: usize>(b: &[u8; BLOCK_HEADER_LEN], at: usize) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&b[at..at + N]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> HeaderFields {
        HeaderFields {
            number: 7,
            timestamp_ms: -3,
            tx_count: 0x0102_0304,
            cut_reason: 5,
            format: BLOCK_FORMAT,
            prev_hash: [0xaa; 32],
            data_hash: [0xbb; 32],
        }
    }

    #[test]
    fn round_trips_and_rejects_bad_layouts() {
        let h = sample();
        let bytes = h.encode();
        assert_eq!(HeaderFields::parse(&bytes), Ok(h));
        assert_eq!(HeaderFields::decode(&bytes), Ok(h));
        assert_eq!(h.hash(), header_hash(&bytes));
        assert_eq!(&bytes[16..20], &[4, 3, 2, 1]);
        for len in [0, 1, 87] {
            assert_eq!(
                HeaderFields::parse(&bytes[..len]),
                Err(HeaderError::TooShort { got: len })
            );
            assert_eq!(
                HeaderFields::parse_prefix(&bytes[..len]),
                Err(HeaderError::TooShort { got: len })
            );
        }
        let mut longer = bytes.to_vec();
        longer.extend_from_slice(b"body");
        assert_eq!(
            HeaderFields::parse(&longer),
            Err(HeaderError::TrailingBytes { extra: 4 })
        );
        assert_eq!(HeaderFields::parse_prefix(&longer), Ok((h, &b"body"[..])));
        let mut bad = bytes;
        bad[FORMAT_OFFSET] = 3;
        assert_eq!(
            HeaderFields::parse(&bad),
            Err(HeaderError::UnknownFormat { format: 3 })
        );
        bad[FORMAT_OFFSET] = 0;
        assert_eq!(
            HeaderFields::parse(&bad),
            Err(HeaderError::UnknownFormat { format: 0 })
        );
        // Format 1, the one before sealing, is read as it was written.
        let mut old = h;
        old.format = 1;
        assert_eq!(HeaderFields::parse(&old.encode()), Ok(old));
        let mut bad = bytes;
        bad[RESERVED_OFFSET + 1] = 1;
        assert_eq!(
            HeaderFields::parse(&bad),
            Err(HeaderError::ReservedNotZero { reserved: [0, 1] })
        );
        // The cut reason is carried, not judged (see the module docs).
        let mut unknown_reason = bytes;
        unknown_reason[CUT_REASON_OFFSET] = 0xff;
        assert_eq!(
            HeaderFields::parse(&unknown_reason).map(|f| f.cut_reason),
            Ok(0xff)
        );
    }

    /// The messages reach the CLI's `verify` report and a proof's rejection as they are.
    #[test]
    fn error_messages() {
        let cases = [
            (
                HeaderError::TooShort { got: 87 },
                "header needs 88 bytes, got 87",
            ),
            (
                HeaderError::TrailingBytes { extra: 1 },
                "1 bytes after the 88-byte header",
            ),
            (
                HeaderError::UnknownFormat { format: 3 },
                "unknown block format 3 (formats 1 to 2 are known)",
            ),
            (
                HeaderError::ReservedNotZero { reserved: [0, 1] },
                "reserved header bytes are 00 01, not zero",
            ),
        ];
        for (err, msg) in cases {
            assert_eq!(err.to_string(), msg);
        }
    }
}
