//! SQLite (bundled, in this process): WAL journal, `synchronous = FULL`, so every COMMIT
//! fsyncs the WAL before it returns. SQLite has one writer at a time, so ingest runs one
//! client that commits `batch` rows per transaction; readers run concurrently (WAL).
//! Rows carry the same hash chain as PostgreSQL's, the head read inside the writing
//! transaction (`BEGIN IMMEDIATE` takes the write lock first).

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension};
use tempfile::TempDir;

use crate::error::{PeerError, Result};
use crate::peer::{Durability, Peer, Session};
use crate::record::{chain_hash, verify_chain_rows, PeerRecord};

const SCHEMA: &str = "
CREATE TABLE records (
    seq         INTEGER PRIMARY KEY,
    record_id   TEXT    NOT NULL UNIQUE,
    patient_id  TEXT    NOT NULL,
    author_id   TEXT    NOT NULL,
    hospital_id TEXT    NOT NULL,
    record_type TEXT    NOT NULL,
    status      TEXT    NOT NULL,
    created_at  INTEGER NOT NULL,
    body        BLOB    NOT NULL,
    prev_hash   BLOB    NOT NULL,
    hash        BLOB    NOT NULL
);
CREATE INDEX records_patient_time ON records (patient_id, created_at DESC);
CREATE INDEX records_author ON records (author_id);
CREATE INDEX records_hospital ON records (hospital_id);
CREATE INDEX records_type ON records (record_type);
CREATE INDEX records_active ON records (patient_id, created_at DESC) WHERE status = 'active';
CREATE TRIGGER records_no_update BEFORE UPDATE ON records
  BEGIN SELECT RAISE(ABORT, 'records is append-only'); END;
CREATE TRIGGER records_no_delete BEFORE DELETE ON records
  BEGIN SELECT RAISE(ABORT, 'records is append-only'); END;
";

/// An SQLite database file in a temp dir.
pub struct Sqlite {
    path: PathBuf,
    /// One writer at a time, as an application does it (one write connection behind a
    /// lock), instead of many connections spinning in SQLite's busy handler.
    writer: Mutex<()>,
    data_dir: PathBuf,
    _dir: TempDir,
}

impl Sqlite {
    /// Creates the database, in WAL mode, with the schema.
    pub fn start(base_dir: &Path) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("peer-sqlite-")
            .tempdir_in(base_dir)
            .map_err(|e| PeerError::io_path("tempdir in", base_dir, e))?;
        let path = dir.path().join("records.db");
        let conn = open(&path)?;
        conn.execute_batch(SCHEMA)?;
        Ok(Sqlite {
            path,
            writer: Mutex::new(()),
            data_dir: dir.path().to_path_buf(),
            _dir: dir,
        })
    }
}

/// Every connection sets the durability itself: `synchronous` is per connection.
fn open(path: &Path) -> Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(30))?;
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
    if mode != "wal" {
        return Err(PeerError::Invalid(format!(
            "journal_mode is {mode}, not wal"
        )));
    }
    conn.pragma_update(None, "synchronous", "FULL")?;
    Ok(conn)
}

impl Peer for Sqlite {
    fn name(&self) -> &'static str {
        "sqlite"
    }

    fn durability(&self) -> Result<Durability> {
        // A session's connection, as the writers use.
        let conn = open(&self.path)?;
        let synchronous: i64 = conn.query_row("PRAGMA synchronous", [], |r| r.get(0))?;
        let journal: String = conn.query_row("PRAGMA journal_mode", [], |r| r.get(0))?;
        let version: String = conn.query_row("SELECT sqlite_version()", [], |r| r.get(0))?;
        let synchronous_name = match synchronous {
            0 => "OFF",
            1 => "NORMAL",
            2 => "FULL",
            3 => "EXTRA",
            _ => "unknown",
        };
        let mut settings = std::collections::BTreeMap::new();
        settings.insert("synchronous".into(), synchronous_name.into());
        settings.insert("journal_mode".into(), journal.clone());
        Ok(Durability {
            acknowledged_after_disk: synchronous >= 2,
            summary: format!(
                "SQLite {version}: journal_mode={journal}, synchronous={synchronous_name} (PRAGMA)"
            ),
            settings,
        })
    }

    fn session(&self) -> Result<Box<dyn Session + '_>> {
        Ok(Box::new(SqliteSession {
            conn: open(&self.path)?,
            writer: &self.writer,
        }))
    }

    fn writers_max(&self) -> Option<usize> {
        Some(1)
    }

    fn rebuild_secondary(&self) -> Result<Option<String>> {
        let conn = open(&self.path)?;
        conn.execute_batch("REINDEX records")?;
        Ok(Some(
            "REINDEX records: record_id unique and the 5 seed indexes".into(),
        ))
    }

    fn disk_breakdown(&self) -> Result<std::collections::BTreeMap<String, u64>> {
        let mut out = std::collections::BTreeMap::new();
        for (name, suffix) in [("database", ""), ("wal", "-wal")] {
            let path = PathBuf::from(format!("{}{suffix}", self.path.display()));
            let bytes = std::fs::metadata(&path).map_or(0, |m| {
                use std::os::unix::fs::MetadataExt;
                m.blocks() * 512
            });
            out.insert(name.to_string(), bytes);
        }
        Ok(out)
    }

    fn verify_chain(&self) -> Result<Option<u64>> {
        let conn = open(&self.path)?;
        let mut stmt = conn.prepare(
            "SELECT record_id, patient_id, author_id, hospital_id, record_type, status, \
             created_at, body, prev_hash, hash FROM records ORDER BY seq",
        )?;
        let rows = stmt
            .query_map([], |row| {
                Ok((
                    PeerRecord {
                        record_id: row.get(0)?,
                        patient_id: row.get(1)?,
                        author_id: row.get(2)?,
                        hospital_id: row.get(3)?,
                        record_type: row.get(4)?,
                        status: row.get(5)?,
                        created_at_micros: row.get(6)?,
                        body: row.get(7)?,
                    },
                    row.get(8)?,
                    row.get(9)?,
                ))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(Some(verify_chain_rows(rows)?.0))
    }

    fn notes(&self) -> Vec<String> {
        vec![
            "embedded: runs inside the load generator's process".into(),
            "one writer at a time: ingest uses 1 client; in the mixed run writers queue on a \
             mutex (SQLite's single write lock), readers run concurrently (WAL)"
                .into(),
            "a write call is one BEGIN IMMEDIATE … COMMIT of `batch` rows, chain head read inside"
                .into(),
        ]
    }

    fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    fn server_pid(&self) -> Option<u32> {
        None
    }
}

struct SqliteSession<'a> {
    conn: Connection,
    writer: &'a Mutex<()>,
}

impl Session for SqliteSession<'_> {
    fn append(&mut self, records: &[PeerRecord]) -> Result<()> {
        // A poisoned lock only means another writer panicked; the database is consistent.
        let _writer = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let mut prev: Vec<u8> = tx
            .query_row(
                "SELECT hash FROM records ORDER BY seq DESC LIMIT 1",
                [],
                |r| r.get(0),
            )
            .optional()?
            .unwrap_or_else(|| vec![0u8; 32]);
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO records (record_id, patient_id, author_id, hospital_id, \
                 record_type, status, created_at, body, prev_hash, hash) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            )?;
            for r in records {
                let hash = chain_hash(&prev, r);
                insert.execute(params![
                    r.record_id,
                    r.patient_id,
                    r.author_id,
                    r.hospital_id,
                    r.record_type,
                    r.status,
                    r.created_at_micros,
                    r.body,
                    prev,
                    hash
                ])?;
                prev = hash;
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn timeline_page(&mut self, patient_id: &str, limit: usize) -> Result<Vec<PeerRecord>> {
        let limit = i64::try_from(limit).map_err(|_| PeerError::Invalid("limit".into()))?;
        let mut stmt = self.conn.prepare_cached(
            "SELECT record_id, patient_id, author_id, hospital_id, record_type, status, \
             created_at, body FROM records WHERE patient_id = ?1 \
             ORDER BY created_at DESC LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![patient_id, limit], |row| {
            Ok(PeerRecord {
                record_id: row.get(0)?,
                patient_id: row.get(1)?,
                author_id: row.get(2)?,
                hospital_id: row.get(3)?,
                record_type: row.get(4)?,
                status: row.get(5)?,
                created_at_micros: row.get(6)?,
                body: row.get(7)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }
}
