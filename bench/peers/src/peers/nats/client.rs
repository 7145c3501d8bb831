//! A minimal NATS protocol client over one blocking TCP connection: CONNECT, SUB to a
//! private inbox, PUB with a reply subject, and MSG parsing. JetStream needs nothing more:
//! a publish is a PUB whose reply subject receives the stream's JSON ack, and every API
//! call is a request to `$JS.API.…`. Written here so the bench builds no TLS stack; the
//! server does the same work per publish as for any client.

use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::error::{PeerError, Result};

/// How long to wait for any reply before failing.
const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

/// Largest message we accept from the server (its default max_payload is 1 MiB).
const PAYLOAD_MAX: usize = 8 << 20;

/// One connection with one inbox subscription.
pub struct NatsClient {
    reader: BufReader<TcpStream>,
    writer: BufWriter<TcpStream>,
    inbox: String,
    /// The server's INFO line, as JSON.
    pub info: serde_json::Value,
}

fn nats_err(what: &str, e: std::io::Error) -> PeerError {
    PeerError::io(format!("nats {what}"), e)
}

impl NatsClient {
    /// Connects to 127.0.0.1:`port`, subscribes to a fresh inbox and round-trips a PING.
    pub fn connect(port: u16, inbox_id: u64) -> Result<Self> {
        let stream = TcpStream::connect(("127.0.0.1", port)).map_err(|e| nats_err("connect", e))?;
        stream
            .set_nodelay(true)
            .map_err(|e| nats_err("nodelay", e))?;
        stream
            .set_read_timeout(Some(REPLY_TIMEOUT))
            .map_err(|e| nats_err("timeout", e))?;
        let writer = BufWriter::new(stream.try_clone().map_err(|e| nats_err("clone", e))?);
        let mut client = NatsClient {
            reader: BufReader::new(stream),
            writer,
            inbox: format!("_INBOX.{}.{inbox_id}", std::process::id()),
            info: serde_json::Value::Null,
        };
        let line = client.read_line()?;
        let json = line
            .strip_prefix("INFO ")
            .ok_or_else(|| PeerError::Nats(format!("expected INFO, got {line:?}")))?;
        client.info = serde_json::from_str(json).map_err(|e| PeerError::Nats(e.to_string()))?;
        let connect = r#"{"verbose":false,"pedantic":false,"lang":"rust","version":"0","protocol":1,"headers":false}"#;
        let inbox = client.inbox.clone();
        write!(
            client.writer,
            "CONNECT {connect}\r\nSUB {inbox}.* 1\r\nPING\r\n"
        )
        .map_err(|e| nats_err("write", e))?;
        client.flush()?;
        loop {
            match client.read_line()?.as_str() {
                "PONG" => return Ok(client),
                "+OK" => continue,
                other => return Err(PeerError::Nats(format!("handshake: {other}"))),
            }
        }
    }

    fn flush(&mut self) -> Result<()> {
        self.writer.flush().map_err(|e| nats_err("flush", e))
    }

    fn read_line(&mut self) -> Result<String> {
        let mut line = String::new();
        let n = self
            .reader
            .read_line(&mut line)
            .map_err(|e| nats_err("read", e))?;
        if n == 0 {
            return Err(PeerError::Nats("connection closed".into()));
        }
        Ok(line.trim_end_matches(['\r', '\n']).to_string())
    }

    fn write_pub(&mut self, subject: &str, reply: &str, payload: &[u8]) -> Result<()> {
        write!(self.writer, "PUB {subject} {reply} {}\r\n", payload.len())
            .and_then(|()| self.writer.write_all(payload))
            .and_then(|()| self.writer.write_all(b"\r\n"))
            .map_err(|e| nats_err("write", e))
    }

    /// The next message on our inbox: (its subject, its payload). Answers server PINGs.
    fn next_message(&mut self) -> Result<(String, Vec<u8>)> {
        loop {
            let line = self.read_line()?;
            if line == "PING" {
                self.writer
                    .write_all(b"PONG\r\n")
                    .map_err(|e| nats_err("write", e))?;
                self.flush()?;
                continue;
            }
            if line == "+OK" || line == "PONG" || line.starts_with("INFO ") {
                continue;
            }
            if let Some(err) = line.strip_prefix("-ERR") {
                return Err(PeerError::Nats(format!("server error:{err}")));
            }
            let parts: Vec<&str> = line.split(' ').collect();
            if parts.first() != Some(&"MSG") || !(4..=5).contains(&parts.len()) {
                return Err(PeerError::Nats(format!("unexpected line {line:?}")));
            }
            let len: usize = parts[parts.len() - 1]
                .parse()
                .map_err(|_| PeerError::Nats(format!("bad length in {line:?}")))?;
            if len > PAYLOAD_MAX {
                return Err(PeerError::Nats(format!("payload of {len} bytes")));
            }
            let mut payload = vec![0u8; len + 2];
            self.reader
                .read_exact(&mut payload)
                .map_err(|e| nats_err("read payload", e))?;
            payload.truncate(len);
            return Ok((parts[1].to_string(), payload));
        }
    }

    /// Sends every (subject, payload) with its own reply subject, then waits for all the
    /// replies: at most `messages.len()` acks outstanding. Replies are returned in the
    /// order of the messages.
    pub fn request_many(&mut self, messages: &[(&str, &[u8])]) -> Result<Vec<Vec<u8>>> {
        for (i, (subject, payload)) in messages.iter().enumerate() {
            let reply = format!("{}.{i}", self.inbox);
            self.write_pub(subject, &reply, payload)?;
        }
        self.flush()?;
        let mut replies: Vec<Option<Vec<u8>>> = vec![None; messages.len()];
        let mut received = 0;
        while received < messages.len() {
            let (subject, payload) = self.next_message()?;
            let index = subject
                .strip_prefix(&self.inbox)
                .and_then(|s| s.strip_prefix('.'))
                .and_then(|s| s.parse::<usize>().ok());
            // A late reply to an earlier call (after a timeout) is not ours to count.
            if let Some(slot) = index.and_then(|i| replies.get_mut(i)) {
                if slot.replace(payload).is_none() {
                    received += 1;
                }
            }
        }
        Ok(replies.into_iter().map(|r| r.unwrap_or_default()).collect())
    }

    /// One request and its reply.
    pub fn request(&mut self, subject: &str, payload: &[u8]) -> Result<Vec<u8>> {
        let mut replies = self.request_many(&[(subject, payload)])?;
        Ok(replies.pop().unwrap_or_default())
    }

    /// A JetStream API call: the reply as JSON, failing when it carries `error`.
    pub fn js_api(
        &mut self,
        subject: &str,
        payload: &serde_json::Value,
    ) -> Result<serde_json::Value> {
        let reply = self.request(subject, payload.to_string().as_bytes())?;
        let json: serde_json::Value = serde_json::from_slice(&reply)
            .map_err(|e| PeerError::Nats(format!("{subject}: {e}")))?;
        if let Some(err) = json.get("error") {
            return Err(PeerError::Nats(format!("{subject}: {err}")));
        }
        Ok(json)
    }
}
