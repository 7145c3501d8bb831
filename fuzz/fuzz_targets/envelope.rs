//! A transaction's envelope, as read from a block (docs/FORMAT.md): any bytes give `Ok`
//! or `Err`, never a panic; an accepted envelope has one byte form, and the readers that
//! look at a few fields without decoding agree with the full decode.
#![no_main]

use libfuzzer_sys::fuzz_target;
use medledger_chaincode::Envelope;

fuzz_target!(|bytes: &[u8]| {
    let subject = Envelope::subject_of(bytes);
    let tx_id = Envelope::tx_id_of(bytes);
    for format in [1, 2] {
        let _ = Envelope::decode_in(format, bytes);
    }
    if let Ok(envelope) = Envelope::decode(bytes) {
        let encoded = envelope.encode();
        assert_eq!(
            encoded, bytes,
            "an envelope accepted from a second byte form"
        );
        assert_eq!(
            subject,
            Envelope::subject_of(&encoded),
            "subject_of disagrees"
        );
        assert_eq!(tx_id, Envelope::tx_id_of(&encoded), "tx_id_of disagrees");
    }
});
