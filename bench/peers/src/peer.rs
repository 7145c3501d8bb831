//! The interface every peer implements, and the kinds of peers.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use crate::error::Result;
use crate::figures::Figures;
use crate::peers::postgres::{ChainMode, Postgres};
use crate::record::PeerRecord;
use crate::search::SearchHit;
use crate::workload::{self, IngestOptions, MixedOptions, ReadOptions};

/// A peer's durability setting as the running peer reports it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Durability {
    /// Each setting queried and its value (e.g. `synchronous_commit` → `on`).
    pub settings: BTreeMap<String, String>,
    /// True only when these settings make every acknowledged write fsynced first.
    pub acknowledged_after_disk: bool,
    /// One line for the report's table.
    pub summary: String,
}

/// One client's connection to a peer. Each benchmark client thread owns one.
pub trait Session: Send {
    /// Appends `records` in one write call (a transaction, a pipeline, an ack window) and
    /// returns once the peer acknowledged all of them.
    fn append(&mut self, records: &[PeerRecord]) -> Result<()>;

    /// The patient's newest `limit` records, newest first (by `created_at_micros`).
    fn timeline_page(&mut self, patient_id: &str, limit: usize) -> Result<Vec<PeerRecord>>;

    /// The patient's summary, as medledger's `GET /v1/patients/{id}/summary` answers it:
    /// counts by record type and status, the newest record of each type, the newest 20
    /// active records, in one call. The rows it read (counts and records), or `None` for
    /// a peer that does not answer it.
    fn summary(&mut self, _patient_id: &str) -> Result<Option<usize>> {
        Ok(None)
    }

    /// The newest `limit` records whose metadata holds every word of `words` (separated
    /// by spaces), newest first, as medledger's `GET /v1/search` answers them; `None` for
    /// a peer that does not search (or holds no searchable records).
    fn search(&mut self, _words: &str, _limit: usize) -> Result<Option<Vec<SearchHit>>> {
        Ok(None)
    }
}

/// A running peer. Dropping it stops its server and deletes its data directory, also
/// during a panic's unwinding.
pub trait Peer: Send + Sync {
    /// Short stable name for tables (`postgresql`, `sqlite`, `redis`, `nats-jetstream`).
    fn name(&self) -> &'static str;

    /// Queries the running peer for its durability settings (never echoes what we asked).
    fn durability(&self) -> Result<Durability>;

    /// Opens one client connection.
    fn session(&self) -> Result<Box<dyn Session + '_>>;

    /// The most concurrent writers the peer allows (SQLite: 1); `None` for no limit.
    fn writers_max(&self) -> Option<usize> {
        None
    }

    /// Rebuilds the peer's secondary structures from its primary data and returns what
    /// was rebuilt; `None` when the peer has none to rebuild.
    fn rebuild_secondary(&self) -> Result<Option<String>>;

    /// How this peer does each operation (chain serialisation, pipelining, timelines).
    fn notes(&self) -> Vec<String>;

    /// The directory holding all of the peer's data.
    fn data_dir(&self) -> &Path;

    /// The server's root process, or `None` for an embedded peer.
    fn server_pid(&self) -> Option<u32>;

    /// Where the bytes on disk are (e.g. `table`, `indexes`, `wal`), bytes; empty when
    /// the peer has no useful split.
    fn disk_breakdown(&self) -> Result<BTreeMap<String, u64>> {
        Ok(BTreeMap::new())
    }

    /// Recomputes the hash chain over every stored row in order and checks each row's
    /// `prev_hash` and `hash`; the number of rows checked, or `None` for a peer that keeps
    /// no chain. An `Err` means a broken chain or a failed query.
    fn verify_chain(&self) -> Result<Option<u64>> {
        Ok(None)
    }

    /// Bytes allocated under [`Peer::data_dir`].
    fn bytes_on_disk(&self) -> Result<u64> {
        crate::process::disk_usage(self.data_dir())
    }

    /// Durable ingest of `records` by `options.clients` clients in write calls of
    /// `options.batch` records.
    fn ingest(&self, records: &[PeerRecord], options: &IngestOptions) -> Result<Figures> {
        workload::ingest(self, records, options)
    }

    /// One timeline page, through a fresh session.
    fn timeline_page(&self, patient_id: &str, limit: usize) -> Result<Vec<PeerRecord>> {
        self.session()?.timeline_page(patient_id, limit)
    }

    /// Timeline page reads by concurrent clients.
    fn timeline_reads(&self, patients: &[String], options: &ReadOptions) -> Result<Figures> {
        workload::timeline_reads(self, patients, options)
    }

    /// Patient summaries by concurrent clients ([`Session::summary`]); `None` when the
    /// peer does not answer them.
    fn summary_reads(&self, patients: &[String], options: &ReadOptions) -> Result<Option<Figures>> {
        workload::summary_reads(self, patients, options)
    }

    /// Searches by concurrent clients ([`Session::search`]), cycling over one class's
    /// queries; `None` when the peer does not search.
    fn search_reads(
        &self,
        class: &str,
        queries: &[String],
        options: &ReadOptions,
    ) -> Result<Option<Figures>> {
        workload::search_reads(self, class, queries, options)
    }

    /// 80% timeline reads / 20% single-record writes (`options` sets the mix); returns the
    /// read and the write figures.
    fn mixed(
        &self,
        new_records: &[PeerRecord],
        patients: &[String],
        options: &MixedOptions,
    ) -> Result<Vec<Figures>> {
        workload::mixed(self, new_records, patients, options)
    }

    /// Times [`Peer::rebuild_secondary`]; `None` when the peer has nothing to rebuild.
    fn reindex(&self, records_stored: u64) -> Result<Option<Figures>> {
        workload::reindex(self, records_stored)
    }
}

/// The peers this crate can start.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
pub enum PeerKind {
    /// PostgreSQL 15, `synchronous_commit = on`, `fsync = on`, rows hash-chained.
    Postgres,
    /// The same PostgreSQL without the chain-head lock (what the chain costs).
    PostgresUnchained,
    /// SQLite (bundled), WAL, `synchronous = FULL`.
    Sqlite,
    /// Redis 7, `appendonly yes`, `appendfsync always`.
    Redis,
    /// NATS server with JetStream file storage.
    Nats,
}

impl PeerKind {
    /// Every kind, in report order.
    pub const ALL: [PeerKind; 5] = [
        PeerKind::Postgres,
        PeerKind::PostgresUnchained,
        PeerKind::Sqlite,
        PeerKind::Redis,
        PeerKind::Nats,
    ];

    /// The name used in flags and tables.
    pub fn name(self) -> &'static str {
        match self {
            PeerKind::Postgres => "postgresql",
            PeerKind::PostgresUnchained => "postgresql-unchained",
            PeerKind::Sqlite => "sqlite",
            PeerKind::Redis => "redis",
            PeerKind::Nats => "nats-jetstream",
        }
    }

    /// Parses [`PeerKind::name`] (also `postgres`, `pg`, `nats`).
    pub fn parse(s: &str) -> Option<PeerKind> {
        match s {
            "postgresql" | "postgres" | "pg" => Some(PeerKind::Postgres),
            "postgresql-unchained" => Some(PeerKind::PostgresUnchained),
            "sqlite" => Some(PeerKind::Sqlite),
            "redis" => Some(PeerKind::Redis),
            "nats-jetstream" | "nats" => Some(PeerKind::Nats),
            _ => None,
        }
    }

    /// Starts a fresh peer with its data in a new temp dir under `base_dir`, listening on
    /// 127.0.0.1 only. The returned guard stops it and removes the data.
    pub fn start(self, base_dir: &Path) -> Result<Box<dyn Peer>> {
        Ok(match self {
            PeerKind::Postgres => Box::new(Postgres::start(base_dir, ChainMode::Chained)?),
            PeerKind::PostgresUnchained => {
                Box::new(Postgres::start(base_dir, ChainMode::Unchained)?)
            }
            PeerKind::Sqlite => Box::new(crate::peers::sqlite::Sqlite::start(base_dir)?),
            PeerKind::Redis => Box::new(crate::peers::redis::Redis::start(base_dir)?),
            PeerKind::Nats => Box::new(crate::peers::nats::Nats::start(base_dir)?),
        })
    }
}

/// The bound on any single workload's duration, whatever its count says.
pub const WORKLOAD_SECONDS_MAX: Duration = Duration::from_secs(300);
