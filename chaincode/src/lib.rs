//! medledger's event types and the EMR contract.
//!
//! Everything in this crate is a pure, deterministic function of its inputs: no I/O, no
//! clock, no randomness. Identifiers and timestamps are passed in by the caller, so the
//! same events always encode to the same bytes and hash to the same transaction hash.
//!
//! - [`clinical`]: clinical free text (metadata, reasons, purposes), plain or sealed.
//! - [`event`]: what can happen to a medical record (the seven event types).
//! - [`envelope`]: one event plus who submitted it and when, with its canonical bytes
//!   (bincode 2, fixed-width little-endian integers; see docs/FORMAT.md) and its hash.
//! - [`contract`]: what each event does to a record's (or a grant's) state, and which
//!   events are invalid for the current state.
//! - [`limits`]: the bound on every field a user can send.
//! - [`time`]: UTC timestamps in milliseconds and their RFC 3339 text form.

pub mod clinical;
pub mod contract;
pub mod envelope;
pub mod error;
pub mod event;
pub mod limits;
pub mod time;

pub use clinical::{Clinical, Sealed};
pub use envelope::{tx_hash, Envelope, Subject, TxHash, TxId, FORMAT_PLAIN, FORMAT_SEALED};
pub use error::{DecodeError, EventError};
pub use event::{
    is_valid_id, is_valid_record_type, AccessGranted, AccessLogged, AccessRevoked, Event,
    EventKind, PayloadErased, PayloadRef, RecordAmended, RecordCreated, RecordStatus,
    RecordStatusChanged, RecordsRead, Sha256Digest, READ_KINDS, READ_PURPOSES,
};
pub use time::Timestamp;
