//! Errors of the chaincode layer: an event that breaks a rule, or bytes that are not a
//! canonical envelope.

/// An event (or envelope) that is not acceptable as input. Every variant names the field,
/// so the HTTP layer can answer with a precise 4xx. Never contains payload bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    /// A required text field is empty.
    #[error("field `{field}` must not be empty")]
    Empty { field: &'static str },
    /// A field is longer than its limit.
    #[error("field `{field}` is {len} bytes, more than the limit of {max}")]
    TooLong {
        field: &'static str,
        len: usize,
        max: usize,
    },
    /// A field contains characters outside its allowed set.
    #[error("field `{field}` contains a character that is not allowed ({allowed})")]
    BadCharacters {
        field: &'static str,
        allowed: &'static str,
    },
    /// A list field has more entries than its limit.
    #[error("field `{field}` has {count} entries, more than the limit of {max}")]
    TooMany {
        field: &'static str,
        count: usize,
        max: usize,
    },
    /// A numeric field is out of its range.
    #[error("field `{field}` is out of range: {reason}")]
    OutOfRange {
        field: &'static str,
        reason: &'static str,
    },
    #[error("field `{field}` {reason}")]
    Malformed {
        field: &'static str,
        reason: &'static str,
    },
}

/// Bytes that do not decode as exactly one canonical envelope.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// bincode could not decode the bytes (truncated, bad tag, invalid UTF-8, over limit).
    #[error("envelope does not decode: {0}")]
    Malformed(String),
    /// The bytes decode, but bytes are left over after the envelope.
    #[error("{0} trailing bytes after the envelope")]
    TrailingBytes(usize),
    /// The bytes decode, but re-encoding gives other bytes (not the canonical form).
    #[error("envelope bytes are not in canonical form")]
    NotCanonical,
    /// A clinical text field in the form its block's format forbids: plain text in a
    /// format-2 block, or a sealed value in a format-1 block (docs/FORMAT.md).
    #[error("field `{field}` is {found} in a block of format {format}")]
    ClinicalForm {
        field: &'static str,
        found: &'static str,
        format: u8,
    },
    /// A block format this code does not know.
    #[error("block format {0} is unknown")]
    UnknownFormat(u8),
}
