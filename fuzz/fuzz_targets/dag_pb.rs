//! A dag-pb node and a CID as an IPFS node sends them (payloads read back from Kubo):
//! any bytes give `Ok` or `Err`, never a panic; a CID has one byte form.
#![no_main]

use libfuzzer_sys::fuzz_target;
use medledger_payload::dagpb::decode_node;
use medledger_payload::Cid;

fuzz_target!(|bytes: &[u8]| {
    let _ = decode_node(bytes);
    if let Ok(cid) = Cid::from_bytes(bytes) {
        assert_eq!(cid.to_bytes(), bytes, "a CID read from other bytes");
    }
});
