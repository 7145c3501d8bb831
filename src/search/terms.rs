//! Words of clinical text, and the keyed terms the search index stores for them.
//!
//! A word is a maximal run of Unicode letters and digits, lowercased: `"E11.9 Type-2"` has
//! the words `e11`, `9`, `type`, `2`. Metadata is a JSON object; its words are those of
//! its string values (and numbers), not its keys (every record of a type has the same
//! keys). The index never holds a word: it holds the first 16 bytes of
//! HMAC-SHA256(search key, word), the search key derived from the master key
//! (stored nowhere), so the index on its own tells
//! nothing of what the records say.

use std::collections::BTreeSet;

use hmac::Mac;

/// A keyed hash of one word.
pub type Term = [u8; TERM_BYTES];
/// Bytes of a term: 128 bits, so two words share a term with negligible chance.
pub const TERM_BYTES: usize = 16;
/// A word longer than this (bytes) is not indexed (no clinical word is; a base64 blob is).
pub const WORD_BYTES_MAX: usize = 64;
/// Distinct words indexed of one record (its metadata and reasons together), at most.
pub const WORDS_PER_RECORD_MAX: usize = 512;
/// JSON nesting followed into metadata, at most (the contract bounds metadata's size).
const DEPTH_MAX: usize = 32;

/// Hashes words to terms under the search key.
#[derive(Clone)]
pub struct TermHasher {
    mac: hmac::Hmac<sha2::Sha256>,
}

impl TermHasher {
    /// A hasher keyed with `mac` (the search key's HMAC, ready for input).
    pub fn new(mac: hmac::Hmac<sha2::Sha256>) -> TermHasher {
        TermHasher { mac }
    }

    /// The term of `word` (already lowercased: one of [`words`]'s).
    pub fn term(&self, word: &str) -> Term {
        let mut mac = self.mac.clone();
        mac.update(b"medledger-search-term-v1\0");
        mac.update(word.as_bytes());
        let digest = mac.finalize().into_bytes();
        let mut term = [0u8; TERM_BYTES];
        term.copy_from_slice(&digest[..TERM_BYTES]);
        term
    }
}

/// Calls `each` with every word of `text`, in order, with its byte range in `text`, the
/// word lowercased. Words longer than [`WORD_BYTES_MAX`] are skipped.
pub fn for_each_word(text: &str, mut each: impl FnMut(std::ops::Range<usize>, String)) {
    let mut start = None;
    let end_at =
        |start: usize, end: usize, each: &mut dyn FnMut(std::ops::Range<usize>, String)| {
            if end - start <= WORD_BYTES_MAX {
                each(start..end, text[start..end].to_lowercase());
            }
        };
    for (i, c) in text.char_indices() {
        match (c.is_alphanumeric(), start) {
            (true, None) => start = Some(i),
            (false, Some(s)) => {
                end_at(s, i, &mut each);
                start = None;
            }
            _ => {}
        }
    }
    if let Some(s) = start {
        end_at(s, text.len(), &mut each);
    }
}

/// The distinct words of `text`.
pub fn words(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for_each_word(text, |_, w| {
        out.insert(w);
    });
    out
}

/// The distinct words of metadata's values: its string values and numbers, not its keys.
/// Text that is not JSON (a format-1 ledger's metadata was checked as JSON too; this is
/// belt and braces) is taken as one text.
pub fn metadata_words(metadata: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    match serde_json::from_str::<serde_json::Value>(metadata) {
        Ok(value) => visit_values(&value, &mut String::new(), 0, &mut |_, text| {
            for_each_word(text, |_, w| {
                out.insert(w);
            })
        }),
        Err(_) => out = words(metadata),
    }
    out
}

/// Calls `each` with the path (`title`, `codes[1]`, `vitals.bp`) and the text of every
/// string value and number of `value`, in order, down to [`DEPTH_MAX`]; `path` is the
/// buffer the paths are built in.
fn visit_values(
    value: &serde_json::Value,
    path: &mut String,
    depth: usize,
    each: &mut dyn FnMut(&str, &str),
) {
    use serde_json::Value;
    use std::fmt::Write;
    if depth > DEPTH_MAX {
        return;
    }
    let at = path.len();
    match value {
        Value::String(s) => each(path, s),
        Value::Number(n) => each(path, &n.to_string()),
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                let _ = write!(path, "[{i}]");
                visit_values(v, path, depth + 1, each);
                path.truncate(at);
            }
        }
        Value::Object(map) => {
            for (k, v) in map {
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(k);
                visit_values(v, path, depth + 1, each);
                path.truncate(at);
            }
        }
        Value::Null | Value::Bool(_) => {}
    }
}

/// One string value of a record's metadata with the query's words marked: `field` is
/// its path (`title`, `codes[1]`, `vitals.bp`), `fragment` its text, HTML-escaped, with
/// every matched word in `<mark>`…`</mark>`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Highlight {
    pub field: String,
    pub fragment: String,
}

/// Highlights shown per hit, at most.
pub const HIGHLIGHTS_MAX: usize = 8;

/// The string values of `metadata` holding one of `query` (lowercased words), marked.
pub fn highlights(metadata: &str, query: &BTreeSet<String>) -> Vec<Highlight> {
    let mut out = Vec::new();
    if let Ok(value) = serde_json::from_str::<serde_json::Value>(metadata) {
        visit_values(&value, &mut String::new(), 0, &mut |path, text| {
            if out.len() < HIGHLIGHTS_MAX {
                if let Some(fragment) = mark(text, query) {
                    out.push(Highlight {
                        field: path.to_owned(),
                        fragment,
                    });
                }
            }
        });
    }
    out
}

/// `text` HTML-escaped with the words of `query` in `<mark>`; `None` if none is there.
fn mark(text: &str, query: &BTreeSet<String>) -> Option<String> {
    let mut hits = Vec::new();
    for_each_word(text, |range, word| {
        if query.contains(&word) {
            hits.push(range);
        }
    });
    if hits.is_empty() {
        return None;
    }
    let mut out = String::with_capacity(text.len() + hits.len() * 13);
    let mut at = 0;
    for range in hits {
        escape_into(&text[at..range.start], &mut out);
        out.push_str("<mark>");
        escape_into(&text[range.clone()], &mut out);
        out.push_str("</mark>");
        at = range.end;
    }
    escape_into(&text[at..], &mut out);
    Some(out)
}

fn escape_into(text: &str, out: &mut String) {
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_runs_of_letters_and_digits_lowercased() {
        let w: Vec<String> = words("E11.9 Type-2 Diabète, ÉTÉ e11").into_iter().collect();
        assert_eq!(w, ["2", "9", "diabète", "e11", "type", "été"]);
        assert!(words(&"x".repeat(WORD_BYTES_MAX + 1)).is_empty());
        assert_eq!(words(&"x".repeat(WORD_BYTES_MAX)).len(), 1);
    }

    #[test]
    fn metadata_words_skip_keys_and_follow_values() {
        let w = metadata_words(
            r#"{"title":"Chest X-ray","codes":["I10",{"deep":"Left"}],"hr":72,"ok":true}"#,
        );
        let w: Vec<&str> = w.iter().map(String::as_str).collect();
        assert_eq!(w, ["72", "chest", "i10", "left", "ray", "x"]);
    }

    #[test]
    fn highlights_mark_words_and_escape_the_rest() {
        let q: BTreeSet<String> = ["chest".to_string(), "i10".to_string()].into();
        let h = highlights(
            r#"{"title":"<b>Chest</b> & CHEST pain","codes":["E11","I10"]}"#,
            &q,
        );
        assert_eq!(
            h,
            vec![
                Highlight {
                    field: "codes[1]".into(),
                    fragment: "<mark>I10</mark>".into()
                },
                Highlight {
                    field: "title".into(),
                    fragment: "&lt;b&gt;<mark>Chest</mark>&lt;/b&gt; &amp; <mark>CHEST</mark> pain"
                        .into()
                },
            ]
        );
    }

    #[test]
    fn terms_depend_on_the_key() {
        let a = TermHasher::new(<hmac::Hmac<sha2::Sha256>>::new_from_slice(&[1; 32]).unwrap());
        let b = TermHasher::new(<hmac::Hmac<sha2::Sha256>>::new_from_slice(&[2; 32]).unwrap());
        assert_eq!(a.term("chest"), a.term("chest"));
        assert_ne!(a.term("chest"), a.term("chess"));
        assert_ne!(a.term("chest"), b.term("chest"));
    }
}
