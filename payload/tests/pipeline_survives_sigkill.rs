//! Kill loop: a child process (this test binary, re-run) stores payloads as fast as it
//! can from several tasks (so group commits hold several payloads) and records each
//! acknowledged one; the parent SIGKILLs it at a random moment,
//! reopens the data dir and checks that every acknowledged payload reads back intact.
//! Then it starts the next child on the same data dir (so torn tails get replayed).

use std::io::{BufRead, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::{self, StreamExt};
use medledger_payload::{Cid, CidVersion, PayloadConfig, Payloads, StoredPayload};

const CHILD_ENV: &str = "MEDLEDGER_PAYLOAD_KILL_CHILD";
const ROUNDS: usize = 6;

fn config(dir: &Path) -> PayloadConfig {
    let mut config = PayloadConfig::new(dir);
    config.cid_version = CidVersion::V1;
    config
}

/// Concurrent putters in the child, so group commits hold several payloads each.
const PUTTERS: u64 = 8;

/// The child: store payloads forever from `PUTTERS` tasks, appending
/// `cid key_id size sha256` after each `put` returns (i.e. after it was acknowledged).
fn child(dir: &Path) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let payloads = Arc::new(Payloads::open(config(dir)).unwrap());
        let acked = Arc::new(Mutex::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(dir.join("acked.log"))
                .unwrap(),
        ));
        let putters: Vec<_> = (0..PUTTERS)
            .map(|putter| {
                let (payloads, acked) = (Arc::clone(&payloads), Arc::clone(&acked));
                tokio::spawn(async move {
                    for n in (putter..).step_by(PUTTERS as usize) {
                        // Small payloads (one block) between large ones (several).
                        let len = if n % 2 == 0 {
                            4096
                        } else {
                            100_000 + (n as usize * 77_777) % 900_000
                        };
                        let data: Vec<u8> = (0..len).map(|i| (i as u64 * 31 + n) as u8).collect();
                        let body = stream::iter(
                            data.chunks(50_000)
                                .map(|c| Ok::<_, std::io::Error>(Bytes::copy_from_slice(c)))
                                .collect::<Vec<_>>(),
                        );
                        let payload = payloads.put(body, "x").await.unwrap();
                        let line = format!(
                            "{} {} {} {}\n",
                            payload.cid,
                            payload.key_id,
                            payload.size,
                            hex::encode(payload.sha256)
                        );
                        let mut acked = acked.lock().unwrap();
                        acked.write_all(line.as_bytes()).unwrap();
                        acked.sync_data().unwrap();
                    }
                })
            })
            .collect();
        for putter in putters {
            putter.await.unwrap();
        }
    });
}

fn acknowledged(dir: &Path) -> Vec<StoredPayload> {
    let Ok(file) = std::fs::File::open(dir.join("acked.log")) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for line in std::io::BufReader::new(file).lines() {
        let line = line.unwrap();
        let fields: Vec<&str> = line.split(' ').collect();
        if fields.len() != 4 || fields[3].len() != 64 {
            continue; // A torn last line: the child died while writing it.
        }
        out.push(StoredPayload {
            cid: fields[0].parse::<Cid>().unwrap(),
            key_id: fields[1].to_string(),
            size: fields[2].parse().unwrap(),
            sha256: hex::decode(fields[3]).unwrap().try_into().unwrap(),
            content_type: "x".into(),
        });
    }
    out
}

#[test]
fn acknowledged_payloads_survive_sigkill() {
    if let Ok(dir) = std::env::var(CHILD_ENV) {
        child(Path::new(&dir));
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut total = 0;
    for round in 0..ROUNDS {
        let mut process = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "acknowledged_payloads_survive_sigkill",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, dir.path())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let mut random = [0u8; 2];
        getrandom::fill(&mut random).unwrap();
        let delay_ms = 400 + u64::from(u16::from_le_bytes(random)) % 800;
        std::thread::sleep(Duration::from_millis(delay_ms));
        process.kill().unwrap(); // SIGKILL
        process.wait().unwrap();

        let acked = acknowledged(dir.path());
        runtime.block_on(async {
            let payloads = Payloads::open(config(dir.path())).unwrap();
            for payload in &acked {
                let mut stream = payloads.get(payload).await.unwrap();
                let mut size = 0u64;
                while let Some(piece) = stream.next().await {
                    size += piece
                        .unwrap_or_else(|e| panic!("round {round}, {}: {e}", payload.cid))
                        .len() as u64;
                }
                assert_eq!(size, payload.size);
            }
        });
        total = acked.len();
        eprintln!(
            "round {round}: killed after {delay_ms} ms, {total} acknowledged payloads verified"
        );
    }
    assert!(
        total >= ROUNDS,
        "the children acknowledged only {total} payloads"
    );
}
