//! The identity provider's signing keys: a JWKS document (RFC 7517) read from a file, each
//! key with the one algorithm it verifies, selected by a token's `kid`.
//!
//! Only signature keys of the asymmetric algorithms are taken: RSA (RS256/384/512,
//! PS256/384/512), EC P-256 (ES256) and P-384 (ES384), Ed25519 (EdDSA). Keys the server
//! cannot use for signatures (`use: enc`, encryption algorithms, other curves, symmetric
//! `oct` keys: a shared secret has no place in a public key set) are skipped and counted;
//! Keycloak and Entra ID publish encryption keys beside their signing keys. A signing key
//! that is malformed, an RSA key under 2,048 bits, a duplicate `kid`, or a set left with no
//! usable key refuses the whole document: the server starts (or keeps its old set) rather
//! than guess.

use base64::Engine as _;
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::Value;

/// The largest JWKS document read.
pub const JWKS_BYTES_MAX: usize = 1 << 20;
/// The most keys a document may hold.
pub const JWKS_KEYS_MAX: usize = 256;
/// The shortest RSA modulus accepted, in bits.
const RSA_BITS_MIN: usize = 2048;

/// One verification key.
pub struct SetKey {
    /// Its `kid`: what a token names in its header (none: the one key of
    /// `--jwt-public-key`, used for every token).
    pub kid: Option<String>,
    /// The one algorithm this key verifies.
    pub algorithm: Algorithm,
    pub key: DecodingKey,
}

impl std::fmt::Debug for SetKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SetKey")
            .field("kid", &self.kid)
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

/// A parsed key set.
#[derive(Debug)]
pub struct KeySet {
    pub keys: Vec<SetKey>,
    /// Keys of the document that are not signature keys this server uses.
    pub skipped: usize,
}

impl KeySet {
    /// The key a token with header `kid` is verified with: the key of that `kid`; or,
    /// when the set is one key without a `kid` (a PEM key), that key; or, for a token
    /// without `kid`, the set's only key.
    pub fn pick(&self, kid: Option<&str>) -> Result<&SetKey, &'static str> {
        if let [only] = self.keys.as_slice() {
            if only.kid.is_none() || kid.is_none() || only.kid.as_deref() == kid {
                return Ok(only);
            }
        }
        match kid {
            Some(kid) => self
                .keys
                .iter()
                .find(|k| k.kid.as_deref() == Some(kid))
                .ok_or("the bearer token's key (kid) is not in this server's key set"),
            None => Err("the bearer token names no key (kid) and this server has several"),
        }
    }
}

/// Parses a JWKS document (`{"keys": [...]}`).
pub fn parse(bytes: &[u8]) -> Result<KeySet, String> {
    if bytes.len() > JWKS_BYTES_MAX {
        return Err(format!("the key set is over {} bytes", JWKS_BYTES_MAX));
    }
    let doc: Value =
        serde_json::from_slice(bytes).map_err(|e| format!("the key set is not JSON: {e}"))?;
    let Some(keys) = doc.get("keys").and_then(Value::as_array) else {
        return Err(
            "the key set has no `keys` array (a JWKS document is {\"keys\": [...]})".into(),
        );
    };
    if keys.len() > JWKS_KEYS_MAX {
        return Err(format!("the key set has over {JWKS_KEYS_MAX} keys"));
    }
    let mut set = KeySet {
        keys: Vec::new(),
        skipped: 0,
    };
    for (i, jwk) in keys.iter().enumerate() {
        let key = match signing_key(jwk) {
            Ok(Some(key)) => key,
            Ok(None) => {
                set.skipped += 1;
                continue;
            }
            Err(e) => return Err(format!("key {i} of the key set: {e}")),
        };
        if let Some(kid) = &key.kid {
            if set.keys.iter().any(|k| k.kid.as_ref() == Some(kid)) {
                return Err(format!("key {i} of the key set: kid {kid:?} appears twice"));
            }
        } else if !set.keys.is_empty() || keys.len() > 1 {
            // With several keys, a token must be able to name the one it was signed with.
            return Err(format!("key {i} of the key set has no kid"));
        }
        set.keys.push(key);
    }
    if set.keys.is_empty() {
        return Err(format!(
            "the key set has no signature key this server uses (RSA, EC P-256/P-384, Ed25519); {} skipped",
            set.skipped
        ));
    }
    Ok(set)
}

/// The verification key of one JWK, or none when it is not a signature key this server
/// uses.
fn signing_key(jwk: &Value) -> Result<Option<SetKey>, String> {
    let text = |name: &str| jwk.get(name).and_then(Value::as_str);
    if text("use").is_some_and(|u| u != "sig") {
        return Ok(None);
    }
    let kid = match jwk.get("kid") {
        None | Some(Value::Null) => None,
        Some(Value::String(kid)) if (1..=256).contains(&kid.len()) => Some(kid.clone()),
        Some(_) => return Err("its kid is not a string of 1 to 256 bytes".into()),
    };
    let alg = text("alg");
    let b64 = |name: &str| -> Result<Vec<u8>, String> {
        let value = text(name).ok_or_else(|| format!("it has no `{name}`"))?;
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(value.trim_end_matches('='))
            .map_err(|_| format!("its `{name}` is not base64url"))
    };
    let (algorithm, key) = match text("kty") {
        Some("RSA") => {
            let algorithm = match alg {
                None | Some("RS256") => Algorithm::RS256,
                Some("RS384") => Algorithm::RS384,
                Some("RS512") => Algorithm::RS512,
                Some("PS256") => Algorithm::PS256,
                Some("PS384") => Algorithm::PS384,
                Some("PS512") => Algorithm::PS512,
                Some(_) => return Ok(None),
            };
            let n = b64("n")?;
            let bits = n.iter().position(|b| *b != 0).map_or(0, |first| {
                (n.len() - first) * 8 - n[first].leading_zeros() as usize
            });
            if bits < RSA_BITS_MIN {
                return Err(format!(
                    "its RSA modulus has {bits} bits, under {RSA_BITS_MIN}"
                ));
            }
            b64("e")?;
            let key = DecodingKey::from_rsa_components(
                text("n").unwrap_or_default(),
                text("e").unwrap_or_default(),
            )
            .map_err(|_| "its RSA components are not a key".to_string())?;
            (algorithm, key)
        }
        Some("EC") => {
            let (algorithm, len) = match (text("crv"), alg) {
                (Some("P-256"), None | Some("ES256")) => (Algorithm::ES256, 32),
                (Some("P-384"), None | Some("ES384")) => (Algorithm::ES384, 48),
                (Some("P-256" | "P-384"), Some(_)) => {
                    return Err("its alg does not match its curve".into())
                }
                _ => return Ok(None),
            };
            if b64("x")?.len() != len || b64("y")?.len() != len {
                return Err(format!("its coordinates are not {len} bytes each"));
            }
            let key = DecodingKey::from_ec_components(
                text("x").unwrap_or_default(),
                text("y").unwrap_or_default(),
            )
            .map_err(|_| "its coordinates are not a point of its curve".to_string())?;
            (algorithm, key)
        }
        Some("OKP") => {
            match (text("crv"), alg) {
                (Some("Ed25519"), None | Some("EdDSA")) => {}
                (Some("Ed25519"), Some(_)) => return Err("its alg does not match its curve".into()),
                _ => return Ok(None),
            }
            if b64("x")?.len() != 32 {
                return Err("its Ed25519 key is not 32 bytes".into());
            }
            let key = DecodingKey::from_ed_components(text("x").unwrap_or_default())
                .map_err(|_| "its Ed25519 key is not a key".to_string())?;
            (Algorithm::EdDSA, key)
        }
        // `oct` (a shared secret), or a key type this server does not know.
        _ => return Ok(None),
    };
    Ok(Some(SetKey {
        kid,
        algorithm,
        key,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rsa_jwk(kid: &str) -> Value {
        // The test RSA key's public half (fixtures/jwt/test-rsa.pub.jwk.json).
        let mut jwk: Value =
            serde_json::from_str(include_str!("../../fixtures/jwt/test-rsa.pub.jwk.json")).unwrap();
        jwk["kid"] = kid.into();
        jwk
    }

    #[test]
    fn encryption_and_symmetric_keys_are_skipped_and_signature_keys_kept() {
        let doc = serde_json::json!({"keys": [
            rsa_jwk("sig-1"),
            {"kty": "RSA", "use": "enc", "kid": "enc-1", "alg": "RSA-OAEP", "n": "AQAB", "e": "AQAB"},
            {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"},
            {"kty": "OKP", "crv": "X25519", "kid": "ecdh", "x": "AAAA"},
            {"kty": "OKP", "crv": "Ed25519", "kid": "ed-1",
             "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"},
        ]});
        let set = parse(doc.to_string().as_bytes()).unwrap();
        assert_eq!(set.skipped, 3);
        let kinds: Vec<_> = set
            .keys
            .iter()
            .map(|k| (k.kid.clone().unwrap(), k.algorithm))
            .collect();
        assert_eq!(
            kinds,
            [
                ("sig-1".to_string(), Algorithm::RS256),
                ("ed-1".to_string(), Algorithm::EdDSA)
            ]
        );
        assert_eq!(set.pick(Some("ed-1")).unwrap().algorithm, Algorithm::EdDSA);
        assert!(set.pick(Some("enc-1")).is_err());
        assert!(set.pick(None).is_err());
    }

    #[test]
    fn a_doubtful_set_is_refused_whole() {
        let refused = |doc: Value| parse(doc.to_string().as_bytes()).unwrap_err();
        assert!(
            refused(serde_json::json!({"keys": [rsa_jwk("a"), rsa_jwk("a")]}))
                .contains("appears twice")
        );
        assert!(refused(serde_json::json!({"keys": []})).contains("no signature key"));
        assert!(refused(serde_json::json!({"nokeys": []})).contains("no `keys` array"));
        let mut short = rsa_jwk("short");
        short["n"] = "AQAB".into();
        assert!(refused(serde_json::json!({"keys": [short]})).contains("under 2048"));
        let ec_bad =
            serde_json::json!({"kty": "EC", "crv": "P-256", "kid": "ec", "x": "AAAA", "y": "AAAA"});
        assert!(refused(serde_json::json!({"keys": [ec_bad]})).contains("32 bytes"));
        let mismatched = serde_json::json!({"kty": "EC", "crv": "P-256", "alg": "ES384", "kid": "ec", "x": "AAAA", "y": "AAAA"});
        assert!(refused(serde_json::json!({"keys": [mismatched]})).contains("does not match"));
        let mut no_kid = rsa_jwk("x");
        no_kid.as_object_mut().unwrap().remove("kid");
        assert!(refused(serde_json::json!({"keys": [rsa_jwk("a"), no_kid]})).contains("no kid"));
        assert!(parse(&vec![b' '; JWKS_BYTES_MAX + 1]).is_err());
        assert!(parse(b"not json").unwrap_err().contains("not JSON"));
    }

    #[test]
    fn one_key_without_kid_verifies_every_token() {
        let mut jwk = rsa_jwk("x");
        jwk.as_object_mut().unwrap().remove("kid");
        let set = parse(serde_json::json!({"keys": [jwk]}).to_string().as_bytes()).unwrap();
        assert!(set.pick(None).is_ok());
        assert!(set.pick(Some("anything")).is_ok());
        // One key with a kid: a token naming another kid is refused.
        let set = parse(
            serde_json::json!({"keys": [rsa_jwk("k1")]})
                .to_string()
                .as_bytes(),
        )
        .unwrap();
        assert!(set.pick(Some("k1")).is_ok());
        assert!(set.pick(None).is_ok());
        assert!(set.pick(Some("k2")).is_err());
    }
}
