//! Golden vectors: a small chain holding every event type, its exact bytes, header
//! hashes, Merkle roots and tx hashes, committed under fixtures/golden/. A change to the
//! encoding (bincode, the header layout, the frame) shows up here as a failing test and
//! a visible diff. Regenerate deliberately with `MEDLEDGER_BLESS=1 cargo test`.

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

fn chain() -> Vec<Block> {
    let mut blocks = vec![Block::genesis(T0)];
    let reasons = [CutReason::Count, CutReason::Idle, CutReason::Timeout];
    for (i, envs) in events().into_iter().enumerate() {
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
            "txs": txs,
        }));
    }
    let doc = json!({
        "about": "medledger golden chain, block format 1: see docs/FORMAT.md. chain-v1.seg is a segment file holding these blocks' frames.",
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
        std::fs::write(dir.join("chain-v1.seg"), &segment).unwrap();
        std::fs::write(dir.join("chain-v1.json"), &doc).unwrap();
    }
    let committed_seg =
        std::fs::read(dir.join("chain-v1.seg")).expect("fixtures/golden/chain-v1.seg");
    let committed_doc =
        std::fs::read_to_string(dir.join("chain-v1.json")).expect("fixtures/golden/chain-v1.json");
    assert_eq!(
        doc, committed_doc,
        "the encoding changed: see the diff of fixtures/golden"
    );
    assert_eq!(segment, committed_seg, "the frame bytes changed");
}

#[test]
fn the_committed_golden_segment_opens_and_verifies() {
    let bytes = std::fs::read(golden_dir().join("chain-v1.seg")).unwrap();
    let fs = CrashFs::new();
    fs.set_contents(0, bytes);
    let index = tempfile::tempdir().unwrap();
    let (ledger, report) =
        Ledger::open_with(Arc::new(fs), index.path(), LedgerOptions::default()).unwrap();
    assert_eq!(report.reindexed_blocks, 4);
    assert!(!report.created);
    assert!(
        verify(&ledger, &|tx| Envelope::decode(tx)
            .map(drop)
            .map_err(|e| e.to_string()))
        .unwrap()
        .ok
    );
    let expected = chain();
    for b in &expected {
        assert_eq!(ledger.block(b.header.number).unwrap().as_ref(), Some(b));
    }
    // Every event type decodes back to what was written.
    let decoded: Vec<Vec<Envelope>> = expected[1..]
        .iter()
        .map(|b| b.txs.iter().map(|t| Envelope::decode(t).unwrap()).collect())
        .collect();
    assert_eq!(decoded, events());
}
