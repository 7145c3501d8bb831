//! A proof document (a transaction's proof, a consistency proof, a checkpoint) as an
//! auditor hands it to `medledger verify-proof`: any bytes give a verdict or an error,
//! never a panic. The key is the corpus's own (fuzz/src/bin/corpus.rs), so documents
//! that verify are reachable.
#![no_main]

use libfuzzer_sys::fuzz_target;

/// The public key document (`GET /v1/checkpoint/key`) of the key the corpus signs with,
/// `CheckpointKey::from_seed(&[7; 32])`, made once.
fn key() -> &'static str {
    static KEY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    KEY.get_or_init(|| {
        let key = medledger_proof::CheckpointKey::from_seed(&medledger_fuzz::PROOF_KEY_SEED);
        serde_json::to_string(&key.public_key_doc()).expect("a key document is JSON")
    })
}

fuzz_target!(|bytes: &[u8]| {
    let _ = medledger_proof::verify_json(bytes, key());
});
