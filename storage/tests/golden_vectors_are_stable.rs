//! Golden vectors: a small chain holding every event type, its exact bytes, header
//! hashes, Merkle roots and tx hashes, committed under fixtures/golden/. A change to the
//! encoding (bincode, the header layout, the frame) shows up here as a failing test and
//! a visible diff. Regenerate deliberately with `MEDLEDGER_BLESS=1 cargo test`.
//!
//! `chain-v2.*` is what this code writes (block format 2, clinical text sealed);
//! `chain-v1.*` is frozen: the same chain as format 1 wrote it (clinical text in the
//! clear), which must keep opening and verifying (read old, write new). Blessing never
//! rewrites it.

use std::path::PathBuf;
use std::sync::Arc;

use medledger_chaincode::*;
use medledger_storage::ledger::crashfs::CrashFs;
use medledger_storage::ledger::segment::encode_frame;
use medledger_storage::ledger::verify::verify;
use medledger_storage::{Block, CutReason, Ledger, LedgerOptions};
use serde_json::json;

const T0: i64 = 1_795_428_000_000; // 2026-11-23T10:00:00Z

fn env(n: u8, event: Event) -> Envelope {
    Envelope {
        tx_id: TxId([
            0x01, 0x9a, 0xb0, 0x00, 0, 0, 0x70, 0, 0x80, 0, 0, 0, 0, 0, 0, n,
        ]),
        submitter: "dr-1".into(),
        submitted_at: Timestamp(T0 + i64::from(n)),
        event,
    }
}

fn events() -> Vec<Vec<Envelope>> {
    let payload = PayloadRef {
        cid: "QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5o".into(),
        size: 12,
        sha256: Sha256Digest([0xab; 32]),
        key_id: "k-1".into(),
        content_type: "application/fhir+json".into(),
    };
    vec![
        vec![
            env(
                1,
                Event::RecordCreated(RecordCreated {
                    record_id: "r-1".into(),
                    patient_id: "p-1".into(),
                    author_id: "dr-1".into(),
                    hospital_id: "h-1".into(),
                    record_type: "lab_result".into(),
                    created_at: Timestamp(T0),
                    version: 1,
                    metadata: r#"{"any":"small JSON object"}"#.into(),
                    payload: Some(payload.clone()),
                }),
            ),
            env(
                2,
                Event::AccessGranted(AccessGranted {
                    patient_id: "p-1".into(),
                    grantee_id: "dr-2".into(),
                    granted_by: "p-1".into(),
                    granted_at: Timestamp(T0 + 2),
                    expires_at: Some(Timestamp(T0 + 86_400_000)),
                    scope: vec!["lab_result".into(), "imaging".into()],
                }),
            ),
            env(
                3,
                Event::AccessLogged(AccessLogged {
                    record_id: "r-1".into(),
                    patient_id: "p-1".into(),
                    accessor_id: "dr-2".into(),
                    accessed_at: Timestamp(T0 + 3),
                    purpose: "treatment".into(),
                }),
            ),
        ],
        vec![env(
            4,
            Event::RecordAmended(RecordAmended {
                record_id: "r-1".into(),
                version: 2,
                author_id: "dr-1".into(),
                amended_at: Timestamp(T0 + 4),
                reason: "corrected units".into(),
                metadata: Some("{}".into()),
                payload: None,
            }),
        )],
        vec![
            env(
                5,
                Event::RecordStatusChanged(RecordStatusChanged {
                    record_id: "r-1".into(),
                    version: 3,
                    author_id: "dr-1".into(),
                    changed_at: Timestamp(T0 + 5),
                    status: RecordStatus::EnteredInError,
                    reason: "wrong patient".into(),
                }),
            ),
            env(
                6,
                Event::PayloadErased(PayloadErased {
                    record_id: "r-1".into(),
                    version: 4,
                    erased_by: "admin-1".into(),
                    erased_at: Timestamp(T0 + 6),
                    reason: "patient request".into(),
                }),
            ),
            env(
                7,
                Event::AccessRevoked(AccessRevoked {
                    patient_id: "p-1".into(),
                    grantee_id: "dr-2".into(),
                    revoked_by: "p-1".into(),
                    revoked_at: Timestamp(T0 + 7),
                }),
            ),
        ],
    ]
}

/// [`events`] as format 2 writes them: every clinical field sealed. The ciphertext here
/// is a placeholder of the right length (0xC1 bytes, nonce = the tx's last id byte); the
/// sealing itself has its own vector in the payload crate (`crypto::clinical`).
fn sealed_events() -> Vec<Vec<Envelope>> {
    let mut all = events();
    for env in all.iter_mut().flatten() {
        let n = env.tx_id.0[15];
        for (_, value) in env.event.clinical_fields_mut() {
            let len = value.text_len() + 16;
            *value = Clinical::Sealed(Sealed::new([n; 12], &vec![0xC1; len]));
        }
    }
    all
}

fn chain() -> Vec<Block> {
    let mut blocks = vec![Block::genesis(T0)];
    let reasons = [CutReason::Count, CutReason::Idle, CutReason::Timeout];
    for (i, envs) in sealed_events().into_iter().enumerate() {
        let prev = blocks.last().unwrap();
        let txs = envs.iter().map(Envelope::encode).collect();
        blocks.push(Block::from_txs(
            prev.header.number + 1,
            prev.hash(),
            T0 + 1_000 * (i as i64 + 1),
            reasons[i],
            txs,
        ));
    }
    blocks
}

fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures/golden")
}

fn render(blocks: &[Block]) -> (Vec<u8>, String) {
    let mut segment = Vec::new();
    let mut frame = Vec::new();
    let mut described = Vec::new();
    for b in blocks {
        encode_frame(b, &mut frame);
        let offset = segment.len();
        segment.extend_from_slice(&frame);
        let txs: Vec<_> = b
            .txs
            .iter()
            .map(|t| {
                let e = Envelope::decode(t).unwrap();
                json!({
                    "tx_id": e.tx_id.to_string(),
                    "type": e.event.kind().as_str(),
                    "tx_hash": hex::encode(tx_hash(t)),
                    "bytes": hex::encode(t),
                })
            })
            .collect();
        described.push(json!({
            "number": b.header.number,
            "frame_offset": offset,
            "frame_len": frame.len(),
            "header": hex::encode(b.header.encode()),
            "hash": hex::encode(b.hash()),
            "prev_hash": hex::encode(b.header.prev_hash),
            "data_hash": hex::encode(b.header.data_hash),
            "timestamp_ms": b.header.timestamp_ms,
            "cut_reason": b.header.cut_reason.as_str(),
            "format": b.header.format,
            "txs": txs,
        }));
    }
    let doc = json!({
        "about": "medledger golden chain, block format 2 (clinical text sealed; placeholder ciphertext): see docs/FORMAT.md. chain-v2.seg is a segment file holding these blocks' frames. chain-v1.* is the same chain as block format 1 wrote it, frozen.",
        "blocks": described,
    });
    (segment, serde_json::to_string_pretty(&doc).unwrap() + "\n")
}

#[test]
fn golden_chain_bytes_and_hashes_are_unchanged() {
    let (segment, doc) = render(&chain());
    let dir = golden_dir();
    if std::env::var_os("MEDLEDGER_BLESS").is_some() {
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("chain-v2.seg"), &segment).unwrap();
        std::fs::write(dir.join("chain-v2.json"), &doc).unwrap();
    }
    let committed_seg =
        std::fs::read(dir.join("chain-v2.seg")).expect("fixtures/golden/chain-v2.seg");
    let committed_doc =
        std::fs::read_to_string(dir.join("chain-v2.json")).expect("fixtures/golden/chain-v2.json");
    assert_eq!(
        doc, committed_doc,
        "the encoding changed: see the diff of fixtures/golden"
    );
    assert_eq!(segment, committed_seg, "the frame bytes changed");
}

#[test]
fn the_committed_golden_segments_open_and_verify() {
    for (file, format, expected) in [
        ("chain-v2.seg", FORMAT_SEALED, sealed_events()),
        ("chain-v1.seg", FORMAT_PLAIN, events()),
    ] {
        let bytes = std::fs::read(golden_dir().join(file)).unwrap();
        let fs = CrashFs::new();
        fs.set_contents(0, bytes);
        let index = tempfile::tempdir().unwrap();
        let (ledger, report) =
            Ledger::open_with(Arc::new(fs), index.path(), LedgerOptions::default()).unwrap();
        assert_eq!(report.reindexed_blocks, 4, "{file}");
        assert!(!report.created);
        let rule = |format: u8, tx: &[u8]| {
            Envelope::decode_in(format, tx)
                .map(drop)
                .map_err(|e| e.to_string())
        };
        assert!(verify(&ledger, &rule).unwrap().ok, "{file}");
        // Every event type decodes back to what was written, in its block's format.
        let mut decoded = Vec::new();
        for number in 1..4 {
            let block = ledger.block(number).unwrap().unwrap();
            assert_eq!(block.header.format, format, "{file}");
            decoded.push(
                block
                    .txs
                    .iter()
                    .map(|t| Envelope::decode_in(format, t).unwrap())
                    .collect::<Vec<_>>(),
            );
        }
        assert_eq!(decoded, expected, "{file}");
    }
    // A format-2 block's envelopes hold no clinical text in the clear, and the frozen
    // format-1 chain holds nothing sealed: each is refused under the other's rule.
    let plain = events()[0][0].clone();
    assert!(matches!(
        plain.check_format(FORMAT_SEALED),
        Err(DecodeError::ClinicalForm {
            field: "metadata",
            ..
        })
    ));
    let sealed = sealed_events()[0][0].clone();
    assert!(sealed.check_format(FORMAT_SEALED).is_ok());
    assert!(sealed.check_format(FORMAT_PLAIN).is_err());
}
