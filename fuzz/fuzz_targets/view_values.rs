//! The values the views keep in RocksDB, as read back from disk: any bytes give `Ok` or
//! `Err`, never a panic, and what decodes encodes to a value that decodes to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use medledger_chaincode::contract::GrantState;
use medledger_views::values::{self, AuditEntry, Rejection, Summary, VersionEntry};

macro_rules! round_trip {
    ($bytes:expr, $ty:ty, $what:literal) => {
        if let Ok(value) = values::decode::<$ty>($bytes, $what) {
            let again = values::encode(&value);
            let back = values::decode::<$ty>(&again, $what).expect("a value we encoded");
            assert_eq!(
                back, value,
                concat!("a ", $what, " changed on its round trip")
            );
        }
    };
}

fuzz_target!(|bytes: &[u8]| {
    round_trip!(bytes, VersionEntry, "record");
    round_trip!(bytes, Summary, "summary");
    round_trip!(bytes, GrantState, "grant");
    round_trip!(bytes, AuditEntry, "audit");
    round_trip!(bytes, Rejection, "rejection");
});
