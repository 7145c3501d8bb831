//! Lowercase hex in the proof documents, parsed with the field's name in every error.

use crate::error::VerifyError;
use crate::merkle::{Hash, HASH_LEN};

/// Lowercase hex of `bytes`, the only form the documents use.
#[must_use]
pub fn to_hex(bytes: &[u8]) -> String {
    hex::encode(bytes)
}

/// Lowercase hex of each hash, in order: the documents' lists of hashes.
pub(crate) fn hex_list(hashes: &[Hash]) -> Vec<String> {
    hashes.iter().map(|h| to_hex(h)).collect()
}

/// Decodes lowercase hex of exactly `N` bytes; the error names `field`.
pub(crate) fn parse_array<const N: usize>(field: &str, text: &str) -> Result<[u8; N], VerifyError> {
    let bad = |reason: String| VerifyError::MalformedHex {
        field: field.to_string(),
        reason,
    };
    if text.len() != 2 * N {
        return Err(bad(format!(
            "expected {} lowercase hex digits ({N} bytes), got {} characters",
            2 * N,
            text.len()
        )));
    }
    if let Some((at, c)) = text
        .char_indices()
        .find(|(_, c)| !matches!(c, '0'..='9' | 'a'..='f'))
    {
        return Err(bad(format!(
            "character {c:?} at position {at} is not a lowercase hex digit"
        )));
    }
    let mut out = [0u8; N];
    hex::decode_to_slice(text, &mut out).map_err(|e| bad(e.to_string()))?;
    Ok(out)
}

/// Decodes a 32-byte hash; the error names `field`.
pub(crate) fn parse_hash(field: &str, text: &str) -> Result<Hash, VerifyError> {
    parse_array::<HASH_LEN>(field, text)
}

/// Decodes a list of at most `max` hashes; errors name the element, e.g. `audit_path[3]`.
pub(crate) fn parse_hashes(
    field: &str,
    texts: &[String],
    max: usize,
) -> Result<Vec<Hash>, VerifyError> {
    if texts.len() > max {
        return Err(VerifyError::TooManyHashes {
            field: field.to_string(),
            len: texts.len(),
            max,
        });
    }
    texts
        .iter()
        .enumerate()
        .map(|(i, t)| parse_hash(&format!("{field}[{i}]"), t))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_lowercase_hex_of_the_right_length() {
        let ok = "00ff".repeat(16);
        assert_eq!(parse_hash("root", &ok).unwrap()[1], 0xff);
        for (text, needle) in [
            ("00FF".repeat(16), "'F' at position 2"),
            ("0".repeat(63), "got 63 characters"),
            ("0".repeat(66), "got 66 characters"),
            (format!("{}zz", "0".repeat(62)), "'z' at position 62"),
            (format!("{}é", "0".repeat(62)), "'é' at position 62"),
        ] {
            let err = parse_hash("chain.root", &text).unwrap_err();
            let msg = err.to_string();
            assert!(msg.starts_with("field `chain.root`: "), "{msg}");
            assert!(msg.contains(needle), "{msg} lacks {needle}");
        }
        let list = vec![ok.clone(), "x".into()];
        assert_eq!(
            parse_hashes("audit_path", &list, 64)
                .unwrap_err()
                .to_string(),
            "field `audit_path[1]`: expected 64 lowercase hex digits (32 bytes), got 1 characters"
        );
        assert!(matches!(
            parse_hashes("audit_path", &list, 1),
            Err(VerifyError::TooManyHashes { len: 2, max: 1, .. })
        ));
    }
}
