//! Redis 7: `appendonly yes`, `appendfsync always`, `save ""` (no RDB snapshots): Redis
//! fsyncs the AOF before it sends the replies of each event-loop iteration.
//!
//! Layout: every record is `XADD records * r <encoded>` (the log), and, in the same
//! MULTI/EXEC, `ZADD tl:<patient> <created_at µs> <encoded>` — a sorted set per patient
//! holding the whole encoded record, so a timeline page is one `ZREVRANGEBYSCORE … LIMIT`,
//! comparable to an index scan returning rows. The record is therefore stored twice (log
//! and timeline), which `bytes_on_disk` shows. A write call of `batch` records is one
//! pipelined MULTI/EXEC (one round trip, one AOF fsync).

use std::path::{Path, PathBuf};
use std::process::Command;

use redis::{Client, Connection};
use tempfile::TempDir;

use crate::error::{PeerError, Result};
use crate::peer::{Durability, Peer, Session};
use crate::process::{self, ServerProcess};
use crate::record::PeerRecord;

/// One XRANGE entry: its id and its (field, value) pairs.
type StreamEntry = (String, Vec<(String, Vec<u8>)>);

/// Stream entries read per XRANGE during a rebuild.
const REBUILD_CHUNK: usize = 1000;

/// A redis-server with its AOF in a temp dir.
pub struct Redis {
    server: ServerProcess,
    client: Client,
    data_dir: PathBuf,
    _dir: TempDir,
}

impl Redis {
    /// Starts redis-server on a free 127.0.0.1 port with `appendfsync always`.
    pub fn start(base_dir: &Path) -> Result<Self> {
        let binary = process::find_binary("redis-server", &[])?;
        let dir = tempfile::Builder::new()
            .prefix("peer-redis-")
            .tempdir_in(base_dir)
            .map_err(|e| PeerError::io_path("tempdir in", base_dir, e))?;
        let data_dir = dir.path().join("data");
        std::fs::create_dir(&data_dir).map_err(|e| PeerError::io_path("mkdir", &data_dir, e))?;
        let port = process::free_port()?;
        let mut cmd = Command::new(binary);
        cmd.args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .arg("--dir")
            .arg(&data_dir)
            .args([
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
            ])
            .args([
                "--daemonize",
                "no",
                "--protected-mode",
                "yes",
                "--maxclients",
                "1000",
            ]);
        let log = dir.path().join("redis.log");
        let mut server = ServerProcess::spawn("redis", cmd, &log, libc::SIGTERM)?;
        let client = Client::open(format!("redis://127.0.0.1:{port}/"))?;
        server.wait_ready(|| {
            client
                .get_connection()
                .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
                .is_ok()
        })?;
        Ok(Redis {
            server,
            client,
            data_dir,
            _dir: dir,
        })
    }

    fn connection(&self) -> Result<Connection> {
        Ok(self.client.get_connection()?)
    }
}

fn config_get(conn: &mut Connection, key: &str) -> Result<String> {
    let pair: Vec<String> = redis::cmd("CONFIG").arg("GET").arg(key).query(conn)?;
    Ok(pair.get(1).cloned().unwrap_or_default())
}

impl Peer for Redis {
    fn name(&self) -> &'static str {
        "redis"
    }

    fn durability(&self) -> Result<Durability> {
        let mut conn = self.connection()?;
        let mut settings = std::collections::BTreeMap::new();
        for key in ["appendonly", "appendfsync", "save"] {
            settings.insert(key.to_string(), config_get(&mut conn, key)?);
        }
        let durable = settings["appendonly"] == "yes" && settings["appendfsync"] == "always";
        let summary = format!(
            "Redis: appendonly={}, appendfsync={}, save=\"{}\" (CONFIG GET)",
            settings["appendonly"], settings["appendfsync"], settings["save"]
        );
        Ok(Durability {
            settings,
            acknowledged_after_disk: durable,
            summary,
        })
    }

    fn session(&self) -> Result<Box<dyn Session + '_>> {
        Ok(Box::new(RedisSession {
            conn: self.connection()?,
        }))
    }

    fn rebuild_secondary(&self) -> Result<Option<String>> {
        let mut conn = self.connection()?;
        // Drop every timeline, then replay the stream into fresh sorted sets.
        let keys: Vec<String> = redis::cmd("KEYS").arg("tl:*").query(&mut conn)?;
        for chunk in keys.chunks(REBUILD_CHUNK) {
            redis::cmd("DEL").arg(chunk).query::<()>(&mut conn)?;
        }
        let mut start = "-".to_string();
        let mut replayed = 0u64;
        loop {
            let entries: Vec<StreamEntry> = redis::cmd("XRANGE")
                .arg("records")
                .arg(&start)
                .arg("+")
                .arg("COUNT")
                .arg(REBUILD_CHUNK)
                .query(&mut conn)?;
            let Some((last_id, _)) = entries.last() else {
                break;
            };
            let next_start = format!("({last_id}");
            let mut pipe = redis::pipe();
            for (_, fields) in &entries {
                let (_, bytes) = fields
                    .iter()
                    .find(|(f, _)| f == "r")
                    .ok_or_else(|| PeerError::Decode("stream entry without r".into()))?;
                let record = PeerRecord::decode(bytes)?;
                pipe.cmd("ZADD")
                    .arg(format!("tl:{}", record.patient_id))
                    .arg(record.created_at_micros)
                    .arg(bytes.as_slice())
                    .ignore();
            }
            pipe.query::<()>(&mut conn)?;
            replayed += entries.len() as u64;
            if entries.len() < REBUILD_CHUNK {
                break;
            }
            start = next_start;
        }
        Ok(Some(format!(
            "DEL every tl:* sorted set, then XRANGE the stream ({REBUILD_CHUNK} at a time) and \
             pipeline ZADDs: {replayed} records"
        )))
    }

    fn notes(&self) -> Vec<String> {
        vec![
            "a write call is one pipelined MULTI/EXEC: XADD records + ZADD tl:<patient> per record"
                .into(),
            "timeline: one sorted set per patient (score created_at µs, member the encoded record)"
                .into(),
            "no hash chain (Redis has no server-side chain; a client-side one would serialise)"
                .into(),
        ]
    }

    fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    fn server_pid(&self) -> Option<u32> {
        Some(self.server.pid())
    }
}

struct RedisSession {
    conn: Connection,
}

impl Session for RedisSession {
    fn append(&mut self, records: &[PeerRecord]) -> Result<()> {
        let mut pipe = redis::pipe();
        pipe.atomic();
        for r in records {
            let bytes = r.encode();
            pipe.cmd("XADD")
                .arg("records")
                .arg("*")
                .arg("r")
                .arg(bytes.as_slice())
                .ignore();
            pipe.cmd("ZADD")
                .arg(format!("tl:{}", r.patient_id))
                .arg(r.created_at_micros)
                .arg(bytes)
                .ignore();
        }
        pipe.query::<()>(&mut self.conn)?;
        Ok(())
    }

    fn timeline_page(&mut self, patient_id: &str, limit: usize) -> Result<Vec<PeerRecord>> {
        let members: Vec<Vec<u8>> = redis::cmd("ZREVRANGEBYSCORE")
            .arg(format!("tl:{patient_id}"))
            .arg("+inf")
            .arg("-inf")
            .arg("LIMIT")
            .arg(0)
            .arg(limit)
            .query(&mut self.conn)?;
        members.iter().map(|m| PeerRecord::decode(m)).collect()
    }
}
