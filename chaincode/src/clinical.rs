//! Clinical free text inside an event: record metadata, reasons and access purposes.
//!
//! Blocks of format 2 hold such text only sealed (encrypted under the record's content
//! key, which erasure destroys); blocks of format 1, written before, hold it in the
//! clear. Both forms share one encoding, a length-prefixed byte string, told apart by its
//! first byte (docs/FORMAT.md):
//!
//! ```text
//! plain   u64 len ‖ UTF-8 text            (UTF-8 never contains the byte 0xFF)
//! sealed  u64 len ‖ 0xFF ‖ version u8 (1) ‖ nonce [12] ‖ AES-256-GCM ciphertext ‖ tag [16]
//! ```
//!
//! So an envelope written in format 1 decodes to the same value and hash as before, a
//! sealed value can never be mistaken for text, and the ledger can be verified without a
//! key. This crate only carries the bytes: sealing and opening (with the key and the
//! associated data binding a value to its record and field) live in the payload crate,
//! since the contract stays free of randomness and keys.

use serde::{Deserialize, Serialize};

/// The first byte of a sealed value (never a byte of UTF-8 text).
pub const SEALED_MARK: u8 = 0xFF;
/// The sealed layout this code writes and reads.
pub const SEALED_VERSION: u8 = 1;
/// Bytes of an AES-GCM nonce.
pub const SEALED_NONCE_LEN: usize = 12;
/// Bytes of an AES-GCM tag.
pub const SEALED_TAG_LEN: usize = 16;
/// What sealing adds to the text: mark, version, nonce and tag.
pub const SEALED_OVERHEAD: usize = 2 + SEALED_NONCE_LEN + SEALED_TAG_LEN;

/// Clinical text as an event carries it.
#[derive(Clone, PartialEq, Eq)]
pub enum Clinical {
    /// Text in the clear: what format-1 blocks hold, and what the server holds between
    /// a request and sealing.
    Plain(String),
    /// Text sealed under the record's content key.
    Sealed(Sealed),
}

/// The bytes of a sealed value, checked to have the sealed layout.
#[derive(Clone, PartialEq, Eq)]
pub struct Sealed(Vec<u8>);

impl Sealed {
    /// A sealed value from its nonce and its ciphertext with the tag appended.
    pub fn new(nonce: [u8; SEALED_NONCE_LEN], ciphertext_and_tag: &[u8]) -> Sealed {
        assert!(
            ciphertext_and_tag.len() >= SEALED_TAG_LEN,
            "the tag is missing"
        );
        let mut bytes = Vec::with_capacity(2 + SEALED_NONCE_LEN + ciphertext_and_tag.len());
        bytes.extend_from_slice(&[SEALED_MARK, SEALED_VERSION]);
        bytes.extend_from_slice(&nonce);
        bytes.extend_from_slice(ciphertext_and_tag);
        Sealed(bytes)
    }

    /// Reads the sealed layout: the mark, version 1, a nonce and at least a tag.
    pub fn from_bytes(bytes: Vec<u8>) -> Option<Sealed> {
        let ok =
            bytes.len() >= SEALED_OVERHEAD && bytes[0] == SEALED_MARK && bytes[1] == SEALED_VERSION;
        ok.then_some(Sealed(bytes))
    }

    /// The nonce.
    pub fn nonce(&self) -> &[u8; SEALED_NONCE_LEN] {
        self.0[2..2 + SEALED_NONCE_LEN]
            .try_into()
            .expect("checked layout")
    }

    /// The ciphertext followed by its tag.
    pub fn ciphertext_and_tag(&self) -> &[u8] {
        &self.0[2 + SEALED_NONCE_LEN..]
    }

    /// The whole encoded value (mark first).
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Bytes of the text it seals.
    pub fn text_len(&self) -> usize {
        self.0.len() - SEALED_OVERHEAD
    }
}

impl Clinical {
    /// Bytes of the text, sealed or not (what the field limits bound).
    pub fn text_len(&self) -> usize {
        match self {
            Clinical::Plain(text) => text.len(),
            Clinical::Sealed(sealed) => sealed.text_len(),
        }
    }

    /// The text, when it is in the clear.
    pub fn as_plain(&self) -> Option<&str> {
        match self {
            Clinical::Plain(text) => Some(text),
            Clinical::Sealed(_) => None,
        }
    }

    /// Whether the value is sealed.
    pub fn is_sealed(&self) -> bool {
        matches!(self, Clinical::Sealed(_))
    }

    /// The encoded bytes after the length: the text, or the sealed layout.
    fn bytes(&self) -> &[u8] {
        match self {
            Clinical::Plain(text) => text.as_bytes(),
            Clinical::Sealed(sealed) => sealed.as_bytes(),
        }
    }

    /// The value of encoded bytes: sealed if they start with the mark, else UTF-8 text.
    fn from_encoded(bytes: Vec<u8>) -> Result<Clinical, &'static str> {
        if bytes.first() == Some(&SEALED_MARK) {
            return Sealed::from_bytes(bytes)
                .map(Clinical::Sealed)
                .ok_or("a sealed value of an unknown version or too short");
        }
        String::from_utf8(bytes)
            .map(Clinical::Plain)
            .map_err(|_| "clinical text that is not UTF-8")
    }
}

impl From<&str> for Clinical {
    fn from(text: &str) -> Clinical {
        Clinical::Plain(text.to_owned())
    }
}

impl From<String> for Clinical {
    fn from(text: String) -> Clinical {
        Clinical::Plain(text)
    }
}

/// Never prints the text: events are logged and asserted on, clinical text must not be.
impl std::fmt::Debug for Clinical {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Clinical::Plain(text) => write!(f, "Plain({} bytes)", text.len()),
            Clinical::Sealed(sealed) => write!(f, "Sealed({} bytes)", sealed.0.len()),
        }
    }
}

impl std::fmt::Debug for Sealed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Sealed({} bytes)", self.0.len())
    }
}

impl bincode::Encode for Clinical {
    fn encode<E: bincode::enc::Encoder>(
        &self,
        encoder: &mut E,
    ) -> Result<(), bincode::error::EncodeError> {
        // The same bytes as a `String`'s or a `Vec<u8>`'s: u64 length, then the bytes.
        self.bytes().encode(encoder)
    }
}

impl<Context> bincode::Decode<Context> for Clinical {
    fn decode<D: bincode::de::Decoder<Context = Context>>(
        decoder: &mut D,
    ) -> Result<Self, bincode::error::DecodeError> {
        let bytes = Vec::<u8>::decode(decoder)?;
        Clinical::from_encoded(bytes).map_err(bincode::error::DecodeError::Other)
    }
}

bincode::impl_borrow_decode!(Clinical);

/// JSON: plain text as a string, a sealed value as `{"sealed": "<hex>"}`.
impl Serialize for Clinical {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Clinical::Plain(text) => s.serialize_str(text),
            Clinical::Sealed(sealed) => {
                use serde::ser::SerializeMap;
                let mut map = s.serialize_map(Some(1))?;
                map.serialize_entry("sealed", &hex::encode(sealed.as_bytes()))?;
                map.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for Clinical {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Form {
            Plain(String),
            Sealed { sealed: String },
        }
        match Form::deserialize(d)? {
            Form::Plain(text) => Ok(Clinical::Plain(text)),
            Form::Sealed { sealed } => {
                let bytes = hex::decode(sealed)
                    .map_err(|_| serde::de::Error::custom("sealed: expected hex"))?;
                Sealed::from_bytes(bytes)
                    .map(Clinical::Sealed)
                    .ok_or_else(|| serde::de::Error::custom("sealed: not the sealed layout"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> impl bincode::config::Config {
        bincode::config::standard()
            .with_little_endian()
            .with_fixed_int_encoding()
    }

    #[test]
    fn plain_text_encodes_as_a_string_does() {
        let text = r#"{"n":1}"#;
        let as_string = bincode::encode_to_vec(text.to_string(), config()).unwrap();
        let as_clinical = bincode::encode_to_vec(Clinical::from(text), config()).unwrap();
        assert_eq!(as_clinical, as_string);
        let (back, _): (Clinical, usize) =
            bincode::decode_from_slice(&as_string, config()).unwrap();
        assert_eq!(back, Clinical::from(text));
    }

    #[test]
    fn sealed_values_round_trip_and_are_told_apart() {
        let sealed = Clinical::Sealed(Sealed::new([7; 12], &[1; 20]));
        let bytes = bincode::encode_to_vec(&sealed, config()).unwrap();
        assert_eq!(&bytes[..8], &(2u64 + 12 + 20).to_le_bytes());
        assert_eq!(&bytes[8..10], &[SEALED_MARK, SEALED_VERSION]);
        let (back, used): (Clinical, usize) = bincode::decode_from_slice(&bytes, config()).unwrap();
        assert_eq!((back, used), (sealed.clone(), bytes.len()));
        assert_eq!(sealed.text_len(), 4);
        // Another version, a value too short for a tag, and bytes that are neither.
        for bad in [
            vec![
                0xFF, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                0, 0, 0,
            ],
            vec![0xFF, 1, 0, 0],
            vec![0xC3, 0x28],
        ] {
            let encoded = bincode::encode_to_vec(&bad, config()).unwrap();
            assert!(
                bincode::decode_from_slice::<Clinical, _>(&encoded, config()).is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn debug_and_json_never_show_the_text() {
        let plain = Clinical::from("secret diagnosis");
        assert_eq!(format!("{plain:?}"), "Plain(16 bytes)");
        let sealed = Clinical::Sealed(Sealed::new([0; 12], &[0xAB; 16]));
        let json = serde_json::to_string(&sealed).unwrap();
        assert!(json.starts_with(r#"{"sealed":"ff01"#), "{json}");
        assert_eq!(serde_json::from_str::<Clinical>(&json).unwrap(), sealed);
        assert_eq!(
            serde_json::from_str::<Clinical>(r#""text""#).unwrap(),
            Clinical::from("text")
        );
    }
}
