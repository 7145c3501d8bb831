//! The EMR contract: what each event does to a record's (or a grant's) current state, and
//! which events are invalid for that state.
//!
//! The submission path calls these functions against the current views to reject an event
//! before it is ordered; the projector calls the same functions to apply committed events
//! to the views. One place decides what an event does, so the two can never disagree.
//!
//! Every function here is pure: the outcome depends only on the arguments. A rejected event
//! changes nothing (the current state is only borrowed); an accepted one yields the new
//! state, which the caller stores.

use serde::{Deserialize, Serialize};

use crate::clinical::Clinical;
use crate::event::{AccessGranted, Event, EventKind, PayloadRef, RecordCreated, RecordStatus};
use crate::time::Timestamp;

/// A record's current state: what the "record by id" view stores.
///
/// Built only by [`apply_record_event`]: `record_id`, `patient_id`, `hospital_id`,
/// `record_type`, `author_id` and `created_at` are those of the `RecordCreated` event and
/// never change; `version` is the version of the last event that changed the record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, bincode::Encode, bincode::Decode)]
pub struct RecordState {
    /// The record's id.
    pub record_id: String,
    /// The patient the record is about (fixed at creation).
    pub patient_id: String,
    /// The hospital the record belongs to (fixed at creation).
    pub hospital_id: String,
    /// The record's type, e.g. `lab_result` (fixed at creation).
    pub record_type: String,
    /// Who created the record.
    pub author_id: String,
    /// When the record was made clinically (from `RecordCreated`).
    pub created_at: Timestamp,
    /// The current version: 1 after creation, +1 for every amendment, status change or
    /// erasure.
    pub version: u32,
    /// The current lifecycle status.
    pub status: RecordStatus,
    /// The current metadata (a small JSON object, as compact text; sealed when its
    /// event was).
    pub metadata: Clinical,
    /// The current payload reference, if the record has a payload.
    pub payload: Option<PayloadRef>,
    /// The payload's data key was destroyed (crypto-shredding); the payload reference is
    /// kept for the audit trail.
    pub payload_erased: bool,
    /// Time of the event that produced this version.
    pub updated_at: Timestamp,
    /// Author of the event that produced this version.
    pub updated_by: String,
}

/// A patient's grant to one grantee: what the "access grants" view stores.
///
/// Built only by [`apply_grant_event`] from an `AccessGranted` event whose grantee is not
/// the patient and whose expiry (if any) lies after the grant time.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, bincode::Encode, bincode::Decode)]
pub struct GrantState {
    /// The patient whose records the grant covers.
    pub patient_id: String,
    /// Who may read them.
    pub grantee_id: String,
    /// Who made the grant.
    pub granted_by: String,
    /// When the grant was made.
    pub granted_at: Timestamp,
    /// The grant ends at this instant (exclusive); `None` means until revoked.
    pub expires_at: Option<Timestamp>,
    /// Record types the grant covers; empty means every type.
    pub scope: Vec<String>,
}

impl GrantState {
    /// Whether the grant lets its grantee read a record of `record_type` at instant `now`:
    /// the grant has not expired (`now < expires_at`; at `expires_at` itself it no longer
    /// applies) and `record_type` is in its scope (an empty scope covers every type).
    pub fn allows(&self, record_type: &str, now: Timestamp) -> bool {
        let unexpired = self.expires_at.is_none_or(|end| now < end);
        let in_scope = self.scope.is_empty() || self.scope.iter().any(|t| t == record_type);
        unexpired && in_scope
    }
}

/// Why an event is invalid for the current state. Every variant names the ids (and
/// versions) involved, so the HTTP layer can answer with a precise 4xx; [`code`] gives a
/// stable machine-readable name. Never contains payload bytes or metadata.
///
/// [`code`]: ContractError::code
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContractError {
    /// `RecordCreated` for a record that already exists.
    #[error("record `{record_id}` already exists")]
    RecordExists { record_id: String },
    /// An event about a record that does not exist.
    #[error("record `{record_id}` does not exist")]
    UnknownRecord { record_id: String },
    /// The event's version is not the record's current version + 1 (a record that does not
    /// exist yet counts as version 0, so `RecordCreated` must be version 1).
    #[error(
        "version conflict on record `{record_id}`: it is at version {current}, so the event must be version {}, got {got}",
        u64::from(*.current) + 1
    )]
    VersionConflict {
        record_id: String,
        /// The record's current version.
        current: u32,
        /// The version the event carries.
        got: u32,
    },
    /// An amendment or status change of a record entered in error (a terminal status).
    #[error(
        "record `{record_id}` was entered in error; it can no longer be amended or change status"
    )]
    RecordEnteredInError { record_id: String },
    /// A status change to the status the record already has.
    #[error("record `{record_id}` is already {}", status_name(*.status))]
    StatusUnchanged {
        record_id: String,
        status: RecordStatus,
    },
    /// An erasure of a payload that is already erased.
    #[error("the payload of record `{record_id}` is already erased")]
    PayloadAlreadyErased { record_id: String },
    /// An access log whose patient is not the record's patient.
    #[error(
        "record `{record_id}` belongs to patient `{record_patient_id}`, not `{event_patient_id}`"
    )]
    PatientMismatch {
        record_id: String,
        record_patient_id: String,
        event_patient_id: String,
    },
    /// The current state passed in is that of another record than the event's (a caller
    /// bug: the state must be looked up by the event's record id).
    #[error(
        "event for record `{event_record_id}` applied to the state of record `{state_record_id}`"
    )]
    RecordMismatch {
        state_record_id: String,
        event_record_id: String,
    },
    /// A patient granting access to themselves.
    #[error("patient `{patient_id}` cannot grant access to themselves")]
    GrantToSelf { patient_id: String },
    /// A grant whose expiry is not after its grant time.
    #[error(
        "grant of patient `{patient_id}` to `{grantee_id}` expires at {expires_at}, not after it is granted at {granted_at}"
    )]
    GrantAlreadyExpired {
        patient_id: String,
        grantee_id: String,
        granted_at: Timestamp,
        expires_at: Timestamp,
    },
    /// A revocation of a grant that does not exist.
    #[error("patient `{patient_id}` has no grant to `{grantee_id}`")]
    UnknownGrant {
        patient_id: String,
        grantee_id: String,
    },
    /// The current grant passed in is for another (patient, grantee) pair than the
    /// event's (a caller bug: the grant must be looked up by the event's pair).
    #[error(
        "event for the grant of patient `{event_patient_id}` to `{event_grantee_id}` applied to the grant of patient `{state_patient_id}` to `{state_grantee_id}`"
    )]
    GrantMismatch {
        state_patient_id: String,
        state_grantee_id: String,
        event_patient_id: String,
        event_grantee_id: String,
    },
    /// A grant event given to [`apply_record_event`].
    #[error("{} is not a record event", .kind.as_str())]
    NotARecordEvent { kind: EventKind },
    /// A record event given to [`apply_grant_event`].
    #[error("{} is not a grant event", .kind.as_str())]
    NotAGrantEvent { kind: EventKind },
}

impl ContractError {
    /// The stable code as a `'static` name, from a code stored as text (the rejected
    /// view keeps it so): `None` for a code no variant has.
    pub fn static_code(code: &str) -> Option<&'static str> {
        CONTRACT_CODES.iter().copied().find(|c| *c == code)
    }

    /// A stable snake_case name for the error, for the HTTP layer and metrics. Codes never
    /// change once published; each variant has its own.
    pub fn code(&self) -> &'static str {
        match self {
            ContractError::RecordExists { .. } => "record_exists",
            ContractError::UnknownRecord { .. } => "unknown_record",
            ContractError::VersionConflict { .. } => "version_conflict",
            ContractError::RecordEnteredInError { .. } => "record_entered_in_error",
            ContractError::StatusUnchanged { .. } => "status_unchanged",
            ContractError::PayloadAlreadyErased { .. } => "payload_already_erased",
            ContractError::PatientMismatch { .. } => "patient_mismatch",
            ContractError::RecordMismatch { .. } => "record_mismatch",
            ContractError::GrantToSelf { .. } => "grant_to_self",
            ContractError::GrantAlreadyExpired { .. } => "grant_already_expired",
            ContractError::UnknownGrant { .. } => "unknown_grant",
            ContractError::GrantMismatch { .. } => "grant_mismatch",
            ContractError::NotARecordEvent { .. } => "not_a_record_event",
            ContractError::NotAGrantEvent { .. } => "not_a_grant_event",
        }
    }
}

/// Every [`ContractError::code`], once (a test checks the list against the variants).
pub const CONTRACT_CODES: &[&str] = &[
    "record_exists",
    "unknown_record",
    "version_conflict",
    "record_entered_in_error",
    "status_unchanged",
    "payload_already_erased",
    "patient_mismatch",
    "record_mismatch",
    "grant_to_self",
    "grant_already_expired",
    "unknown_grant",
    "grant_mismatch",
    "not_a_record_event",
    "not_a_grant_event",
];

/// The snake_case name of a status, as in JSON.
fn status_name(status: RecordStatus) -> &'static str {
    match status {
        RecordStatus::Active => "active",
        RecordStatus::Archived => "archived",
        RecordStatus::EnteredInError => "entered_in_error",
    }
}

/// What a record event does to the record's current state (`current` is `None` when the
/// record does not exist). Returns the new state, or the rule the event breaks.
///
/// Guarantees:
/// - `RecordCreated` is accepted only for a record that does not exist, with version 1;
///   the new record is `Active`, not erased, updated at its creation time by its author.
/// - `RecordAmended`, `RecordStatusChanged` and `PayloadErased` need an existing record
///   and exactly its version + 1, and produce that version. A record entered in error is
///   never amended nor changes status again, but its payload can always be erased.
/// - `AccessLogged` needs an existing record of the same patient and returns the state
///   unchanged.
/// - `patient_id`, `hospital_id`, `record_type`, `author_id` and `created_at` never change
///   after creation; the version never decreases.
/// - Grant events are rejected with [`ContractError::NotARecordEvent`], and an event about
///   another record than `current` with [`ContractError::RecordMismatch`].
pub fn apply_record_event(
    current: Option<&RecordState>,
    event: &Event,
) -> Result<RecordState, ContractError> {
    check_record_event(current, event)?;
    Ok(match (current, event) {
        (_, Event::RecordCreated(e)) => record_created(e.clone()),
        (Some(state), event) => {
            let mut next = state.clone();
            change_record(&mut next, event.clone());
            next
        }
        (None, _) => unreachable!("only a creation is accepted for a record that does not exist"),
    })
}

/// Whether `event` is valid for the record's `current` state: [`apply_record_event`]'s
/// rules, without making the new state. A caller that keeps states (the projection)
/// then makes it with [`record_created`] or [`change_record`], in place and taking the
/// event's strings, rather than from a copy.
pub fn check_record_event(
    current: Option<&RecordState>,
    event: &Event,
) -> Result<(), ContractError> {
    let Some(event_record_id) = event.record_id() else {
        return Err(ContractError::NotARecordEvent { kind: event.kind() });
    };
    check_same_record(current, event_record_id)?;
    match event {
        Event::RecordCreated(e) => check_created(current, e),
        Event::RecordAmended(e) => {
            let state = existing(current, &e.record_id)?;
            not_entered_in_error(state)?;
            next_version(state, e.version)
        }
        Event::RecordStatusChanged(e) => {
            let state = existing(current, &e.record_id)?;
            not_entered_in_error(state)?;
            next_version(state, e.version)?;
            if state.status == e.status {
                return Err(ContractError::StatusUnchanged {
                    record_id: e.record_id.clone(),
                    status: e.status,
                });
            }
            Ok(())
        }
        Event::PayloadErased(e) => {
            let state = existing(current, &e.record_id)?;
            next_version(state, e.version)?;
            // A record without a payload may be erased too: erasure destroys the keys of
            // its clinical text as well (format 2). Before, this was `no_payload`; the
            // server checked the contract before committing, so no ledger holds such an
            // erasure that it refused.
            if state.payload_erased {
                return Err(ContractError::PayloadAlreadyErased {
                    record_id: e.record_id.clone(),
                });
            }
            Ok(())
        }
        Event::AccessLogged(e) => {
            let state = existing(current, &e.record_id)?;
            if state.patient_id != e.patient_id {
                return Err(ContractError::PatientMismatch {
                    record_id: e.record_id.clone(),
                    record_patient_id: state.patient_id.clone(),
                    event_patient_id: e.patient_id.clone(),
                });
            }
            Ok(())
        }
        Event::AccessGranted(_) | Event::AccessRevoked(_) | Event::RecordsRead(_) => {
            Err(ContractError::NotARecordEvent { kind: event.kind() })
        }
    }
}

/// The state of the record a creation makes, taking the event's strings. The creation
/// must have passed [`check_record_event`].
pub fn record_created(e: RecordCreated) -> RecordState {
    RecordState {
        updated_by: e.author_id.clone(),
        record_id: e.record_id,
        patient_id: e.patient_id,
        hospital_id: e.hospital_id,
        record_type: e.record_type,
        author_id: e.author_id,
        created_at: e.created_at,
        version: 1,
        status: RecordStatus::Active,
        metadata: e.metadata,
        payload: e.payload,
        payload_erased: false,
        updated_at: e.created_at,
    }
}

/// Applies to `state`, in place, an event that [`check_record_event`] accepted for it,
/// taking the event's strings: an amendment, a status change or an erasure makes the
/// next version; an access log changes nothing.
///
/// # Panics
///
/// On a creation or a grant event, which change no existing record.
pub fn change_record(state: &mut RecordState, event: Event) {
    match event {
        Event::RecordAmended(e) => {
            if let Some(metadata) = e.metadata {
                state.metadata = metadata;
            }
            if let Some(payload) = e.payload {
                state.payload = Some(payload);
                state.payload_erased = false;
            }
            bump(state, e.version, e.amended_at, e.author_id);
        }
        Event::RecordStatusChanged(e) => {
            state.status = e.status;
            bump(state, e.version, e.changed_at, e.author_id);
        }
        Event::PayloadErased(e) => {
            state.payload_erased = true;
            bump(state, e.version, e.erased_at, e.erased_by);
        }
        Event::AccessLogged(_) => {}
        Event::RecordCreated(_)
        | Event::AccessGranted(_)
        | Event::AccessRevoked(_)
        | Event::RecordsRead(_) => {
            panic!(
                "change_record: a {} changes no existing record",
                event.kind().as_str()
            )
        }
    }
}

/// Whether `current`, if any, is the state of record `record_id`.
fn check_same_record(current: Option<&RecordState>, record_id: &str) -> Result<(), ContractError> {
    match current {
        Some(state) if state.record_id != record_id => Err(ContractError::RecordMismatch {
            state_record_id: state.record_id.clone(),
            event_record_id: record_id.to_owned(),
        }),
        _ => Ok(()),
    }
}

/// Whether `e` may create its record, given the record's `current` state.
fn check_created(current: Option<&RecordState>, e: &RecordCreated) -> Result<(), ContractError> {
    if current.is_some() {
        return Err(ContractError::RecordExists {
            record_id: e.record_id.clone(),
        });
    }
    if e.version != 1 {
        return Err(ContractError::VersionConflict {
            record_id: e.record_id.clone(),
            current: 0,
            got: e.version,
        });
    }
    Ok(())
}

/// What a grant event does to the current grant of the event's (patient, grantee) pair
/// (`current` is `None` when there is none).
///
/// Guarantees:
/// - `AccessGranted` is accepted when the grantee is not the patient and the expiry, if
///   any, lies after the grant time; it returns `Ok(Some(grant))`, replacing any current
///   grant.
/// - `AccessRevoked` is accepted only when a current grant exists, and returns `Ok(None)`.
/// - Record events are rejected with [`ContractError::NotAGrantEvent`], and an event about
///   another pair than `current` with [`ContractError::GrantMismatch`].
pub fn apply_grant_event(
    current: Option<&GrantState>,
    event: &Event,
) -> Result<Option<GrantState>, ContractError> {
    let (patient_id, grantee_id) = match event {
        Event::AccessGranted(e) => (&e.patient_id, &e.grantee_id),
        Event::AccessRevoked(e) => (&e.patient_id, &e.grantee_id),
        Event::RecordCreated(_)
        | Event::RecordAmended(_)
        | Event::RecordStatusChanged(_)
        | Event::PayloadErased(_)
        | Event::AccessLogged(_)
        | Event::RecordsRead(_) => {
            return Err(ContractError::NotAGrantEvent { kind: event.kind() })
        }
    };
    if let Some(grant) = current {
        if &grant.patient_id != patient_id || &grant.grantee_id != grantee_id {
            return Err(ContractError::GrantMismatch {
                state_patient_id: grant.patient_id.clone(),
                state_grantee_id: grant.grantee_id.clone(),
                event_patient_id: patient_id.clone(),
                event_grantee_id: grantee_id.clone(),
            });
        }
    }

    match event {
        Event::AccessGranted(e) => grant(e).map(Some),
        Event::AccessRevoked(e) => match current {
            Some(_) => Ok(None),
            None => Err(ContractError::UnknownGrant {
                patient_id: e.patient_id.clone(),
                grantee_id: e.grantee_id.clone(),
            }),
        },
        _ => Err(ContractError::NotAGrantEvent { kind: event.kind() }),
    }
}

/// The grant an `AccessGranted` event makes, if it is valid on its own.
fn grant(e: &AccessGranted) -> Result<GrantState, ContractError> {
    if e.grantee_id == e.patient_id {
        return Err(ContractError::GrantToSelf {
            patient_id: e.patient_id.clone(),
        });
    }
    if let Some(expires_at) = e.expires_at {
        if expires_at <= e.granted_at {
            return Err(ContractError::GrantAlreadyExpired {
                patient_id: e.patient_id.clone(),
                grantee_id: e.grantee_id.clone(),
                granted_at: e.granted_at,
                expires_at,
            });
        }
    }
    Ok(GrantState {
        patient_id: e.patient_id.clone(),
        grantee_id: e.grantee_id.clone(),
        granted_by: e.granted_by.clone(),
        granted_at: e.granted_at,
        expires_at: e.expires_at,
        scope: e.scope.clone(),
    })
}

/// The current state, or `UnknownRecord`.
fn existing<'a>(
    current: Option<&'a RecordState>,
    record_id: &str,
) -> Result<&'a RecordState, ContractError> {
    current.ok_or_else(|| ContractError::UnknownRecord {
        record_id: record_id.to_owned(),
    })
}

/// `RecordEnteredInError` when the record's status is terminal.
fn not_entered_in_error(state: &RecordState) -> Result<(), ContractError> {
    if state.status == RecordStatus::EnteredInError {
        return Err(ContractError::RecordEnteredInError {
            record_id: state.record_id.clone(),
        });
    }
    Ok(())
}

/// `VersionConflict` unless `version` is exactly the record's version + 1.
fn next_version(state: &RecordState, version: u32) -> Result<(), ContractError> {
    if state.version.checked_add(1) != Some(version) {
        return Err(ContractError::VersionConflict {
            record_id: state.record_id.clone(),
            current: state.version,
            got: version,
        });
    }
    Ok(())
}

/// Stamps a changed state with the version, time and author of the event that changed it.
fn bump(state: &mut RecordState, version: u32, at: Timestamp, by: String) {
    state.version = version;
    state.updated_at = at;
    state.updated_by = by;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{
        AccessLogged, AccessRevoked, PayloadErased, RecordAmended, RecordCreated,
        RecordStatusChanged, Sha256Digest,
    };
    use proptest::prelude::*;

    const R: &str = "rec-1";
    const P: &str = "pat-1";

    #[test]
    fn every_code_is_listed_once_and_maps_back() {
        let s = || "x".to_string();
        let t = Timestamp(0);
        let every = [
            ContractError::RecordExists { record_id: s() },
            ContractError::UnknownRecord { record_id: s() },
            ContractError::VersionConflict {
                record_id: s(),
                current: 1,
                got: 1,
            },
            ContractError::RecordEnteredInError { record_id: s() },
            ContractError::StatusUnchanged {
                record_id: s(),
                status: RecordStatus::Active,
            },
            ContractError::PayloadAlreadyErased { record_id: s() },
            ContractError::PatientMismatch {
                record_id: s(),
                record_patient_id: s(),
                event_patient_id: s(),
            },
            ContractError::RecordMismatch {
                state_record_id: s(),
                event_record_id: s(),
            },
            ContractError::GrantToSelf { patient_id: s() },
            ContractError::GrantAlreadyExpired {
                patient_id: s(),
                grantee_id: s(),
                granted_at: t,
                expires_at: t,
            },
            ContractError::UnknownGrant {
                patient_id: s(),
                grantee_id: s(),
            },
            ContractError::GrantMismatch {
                state_patient_id: s(),
                state_grantee_id: s(),
                event_patient_id: s(),
                event_grantee_id: s(),
            },
            ContractError::NotARecordEvent {
                kind: EventKind::AccessGranted,
            },
            ContractError::NotAGrantEvent {
                kind: EventKind::RecordCreated,
            },
        ];
        let codes: std::collections::BTreeSet<&str> =
            every.iter().map(ContractError::code).collect();
        assert_eq!(codes.len(), every.len(), "two variants share a code");
        assert_eq!(
            codes.len(),
            CONTRACT_CODES.len(),
            "CONTRACT_CODES is not one per variant"
        );
        for e in &every {
            assert_eq!(ContractError::static_code(e.code()), Some(e.code()));
        }
        assert_eq!(ContractError::static_code("no_such_code"), None);
    }

    fn payload(n: u8) -> PayloadRef {
        PayloadRef {
            cid: format!("bafy{n}"),
            size: u64::from(n) * 100,
            sha256: Sha256Digest([n; 32]),
            key_id: format!("key-{n}"),
            content_type: "application/fhir+json".into(),
        }
    }

    fn created(payload: Option<PayloadRef>) -> Event {
        Event::RecordCreated(RecordCreated {
            record_id: R.into(),
            patient_id: P.into(),
            author_id: "dr-a".into(),
            hospital_id: "hosp-1".into(),
            record_type: "lab_result".into(),
            created_at: Timestamp(1_000),
            version: 1,
            metadata: r#"{"a":1}"#.into(),
            payload,
        })
    }

    fn amended(version: u32, metadata: Option<&str>, payload: Option<PayloadRef>) -> Event {
        Event::RecordAmended(RecordAmended {
            record_id: R.into(),
            version,
            author_id: "dr-b".into(),
            amended_at: Timestamp(2_000 + i64::from(version)),
            reason: "fix".into(),
            metadata: metadata.map(Clinical::from),
            payload,
        })
    }

    fn status(version: u32, status: RecordStatus) -> Event {
        Event::RecordStatusChanged(RecordStatusChanged {
            record_id: R.into(),
            version,
            author_id: "dr-c".into(),
            changed_at: Timestamp(3_000 + i64::from(version)),
            status,
            reason: "why".into(),
        })
    }

    fn erased(version: u32) -> Event {
        Event::PayloadErased(PayloadErased {
            record_id: R.into(),
            version,
            erased_by: "dpo-1".into(),
            erased_at: Timestamp(4_000 + i64::from(version)),
            reason: "gdpr".into(),
        })
    }

    fn logged(patient_id: &str) -> Event {
        Event::AccessLogged(AccessLogged {
            record_id: R.into(),
            patient_id: patient_id.into(),
            accessor_id: "dr-z".into(),
            accessed_at: Timestamp(5_000),
            purpose: "care".into(),
        })
    }

    fn granted(grantee: &str, expires_at: Option<i64>, scope: &[&str]) -> Event {
        Event::AccessGranted(AccessGranted {
            patient_id: P.into(),
            grantee_id: grantee.into(),
            granted_by: P.into(),
            granted_at: Timestamp(10_000),
            expires_at: expires_at.map(Timestamp),
            scope: scope.iter().map(|s| s.to_string()).collect(),
        })
    }

    fn revoked(grantee: &str) -> Event {
        Event::AccessRevoked(AccessRevoked {
            patient_id: P.into(),
            grantee_id: grantee.into(),
            revoked_by: P.into(),
            revoked_at: Timestamp(20_000),
        })
    }

    /// Applies events in order, panicking (test only) on the first rejection.
    fn state_after(events: &[Event]) -> RecordState {
        let mut state: Option<RecordState> = None;
        for e in events {
            state = Some(apply_record_event(state.as_ref(), e).expect("accepted"));
        }
        state.expect("at least one event")
    }

    /// Asserts the event is rejected with `expected`, whose code is `code`.
    fn rejects(current: Option<&RecordState>, event: &Event, expected: ContractError, code: &str) {
        let before = current.cloned();
        let got = apply_record_event(current, event);
        assert_eq!(got, Err(expected), "{event:?}");
        assert_eq!(got.unwrap_err().code(), code);
        assert_eq!(current.cloned(), before);
    }

    fn rejects_grant(
        current: Option<&GrantState>,
        event: &Event,
        expected: ContractError,
        code: &str,
    ) {
        let got = apply_grant_event(current, event);
        assert_eq!(got, Err(expected), "{event:?}");
        assert_eq!(got.unwrap_err().code(), code);
    }

    #[test]
    fn create_makes_version_one() {
        let s = state_after(&[created(Some(payload(1)))]);
        assert_eq!(
            s,
            RecordState {
                record_id: R.into(),
                patient_id: P.into(),
                hospital_id: "hosp-1".into(),
                record_type: "lab_result".into(),
                author_id: "dr-a".into(),
                created_at: Timestamp(1_000),
                version: 1,
                status: RecordStatus::Active,
                metadata: r#"{"a":1}"#.into(),
                payload: Some(payload(1)),
                payload_erased: false,
                updated_at: Timestamp(1_000),
                updated_by: "dr-a".into(),
            }
        );
    }

    #[test]
    fn create_rejects_existing_record_and_bad_version() {
        let s = state_after(&[created(None)]);
        rejects(
            Some(&s),
            &created(None),
            ContractError::RecordExists {
                record_id: R.into(),
            },
            "record_exists",
        );
        let mut e = created(None);
        if let Event::RecordCreated(c) = &mut e {
            c.version = 2;
        }
        rejects(
            None,
            &e,
            ContractError::VersionConflict {
                record_id: R.into(),
                current: 0,
                got: 2,
            },
            "version_conflict",
        );
    }

    #[test]
    fn changes_of_unknown_records_are_rejected() {
        for e in [
            amended(2, None, None),
            status(2, RecordStatus::Archived),
            erased(2),
            logged(P),
        ] {
            rejects(
                None,
                &e,
                ContractError::UnknownRecord {
                    record_id: R.into(),
                },
                "unknown_record",
            );
        }
    }

    #[test]
    fn amend_replaces_what_is_given() {
        let s1 = state_after(&[created(Some(payload(1)))]);
        let s2 = apply_record_event(Some(&s1), &amended(2, Some(r#"{"b":2}"#), None)).unwrap();
        assert_eq!(s2.version, 2);
        assert_eq!(s2.metadata, r#"{"b":2}"#.into());
        assert_eq!(s2.payload, Some(payload(1)));
        assert_eq!(s2.updated_at, Timestamp(2_002));
        assert_eq!(s2.updated_by, "dr-b");
        assert_eq!(s2.author_id, "dr-a");
        assert_eq!(s2.created_at, Timestamp(1_000));

        let s3 = apply_record_event(Some(&s2), &amended(3, None, Some(payload(2)))).unwrap();
        assert_eq!(s3.version, 3);
        assert_eq!(s3.metadata, r#"{"b":2}"#.into());
        assert_eq!(s3.payload, Some(payload(2)));

        // Neither given: only the version, time and author change.
        let s4 = apply_record_event(Some(&s3), &amended(4, None, None)).unwrap();
        assert_eq!(
            s4,
            RecordState {
                version: 4,
                updated_at: Timestamp(2_004),
                ..s3
            }
        );
    }

    #[test]
    fn amend_checks_the_version() {
        let s = state_after(&[created(None), amended(2, None, None)]);
        for got in [1, 2, 4, u32::MAX] {
            rejects(
                Some(&s),
                &amended(got, None, None),
                ContractError::VersionConflict {
                    record_id: R.into(),
                    current: 2,
                    got,
                },
                "version_conflict",
            );
        }
        let msg = apply_record_event(Some(&s), &amended(5, None, None))
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("rec-1") && msg.contains("must be version 3") && msg.contains("got 5")
        );
    }

    #[test]
    fn version_at_the_top_of_u32_conflicts_without_overflow() {
        let mut s = state_after(&[created(None)]);
        s.version = u32::MAX;
        let err = apply_record_event(Some(&s), &amended(0, None, None)).unwrap_err();
        assert_eq!(err.code(), "version_conflict");
        assert!(err.to_string().contains("must be version 4294967296"));
    }

    #[test]
    fn amend_with_new_payload_clears_erasure() {
        let s = state_after(&[created(Some(payload(1))), erased(2)]);
        assert!(s.payload_erased);
        let meta_only = apply_record_event(Some(&s), &amended(3, Some("{}"), None)).unwrap();
        assert!(meta_only.payload_erased);
        assert_eq!(meta_only.payload, Some(payload(1)));
        let new_payload =
            apply_record_event(Some(&s), &amended(3, None, Some(payload(3)))).unwrap();
        assert!(!new_payload.payload_erased);
        assert_eq!(new_payload.payload, Some(payload(3)));
    }

    #[test]
    fn entered_in_error_is_terminal_except_for_erasure() {
        let s = state_after(&[
            created(Some(payload(1))),
            status(2, RecordStatus::EnteredInError),
        ]);
        assert_eq!(s.status, RecordStatus::EnteredInError);
        let terminal = ContractError::RecordEnteredInError {
            record_id: R.into(),
        };
        rejects(
            Some(&s),
            &amended(3, Some("{}"), None),
            terminal.clone(),
            "record_entered_in_error",
        );
        rejects(
            Some(&s),
            &status(3, RecordStatus::Active),
            terminal.clone(),
            "record_entered_in_error",
        );
        // Terminal wins over a stale version or an unchanged status.
        rejects(
            Some(&s),
            &status(2, RecordStatus::EnteredInError),
            terminal,
            "record_entered_in_error",
        );
        let e = apply_record_event(Some(&s), &erased(3)).unwrap();
        assert!(e.payload_erased);
        assert_eq!(e.version, 3);
        assert_eq!(e.status, RecordStatus::EnteredInError);
        // Access can still be logged.
        assert_eq!(apply_record_event(Some(&e), &logged(P)), Ok(e.clone()));
    }

    #[test]
    fn status_change_rules() {
        let s = state_after(&[created(None)]);
        let a = apply_record_event(Some(&s), &status(2, RecordStatus::Archived)).unwrap();
        assert_eq!(a.status, RecordStatus::Archived);
        assert_eq!((a.version, a.updated_at), (2, Timestamp(3_002)));
        assert_eq!(a.updated_by, "dr-c");
        let back = apply_record_event(Some(&a), &status(3, RecordStatus::Active)).unwrap();
        assert_eq!(back.status, RecordStatus::Active);

        rejects(
            Some(&s),
            &status(2, RecordStatus::Active),
            ContractError::StatusUnchanged {
                record_id: R.into(),
                status: RecordStatus::Active,
            },
            "status_unchanged",
        );
        rejects(
            Some(&s),
            &status(3, RecordStatus::Archived),
            ContractError::VersionConflict {
                record_id: R.into(),
                current: 1,
                got: 3,
            },
            "version_conflict",
        );
        let msg = apply_record_event(Some(&a), &status(3, RecordStatus::Archived))
            .unwrap_err()
            .to_string();
        assert_eq!(msg, "record `rec-1` is already archived");
    }

    #[test]
    fn erasure_rules() {
        let s = state_after(&[created(Some(payload(1)))]);
        let e = apply_record_event(Some(&s), &erased(2)).unwrap();
        assert_eq!(
            e,
            RecordState {
                version: 2,
                payload_erased: true,
                updated_at: Timestamp(4_002),
                updated_by: "dpo-1".into(),
                ..s.clone()
            }
        );
        rejects(
            Some(&e),
            &erased(3),
            ContractError::PayloadAlreadyErased {
                record_id: R.into(),
            },
            "payload_already_erased",
        );
        rejects(
            Some(&s),
            &erased(3),
            ContractError::VersionConflict {
                record_id: R.into(),
                current: 1,
                got: 3,
            },
            "version_conflict",
        );
        // A record without a payload is erased too (its clinical text).
        let bare = state_after(&[created(None)]);
        assert!(
            apply_record_event(Some(&bare), &erased(2))
                .unwrap()
                .payload_erased
        );
        // Allowed while archived, too.
        let archived = state_after(&[created(Some(payload(1))), status(2, RecordStatus::Archived)]);
        assert!(
            apply_record_event(Some(&archived), &erased(3))
                .unwrap()
                .payload_erased
        );
    }

    #[test]
    fn access_logged_leaves_the_state_unchanged() {
        let s = state_after(&[created(None), amended(2, Some("{}"), None)]);
        assert_eq!(apply_record_event(Some(&s), &logged(P)), Ok(s.clone()));
        rejects(
            Some(&s),
            &logged("pat-2"),
            ContractError::PatientMismatch {
                record_id: R.into(),
                record_patient_id: P.into(),
                event_patient_id: "pat-2".into(),
            },
            "patient_mismatch",
        );
    }

    #[test]
    fn state_of_another_record_is_a_mismatch() {
        let mut s = state_after(&[created(None)]);
        s.record_id = "rec-2".into();
        for e in [created(None), amended(2, None, None), erased(2), logged(P)] {
            rejects(
                Some(&s),
                &e,
                ContractError::RecordMismatch {
                    state_record_id: "rec-2".into(),
                    event_record_id: R.into(),
                },
                "record_mismatch",
            );
        }
        assert_eq!(
            check_record_event(Some(&s), &created(None)),
            Err(ContractError::RecordMismatch {
                state_record_id: "rec-2".into(),
                event_record_id: R.into(),
            })
        );
    }

    #[test]
    fn grant_events_are_not_record_events_and_vice_versa() {
        let s = state_after(&[created(None)]);
        for (e, kind) in [
            (granted("dr-x", None, &[]), EventKind::AccessGranted),
            (revoked("dr-x"), EventKind::AccessRevoked),
        ] {
            for current in [None, Some(&s)] {
                rejects(
                    current,
                    &e,
                    ContractError::NotARecordEvent { kind },
                    "not_a_record_event",
                );
            }
        }
        let g = apply_grant_event(None, &granted("dr-x", None, &[]))
            .unwrap()
            .unwrap();
        for e in [
            created(None),
            amended(2, None, None),
            status(2, RecordStatus::Archived),
            erased(2),
            logged(P),
        ] {
            for current in [None, Some(&g)] {
                rejects_grant(
                    current,
                    &e,
                    ContractError::NotAGrantEvent { kind: e.kind() },
                    "not_a_grant_event",
                );
            }
        }
        assert_eq!(
            ContractError::NotAGrantEvent {
                kind: EventKind::RecordCreated
            }
            .to_string(),
            "record_created is not a grant event"
        );
    }

    #[test]
    fn grant_creates_and_replaces() {
        let g1 = apply_grant_event(None, &granted("dr-x", Some(20_000), &["lab_result"]))
            .unwrap()
            .unwrap();
        assert_eq!(
            g1,
            GrantState {
                patient_id: P.into(),
                grantee_id: "dr-x".into(),
                granted_by: P.into(),
                granted_at: Timestamp(10_000),
                expires_at: Some(Timestamp(20_000)),
                scope: vec!["lab_result".into()],
            }
        );
        let g2 = apply_grant_event(Some(&g1), &granted("dr-x", None, &[]))
            .unwrap()
            .unwrap();
        assert_eq!(g2.expires_at, None);
        assert!(g2.scope.is_empty());
    }

    #[test]
    fn grant_rules() {
        rejects_grant(
            None,
            &granted(P, None, &[]),
            ContractError::GrantToSelf {
                patient_id: P.into(),
            },
            "grant_to_self",
        );
        for exp in [10_000, 9_999, i64::MIN] {
            rejects_grant(
                None,
                &granted("dr-x", Some(exp), &[]),
                ContractError::GrantAlreadyExpired {
                    patient_id: P.into(),
                    grantee_id: "dr-x".into(),
                    granted_at: Timestamp(10_000),
                    expires_at: Timestamp(exp),
                },
                "grant_already_expired",
            );
        }
        assert!(apply_grant_event(None, &granted("dr-x", Some(10_001), &[])).is_ok());
        let other = apply_grant_event(None, &granted("dr-y", None, &[]))
            .unwrap()
            .unwrap();
        rejects_grant(
            Some(&other),
            &granted("dr-x", None, &[]),
            ContractError::GrantMismatch {
                state_patient_id: P.into(),
                state_grantee_id: "dr-y".into(),
                event_patient_id: P.into(),
                event_grantee_id: "dr-x".into(),
            },
            "grant_mismatch",
        );
    }

    #[test]
    fn revoke_rules() {
        let g = apply_grant_event(None, &granted("dr-x", None, &[]))
            .unwrap()
            .unwrap();
        assert_eq!(apply_grant_event(Some(&g), &revoked("dr-x")), Ok(None));
        rejects_grant(
            None,
            &revoked("dr-x"),
            ContractError::UnknownGrant {
                patient_id: P.into(),
                grantee_id: "dr-x".into(),
            },
            "unknown_grant",
        );
        rejects_grant(
            Some(&g),
            &revoked("dr-y"),
            ContractError::GrantMismatch {
                state_patient_id: P.into(),
                state_grantee_id: "dr-x".into(),
                event_patient_id: P.into(),
                event_grantee_id: "dr-y".into(),
            },
            "grant_mismatch",
        );
    }

    #[test]
    fn allows_respects_expiry_boundary_and_scope() {
        let g = GrantState {
            patient_id: P.into(),
            grantee_id: "dr-x".into(),
            granted_by: P.into(),
            granted_at: Timestamp(10_000),
            expires_at: Some(Timestamp(20_000)),
            scope: vec!["lab_result".into(), "imaging".into()],
        };
        assert!(g.allows("lab_result", Timestamp(10_000)));
        assert!(g.allows("imaging", Timestamp(19_999)));
        assert!(!g.allows("lab_result", Timestamp(20_000)));
        assert!(!g.allows("lab_result", Timestamp(20_001)));
        assert!(!g.allows("note", Timestamp(15_000)));
        assert!(!g.allows("lab", Timestamp(15_000)));
        assert!(!g.allows("", Timestamp(15_000)));

        let all = GrantState {
            expires_at: None,
            scope: Vec::new(),
            ..g
        };
        assert!(all.allows("note", Timestamp(i64::MAX)));
        assert!(all.allows("lab_result", Timestamp(i64::MIN)));
    }

    #[test]
    fn every_code_is_distinct_snake_case() {
        let errors = [
            ContractError::RecordExists {
                record_id: R.into(),
            },
            ContractError::UnknownRecord {
                record_id: R.into(),
            },
            ContractError::VersionConflict {
                record_id: R.into(),
                current: 1,
                got: 1,
            },
            ContractError::RecordEnteredInError {
                record_id: R.into(),
            },
            ContractError::StatusUnchanged {
                record_id: R.into(),
                status: RecordStatus::Active,
            },
            ContractError::PayloadAlreadyErased {
                record_id: R.into(),
            },
            ContractError::PatientMismatch {
                record_id: R.into(),
                record_patient_id: P.into(),
                event_patient_id: P.into(),
            },
            ContractError::RecordMismatch {
                state_record_id: R.into(),
                event_record_id: R.into(),
            },
            ContractError::GrantToSelf {
                patient_id: P.into(),
            },
            ContractError::GrantAlreadyExpired {
                patient_id: P.into(),
                grantee_id: P.into(),
                granted_at: Timestamp(0),
                expires_at: Timestamp(0),
            },
            ContractError::UnknownGrant {
                patient_id: P.into(),
                grantee_id: P.into(),
            },
            ContractError::GrantMismatch {
                state_patient_id: P.into(),
                state_grantee_id: P.into(),
                event_patient_id: P.into(),
                event_grantee_id: P.into(),
            },
            ContractError::NotARecordEvent {
                kind: EventKind::AccessGranted,
            },
            ContractError::NotAGrantEvent {
                kind: EventKind::RecordCreated,
            },
        ];
        let mut codes: Vec<&str> = errors.iter().map(ContractError::code).collect();
        assert!(codes
            .iter()
            .all(|c| !c.is_empty() && c.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')));
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), errors.len());
    }

    #[test]
    fn states_round_trip_through_json_and_bincode() {
        let s = state_after(&[created(Some(payload(7))), erased(2)]);
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<RecordState>(&json).unwrap(), s);
        let config = bincode::config::standard();
        let bytes = bincode::encode_to_vec(&s, config).unwrap();
        let (back, _): (RecordState, usize) = bincode::decode_from_slice(&bytes, config).unwrap();
        assert_eq!(back, s);
    }

    // ---- property test against an independent reference model ----

    /// How an event's version relates to the record's version when the sequence runs.
    #[derive(Clone, Copy, Debug)]
    enum V {
        Next,
        Same,
        Skip,
        Any(u32),
    }

    /// An event template; its version is resolved against the model's version.
    #[derive(Clone, Debug)]
    enum Op {
        Create {
            version_one: bool,
            payload: Option<u8>,
            at: i64,
        },
        Amend {
            v: V,
            metadata: Option<u8>,
            payload: Option<u8>,
            at: i64,
        },
        Status {
            v: V,
            status: RecordStatus,
            at: i64,
        },
        Erase {
            v: V,
            at: i64,
        },
        Log {
            own_patient: bool,
        },
    }

    fn arb_v() -> impl Strategy<Value = V> {
        prop_oneof![
            6 => Just(V::Next),
            1 => Just(V::Same),
            1 => Just(V::Skip),
            1 => (0u32..6).prop_map(V::Any),
        ]
    }

    fn arb_status() -> impl Strategy<Value = RecordStatus> {
        prop_oneof![
            Just(RecordStatus::Active),
            Just(RecordStatus::Archived),
            Just(RecordStatus::EnteredInError),
        ]
    }

    fn arb_op() -> impl Strategy<Value = Op> {
        let at = 0i64..1_000_000;
        prop_oneof![
            1 => (prop::bool::weighted(0.9), prop::option::of(0u8..4), at.clone())
                .prop_map(|(version_one, payload, at)| Op::Create { version_one, payload, at }),
            4 => (arb_v(), prop::option::of(0u8..4), prop::option::weighted(0.3, 0u8..4), at.clone())
                .prop_map(|(v, metadata, payload, at)| Op::Amend { v, metadata, payload, at }),
            3 => (arb_v(), arb_status(), at.clone())
                .prop_map(|(v, status, at)| Op::Status { v, status, at }),
            2 => (arb_v(), at).prop_map(|(v, at)| Op::Erase { v, at }),
            1 => prop::bool::weighted(0.9).prop_map(|own_patient| Op::Log { own_patient }),
        ]
    }

    /// The reference model: the rules written out plainly, independently of the contract.
    #[derive(Clone, Debug, PartialEq)]
    struct Model {
        version: u32,
        status: &'static str,
        metadata: String,
        payload: Option<u8>,
        erased: bool,
        updated_at: i64,
        updated_by: &'static str,
    }

    fn status_str(s: RecordStatus) -> &'static str {
        match s {
            RecordStatus::Active => "active",
            RecordStatus::Archived => "archived",
            RecordStatus::EnteredInError => "entered_in_error",
        }
    }

    fn resolve(v: V, model: Option<&Model>) -> u32 {
        let cur = model.map_or(0, |m| m.version);
        match v {
            V::Next => cur + 1,
            V::Same => cur,
            V::Skip => cur + 2,
            V::Any(n) => n,
        }
    }

    /// The model's verdict: the new model, or the expected error code.
    fn model_step(model: Option<&Model>, op: &Op, version: u32) -> Result<Model, &'static str> {
        let ok_version = |m: &Model| version == m.version + 1;
        match (op, model) {
            (
                Op::Create {
                    version_one,
                    payload,
                    at,
                },
                None,
            ) => {
                if !version_one {
                    return Err("version_conflict");
                }
                Ok(Model {
                    version: 1,
                    status: "active",
                    metadata: "m-initial".into(),
                    payload: *payload,
                    erased: false,
                    updated_at: *at,
                    updated_by: "creator",
                })
            }
            (Op::Create { .. }, Some(_)) => Err("record_exists"),
            (_, None) => Err("unknown_record"),
            (
                Op::Amend {
                    metadata,
                    payload,
                    at,
                    ..
                },
                Some(m),
            ) => {
                if m.status == "entered_in_error" {
                    Err("record_entered_in_error")
                } else if !ok_version(m) {
                    Err("version_conflict")
                } else {
                    Ok(Model {
                        version,
                        metadata: match metadata {
                            Some(n) => format!("m{n}"),
                            None => m.metadata.clone(),
                        },
                        payload: payload.or(m.payload),
                        erased: if payload.is_some() { false } else { m.erased },
                        updated_at: *at,
                        updated_by: "amender",
                        ..m.clone()
                    })
                }
            }
            (Op::Status { status, at, .. }, Some(m)) => {
                if m.status == "entered_in_error" {
                    Err("record_entered_in_error")
                } else if !ok_version(m) {
                    Err("version_conflict")
                } else if status_str(*status) == m.status {
                    Err("status_unchanged")
                } else {
                    Ok(Model {
                        version,
                        status: status_str(*status),
                        updated_at: *at,
                        updated_by: "changer",
                        ..m.clone()
                    })
                }
            }
            (Op::Erase { at, .. }, Some(m)) => {
                if !ok_version(m) {
                    Err("version_conflict")
                } else if m.erased {
                    Err("payload_already_erased")
                } else {
                    Ok(Model {
                        version,
                        erased: true,
                        updated_at: *at,
                        updated_by: "eraser",
                        ..m.clone()
                    })
                }
            }
            (Op::Log { own_patient }, Some(m)) => {
                if *own_patient {
                    Ok(m.clone())
                } else {
                    Err("patient_mismatch")
                }
            }
        }
    }

    fn to_event(op: &Op, version: u32) -> Event {
        match op {
            Op::Create { payload: p, at, .. } => Event::RecordCreated(RecordCreated {
                record_id: R.into(),
                patient_id: P.into(),
                author_id: "creator".into(),
                hospital_id: "hosp-1".into(),
                record_type: "note".into(),
                created_at: Timestamp(*at),
                version,
                metadata: "m-initial".into(),
                payload: p.map(payload),
            }),
            Op::Amend {
                metadata,
                payload: p,
                at,
                ..
            } => Event::RecordAmended(RecordAmended {
                record_id: R.into(),
                version,
                author_id: "amender".into(),
                amended_at: Timestamp(*at),
                reason: "r".into(),
                metadata: metadata.map(|n| format!("m{n}").into()),
                payload: p.map(payload),
            }),
            Op::Status { status, at, .. } => Event::RecordStatusChanged(RecordStatusChanged {
                record_id: R.into(),
                version,
                author_id: "changer".into(),
                changed_at: Timestamp(*at),
                status: *status,
                reason: "r".into(),
            }),
            Op::Erase { at, .. } => Event::PayloadErased(PayloadErased {
                record_id: R.into(),
                version,
                erased_by: "eraser".into(),
                erased_at: Timestamp(*at),
                reason: "r".into(),
            }),
            Op::Log { own_patient } => Event::AccessLogged(AccessLogged {
                record_id: R.into(),
                patient_id: if *own_patient {
                    P.into()
                } else {
                    "pat-other".into()
                },
                accessor_id: "reader".into(),
                accessed_at: Timestamp(0),
                purpose: "care".into(),
            }),
        }
    }

    /// Whether the contract's state says the same as the model (and the fixed fields are
    /// those of creation).
    fn matches(state: &RecordState, m: &Model, created_at: i64) -> bool {
        state.record_id == R
            && state.patient_id == P
            && state.hospital_id == "hosp-1"
            && state.record_type == "note"
            && state.author_id == "creator"
            && state.created_at == Timestamp(created_at)
            && state.version == m.version
            && status_str(state.status) == m.status
            && state.metadata.as_plain() == Some(m.metadata.as_str())
            && state.payload == m.payload.map(payload)
            && state.payload_erased == m.erased
            && state.updated_at == Timestamp(m.updated_at)
            && state.updated_by == m.updated_by
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        #[test]
        fn contract_matches_reference_model(
            first_create in prop::bool::weighted(0.9),
            first_at in 0i64..1_000_000,
            ops in prop::collection::vec(arb_op(), 0..40),
        ) {
            let mut all = Vec::with_capacity(ops.len() + 1);
            if first_create {
                all.push(Op::Create { version_one: true, payload: Some(0), at: first_at });
            }
            all.extend(ops);

            let mut state: Option<RecordState> = None;
            let mut model: Option<Model> = None;
            let mut created_at = 0;
            for op in &all {
                let version = match op {
                    Op::Create { version_one: true, .. } => 1,
                    Op::Create { version_one: false, .. } => 2,
                    Op::Amend { v, .. } | Op::Status { v, .. } | Op::Erase { v, .. } => {
                        resolve(*v, model.as_ref())
                    }
                    Op::Log { .. } => 0,
                };
                let event = to_event(op, version);
                let before = state.clone();
                let got = apply_record_event(state.as_ref(), &event);
                // The check alone, which the projection makes before changing a state
                // in place, gives the same verdict.
                prop_assert_eq!(
                    check_record_event(state.as_ref(), &event),
                    got.as_ref().map(|_| ()).map_err(Clone::clone)
                );
                let want = model_step(model.as_ref(), op, version);
                prop_assert_eq!(state.clone(), before.clone(), "input state changed");
                match (got, want) {
                    (Ok(next), Ok(next_model)) => {
                        if let Op::Create { at, .. } = op {
                            created_at = *at;
                        }
                        prop_assert!(matches(&next, &next_model, created_at),
                            "{:?}: contract {:?} vs model {:?}", op, next, next_model);
                        if let Some(prev) = &before {
                            prop_assert!(next.version >= prev.version);
                            if matches!(op, Op::Log { .. }) {
                                prop_assert_eq!(&next, prev);
                            } else {
                                prop_assert_eq!(next.version, prev.version + 1);
                            }
                        }
                        state = Some(next);
                        model = Some(next_model);
                    }
                    (Err(e), Err(code)) => {
                        prop_assert_eq!(e.code(), code, "{:?} on {:?}", op, before);
                    }
                    (got, want) => {
                        prop_assert!(false, "{:?} on {:?}: contract {:?}, model {:?}", op, before, got, want);
                    }
                }
            }
        }
    }
}
