//! Consistency proofs between any two signed checkpoints of one chain verify offline, and
//! any change to the proof or to either checkpoint is rejected.

mod common;

use common::{one_field_tampers, public_key_hex, test_key, Chain};
use medledger_proof::merkle::{self, ProofError};
use medledger_proof::{
    build_consistency_proof, verify_consistency, verify_json, Checkpoint, ConsistencyProof,
    VerifyError,
};

const MAX_SIZE: usize = 40;

struct Fixture {
    chain: Chain,
    /// `checkpoints[n]` is the signed checkpoint of the first `n` blocks (index 0 unused).
    checkpoints: Vec<Checkpoint>,
}

fn fixture() -> Fixture {
    let key = test_key();
    let counts: Vec<usize> = (0..MAX_SIZE).map(|n| 1 + n % 4).collect();
    let chain = Chain::new(&counts);
    let mut checkpoints = vec![chain.checkpoint(&key)]; // placeholder for size 0
    for n in 1..=MAX_SIZE {
        let prefix = Chain {
            blocks: chain.blocks[..n]
                .iter()
                .map(|b| common::TestBlock {
                    header: b.header,
                    tx_hashes: b.tx_hashes.clone(),
                })
                .collect(),
        };
        checkpoints.push(prefix.checkpoint(&key));
    }
    Fixture { chain, checkpoints }
}

fn proof(f: &Fixture, m: usize, n: usize) -> ConsistencyProof {
    let leaves = f.chain.leaves();
    let hashes = merkle::consistency_proof(&leaves[..n], m).unwrap();
    let old_root = merkle::root_from_leaf_hashes(&leaves[..m]);
    let new_root = merkle::root_from_leaf_hashes(&leaves[..n]);
    build_consistency_proof(m as u64, n as u64, &old_root, &new_root, &hashes)
        .unwrap()
        .with_checkpoints(f.checkpoints[m].clone(), f.checkpoints[n].clone())
}

#[test]
fn every_pair_of_sizes_up_to_40_verifies_and_every_tamper_fails() {
    let f = fixture();
    let key = test_key().verifying_key();
    let key_hex = public_key_hex(&key);
    let mut pairs = 0;
    for n in 1..=MAX_SIZE {
        for m in 1..=n {
            let p = proof(&f, m, n);
            let old = &f.checkpoints[m];
            let new = &f.checkpoints[n];
            let v = verify_consistency(&p, old, new, &key)
                .unwrap_or_else(|e| panic!("{m} -> {n}: {e}"));
            assert_eq!((v.from.tree_size, v.to.tree_size), (m as u64, n as u64));
            let json = serde_json::to_vec(&p).unwrap();
            let summary = verify_json(&json, &key_hex).unwrap();
            assert!(
                summary.starts_with("OK: consistency proof verified"),
                "{summary}"
            );

            pairs += 1;
            // Tamper with every pair of small sizes and, above, the pairs at the edges
            // (every pair took minutes in a debug build and found nothing more).
            if n > 12 && ![1, n / 2, n - 1, n].contains(&m) {
                continue;
            }
            let doc: serde_json::Value = serde_json::from_slice(&json).unwrap();
            // Every bit for a few shapes: equal sizes, old a power of two or not, new a
            // power of two or not.
            let all_bits = [(1, 1), (2, 3), (3, 4), (4, 7), (6, 8), (5, 11)].contains(&(m, n));
            for (what, bad) in one_field_tampers(&doc, all_bits, pairs) {
                let bytes = serde_json::to_vec(&bad).unwrap();
                assert!(
                    verify_json(&bytes, &key_hex).is_err(),
                    "{m} -> {n} accepted with {what}"
                );
            }
            // The checkpoints of other sizes never stand in for the right ones.
            for other in [m.saturating_sub(1), m + 1, n + 1] {
                if (1..=MAX_SIZE).contains(&other) && other != m {
                    let old2 = &f.checkpoints[other];
                    assert!(verify_consistency(&p, old2, new, &key).is_err());
                }
                if (1..=MAX_SIZE).contains(&other) && other != n {
                    let new2 = &f.checkpoints[other];
                    assert!(verify_consistency(&p, old, new2, &key).is_err());
                }
            }
        }
    }
    assert_eq!(pairs, MAX_SIZE * (MAX_SIZE + 1) / 2);
}

#[test]
fn each_rejection_names_its_reason() {
    let f = fixture();
    let key = test_key().verifying_key();
    let good = proof(&f, 5, 11);
    let (old, new) = (&f.checkpoints[5], &f.checkpoints[11]);
    let check = |p: &ConsistencyProof| verify_consistency(p, old, new, &key).map(|_| ());
    assert_eq!(check(&good), Ok(()));

    let mut p = good.clone();
    p.proof.pop();
    assert!(matches!(
        check(&p),
        Err(VerifyError::Consistency(
            ProofError::WrongProofLength { .. }
        ))
    ));
    let mut p = good.clone();
    p.proof.swap(0, 1);
    assert_eq!(
        check(&p),
        Err(VerifyError::Consistency(ProofError::RootMismatch))
    );
    let mut p = good.clone();
    p.from = 6;
    assert!(matches!(
        check(&p),
        Err(VerifyError::Mismatch {
            field: "from",
            expected_from: "from_checkpoint.tree_size",
            ..
        })
    ));
    let mut p = good.clone();
    p.to_root = p.from_root.clone();
    assert!(matches!(
        check(&p),
        Err(VerifyError::Mismatch {
            field: "to_root",
            ..
        })
    ));
    // Old and new swapped.
    assert!(verify_consistency(&good, new, old, &key).is_err());
    // Signed by another key.
    assert!(matches!(
        verify_consistency(&good, old, new, &common::other_key().verifying_key()),
        Err(VerifyError::WrongKey { .. })
    ));
    let mut forged = new.clone();
    forged.timestamp += 1;
    assert_eq!(
        verify_consistency(&good, old, &forged, &key).map(|_| ()),
        Err(VerifyError::BadSignature)
    );
    // Without the bundled checkpoints the CLI refuses rather than half-verifies.
    let mut bare = good.clone();
    bare.from_checkpoint = None;
    let json = serde_json::to_vec(&bare).unwrap();
    let key_hex = public_key_hex(&key);
    assert_eq!(
        verify_json(&json, &key_hex),
        Err(VerifyError::MissingCheckpoints)
    );
    // Same size: the proof is empty, the roots and the tips must agree.
    let same = proof(&f, 7, 7);
    assert!(same.proof.is_empty());
    let seven = &f.checkpoints[7];
    assert!(verify_consistency(&same, seven, seven, &key).is_ok());
    // The server's builder refuses a proof that does not link the roots.
    let leaves = f.chain.leaves();
    let r5 = merkle::root_from_leaf_hashes(&leaves[..5]);
    let r11 = merkle::root_from_leaf_hashes(&leaves[..11]);
    assert!(matches!(
        build_consistency_proof(5, 11, &r11, &r5, &[]),
        Err(VerifyError::Consistency(_))
    ));
}
