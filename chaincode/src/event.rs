//! The events of a medical record's life.
//!
//! Each event carries what the views and queries need (record, patient, author and
//! hospital ids, record type, timestamps, payload reference, version), never a payload:
//! payloads are encrypted and stored off the ledger, and only their reference enters it.
//!
//! The variant order and the field order are part of the ledger's byte format
//! (docs/FORMAT.md): append new variants at the end, never reorder.

use serde::{Deserialize, Serialize};

use crate::clinical::Clinical;
use crate::error::EventError;
use crate::limits::*;
use crate::time::Timestamp;

/// A SHA-256 digest, written as 64 lowercase hex characters in JSON.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, bincode::Encode, bincode::Decode)]
pub struct Sha256Digest(pub [u8; 32]);

impl std::fmt::Debug for Sha256Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", hex::encode(self.0))
    }
}

impl Serialize for Sha256Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(self.0))
    }
}

impl<'de> Deserialize<'de> for Sha256Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        let mut out = [0u8; 32];
        hex::decode_to_slice(text.as_bytes(), &mut out)
            .map_err(|_| serde::de::Error::custom("expected 64 hex characters"))?;
        Ok(Sha256Digest(out))
    }
}

/// Where a record's encrypted payload lives and how to check it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, bincode::Encode, bincode::Decode)]
pub struct PayloadRef {
    /// The IPFS content identifier of the encrypted payload's DAG root.
    pub cid: String,
    /// Plaintext size in bytes.
    pub size: u64,
    /// SHA-256 of the plaintext, so a decrypted read can be checked end to end.
    pub sha256: Sha256Digest,
    /// The id of the wrapped data key (kept with the views, never in the ledger).
    pub key_id: String,
    /// The payload's MIME type, e.g. `application/fhir+json`.
    pub content_type: String,
}

/// The lifecycle status of a record.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    bincode::Encode,
    bincode::Decode,
)]
#[serde(rename_all = "snake_case")]
pub enum RecordStatus {
    /// In use (the status of every new record).
    Active,
    /// Kept for the record but no longer current.
    Archived,
    /// Written by mistake; kept for the audit trail, never amended again.
    EnteredInError,
}

/// A new record: version 1.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, bincode::Encode, bincode::Decode)]
pub struct RecordCreated {
    pub record_id: String,
    pub patient_id: String,
    /// The clinician who wrote the record.
    pub author_id: String,
    pub hospital_id: String,
    pub record_type: String,
    /// When the record was made clinically (may precede submission).
    pub created_at: Timestamp,
    /// Always 1.
    pub version: u32,
    /// A small JSON object, as compact text (sealed in format-2 blocks).
    pub metadata: Clinical,
    pub payload: Option<PayloadRef>,
}

/// A new version of a record's metadata and/or payload.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, bincode::Encode, bincode::Decode)]
pub struct RecordAmended {
    pub record_id: String,
    /// The version this amendment creates (the previous version + 1).
    pub version: u32,
    pub author_id: String,
    pub amended_at: Timestamp,
    pub reason: Clinical,
    /// New metadata, or `None` to keep the previous version's.
    pub metadata: Option<Clinical>,
    /// New payload, or `None` to keep the previous version's.
    pub payload: Option<PayloadRef>,
}

/// A change of a record's status.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, bincode::Encode, bincode::Decode)]
pub struct RecordStatusChanged {
    pub record_id: String,
    /// The version this change creates (the previous version + 1).
    pub version: u32,
    pub author_id: String,
    pub changed_at: Timestamp,
    pub status: RecordStatus,
    pub reason: Clinical,
}

/// A patient lets a clinician (or other party) read their records.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, bincode::Encode, bincode::Decode)]
pub struct AccessGranted {
    pub patient_id: String,
    pub grantee_id: String,
    pub granted_by: String,
    pub granted_at: Timestamp,
    /// The grant ends at this instant; `None` means until revoked.
    pub expires_at: Option<Timestamp>,
    /// Record types the grant covers; empty means every type.
    pub scope: Vec<String>,
}

/// A grant is withdrawn.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, bincode::Encode, bincode::Decode)]
pub struct AccessRevoked {
    pub patient_id: String,
    pub grantee_id: String,
    pub revoked_by: String,
    pub revoked_at: Timestamp,
}

/// A record's payload is made unreadable forever by destroying its data key
/// (crypto-shredding); the ledger keeps the reference and still verifies.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, bincode::Encode, bincode::Decode)]
pub struct PayloadErased {
    pub record_id: String,
    /// The version this erasure creates (the previous version + 1).
    pub version: u32,
    pub erased_by: String,
    pub erased_at: Timestamp,
    pub reason: Clinical,
}

/// Someone read a record's payload: the audit trail.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, bincode::Encode, bincode::Decode)]
pub struct AccessLogged {
    pub record_id: String,
    pub patient_id: String,
    pub accessor_id: String,
    pub accessed_at: Timestamp,
    pub purpose: Clinical,
}

/// What a read of clinical content showed: the route it came through.
pub const READ_KINDS: [&str; 8] = [
    "record", "history", "as_of", "timeline", "export", "payload", "summary", "search",
];

/// Why records were read: codes after HL7's PurposeOfUse (TREAT, ETREAT, HPAYMT, HOPERAT,
/// HRESCH, PUBHLTH, HLEGAL, PATRQT, HSYSADMIN), never free text, so no clinical detail
/// rides in the clear.
pub const READ_PURPOSES: [&str; 9] = [
    "treatment",
    "emergency",
    "payment",
    "operations",
    "research",
    "public_health",
    "legal",
    "patient_request",
    "audit",
];

/// Someone read clinical content of one patient's records (a record, its history, an
/// earlier version, a page of a timeline, an export, a payload): the accounting of
/// disclosures. A read of several patients' records is one event per patient.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, bincode::Encode, bincode::Decode)]
pub struct RecordsRead {
    pub patient_id: String,
    /// The records read, in the order answered: 1 to [`READ_RECORDS_MAX`].
    pub record_ids: Vec<String>,
    pub reader_id: String,
    /// `patient`, `clinician`, `auditor` or `admin`.
    pub reader_role: String,
    pub reader_hospital: Option<String>,
    /// One of [`READ_KINDS`].
    pub what: String,
    /// One of [`READ_PURPOSES`].
    pub purpose: String,
    /// A clinician without a grant read in an emergency: the reason they gave, sealed
    /// under the patient's access key (forgetting the patient destroys it).
    pub break_glass: Option<Clinical>,
    pub read_at: Timestamp,
}

impl RecordsRead {
    /// The name of the key this event's clinical text is sealed under: the patient's
    /// access key (ids never hold `/`, so it is no record's).
    pub fn key_name(patient_id: &str) -> String {
        format!("patient/{patient_id}")
    }
}

/// One thing that happened to a record or to a patient's access grants.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, bincode::Encode, bincode::Decode)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    RecordCreated(RecordCreated),
    RecordAmended(RecordAmended),
    RecordStatusChanged(RecordStatusChanged),
    AccessGranted(AccessGranted),
    AccessRevoked(AccessRevoked),
    PayloadErased(PayloadErased),
    AccessLogged(AccessLogged),
    RecordsRead(RecordsRead),
}

/// The type of an event, without its data.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    RecordCreated,
    RecordAmended,
    RecordStatusChanged,
    AccessGranted,
    AccessRevoked,
    PayloadErased,
    AccessLogged,
    RecordsRead,
}

impl EventKind {
    /// The stable snake_case name used in JSON and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::RecordCreated => "record_created",
            EventKind::RecordAmended => "record_amended",
            EventKind::RecordStatusChanged => "record_status_changed",
            EventKind::AccessGranted => "access_granted",
            EventKind::AccessRevoked => "access_revoked",
            EventKind::PayloadErased => "payload_erased",
            EventKind::AccessLogged => "access_logged",
            EventKind::RecordsRead => "records_read",
        }
    }
}

impl Event {
    /// The event's type.
    pub fn kind(&self) -> EventKind {
        match self {
            Event::RecordCreated(_) => EventKind::RecordCreated,
            Event::RecordAmended(_) => EventKind::RecordAmended,
            Event::RecordStatusChanged(_) => EventKind::RecordStatusChanged,
            Event::AccessGranted(_) => EventKind::AccessGranted,
            Event::AccessRevoked(_) => EventKind::AccessRevoked,
            Event::PayloadErased(_) => EventKind::PayloadErased,
            Event::AccessLogged(_) => EventKind::AccessLogged,
            Event::RecordsRead(_) => EventKind::RecordsRead,
        }
    }

    /// The record the event is about, if it is about one record.
    pub fn record_id(&self) -> Option<&str> {
        match self {
            Event::RecordCreated(e) => Some(&e.record_id),
            Event::RecordAmended(e) => Some(&e.record_id),
            Event::RecordStatusChanged(e) => Some(&e.record_id),
            Event::PayloadErased(e) => Some(&e.record_id),
            Event::AccessLogged(e) => Some(&e.record_id),
            Event::AccessGranted(_) | Event::AccessRevoked(_) | Event::RecordsRead(_) => None,
        }
    }

    /// The name of the key the event's clinical text is sealed under: its record's, or
    /// for a read, the patient's access key ([`RecordsRead::key_name`]).
    pub fn key_name(&self) -> Option<String> {
        match self {
            Event::RecordsRead(e) => Some(RecordsRead::key_name(&e.patient_id)),
            _ => self.record_id().map(str::to_owned),
        }
    }

    /// The event's clinical text fields, by name (`metadata`, `reason`, `purpose`).
    pub fn clinical_fields(&self) -> Vec<(&'static str, &Clinical)> {
        match self {
            Event::RecordCreated(e) => vec![("metadata", &e.metadata)],
            Event::RecordAmended(e) => {
                let mut fields = vec![("reason", &e.reason)];
                fields.extend(e.metadata.as_ref().map(|m| ("metadata", m)));
                fields
            }
            Event::RecordStatusChanged(e) => vec![("reason", &e.reason)],
            Event::PayloadErased(e) => vec![("reason", &e.reason)],
            Event::AccessLogged(e) => vec![("purpose", &e.purpose)],
            Event::RecordsRead(e) => e.break_glass.iter().map(|r| ("break_glass", r)).collect(),
            Event::AccessGranted(_) | Event::AccessRevoked(_) => Vec::new(),
        }
    }

    /// [`Event::clinical_fields`], to seal them in place.
    pub fn clinical_fields_mut(&mut self) -> Vec<(&'static str, &mut Clinical)> {
        match self {
            Event::RecordCreated(e) => vec![("metadata", &mut e.metadata)],
            Event::RecordAmended(e) => {
                let mut fields = vec![("reason", &mut e.reason)];
                fields.extend(e.metadata.as_mut().map(|m| ("metadata", m)));
                fields
            }
            Event::RecordStatusChanged(e) => vec![("reason", &mut e.reason)],
            Event::PayloadErased(e) => vec![("reason", &mut e.reason)],
            Event::AccessLogged(e) => vec![("purpose", &mut e.purpose)],
            Event::RecordsRead(e) => e
                .break_glass
                .iter_mut()
                .map(|r| ("break_glass", r))
                .collect(),
            Event::AccessGranted(_) | Event::AccessRevoked(_) => Vec::new(),
        }
    }

    /// Checks every field against its limit (see [`crate::limits`]). An event that passes
    /// has a bounded encoded size; whether it is valid for the record's current state is
    /// a separate question (the contract), answered against the views.
    pub fn check_limits(&self) -> Result<(), EventError> {
        match self {
            Event::RecordCreated(e) => {
                id("record_id", &e.record_id)?;
                id("patient_id", &e.patient_id)?;
                id("author_id", &e.author_id)?;
                id("hospital_id", &e.hospital_id)?;
                record_type("record_type", &e.record_type)?;
                time("created_at", e.created_at)?;
                if e.version != 1 {
                    return Err(EventError::OutOfRange {
                        field: "version",
                        reason: "a new record is version 1",
                    });
                }
                metadata(&e.metadata)?;
                payload(e.payload.as_ref())
            }
            Event::RecordAmended(e) => {
                id("record_id", &e.record_id)?;
                version(e.version)?;
                id("author_id", &e.author_id)?;
                time("amended_at", e.amended_at)?;
                clinical("reason", &e.reason, REASON_LEN_MAX)?;
                if let Some(m) = &e.metadata {
                    metadata(m)?;
                }
                payload(e.payload.as_ref())
            }
            Event::RecordStatusChanged(e) => {
                id("record_id", &e.record_id)?;
                version(e.version)?;
                id("author_id", &e.author_id)?;
                time("changed_at", e.changed_at)?;
                clinical("reason", &e.reason, REASON_LEN_MAX)
            }
            Event::AccessGranted(e) => {
                id("patient_id", &e.patient_id)?;
                id("grantee_id", &e.grantee_id)?;
                id("granted_by", &e.granted_by)?;
                time("granted_at", e.granted_at)?;
                if let Some(t) = e.expires_at {
                    time("expires_at", t)?;
                }
                if e.scope.len() > SCOPE_ENTRIES_MAX {
                    return Err(EventError::TooMany {
                        field: "scope",
                        count: e.scope.len(),
                        max: SCOPE_ENTRIES_MAX,
                    });
                }
                e.scope.iter().try_for_each(|t| record_type("scope", t))
            }
            Event::AccessRevoked(e) => {
                id("patient_id", &e.patient_id)?;
                id("grantee_id", &e.grantee_id)?;
                id("revoked_by", &e.revoked_by)?;
                time("revoked_at", e.revoked_at)
            }
            Event::PayloadErased(e) => {
                id("record_id", &e.record_id)?;
                version(e.version)?;
                id("erased_by", &e.erased_by)?;
                time("erased_at", e.erased_at)?;
                clinical("reason", &e.reason, REASON_LEN_MAX)
            }
            Event::AccessLogged(e) => {
                id("record_id", &e.record_id)?;
                id("patient_id", &e.patient_id)?;
                id("accessor_id", &e.accessor_id)?;
                time("accessed_at", e.accessed_at)?;
                clinical("purpose", &e.purpose, REASON_LEN_MAX)
            }
            Event::RecordsRead(e) => {
                id("patient_id", &e.patient_id)?;
                if e.record_ids.is_empty() {
                    return Err(EventError::Empty {
                        field: "record_ids",
                    });
                }
                if e.record_ids.len() > READ_RECORDS_MAX {
                    return Err(EventError::TooMany {
                        field: "record_ids",
                        count: e.record_ids.len(),
                        max: READ_RECORDS_MAX,
                    });
                }
                e.record_ids.iter().try_for_each(|r| id("record_ids", r))?;
                id("reader_id", &e.reader_id)?;
                one_of(
                    "reader_role",
                    &e.reader_role,
                    &["patient", "clinician", "auditor", "admin"],
                )?;
                if let Some(h) = &e.reader_hospital {
                    id("reader_hospital", h)?;
                }
                one_of("what", &e.what, &READ_KINDS)?;
                one_of("purpose", &e.purpose, &READ_PURPOSES)?;
                if let Some(reason) = &e.break_glass {
                    clinical("break_glass", reason, REASON_LEN_MAX)?;
                }
                time("read_at", e.read_at)
            }
        }
    }
}

/// Whether `value` is an identifier the ledger takes (see [`id`]): callers named by a
/// token are checked with it, since their id goes into the events they cause.
pub fn is_valid_id(value: &str) -> bool {
    id("id", value).is_ok()
}

/// Whether `value` is a record type the ledger takes (see [`record_type`]): queries
/// that filter by type refuse one no record can have.
pub fn is_valid_record_type(value: &str) -> bool {
    record_type("record_type", value).is_ok()
}

/// Identifiers: 1..=ID_LEN_MAX bytes of `[A-Za-z0-9._:@-]`, so they are safe in URLs,
/// keys and logs.
pub(crate) fn id(field: &'static str, value: &str) -> Result<(), EventError> {
    bounded(field, value, ID_LEN_MAX)?;
    if !value
        .bytes()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b':' | b'@' | b'-'))
    {
        return Err(EventError::BadCharacters {
            field,
            allowed: "letters, digits and . _ : @ -",
        });
    }
    Ok(())
}

fn one_of(field: &'static str, value: &str, allowed: &[&str]) -> Result<(), EventError> {
    if allowed.contains(&value) {
        Ok(())
    } else {
        Err(EventError::Malformed {
            field,
            reason: "is not one of the names docs/FORMAT.md lists for it",
        })
    }
}

fn record_type(field: &'static str, value: &str) -> Result<(), EventError> {
    bounded(field, value, RECORD_TYPE_LEN_MAX)?;
    if !value
        .bytes()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_')
    {
        return Err(EventError::BadCharacters {
            field,
            allowed: "lowercase letters, digits and _",
        });
    }
    Ok(())
}

fn bounded(field: &'static str, value: &str, max: usize) -> Result<(), EventError> {
    if value.is_empty() {
        return Err(EventError::Empty { field });
    }
    text(field, value, max)
}

fn text(field: &'static str, value: &str, max: usize) -> Result<(), EventError> {
    if value.len() > max {
        return Err(EventError::TooLong {
            field,
            len: value.len(),
            max,
        });
    }
    Ok(())
}

/// docs/FORMAT.md's rule for metadata: a JSON object in compact form, which means valid
/// JSON (RFC 8259) with no whitespace outside strings. The server writes it that way and
/// serves it as stored, so anything else in the ledger would be served as broken JSON.
fn compact_json_object(field: &'static str, value: &str) -> Result<(), EventError> {
    let malformed = |reason| Err(EventError::Malformed { field, reason });
    if !value.starts_with('{') {
        return malformed("must be a JSON object");
    }
    if serde_json::from_str::<serde::de::IgnoredAny>(value).is_err() {
        return malformed("must be valid JSON");
    }
    let (mut in_string, mut escaped) = (false, false);
    for byte in value.bytes() {
        if in_string {
            match (escaped, byte) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                (false, _) => {}
            }
        } else if byte == b'"' {
            in_string = true;
        } else if matches!(byte, b' ' | b'\t' | b'\n' | b'\r') {
            return malformed("must be compact JSON (no whitespace outside strings)");
        }
    }
    Ok(())
}

/// A clinical text field: its text at most `max` bytes. A sealed value is checked by its
/// length alone (what it seals was checked in the clear before sealing).
fn clinical(field: &'static str, value: &Clinical, max: usize) -> Result<(), EventError> {
    match value {
        Clinical::Plain(text) => self::text(field, text, max),
        Clinical::Sealed(sealed) if sealed.text_len() > max => Err(EventError::TooLong {
            field,
            len: sealed.text_len(),
            max,
        }),
        Clinical::Sealed(_) => Ok(()),
    }
}

/// Record metadata: at most [`METADATA_LEN_MAX`] bytes and, in the clear, a compact JSON
/// object.
fn metadata(value: &Clinical) -> Result<(), EventError> {
    clinical("metadata", value, METADATA_LEN_MAX)?;
    match value {
        Clinical::Plain(text) => compact_json_object("metadata", text),
        Clinical::Sealed(_) => Ok(()),
    }
}

fn time(field: &'static str, t: Timestamp) -> Result<(), EventError> {
    if !t.is_representable() {
        return Err(EventError::OutOfRange {
            field,
            reason: "must lie in years 0000 to 9999",
        });
    }
    Ok(())
}

fn version(v: u32) -> Result<(), EventError> {
    if !(2..=VERSION_MAX).contains(&v) {
        return Err(EventError::OutOfRange {
            field: "version",
            reason: "a change creates version 2 or later, up to 1,000,000",
        });
    }
    Ok(())
}

fn payload(p: Option<&PayloadRef>) -> Result<(), EventError> {
    let Some(p) = p else { return Ok(()) };
    bounded("payload.cid", &p.cid, CID_LEN_MAX)?;
    if !p.cid.bytes().all(|c| c.is_ascii_alphanumeric()) {
        return Err(EventError::BadCharacters {
            field: "payload.cid",
            allowed: "letters and digits (base58 or base32)",
        });
    }
    id("payload.key_id", &p.key_id)?;
    bounded(
        "payload.content_type",
        &p.content_type,
        CONTENT_TYPE_LEN_MAX,
    )?;
    if !p
        .content_type
        .bytes()
        .all(|c| c.is_ascii_graphic() || c == b' ')
    {
        return Err(EventError::BadCharacters {
            field: "payload.content_type",
            allowed: "printable ASCII",
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_is_a_compact_json_object() {
        for good in [
            "{}",
            r#"{"n":1}"#,
            r#"{"note":"spaces inside strings are text: \" \\ ok","v":[1,2.5,{"a":null}]}"#,
            r#"{"enc":"0000000001"}"#,
        ] {
            assert_eq!(compact_json_object("metadata", good), Ok(()), "{good}");
        }
        for (bad, reason) in [
            (r#"{"enc":0000000001}"#, "must be valid JSON"),
            ("m-initial", "must be a JSON object"),
            ("[1,2]", "must be a JSON object"),
            (
                r#"{"n": 1}"#,
                "must be compact JSON (no whitespace outside strings)",
            ),
            (
                "{\"n\":1}\n",
                "must be compact JSON (no whitespace outside strings)",
            ),
            (r#"{"n":1"#, "must be valid JSON"),
            (r#"{"n":1}{}"#, "must be valid JSON"),
        ] {
            assert_eq!(
                compact_json_object("metadata", bad),
                Err(EventError::Malformed {
                    field: "metadata",
                    reason
                }),
                "{bad}"
            );
        }
    }
}
