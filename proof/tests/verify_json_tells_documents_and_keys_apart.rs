//! `verify_json` (the CLI's entry point) tells the documents apart, takes the public key
//! in both published forms, and says exactly what is wrong with bad input.

mod common;

use common::{public_key_hex, test_key, Chain};
use medledger_proof::{parse_public_key, verify_json, PublicKeyDoc, VerifyError};

fn key_hex() -> String {
    public_key_hex(&test_key().verifying_key())
}

#[test]
fn the_three_documents_are_recognised() {
    let chain = Chain::new(&[0, 2, 1]);
    let checkpoint = chain.checkpoint(&test_key());
    let proof = chain.tx_proof(1, 1, &checkpoint);
    let key = key_hex();

    let summary = verify_json(&serde_json::to_vec(&checkpoint).unwrap(), &key).unwrap();
    assert!(
        summary.starts_with("OK: checkpoint signature verified"),
        "{summary}"
    );
    assert!(summary.contains("height 3 (blocks 0..=2)"), "{summary}");
    assert!(summary.contains(test_key().key_id()), "{summary}");

    let summary = verify_json(&serde_json::to_vec(&proof).unwrap(), &key).unwrap();
    assert!(summary.contains("in block     1"), "{summary}");
    assert!(summary.contains("transaction 1 of 2"), "{summary}");
    assert!(summary.contains("2026-11-24T"), "{summary}");

    // Extra fields are allowed (the contract lets the server add some).
    let mut doc = serde_json::to_value(&proof).unwrap();
    doc["position_note"] = serde_json::json!("added by a newer server");
    doc["checkpoint"]["extra"] = serde_json::json!(1);
    assert!(verify_json(&serde_json::to_vec(&doc).unwrap(), &key).is_ok());
}

#[test]
fn bad_documents_are_named() {
    let key = key_hex();
    assert!(matches!(
        verify_json(b"{not json", &key),
        Err(VerifyError::MalformedJson(_))
    ));
    assert_eq!(
        verify_json(b"[1, 2]", &key),
        Err(VerifyError::UnknownDocument)
    );
    assert_eq!(
        verify_json(br#"{"hello": "world"}"#, &key),
        Err(VerifyError::UnknownDocument)
    );
    // A tx proof missing a field names it.
    let err = verify_json(br#"{"tx_hash": "00"}"#, &key).unwrap_err();
    assert!(
        matches!(&err, VerifyError::MalformedJson(m) if m.contains("block_number")),
        "{err}"
    );
    // A negative number where a size belongs.
    let chain = Chain::new(&[0, 1]);
    let proof = chain.tx_proof(1, 0, &chain.checkpoint(&test_key()));
    let mut doc = serde_json::to_value(&proof).unwrap();
    doc["leaf_index"] = serde_json::json!(-1);
    assert!(matches!(
        verify_json(&serde_json::to_vec(&doc).unwrap(), &key),
        Err(VerifyError::MalformedJson(_))
    ));
}

#[test]
fn public_keys_in_both_forms() {
    let key = test_key();
    let vk = key.verifying_key();
    let hex = key_hex();
    assert_eq!(parse_public_key(&hex), Ok(vk));
    assert_eq!(parse_public_key(&format!("  {hex}\n")), Ok(vk));
    let doc = serde_json::to_string_pretty(&key.public_key_doc()).unwrap();
    assert_eq!(parse_public_key(&doc), Ok(vk));
    assert_eq!(
        key.public_key_doc(),
        PublicKeyDoc {
            key_id: key.key_id().to_string(),
            public_key: hex.clone(),
            algorithm: "ed25519".into(),
        }
    );

    let bad = |text: &str| match parse_public_key(text) {
        Err(VerifyError::MalformedPublicKey(why)) => why,
        other => panic!("{text}: {other:?}"),
    };
    assert!(bad(&hex.to_uppercase()).contains("not a lowercase hex digit"));
    assert!(bad(&hex[..62]).contains("got 62 characters"));
    assert!(bad("").contains("got 0 characters"));
    let mut doc = key.public_key_doc();
    doc.algorithm = "rsa".into();
    assert!(bad(&serde_json::to_string(&doc).unwrap()).contains("only \"ed25519\""));
    let mut doc = key.public_key_doc();
    doc.key_id = "0000000000000000".into();
    assert!(bad(&serde_json::to_string(&doc).unwrap()).contains("does not match"));
    assert!(bad("{\"public_key\": 1}").contains("not a key document"));
    // Not every 32-byte string is a point on the curve (about half are not).
    let not_a_point = (2u8..=255)
        .map(|y| {
            let mut bytes = [0u8; 32];
            bytes[0] = y;
            bytes
        })
        .find(|b| medledger_proof::VerifyingKey::from_bytes(b).is_err())
        .expect("some small y is not on the curve");
    assert!(bad(&hex::encode(not_a_point)).contains("not an Ed25519 public key"));
}
