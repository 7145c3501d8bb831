//! The limit on every field a user can send. These bound memory per event and make an
//! event's encoded size predictable; the HTTP layer reports a breach as a 4xx naming the
//! field. Changing a limit does not change the encoding of events that respect it.

/// Identifiers: record, patient, clinician, hospital, submitter, grantee.
pub const ID_LEN_MAX: usize = 128;
/// Record type names such as `lab_result`.
pub const RECORD_TYPE_LEN_MAX: usize = 64;
/// Record metadata: a small JSON object, kept as its compact text.
pub const METADATA_LEN_MAX: usize = 16 * 1024;
/// Free-text reasons and purposes (amendment reason, erasure reason, access purpose).
pub const REASON_LEN_MAX: usize = 1024;
/// A content identifier (CIDv0 is 46 characters, CIDv1 base32 sha2-256 is 59).
pub const CID_LEN_MAX: usize = 128;
/// A MIME content type.
pub const CONTENT_TYPE_LEN_MAX: usize = 128;
/// Record types named in one access grant's scope.
pub const SCOPE_ENTRIES_MAX: usize = 32;
/// Records named by one read event (a read of more is several events).
pub const READ_RECORDS_MAX: usize = 1000;
/// Record versions: a record can be changed this many times.
pub const VERSION_MAX: u32 = 1_000_000;
/// The largest envelope the decoder will allocate for (the cutter's AbsoluteMaxBytes is
/// at most this).
pub const ENVELOPE_BYTES_MAX: usize = 64 * 1024 * 1024;
