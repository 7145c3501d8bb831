//! Deterministic synthetic medical-record events, for benchmarks, load tests and demos.
//!
//! [`Fixtures::new`] turns a [`FixtureConfig`] into an endless stream of [`Envelope`]s.
//! The same config always yields the same envelopes, byte for byte, on every platform:
//! the generator uses only integer arithmetic (a xoshiro256** PRNG seeded by SplitMix64,
//! no floats, no hash-map iteration, no clock), and tx ids are derived, not minted.
//!
//! # The model
//!
//! - `hospitals` hospitals (`h-0007`), each with `clinicians_per_hospital` clinicians
//!   (`dr-0007-012`) and one data-protection officer (`dpo-0007`); `patients` patients
//!   (`p-0001234`). Numbers are 1-based and zero-padded to a minimum width.
//! - Each patient has one home hospital (a hash of the patient); 90% of their records are
//!   made there, 10% at another hospital.
//! - Patients are chosen by a power law: the patient of rank `r` (ranks are scattered over
//!   patient numbers by a fixed permutation) is picked with probability falling like
//!   `r^(-2/3)`, flattened at the head so the busiest patient gets ~0.07% of all events.
//!   The top 1% of patients hold ~19% of the records, the top 10% about half.
//! - Record types and their shares: `vital_signs` 30%, `lab_result` 22%,
//!   `clinical_note` 20%, `prescription` 10%, `imaging` 6%, `immunization` 5%,
//!   `referral` 4%, `discharge_summary` 3%. Every type but `vital_signs` carries a
//!   [`PayloadRef`] (a real CIDv0 over a random digest, a size typical of its content
//!   type, `application/fhir+json`, `application/pdf`, `application/dicom` or
//!   `text/plain`); metadata is a compact JSON object of ~50 to ~400 bytes.
//! - A synthetic clock starts at `config.start` (2026-01-01T00:00:00Z by default) and
//!   advances by a uniform 0..=`step_ms_max` ms before every event. Event times equal the
//!   submission time, except that 30% of records are created clinically 1 s to 6 h
//!   before they are submitted.
//! - Record ids are `r-` and a 10-digit serial: unique in one stream. Tx ids are UUIDv7:
//!   the synthetic millisecond, version 7, the RFC 9562 variant, then the event's serial
//!   number and 10 bits of the seed; they strictly increase along the stream.
//! - The submitter is always the actor named in the event: the author for records,
//!   amendments and status changes, the patient for grants and revocations, the hospital's
//!   `dpo-…` for erasures, the accessor for access logs.
//!
//! # The event mix
//!
//! Each event is drawn with these target shares: `RecordCreated` 70%, `RecordAmended`
//! 10%, `RecordStatusChanged` 5%, `AccessGranted` 3%, `AccessRevoked` 1%,
//! `PayloadErased` 1%, `RecordsRead` 10% (one record read). A follow-up that finds no suitable target (at
//! the start of a stream, or when a few picks hit unsuitable records) becomes a
//! `RecordCreated`, so creations run slightly above 70% at the very start and for tiny
//! configs.
//!
//! Every event is valid for the contract ([`medledger_chaincode::contract`]) when the stream is applied
//! in order from an empty state: amendments and status changes carry the record's
//! current version + 1 and never touch a record entered in error; status changes change
//! the status; erasures hit only unerased payloads; revocations name a live grant;
//! grants go to clinicians (never the patient) and expire after they are made; access
//! logs name the record's own patient.
//!
//! # Memory bound
//!
//! Constant in the stream length: follow-up events target only the last
//! `recent_records_max` created records (a ring of 32-byte slots, allocated up front:
//! 2 MiB at the default 65,536) and revoke only one of the last `live_grants_max` distinct
//! grants (a 12-byte entry in a list plus one in a hash set: ~160 KiB at the default
//! 4,096). Older records and grants are simply never touched again, which keeps the
//! stream valid. Nothing else grows, so 100M events run in the same memory as 1,000.

use std::collections::HashSet;

use medledger_chaincode::envelope::{Envelope, TxId};
use medledger_chaincode::event::{
    AccessGranted, AccessRevoked, Event, PayloadErased, PayloadRef, RecordAmended, RecordCreated,
    RecordStatus, RecordStatusChanged, RecordsRead, Sha256Digest,
};
use medledger_chaincode::limits::VERSION_MAX;
use medledger_chaincode::time::Timestamp;

/// What to generate. Every count must be at least 1 ([`Fixtures::new`] panics otherwise).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FixtureConfig {
    /// Selects the stream; equal configs give equal streams.
    pub seed: u64,
    /// Number of hospitals.
    pub hospitals: u32,
    /// Clinicians at each hospital.
    pub clinicians_per_hospital: u32,
    /// Number of patients.
    pub patients: u32,
    /// How many of the most recently created records follow-up events can target.
    pub recent_records_max: u32,
    /// How many live grants are remembered for revocations.
    pub live_grants_max: u32,
    /// The synthetic clock's start (before the first step).
    pub start: Timestamp,
    /// The clock advances by a uniform 0..=`step_ms_max` ms before each event.
    pub step_ms_max: u32,
}

/// 2026-01-01T00:00:00Z.
const START_2026: Timestamp = Timestamp::from_unix_ms(1_767_225_600_000);

impl Default for FixtureConfig {
    /// A regional network: 20 hospitals of 50 clinicians, 100,000 patients, about 10
    /// events a second of synthetic time (~116 days per 100M events).
    fn default() -> Self {
        FixtureConfig {
            seed: 20_260_101,
            hospitals: 20,
            clinicians_per_hospital: 50,
            patients: 100_000,
            recent_records_max: 65_536,
            live_grants_max: 4_096,
            start: START_2026,
            step_ms_max: 200,
        }
    }
}

/// An endless, deterministic stream of valid envelopes (see the module docs); take as
/// many as you need with `.take(n)`.
#[derive(Clone)]
pub struct Fixtures {
    config: FixtureConfig,
    rng: Rng,
    now_ms: i64,
    tx_serial: u64,
    record_serial: u64,
    /// Ring of the most recent records; `newest` is the index of the last one written.
    recent: Vec<Recent>,
    newest: usize,
    /// Distinct (patient, grantee) pairs known to hold a live grant; `granted` holds
    /// the same pairs for membership tests (only membership: its iteration order, which
    /// varies between runs, is never used).
    grants: Vec<LiveGrant>,
    granted: HashSet<LiveGrant>,
    /// Rank → patient permutation: `(rank * patient_mul + patient_add) % patients`.
    patient_mul: u64,
    patient_add: u64,
    home_salt: u64,
    /// 10 bits of the seed, in the low bits of every tx id.
    tx_tag: u64,
}

/// What follow-up events need to know about a recent record (32 bytes).
#[derive(Clone, Copy, Debug)]
struct Recent {
    serial: u64,
    patient: u32,
    hospital: u32,
    author: u32,
    version: u32,
    kind: u8,
    /// Indices into the type's TITLES and DEPARTMENTS: amendments keep them.
    title: u8,
    department: u8,
    status: RecordStatus,
    has_payload: bool,
    erased: bool,
}

/// A grant of `patient` to clinician `clinician` of `hospital` (all 0-based).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct LiveGrant {
    patient: u32,
    hospital: u32,
    clinician: u32,
}

/// Picks per follow-up event before it falls back to a creation.
const PICK_TRIES: u32 = 8;

const MINUTE_MS: u64 = 60_000;
const DAY_MS: u64 = 24 * 60 * MINUTE_MS;

impl Fixtures {
    /// A generator at the start of the stream `config` selects.
    ///
    /// # Panics
    /// If a count in `config` (hospitals, clinicians, patients, recent records, live
    /// grants) is 0: there would be nothing to generate events about.
    pub fn new(config: FixtureConfig) -> Fixtures {
        assert!(
            config.hospitals >= 1
                && config.clinicians_per_hospital >= 1
                && config.patients >= 1
                && config.recent_records_max >= 1
                && config.live_grants_max >= 1,
            "every count in a FixtureConfig must be at least 1: {config:?}"
        );
        let mut rng = Rng::new(config.seed);
        let n = u64::from(config.patients);
        // A multiplier coprime to n makes `rank * mul + add` a permutation of 0..n.
        let mut patient_mul = 1;
        for _ in 0..64 {
            let candidate = 1 + rng.below(n);
            if gcd(candidate, n) == 1 {
                patient_mul = candidate;
                break;
            }
        }
        let patient_add = rng.below(n);
        let home_salt = rng.next_u64();
        let tx_tag = mix64(config.seed) & 0x3ff;
        Fixtures {
            now_ms: config.start.unix_ms(),
            rng,
            tx_serial: 0,
            record_serial: 0,
            recent: Vec::with_capacity(config.recent_records_max as usize),
            newest: 0,
            grants: Vec::with_capacity(config.live_grants_max as usize),
            granted: HashSet::with_capacity(config.live_grants_max as usize),
            patient_mul,
            patient_add,
            home_salt,
            tx_tag,
            config,
        }
    }

    /// The tx id of the current event: UUIDv7 with the synthetic millisecond, then the
    /// 74 "random" bits holding the event serial (64 bits) and the seed tag (10 bits).
    fn tx_id(&self) -> TxId {
        let ms = (self.now_ms as u64) & ((1 << 48) - 1);
        let rand = (u128::from(self.tx_serial) << 10) | u128::from(self.tx_tag);
        let rand_a = (rand >> 62) & 0xfff;
        let rand_b = rand & ((1 << 62) - 1);
        let id = (u128::from(ms) << 80) | (0x7 << 76) | (rand_a << 64) | (0b10 << 62) | rand_b;
        TxId(id.to_be_bytes())
    }

    fn pick_patient(&mut self) -> u32 {
        let n = u64::from(self.config.patients);
        let rank = self.rng.power_law_rank(n);
        ((rank * self.patient_mul + self.patient_add) % n) as u32
    }

    fn home_hospital(&self, patient: u32) -> u32 {
        let h = mix64(u64::from(patient) ^ self.home_salt);
        ((u128::from(h) * u128::from(self.config.hospitals)) >> 64) as u32
    }

    /// `home` with probability 1 - `away_per_mille`/1000, else another hospital.
    fn hospital_near(&mut self, home: u32, away_per_mille: u64) -> u32 {
        let n = self.config.hospitals;
        if n > 1 && self.rng.chance(away_per_mille) {
            let other = u64::from(home) + 1 + self.rng.below(u64::from(n - 1));
            (other % u64::from(n)) as u32
        } else {
            home
        }
    }

    fn pick_clinician(&mut self) -> u32 {
        self.rng
            .below(u64::from(self.config.clinicians_per_hospital)) as u32
    }

    fn remember(&mut self, record: Recent) {
        if self.recent.len() < self.config.recent_records_max as usize {
            self.recent.push(record);
            self.newest = self.recent.len() - 1;
        } else {
            self.newest = (self.newest + 1) % self.recent.len();
            self.recent[self.newest] = record;
        }
    }

    /// A recent record that `fits`, favouring newer ones (follow-ups come soon after
    /// creation), or `None` after [`PICK_TRIES`] misses.
    fn pick_recent(&mut self, fits: impl Fn(&Recent) -> bool) -> Option<usize> {
        let len = self.recent.len();
        if len == 0 {
            return None;
        }
        for _ in 0..PICK_TRIES {
            let age = self.rng.recent_age(len as u64) as usize;
            let i = (self.newest + len - age) % len;
            if fits(&self.recent[i]) {
                return Some(i);
            }
        }
        None
    }

    fn create(&mut self, now: Timestamp) -> (String, Event) {
        let patient = self.pick_patient();
        let home = self.home_hospital(patient);
        let hospital = self.hospital_near(home, 100);
        let author = self.pick_clinician();
        let kind = self.rng.weighted(&TYPE_WEIGHTS);
        let created_at = if self.rng.chance(300) {
            let early_ms = 1_000 + self.rng.below(6 * 60 * MINUTE_MS);
            Timestamp(now.unix_ms() - early_ms as i64)
        } else {
            now
        };
        let serial = self.record_serial;
        self.record_serial += 1;
        let mut record = Recent {
            serial,
            patient,
            hospital,
            author,
            version: 1,
            kind: kind as u8,
            title: self.rng.below(TITLES[kind].len() as u64) as u8,
            department: self.rng.below(DEPARTMENTS[kind].len() as u64) as u8,
            status: RecordStatus::Active,
            has_payload: false,
            erased: false,
        };
        let metadata = self.metadata(&record);
        let payload = self.payload(kind);
        record.has_payload = payload.is_some();
        self.remember(record);
        let author_id = clinician_id(hospital, author);
        let event = Event::RecordCreated(RecordCreated {
            record_id: record_id(serial),
            patient_id: patient_id(patient),
            author_id: author_id.clone(),
            hospital_id: numbered("h-", u64::from(hospital) + 1, 4),
            record_type: RECORD_TYPES[kind].to_owned(),
            created_at,
            version: 1,
            metadata: metadata.into(),
            payload,
        });
        (author_id, event)
    }

    /// A clinician of the record's hospital: its author with probability
    /// `same_per_mille`/1000.
    fn record_clinician(&mut self, r: &Recent, same_per_mille: u64) -> String {
        let c = if self.rng.chance(same_per_mille) {
            r.author
        } else {
            self.pick_clinician()
        };
        clinician_id(r.hospital, c)
    }

    fn amend(&mut self, now: Timestamp) -> Option<(String, Event)> {
        let i = self.pick_recent(|r| r.status != RecordStatus::EnteredInError && below_max(r))?;
        let r = self.recent[i];
        let kind = usize::from(r.kind);
        let author_id = self.record_clinician(&r, 600);
        // Payload-bearing types: metadata only 50%, payload only 20%, both 30%.
        let (new_metadata, new_payload) = if PAYLOAD_TYPES[kind].is_empty() {
            (true, false)
        } else {
            match self.rng.weighted(&[50, 20, 30]) {
                0 => (true, false),
                1 => (false, true),
                _ => (true, true),
            }
        };
        let metadata = new_metadata.then(|| self.metadata(&r));
        let payload = if new_payload {
            self.payload(kind)
        } else {
            None
        };
        let slot = &mut self.recent[i];
        slot.version += 1;
        if payload.is_some() {
            slot.has_payload = true;
            slot.erased = false;
        }
        let event = Event::RecordAmended(RecordAmended {
            record_id: record_id(r.serial),
            version: slot.version,
            author_id: author_id.clone(),
            amended_at: now,
            reason: self.rng.pick(AMEND_REASONS).to_string().into(),
            metadata: metadata.map(Into::into),
            payload,
        });
        Some((author_id, event))
    }

    fn change_status(&mut self, now: Timestamp) -> Option<(String, Event)> {
        let i = self.pick_recent(|r| r.status != RecordStatus::EnteredInError && below_max(r))?;
        let r = self.recent[i];
        let author_id = self.record_clinician(&r, 500);
        let (status, reasons) = match (r.status, self.rng.chance(150)) {
            (_, true) => (RecordStatus::EnteredInError, ERROR_REASONS),
            (RecordStatus::Active, false) => (RecordStatus::Archived, ARCHIVE_REASONS),
            (_, false) => (RecordStatus::Active, REACTIVATE_REASONS),
        };
        let slot = &mut self.recent[i];
        slot.version += 1;
        slot.status = status;
        let event = Event::RecordStatusChanged(RecordStatusChanged {
            record_id: record_id(r.serial),
            version: slot.version,
            author_id: author_id.clone(),
            changed_at: now,
            status,
            reason: self.rng.pick(reasons).to_string().into(),
        });
        Some((author_id, event))
    }

    fn erase(&mut self, now: Timestamp) -> Option<(String, Event)> {
        let i = self.pick_recent(|r| r.has_payload && !r.erased && below_max(r))?;
        let slot = &mut self.recent[i];
        slot.version += 1;
        slot.erased = true;
        let r = *slot;
        let officer = numbered("dpo-", u64::from(r.hospital) + 1, 4);
        let event = Event::PayloadErased(PayloadErased {
            record_id: record_id(r.serial),
            version: r.version,
            erased_by: officer.clone(),
            erased_at: now,
            reason: self.rng.pick(ERASE_REASONS).to_string().into(),
        });
        Some((officer, event))
    }

    fn log_access(&mut self, now: Timestamp) -> Option<(String, Event)> {
        let i = self.pick_recent(|_| true)?;
        let r = self.recent[i];
        // 10% the patient through a portal, 75% a clinician of the record's hospital,
        // 15% a clinician elsewhere.
        let (accessor, purpose, role, hospital) = match self.rng.weighted(&[10, 75, 15]) {
            0 => (patient_id(r.patient), "patient_request", "patient", None),
            1 => (
                self.record_clinician(&r, 400),
                self.rng.pick(PURPOSES),
                "clinician",
                Some(numbered("h-", u64::from(r.hospital) + 1, 4)),
            ),
            _ => {
                let h = self.hospital_near(r.hospital, 1000);
                let c = self.pick_clinician();
                (
                    clinician_id(h, c),
                    self.rng.pick(PURPOSES),
                    "clinician",
                    Some(numbered("h-", u64::from(h) + 1, 4)),
                )
            }
        };
        let event = Event::RecordsRead(RecordsRead {
            patient_id: patient_id(r.patient),
            record_ids: vec![record_id(r.serial)],
            reader_id: accessor.clone(),
            reader_role: role.to_owned(),
            reader_hospital: hospital,
            what: "record".to_owned(),
            purpose: purpose.to_owned(),
            break_glass: None,
            read_at: now,
        });
        Some((accessor, event))
    }

    fn grant(&mut self, now: Timestamp) -> (String, Event) {
        let patient = self.pick_patient();
        let home = self.home_hospital(patient);
        let g = LiveGrant {
            patient,
            hospital: self.hospital_near(home, 700),
            clinician: self.pick_clinician(),
        };
        let expires_at = self.rng.chance(750).then(|| {
            let ms = (1 + self.rng.below(180)) * DAY_MS + self.rng.below(DAY_MS);
            Timestamp(now.unix_ms() + ms as i64)
        });
        let scope = if self.rng.chance(400) {
            Vec::new()
        } else {
            // 1 to 3 distinct types: stride 3 is coprime to the 8 types.
            let first = self.rng.below(RECORD_TYPES.len() as u64) as usize;
            let count = 1 + self.rng.below(3) as usize;
            (0..count)
                .map(|k| RECORD_TYPES[(first + 3 * k) % RECORD_TYPES.len()].to_owned())
                .collect()
        };
        // Track distinct pairs only: a second grant replaces the first in the contract,
        // so one revocation ends both. When full, forget a random one (it stays live).
        if !self.granted.contains(&g) {
            if self.grants.len() >= self.config.live_grants_max as usize {
                let victim = self.rng.below(self.grants.len() as u64) as usize;
                self.granted.remove(&self.grants.swap_remove(victim));
            }
            self.grants.push(g);
            self.granted.insert(g);
        }
        let patient_id = patient_id(patient);
        let event = Event::AccessGranted(AccessGranted {
            patient_id: patient_id.clone(),
            grantee_id: clinician_id(g.hospital, g.clinician),
            granted_by: patient_id.clone(),
            granted_at: now,
            expires_at,
            scope,
        });
        (patient_id, event)
    }

    fn revoke(&mut self, now: Timestamp) -> Option<(String, Event)> {
        if self.grants.is_empty() {
            return None;
        }
        let i = self.rng.below(self.grants.len() as u64) as usize;
        let g = self.grants.swap_remove(i);
        self.granted.remove(&g);
        let patient_id = patient_id(g.patient);
        let event = Event::AccessRevoked(AccessRevoked {
            patient_id: patient_id.clone(),
            grantee_id: clinician_id(g.hospital, g.clinician),
            revoked_by: patient_id.clone(),
            revoked_at: now,
        });
        Some((patient_id, event))
    }

    /// A compact JSON object describing `r`, ~50 to ~400 bytes: its title and department
    /// (fixed per record), then details drawn afresh for every version. Every string
    /// spliced in comes from the tables below; none needs escaping.
    fn metadata(&mut self, r: &Recent) -> String {
        let kind = usize::from(r.kind);
        let mut m = String::with_capacity(192);
        m.push_str("{\"title\":\"");
        m.push_str(TITLES[kind][usize::from(r.title)]);
        m.push_str("\",\"department\":\"");
        m.push_str(DEPARTMENTS[kind][usize::from(r.department)]);
        m.push('"');
        if kind == VITAL_SIGNS {
            self.vitals(&mut m);
            return m;
        }
        // Up to 4 distinct codes: consecutive entries of the type's list.
        let codes = CODES[kind];
        m.push_str(",\"codes\":[");
        let count = self.rng.below(codes.len().min(4) as u64 + 1) as usize;
        let first = self.rng.below(codes.len() as u64) as usize;
        for i in 0..count {
            if i > 0 {
                m.push(',');
            }
            m.push('"');
            m.push_str(codes[(first + i) % codes.len()]);
            m.push('"');
        }
        m.push(']');
        if let Some((key, values)) = EXTRAS[kind] {
            m.push_str(",\"");
            m.push_str(key);
            m.push_str("\":\"");
            m.push_str(self.rng.pick(values));
            m.push('"');
        }
        if self.rng.chance(500) {
            m.push_str(",\"encounter\":\"e-");
            push_num(&mut m, u64::from(r.hospital) + 1, 4);
            m.push('-');
            push_num(&mut m, self.rng.below(10_000_000), 7);
            m.push('"');
        }
        if self.rng.chance(400) {
            m.push_str(",\"priority\":\"");
            m.push_str(self.rng.pick(&["routine", "routine", "urgent", "stat"]));
            m.push('"');
        }
        if self.rng.chance(250) {
            m.push_str(",\"note\":\"");
            m.push_str(self.rng.pick(NOTES));
            m.push('"');
        }
        m.push('}');
        m
    }

    /// Appends plausible adult vital signs and closes the object.
    fn vitals(&mut self, m: &mut String) {
        m.push_str(",\"hr\":");
        push_num(m, 55 + self.rng.below(66), 1);
        m.push_str(",\"bp\":\"");
        push_num(m, 100 + self.rng.below(66), 1);
        m.push('/');
        push_num(m, 60 + self.rng.below(41), 1);
        m.push_str("\",\"rr\":");
        push_num(m, 12 + self.rng.below(13), 1);
        m.push_str(",\"spo2\":");
        push_num(m, 92 + self.rng.below(9), 1);
        let tenths = 360 + self.rng.below(30);
        m.push_str(",\"temp_c\":");
        push_num(m, tenths / 10, 1);
        m.push('.');
        push_num(m, tenths % 10, 1);
        m.push('}');
    }

    /// The payload reference of a new record or payload version of type `kind`, or
    /// `None` for types without a payload.
    fn payload(&mut self, kind: usize) -> Option<PayloadRef> {
        let types = PAYLOAD_TYPES[kind];
        if types.is_empty() {
            return None;
        }
        let content_type = self.rng.pick(types);
        // Log-uniform between base and base << bands, by content type.
        let (base, bands) = match content_type {
            "text/plain" => (256u64, 8),
            "application/fhir+json" => (1_024, 8),
            "application/pdf" => (32 * 1_024, 8),
            _ => (512 * 1_024, 10),
        };
        let low = base << self.rng.below(bands);
        let size = low + self.rng.below(low);
        let mut digest = [0u8; 32];
        self.rng.fill(&mut digest);
        let mut sha256 = [0u8; 32];
        self.rng.fill(&mut sha256);
        let mut key_id = String::with_capacity(18);
        key_id.push_str("k-");
        push_hex(&mut key_id, self.rng.next_u64());
        Some(PayloadRef {
            cid: cid_v0(&digest),
            size,
            sha256: Sha256Digest(sha256),
            key_id,
            content_type: content_type.to_owned(),
        })
    }
}

fn below_max(r: &Recent) -> bool {
    r.version < VERSION_MAX
}

impl Iterator for Fixtures {
    type Item = Envelope;

    /// The next envelope; never `None`.
    fn next(&mut self) -> Option<Envelope> {
        self.now_ms += self.rng.below(u64::from(self.config.step_ms_max) + 1) as i64;
        let now = Timestamp(self.now_ms);
        // Per mille: 700 created, 100 amended, 50 status, 30 granted, 10 revoked,
        // 10 erased, 100 logged. A follow-up without a target becomes a creation.
        let roll = self.rng.below(1_000);
        let followup = match roll {
            0..700 => None,
            700..800 => self.amend(now),
            800..850 => self.change_status(now),
            850..880 => Some(self.grant(now)),
            880..890 => self.revoke(now),
            890..900 => self.erase(now),
            _ => self.log_access(now),
        };
        let (submitter, event) = followup.unwrap_or_else(|| self.create(now));
        let tx_id = self.tx_id();
        self.tx_serial += 1;
        Some(Envelope {
            tx_id,
            submitter,
            submitted_at: now,
            event,
        })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (usize::MAX, None)
    }
}

impl std::iter::FusedIterator for Fixtures {}

// ---- ids ----

/// `prefix` then `n` zero-padded to at least `width` digits.
fn numbered(prefix: &str, n: u64, width: usize) -> String {
    let mut s = String::with_capacity(prefix.len() + width.max(10) + 4);
    s.push_str(prefix);
    push_num(&mut s, n, width);
    s
}

fn clinician_id(hospital: u32, clinician: u32) -> String {
    let mut s = numbered("dr-", u64::from(hospital) + 1, 4);
    s.push('-');
    push_num(&mut s, u64::from(clinician) + 1, 3);
    s
}

fn patient_id(patient: u32) -> String {
    numbered("p-", u64::from(patient) + 1, 7)
}

fn record_id(serial: u64) -> String {
    numbered("r-", serial + 1, 10)
}

/// Appends `n` in decimal, zero-padded to at least `width` (at most 20) digits.
fn push_num(out: &mut String, mut n: u64, width: usize) {
    let mut buf = [b'0'; 20];
    let mut start = buf.len();
    loop {
        start -= 1;
        buf[start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    let start = start.min(buf.len() - width.min(buf.len()));
    out.push_str(ascii(&buf[start..]));
}

/// `bytes` as text; every caller passes ASCII digits or base-58 letters.
fn ascii(bytes: &[u8]) -> &str {
    std::str::from_utf8(bytes).expect("generated ids are ASCII")
}

/// Appends `n` as 16 lowercase hex digits.
fn push_hex(out: &mut String, n: u64) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.extend(
        (0..16)
            .rev()
            .map(|i| char::from(HEX[((n >> (4 * i)) & 0xf) as usize])),
    );
}

const BASE58: &[u8; 58] = b"123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";

/// The CIDv0 of a sha2-256 digest: base58btc of the multihash `0x12 0x20 digest`, which
/// is always 46 characters starting `Qm`. Integer long division by 58^5 over 32-bit
/// limbs, so it costs ~100 divisions rather than one per byte per digit.
fn cid_v0(digest: &[u8; 32]) -> String {
    const CHUNK: u64 = 58 * 58 * 58 * 58 * 58;
    let mut limbs = [0u32; 9];
    limbs[0] = 0x1220;
    for (limb, bytes) in limbs[1..].iter_mut().zip(digest.chunks_exact(4)) {
        *limb = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    }
    // 272 bits need 47 base-58 digits at most: 10 chunks of 5 (least significant first).
    let mut digits = [0u8; 50];
    let mut top = 0; // limbs[..top] are zero: the quotient shrinks by ~29 bits a pass
    for chunk in digits.chunks_exact_mut(5) {
        let mut rem = 0u64;
        while top < limbs.len() && limbs[top] == 0 {
            top += 1;
        }
        for limb in limbs[top..].iter_mut() {
            let cur = (rem << 32) | u64::from(*limb);
            *limb = (cur / CHUNK) as u32;
            rem = cur % CHUNK;
        }
        for d in chunk {
            *d = (rem % 58) as u8;
            rem /= 58;
        }
    }
    assert!(
        limbs.iter().all(|&l| l == 0),
        "272 bits fit in 50 base-58 digits"
    );
    let len = digits.iter().rposition(|&d| d != 0).map_or(0, |i| i + 1);
    let mut text = [0u8; 50];
    for (t, &d) in text.iter_mut().zip(digits[..len].iter().rev()) {
        *t = BASE58[usize::from(d)];
    }
    ascii(&text[..len]).to_owned()
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

// ---- the PRNG ----

/// SplitMix64's output function: a bijective 64-bit mixer.
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// xoshiro256** (Blackman and Vigna), seeded by SplitMix64. Integer arithmetic only, so
/// every platform draws the same numbers.
#[derive(Clone, Debug)]
struct Rng {
    s: [u64; 4],
}

impl Rng {
    fn new(seed: u64) -> Rng {
        let mut x = seed;
        let mut s = [0u64; 4];
        for word in &mut s {
            x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
            *word = mix64(x);
        }
        Rng { s }
    }

    fn next_u64(&mut self) -> u64 {
        let result = self.s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        result
    }

    /// Uniform in `0..n` for `n >= 1` (Lemire's multiply-shift; the bias, below
    /// n / 2^64, is irrelevant here).
    fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    fn chance(&mut self, per_mille: u64) -> bool {
        self.below(1_000) < per_mille
    }

    fn pick(&mut self, items: &[&'static str]) -> &'static str {
        items[self.below(items.len() as u64) as usize]
    }

    /// An index into `weights`, drawn in proportion to them.
    fn weighted(&mut self, weights: &[u32]) -> usize {
        let total: u64 = weights.iter().map(|&w| u64::from(w)).sum();
        let mut roll = self.below(total);
        for (i, &w) in weights.iter().enumerate() {
            if roll < u64::from(w) {
                return i;
            }
            roll -= u64::from(w);
        }
        unreachable!("roll < total = the sum of the weights")
    }

    fn fill(&mut self, out: &mut [u8; 32]) {
        for chunk in out.chunks_exact_mut(8) {
            chunk.copy_from_slice(&self.next_u64().to_le_bytes());
        }
    }

    /// A rank in `0..n` (n < 2^32) from a power law: `n·(u³ + u/64)/(1 + 1/64)` for `u`
    /// uniform in [0, 1), in 96-bit fixed point. The cube gives a density falling like
    /// `x^(-2/3)`; the linear term caps the head so no rank gets more than ~65/n.
    fn power_law_rank(&mut self, n: u64) -> u64 {
        const SIXTY_FOUR_65THS: u128 = (64 << 32) / 65; // 64/65 in 32-bit fixed point
        let u = u128::from(self.next_u64() >> 32);
        let x = u * u * u + (u << 58); // < 2^96 · 65/64
        let x = (x >> 32) * SIXTY_FOUR_65THS; // < 2^96
        ((x * u128::from(n)) >> 96) as u64
    }

    /// An age in `0..len` for picking a recent record: `len·u²`, so half the picks fall
    /// on the newest quarter.
    fn recent_age(&mut self, len: u64) -> u64 {
        let u = self.next_u64() >> 32;
        ((u128::from(u * u) * u128::from(len)) >> 64) as u64
    }
}

// ---- vocabulary ----

const VITAL_SIGNS: usize = 5;

/// The record types every generator here uses (`workload` too), in a fixed order.
pub(crate) const RECORD_TYPES: [&str; 8] = [
    "clinical_note",
    "lab_result",
    "imaging",
    "prescription",
    "discharge_summary",
    "vital_signs",
    "referral",
    "immunization",
];

/// Shares of [`RECORD_TYPES`] in percent.
const TYPE_WEIGHTS: [u32; 8] = [20, 22, 6, 10, 3, 30, 4, 5];

const FHIR: &str = "application/fhir+json";
const PAYLOAD_TYPES: [&[&str]; 8] = [
    &["text/plain", FHIR],
    &[FHIR],
    &["application/dicom"],
    &[FHIR],
    &["application/pdf"],
    &[],
    &["application/pdf"],
    &[FHIR],
];

const TITLES: [&[&str]; 8] = [
    &[
        "Progress note",
        "Admission note",
        "Consultation note",
        "Operative note",
        "Nursing note",
    ],
    &[
        "Complete blood count",
        "Basic metabolic panel",
        "HbA1c",
        "Lipid panel",
        "Urinalysis",
        "C-reactive protein",
        "TSH",
    ],
    &[
        "Chest X-ray",
        "CT abdomen with contrast",
        "MRI brain",
        "Knee MRI",
        "Abdominal ultrasound",
    ],
    &[
        "Metformin 500 mg",
        "Amoxicillin 875 mg",
        "Lisinopril 10 mg",
        "Atorvastatin 20 mg",
        "Omeprazole 20 mg",
    ],
    &["Discharge summary", "Transfer summary"],
    &["Vital signs"],
    &[
        "Referral to cardiology",
        "Referral to physiotherapy",
        "Referral to oncology",
        "Referral to dermatology",
    ],
    &[
        "Influenza vaccine",
        "COVID-19 booster",
        "Tetanus-diphtheria",
        "Hepatitis B dose 2",
        "MMR",
    ],
];

const DEPARTMENTS: [&[&str]; 8] = [
    &[
        "internal_medicine",
        "emergency",
        "cardiology",
        "pediatrics",
        "oncology",
        "neurology",
    ],
    &["laboratory", "laboratory", "emergency", "internal_medicine"],
    &["radiology"],
    &[
        "general_practice",
        "internal_medicine",
        "cardiology",
        "pediatrics",
    ],
    &["internal_medicine", "surgery", "orthopedics", "cardiology"],
    &[
        "emergency",
        "intensive_care",
        "internal_medicine",
        "pediatrics",
        "surgery",
    ],
    &["general_practice", "internal_medicine", "emergency"],
    &["general_practice", "pediatrics", "occupational_health"],
];

const ICD10: &[&str] = &[
    "I10", "E11.9", "J45.909", "M54.5", "N39.0", "J18.9", "I48.91", "F32.9", "K21.9", "R07.9",
];
const CODES: [&[&str]; 8] = [
    ICD10,
    &[
        "718-7", "2345-7", "4548-4", "2093-3", "5811-5", "1988-5", "3016-3", "6690-2",
    ],
    &["71046", "74177", "70551", "73721", "76700"],
    &["860975", "308191", "314076", "617314", "745679"],
    ICD10,
    &[],
    ICD10,
    &["141", "208", "115", "08", "03"],
];

const EXTRAS: [Option<(&str, &[&str])>; 8] = [
    None,
    Some(("status", &["final", "final", "preliminary", "corrected"])),
    Some(("modality", &["CR", "CT", "MR", "US"])),
    Some((
        "dosage",
        &[
            "1 tablet twice daily",
            "1 tablet daily",
            "1 tablet three times daily",
        ],
    )),
    None,
    None,
    Some(("urgency", &["routine", "soon", "urgent"])),
    Some(("site", &["left deltoid", "right deltoid"])),
];

const NOTES: &[&str] = &[
    "Patient stable, continue current plan.",
    "Follow up in two weeks; repeat labs before the visit.",
    "Discussed results with the patient and family; questions answered, consent documented.",
    "No known drug allergies. Reviewed medication list with the patient, no interactions found. Advised on diet, exercise and smoking cessation; leaflet given.",
    "Findings consistent with prior study, no acute change.",
];

const AMEND_REASONS: &[&str] = &[
    "corrected medication list",
    "added interpretation",
    "updated diagnosis code",
    "typo correction",
    "addendum after review",
    "attached final report",
];
const ARCHIVE_REASONS: &[&str] = &["episode closed", "superseded by newer result"];
const REACTIVATE_REASONS: &[&str] = &["reopened for follow-up"];
const ERROR_REASONS: &[&str] = &["wrong patient", "duplicate entry", "documented in error"];
const ERASE_REASONS: &[&str] = &[
    "patient erasure request (GDPR art. 17)",
    "retention period expired",
    "court order",
];
/// Drawn from `medledger_chaincode::READ_PURPOSES`.
const PURPOSES: &[&str] = &[
    "treatment",
    "treatment",
    "treatment",
    "emergency",
    "payment",
    "operations",
];

const _: () = assert!(TYPE_WEIGHTS.len() == RECORD_TYPES.len());
const _: () = assert!(std::mem::size_of::<Recent>() == 32);

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, HashSet};

    use sha2::{Digest, Sha256};

    use super::*;
    use medledger_chaincode::contract::{
        apply_grant_event, apply_record_event, GrantState, RecordState,
    };
    use medledger_chaincode::event::EventKind;

    /// A config so small that the ring, the grant set and the fallbacks are all busy.
    fn tiny() -> FixtureConfig {
        FixtureConfig {
            seed: 7,
            hospitals: 2,
            clinicians_per_hospital: 2,
            patients: 10,
            recent_records_max: 16,
            live_grants_max: 4,
            ..FixtureConfig::default()
        }
    }

    #[test]
    fn same_seed_same_bytes_other_seed_differs() {
        let a: Vec<Vec<u8>> = Fixtures::new(FixtureConfig::default())
            .take(20_000)
            .map(|e| e.encode())
            .collect();
        let b: Vec<Vec<u8>> = Fixtures::new(FixtureConfig::default())
            .take(20_000)
            .map(|e| e.encode())
            .collect();
        assert_eq!(a, b);
        let other = FixtureConfig {
            seed: 1,
            ..FixtureConfig::default()
        };
        let c: Vec<Vec<u8>> = Fixtures::new(other)
            .take(20_000)
            .map(|e| e.encode())
            .collect();
        assert_ne!(a[0], c[0]);
        let same = a.iter().zip(&c).filter(|(x, y)| x == y).count();
        assert_eq!(same, 0, "another seed gives another stream");
    }

    /// The actor an event names, which must be its submitter.
    fn actor(event: &Event) -> &str {
        match event {
            Event::RecordCreated(e) => &e.author_id,
            Event::RecordAmended(e) => &e.author_id,
            Event::RecordStatusChanged(e) => &e.author_id,
            Event::AccessGranted(e) => &e.granted_by,
            Event::AccessRevoked(e) => &e.revoked_by,
            Event::PayloadErased(e) => &e.erased_by,
            Event::AccessLogged(e) => &e.accessor_id,
            Event::RecordsRead(e) => &e.reader_id,
        }
    }

    /// Applies `n` events of `config` to a model of the views; panics on the first event
    /// the contract (or the limits, or the codec) rejects.
    fn apply_all(config: FixtureConfig, n: usize) {
        let mut records: HashMap<String, RecordState> = HashMap::new();
        let mut grants: HashMap<(String, String), GrantState> = HashMap::new();
        let mut last: Option<Envelope> = None;
        for (i, env) in Fixtures::new(config).take(n).enumerate() {
            assert_eq!(env.check_limits(), Ok(()), "event {i}: {env:?}");
            assert_eq!(Envelope::decode(&env.encode()).as_ref(), Ok(&env));
            assert_eq!(env.submitter, actor(&env.event), "event {i}");
            let id = u128::from_be_bytes(env.tx_id.0);
            assert_eq!((id >> 76) & 0xf, 7, "version nibble");
            assert_eq!((id >> 62) & 0b11, 0b10, "RFC 9562 variant");
            assert_eq!((id >> 80) as i64, env.submitted_at.unix_ms());
            if let Some(prev) = &last {
                assert!(
                    env.submitted_at >= prev.submitted_at,
                    "the clock never goes back"
                );
                assert!(env.tx_id > prev.tx_id, "tx ids strictly increase");
            }
            match &env.event {
                Event::RecordCreated(e) => {
                    assert!(e.created_at <= env.submitted_at);
                    check_metadata(e.metadata.as_plain().unwrap());
                    if let Some(p) = &e.payload {
                        assert!(p.cid.len() == 46 && p.cid.starts_with("Qm"), "{}", p.cid);
                    }
                }
                Event::RecordAmended(e) => {
                    assert!(
                        e.metadata.is_some() || e.payload.is_some(),
                        "changes something"
                    );
                    e.metadata
                        .as_ref()
                        .and_then(medledger_chaincode::Clinical::as_plain)
                        .map(check_metadata);
                }
                _ => {}
            }
            if let Event::RecordsRead(e) = &env.event {
                // A read changes nothing; it names existing records of its patient.
                for id in &e.record_ids {
                    let r = records
                        .get(id)
                        .unwrap_or_else(|| panic!("event {i} reads an unknown record"));
                    assert_eq!(r.patient_id, e.patient_id, "event {i}");
                }
            } else if let Some(record_id) = env.event.record_id() {
                let next = apply_record_event(records.get(record_id), &env.event)
                    .unwrap_or_else(|e| panic!("event {i} rejected: {e}: {env:?}"));
                records.insert(record_id.to_owned(), next);
            } else {
                let key = match &env.event {
                    Event::AccessGranted(e) => (e.patient_id.clone(), e.grantee_id.clone()),
                    Event::AccessRevoked(e) => (e.patient_id.clone(), e.grantee_id.clone()),
                    other => unreachable!("{other:?} has no record id"),
                };
                match apply_grant_event(grants.get(&key), &env.event) {
                    Ok(Some(g)) => grants.insert(key, g),
                    Ok(None) => grants.remove(&key),
                    Err(e) => panic!("event {i} rejected: {e}: {env:?}"),
                };
            }
            last = Some(env);
        }
    }

    fn check_metadata(m: &str) {
        let value: serde_json::Value = serde_json::from_str(m).expect("metadata is JSON");
        assert!(value.is_object(), "{m}");
        assert!((40..=400).contains(&m.len()), "{} bytes: {m}", m.len());
    }

    #[test]
    fn every_event_is_accepted_by_the_contract() {
        apply_all(FixtureConfig::default(), 200_000);
    }

    #[test]
    fn a_tiny_config_stays_valid() {
        apply_all(tiny(), 50_000);
    }

    #[test]
    fn event_mix_matches_targets_and_ids_are_unique() {
        let n = 100_000;
        let mut kinds: HashMap<EventKind, u32> = HashMap::new();
        let mut record_ids = HashSet::new();
        let mut tx_ids = HashSet::new();
        for env in Fixtures::new(FixtureConfig::default()).take(n) {
            *kinds.entry(env.event.kind()).or_default() += 1;
            assert!(tx_ids.insert(env.tx_id), "duplicate tx id {}", env.tx_id);
            if let Event::RecordCreated(e) = env.event {
                assert!(record_ids.insert(e.record_id), "duplicate record id");
            }
        }
        let targets_per_mille = [
            (EventKind::RecordCreated, 700.0),
            (EventKind::RecordAmended, 100.0),
            (EventKind::RecordStatusChanged, 50.0),
            (EventKind::AccessGranted, 30.0),
            (EventKind::AccessRevoked, 10.0),
            (EventKind::PayloadErased, 10.0),
            (EventKind::RecordsRead, 100.0),
        ];
        for (kind, target) in targets_per_mille {
            let got = f64::from(kinds.get(&kind).copied().unwrap_or(0)) * 1_000.0 / n as f64;
            // 15% of the target is over 5 standard deviations even for the 1% kinds.
            assert!(
                (got - target).abs() <= target * 0.15,
                "{}: {got:.1} per mille, target {target}",
                kind.as_str()
            );
        }
    }

    #[test]
    fn a_few_patients_hold_many_records() {
        let config = FixtureConfig::default();
        let patients = config.patients as usize;
        let mut per_patient: HashMap<String, HashMap<String, u32>> = HashMap::new();
        let mut total = 0u32;
        for env in Fixtures::new(config).take(100_000) {
            if let Event::RecordCreated(e) = env.event {
                *per_patient
                    .entry(e.patient_id)
                    .or_default()
                    .entry(e.hospital_id)
                    .or_default() += 1;
                total += 1;
            }
        }
        let mut counts: Vec<u32> = per_patient.values().map(|h| h.values().sum()).collect();
        counts.sort_unstable_by(|a, b| b.cmp(a));
        let top: u32 = counts.iter().take(patients / 100).sum();
        let share = f64::from(top) / f64::from(total);
        assert!(
            share > 0.10,
            "top 1% of patients hold {share:.3} of records"
        );
        let busiest = f64::from(counts[0]) / f64::from(total);
        assert!(busiest < 0.01, "the busiest patient holds {busiest:.4}");
        // A patient's records are mostly at one (home) hospital.
        let (mut home, mut all) = (0, 0);
        for hospitals in per_patient.values() {
            let n: u32 = hospitals.values().sum();
            if n >= 20 {
                home += hospitals.values().max().copied().unwrap_or(0);
                all += n;
            }
        }
        assert!(all > 0);
        let home_share = f64::from(home) / f64::from(all);
        assert!(home_share > 0.85, "home-hospital share {home_share:.3}");
    }

    /// SHA-256 of the concatenated canonical bytes of the first 1,000 envelopes of the
    /// default config. Any change to the generator (the PRNG, the order of draws, a table,
    /// an id format) or to the envelope encoding changes it: that is the point, since
    /// benchmarks and demos rely on a seed meaning the same events forever. If a change is
    /// intended, paste the new value printed by the failure here AND regenerate the
    /// committed sample of generated events, so the change shows up as a reviewed diff.
    const GOLDEN_FIRST_1000_SHA256: &str =
        "b70ac5b3bcee6fd1a08c7851c55cdbf66fab76a30c0abf1f88828bc962882f6e";

    #[test]
    fn first_thousand_events_match_golden_hash() {
        let mut hasher = Sha256::new();
        for env in Fixtures::new(FixtureConfig::default()).take(1_000) {
            hasher.update(env.encode());
        }
        let got = hex::encode(hasher.finalize());
        assert_eq!(
            got, GOLDEN_FIRST_1000_SHA256,
            "the generator's output changed"
        );
    }

    /// The textbook base58 encoder: one pass over the output per input byte.
    fn base58_reference(bytes: &[u8]) -> String {
        let mut digits: Vec<u32> = Vec::new();
        for &b in bytes {
            let mut carry = u32::from(b);
            for d in digits.iter_mut() {
                carry += *d << 8;
                *d = carry % 58;
                carry /= 58;
            }
            while carry > 0 {
                digits.push(carry % 58);
                carry /= 58;
            }
        }
        let zeros = bytes.iter().take_while(|&&b| b == 0).count();
        let mut out = "1".repeat(zeros);
        out.extend(digits.iter().rev().map(|&d| char::from(BASE58[d as usize])));
        out
    }

    #[test]
    fn cid_is_base58_of_the_sha256_multihash() {
        assert_eq!(base58_reference(b"Hello World!"), "2NEpo7TZRRrLZSi2U");
        let mut rng = Rng::new(3);
        let mut digests = vec![[0u8; 32], [0xff; 32]];
        for _ in 0..200 {
            let mut d = [0u8; 32];
            rng.fill(&mut d);
            digests.push(d);
        }
        for d in digests {
            let mut multihash = vec![0x12, 0x20];
            multihash.extend_from_slice(&d);
            let cid = cid_v0(&d);
            assert_eq!(cid, base58_reference(&multihash));
            assert!(cid.len() == 46 && cid.starts_with("Qm"), "{cid}");
        }
    }

    #[test]
    fn ids_have_the_documented_shape() {
        assert_eq!(clinician_id(6, 11), "dr-0007-012");
        assert_eq!(patient_id(1_233), "p-0001234");
        assert_eq!(record_id(0), "r-0000000001");
        assert_eq!(numbered("h-", 12_345, 4), "h-12345");
        let mut s = String::new();
        push_hex(&mut s, 0x0123_4567_89ab_cdef);
        assert_eq!(s, "0123456789abcdef");
    }
}
