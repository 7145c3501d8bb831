//! PostgreSQL 15: an append-only, hash-chained `records` table with the seeds' indexes.
//!
//! The chain: each row stores `hash = SHA-256(prev_hash ‖ PeerRecord::encode(row))`. The
//! chain head is a row in `chain_head` that every writing transaction locks with
//! `SELECT … FOR UPDATE`, so rows are chained in commit order by the database itself,
//! whichever application instance writes (a client-side lock would chain only one app
//! server's writes). The lock is held until COMMIT returns, i.e. across the WAL fsync:
//! that is the price of a database-enforced chain, and why the 50-row variant exists.
//!
//! [`ChainMode::Unchained`] (`postgresql-unchained`) runs the same table and indexes
//! without the chain-head lock: each row's `hash` is `SHA-256(‖ row)` and `prev_hash` is
//! empty, so concurrent commits share WAL flushes (group commit). It shows what the chain
//! costs and PostgreSQL's ceiling on this disk; it is not a tamper-evident ledger.
//!
//! Full-text search over the records of a medledger bulk export (a table of their own
//! with a GIN index over their metadata's words) is in `postgres/search.rs`.
//!
//! Client: the sync `postgres` crate, one OS thread and connection per benchmark client,
//! as in a thread-per-request application server; it keeps the load generator simple and
//! its CPU visible per thread. Connections go over TCP to 127.0.0.1.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use postgres::{Client, NoTls, Statement};
use tempfile::TempDir;

use crate::error::{PeerError, Result};
use crate::peer::{Durability, Peer, Session};
use crate::process::{self, ServerProcess};
use crate::record::{chain_hash, verify_chain_rows, PeerRecord};
use crate::search::SearchHit;

mod search;
pub use search::SearchLoad;

const SCHEMA: &str = "
CREATE TABLE records (
    seq         bigserial PRIMARY KEY,
    record_id   text        NOT NULL UNIQUE,
    patient_id  text        NOT NULL,
    author_id   text        NOT NULL,
    hospital_id text        NOT NULL,
    record_type text        NOT NULL,
    status      text        NOT NULL,
    created_at  timestamptz NOT NULL,
    body        bytea       NOT NULL,
    prev_hash   bytea       NOT NULL,
    hash        bytea       NOT NULL
);
CREATE INDEX records_patient_time ON records (patient_id, created_at DESC);
CREATE INDEX records_author ON records (author_id);
CREATE INDEX records_hospital ON records (hospital_id);
CREATE INDEX records_type ON records (record_type);
CREATE INDEX records_active ON records (patient_id, created_at DESC) WHERE status = 'active';
CREATE TABLE chain_head (id int PRIMARY KEY, hash bytea NOT NULL);
INSERT INTO chain_head VALUES (1, '\\x0000000000000000000000000000000000000000000000000000000000000000');
CREATE FUNCTION records_append_only() RETURNS trigger LANGUAGE plpgsql AS
  $$ BEGIN RAISE EXCEPTION 'records is append-only'; END $$;
CREATE TRIGGER records_no_update BEFORE UPDATE OR DELETE ON records
  FOR EACH ROW EXECUTE FUNCTION records_append_only();
";

const COLUMNS: usize = 10;

/// Whether rows are hash-chained in commit order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChainMode {
    /// `SELECT … FOR UPDATE` of the chain head in every writing transaction.
    Chained,
    /// Per-row hash only; writers do not serialise.
    Unchained,
}

/// A PostgreSQL server started from Debian's binaries with its data in a temp dir.
pub struct Postgres {
    // Field order matters: the server stops before its directory is removed.
    server: ServerProcess,
    chain: ChainMode,
    port: u16,
    data_dir: PathBuf,
    _dir: TempDir,
}

fn bin_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|rd| rd.flatten().map(|e| e.path().join("bin")).collect())
        .unwrap_or_default();
    dirs.sort();
    dirs.reverse(); // newest major version first
    dirs
}

impl Postgres {
    /// initdb + postgres on a free port; `synchronous_commit = on`, `fsync = on`.
    /// As root, the server runs as the `postgres` user (PostgreSQL refuses root).
    pub fn start(base_dir: &Path, chain: ChainMode) -> Result<Self> {
        let dirs = bin_dirs();
        let initdb = process::find_binary("initdb", &dirs)?;
        let postgres = process::find_binary("postgres", &dirs)?;
        let dir = tempfile::Builder::new()
            .prefix("peer-postgres-")
            .tempdir_in(base_dir)
            .map_err(|e| PeerError::io_path("tempdir in", base_dir, e))?;
        let data_dir = dir.path().join("data");
        let socket_dir = dir.path().join("socket");
        for d in [&data_dir, &socket_dir] {
            std::fs::create_dir(d).map_err(|e| PeerError::io_path("mkdir", d, e))?;
        }
        let ids = if process::is_root() {
            let ids = process::user_ids("postgres").ok_or_else(|| PeerError::MissingBinary {
                binary: "the postgres system user".into(),
            })?;
            set_mode(dir.path(), 0o755)?;
            for d in [&data_dir, &socket_dir] {
                std::os::unix::fs::chown(d, Some(ids.0), Some(ids.1))
                    .map_err(|e| PeerError::io_path("chown", d, e))?;
                set_mode(d, 0o700)?;
            }
            Some(ids)
        } else {
            None
        };
        let as_user = |cmd: &mut Command| {
            if let Some((uid, gid)) = ids {
                std::os::unix::process::CommandExt::uid(cmd, uid);
                std::os::unix::process::CommandExt::gid(cmd, gid);
            }
        };
        let log = dir.path().join("postgres.log");
        let mut init = Command::new(&initdb);
        // --no-sync: initdb's own final fsync only; the server's settings are below.
        init.args([
            "-U",
            "bench",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-locale",
            "--no-sync",
        ])
        .arg("-D")
        .arg(&data_dir);
        as_user(&mut init);
        let out = init.output().map_err(|e| PeerError::io("run initdb", e))?;
        if !out.status.success() {
            return Err(PeerError::Start {
                peer: "postgresql",
                reason: format!("initdb exited with {}", out.status),
                log: String::from_utf8_lossy(&out.stderr).into_owned(),
            });
        }
        let port = process::free_port()?;
        let mut cmd = Command::new(&postgres);
        cmd.arg("-D").arg(&data_dir).arg("-k").arg(&socket_dir);
        cmd.args(["-p", &port.to_string()]);
        for setting in [
            "listen_addresses=127.0.0.1",
            "synchronous_commit=on",
            "fsync=on",
            "full_page_writes=on",
            // What a tuned install on a 24 GiB machine would set; checkpoints stay out of
            // short runs but the WAL is still fsynced at every commit.
            "shared_buffers=1GB",
            "max_wal_size=8GB",
            "checkpoint_timeout=30min",
            "max_connections=300",
            "logging_collector=off",
        ] {
            cmd.arg("-c").arg(setting);
        }
        as_user(&mut cmd);
        let mut server = ServerProcess::spawn("postgresql", cmd, &log, libc::SIGINT)?;
        server.wait_ready(|| connect(port).is_ok())?;
        let mut client = connect(port)?;
        client.batch_execute(SCHEMA)?;
        Ok(Postgres {
            server,
            chain,
            port,
            data_dir: dir.path().to_path_buf(),
            _dir: dir,
        })
    }
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| PeerError::io_path("chmod", path, e))
}

fn connect(port: u16) -> Result<Client> {
    let config = format!("host=127.0.0.1 port={port} user=bench dbname=postgres connect_timeout=5");
    Ok(Client::connect(&config, NoTls)?)
}

fn show(client: &mut Client, setting: &str) -> Result<String> {
    let row = client.query_one(&format!("SHOW {setting}"), &[])?;
    Ok(row.get(0))
}

impl Peer for Postgres {
    fn name(&self) -> &'static str {
        match self.chain {
            ChainMode::Chained => "postgresql",
            ChainMode::Unchained => "postgresql-unchained",
        }
    }

    fn durability(&self) -> Result<Durability> {
        let mut client = connect(self.port)?;
        let mut settings = std::collections::BTreeMap::new();
        for s in [
            "synchronous_commit",
            "fsync",
            "wal_sync_method",
            "full_page_writes",
        ] {
            settings.insert(s.to_string(), show(&mut client, s)?);
        }
        let version = show(&mut client, "server_version")?;
        let durable = settings["synchronous_commit"] == "on" && settings["fsync"] == "on";
        let summary = format!(
            "PostgreSQL {version}: synchronous_commit={}, fsync={}, wal_sync_method={} (SHOW)",
            settings["synchronous_commit"], settings["fsync"], settings["wal_sync_method"]
        );
        Ok(Durability {
            settings,
            acknowledged_after_disk: durable,
            summary,
        })
    }

    fn session(&self) -> Result<Box<dyn Session + '_>> {
        let mut client = connect(self.port)?;
        let lock = client.prepare("SELECT hash FROM chain_head WHERE id = 1 FOR UPDATE")?;
        let advance = client.prepare("UPDATE chain_head SET hash = $1 WHERE id = 1")?;
        let timeline = client.prepare(
            "SELECT record_id, patient_id, author_id, hospital_id, record_type, status, \
             created_at, body FROM records WHERE patient_id = $1 \
             ORDER BY created_at DESC LIMIT $2",
        )?;
        // A summary in one round trip: the counts, the newest of each type, the newest
        // active records (the indexes are the peer's seed ones: the counts and the newest
        // of each type read the patient's rows through (patient_id, created_at DESC)).
        let summary = client.prepare(
            "(SELECT 'count' AS part, record_type, status, count(*) AS n, NULL::text AS record_id, \
                     NULL::timestamptz AS created_at, NULL::bytea AS body \
                FROM records WHERE patient_id = $1 GROUP BY record_type, status) \
             UNION ALL \
             (SELECT DISTINCT ON (record_type) 'latest', record_type, status, 0, record_id, \
                     created_at, body \
                FROM records WHERE patient_id = $1 ORDER BY record_type, created_at DESC) \
             UNION ALL \
             (SELECT 'active', record_type, status, 0, record_id, created_at, body \
                FROM records WHERE patient_id = $1 AND status = 'active' \
               ORDER BY created_at DESC LIMIT 20)",
        )?;
        Ok(Box::new(PgSession {
            client,
            summary,
            search: None,
            chain: self.chain,
            lock,
            advance,
            timeline,
            inserts: Vec::new(),
        }))
    }

    fn rebuild_secondary(&self) -> Result<Option<String>> {
        let mut client = connect(self.port)?;
        client.batch_execute("REINDEX TABLE records")?;
        Ok(Some(
            "REINDEX TABLE records: the primary key, record_id unique and the 5 seed indexes"
                .into(),
        ))
    }

    fn disk_breakdown(&self) -> Result<std::collections::BTreeMap<String, u64>> {
        let mut client = connect(self.port)?;
        let row = client.query_one(
            "SELECT pg_relation_size('records'), pg_indexes_size('records'), \
             pg_total_relation_size('records')",
            &[],
        )?;
        let size = |i: usize| u64::try_from(row.get::<_, i64>(i)).unwrap_or(0);
        let wal = process::disk_usage(&self.data_dir.join("data").join("pg_wal"))?;
        Ok([
            ("table_heap".to_string(), size(0)),
            ("indexes".to_string(), size(1)),
            ("table_total".to_string(), size(2)),
            ("wal".to_string(), wal),
        ]
        .into_iter()
        .chain(search::disk_breakdown(&mut client)?)
        .collect())
    }

    fn verify_chain(&self) -> Result<Option<u64>> {
        if self.chain == ChainMode::Unchained {
            return Ok(None);
        }
        let mut client = connect(self.port)?;
        let rows = client.query(
            "SELECT record_id, patient_id, author_id, hospital_id, record_type, status, \
             created_at, body, prev_hash, hash FROM records ORDER BY seq",
            &[],
        )?;
        let (n, last) = verify_chain_rows(rows.iter().map(|row| {
            (
                PeerRecord {
                    record_id: row.get(0),
                    patient_id: row.get(1),
                    author_id: row.get(2),
                    hospital_id: row.get(3),
                    record_type: row.get(4),
                    status: row.get(5),
                    created_at_micros: from_time(row.get(6)),
                    body: row.get(7),
                },
                row.get(8),
                row.get(9),
            )
        }))?;
        let head: Vec<u8> = client
            .query_one("SELECT hash FROM chain_head WHERE id = 1", &[])?
            .get(0);
        if head != last {
            return Err(PeerError::Decode(
                "chain_head is not the last row's hash".into(),
            ));
        }
        Ok(Some(n))
    }

    fn notes(&self) -> Vec<String> {
        let chain = match self.chain {
            ChainMode::Chained => {
                "hash chain serialised by SELECT … FOR UPDATE of a chain-head row, held to COMMIT"
            }
            ChainMode::Unchained => {
                "NO hash chain: per-row SHA-256 only, writers do not serialise (group commit)"
            }
        };
        vec![
            chain.into(),
            "a write call is one transaction: one multi-row INSERT of `batch` rows".into(),
            "timeline: ORDER BY created_at DESC LIMIT over (patient_id, created_at DESC)".into(),
            "summary: one UNION ALL of GROUP BY record_type, status, DISTINCT ON (record_type) and the active LIMIT 20, over the patient's rows".into(),
            "bytes on disk: the whole data dir (heap, 7 indexes, WAL segments, catalog)".into(),
        ]
    }

    fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    fn server_pid(&self) -> Option<u32> {
        Some(self.server.pid())
    }
}

struct PgSession {
    client: Client,
    chain: ChainMode,
    lock: Statement,
    advance: Statement,
    timeline: Statement,
    summary: Statement,
    /// The search query, prepared on the first search (its table exists only once an
    /// export was loaded).
    search: Option<Statement>,
    /// Prepared multi-row INSERTs, index = rows - 1.
    inserts: Vec<Option<Statement>>,
}

impl PgSession {
    fn insert_statement(&mut self, rows: usize) -> Result<Statement> {
        if self.inserts.len() < rows {
            self.inserts.resize(rows, None);
        }
        if let Some(s) = &self.inserts[rows - 1] {
            return Ok(s.clone());
        }
        let mut sql = String::from(
            "INSERT INTO records (record_id, patient_id, author_id, hospital_id, record_type, \
             status, created_at, body, prev_hash, hash) VALUES ",
        );
        for r in 0..rows {
            let p: Vec<String> = (1..=COLUMNS)
                .map(|c| format!("${}", r * COLUMNS + c))
                .collect();
            sql.push_str(if r == 0 { "(" } else { ", (" });
            sql.push_str(&p.join(", "));
            sql.push(')');
        }
        let statement = self.client.prepare(&sql)?;
        self.inserts[rows - 1] = Some(statement.clone());
        Ok(statement)
    }
}

fn to_time(micros: i64) -> SystemTime {
    if micros >= 0 {
        UNIX_EPOCH + Duration::from_micros(micros as u64)
    } else {
        UNIX_EPOCH - Duration::from_micros(micros.unsigned_abs())
    }
}

fn from_time(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_micros() as i64,
        Err(e) => -(e.duration().as_micros() as i64),
    }
}

impl Session for PgSession {
    fn append(&mut self, records: &[PeerRecord]) -> Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        let insert = self.insert_statement(records.len())?;
        let times: Vec<SystemTime> = records
            .iter()
            .map(|r| to_time(r.created_at_micros))
            .collect();
        let mut tx = self.client.transaction()?;
        let chained = self.chain == ChainMode::Chained;
        let mut prev = if chained {
            tx.query_one(&self.lock, &[])?.get(0)
        } else {
            Vec::new()
        };
        let mut hashes: Vec<(Vec<u8>, Vec<u8>)> = Vec::with_capacity(records.len());
        for r in records {
            let hash = chain_hash(&prev, r);
            if chained {
                hashes.push((prev, hash.clone()));
                prev = hash;
            } else {
                hashes.push((Vec::new(), hash));
            }
        }
        let mut params: Vec<&(dyn postgres::types::ToSql + Sync)> =
            Vec::with_capacity(records.len() * COLUMNS);
        for ((r, t), (prev_hash, hash)) in records.iter().zip(&times).zip(&hashes) {
            params.extend_from_slice(&[
                &r.record_id,
                &r.patient_id,
                &r.author_id,
                &r.hospital_id,
                &r.record_type,
                &r.status,
                t,
                &r.body,
                prev_hash,
                hash,
            ]);
        }
        tx.execute(&insert, &params)?;
        if chained {
            tx.execute(&self.advance, &[&prev])?;
        }
        tx.commit()?;
        Ok(())
    }

    fn summary(&mut self, patient_id: &str) -> Result<Option<usize>> {
        Ok(Some(
            self.client.query(&self.summary, &[&patient_id])?.len(),
        ))
    }

    fn search(&mut self, words: &str, limit: usize) -> Result<Option<Vec<SearchHit>>> {
        let statement = match &self.search {
            Some(s) => s.clone(),
            None => self
                .search
                .insert(search::prepare(&mut self.client)?)
                .clone(),
        };
        search::run(&mut self.client, &statement, words, limit).map(Some)
    }

    fn timeline_page(&mut self, patient_id: &str, limit: usize) -> Result<Vec<PeerRecord>> {
        let limit = i64::try_from(limit).map_err(|_| PeerError::Invalid("limit".into()))?;
        let rows = self.client.query(&self.timeline, &[&patient_id, &limit])?;
        Ok(rows
            .iter()
            .map(|row| PeerRecord {
                record_id: row.get(0),
                patient_id: row.get(1),
                author_id: row.get(2),
                hospital_id: row.get(3),
                record_type: row.get(4),
                status: row.get(5),
                created_at_micros: from_time(row.get(6)),
                body: row.get(7),
            })
            .collect())
    }
}
