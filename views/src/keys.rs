//! Key layouts of the views, designed for the queries (newest first).
//!
//! Identifiers are 1 to 128 bytes of `[A-Za-z0-9._:@-]` (the chaincode's limits), so they
//! never contain 0x00: a 0x00 byte ends every id component. That keeps a patient's rows
//! together and ahead of any id it prefixes ("p-1" then 0x00 sorts before "p-10").
//! Timestamps are stored so that byte order is newest first.
//!
//! | view | key |
//! |---|---|
//! | records | record_id |
//! | record_versions | record_id 0x00 version (u32 BE) |
//! | patient / author / hospital timeline, active | owner_id 0x00 desc(created_at) record_id |
//! | patient_type_timeline | patient_id 0x00 record_type 0x00 desc(created_at) record_id |
//! | grants | patient_id 0x00 grantee_id |
//! | audit | record_id 0x00 block (u64 BE) position (u32 BE) |
//! | rejected | block (u64 BE) position (u32 BE) |
//! | patient_counts | patient_id 0x00 record_type 0x00 status (u8) |
//! | stats | hospital_id 0x00 desc(month) record_type 0x00 status (u8) |
//!
//! `desc(t)` is the 8-byte big-endian complement of `t`'s order-preserving unsigned form
//! (`!(t as u64 ^ 1 << 63)`), so a larger (later) timestamp sorts first, negative ones too.

use medledger_chaincode::{RecordStatus, Timestamp};

/// Ends an id component.
pub const SEP: u8 = 0x00;

/// A timestamp encoded so byte order is newest first.
pub fn desc(t: Timestamp) -> [u8; 8] {
    (!((t.0 as u64) ^ (1 << 63))).to_be_bytes()
}

/// The inverse of [`desc`].
pub fn undesc(bytes: [u8; 8]) -> Timestamp {
    Timestamp((!u64::from_be_bytes(bytes) ^ (1 << 63)) as i64)
}

/// Appends `id` and the separator that ends it.
fn push_id(k: &mut Vec<u8>, id: &str) {
    debug_assert!(!id.as_bytes().contains(&SEP), "ids never contain 0x00");
    k.extend_from_slice(id.as_bytes());
    k.push(SEP);
}

/// Appends a `records` key to `k`.
pub fn write_record(k: &mut Vec<u8>, record_id: &str) {
    k.extend_from_slice(record_id.as_bytes());
}

/// `records` key (see [`write_record`]).
pub fn record(record_id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(record_id.len());
    write_record(&mut k, record_id);
    k
}

/// Appends a `record_versions` key to `k`.
pub fn write_record_version(k: &mut Vec<u8>, record_id: &str, version: u32) {
    push_id(k, record_id);
    k.extend_from_slice(&version.to_be_bytes());
}

/// `record_versions` key.
pub fn record_version(record_id: &str, version: u32) -> Vec<u8> {
    let mut k = Vec::with_capacity(record_id.len() + 5);
    write_record_version(&mut k, record_id, version);
    k
}

/// Prefix of every version of a record, oldest first.
pub fn record_versions_prefix(record_id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(record_id.len() + 1);
    push_id(&mut k, record_id);
    k
}

/// Appends a timeline key (patient, author, hospital, active) to `k`: newest first
/// within the owner.
pub fn write_timeline(k: &mut Vec<u8>, owner_id: &str, created_at: Timestamp, record_id: &str) {
    push_id(k, owner_id);
    k.extend_from_slice(&desc(created_at));
    k.extend_from_slice(record_id.as_bytes());
}

/// Timeline key (see [`write_timeline`]).
pub fn timeline(owner_id: &str, created_at: Timestamp, record_id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(owner_id.len() + 9 + record_id.len());
    write_timeline(&mut k, owner_id, created_at, record_id);
    k
}

/// Prefix of one owner's timeline.
pub fn timeline_prefix(owner_id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(owner_id.len() + 1);
    push_id(&mut k, owner_id);
    k
}

/// Appends a `patient_type_timeline` key to `k`.
pub fn write_type_timeline(
    k: &mut Vec<u8>,
    patient_id: &str,
    record_type: &str,
    created_at: Timestamp,
    record_id: &str,
) {
    push_id(k, patient_id);
    push_id(k, record_type);
    k.extend_from_slice(&desc(created_at));
    k.extend_from_slice(record_id.as_bytes());
}

/// `patient_type_timeline` key (see [`write_type_timeline`]).
pub fn type_timeline(
    patient_id: &str,
    record_type: &str,
    created_at: Timestamp,
    record_id: &str,
) -> Vec<u8> {
    let mut k = Vec::new();
    write_type_timeline(&mut k, patient_id, record_type, created_at, record_id);
    k
}

/// Prefix of one patient's records of one type.
pub fn type_timeline_prefix(patient_id: &str, record_type: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(patient_id.len() + record_type.len() + 2);
    push_id(&mut k, patient_id);
    push_id(&mut k, record_type);
    k
}

/// Splits a timeline key after its `prefix` into (created_at, record_id).
pub fn parse_timeline(prefix: &[u8], key: &[u8]) -> Option<(Timestamp, String)> {
    let rest = key.strip_prefix(prefix)?;
    let (ts, id) = rest.split_first_chunk::<8>()?;
    Some((undesc(*ts), String::from_utf8(id.to_vec()).ok()?))
}

/// `grants` key.
pub fn grant(patient_id: &str, grantee_id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(patient_id.len() + 1 + grantee_id.len());
    push_id(&mut k, patient_id);
    k.extend_from_slice(grantee_id.as_bytes());
    k
}

/// Appends an `audit` key to `k`: a record's access log in ledger order.
pub fn write_audit(k: &mut Vec<u8>, record_id: &str, block: u64, position: u32) {
    push_id(k, record_id);
    k.extend_from_slice(&block.to_be_bytes());
    k.extend_from_slice(&position.to_be_bytes());
}

/// `audit` key (see [`write_audit`]).
pub fn audit(record_id: &str, block: u64, position: u32) -> Vec<u8> {
    let mut k = Vec::with_capacity(record_id.len() + 13);
    write_audit(&mut k, record_id, block, position);
    k
}

/// The prefix of one patient's `access_log` rows.
pub fn access_log_prefix(patient_id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(patient_id.len() + 1);
    push_id(&mut k, patient_id);
    k
}

/// Appends an `access_log` key to `k`: a patient's reads, newest first (block and
/// position descending).
pub fn write_access_log(k: &mut Vec<u8>, patient_id: &str, block: u64, position: u32) {
    push_id(k, patient_id);
    k.extend_from_slice(&(!block).to_be_bytes());
    k.extend_from_slice(&(!position).to_be_bytes());
}

/// `access_log` key (see [`write_access_log`]).
pub fn access_log(patient_id: &str, block: u64, position: u32) -> Vec<u8> {
    let mut k = Vec::with_capacity(patient_id.len() + 13);
    write_access_log(&mut k, patient_id, block, position);
    k
}

/// `rejected` key: a committed transaction the contract rejected, in ledger order.
pub fn rejected(block: u64, position: u32) -> Vec<u8> {
    let mut k = Vec::with_capacity(12);
    k.extend_from_slice(&block.to_be_bytes());
    k.extend_from_slice(&position.to_be_bytes());
    k
}

/// Every status, in the order of [`status_code`].
pub const STATUSES: [RecordStatus; 3] = [
    RecordStatus::Active,
    RecordStatus::Archived,
    RecordStatus::EnteredInError,
];

/// The byte that ends a count key: a record status.
pub fn status_code(status: RecordStatus) -> u8 {
    match status {
        RecordStatus::Active => 0,
        RecordStatus::Archived => 1,
        RecordStatus::EnteredInError => 2,
    }
}

/// The inverse of [`status_code`].
pub fn status_from_code(code: u8) -> Option<RecordStatus> {
    STATUSES.get(usize::from(code)).copied()
}

/// Appends a `patient_counts` key to `k`.
pub fn write_patient_count(
    k: &mut Vec<u8>,
    patient_id: &str,
    record_type: &str,
    status: RecordStatus,
) {
    push_id(k, patient_id);
    push_id(k, record_type);
    k.push(status_code(status));
}

/// The prefix of one patient's `patient_counts` rows.
pub fn patient_counts_prefix(patient_id: &str) -> Vec<u8> {
    timeline_prefix(patient_id)
}

/// Splits a `patient_counts` key after its patient's prefix into (record type, status).
pub fn parse_patient_count(prefix: &[u8], key: &[u8]) -> Option<(String, RecordStatus)> {
    let rest = key.strip_prefix(prefix)?;
    let (status, record_type) = rest.split_last()?;
    let record_type = record_type.strip_suffix(&[SEP])?;
    Some((
        String::from_utf8(record_type.to_vec()).ok()?,
        status_from_code(*status)?,
    ))
}

/// A month index ([`Timestamp::month_index`]) encoded so byte order is newest first.
pub fn desc_month(month: i64) -> [u8; 8] {
    desc(Timestamp(month))
}

/// Appends a `stats` key to `k`: a hospital's counts, newest month first.
pub fn write_stat(
    k: &mut Vec<u8>,
    hospital_id: &str,
    month: i64,
    record_type: &str,
    status: RecordStatus,
) {
    push_id(k, hospital_id);
    k.extend_from_slice(&desc_month(month));
    push_id(k, record_type);
    k.push(status_code(status));
}

/// One `stats` row's key, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatKey {
    pub hospital_id: String,
    pub month: i64,
    pub record_type: String,
    pub status: RecordStatus,
}

/// Parses a `stats` key.
pub fn parse_stat(key: &[u8]) -> Option<StatKey> {
    let end = key.iter().position(|&b| b == SEP)?;
    let (hospital_id, rest) = (&key[..end], &key[end + 1..]);
    let (month, rest) = rest.split_first_chunk::<8>()?;
    let (status, record_type) = rest.split_last()?;
    let record_type = record_type.strip_suffix(&[SEP])?;
    Some(StatKey {
        hospital_id: String::from_utf8(hospital_id.to_vec()).ok()?,
        month: undesc(*month).0,
        record_type: String::from_utf8(record_type.to_vec()).ok()?,
        status: status_from_code(*status)?,
    })
}

/// A count's value: `u64` little-endian, as bincode writes it for the other views.
pub fn encode_count(count: u64) -> [u8; 8] {
    count.to_le_bytes()
}

/// The inverse of [`encode_count`].
pub fn decode_count(bytes: &[u8]) -> Option<u64> {
    Some(u64::from_le_bytes(bytes.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn desc_orders_newest_first_across_the_whole_range() {
        let ts = [i64::MIN, -1_000, -1, 0, 1, 1_795_428_000_000, i64::MAX];
        for w in ts.windows(2) {
            assert!(desc(Timestamp(w[0])) > desc(Timestamp(w[1])), "{w:?}");
        }
        for t in ts {
            assert_eq!(undesc(desc(Timestamp(t))), Timestamp(t));
        }
    }

    #[test]
    fn an_owner_prefix_never_matches_a_longer_owner() {
        let p1 = timeline("p-1", Timestamp(5), "r-9");
        let p10 = timeline("p-10", Timestamp(5), "r-9");
        assert!(p1.starts_with(&timeline_prefix("p-1")));
        assert!(!p10.starts_with(&timeline_prefix("p-1")));
        assert!(p1 < p10, "p-1's rows sort before p-10's");
    }

    #[test]
    fn timeline_keys_sort_newest_first_then_by_record_and_parse_back() {
        let newer = timeline("p-1", Timestamp(200), "r-1");
        let older_a = timeline("p-1", Timestamp(100), "r-a");
        let older_b = timeline("p-1", Timestamp(100), "r-b");
        assert!(newer < older_a && older_a < older_b);
        let prefix = timeline_prefix("p-1");
        assert_eq!(
            parse_timeline(&prefix, &older_b),
            Some((Timestamp(100), "r-b".into()))
        );
        assert_eq!(parse_timeline(&timeline_prefix("p-2"), &older_b), None);
        let typed = type_timeline("p-1", "lab_result", Timestamp(7), "r-3");
        assert_eq!(
            parse_timeline(&type_timeline_prefix("p-1", "lab_result"), &typed),
            Some((Timestamp(7), "r-3".into()))
        );
    }

    #[test]
    fn versions_and_audit_entries_sort_in_ledger_order() {
        assert!(record_version("r-1", 2) < record_version("r-1", 10));
        assert!(record_version("r-1", 999).starts_with(&record_versions_prefix("r-1")));
        assert!(audit("r-1", 1, 9) < audit("r-1", 2, 0));
        assert!(grant("p-1", "dr-1") < grant("p-1", "dr-2"));
    }

    #[test]
    fn count_keys_sort_by_owner_then_parse_back() {
        let mut a = Vec::new();
        write_patient_count(&mut a, "p-1", "lab_result", RecordStatus::Archived);
        let mut b = Vec::new();
        write_patient_count(&mut b, "p-1", "lab_result", RecordStatus::EnteredInError);
        let mut c = Vec::new();
        write_patient_count(&mut c, "p-10", "allergy", RecordStatus::Active);
        assert!(a < b && b < c);
        let prefix = patient_counts_prefix("p-1");
        assert!(!c.starts_with(&prefix));
        assert_eq!(
            parse_patient_count(&prefix, &b),
            Some(("lab_result".into(), RecordStatus::EnteredInError))
        );
        let mut newer = Vec::new();
        write_stat(&mut newer, "h-1", 24_323, "note", RecordStatus::Active);
        let mut older = Vec::new();
        write_stat(&mut older, "h-1", 24_322, "allergy", RecordStatus::Active);
        assert!(newer < older, "newest month first");
        assert_eq!(
            parse_stat(&older),
            Some(StatKey {
                hospital_id: "h-1".into(),
                month: 24_322,
                record_type: "allergy".into(),
                status: RecordStatus::Active,
            })
        );
        for code in 0..3 {
            assert_eq!(status_code(status_from_code(code).unwrap()), code);
        }
        assert_eq!(status_from_code(3), None);
    }
}
