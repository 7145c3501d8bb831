//! The transaction envelope: one event plus who submitted it and when, its canonical bytes
//! and its hash.
//!
//! Canonical bytes are bincode 2.0.1 with fixed-width little-endian integers (see
//! docs/FORMAT.md for the byte layout and fixtures/ for golden vectors). The tx hash is
//! SHA-256 of those bytes. The first 16 bytes of an envelope are always its `tx_id`, so an
//! index can key a transaction without decoding it.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{DecodeError, EventError};
use crate::event::{id, Event};
use crate::limits::ENVELOPE_BYTES_MAX;
use crate::time::Timestamp;

/// The block format whose envelopes hold clinical text in the clear (written before
/// sealing; read, never written).
pub const FORMAT_PLAIN: u8 = 1;
/// The block format whose envelopes hold clinical text only sealed: what the ledger
/// writes.
pub const FORMAT_SEALED: u8 = 2;

/// SHA-256 of an envelope's canonical bytes.
pub type TxHash = [u8; 32];

/// A transaction id: a UUID (the server mints UUIDv7, so ids sort by submission time).
/// Shown in the canonical 8-4-4-4-12 lowercase hex form.
#[derive(
    Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, bincode::Encode, bincode::Decode,
)]
pub struct TxId(pub [u8; 16]);

impl TxId {
    /// Parses the 8-4-4-4-12 hex form (either case) or 32 plain hex digits.
    pub fn parse(text: &str) -> Option<TxId> {
        let digits: Vec<u8> = match text.len() {
            36 => {
                let b = text.as_bytes();
                if [8, 13, 18, 23].iter().any(|&i| b[i] != b'-') {
                    return None;
                }
                b.iter().copied().filter(|&c| c != b'-').collect()
            }
            32 => text.as_bytes().to_vec(),
            _ => return None,
        };
        let mut out = [0u8; 16];
        hex::decode_to_slice(&digits, &mut out).ok()?;
        Some(TxId(out))
    }
}

impl std::fmt::Display for TxId {
    /// The UUID form, lowercase hex in groups of 8-4-4-4-12, written into one buffer (a
    /// hex `String` and `write!` per tx id showed in timeline pages' profiles).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut out = [b'-'; 36];
        // (bytes of the id, where their hex starts in `out`)
        for (bytes, at) in [(0..4, 0), (4..6, 9), (6..8, 14), (8..10, 19), (10..16, 24)] {
            let end = at + 2 * bytes.len();
            hex::encode_to_slice(&self.0[bytes], &mut out[at..end])
                .expect("the group's hex fits its slot");
        }
        f.write_str(std::str::from_utf8(&out).expect("ASCII hex"))
    }
}

impl std::fmt::Debug for TxId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TxId({self})")
    }
}

impl Serialize for TxId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for TxId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        TxId::parse(&text).ok_or_else(|| serde::de::Error::custom("expected a UUID"))
    }
}

/// One event, who submitted it and when. What the ledger orders into blocks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, bincode::Encode, bincode::Decode)]
pub struct Envelope {
    /// Unique per transaction; must stay the first field (see the module docs).
    pub tx_id: TxId,
    /// The authenticated principal that submitted the event.
    pub submitter: String,
    /// When the server accepted the submission.
    pub submitted_at: Timestamp,
    pub event: Event,
}

/// What an event is about: the one record it creates or changes, or the (patient id,
/// grantee id) pair of a grant. Events with different subjects never affect each other
/// (the contract's rules read only the subject's state), as UTF-8 bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Subject<'a> {
    Record(&'a [u8]),
    Grant(&'a [u8], &'a [u8]),
}

/// A bincode writer that checks what is written against `expected` instead of keeping
/// it: `matched` is the length of the equal prefix written so far, and a write that
/// differs fails the encoding.
struct SameBytes<'a> {
    expected: &'a [u8],
    matched: usize,
}

impl bincode::enc::write::Writer for SameBytes<'_> {
    fn write(&mut self, bytes: &[u8]) -> Result<(), bincode::error::EncodeError> {
        let end = self.matched + bytes.len();
        if self.expected.get(self.matched..end) != Some(bytes) {
            return Err(bincode::error::EncodeError::Other(
                "not the canonical bytes",
            ));
        }
        self.matched = end;
        Ok(())
    }
}

/// The bincode configuration that defines canonical bytes: little-endian, fixed-width
/// integers, allocation bounded by the largest envelope.
fn config() -> impl bincode::config::Config {
    bincode::config::standard()
        .with_little_endian()
        .with_fixed_int_encoding()
        .with_limit::<ENVELOPE_BYTES_MAX>()
}

/// The first `n` bytes of `rest`, which moves past them.
fn take<'a>(rest: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    let (head, tail) = rest.split_at_checked(n)?;
    *rest = tail;
    Some(head)
}

/// A canonical string's bytes (u64 LE length, then the bytes) from the front of `rest`.
fn take_string<'a>(rest: &mut &'a [u8]) -> Option<&'a [u8]> {
    let len = u64::from_le_bytes(take(rest, 8)?.try_into().ok()?);
    take(rest, usize::try_from(len).ok()?)
}

/// SHA-256 of canonical envelope bytes: the transaction's hash.
pub fn tx_hash(canonical_bytes: &[u8]) -> TxHash {
    Sha256::digest(canonical_bytes).into()
}

impl Envelope {
    /// The canonical bytes. Deterministic: equal envelopes give equal bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(512);
        self.encode_into(&mut out);
        out
    }

    /// Appends the canonical bytes to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        // Writing into a Vec cannot fail, and every envelope that passes check_limits is
        // far below the configured limit; a failure here is a broken invariant.
        bincode::encode_into_std_write(self, out, config())
            .expect("encoding an envelope into memory cannot fail");
    }

    /// Decodes canonical bytes, rejecting trailing bytes and non-canonical encodings, so
    /// that one transaction has exactly one byte form (and one hash).
    pub fn decode(bytes: &[u8]) -> Result<Envelope, DecodeError> {
        let (env, used): (Envelope, usize) = bincode::decode_from_slice(bytes, config())
            .map_err(|e| DecodeError::Malformed(e.to_string()))?;
        if used != bytes.len() {
            return Err(DecodeError::TrailingBytes(bytes.len() - used));
        }
        // bincode's decoder rejects bad tags and bools, so only the bytes of a valid
        // envelope reach here; re-encoding proves they are the one canonical form. The
        // encoding is compared as it is made, not written out (a rebuild decodes
        // millions of envelopes).
        if !env.encodes_to(bytes) {
            return Err(DecodeError::NotCanonical);
        }
        Ok(env)
    }

    /// Decodes canonical bytes found in a block of `format` and checks that their clinical
    /// text has that format's form ([`Envelope::check_format`]): the rule `verify`
    /// applies to every transaction.
    pub fn decode_in(format: u8, bytes: &[u8]) -> Result<Envelope, DecodeError> {
        let env = Envelope::decode(bytes)?;
        env.check_format(format)?;
        Ok(env)
    }

    /// Whether `bytes` are exactly this envelope's canonical bytes, compared as they are
    /// encoded.
    fn encodes_to(&self, bytes: &[u8]) -> bool {
        let mut same = SameBytes {
            expected: bytes,
            matched: 0,
        };
        bincode::encode_into_writer(self, &mut same, config()).is_ok()
            && same.matched == bytes.len()
    }

    /// The tx id of canonical envelope bytes, read from their first 16 bytes.
    pub fn tx_id_of(canonical_bytes: &[u8]) -> Option<TxId> {
        let head: [u8; 16] = canonical_bytes.get(..16)?.try_into().ok()?;
        Some(TxId(head))
    }

    /// What the event in canonical envelope bytes is about, read from the bytes without
    /// decoding them (a rebuild sorts millions of transactions by it before projecting
    /// them). For the canonical bytes of any envelope, this is exactly the subject of
    /// its event; for other bytes it may be anything, and [`Envelope::decode`] says
    /// whether they are an envelope at all.
    pub fn subject_of(canonical_bytes: &[u8]) -> Option<Subject<'_>> {
        let mut rest = canonical_bytes.get(16..)?;
        take_string(&mut rest)?; // submitter
        take(&mut rest, 8)?; // submitted_at
        let variant = u32::from_le_bytes(take(&mut rest, 4)?.try_into().ok()?);
        // The variants' order in docs/FORMAT.md: grants (3, 4) begin with the patient
        // and grantee ids, every other event with its record id.
        match variant {
            0..=2 | 5 | 6 => Some(Subject::Record(take_string(&mut rest)?)),
            3 | 4 => {
                let patient_id = take_string(&mut rest)?;
                Some(Subject::Grant(patient_id, take_string(&mut rest)?))
            }
            _ => None,
        }
    }

    /// Whether the event's clinical text has the form that a block of `format` requires:
    /// in the clear in format [`FORMAT_PLAIN`] (blocks written before sealing), sealed in
    /// format [`FORMAT_SEALED`] (docs/FORMAT.md). The orderer checks it before a block is
    /// written and `verify` on every block read.
    pub fn check_format(&self, format: u8) -> Result<(), DecodeError> {
        let sealed = match format {
            FORMAT_PLAIN => false,
            FORMAT_SEALED => true,
            other => return Err(DecodeError::UnknownFormat(other)),
        };
        for (field, value) in self.event.clinical_fields() {
            if value.is_sealed() != sealed {
                let found = if value.is_sealed() {
                    "sealed"
                } else {
                    "plain text"
                };
                return Err(DecodeError::ClinicalForm {
                    field,
                    found,
                    format,
                });
            }
        }
        Ok(())
    }

    /// Checks the submitter and every field of the event against its limit.
    pub fn check_limits(&self) -> Result<(), EventError> {
        id("submitter", &self.submitter)?;
        if !self.submitted_at.is_representable() {
            return Err(EventError::OutOfRange {
                field: "submitted_at",
                reason: "must lie in years 0000 to 9999",
            });
        }
        self.event.check_limits()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::*;
    use crate::limits::READ_RECORDS_MAX;
    use proptest::prelude::*;

    fn sample() -> Envelope {
        Envelope {
            tx_id: TxId([7; 16]),
            submitter: "dr-1".into(),
            submitted_at: Timestamp(1_795_428_000_000),
            event: Event::RecordCreated(RecordCreated {
                record_id: "r-1".into(),
                patient_id: "p-1".into(),
                author_id: "dr-1".into(),
                hospital_id: "h-1".into(),
                record_type: "lab_result".into(),
                created_at: Timestamp(1_795_428_000_000),
                version: 1,
                metadata: "{\"any\":\"small JSON object\"}".into(),
                payload: Some(PayloadRef {
                    cid: "QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5o".into(),
                    size: 12,
                    sha256: Sha256Digest([9; 32]),
                    key_id: "k-1".into(),
                    content_type: "application/fhir+json".into(),
                }),
            }),
        }
    }

    #[test]
    fn tx_id_is_the_first_sixteen_bytes() {
        let env = sample();
        let bytes = env.encode();
        assert_eq!(Envelope::tx_id_of(&bytes), Some(env.tx_id));
        assert_eq!(Envelope::decode(&bytes).unwrap(), env);
    }

    #[test]
    fn integers_are_fixed_width_little_endian() {
        let bytes = sample().encode();
        // submitter: u64 LE length 4, then "dr-1"; then submitted_at as i64 LE.
        assert_eq!(&bytes[16..24], &4u64.to_le_bytes());
        assert_eq!(&bytes[24..28], b"dr-1");
        assert_eq!(&bytes[28..36], &1_795_428_000_000i64.to_le_bytes());
        // event variant index: u32 LE 0 for RecordCreated.
        assert_eq!(&bytes[36..40], &0u32.to_le_bytes());
    }

    #[test]
    fn rejects_trailing_truncated_and_non_canonical_bytes() {
        let bytes = sample().encode();
        let mut long = bytes.clone();
        long.push(0);
        assert_eq!(Envelope::decode(&long), Err(DecodeError::TrailingBytes(1)));
        for cut in [0, 1, 16, 40, bytes.len() - 1] {
            assert!(matches!(
                Envelope::decode(&bytes[..cut]),
                Err(DecodeError::Malformed(_))
            ));
        }
        // The Option tag of the payload must be 0 or 1.
        let tag_at =
            bytes.len() - (8 + 46 + 8 + 32 + 8 + 3 + 8 + "application/fhir+json".len()) - 1;
        assert_eq!(bytes[tag_at], 1);
        let mut bad = bytes.clone();
        bad[tag_at] = 2;
        assert!(Envelope::decode(&bad).is_err());
    }

    #[test]
    fn the_canonical_check_compares_every_byte() {
        let env = sample();
        let bytes = env.encode();
        let same = |expected: &[u8]| env.encodes_to(expected);
        assert!(same(&bytes));
        for at in [0, 16, 40, bytes.len() - 1] {
            let mut other = bytes.clone();
            other[at] ^= 1;
            assert!(!same(&other), "byte {at} changed");
        }
        assert!(!same(&bytes[..bytes.len() - 1]));
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(!same(&longer));
    }

    #[test]
    fn an_absurd_length_prefix_is_an_error_not_an_allocation() {
        let mut bytes = sample().encode();
        bytes[16..24].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(matches!(
            Envelope::decode(&bytes),
            Err(DecodeError::Malformed(_))
        ));
    }

    #[test]
    fn tx_ids_parse_and_print() {
        let id = TxId::parse("0190f3a2-7b1c-7def-8123-456789abcdef").unwrap();
        assert_eq!(id.to_string(), "0190f3a2-7b1c-7def-8123-456789abcdef");
        assert_eq!(TxId::parse("0190f3a27b1c7def8123456789abcdef"), Some(id));
        for bad in [
            "",
            "0190f3a2_7b1c-7def-8123-456789abcdef",
            "zz90f3a27b1c7def8123456789abcdef",
        ] {
            assert_eq!(TxId::parse(bad), None);
        }
    }

    proptest::proptest! {
        /// Every id prints as its hex in 8-4-4-4-12 groups, and parses back.
        #[test]
        fn tx_ids_print_as_grouped_hex(bytes in proptest::prelude::any::<[u8; 16]>()) {
            let h = hex::encode(bytes);
            let want = format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32]);
            let id = TxId(bytes);
            proptest::prop_assert_eq!(id.to_string(), want.clone());
            proptest::prop_assert_eq!(TxId::parse(&want), Some(id));
        }
    }

    #[test]
    fn limits_name_the_field() {
        let mut env = sample();
        env.submitter = "x".repeat(129);
        assert!(matches!(
            env.check_limits(),
            Err(EventError::TooLong {
                field: "submitter",
                ..
            })
        ));
        let mut env = sample();
        if let Event::RecordCreated(e) = &mut env.event {
            e.patient_id = "p 1".into();
        }
        assert!(matches!(
            env.check_limits(),
            Err(EventError::BadCharacters {
                field: "patient_id",
                ..
            })
        ));
        assert_eq!(sample().check_limits(), Ok(()));
    }

    fn read(record_ids: Vec<String>) -> Envelope {
        Envelope {
            tx_id: TxId([7; 16]),
            submitter: "dr-1".into(),
            submitted_at: Timestamp(1),
            event: Event::RecordsRead(RecordsRead {
                patient_id: "p-1".into(),
                record_ids,
                reader_id: "dr-1".into(),
                reader_role: "clinician".into(),
                reader_hospital: Some("h-1".into()),
                what: "timeline".into(),
                purpose: "treatment".into(),
                break_glass: None,
                read_at: Timestamp(1),
            }),
        }
    }

    #[test]
    fn a_read_round_trips_has_no_subject_and_keeps_to_its_rules() {
        let env = read(vec!["r-1".into(), "r-2".into()]);
        assert_eq!(env.check_limits(), Ok(()));
        let bytes = env.encode();
        assert_eq!(Envelope::decode(&bytes), Ok(env.clone()));
        // No record nor grant: a rebuild gives it to the first partition, which needs no
        // state for it.
        assert_eq!(Envelope::subject_of(&bytes), None);
        assert_eq!(env.event.record_id(), None);
        assert_eq!(env.event.key_name().as_deref(), Some("patient/p-1"));
        assert!(env.event.clinical_fields().is_empty());
        assert_eq!(env.check_format(FORMAT_SEALED), Ok(()));
        let broken = |change: &dyn Fn(&mut RecordsRead)| {
            let mut env = read(vec!["r-1".into()]);
            let Event::RecordsRead(e) = &mut env.event else {
                unreachable!()
            };
            change(e);
            env.check_limits().unwrap_err()
        };
        assert_eq!(
            broken(&|e| e.record_ids.clear()),
            EventError::Empty {
                field: "record_ids"
            }
        );
        assert!(matches!(
            broken(&|e| e.record_ids = vec!["r".into(); READ_RECORDS_MAX + 1]),
            EventError::TooMany {
                field: "record_ids",
                ..
            }
        ));
        for (field, change) in [
            (
                "reader_role",
                &(|e: &mut RecordsRead| e.reader_role = "nurse".into())
                    as &dyn Fn(&mut RecordsRead),
            ),
            ("what", &|e: &mut RecordsRead| e.what = "gossip".into()),
            ("purpose", &|e: &mut RecordsRead| {
                e.purpose = "curiosity".into()
            }),
        ] {
            assert!(
                matches!(broken(change), EventError::Malformed { field: f, .. } if f == field),
                "{field}"
            );
        }
        assert!(matches!(
            broken(&|e| e.record_ids = vec!["r/1".into()]),
            EventError::BadCharacters {
                field: "record_ids",
                ..
            }
        ));
        // A break-glass reason is clinical text: sealed in the block format written.
        let mut env = read(vec!["r-1".into()]);
        if let Event::RecordsRead(e) = &mut env.event {
            e.break_glass = Some("unconscious".into());
        }
        assert_eq!(env.event.clinical_fields().len(), 1);
        assert!(env.check_format(FORMAT_SEALED).is_err());
        assert_eq!(env.check_format(FORMAT_PLAIN), Ok(()));
    }

    fn arb_id() -> impl Strategy<Value = String> {
        "[a-z0-9-]{1,20}"
    }

    fn arb_event() -> impl Strategy<Value = Event> {
        prop_oneof![
            (arb_id(), arb_id(), any::<i64>(), ".{0,40}").prop_map(|(r, a, t, m)| {
                Event::RecordCreated(RecordCreated {
                    record_id: r,
                    patient_id: "p".into(),
                    author_id: a,
                    hospital_id: "h".into(),
                    record_type: "note".into(),
                    created_at: Timestamp(t),
                    version: 1,
                    metadata: m.into(),
                    payload: None,
                })
            }),
            (arb_id(), 2u32..100, any::<bool>()).prop_map(|(r, v, meta)| {
                Event::RecordAmended(RecordAmended {
                    record_id: r,
                    version: v,
                    author_id: "a".into(),
                    amended_at: Timestamp(v.into()),
                    reason: "fix".into(),
                    metadata: meta.then(|| "{}".into()),
                    payload: None,
                })
            }),
            (
                arb_id(),
                proptest::option::of(any::<i64>()),
                proptest::collection::vec(arb_id(), 0..4)
            )
                .prop_map(|(g, exp, scope)| {
                    Event::AccessGranted(AccessGranted {
                        patient_id: "p".into(),
                        grantee_id: g,
                        granted_by: "p".into(),
                        granted_at: Timestamp(0),
                        expires_at: exp.map(Timestamp),
                        scope,
                    })
                }),
        ]
    }

    proptest! {
        #[test]
        fn encode_decode_round_trips(id in any::<[u8; 16]>(), sub in arb_id(), at in any::<i64>(), event in arb_event()) {
            let env = Envelope { tx_id: TxId(id), submitter: sub, submitted_at: Timestamp(at), event };
            let bytes = env.encode();
            prop_assert_eq!(Envelope::decode(&bytes), Ok(env.clone()));
            prop_assert_eq!(tx_hash(&bytes), tx_hash(&env.encode()));
        }

        #[test]
        fn the_subject_is_read_from_the_bytes(id in any::<[u8; 16]>(), sub in arb_id(), at in any::<i64>(), event in arb_event()) {
            let expected = match &event {
                Event::AccessGranted(e) => Subject::Grant(e.patient_id.as_bytes(), e.grantee_id.as_bytes()),
                Event::AccessRevoked(e) => Subject::Grant(e.patient_id.as_bytes(), e.grantee_id.as_bytes()),
                other => Subject::Record(other.record_id().expect("a record event").as_bytes()),
            };
            let env = Envelope { tx_id: TxId(id), submitter: sub, submitted_at: Timestamp(at), event: event.clone() };
            let bytes = env.encode();
            let subject = Envelope::subject_of(&bytes);
            prop_assert_eq!(subject, Some(expected));
            // Cut inside the subject, the bytes have none.
            let end = match subject.expect("checked above") {
                Subject::Record(id) | Subject::Grant(_, id) => {
                    id.as_ptr() as usize - bytes.as_ptr() as usize + id.len()
                }
            };
            prop_assert_eq!(Envelope::subject_of(&bytes[..end - 1]), None);
        }

        #[test]
        fn decoding_garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = Envelope::decode(&bytes);
        }
    }
}
