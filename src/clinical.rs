//! Clinical text in and out of the ledger: sealed under the record's content key before
//! an envelope is ordered, opened when a read shows it (docs/PAYLOADS.md, "Clinical text
//! in the ledger").
//!
//! Every record has one content key in the key store, found from the record id
//! ([`record_key_id`]), made when the record's first event is sealed. Erasing the record
//! destroys it, with every payload key of every version: from then on its metadata,
//! reasons and access purposes open as [`Opened::Erased`] on every read path, and the
//! ledger and the views still hold only ciphertext, so neither a rebuild nor a copy of
//! the disk brings the text back.

use std::path::Path;

use medledger_chaincode::{Clinical, Envelope, Sealed};
use medledger_payload::crypto::{open_text, seal_text, CryptoError, MasterKey};
use medledger_payload::keystore::{record_key_bytes, record_key_id, KeyStore, KeyStoreError};

/// Opens the key store a server on `data_dir` uses (`<data_dir>/payloads/keys`, wrapped
/// under `<data_dir>/payloads/master.key`), for tools that write the ledger themselves.
pub fn open_keys(data_dir: &Path) -> Result<KeyStore, String> {
    let dir = data_dir.join("payloads");
    medledger_storage::ledger::fs::create_dir_durably(&dir)
        .map_err(|e| format!("creating the payload directory: {e}"))?;
    let master = MasterKey::load_or_create(&dir.join("master.key")).map_err(|e| e.to_string())?;
    KeyStore::open(&dir.join("keys"), master).map_err(|e| e.to_string())
}

/// Why clinical text could not be sealed or opened.
#[derive(Debug, thiserror::Error)]
pub enum ClinicalError {
    /// The record was erased: its content key is destroyed, nothing more can be sealed
    /// for it.
    #[error("record `{record_id}` was erased")]
    Erased { record_id: String },
    /// Sealed text of a record whose key this node does not hold (and never destroyed).
    #[error("the content key of record `{record_id}` is not on this node")]
    KeyMissing { record_id: String },
    /// The key store failed, or sealed text did not open (tampered or damaged).
    #[error("clinical text of record `{record_id}`: {reason}")]
    Failed { record_id: String, reason: String },
}

impl ClinicalError {
    /// A stable code for answers and logs.
    pub fn code(&self) -> &'static str {
        match self {
            ClinicalError::Erased { .. } => "record_erased",
            ClinicalError::KeyMissing { .. } => "key_unavailable",
            ClinicalError::Failed { .. } => "clinical_text_unreadable",
        }
    }
}

fn failed(record_id: &str, reason: impl std::fmt::Display) -> ClinicalError {
    ClinicalError::Failed {
        record_id: record_id.to_string(),
        reason: reason.to_string(),
    }
}

/// Seals every clinical field of `env` still in the clear under its record's content key,
/// making the key first (durably) if the record has none. An envelope without clinical
/// text (a grant) is left as it is. Returns once the key is durable, so nothing sealed
/// can be acknowledged with its key lost.
pub async fn seal(keys: &KeyStore, env: &mut Envelope) -> Result<(), ClinicalError> {
    let Some(record_id) = needs_sealing(env) else {
        return Ok(());
    };
    let key = keys.record_key(&record_id).await;
    seal_with(env, &record_id, key)
}

/// [`seal`] for callers without a runtime (tools writing a ledger themselves, tests).
pub fn seal_blocking(keys: &KeyStore, env: &mut Envelope) -> Result<(), ClinicalError> {
    let Some(record_id) = needs_sealing(env) else {
        return Ok(());
    };
    let key = keys.record_key_blocking(&record_id);
    seal_with(env, &record_id, key)
}

/// The key `env` needs (its record's, or for a read the patient's access key), if it
/// has clinical text in the clear.
fn needs_sealing(env: &Envelope) -> Option<String> {
    let plain = env
        .event
        .clinical_fields()
        .iter()
        .any(|(_, value)| !value.is_sealed());
    if plain {
        env.event.key_name()
    } else {
        None
    }
}

fn seal_with(
    env: &mut Envelope,
    record_id: &str,
    key: Result<std::sync::Arc<medledger_payload::crypto::DataKey>, KeyStoreError>,
) -> Result<(), ClinicalError> {
    let key = match key {
        Ok(key) => key,
        Err(KeyStoreError::Erased(_)) => {
            return Err(ClinicalError::Erased {
                record_id: record_id.to_owned(),
            })
        }
        Err(e) => return Err(failed(record_id, e)),
    };
    for (field, value) in env.event.clinical_fields_mut() {
        if let Clinical::Plain(text) = value {
            let (nonce, ciphertext) =
                seal_text(&key, record_id, field, text).map_err(|e| failed(record_id, e))?;
            *value = Clinical::Sealed(Sealed::new(nonce, &ciphertext));
        }
    }
    Ok(())
}

/// Clinical text as a read shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Opened {
    Text(String),
    /// The record was erased: its text is gone for good.
    Erased,
}

impl Opened {
    /// The text, `None` once erased.
    pub fn text(&self) -> Option<&str> {
        match self {
            Opened::Text(text) => Some(text),
            Opened::Erased => None,
        }
    }
}

/// Opens `record_id`'s clinical `field`. Text in the clear (written in block format 1)
/// is shown unless the record was erased since; sealed text opens with the record's
/// key, or is [`Opened::Erased`] once the key is destroyed.
pub fn open(
    keys: &KeyStore,
    record_id: &str,
    field: &'static str,
    value: &Clinical,
) -> Result<Opened, ClinicalError> {
    match value {
        Clinical::Plain(_) if keys.is_erased(&record_key_id(record_id)) => Ok(Opened::Erased),
        Clinical::Plain(text) => Ok(Opened::Text(text.clone())),
        Clinical::Sealed(sealed) => match keys.load_cached_id(&record_key_bytes(record_id)) {
            Ok(key) => open_text(
                &key,
                record_id,
                field,
                sealed.nonce(),
                sealed.ciphertext_and_tag(),
            )
            .map(Opened::Text)
            .map_err(|e: CryptoError| failed(record_id, e)),
            Err(KeyStoreError::Erased(_)) => Ok(Opened::Erased),
            Err(KeyStoreError::NotFound(_)) => Err(ClinicalError::KeyMissing {
                record_id: record_id.to_string(),
            }),
            Err(e) => Err(failed(record_id, e)),
        },
    }
}

/// Destroys `record_id`'s content key (durably; idempotent). Its clinical text, in every
/// version, opens as [`Opened::Erased`] from then on.
pub fn destroy(keys: &KeyStore, record_id: &str) -> Result<(), ClinicalError> {
    keys.destroy(&record_key_id(record_id))
        .map_err(|e| failed(record_id, e))
}
