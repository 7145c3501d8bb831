//! A block, a block header and a block frame as read from a segment file, and a header
//! as an offline verifier reads it (docs/FORMAT.md): any bytes give `Ok` or `Err`, never
//! a panic, and what decodes has exactly one byte form.
#![no_main]

use libfuzzer_sys::fuzz_target;
use medledger_storage::ledger::block::BlockFrame;
use medledger_storage::{Block, BlockHeader};

fuzz_target!(|bytes: &[u8]| {
    if let Ok(block) = Block::decode(bytes) {
        let mut again = Vec::with_capacity(bytes.len());
        block.encode_into(&mut again);
        assert_eq!(again, bytes, "a block accepted from a second byte form");
    }
    if let Ok(header) = BlockHeader::decode(bytes) {
        let encoded = header.encode();
        assert_eq!(
            &encoded[..],
            &bytes[..encoded.len()],
            "a header decoded from other bytes"
        );
        if let Ok(fields) = medledger_proof::header::HeaderFields::parse(&encoded) {
            assert_eq!(
                fields.number, header.number,
                "the verifier reads another number"
            );
        }
    }
    let frame = BlockFrame::parse(bytes.to_vec());
    if let Ok(block) = Block::decode(bytes) {
        // The rebuild's reader (a frame) and the block decoder read the same block.
        let frame = frame.expect("a block that decodes is a frame");
        assert_eq!(
            frame.header(),
            &block.header,
            "the frame reads another header"
        );
        assert_eq!(
            frame.into_block(),
            block,
            "the frame reads other transactions"
        );
    }
    let _ = medledger_proof::header::HeaderFields::parse(bytes);
    let _ = medledger_proof::header::HeaderFields::parse_prefix(bytes);
});
