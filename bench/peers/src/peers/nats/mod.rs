//! NATS JetStream: a file-storage stream `RECORDS` over subjects `rec.<patient>`, one
//! replica. A write call publishes `batch` messages back to back, each with its own reply
//! subject, then waits for all their acks (at most `batch` acks outstanding per client).
//!
//! Durability: a JetStream ack means the message is in the stream's file, not that it was
//! fsynced. Servers from 2.10 accept `jetstream { sync_interval: always }` to fsync every
//! write; 2.9 (Debian 12 ships 2.9.10) rejects the field and syncs on a timer (2 min by
//! default). `start` asks for `always` and falls back only when the server rejects it,
//! and [`Peer::durability`] reads what the running server reports in `/varz`: without
//! `sync_always: true` the figures are labelled as acknowledged before disk.
//!
//! Timeline: JetStream has no secondary index or reverse scan; a page is the patient's
//! messages fetched one by one with `STREAM.MSG.GET {seq, next_by_subj}` (k requests for
//! a patient with k records), sorted newest first, cut to the limit.

mod client;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};

use base64::Engine;
use serde_json::json;
use tempfile::TempDir;

pub use client::NatsClient;

use crate::error::{PeerError, Result};
use crate::peer::{Durability, Peer, Session};
use crate::process::{self, ServerProcess};
use crate::record::PeerRecord;

const STREAM: &str = "RECORDS";

/// Upper bound on messages scanned for one timeline page.
const SCAN_MAX: usize = 1_000_000;

/// A nats-server with JetStream's store in a temp dir.
pub struct Nats {
    server: ServerProcess,
    port: u16,
    monitor_port: u16,
    data_dir: PathBuf,
    sync_always_requested: bool,
    next_inbox: AtomicU64,
    _dir: TempDir,
}

impl Nats {
    /// Starts nats-server -js on free 127.0.0.1 ports and creates the stream.
    pub fn start(base_dir: &Path) -> Result<Self> {
        let binary = process::find_binary("nats-server", &[])?;
        let dir = tempfile::Builder::new()
            .prefix("peer-nats-")
            .tempdir_in(base_dir)
            .map_err(|e| PeerError::io_path("tempdir in", base_dir, e))?;
        let data_dir = dir.path().join("jetstream");
        let mut last_error = None;
        for sync_always in [true, false] {
            let (port, monitor_port) = (process::free_port()?, process::free_port()?);
            let conf = dir.path().join("nats.conf");
            let sync = if sync_always {
                ", sync_interval: always"
            } else {
                ""
            };
            let text = format!(
                "listen: 127.0.0.1:{port}\nhttp: 127.0.0.1:{monitor_port}\n\
                 jetstream {{ store_dir: {:?}{sync} }}\n",
                data_dir.display().to_string()
            );
            std::fs::write(&conf, text).map_err(|e| PeerError::io_path("write", &conf, e))?;
            let log = dir.path().join(format!("nats-{sync_always}.log"));
            let mut cmd = Command::new(&binary);
            cmd.arg("-c").arg(&conf);
            let mut server = ServerProcess::spawn("nats-jetstream", cmd, &log, libc::SIGTERM)?;
            match server.wait_ready(|| process::port_open(port) && process::port_open(monitor_port))
            {
                Ok(()) => {
                    let mut client = NatsClient::connect(port, 0)?;
                    client.js_api(
                        &format!("$JS.API.STREAM.CREATE.{STREAM}"),
                        &json!({
                            "name": STREAM,
                            "subjects": ["rec.>"],
                            "storage": "file",
                            "retention": "limits",
                            "num_replicas": 1,
                        }),
                    )?;
                    return Ok(Nats {
                        server,
                        port,
                        monitor_port,
                        data_dir,
                        sync_always_requested: sync_always,
                        next_inbox: AtomicU64::new(1),
                        _dir: dir,
                    });
                }
                Err(e) => {
                    let rejected = process::log_tail(&log).contains("sync_interval");
                    if !(sync_always && rejected) {
                        return Err(e);
                    }
                    last_error = Some(e);
                }
            }
        }
        Err(last_error.unwrap_or_else(|| PeerError::Nats("no start attempted".into())))
    }

    fn varz(&self) -> Result<serde_json::Value> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.monitor_port))
            .map_err(|e| PeerError::io("connect /varz", e))?;
        stream
            .write_all(b"GET /varz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            .map_err(|e| PeerError::io("write /varz", e))?;
        let mut response = String::new();
        stream
            .read_to_string(&mut response)
            .map_err(|e| PeerError::io("read /varz", e))?;
        let body = response
            .split_once("\r\n\r\n")
            .map(|(_, b)| b)
            .ok_or_else(|| PeerError::Nats("no HTTP body from /varz".into()))?;
        serde_json::from_str(body).map_err(|e| PeerError::Nats(format!("/varz: {e}")))
    }
}

impl Peer for Nats {
    fn name(&self) -> &'static str {
        "nats-jetstream"
    }

    fn durability(&self) -> Result<Durability> {
        let varz = self.varz()?;
        let js = &varz["jetstream"]["config"];
        let mut client =
            NatsClient::connect(self.port, self.next_inbox.fetch_add(1, Ordering::Relaxed))?;
        let info = client.js_api(&format!("$JS.API.STREAM.INFO.{STREAM}"), &json!({}))?;
        let text = |v: &serde_json::Value| match v {
            serde_json::Value::Null => "absent".to_string(),
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let mut settings = std::collections::BTreeMap::new();
        settings.insert("server_version".into(), text(&varz["version"]));
        settings.insert("storage".into(), text(&info["config"]["storage"]));
        settings.insert("sync_always".into(), text(&js["sync_always"]));
        settings.insert("sync_interval".into(), text(&js["sync_interval"]));
        settings.insert(
            "sync_interval_always_requested".into(),
            if self.sync_always_requested {
                "accepted"
            } else {
                "rejected by the server"
            }
            .into(),
        );
        let durable = settings["storage"] == "file" && js["sync_always"] == json!(true);
        let summary = if durable {
            format!(
                "NATS {} JetStream: file storage, sync_always=true (/varz, STREAM.INFO)",
                settings["server_version"]
            )
        } else {
            format!(
                "NATS {} JetStream: file storage, NO fsync per write (sync_always {}, \
                 sync_interval always {}): ACKNOWLEDGED BEFORE DISK (/varz, STREAM.INFO)",
                settings["server_version"],
                settings["sync_always"],
                settings["sync_interval_always_requested"]
            )
        };
        Ok(Durability {
            settings,
            acknowledged_after_disk: durable,
            summary,
        })
    }

    fn session(&self) -> Result<Box<dyn Session + '_>> {
        let id = self.next_inbox.fetch_add(1, Ordering::Relaxed);
        Ok(Box::new(NatsSession {
            client: NatsClient::connect(self.port, id)?,
        }))
    }

    fn rebuild_secondary(&self) -> Result<Option<String>> {
        Ok(None)
    }

    fn notes(&self) -> Vec<String> {
        vec![
            "a write call publishes `batch` messages with reply subjects, then awaits all acks"
                .into(),
            "timeline: no index or reverse scan; k MSG.GET next_by_subj requests for k records"
                .into(),
            "no hash chain; no secondary structure to rebuild (no reindex figure)".into(),
        ]
    }

    fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    fn server_pid(&self) -> Option<u32> {
        Some(self.server.pid())
    }
}

struct NatsSession {
    client: NatsClient,
}

impl Session for NatsSession {
    fn append(&mut self, records: &[PeerRecord]) -> Result<()> {
        let encoded: Vec<(String, Vec<u8>)> = records
            .iter()
            .map(|r| (format!("rec.{}", r.patient_id), r.encode()))
            .collect();
        let messages: Vec<(&str, &[u8])> = encoded
            .iter()
            .map(|(s, p)| (s.as_str(), p.as_slice()))
            .collect();
        for ack in self.client.request_many(&messages)? {
            let json: serde_json::Value =
                serde_json::from_slice(&ack).map_err(|e| PeerError::Nats(format!("ack: {e}")))?;
            if json.get("error").is_some() || json.get("seq").is_none() {
                return Err(PeerError::Nats(format!("publish not acknowledged: {json}")));
            }
        }
        Ok(())
    }

    fn timeline_page(&mut self, patient_id: &str, limit: usize) -> Result<Vec<PeerRecord>> {
        let subject = format!("$JS.API.STREAM.MSG.GET.{STREAM}");
        let filter = format!("rec.{patient_id}");
        let mut records = Vec::new();
        let mut seq = 1u64;
        for _ in 0..SCAN_MAX {
            let request = json!({ "seq": seq, "next_by_subj": filter }).to_string();
            let reply = self.client.request(&subject, request.as_bytes())?;
            let json: serde_json::Value = serde_json::from_slice(&reply)
                .map_err(|e| PeerError::Nats(format!("msg get: {e}")))?;
            if let Some(err) = json.get("error") {
                if err["code"] == json!(404) {
                    break; // no message at or after seq on this subject
                }
                return Err(PeerError::Nats(format!("msg get: {err}")));
            }
            let message = &json["message"];
            let data = message["data"].as_str().unwrap_or("");
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(data)
                .map_err(|e| PeerError::Decode(e.to_string()))?;
            records.push(PeerRecord::decode(&bytes)?);
            let found = message["seq"]
                .as_u64()
                .ok_or_else(|| PeerError::Nats(format!("msg get without seq: {json}")))?;
            seq = found + 1;
        }
        records.sort_by_key(|r| std::cmp::Reverse(r.created_at_micros));
        records.truncate(limit);
        Ok(records)
    }
}
