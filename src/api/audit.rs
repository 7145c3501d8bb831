//! Every read of clinical content on the ledger: a `RecordsRead` event per patient whose
//! records a response shows (a record, its history, an earlier version, a timeline page,
//! an export, a payload), batched through the cutter with every other transaction.
//!
//! By default ([`AuditReads::Sync`]) the response waits until the event is durable: a
//! read answered is a read on the ledger, whatever crashes after. `--audit-reads async`
//! answers once the event is queued (its loss window: the events still in the orderer's
//! queue and the block being written, at most BatchTimeout plus one block's fsync, when
//! the process dies); `off` records nothing. Either way, a read whose event cannot even
//! be queued (the queue full, the disk full, the ledger failed) is refused: nothing is
//! shown unaccounted for.
//!
//! The caller declares why it reads: `?purpose=` (one of [`READ_PURPOSES`], default
//! `treatment`), and a clinician without a grant may read one patient's records in an
//! emergency with `?break_glass=<reason>`: allowed, flagged in the event (the reason
//! sealed under the patient's access key), counted in
//! `medledger_break_glass_reads_total`.

use std::sync::atomic::{AtomicU64, Ordering};

use actix_web::http::StatusCode;

use medledger_chaincode::limits::{READ_RECORDS_MAX, REASON_LEN_MAX};
use medledger_chaincode::{Envelope, Event, RecordsRead, READ_PURPOSES};

use super::auth::{Caller, Role};
use super::error::ApiError;
use super::submit::{clinical_error, envelope, now, submit_error};
use super::AppState;
use crate::orderer::SubmitError;

/// Whether reads wait for their access event (`--audit-reads`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum AuditReads {
    /// The response waits until the read's event is durable.
    #[default]
    Sync,
    /// The response waits until the event is queued.
    Async,
    /// No access events (benchmarks; a deployment that audits elsewhere).
    Off,
}

/// Counters for `/metrics`.
#[derive(Default)]
pub struct AuditStats {
    /// Access events submitted.
    pub events: AtomicU64,
    /// Records shown, counted in the events.
    pub records: AtomicU64,
    /// Reads under break-glass.
    pub break_glass: AtomicU64,
}

/// What the caller declared of a read: its purpose, and a break-glass reason.
#[derive(Clone, Debug)]
pub struct Declared {
    pub purpose: &'static str,
    pub break_glass: Option<String>,
}

/// The purpose of a read named `text` (one of [`READ_PURPOSES`]), `default` when none is
/// named; 400 `invalid_purpose` for another.
pub(crate) fn read_purpose(
    text: Option<&str>,
    default: &'static str,
) -> Result<&'static str, ApiError> {
    let Some(text) = text else {
        return Ok(default);
    };
    READ_PURPOSES
        .iter()
        .find(|known| **known == text)
        .copied()
        .ok_or_else(|| {
            ApiError::bad_request(
                "invalid_purpose",
                format!("purpose must be one of {}", READ_PURPOSES.join(", ")),
            )
        })
}

impl Declared {
    /// The declaration of `?purpose=` and `?break_glass=`. Break-glass is for clinicians,
    /// on routes that read one patient's records (`one_patient`).
    pub fn parse(
        caller: &Caller,
        purpose: Option<&str>,
        break_glass: Option<&str>,
        one_patient: bool,
    ) -> Result<Declared, ApiError> {
        let purpose = read_purpose(purpose, "treatment")?;
        let break_glass = match break_glass {
            None => None,
            Some(reason) => {
                if caller.role() != Role::Clinician {
                    return Err(ApiError::bad_request(
                        "break_glass_not_allowed",
                        "break-glass is for clinicians",
                    ));
                }
                if !one_patient {
                    return Err(ApiError::bad_request(
                        "break_glass_not_allowed",
                        "break-glass opens one patient's records: a record, its history, a payload, a patient's timeline or export",
                    ));
                }
                let reason = reason.trim();
                if reason.is_empty() || reason.len() > REASON_LEN_MAX {
                    return Err(ApiError::bad_request(
                        "invalid_break_glass",
                        format!("break_glass is the reason, 1 to {REASON_LEN_MAX} bytes"),
                    ));
                }
                Some(reason.to_owned())
            }
        };
        Ok(Declared {
            purpose,
            break_glass,
        })
    }

    /// Whether the caller read under break-glass.
    pub fn is_break_glass(&self) -> bool {
        self.break_glass.is_some()
    }
}

/// The access events of a read: one per patient (records in the order shown), each
/// naming at most [`READ_RECORDS_MAX`] records, clinical text still in the clear.
fn events(
    caller: &Caller,
    declared: &Declared,
    what: &'static str,
    reads: &[(&str, &str)],
) -> Vec<Envelope> {
    let mut by_patient: Vec<(&str, Vec<String>)> = Vec::new();
    for (patient_id, record_id) in reads {
        match by_patient
            .iter_mut()
            .find(|(p, ids)| p == patient_id && ids.len() < READ_RECORDS_MAX)
        {
            Some((_, ids)) => ids.push((*record_id).to_owned()),
            None => by_patient.push((patient_id, vec![(*record_id).to_owned()])),
        }
    }
    by_patient
        .into_iter()
        .map(|(patient_id, record_ids)| {
            envelope(
                caller,
                Event::RecordsRead(RecordsRead {
                    patient_id: patient_id.to_owned(),
                    record_ids,
                    reader_id: caller.id().to_owned(),
                    reader_role: caller.role().as_str().to_owned(),
                    reader_hospital: caller.hospital().map(str::to_owned),
                    what: what.to_owned(),
                    purpose: declared.purpose.to_owned(),
                    break_glass: declared.break_glass.clone().map(Into::into),
                    read_at: now(),
                }),
            )
        })
        .collect()
}

fn unaudited(e: ApiError) -> ApiError {
    // The read is refused: say why in terms of the read, keep the cause's code.
    let message = format!(
        "the read could not be recorded on the ledger: {}",
        e.message
    );
    ApiError { message, ..e }
}

/// 410 `patient_forgotten`: the patient's access key is destroyed.
fn forgotten(patient_id: &str) -> ApiError {
    ApiError::new(
        StatusCode::GONE,
        "patient_forgotten",
        format!("patient `{patient_id}` was forgotten: a break-glass read of it can no longer be recorded"),
    )
}

/// Why a read's event could not be sealed: a forgotten patient's access key is destroyed,
/// so no break-glass reason can be recorded for it (its records are erased: nothing
/// clinical is left to read).
fn seal_error(env: &Envelope, e: &crate::clinical::ClinicalError) -> ApiError {
    match (e, &env.event) {
        (crate::clinical::ClinicalError::Erased { .. }, Event::RecordsRead(read)) => {
            forgotten(&read.patient_id)
        }
        _ => unaudited(clinical_error(e)),
    }
}

/// Refuses up front a break-glass read that could not be recorded (a forgotten patient),
/// for routes that answer before they have read anything (an export streams).
pub(crate) async fn check_break_glass(
    state: &AppState,
    declared: &Declared,
    patient_id: &str,
) -> Result<(), ApiError> {
    if !declared.is_break_glass() || state.audit_reads == AuditReads::Off {
        return Ok(());
    }
    let name = RecordsRead::key_name(patient_id);
    match state.payloads.keys().record_key(&name).await {
        Ok(_) => Ok(()),
        Err(medledger_payload::keystore::KeyStoreError::Erased(_)) => Err(forgotten(patient_id)),
        Err(e) => Err(ApiError::internal(format!("the key store: {e}"))),
    }
}

fn check(env: &Envelope) -> Result<(), ApiError> {
    // The server built it from checked ids: a breach is a bug.
    env.check_limits()
        .map_err(|e| ApiError::internal(e.to_string()))
}

fn count(state: &AppState, declared: &Declared, envs: &[Envelope], records: usize) {
    let stats = &state.metrics.audit;
    stats.events.fetch_add(envs.len() as u64, Ordering::Relaxed);
    stats.records.fetch_add(records as u64, Ordering::Relaxed);
    if declared.is_break_glass() {
        stats.break_glass.fetch_add(1, Ordering::Relaxed);
    }
}

type Pending = tokio::sync::oneshot::Receiver<Result<crate::orderer::Receipt, SubmitError>>;

/// The checked events of a read (none when reads are not recorded).
fn prepared(
    state: &AppState,
    caller: &Caller,
    declared: &Declared,
    what: &'static str,
    reads: &[(&str, &str)],
) -> Result<Vec<Envelope>, ApiError> {
    if reads.is_empty() || state.audit_reads == AuditReads::Off {
        return Ok(Vec::new());
    }
    let envs = events(caller, declared, what, reads);
    envs.iter().try_for_each(check)?;
    Ok(envs)
}

/// Queues sealed events; the receipts to wait for.
fn enqueue_all(
    state: &AppState,
    declared: &Declared,
    envs: &[Envelope],
    records: usize,
) -> Result<Vec<Pending>, ApiError> {
    let pending = envs
        .iter()
        .map(|env| {
            state
                .orderer
                .enqueue(env)
                .map_err(|e| unaudited(submit_error(e)))
        })
        .collect::<Result<Vec<_>, _>>()?;
    count(state, declared, envs, records);
    state.projector.nudge();
    Ok(pending)
}

fn waited(
    outcome: Result<Result<crate::orderer::Receipt, SubmitError>, impl Sized>,
) -> Result<(), ApiError> {
    outcome
        .unwrap_or(Err(SubmitError::Closed))
        .map(drop)
        .map_err(|e| unaudited(submit_error(e)))
}

/// Records `reads` ((patient id, record id) pairs, in the order shown) as read by
/// `caller`, waiting as `--audit-reads` says. An error refuses the read.
pub(crate) async fn record(
    state: &AppState,
    caller: &Caller,
    declared: &Declared,
    what: &'static str,
    reads: &[(&str, &str)],
) -> Result<(), ApiError> {
    let mut envs = prepared(state, caller, declared, what, reads)?;
    for env in &mut envs {
        crate::clinical::seal(state.payloads.keys(), env)
            .await
            .map_err(|e| seal_error(env, &e))?;
    }
    let pending = enqueue_all(state, declared, &envs, reads.len())?;
    if state.audit_reads == AuditReads::Sync {
        for rx in pending {
            waited(rx.await)?;
        }
    }
    Ok(())
}

/// [`record`] from a thread outside the runtime (an export's reader).
pub(crate) fn record_blocking(
    state: &AppState,
    caller: &Caller,
    declared: &Declared,
    what: &'static str,
    reads: &[(&str, &str)],
) -> Result<(), ApiError> {
    let mut envs = prepared(state, caller, declared, what, reads)?;
    for env in &mut envs {
        crate::clinical::seal_blocking(state.payloads.keys(), env)
            .map_err(|e| seal_error(env, &e))?;
    }
    let pending = enqueue_all(state, declared, &envs, reads.len())?;
    if state.audit_reads == AuditReads::Sync {
        for rx in pending {
            waited(rx.blocking_recv())?;
        }
    }
    Ok(())
}
