//! Full-text search beside medledger's `GET /v1/search`: the records of a medledger bulk
//! export (`POST /v1/exports`, one NDJSON file per record type), the query file
//! `bench/search.sh` writes, and the hits a peer answers.
//!
//! The peer is loaded with the export's records as they are (the same ids, times and
//! metadata medledger serves), so both systems search the same text.

use std::io::BufRead;
use std::path::{Path, PathBuf};

use medledger_chaincode::Timestamp;
use serde_json::value::RawValue;

use crate::error::{PeerError, Result};

/// The fields of one exported record a search table holds; the export's other fields
/// (version, status, payload, ledger position) are ignored.
#[derive(Debug, serde::Deserialize)]
pub struct ExportedRecord {
    /// The record's id, unique in an export.
    pub record_id: String,
    /// Whose record.
    pub patient_id: String,
    /// Where it was made.
    pub hospital_id: String,
    /// `lab_result`, `vital_signs`, ...
    pub record_type: String,
    /// Clinical time; hits are ordered newest first by it.
    pub created_at: Timestamp,
    /// The metadata JSON object as exported (its text, unparsed); `None` once erased.
    pub metadata: Option<Box<RawValue>>,
}

/// The export's files in `dir` (`*.ndjson`), sorted by name; an error when there are none.
pub fn export_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(dir).map_err(|e| PeerError::io_path("read_dir", dir, e))?;
    let mut files = Vec::new();
    for entry in entries {
        let path = entry
            .map_err(|e| PeerError::io_path("read_dir entry", dir, e))?
            .path();
        if path.extension().is_some_and(|x| x == "ndjson") && path.is_file() {
            files.push(path);
        }
    }
    if files.is_empty() {
        return Err(PeerError::Invalid(format!(
            "no *.ndjson files in {}",
            dir.display()
        )));
    }
    files.sort();
    Ok(files)
}

/// Calls `each` with every record of one export file, in file order; the number of
/// records. Empty lines are skipped; a line that is not a record is an error naming the
/// file and line.
pub fn read_export_file(
    path: &Path,
    mut each: impl FnMut(ExportedRecord) -> Result<()>,
) -> Result<u64> {
    let file = std::fs::File::open(path).map_err(|e| PeerError::io_path("open", path, e))?;
    let mut records = 0u64;
    for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|e| PeerError::io_path("read", path, e))?;
        if line.trim().is_empty() {
            continue;
        }
        let record: ExportedRecord = serde_json::from_str(&line)
            .map_err(|e| PeerError::Decode(format!("{} line {}: {e}", path.display(), i + 1)))?;
        each(record)?;
        records += 1;
    }
    Ok(records)
}

/// The queries of one class (`rare`, `common`, `two_terms`), each a string of words the
/// hits must all hold.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct QueryClass {
    /// The class's name, as the query file spells it.
    pub name: String,
    /// Its queries, in file order.
    pub queries: Vec<String>,
}

/// Queries a class may hold: a class runs its queries over and over for its seconds.
pub const QUERIES_PER_CLASS_MAX: usize = 100_000;

/// Parses a query file: one query a line, `<class>\t<words>`; classes in order of their
/// first line. Empty lines are skipped; a line without a tab or words, or a class name
/// that is not `[a-z0-9_]+`, is an error naming the line.
pub fn parse_queries(text: &str) -> Result<Vec<QueryClass>> {
    let mut classes: Vec<QueryClass> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let bad = |why: &str| PeerError::Invalid(format!("query file line {}: {why}", i + 1));
        let (class, words) = line
            .split_once('\t')
            .ok_or_else(|| bad("expected <class><TAB><words>"))?;
        let words = words.trim();
        if class.is_empty()
            || !class
                .bytes()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_')
        {
            return Err(bad("the class is lowercase letters, digits and _"));
        }
        if words.is_empty() {
            return Err(bad("no words"));
        }
        let at = match classes.iter().position(|c| c.name == class) {
            Some(at) => at,
            None => {
                classes.push(QueryClass {
                    name: class.to_string(),
                    queries: Vec::new(),
                });
                classes.len() - 1
            }
        };
        if classes[at].queries.len() == QUERIES_PER_CLASS_MAX {
            return Err(bad("too many queries in this class"));
        }
        classes[at].queries.push(words.to_string());
    }
    if classes.is_empty() {
        return Err(PeerError::Invalid("the query file holds no query".into()));
    }
    Ok(classes)
}

/// Reads and parses a query file ([`parse_queries`]).
pub fn read_queries(path: &Path) -> Result<Vec<QueryClass>> {
    let text = std::fs::read_to_string(path).map_err(|e| PeerError::io_path("read", path, e))?;
    parse_queries(&text)
}

/// One record a search answered, with every column a client reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SearchHit {
    /// The record's id.
    pub record_id: String,
    /// Whose record.
    pub patient_id: String,
    /// Where it was made.
    pub hospital_id: String,
    /// Its type.
    pub record_type: String,
    /// Clinical time, microseconds since the Unix epoch.
    pub created_at_micros: i64,
    /// The metadata JSON text as the peer returns it.
    pub metadata: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_grouped_by_class_in_file_order() {
        let classes = parse_queries(
            "common\tfinal\nrare\tquinine\n\ncommon\tpanel\ntwo_terms\tfinal lipid\n",
        )
        .expect("parses");
        let names: Vec<&str> = classes.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["common", "rare", "two_terms"]);
        assert_eq!(classes[0].queries, ["final", "panel"]);
        assert_eq!(classes[2].queries, ["final lipid"]);
    }

    #[test]
    fn a_malformed_query_line_is_named() {
        for text in ["common final\n", "common\t \n", "Common\tfinal\n", ""] {
            let err = parse_queries(text).expect_err(text);
            assert!(matches!(err, PeerError::Invalid(_)), "{text:?}: {err}");
        }
        let err = parse_queries("rare\tx\nrare y\n").expect_err("no tab");
        assert!(err.to_string().contains("line 2"), "{err}");
    }

    #[test]
    fn an_exported_record_keeps_its_metadata_text_and_an_erased_one_has_none() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("lab_result.ndjson");
        std::fs::write(
            &path,
            concat!(
                r#"{"record_id":"r-1","patient_id":"p-1","hospital_id":"h-1","record_type":"lab_result","created_at":"2026-01-01T00:00:00.078Z","version":2,"metadata":{"title":"Lipid panel","codes":["2093-3"]},"erased":false}"#,
                "\n\n",
                r#"{"record_id":"r-2","patient_id":"p-1","hospital_id":"h-1","record_type":"lab_result","created_at":"2026-01-02T00:00:00Z","metadata":null,"erased":true}"#,
                "\n"
            ),
        )
        .expect("write");
        let mut seen = Vec::new();
        let n = read_export_file(&path, |r| {
            seen.push(r);
            Ok(())
        })
        .expect("reads");
        assert_eq!(n, 2);
        assert_eq!(
            seen[0].metadata.as_ref().map(|m| m.get()),
            Some(r#"{"title":"Lipid panel","codes":["2093-3"]}"#)
        );
        assert_eq!(seen[0].created_at.unix_ms(), 1_767_225_600_078);
        assert!(seen[1].metadata.is_none());
        assert_eq!(export_files(dir.path()).expect("files"), vec![path.clone()]);

        std::fs::write(&path, "{\"record_id\":\"r-3\"}\n").expect("write");
        let err = read_export_file(&path, |_| Ok(())).expect_err("fields missing");
        assert!(err.to_string().contains("line 1"), "{err}");
    }
}
