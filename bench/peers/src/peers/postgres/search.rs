//! PostgreSQL's full-text search over the records of a medledger bulk export: a table of
//! them loaded with COPY, a GIN index over `jsonb_to_tsvector('simple', metadata,
//! '["string"]')` (the metadata's string values, lowercased, not stemmed: the nearest
//! PostgreSQL has to medledger's words), and one prepared query that ANDs the words.
//!
//! The table is `search_records`, beside the peer's ledger tables (`records` is theirs).
//! Loading is setup, not measured; the index builds are timed by the caller. A second
//! index, a btree on `created_at`, can be added after the GIN one: with it the planner may
//! walk the newest records first and compute each one's words until it has the page,
//! faster or much slower than the GIN index depending on how many records it must read
//! (its estimate of the words' frequency decides), so the bench measures both setups.

use std::io::Write;
use std::path::Path;
use std::time::{Instant, SystemTime};

use postgres::types::{FromSql, Type};
use postgres::{Client, Statement};

use super::{connect, from_time, Postgres};
use crate::error::{PeerError, Result};
use crate::search::{self, ExportedRecord, SearchHit};

const SCHEMA: &str = "
CREATE TABLE search_records (
    record_id   text        PRIMARY KEY,
    patient_id  text        NOT NULL,
    hospital_id text        NOT NULL,
    record_type text        NOT NULL,
    created_at  timestamptz NOT NULL,
    metadata    jsonb
)";

/// The indexed expression; the query must spell it the same way to use the index.
const WORDS: &str = "jsonb_to_tsvector('simple', metadata, '[\"string\"]')";

/// The GIN index's name (its size is reported on its own).
pub(super) const INDEX: &str = "search_records_words";

/// The btree on `created_at`'s name ([`Postgres::build_created_at_index`]).
const TIME_INDEX: &str = "search_records_time";

/// A session's memory for the index build, set for that session only: what a tuned
/// install with this machine's memory would give a bulk index build (the default, 64 MB,
/// makes GIN flush and merge its posting lists many times over).
const BUILD_MAINTENANCE_WORK_MEM: &str = "1GB";

/// What [`Postgres::load_export`] loaded.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct SearchLoad {
    /// NDJSON files read.
    pub files: usize,
    /// Records loaded.
    pub records: u64,
    /// Of those, records without metadata (erased): in the table, never a hit.
    pub records_without_metadata: u64,
    /// Seconds the COPYs took (setup: not a measured figure).
    pub copy_seconds: f64,
}

impl Postgres {
    /// Creates `search_records` and loads every record of the export files in `dir` into
    /// it, one COPY per file. Fails on a second load (the table exists) or a record id
    /// seen twice (the primary key).
    pub fn load_export(&self, dir: &Path) -> Result<SearchLoad> {
        let files = search::export_files(dir)?;
        let mut client = connect(self.port)?;
        client.batch_execute(SCHEMA)?;
        let started = Instant::now();
        let (mut records, mut without_metadata) = (0u64, 0u64);
        for path in &files {
            let mut writer = std::io::BufWriter::with_capacity(
                1 << 20,
                client.copy_in(
                    "COPY search_records (record_id, patient_id, hospital_id, record_type, \
                     created_at, metadata) FROM STDIN",
                )?,
            );
            let mut line = String::new();
            let read = search::read_export_file(path, |record| {
                without_metadata += u64::from(record.metadata.is_none());
                line.clear();
                copy_line(&record, &mut line);
                writer
                    .write_all(line.as_bytes())
                    .map_err(|e| PeerError::io_path("COPY the records of", path, e))
            })?;
            let copied = writer
                .into_inner()
                .map_err(|e| PeerError::io_path("COPY the records of", path, e.into_error()))?
                .finish()?;
            assert_eq!(copied, read, "COPY stored every line it was sent");
            records += read;
        }
        Ok(SearchLoad {
            files: files.len(),
            records,
            records_without_metadata: without_metadata,
            copy_seconds: started.elapsed().as_secs_f64(),
        })
    }

    /// Builds the GIN index over the metadata's words, then ANALYZEs the table (the
    /// planner's statistics of the indexed words); what was built, for the figure's notes.
    pub fn build_search_index(&self) -> Result<String> {
        let mut client = connect(self.port)?;
        client.batch_execute(&format!(
            "SET maintenance_work_mem = '{BUILD_MAINTENANCE_WORK_MEM}'; \
             CREATE INDEX {INDEX} ON search_records USING gin ({WORDS}); \
             ANALYZE search_records"
        ))?;
        Ok(format!(
            "CREATE INDEX … USING gin ({WORDS}) with maintenance_work_mem = \
             {BUILD_MAINTENANCE_WORK_MEM}, then ANALYZE"
        ))
    }

    /// Adds a btree on `created_at DESC` (the order of the hits) beside the GIN index,
    /// then ANALYZEs again; what was built, for the figure's notes.
    pub fn build_created_at_index(&self) -> Result<String> {
        let mut client = connect(self.port)?;
        client.batch_execute(&format!(
            "SET maintenance_work_mem = '{BUILD_MAINTENANCE_WORK_MEM}'; \
             CREATE INDEX {TIME_INDEX} ON search_records (created_at DESC); \
             ANALYZE search_records"
        ))?;
        Ok("CREATE INDEX … (created_at DESC) beside the GIN index, then ANALYZE".into())
    }

    /// The plan PostgreSQL runs for `words` and how it went (`EXPLAIN (ANALYZE, BUFFERS)`
    /// of the search with `words` spelled out, as the first of a session's prepared
    /// executions plans it), one line per plan line.
    pub fn explain_search(&self, words: &str, limit: usize) -> Result<Vec<String>> {
        let mut client = connect(self.port)?;
        // A literal, quoted: EXPLAIN takes no bind parameters.
        let words = words.replace('\'', "''");
        let rows = client.query(
            &format!(
                "EXPLAIN (ANALYZE, BUFFERS) SELECT record_id, patient_id, hospital_id, \
                 record_type, created_at, metadata FROM search_records \
                 WHERE {WORDS} @@ plainto_tsquery('simple', '{words}') \
                 ORDER BY created_at DESC LIMIT {limit}"
            ),
            &[],
        )?;
        rows.iter().map(|row| Ok(row.try_get(0)?)).collect()
    }
}

/// The query every search runs, prepared once per session: the words ANDed
/// (`plainto_tsquery`), the newest `$2` hits, every column a client shows.
pub(super) fn prepare(client: &mut Client) -> Result<Statement> {
    Ok(client.prepare(&format!(
        "SELECT record_id, patient_id, hospital_id, record_type, created_at, metadata \
         FROM search_records WHERE {WORDS} @@ plainto_tsquery('simple', $1) \
         ORDER BY created_at DESC LIMIT $2"
    ))?)
}

/// Runs the prepared search for `words`, newest `limit` hits first.
pub(super) fn run(
    client: &mut Client,
    statement: &Statement,
    words: &str,
    limit: usize,
) -> Result<Vec<SearchHit>> {
    let limit = i64::try_from(limit).map_err(|_| PeerError::Invalid("limit".into()))?;
    let rows = client.query(statement, &[&words, &limit])?;
    rows.iter()
        .map(|row| {
            Ok(SearchHit {
                record_id: row.try_get(0)?,
                patient_id: row.try_get(1)?,
                hospital_id: row.try_get(2)?,
                record_type: row.try_get(3)?,
                created_at_micros: from_time(row.try_get::<_, SystemTime>(4)?),
                metadata: row.try_get::<_, Option<JsonbText>>(5)?.map(|m| m.0),
            })
        })
        .collect()
}

/// The sizes of the search table and its indexes, bytes, when the table exists.
pub(super) fn disk_breakdown(client: &mut Client) -> Result<Vec<(String, u64)>> {
    let exists: bool = client
        .query_one("SELECT to_regclass('search_records') IS NOT NULL", &[])?
        .get(0);
    if !exists {
        return Ok(Vec::new());
    }
    let row = client.query_one(
        &format!(
            "SELECT pg_relation_size('search_records'), pg_indexes_size('search_records'), \
             pg_total_relation_size('search_records'), \
             coalesce(pg_relation_size(to_regclass('{INDEX}')), 0), \
             coalesce(pg_relation_size(to_regclass('{TIME_INDEX}')), 0)"
        ),
        &[],
    )?;
    let size = |i: usize| u64::try_from(row.get::<_, i64>(i)).unwrap_or(0);
    Ok(vec![
        ("search_table_heap".to_string(), size(0)),
        ("search_indexes".to_string(), size(1)),
        ("search_table_total".to_string(), size(2)),
        ("search_words_index".to_string(), size(3)),
        ("search_time_index".to_string(), size(4)),
    ])
}

/// One COPY text-format line (tab-separated, `\N` for NULL, newline-terminated).
fn copy_line(record: &ExportedRecord, out: &mut String) {
    let created_at = record.created_at.to_string();
    for field in [
        &record.record_id,
        &record.patient_id,
        &record.hospital_id,
        &record.record_type,
        &created_at,
    ] {
        copy_escape(field, out);
        out.push('\t');
    }
    match &record.metadata {
        Some(m) => copy_escape(m.get(), out),
        None => out.push_str("\\N"),
    }
    out.push('\n');
}

/// COPY's text format: backslash, tab, newline and carriage return are escaped.
fn copy_escape(text: &str, out: &mut String) {
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
}

/// A `jsonb` column's JSON text: its binary form is a version byte (1) and the text,
/// so no JSON crate feature is needed to read it.
struct JsonbText(String);

impl<'a> FromSql<'a> for JsonbText {
    fn from_sql(
        _: &Type,
        raw: &'a [u8],
    ) -> std::result::Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        match raw.split_first() {
            Some((1, text)) => Ok(JsonbText(std::str::from_utf8(text)?.to_owned())),
            _ => Err("a jsonb value of an unknown binary version".into()),
        }
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::JSONB
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_lines_escape_what_copy_text_format_reads_as_control() {
        let record: ExportedRecord = serde_json::from_str(
            r#"{"record_id":"r-1","patient_id":"p-1","hospital_id":"h-1","record_type":"clinical_note",
                "created_at":"2026-01-01T00:00:00Z","metadata":{"note":"a\\b\tc\nd"}}"#,
        )
        .expect("a record");
        let mut line = String::new();
        copy_line(&record, &mut line);
        assert_eq!(
            line,
            "r-1\tp-1\th-1\tclinical_note\t2026-01-01T00:00:00.000Z\t{\"note\":\"a\\\\\\\\b\\\\tc\\\\nd\"}\n"
        );
        let erased: ExportedRecord = serde_json::from_str(
            r#"{"record_id":"r-2","patient_id":"p-1","hospital_id":"h-1","record_type":"x","created_at":"2026-01-01T00:00:00Z","metadata":null}"#,
        )
        .expect("a record");
        line.clear();
        copy_line(&erased, &mut line);
        assert!(line.ends_with("\t\\N\n"), "{line}");
    }
}
