//! Golden proof vectors under `fixtures/proofs/`, built over the storage golden chain
//! (`fixtures/golden/chain-v1.json`) with a fixed public test key, so a verifier in any
//! language can be checked against them. Any change to these bytes fails this test; run
//! it with `MEDLEDGER_BLESS=1` to rewrite them after an intended format change (and say
//! so in the commit).

mod common;

use std::path::{Path, PathBuf};

use medledger_proof::header::HeaderFields;
use medledger_proof::merkle::{self, Hash};
use medledger_proof::{
    build_consistency_proof, build_tx_proof, verify_json, CheckpointBody, CheckpointKey,
    VerifyError,
};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("proof/ is in the workspace")
        .to_path_buf()
}

fn h(text: &str) -> Hash {
    hex::decode(text).unwrap().try_into().unwrap()
}

/// The storage golden chain: header bytes and tx hashes of each block.
struct GoldenBlock {
    header: [u8; 88],
    tx_hashes: Vec<Hash>,
}

fn golden_chain() -> Vec<GoldenBlock> {
    let path = repo_root().join("fixtures/golden/chain-v1.json");
    let text = std::fs::read_to_string(&path).expect("fixtures/golden/chain-v1.json");
    let doc: Value = serde_json::from_str(&text).unwrap();
    doc["blocks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| GoldenBlock {
            header: hex::decode(b["header"].as_str().unwrap())
                .unwrap()
                .try_into()
                .unwrap(),
            tx_hashes: b["txs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| h(t["tx_hash"].as_str().unwrap()))
                .collect(),
        })
        .collect()
}

/// This crate's reading of the header agrees with what storage wrote.
#[test]
fn header_reading_matches_the_storage_golden_chain() {
    let path = repo_root().join("fixtures/golden/chain-v1.json");
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut prev = [0u8; 32];
    for (n, b) in doc["blocks"].as_array().unwrap().iter().enumerate() {
        let header = hex::decode(b["header"].as_str().unwrap()).unwrap();
        let fields = HeaderFields::parse(&header).unwrap();
        assert_eq!(fields.number, n as u64);
        assert_eq!(fields.number, b["number"].as_u64().unwrap());
        assert_eq!(fields.timestamp_ms, b["timestamp_ms"].as_i64().unwrap());
        assert_eq!(fields.prev_hash, h(b["prev_hash"].as_str().unwrap()));
        assert_eq!(fields.prev_hash, prev);
        assert_eq!(fields.data_hash, h(b["data_hash"].as_str().unwrap()));
        assert_eq!(fields.encode().to_vec(), header);
        let hash: Hash = Sha256::digest(&header).into();
        assert_eq!(hash, h(b["hash"].as_str().unwrap()));
        let txs = b["txs"].as_array().unwrap();
        assert_eq!(fields.tx_count as usize, txs.len());
        let tx_hashes: Vec<Hash> = txs
            .iter()
            .map(|t| {
                let bytes = hex::decode(t["bytes"].as_str().unwrap()).unwrap();
                let hash: Hash = Sha256::digest(&bytes).into();
                assert_eq!(hash, h(t["tx_hash"].as_str().unwrap()));
                hash
            })
            .collect();
        assert_eq!(merkle::root_of_hashes(&tx_hashes), fields.data_hash);
        prev = hash;
    }
}

fn pretty(v: &impl serde::Serialize) -> String {
    let mut text = serde_json::to_string_pretty(v).unwrap();
    text.push('\n');
    text
}

/// The golden files, built from scratch.
fn build_vectors() -> Vec<(&'static str, String)> {
    let key = CheckpointKey::from_seed(&common::TEST_SEED);
    let chain = golden_chain();
    let leaves: Vec<Hash> = chain
        .iter()
        .map(|b| merkle::leaf_hash(&Sha256::digest(b.header)))
        .collect();
    let checkpoint_of = |size: usize| {
        let last = HeaderFields::parse(&chain[size - 1].header).unwrap();
        key.sign(&CheckpointBody {
            tree_size: size as u64,
            root: merkle::root_from_leaf_hashes(&leaves[..size]),
            tip_hash: Sha256::digest(chain[size - 1].header).into(),
            height: size as u64,
            // Signed a quarter of a second after the tip block was cut.
            timestamp: last.timestamp_ms + 250,
        })
    };
    let size = chain.len();
    let checkpoint = checkpoint_of(size);
    let body = CheckpointBody {
        tree_size: checkpoint.tree_size,
        root: h(&checkpoint.root),
        tip_hash: h(&checkpoint.tip_hash),
        height: checkpoint.height,
        timestamp: checkpoint.timestamp,
    };

    // Transaction 1 (of 3) in block 1, proven in the checkpoint of all blocks.
    let (number, position) = (1, 1);
    let chain_path = merkle::inclusion_proof(&leaves, number).unwrap();
    let tx_proof = build_tx_proof(
        &chain[number].header,
        &chain[number].tx_hashes,
        position,
        &chain_path,
        &checkpoint,
    )
    .unwrap();

    // The chain of 3 blocks is a prefix of the chain of 4.
    let old = 3;
    let consistency = build_consistency_proof(
        old as u64,
        size as u64,
        &merkle::root_from_leaf_hashes(&leaves[..old]),
        &merkle::root_from_leaf_hashes(&leaves),
        &merkle::consistency_proof(&leaves, old).unwrap(),
    )
    .unwrap()
    .with_checkpoints(checkpoint_of(old), checkpoint.clone());

    // Documents every verifier must reject, each with the reason this crate gives.
    let mut invalid = Vec::new();
    let mut push = |name: &str, doc: Value| {
        let reason = verify_json(
            &serde_json::to_vec(&doc).unwrap(),
            &medledger_proof::public_key_hex(&key.verifying_key()),
        )
        .expect_err(name)
        .to_string();
        invalid.push(json!({"name": name, "reason": reason, "document": doc}));
    };
    let tx = serde_json::to_value(&tx_proof).unwrap();
    let mut d = tx.clone();
    d["audit_path"][0] = json!(flip_first_bit(d["audit_path"][0].as_str().unwrap()));
    push("tx proof, first bit of audit_path[0] flipped", d);
    let mut d = tx.clone();
    d["leaf_index"] = json!(2);
    push("tx proof, leaf_index 2 instead of 1", d);
    let mut d = tx.clone();
    d["tx_hash"] = json!(flip_first_bit(d["tx_hash"].as_str().unwrap()));
    push("tx proof, first bit of tx_hash flipped", d);
    let mut d = tx.clone();
    d["block_header"] = json!(flip_first_bit(d["block_header"].as_str().unwrap()));
    push("tx proof, block number in block_header changed", d);
    let mut d = tx.clone();
    d["chain"]["audit_path"][1] = json!(flip_first_bit(
        d["chain"]["audit_path"][1].as_str().unwrap()
    ));
    push("tx proof, first bit of chain.audit_path[1] flipped", d);
    let mut d = tx.clone();
    d["checkpoint"]["timestamp"] = json!(checkpoint.timestamp + 1);
    push("tx proof, checkpoint timestamp changed", d);
    let mut d = serde_json::to_value(&checkpoint).unwrap();
    d["signature"] = json!(flip_first_bit(d["signature"].as_str().unwrap()));
    push("checkpoint, first bit of signature flipped", d);
    let mut d = serde_json::to_value(&consistency).unwrap();
    let proof = d["proof"].as_array_mut().unwrap();
    proof.swap(0, 1);
    push("consistency proof, proof[0] and proof[1] swapped", d);

    vec![
        ("checkpoint-key.json", pretty(&key.public_key_doc())),
        (
            "test-seed.hex",
            format!("{}\n", hex::encode(common::TEST_SEED)),
        ),
        ("checkpoint.json", pretty(&checkpoint)),
        (
            "checkpoint.signed-bytes.hex",
            format!("{}\n", hex::encode(body.signed_bytes())),
        ),
        ("tx-proof.json", pretty(&tx_proof)),
        ("consistency-proof.json", pretty(&consistency)),
        ("invalid.json", pretty(&invalid)),
    ]
}

fn flip_first_bit(text: &str) -> String {
    let mut bytes = hex::decode(text).unwrap();
    bytes[0] ^= 1;
    hex::encode(bytes)
}

#[test]
fn golden_vectors_are_stable() {
    let dir = repo_root().join("fixtures/proofs");
    let bless = std::env::var_os("MEDLEDGER_BLESS").is_some();
    let mut stale = Vec::new();
    for (name, text) in build_vectors() {
        let path = dir.join(name);
        if bless {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(&path, &text).unwrap();
            continue;
        }
        match std::fs::read_to_string(&path) {
            Ok(on_disk) if on_disk == text => {}
            _ => stale.push(name),
        }
    }
    assert!(
        stale.is_empty(),
        "fixtures/proofs/{stale:?} differ from what the code builds; if the change is \
         intended, rerun with MEDLEDGER_BLESS=1 and commit the diff"
    );
}

/// The files as they are on disk verify (or are rejected) with the key file as it is.
#[test]
fn golden_files_verify_with_the_published_key() {
    let dir = repo_root().join("fixtures/proofs");
    let read = |name: &str| std::fs::read(dir.join(name)).expect(name);
    let key_doc = String::from_utf8(read("checkpoint-key.json")).unwrap();
    for name in ["checkpoint.json", "tx-proof.json", "consistency-proof.json"] {
        let summary = verify_json(&read(name), &key_doc).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(summary.starts_with("OK: "), "{summary}");
    }
    // The seed file is the key the documents name.
    let seed: [u8; 32] = hex::decode(String::from_utf8(read("test-seed.hex")).unwrap().trim())
        .unwrap()
        .try_into()
        .unwrap();
    let key = CheckpointKey::from_seed(&seed);
    assert!(key_doc.contains(key.key_id()));
    // The signed bytes file is what the checkpoint signs.
    let signed = hex::decode(
        String::from_utf8(read("checkpoint.signed-bytes.hex"))
            .unwrap()
            .trim(),
    )
    .unwrap();
    assert_eq!(&signed[..24], b"medledger-checkpoint-v1\n");
    let checkpoint: medledger_proof::Checkpoint =
        serde_json::from_slice(&read("checkpoint.json")).unwrap();
    let sig: [u8; 64] = hex::decode(&checkpoint.signature)
        .unwrap()
        .try_into()
        .unwrap();
    key.verifying_key()
        .verify_strict(&signed, &ed25519_dalek::Signature::from_bytes(&sig))
        .unwrap();

    let invalid: Vec<Value> = serde_json::from_slice(&read("invalid.json")).unwrap();
    assert_eq!(invalid.len(), 8);
    for case in invalid {
        let doc = serde_json::to_vec(&case["document"]).unwrap();
        let err = verify_json(&doc, &key_doc).expect_err(case["name"].as_str().unwrap());
        assert_eq!(err.to_string(), case["reason"].as_str().unwrap());
    }
    // And the bare key form works the same.
    let bare = medledger_proof::public_key_hex(&key.verifying_key());
    assert!(verify_json(&read("tx-proof.json"), &format!("{bare}\n")).is_ok());
    assert!(matches!(
        verify_json(&read("tx-proof.json"), &bare.to_uppercase()),
        Err(VerifyError::MalformedPublicKey(_))
    ));
}
