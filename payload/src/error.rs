//! The pipeline's error type: one variant per outcome a client or operator acts on, each
//! with a stable `code()`. Messages never contain payload bytes.

use std::io;

use crate::crypto::CryptoError;
use crate::keystore::KeyStoreError;
use crate::pinstore::PinStoreError;

/// Errors of [`crate::Payloads`].
#[derive(Debug, thiserror::Error)]
pub enum PayloadError {
    /// The payload exceeds `max_payload_bytes`.
    #[error("payload exceeds the limit of {max_bytes} bytes")]
    TooLarge {
        /// The configured limit.
        max_bytes: u64,
    },
    /// No such payload (or no such key).
    #[error("payload not found: {0}")]
    NotFound(String),
    /// The payload's key was destroyed; it can never be read again.
    #[error("payload was erased (key {0} destroyed)")]
    Erased(String),
    /// Stored bytes failed verification (CID, authentication tag, size or SHA-256).
    #[error("payload is corrupt: {0}")]
    Corrupt(String),
    /// The key id is malformed.
    #[error("invalid key id")]
    InvalidKeyId,
    /// The IPFS node did not answer.
    #[error("IPFS node unavailable: {0}")]
    IpfsUnavailable(String),
    /// Reading the client's upload failed.
    #[error("reading the payload body failed: {0}")]
    Body(io::Error),
    /// Local storage failed (I/O, a poisoned store, a master key that does not fit).
    #[error("payload storage failed: {0}")]
    Storage(String),
}

impl PayloadError {
    /// A stable, machine-readable code for the HTTP layer.
    pub fn code(&self) -> &'static str {
        match self {
            PayloadError::TooLarge { .. } => "payload_too_large",
            PayloadError::NotFound(_) => "payload_not_found",
            PayloadError::Erased(_) => "payload_erased",
            PayloadError::Corrupt(_) => "payload_corrupt",
            PayloadError::InvalidKeyId => "invalid_key_id",
            PayloadError::IpfsUnavailable(_) => "ipfs_unavailable",
            PayloadError::Body(_) => "payload_body_error",
            PayloadError::Storage(_) => "payload_storage_error",
        }
    }
}

impl From<PinStoreError> for PayloadError {
    fn from(error: PinStoreError) -> Self {
        match error {
            PinStoreError::Corrupt(_)
            | PinStoreError::CidMismatch { .. }
            | PinStoreError::InvalidBlock { .. } => PayloadError::Corrupt(error.to_string()),
            PinStoreError::Missing(cid) => {
                PayloadError::NotFound(format!("block {cid} is missing"))
            }
            PinStoreError::Unavailable(message) => PayloadError::IpfsUnavailable(message),
            PinStoreError::Unsupported(_) | PinStoreError::Poisoned | PinStoreError::Io(_) => {
                PayloadError::Storage(error.to_string())
            }
        }
    }
}

impl From<KeyStoreError> for PayloadError {
    fn from(error: KeyStoreError) -> Self {
        match error {
            KeyStoreError::NotFound(id) => PayloadError::NotFound(format!("key {id}")),
            KeyStoreError::Erased(id) => PayloadError::Erased(id),
            KeyStoreError::InvalidKeyId => PayloadError::InvalidKeyId,
            KeyStoreError::Crypto(crypto) => crypto.into(),
            KeyStoreError::Exists(_)
            | KeyStoreError::WrongMasterKey(_)
            | KeyStoreError::Log(_)
            | KeyStoreError::Io { .. } => PayloadError::Storage(error.to_string()),
        }
    }
}

impl From<CryptoError> for PayloadError {
    fn from(error: CryptoError) -> Self {
        match error {
            CryptoError::TooLarge => PayloadError::TooLarge {
                max_bytes: u64::MAX,
            },
            CryptoError::Random(_)
            | CryptoError::Io { .. }
            | CryptoError::MasterKeyLength { .. }
            | CryptoError::MasterKeyPermissions { .. }
            | CryptoError::Unwrap { .. } => PayloadError::Storage(error.to_string()),
            CryptoError::BadHeader
            | CryptoError::Authentication { .. }
            | CryptoError::Truncated
            | CryptoError::TrailingData
            | CryptoError::AlreadyFailed
            | CryptoError::Unseal { .. } => PayloadError::Corrupt(error.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_stable() {
        assert_eq!(
            PayloadError::TooLarge { max_bytes: 1 }.code(),
            "payload_too_large"
        );
        assert_eq!(
            PayloadError::NotFound("x".into()).code(),
            "payload_not_found"
        );
        assert_eq!(PayloadError::Erased("x".into()).code(), "payload_erased");
        assert_eq!(PayloadError::Corrupt("x".into()).code(), "payload_corrupt");
        assert_eq!(
            PayloadError::IpfsUnavailable("x".into()).code(),
            "ipfs_unavailable"
        );
        let erased: PayloadError = KeyStoreError::Erased("k".into()).into();
        assert_eq!(erased.code(), "payload_erased");
        let tampered: PayloadError = CryptoError::Authentication { piece: 3 }.into();
        assert_eq!(tampered.code(), "payload_corrupt");
    }
}
