//! The record every peer stores, and a deterministic generator of them.
//!
//! [`PeerRecord`] is the common denominator of medledger's `RecordCreated` event: the ids a
//! hospital indexes by, a clinical timestamp and an opaque metadata body. The lead's runner
//! converts medledger's fixtures into these; [`RecordGen`] makes them for the standalone bin
//! with the same shape (power-law patients, 90% home hospital, the fixtures' type shares).

use crate::error::{PeerError, Result};

/// One medical record as every peer stores it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct PeerRecord {
    /// Unique in one run (`r-0000000001`).
    pub record_id: String,
    /// Whose record (`p-0001234`).
    pub patient_id: String,
    /// The clinician who wrote it (`dr-0007-012`).
    pub author_id: String,
    /// Where it was made (`h-0007`).
    pub hospital_id: String,
    /// `vital_signs`, `lab_result`, ...
    pub record_type: String,
    /// `active`, `final` or `entered_in_error`.
    pub status: String,
    /// Clinical time, microseconds since the Unix epoch.
    pub created_at_micros: i64,
    /// JSON metadata, opaque to the peers.
    pub body: Vec<u8>,
}

impl PeerRecord {
    /// A self-delimiting byte encoding: each text field as a u32 little-endian length and
    /// its bytes, then `created_at_micros` as i64 little-endian, then the body's length
    /// and bytes. [`PeerRecord::decode`] inverts it; the hash chains hash these bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        for field in self.text_fields() {
            put_bytes(&mut out, field.as_bytes());
        }
        out.extend_from_slice(&self.created_at_micros.to_le_bytes());
        put_bytes(&mut out, &self.body);
        out
    }

    /// Length of [`PeerRecord::encode`]'s output.
    pub fn encoded_len(&self) -> usize {
        self.text_fields()
            .iter()
            .map(|f| 4 + f.len())
            .sum::<usize>()
            + 8
            + 4
            + self.body.len()
    }

    /// Decodes [`PeerRecord::encode`]'s bytes; fails on truncated or non-UTF-8 input.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let mut cursor = Cursor { bytes, at: 0 };
        let mut text = || -> Result<String> {
            let raw = cursor.take_prefixed()?;
            String::from_utf8(raw.to_vec()).map_err(|e| PeerError::Decode(e.to_string()))
        };
        let (record_id, patient_id, author_id) = (text()?, text()?, text()?);
        let (hospital_id, record_type, status) = (text()?, text()?, text()?);
        let micros = cursor.take(8)?;
        let created_at_micros = i64::from_le_bytes(micros.try_into().expect("took 8 bytes"));
        let body = cursor.take_prefixed()?.to_vec();
        if cursor.at != bytes.len() {
            return Err(PeerError::Decode(format!(
                "{} trailing bytes",
                bytes.len() - cursor.at
            )));
        }
        Ok(PeerRecord {
            record_id,
            patient_id,
            author_id,
            hospital_id,
            record_type,
            status,
            created_at_micros,
            body,
        })
    }

    fn text_fields(&self) -> [&str; 6] {
        [
            &self.record_id,
            &self.patient_id,
            &self.author_id,
            &self.hospital_id,
            &self.record_type,
            &self.status,
        ]
    }
}

/// The hash chain the SQL peers keep: `SHA-256(prev_hash ‖ record.encode())`, starting
/// from 32 zero bytes.
pub fn chain_hash(prev_hash: &[u8], record: &PeerRecord) -> Vec<u8> {
    use sha2::{Digest, Sha256};
    Sha256::new()
        .chain_update(prev_hash)
        .chain_update(record.encode())
        .finalize()
        .to_vec()
}

/// Checks rows in chain order: each `prev_hash` is the previous row's `hash` (32 zero
/// bytes for the first) and each `hash` is [`chain_hash`]. Returns the last hash.
pub fn verify_chain_rows(
    rows: impl IntoIterator<Item = (PeerRecord, Vec<u8>, Vec<u8>)>,
) -> Result<(u64, Vec<u8>)> {
    let mut expected_prev = vec![0u8; 32];
    let mut n = 0u64;
    for (record, prev_hash, hash) in rows {
        if prev_hash != expected_prev {
            return Err(PeerError::Decode(format!(
                "chain broken at {}: prev_hash is not the previous row's hash",
                record.record_id
            )));
        }
        if hash != chain_hash(&prev_hash, &record) {
            return Err(PeerError::Decode(format!(
                "chain broken at {}: hash does not match the row",
                record.record_id
            )));
        }
        expected_prev = hash;
        n += 1;
    }
    Ok((n, expected_prev))
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    let len = u32::try_from(bytes.len()).expect("a record field is < 4 GiB");
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(bytes);
}

struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.bytes.len());
        let end = end.ok_or_else(|| PeerError::Decode("truncated".into()))?;
        let out = &self.bytes[self.at..end];
        self.at = end;
        Ok(out)
    }

    fn take_prefixed(&mut self) -> Result<&'a [u8]> {
        let len = self.take(4)?;
        let len = u32::from_le_bytes(len.try_into().expect("took 4 bytes"));
        self.take(len as usize)
    }
}

/// The record as a medledger `POST /v1/records` body (one JSON line): the same ids, type
/// and clinical time, the body as the record's metadata. medledger creates every record
/// `active` (a status is a later event), and the author is the caller's token.
pub fn medledger_request(r: &PeerRecord) -> String {
    let text = |t: &str| serde_json::to_string(t).expect("a string serialises");
    format!(
        r#"{{"patient_id":{},"hospital_id":{},"record_type":{},"created_at":"{}","metadata":{}}}"#,
        text(&r.patient_id),
        text(&r.hospital_id),
        text(&r.record_type),
        medledger_created_at(r.created_at_micros),
        String::from_utf8_lossy(&r.body)
    )
}

/// A clinical time (microseconds since the Unix epoch) as medledger's RFC 3339 text:
/// whole milliseconds, floored, which is what medledger keeps of any finer fraction.
pub fn medledger_created_at(micros: i64) -> String {
    medledger_chaincode::Timestamp::from_unix_ms(micros.div_euclid(1_000)).to_string()
}

/// What [`RecordGen`] generates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GenConfig {
    /// Equal configs give equal streams.
    pub seed: u64,
    /// Number of patients (≥ 1).
    pub patients: u32,
    /// Number of hospitals (≥ 1).
    pub hospitals: u32,
    /// Clinicians per hospital (≥ 1).
    pub clinicians_per_hospital: u32,
    /// Exact size of each record's JSON body, bytes (≥ 64).
    pub body_bytes: usize,
}

impl Default for GenConfig {
    fn default() -> Self {
        GenConfig {
            seed: 1,
            patients: 10_000,
            hospitals: 20,
            clinicians_per_hospital: 50,
            body_bytes: 1024,
        }
    }
}

/// The fixtures' record types and their shares in percent.
const TYPES: [(&str, u64); 8] = [
    ("vital_signs", 30),
    ("lab_result", 22),
    ("clinical_note", 20),
    ("prescription", 10),
    ("imaging", 6),
    ("immunization", 5),
    ("referral", 4),
    ("discharge_summary", 3),
];

/// 2026-01-01T00:00:00Z in microseconds.
const START_MICROS: i64 = 1_767_225_600_000_000;

/// A deterministic, endless stream of [`PeerRecord`]s.
///
/// Patients follow a power law: the patient of rank `r` is drawn with probability falling
/// like `r^(-2/3)` (as in medledger's fixtures), flattened at the head, ranks scattered over patient numbers by a
/// fixed multiplicative permutation. 90% of a patient's records come from their home
/// hospital. The clock advances 0..=200 ms per record; 30% of records are back-dated by
/// 1 s to 6 h, so `created_at` is not monotonic in the stream (as in real intake).
pub struct RecordGen {
    config: GenConfig,
    rng: SplitMix64,
    serial: u64,
    clock_micros: i64,
}

impl RecordGen {
    /// Panics if a count is zero or `body_bytes < 64`: a configuration bug.
    pub fn new(config: GenConfig) -> Self {
        assert!(config.patients >= 1 && config.hospitals >= 1);
        assert!(config.clinicians_per_hospital >= 1 && config.body_bytes >= 64);
        let rng = SplitMix64(config.seed ^ 0x6d65_646c_6564_6765);
        RecordGen {
            config,
            rng,
            serial: 0,
            clock_micros: START_MICROS,
        }
    }

    /// The first `n` records of the stream.
    pub fn take_records(&mut self, n: usize) -> Vec<PeerRecord> {
        (0..n).map(|_| self.next_record()).collect()
    }

    /// A patient drawn from the same skewed distribution the records use.
    pub fn patient(&mut self) -> String {
        let number = self.patient_number();
        patient_id(number)
    }

    fn patient_number(&mut self) -> u32 {
        let patients = u64::from(self.config.patients);
        // Inverse CDF of the density ∝ (x + c)^(-2/3) on [0, 1): a power law flattened at
        // the head by c, so the busiest of 10,000 patients gets ~0.2% of the records and
        // the top 1% about 10%.
        const C: f64 = 0.003;
        let (lo, hi) = (C.cbrt(), (1.0 + C).cbrt());
        let u = self.rng.unit();
        let x = (lo + u * (hi - lo)).powi(3) - C;
        let rank = (x.max(0.0) * patients as f64) as u64 % patients;
        // 2654435761 is prime; a patient count that is a multiple of it is not a config we use.
        ((rank * 2_654_435_761) % patients) as u32 + 1
    }

    fn next_record(&mut self) -> PeerRecord {
        self.serial += 1;
        self.clock_micros += (self.rng.next() % 200_001) as i64;
        let number = self.patient_number();
        let hospitals = self.config.hospitals;
        let home = (u64::from(number).wrapping_mul(0x9e37_79b9) % u64::from(hospitals)) as u32 + 1;
        let hospital = if self.rng.next().is_multiple_of(10) {
            (self.rng.next() % u64::from(hospitals)) as u32 + 1
        } else {
            home
        };
        let clinician = (self.rng.next() % u64::from(self.config.clinicians_per_hospital)) + 1;
        let record_type = self.pick_type();
        let status = match self.rng.next() % 100 {
            0..=84 => "active",
            85..=94 => "final",
            _ => "entered_in_error",
        };
        let created_at_micros = if self.rng.next() % 10 < 3 {
            let back = 1_000_000 + (self.rng.next() % (6 * 3_600_000_000)) as i64;
            self.clock_micros - back
        } else {
            self.clock_micros
        };
        let body = self.body(record_type);
        PeerRecord {
            record_id: format!("r-{:010}", self.serial),
            patient_id: patient_id(number),
            author_id: format!("dr-{hospital:04}-{clinician:03}"),
            hospital_id: format!("h-{hospital:04}"),
            record_type: record_type.to_string(),
            status: status.to_string(),
            created_at_micros,
            body,
        }
    }

    fn pick_type(&mut self) -> &'static str {
        let mut roll = self.rng.next() % 100;
        for (name, share) in TYPES {
            if roll < share {
                return name;
            }
            roll -= share;
        }
        unreachable!("the shares add up to 100")
    }

    /// A JSON object of exactly `body_bytes` bytes: a few coded fields, padded by a note of
    /// random lowercase letters (random so that no peer's compression flatters it).
    fn body(&mut self, record_type: &str) -> Vec<u8> {
        let code = self.rng.next() % 100_000;
        let value = self.rng.next() % 1_000;
        let head = format!(
            r#"{{"type":"{record_type}","code":"LOINC-{code:05}","value":{value},"unit":"mg/dL","note":""#
        );
        let tail = "\"}";
        let pad = self
            .config
            .body_bytes
            .saturating_sub(head.len() + tail.len());
        let mut body = head.into_bytes();
        let mut word = 0u64;
        for i in 0..pad {
            if i % 8 == 0 {
                word = self.rng.next();
            }
            body.push(b'a' + ((word >> ((i % 8) * 8)) as u8) % 26);
        }
        body.extend_from_slice(tail.as_bytes());
        body
    }
}

impl Iterator for RecordGen {
    type Item = PeerRecord;
    fn next(&mut self) -> Option<PeerRecord> {
        Some(self.next_record())
    }
}

fn patient_id(number: u32) -> String {
    format!("p-{number:07}")
}

/// SplitMix64: small, fast, deterministic on every platform.
#[derive(Clone, Debug)]
pub(crate) struct SplitMix64(pub(crate) u64);

impl SplitMix64 {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub(crate) fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_decode_round_trips_and_bodies_have_the_asked_size() {
        let mut gen = RecordGen::new(GenConfig {
            body_bytes: 256,
            ..GenConfig::default()
        });
        for record in gen.take_records(200) {
            assert_eq!(record.body.len(), 256);
            assert!(serde_json::from_slice::<serde_json::Value>(&record.body).is_ok());
            let bytes = record.encode();
            assert_eq!(bytes.len(), record.encoded_len());
            assert_eq!(PeerRecord::decode(&bytes).expect("decodes"), record);
            assert!(PeerRecord::decode(&bytes[..bytes.len() - 1]).is_err());
        }
    }

    #[test]
    fn created_at_is_medledger_text_of_the_floored_millisecond() {
        assert_eq!(medledger_created_at(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            medledger_created_at(START_MICROS + 999),
            "2026-01-01T00:00:00.000Z"
        );
        // 2024-02-29T23:59:59.999999Z, a leap day.
        assert_eq!(
            medledger_created_at(1_709_251_199_999_999),
            "2024-02-29T23:59:59.999Z"
        );
        assert_eq!(medledger_created_at(-1), "1969-12-31T23:59:59.999Z");
    }

    #[test]
    fn medledger_requests_carry_the_record() {
        let mut gen = RecordGen::new(GenConfig::default());
        let r = gen.take_records(1).remove(0);
        let req: serde_json::Value = serde_json::from_str(&medledger_request(&r)).unwrap();
        assert_eq!(req["patient_id"], r.patient_id.as_str());
        assert_eq!(req["hospital_id"], r.hospital_id.as_str());
        assert_eq!(req["record_type"], r.record_type.as_str());
        let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(req["metadata"], body);
        let line = medledger_request(&r);
        assert!(
            line.contains(std::str::from_utf8(&r.body).unwrap()),
            "the body verbatim"
        );
        assert_eq!(
            req["created_at"],
            medledger_created_at(r.created_at_micros).as_str()
        );
        let parsed =
            medledger_chaincode::Timestamp::parse_rfc3339(req["created_at"].as_str().unwrap())
                .unwrap();
        assert_eq!(parsed.unix_ms(), r.created_at_micros.div_euclid(1_000));
    }

    #[test]
    fn same_seed_same_stream_and_patients_are_skewed() {
        let a = RecordGen::new(GenConfig::default()).take_records(20_000);
        let b = RecordGen::new(GenConfig::default()).take_records(20_000);
        assert_eq!(a, b);
        let mut counts = std::collections::HashMap::new();
        for r in &a {
            *counts.entry(r.patient_id.clone()).or_insert(0u32) += 1;
        }
        let mut sorted: Vec<u32> = counts.into_values().collect();
        sorted.sort_unstable_by(|x, y| y.cmp(x));
        let top_1pct: u32 = sorted.iter().take(100).sum();
        // The top 1% of 10,000 patients hold ~10% of the records; the busiest < 0.5%.
        assert!(top_1pct > 1_600, "top 1% hold {top_1pct} of 20,000");
        assert!(sorted[0] < 100, "the busiest holds {} of 20,000", sorted[0]);
    }
}
