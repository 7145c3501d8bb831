//! Content identifiers (CIDs) for the two forms this crate produces: CIDv0 (dag-pb,
//! sha2-256, base58btc `Qm…`) and CIDv1 (raw or dag-pb, sha2-256, base32 `b…`).
//!
//! Hand-written rather than taken from the `cid` crate: we only ever need sha2-256 and two
//! codecs, and the parser must reject everything else (a CID naming another hash function
//! could not be verified against its bytes).

use std::fmt;
use std::str::FromStr;

use sha2::{Digest, Sha256};

/// Multicodec code of raw bytes (CIDv1 leaves with `raw-leaves`).
pub const CODEC_RAW: u64 = 0x55;
/// Multicodec code of dag-pb (UnixFS nodes).
pub const CODEC_DAG_PB: u64 = 0x70;
/// Multihash code of sha2-256.
const MULTIHASH_SHA2_256: u8 = 0x12;
const SHA2_256_LEN: u8 = 32;

/// Which CID form a DAG is built with (`ipfs add --cid-version`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum CidVersion {
    /// Kubo's default: dag-pb leaves, base58btc `Qm…`.
    #[default]
    V0,
    /// Raw leaves, dag-pb parents, base32 `b…`.
    V1,
}

/// The content codec of a block.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Codec {
    /// Bytes as they are (multicodec 0x55).
    Raw,
    /// A dag-pb (protobuf) node (multicodec 0x70).
    DagPb,
}

impl Codec {
    fn code(self) -> u64 {
        match self {
            Codec::Raw => CODEC_RAW,
            Codec::DagPb => CODEC_DAG_PB,
        }
    }
}

/// A CID whose multihash is sha2-256. Invariant: a `V0` CID has codec `DagPb`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cid {
    version: u8,
    codec_code: u8,
    digest: [u8; 32],
}

/// A CID string or byte form this crate does not accept.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid CID: {reason}")]
pub struct CidParseError {
    reason: &'static str,
}

fn parse_error(reason: &'static str) -> CidParseError {
    CidParseError { reason }
}

impl Cid {
    /// The CID of `block` under `version` and `codec`. A `V0` CID requires `DagPb`.
    pub fn for_block(version: CidVersion, codec: Codec, block: &[u8]) -> Cid {
        let digest: [u8; 32] = Sha256::digest(block).into();
        Cid::from_digest(version, codec, digest)
    }

    /// A CID from a precomputed sha2-256 digest.
    pub fn from_digest(version: CidVersion, codec: Codec, digest: [u8; 32]) -> Cid {
        match version {
            CidVersion::V0 => {
                assert_eq!(codec, Codec::DagPb, "CIDv0 is dag-pb only");
                Cid {
                    version: 0,
                    codec_code: CODEC_DAG_PB as u8,
                    digest,
                }
            }
            CidVersion::V1 => Cid {
                version: 1,
                codec_code: codec.code() as u8,
                digest,
            },
        }
    }

    /// The CID version.
    pub fn version(&self) -> CidVersion {
        if self.version == 0 {
            CidVersion::V0
        } else {
            CidVersion::V1
        }
    }

    /// The content codec.
    pub fn codec(&self) -> Codec {
        if u64::from(self.codec_code) == CODEC_RAW {
            Codec::Raw
        } else {
            Codec::DagPb
        }
    }

    /// The sha2-256 digest of the block.
    pub fn digest(&self) -> &[u8; 32] {
        &self.digest
    }

    /// True if `block` hashes to this CID's digest.
    pub fn verifies(&self, block: &[u8]) -> bool {
        let digest: [u8; 32] = Sha256::digest(block).into();
        digest == self.digest
    }

    /// True if both name the same content under the same codec (a CIDv0 and the CIDv1
    /// dag-pb form of one node are equivalent).
    pub fn same_content(&self, other: &Cid) -> bool {
        self.digest == other.digest && self.codec_code == other.codec_code
    }

    /// The binary form: for v0 the bare multihash, for v1 `0x01 ‖ codec ‖ multihash`.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(36);
        if self.version == 1 {
            out.push(1);
            out.push(self.codec_code); // 0x55 and 0x70 are single-byte varints.
        }
        out.push(MULTIHASH_SHA2_256);
        out.push(SHA2_256_LEN);
        out.extend_from_slice(&self.digest);
        out
    }

    /// Parses the binary form; only sha2-256 and the raw and dag-pb codecs are accepted.
    pub fn from_bytes(bytes: &[u8]) -> Result<Cid, CidParseError> {
        let (version, codec_code, multihash) = match bytes.first() {
            Some(&MULTIHASH_SHA2_256) => (0, CODEC_DAG_PB as u8, bytes),
            Some(1) => {
                let codec = *bytes.get(1).ok_or(parse_error("truncated"))?;
                if u64::from(codec) != CODEC_RAW && u64::from(codec) != CODEC_DAG_PB {
                    return Err(parse_error("codec is neither raw nor dag-pb"));
                }
                (1, codec, &bytes[2..])
            }
            _ => return Err(parse_error("unsupported version or hash function")),
        };
        if multihash.len() != 34 || multihash[0] != MULTIHASH_SHA2_256 || multihash[1] != 32 {
            return Err(parse_error("multihash is not a 32-byte sha2-256"));
        }
        let mut digest = [0u8; 32];
        digest.copy_from_slice(&multihash[2..]);
        Ok(Cid {
            version,
            codec_code,
            digest,
        })
    }
}

impl fmt::Display for Cid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bytes = self.to_bytes();
        if self.version == 0 {
            f.write_str(&base58btc_encode(&bytes))
        } else {
            write!(f, "b{}", base32_lower_encode(&bytes))
        }
    }
}

impl fmt::Debug for Cid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Cid({self})")
    }
}

impl FromStr for Cid {
    type Err = CidParseError;

    /// Accepts `Qm…` (v0, base58btc), `b…` (v1, base32 lower) and `z…` (v1, base58btc,
    /// as js-ipfs prints v1 CIDs by default).
    fn from_str(text: &str) -> Result<Cid, CidParseError> {
        if text.len() == 46 && text.starts_with("Qm") {
            let bytes = base58btc_decode(text).ok_or(parse_error("bad base58"))?;
            return Cid::from_bytes(&bytes);
        }
        let bytes = match text.as_bytes().first() {
            Some(b'b') => base32_lower_decode(&text[1..]).ok_or(parse_error("bad base32"))?,
            Some(b'z') => base58btc_decode(&text[1..]).ok_or(parse_error("bad base58"))?,
            _ => return Err(parse_error("unsupported multibase")),
        };
        if bytes.first() != Some(&1) {
            return Err(parse_error("a multibase CID must be version 1"));
        }
        Cid::from_bytes(&bytes)
    }
}

const BASE58_ALPHABET: &[u8; 58] = b"123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";

fn base58btc_encode(bytes: &[u8]) -> String {
    // Repeated division of a big-endian base-256 number by 58; inputs are ≤ 36 bytes.
    let zeros = bytes.iter().take_while(|&&b| b == 0).count();
    let mut digits: Vec<u8> = Vec::with_capacity(bytes.len() * 138 / 100 + 1);
    for &byte in bytes {
        let mut carry = u32::from(byte);
        for digit in digits.iter_mut() {
            carry += u32::from(*digit) << 8;
            *digit = (carry % 58) as u8;
            carry /= 58;
        }
        while carry > 0 {
            digits.push((carry % 58) as u8);
            carry /= 58;
        }
    }
    let mut out = String::with_capacity(zeros + digits.len());
    out.extend(std::iter::repeat_n('1', zeros));
    out.extend(
        digits
            .iter()
            .rev()
            .map(|&d| BASE58_ALPHABET[d as usize] as char),
    );
    out
}

fn base58btc_decode(text: &str) -> Option<Vec<u8>> {
    if text.len() > 128 {
        return None; // A limit on everything: CIDs are short.
    }
    let zeros = text.bytes().take_while(|&c| c == b'1').count();
    let mut bytes: Vec<u8> = Vec::new(); // little-endian base-256
    for c in text.bytes() {
        let value = BASE58_ALPHABET.iter().position(|&a| a == c)? as u32;
        let mut carry = value;
        for byte in bytes.iter_mut() {
            carry += u32::from(*byte) * 58;
            *byte = (carry & 0xff) as u8;
            carry >>= 8;
        }
        while carry > 0 {
            bytes.push((carry & 0xff) as u8);
            carry >>= 8;
        }
    }
    let mut out = vec![0u8; zeros];
    out.extend(bytes.iter().rev());
    Some(out)
}

const BASE32_ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";

fn base32_lower_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 8 / 5 + 1);
    let mut buffer: u32 = 0;
    let mut bits = 0;
    for &byte in bytes {
        buffer = (buffer << 8) | u32::from(byte);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(BASE32_ALPHABET[((buffer >> bits) & 31) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(BASE32_ALPHABET[((buffer << (5 - bits)) & 31) as usize] as char);
    }
    out
}

fn base32_lower_decode(text: &str) -> Option<Vec<u8>> {
    if text.len() > 128 {
        return None;
    }
    let mut out = Vec::with_capacity(text.len() * 5 / 8);
    let mut buffer: u32 = 0;
    let mut bits = 0;
    for c in text.bytes() {
        let value = BASE32_ALPHABET.iter().position(|&a| a == c)? as u32;
        buffer = (buffer << 5) | value;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push(((buffer >> bits) & 0xff) as u8);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_both_forms() {
        for text in [
            "QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5o",
            "bafkreifjjcie6lypi6ny7amxnfftagclbuxndqonfipmb64f2km2devei4",
            "bafybeiedpcapwld4tkgtzwahfofgn4wex5ryysf4se6hwpmlrsh4ntnrau",
        ] {
            let cid: Cid = text.parse().unwrap();
            assert_eq!(cid.to_string(), text);
            assert_eq!(Cid::from_bytes(&cid.to_bytes()).unwrap(), cid);
        }
    }

    #[test]
    fn hello_world_raw_cid() {
        let cid = Cid::for_block(CidVersion::V1, Codec::Raw, b"hello world\n");
        assert_eq!(
            cid.to_string(),
            "bafkreifjjcie6lypi6ny7amxnfftagclbuxndqonfipmb64f2km2devei4"
        );
        assert!(cid.verifies(b"hello world\n"));
        assert!(!cid.verifies(b"hello world"));
    }

    #[test]
    fn node_answers_compare_by_content() {
        // What js-ipfs (CIDv0, or v1 in base58 `z…`) and Kubo (CIDv1 base32) answer for
        // the same dag-pb block: equal digest and codec.
        let ours: Cid = "QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5o"
            .parse()
            .unwrap();
        let v1 = Cid::from_digest(CidVersion::V1, Codec::DagPb, *ours.digest());
        let kubo: Cid = v1.to_string().parse().unwrap();
        assert!(v1.to_string().starts_with("bafybei"));
        assert!(ours.same_content(&kubo));
        let z = format!("z{}", base58btc_encode(&v1.to_bytes()));
        assert!(ours.same_content(&z.parse().unwrap()));
        let raw = Cid::from_digest(CidVersion::V1, Codec::Raw, *ours.digest());
        assert!(!ours.same_content(&raw));
    }

    #[test]
    fn rejects_garbage() {
        for text in [
            "",
            "Qm",
            "x123",
            "bafk!",
            "QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff50",
        ] {
            assert!(text.parse::<Cid>().is_err(), "{text}");
        }
    }
}
