//! The values the views store, and their bytes.
//!
//! Values are bincode 2 with the ledger's configuration (little-endian, fixed-width
//! integers), so a rebuild writes exactly the bytes the live projector wrote: `verify
//! --views` compares them byte for byte.
//!
//! | view | value |
//! |---|---|
//! | records, record_versions | [`VersionEntry`] |
//! | the timelines, active | [`Summary`] |
//! | grants | [`GrantState`](medledger_chaincode::contract::GrantState) |
//! | audit | [`AuditEntry`] |
//! | rejected | [`Rejection`] |

use bincode::{Decode, Encode};
use medledger_chaincode::contract::RecordState;
use medledger_chaincode::{Clinical, EventKind, RecordStatus, Timestamp, TxId};

use super::ViewError;

/// Values are small; anything above this is corrupt.
const VALUE_BYTES_MAX: usize = 1 << 20;

fn config() -> impl bincode::config::Config {
    bincode::config::standard()
        .with_little_endian()
        .with_fixed_int_encoding()
        .with_limit::<VALUE_BYTES_MAX>()
}

/// Encodes a view value.
pub fn encode<T: Encode>(value: &T) -> Vec<u8> {
    bincode::encode_to_vec(value, config()).expect("encoding a view value into memory")
}

/// Appends the encoding of `value` to `out` (the same bytes as [`encode`]).
pub fn encode_into<T: Encode>(value: &T, out: &mut Vec<u8>) {
    bincode::encode_into_std_write(value, out, config())
        .expect("encoding a view value into memory");
}

/// Decodes a view value written by [`encode`].
pub fn decode<T: Decode<()>>(bytes: &[u8], what: &'static str) -> Result<T, ViewError> {
    match bincode::decode_from_slice(bytes, config()) {
        Ok((v, used)) if used == bytes.len() => Ok(v),
        _ => Err(ViewError::Malformed { what }),
    }
}

/// Where a transaction sits in the ledger.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Encode, Decode)]
pub struct TxPosition {
    /// The block number.
    pub block: u64,
    /// The index of the transaction in its block.
    pub position: u32,
    /// The transaction's id.
    pub tx_id: [u8; 16],
}

impl TxPosition {
    /// The transaction id.
    pub fn tx_id(&self) -> TxId {
        TxId(self.tx_id)
    }
}

/// One version of a record: the state it had after the event that made it, and where that
/// event is in the ledger. `records` holds the current one, `record_versions` the ones
/// later versions superseded.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct VersionEntry {
    /// The event that produced this version.
    pub at: TxPosition,
    /// What kind of event that was ([`event_kind_code`]).
    pub event: u8,
    /// The record's state at this version.
    pub state: RecordState,
}

impl VersionEntry {
    /// The kind of event that made this version.
    pub fn event_kind(&self) -> Option<EventKind> {
        event_kind_from_code(self.event)
    }
}

/// What the timelines store next to a key: enough to filter by status and type without
/// reading the record.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct Summary {
    pub status: RecordStatus,
    pub record_type: String,
}

/// One read of a record's payload: an `AccessLogged` event and where it is.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct AuditEntry {
    pub at: TxPosition,
    pub accessor_id: String,
    pub accessed_at: Timestamp,
    /// As the ledger holds it: sealed under the record's key since format 2.
    pub purpose: Clinical,
}

/// One read of clinical content (a `RecordsRead` event) and where it is.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct AccessLogEntry {
    pub at: TxPosition,
    pub patient_id: String,
    /// The records read, in the order shown.
    pub record_ids: Vec<String>,
    pub reader_id: String,
    pub reader_role: String,
    pub reader_hospital: Option<String>,
    pub what: String,
    pub purpose: String,
    /// Break-glass: the reason, sealed under the patient's access key.
    pub break_glass: Option<Clinical>,
    pub read_at: Timestamp,
}

/// A committed transaction that changed nothing: the contract's verdict on it.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct Rejection {
    pub at: TxPosition,
    /// The contract's stable error code (`version_conflict`, ...), or `undecodable`.
    pub code: String,
    /// The contract's message (ids and versions only, never metadata or payload).
    pub message: String,
}

/// The stable byte of an event kind in [`VersionEntry::event`].
pub fn event_kind_code(kind: EventKind) -> u8 {
    match kind {
        EventKind::RecordCreated => 0,
        EventKind::RecordAmended => 1,
        EventKind::RecordStatusChanged => 2,
        EventKind::AccessGranted => 3,
        EventKind::AccessRevoked => 4,
        EventKind::PayloadErased => 5,
        EventKind::AccessLogged => 6,
        EventKind::RecordsRead => 7,
    }
}

/// The inverse of [`event_kind_code`].
pub fn event_kind_from_code(code: u8) -> Option<EventKind> {
    Some(match code {
        0 => EventKind::RecordCreated,
        1 => EventKind::RecordAmended,
        2 => EventKind::RecordStatusChanged,
        3 => EventKind::AccessGranted,
        4 => EventKind::AccessRevoked,
        5 => EventKind::PayloadErased,
        6 => EventKind::AccessLogged,
        7 => EventKind::RecordsRead,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_into_appends_what_encode_returns() {
        let entry = AuditEntry {
            at: TxPosition {
                block: 7,
                position: 3,
                tx_id: [5; 16],
            },
            accessor_id: "dr-0001-002".into(),
            accessed_at: Timestamp::from_unix_ms(1_700_000_000_000),
            purpose: "treatment".into(),
        };
        let mut out = b"key".to_vec();
        encode_into(&entry, &mut out);
        assert_eq!(&out[..3], b"key");
        assert_eq!(out[3..], encode(&entry));
        assert_eq!(decode::<AuditEntry>(&out[3..], "audit").unwrap(), entry);
    }

    #[test]
    fn every_event_kind_code_round_trips() {
        for code in 0..=7 {
            let kind = event_kind_from_code(code).unwrap();
            assert_eq!(event_kind_code(kind), code);
        }
        assert_eq!(event_kind_from_code(8), None);
    }

    #[test]
    fn decode_rejects_trailing_and_truncated_bytes() {
        let s = Summary {
            status: RecordStatus::Archived,
            record_type: "lab_result".into(),
        };
        let mut bytes = encode(&s);
        assert_eq!(decode::<Summary>(&bytes, "summary").unwrap(), s);
        bytes.push(0);
        assert!(decode::<Summary>(&bytes, "summary").is_err());
        bytes.truncate(bytes.len() - 3);
        assert!(decode::<Summary>(&bytes, "summary").is_err());
    }
}
