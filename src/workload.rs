//! Synthetic, realistic record events: what a hospital's clinicians submit. Deterministic
//! for a given index, except the tx id, which is a fresh UUIDv7 as the server would mint.

use medledger_chaincode::{
    Clinical, Envelope, Event, PayloadRef, RecordCreated, Sealed, Sha256Digest, Timestamp, TxId,
};

use crate::fixtures::RECORD_TYPES;
use medledger_payload::crypto::{seal_text, DataKey};

/// Builds `RecordCreated` envelopes whose canonical encoding is `record_bytes` long
/// (or as close above as the fixed fields allow). An event with a payload reference
/// (CID, size, SHA-256, key id, content type) needs about 350 bytes; below that the
/// generator makes metadata-only records (vital-signs style, no payload).
#[derive(Clone, Debug)]
pub struct RecordGenerator {
    padding: String,
    with_payload: bool,
}

const BASE_MS: i64 = 1_795_428_000_000;
/// Index of "discharge_summary", the longest record type name.
const LONGEST_TYPE_INDEX: u64 = 4;
const _: () = {
    let longest = RECORD_TYPES[LONGEST_TYPE_INDEX as usize].len();
    let mut i = 0;
    while i < RECORD_TYPES.len() {
        assert!(RECORD_TYPES[i].len() <= longest);
        i += 1;
    }
};

impl RecordGenerator {
    /// A generator for envelopes of about `record_bytes` bytes.
    pub fn new(record_bytes: usize) -> Self {
        // Probe with the longest record type; shorter types get the difference as padding.
        let probe = |with_payload| {
            RecordGenerator {
                padding: "x".repeat(RECORD_TYPES[LONGEST_TYPE_INDEX as usize].len()),
                with_payload,
            }
            .envelope(LONGEST_TYPE_INDEX)
            .encode()
            .len()
        };
        let with_payload = probe(true) <= record_bytes;
        let base = record_bytes.saturating_sub(probe(with_payload));
        RecordGenerator {
            padding: "x".repeat(base + RECORD_TYPES[LONGEST_TYPE_INDEX as usize].len()),
            with_payload,
        }
    }

    /// [`Self::envelope`] with its clinical text already sealed, under a key made for this
    /// process and kept nowhere: the form the orderer takes, for tests of the orderer and
    /// the ledger that have no key store (the text is never read back).
    pub fn sealed_envelope(&self, i: u64) -> Envelope {
        static KEY: std::sync::OnceLock<DataKey> = std::sync::OnceLock::new();
        let key = KEY.get_or_init(|| DataKey::generate().expect("the OS random source"));
        let mut env = self.envelope(i);
        let record_id = env.event.record_id().expect("a record event").to_owned();
        for (field, value) in env.event.clinical_fields_mut() {
            let text = value.as_plain().expect("generated in the clear").to_owned();
            let (nonce, sealed) = seal_text(key, &record_id, field, &text).expect("sealing");
            *value = Clinical::Sealed(Sealed::new(nonce, &sealed));
        }
        env
    }

    /// Envelope number `i`: record `r-{i}` of one of 10,000 patients in 20 hospitals,
    /// its metadata in the clear (as a client sends it; the server seals it).
    pub fn envelope(&self, i: u64) -> Envelope {
        let patient = i.wrapping_mul(2_654_435_761) % 10_000;
        let hospital = patient % 20;
        let author = (i.wrapping_mul(40_503) % 500) + hospital * 500;
        let ts = Timestamp(BASE_MS + i as i64);
        let record_type = RECORD_TYPES[(i % RECORD_TYPES.len() as u64) as usize];
        // `padding` is base + longest type length long: a shorter type takes more of it.
        let pad = &self.padding[..self.padding.len() - record_type.len()];
        let metadata = format!("{{\"enc\":\"{:010}\",\"note\":\"{pad}\"}}", i / 3);
        Envelope {
            tx_id: TxId(*uuid::Uuid::now_v7().as_bytes()),
            submitter: format!("dr-{author:04}"),
            submitted_at: ts,
            event: Event::RecordCreated(RecordCreated {
                record_id: format!("r-{i:010x}"),
                patient_id: format!("p-{patient:06}"),
                author_id: format!("dr-{author:04}"),
                hospital_id: format!("h-{hospital:03}"),
                record_type: record_type.to_string(),
                created_at: ts,
                version: 1,
                metadata: metadata.into(),
                payload: self.with_payload.then(|| PayloadRef {
                    cid: "QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5o".into(),
                    size: 4096 + i % 65_536,
                    sha256: Sha256Digest([(i % 251) as u8; 32]),
                    key_id: format!("k-{i:010x}"),
                    content_type: "application/fhir+json".into(),
                }),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_have_the_requested_size_and_pass_the_limits() {
        for bytes in [256usize, 1024, 4096] {
            let g = RecordGenerator::new(bytes);
            assert_eq!(g.with_payload, bytes >= 512);
            for i in [0u64, 7, 123_456_789] {
                let env = g.envelope(i);
                env.check_limits().unwrap();
                let len = env.encode().len();
                assert_eq!(len, bytes, "{bytes}");
            }
        }
    }
}
