//! Every tx proof an honest server builds verifies offline, and every one-field change
//! to it is rejected.

mod common;

use common::{one_field_tampers, public_key_hex, test_key, Chain};
use medledger_proof::merkle::ProofError;
use medledger_proof::{verify_json, verify_tx_proof, TxProof, VerifyError};

/// Whether the exhaustive tests also tamper with the proof of leaf `index` of `size`:
/// the first and last leaves, both sides of the top split and one more that moves with the
/// size. (Every leaf of every size is verified; tampering with all of them took minutes in
/// a debug build without finding anything the edges do not.)
fn tamper_with(index: usize, size: usize) -> bool {
    let split = if size > 1 {
        1 << (usize::BITS - 1 - (size - 1).leading_zeros())
    } else {
        0
    };
    index == 0
        || index + 1 == size
        || index == split
        || index + 1 == split
        || index == (size * 7 + 3) % size
}

/// Verifies `proof`, then (if `tamper`) checks every one-field tamper of it fails through
/// [`verify_json`] (the CLI's path, JSON included).
fn check_valid_and_tampers_fail(
    proof: &TxProof,
    key_hex: &str,
    tamper: bool,
    all_bits: bool,
    salt: usize,
) {
    let key = medledger_proof::parse_public_key(key_hex).unwrap();
    let verified = verify_tx_proof(proof, &key).unwrap_or_else(|e| panic!("{e}: {proof:?}"));
    assert_eq!(verified.block_number, proof.block_number);
    assert_eq!(verified.leaf_index, proof.leaf_index);
    let json = serde_json::to_vec(proof).unwrap();
    let summary = verify_json(&json, key_hex).unwrap();
    assert!(
        summary.starts_with("OK: transaction proof verified"),
        "{summary}"
    );
    assert!(summary.contains(&proof.tx_hash), "{summary}");

    if !tamper {
        return;
    }
    let doc: serde_json::Value = serde_json::from_slice(&json).unwrap();
    let tampers = one_field_tampers(&doc, all_bits, salt);
    assert!(tampers.len() >= 20, "too few tampers: {}", tampers.len());
    for (what, bad) in tampers {
        let bytes = serde_json::to_vec(&bad).unwrap();
        assert!(
            verify_json(&bytes, key_hex).is_err(),
            "accepted with {what} (block {} tx {})",
            proof.block_number,
            proof.leaf_index
        );
    }
}

#[test]
fn every_tx_leaf_of_blocks_of_1_to_70_transactions_verifies() {
    let key = test_key();
    let key_hex = public_key_hex(&key.verifying_key());
    // Block n holds n transactions (genesis none), so block sizes 1..=70 all occur.
    let counts: Vec<usize> = (0..=70).collect();
    let chain = Chain::new(&counts);
    let checkpoint = chain.checkpoint(&key);
    let mut proofs = 0;
    for number in 1..=70 {
        for position in 0..number {
            let proof = chain.tx_proof(number, position, &checkpoint);
            assert_eq!(proof.tree_size, number as u64);
            let tamper = tamper_with(position, number);
            check_valid_and_tampers_fail(&proof, &key_hex, tamper, false, proofs);
            proofs += 1;
        }
    }
    assert_eq!(proofs, 70 * 71 / 2);
}

/// The verifier does not treat genesis specially, so to prove chain leaf 0 through a tx
/// proof these chains give every block, block 0 included, one transaction.
#[test]
fn every_chain_leaf_of_trees_of_1_to_70_blocks_verifies() {
    let key = test_key();
    let key_hex = public_key_hex(&key.verifying_key());
    let mut proofs = 0;
    for size in 1..=70 {
        let chain = Chain::new(&vec![1; size]);
        let checkpoint = chain.checkpoint(&key);
        for number in 0..size {
            let proof = chain.tx_proof(number, 0, &checkpoint);
            assert_eq!(proof.chain.tree_size, size as u64);
            let tamper = tamper_with(number, size);
            check_valid_and_tampers_fail(&proof, &key_hex, tamper, false, proofs);
            proofs += 1;
        }
    }
    assert_eq!(proofs, 70 * 71 / 2);
}

#[test]
fn every_single_bit_of_every_field_matters() {
    let key = test_key();
    let key_hex = public_key_hex(&key.verifying_key());
    let chain = Chain::new(&[0, 1, 2, 3, 5, 8, 13]);
    let checkpoint = chain.checkpoint(&key);
    // (block, position): a one-leaf block, leaves left and right of the top split, the
    // last leaf of an unbalanced block, and the chain's tip.
    for (number, position) in [(1, 0), (4, 1), (4, 4), (5, 6), (6, 12)] {
        let proof = chain.tx_proof(number, position, &checkpoint);
        check_valid_and_tampers_fail(&proof, &key_hex, true, true, 0);
    }
}

fn honest() -> (Chain, TxProof) {
    let chain = Chain::new(&[0, 3, 5, 2]);
    let checkpoint = chain.checkpoint(&test_key());
    let proof = chain.tx_proof(2, 3, &checkpoint);
    (chain, proof)
}

fn verify(proof: &TxProof) -> Result<(), VerifyError> {
    verify_tx_proof(proof, &test_key().verifying_key()).map(|_| ())
}

#[test]
fn each_rejection_names_its_reason() {
    let (_, good) = honest();
    assert_eq!(verify(&good), Ok(()));

    let mut p = good.clone();
    p.audit_path.pop();
    assert_eq!(
        verify(&p),
        Err(VerifyError::TxInclusion(ProofError::WrongProofLength {
            got: 2,
            expected: 3
        }))
    );
    let mut p = good.clone();
    p.audit_path.push(good.tx_hash.clone());
    assert!(matches!(
        verify(&p),
        Err(VerifyError::TxInclusion(ProofError::WrongProofLength {
            got: 4,
            ..
        }))
    ));
    let mut p = good.clone();
    p.chain.audit_path.pop();
    assert!(matches!(
        verify(&p),
        Err(VerifyError::ChainInclusion(
            ProofError::WrongProofLength { .. }
        ))
    ));
    let mut p = good.clone();
    p.leaf_index = 5;
    assert_eq!(
        verify(&p),
        Err(VerifyError::TxInclusion(ProofError::IndexOutOfRange {
            index: 5,
            tree_size: 5
        }))
    );
    let mut p = good.clone();
    p.leaf_index = 2;
    assert_eq!(
        verify(&p),
        Err(VerifyError::TxInclusion(ProofError::RootMismatch))
    );
    let mut p = good.clone();
    p.tx_hash = good.data_hash.clone();
    assert_eq!(
        verify(&p),
        Err(VerifyError::TxInclusion(ProofError::RootMismatch))
    );
    let mut p = good.clone();
    p.chain.audit_path[0] = good.tx_hash.clone();
    assert_eq!(
        verify(&p),
        Err(VerifyError::ChainInclusion(ProofError::RootMismatch))
    );

    let mut p = good.clone();
    p.tree_size = 6;
    assert!(matches!(
        verify(&p),
        Err(VerifyError::Mismatch {
            field: "tree_size",
            expected_from: "block_header tx_count",
            ..
        })
    ));
    let mut p = good.clone();
    p.chain.root = good.data_hash.clone();
    assert!(matches!(
        verify(&p),
        Err(VerifyError::Mismatch {
            field: "chain.root",
            expected_from: "checkpoint.root",
            ..
        })
    ));
    let mut p = good.clone();
    p.chain.tree_size = 3;
    assert!(matches!(
        verify(&p),
        Err(VerifyError::Mismatch {
            field: "chain.tree_size",
            ..
        })
    ));
    let mut p = good.clone();
    p.block_number = 1;
    assert!(matches!(
        verify(&p),
        Err(VerifyError::Mismatch {
            field: "chain.leaf_index",
            expected_from: "block_number",
            ..
        })
    ));
    let mut p = good.clone();
    p.block_number = 1;
    p.chain.leaf_index = 1;
    assert!(matches!(
        verify(&p),
        Err(VerifyError::Mismatch {
            field: "block_number",
            expected_from: "block_header number",
            ..
        })
    ));
    let mut p = good.clone();
    p.data_hash = good.tx_hash.clone();
    assert!(matches!(
        verify(&p),
        Err(VerifyError::Mismatch {
            field: "data_hash",
            ..
        })
    ));
    let mut p = good.clone();
    p.block_header.replace_range(0..2, "ff");
    assert!(matches!(
        verify(&p),
        Err(VerifyError::Mismatch {
            field: "block_hash",
            expected_from: "SHA-256(block_header)",
            ..
        })
    ));

    let mut p = good.clone();
    p.block_header.truncate(174);
    let err = verify(&p).unwrap_err();
    assert_eq!(
        err.to_string(),
        "field `block_header`: expected 176 lowercase hex digits (88 bytes), got 174 characters"
    );
    let mut p = good.clone();
    p.audit_path[1] = p.audit_path[1].to_uppercase();
    assert!(matches!(
        verify(&p),
        Err(VerifyError::MalformedHex { field, .. }) if field == "audit_path[1]"
    ));
    let mut p = good.clone();
    p.chain.audit_path = vec![good.tx_hash.clone(); 65];
    assert!(matches!(
        verify(&p),
        Err(VerifyError::TooManyHashes { field, len: 65, max: 64 }) if field == "chain.audit_path"
    ));
    let mut p = good.clone();
    p.checkpoint.root = "00".into();
    assert!(matches!(
        verify(&p),
        Err(VerifyError::MalformedHex { field, .. }) if field == "checkpoint.root"
    ));
}

#[test]
fn checkpoint_failures_are_named() {
    let (chain, good) = honest();
    let other = common::other_key();

    // Another key than the one that signed.
    let err = verify_tx_proof(&good, &other.verifying_key()).unwrap_err();
    assert_eq!(
        err,
        VerifyError::WrongKey {
            checkpoint_key_id: test_key().key_id().to_string(),
            given_key_id: other.key_id().to_string(),
        }
    );
    assert!(err.to_string().contains("signed by key"), "{err}");
    // The id rewritten to match the other key: the signature still gives it away.
    let mut p = good.clone();
    p.checkpoint.key_id = other.key_id().to_string();
    assert_eq!(
        verify_tx_proof(&p, &other.verifying_key()).map(|_| ()),
        Err(VerifyError::BadSignature)
    );
    // Any signed field changed.
    let edits: [fn(&mut TxProof); 4] = [
        |p: &mut TxProof| p.checkpoint.timestamp += 1,
        |p: &mut TxProof| p.checkpoint.height += 1,
        |p: &mut TxProof| p.checkpoint.tip_hash = p.tx_hash.clone(),
        |p: &mut TxProof| {
            let c = if p.checkpoint.signature.starts_with('0') {
                "1"
            } else {
                "0"
            };
            p.checkpoint.signature.replace_range(0..1, c)
        },
    ];
    for edit in edits {
        let mut p = good.clone();
        edit(&mut p);
        assert_eq!(verify(&p), Err(VerifyError::BadSignature));
    }
    // A root change is caught by the signature even if chain.root follows it.
    let mut p = good.clone();
    p.checkpoint.root = p.data_hash.clone();
    p.chain.root = p.data_hash.clone();
    assert_eq!(verify(&p), Err(VerifyError::BadSignature));

    // A validly signed checkpoint whose tip is not this chain's tip block.
    let mut body = chain.body();
    body.tip_hash = [9; 32];
    let bad_tip = test_key().sign(&body);
    let tip_proof = chain.tx_proof(3, 0, &chain.checkpoint(&test_key()));
    let mut p = tip_proof.clone();
    p.checkpoint = bad_tip;
    assert!(matches!(
        verify(&p),
        Err(VerifyError::Mismatch {
            field: "block_hash",
            expected_from: "checkpoint.tip_hash",
            ..
        })
    ));
    assert_eq!(verify(&tip_proof), Ok(()));

    // Validly signed but malformed checkpoints (the server's key refuses to sign them).
    let raw = ed25519_dalek::SigningKey::from_bytes(&common::TEST_SEED);
    for (tree_size, height, want) in [
        (
            4,
            5,
            VerifyError::CheckpointSizeMismatch {
                tree_size: 4,
                height: 5,
            },
        ),
        (0, 0, VerifyError::EmptyCheckpoint),
    ] {
        let mut body = chain.body();
        body.tree_size = tree_size;
        body.height = height;
        let sig = ed25519_dalek::Signer::sign(&raw, &body.signed_bytes());
        let cp = medledger_proof::Checkpoint::from_parts(&body, &sig, test_key().key_id().into());
        assert_eq!(
            medledger_proof::verify_checkpoint(&cp, &test_key().verifying_key()),
            Err(want)
        );
    }
}

#[test]
fn the_builder_refuses_what_would_not_verify() {
    let chain = Chain::new(&[0, 3]);
    let checkpoint = chain.checkpoint(&test_key());
    let leaves = chain.leaves();
    let path = medledger_proof::merkle::inclusion_proof(&leaves, 1).unwrap();
    let block = &chain.blocks[1];
    let build = |hashes: &[[u8; 32]], position, path: &[[u8; 32]]| {
        medledger_proof::build_tx_proof(&block.header, hashes, position, path, &checkpoint)
    };
    assert!(build(&block.tx_hashes, 2, &path).is_ok());
    assert_eq!(
        build(&block.tx_hashes, 3, &path),
        Err(VerifyError::TxInclusion(ProofError::IndexOutOfRange {
            index: 3,
            tree_size: 3
        }))
    );
    assert!(matches!(
        build(&block.tx_hashes[..2], 0, &path),
        Err(VerifyError::Mismatch {
            field: "tree_size",
            ..
        })
    ));
    let mut wrong = block.tx_hashes.clone();
    wrong[0][0] ^= 1;
    assert_eq!(
        build(&wrong, 1, &path),
        Err(VerifyError::TxInclusion(ProofError::RootMismatch))
    );
    assert!(matches!(
        build(&block.tx_hashes, 0, &path[1..]),
        Err(VerifyError::ChainInclusion(_))
    ));
    // Genesis holds no transaction to prove.
    let genesis = &chain.blocks[0];
    let genesis_path = medledger_proof::merkle::inclusion_proof(&leaves, 0).unwrap();
    assert!(matches!(
        medledger_proof::build_tx_proof(&genesis.header, &[], 0, &genesis_path, &checkpoint),
        Err(VerifyError::TxInclusion(ProofError::IndexOutOfRange { .. }))
    ));
}
