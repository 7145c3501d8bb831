//! SIGKILL of a real `medledger serve`, again and again, under a mixed load: creates
//! (some with payloads), batches, amendments, erasures from four threads. Every write is
//! logged once its answer arrives; the server is killed at a random moment and
//! restarted. At the end every acknowledged write is there at (at least) its version,
//! every acknowledged erasure holds, and `verify` and `verify --views` pass.
//!
//! 20 kills in CI; `MEDLEDGER_KILLS=200` for the long run (docs/RELIABILITY.md), with
//! `MEDLEDGER_FUZZ_SEED` choosing the moments.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

mod common;
use common::fuzz::Rng;
use common::server::{free_port, request, start, token, Running};

/// What the clients were told: a record's highest acknowledged version, and whether its
/// erasure was acknowledged.
#[derive(Clone, Copy, Debug, Default)]
struct Acked {
    version: u64,
    erased: bool,
}

type Log = Arc<Mutex<HashMap<String, Acked>>>;

fn ack(log: &Log, id: &str, version: u64) {
    let mut log = log.lock().unwrap();
    let e = log.entry(id.to_owned()).or_default();
    e.version = e.version.max(version);
}

fn record(id: &str, payload: bool) -> Value {
    let mut r = json!({"record_id": id, "patient_id": format!("p-{}", id.len() % 7),
        "hospital_id": "h-1", "record_type": "note", "metadata": {"text": format!("note {id}")}});
    if payload {
        r["payload"] = json!({"content_type": "application/fhir+json",
            "data": {"resourceType": "Observation", "id": id}});
    }
    r
}

/// One client thread until `stop`: a mix of writes, each logged after its 2xx.
fn client(
    addr: SocketAddr,
    w: usize,
    round: u64,
    dr: &str,
    admin: &str,
    log: &Log,
    stop: &AtomicBool,
) {
    let mut mine: Vec<(String, u64)> = Vec::new();
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) {
        i += 1;
        let id = format!("r-{round}-{w}-{i}");
        let post = |path: &str, token: &str, body: &Value| {
            request(addr, "POST", path, Some(token), Some(&body.to_string()))
        };
        match i % 10 {
            0..=3 => {
                if let Ok((201, b)) = post("/v1/records", dr, &record(&id, i % 4 == 1)) {
                    ack(log, &id, b["version"].as_u64().unwrap());
                    mine.push((id, 1));
                }
            }
            4 => {
                let ids: Vec<String> = (0..5).map(|k| format!("{id}-{k}")).collect();
                let body =
                    json!({"records": ids.iter().map(|id| record(id, false)).collect::<Vec<_>>()});
                if let Ok((200, b)) = post("/v1/records/batch", dr, &body) {
                    for (item, id) in b["items"].as_array().unwrap().iter().zip(&ids) {
                        if item["status"] == 201 {
                            ack(log, id, 1);
                            mine.push((id.clone(), 1));
                        }
                    }
                }
            }
            5..=8 if !mine.is_empty() => {
                let at = (i as usize * 7) % mine.len();
                let (target, version) = mine[at].clone();
                let body = json!({"reason": "corrected", "expected_version": version,
                    "metadata": {"text": format!("amended {i}")}});
                match post(&format!("/v1/records/{target}/amendments"), dr, &body) {
                    Ok((201, b)) => {
                        let v = b["version"].as_u64().unwrap();
                        ack(log, &target, v);
                        mine[at].1 = v;
                    }
                    // An earlier amendment committed unanswered (the kill): stop amending it.
                    Ok((409, _)) => {
                        mine.swap_remove(at);
                    }
                    _ => {}
                }
            }
            9 if !mine.is_empty() => {
                let (target, _) = mine.swap_remove(0);
                let body = json!({"reason": "patient request"});
                if let Ok((200, _)) = post(&format!("/v1/records/{target}/erase"), admin, &body) {
                    log.lock().unwrap().entry(target).or_default().erased = true;
                }
            }
            _ => {}
        }
    }
}

#[test]
fn every_acknowledged_write_survives_repeated_sigkills() {
    let kills: u64 = std::env::var("MEDLEDGER_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let mut rng = Rng::new(7);
    let dir = tempfile::tempdir().unwrap();
    let dr = token(dir.path(), "clinician", "dr-1", Some("h-1"));
    let admin = token(dir.path(), "admin", "root-1", None);
    let addr = free_port();
    let log: Log = Arc::default();
    let started = Instant::now();
    for round in 0..kills {
        let mut server = Running(start(dir.path(), addr));
        let stop = Arc::new(AtomicBool::new(false));
        let clients: Vec<_> = (0..4)
            .map(|w| {
                let (log, stop, dr, admin) = (log.clone(), stop.clone(), dr.clone(), admin.clone());
                std::thread::spawn(move || client(addr, w, round, &dr, &admin, &log, &stop))
            })
            .collect();
        std::thread::sleep(Duration::from_millis(100 + rng.below(500) as u64));
        server.0.kill().unwrap(); // SIGKILL, mid-load
        server.0.wait().unwrap();
        stop.store(true, Ordering::Relaxed);
        for c in clients {
            c.join().unwrap();
        }
    }
    let log = log.lock().unwrap().clone();
    let erased = log.values().filter(|a| a.erased).count();
    let amended = log.values().filter(|a| a.version > 1).count();
    eprintln!(
        "{kills} kills in {:.0} s: {} records acknowledged, {amended} amended, {erased} erased",
        started.elapsed().as_secs_f64(),
        log.len()
    );
    assert!(
        log.len() >= kills as usize,
        "too few writes got through: {}",
        log.len()
    );

    let server = Running(start(dir.path(), addr));
    let deadline = Instant::now() + Duration::from_secs(60);
    while request(addr, "GET", "/readyz", None, None).unwrap().1["projector_lag_blocks"] != 0 {
        assert!(Instant::now() < deadline, "the views did not catch up");
        std::thread::sleep(Duration::from_millis(50));
    }
    for (id, acked) in &log {
        let (status, rec) = request(
            addr,
            "GET",
            &format!("/v1/records/{id}"),
            Some(&admin),
            None,
        )
        .unwrap();
        assert_eq!(
            status, 200,
            "acknowledged record {id} after {kills} kills: {rec}"
        );
        let version = rec["version"].as_u64().unwrap();
        assert!(
            version >= acked.version,
            "{id}: version {version}, acknowledged {}",
            acked.version
        );
        if acked.erased {
            assert_eq!(rec["erased"], true, "{id}: acknowledged erasure: {rec}");
        }
    }
    server.stop();
    for args in [&["verify"][..], &["verify", "--views"][..]] {
        let out = Command::new(env!("CARGO_BIN_EXE_medledger"))
            .args(args)
            .arg("--data-dir")
            .arg(dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
