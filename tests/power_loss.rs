//! A power cut at every moment something became durable, over the whole data dir.
//!
//! A real `medledger serve` runs under an `LD_PRELOAD` shim (tests/powerloss/powerloss.c)
//! that records, at every fsync and fdatasync under the data dir, what a power cut right
//! then would leave: the synced file's bytes, or the synced directory's names. Everything
//! not synced is dropped (RocksDB's FaultInjectionTestEnv's model): the ledger's segments,
//! its index, the views, the search index, the key log, the payload store and the outbox,
//! RocksDB's WALs, SSTs, MANIFESTs and CURRENT, all alike. Four clients send creates
//! (some with payloads), batches, amendments and erasures; each answer is logged with the
//! number of the last sync point made before it arrived. Then, for each crash point, two
//! images are built: with the directories' names as their last fsync left them, and with
//! every directory change kept (a journaling file system's metadata, in order) but still
//! none of the files' unsynced bytes. On each a server is started (recovery), and:
//! - every write acknowledged before that point is there: at its version or later, its
//!   text as acknowledged, its payload readable, its erasure held;
//! - `verify` and `verify --views` pass on the image after that server stops.
//!
//! `cc` builds the shim, and the data dir's file system must report birth times (statx),
//! as ext4 does. CI checks 24 points spread over the run and the last;
//! `MEDLEDGER_POWERLOSS_POINTS=all` (or a number) checks more, `MEDLEDGER_POWERLOSS_OPS` sets each client's writes, and
//! `MEDLEDGER_BIN` runs another server binary (a release build for the long run;
//! docs/RELIABILITY.md).

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

mod common;
use common::server::{free_port, request, start_logged_with, token, Running};

/// What one acknowledged write promised, and the sync point it was answered after.
#[derive(Clone, Debug)]
struct Ack {
    id: String,
    point: u64,
    version: u64,
    text: String,
    payload: bool,
    erased: bool,
}

/// What the clients were told, and the records they asked to erase (an erasure commits
/// its event before it destroys keys and answers: a cut in between leaves the payload
/// erased without an answer, which repeating the erasure finishes).
#[derive(Clone, Default)]
struct Told {
    acks: Vec<Ack>,
    erasing: HashSet<String>,
}

type Log = Arc<Mutex<Told>>;

/// The last sync point the shim has finished (read after an answer arrives).
fn points(out: &Path) -> u64 {
    let b = std::fs::read(out.join("points")).unwrap();
    u64::from_le_bytes(b[..8].try_into().unwrap())
}

fn record(id: &str, text: &str, payload: bool) -> Value {
    let mut r = json!({"record_id": id, "patient_id": format!("p-{}", id.len() % 5),
        "hospital_id": "h-1", "record_type": "note", "metadata": {"text": text}});
    if payload {
        r["payload"] = json!({"content_type": "application/fhir+json",
            "data": {"resourceType": "Observation", "id": id}});
    }
    r
}

fn client(addr: SocketAddr, w: usize, ops: u64, dr: &str, admin: &str, out: &Path, log: &Log) {
    let mut mine: Vec<(String, u64)> = Vec::new();
    let post = |path: &str, token: &str, body: &Value| {
        request(addr, "POST", path, Some(token), Some(&body.to_string()))
    };
    let ack = |id: &str, version: u64, text: &str, payload: bool, erased: bool| {
        let point = points(out);
        log.lock().unwrap().acks.push(Ack {
            id: id.to_owned(),
            point,
            version,
            text: text.to_owned(),
            payload,
            erased,
        });
    };
    for i in 1..=ops {
        let id = format!("r-{w}-{i}");
        match i % 10 {
            0..=3 => {
                let (text, payload) = (format!("note {id}"), i % 4 == 1);
                if let Ok((201, b)) = post("/v1/records", dr, &record(&id, &text, payload)) {
                    ack(&id, b["version"].as_u64().unwrap(), &text, payload, false);
                    mine.push((id, 1));
                }
            }
            4 => {
                let ids: Vec<String> = (0..5).map(|k| format!("{id}-{k}")).collect();
                let records: Vec<Value> = ids
                    .iter()
                    .map(|id| record(id, &format!("note {id}"), false))
                    .collect();
                if let Ok((200, b)) = post("/v1/records/batch", dr, &json!({"records": records})) {
                    for (item, id) in b["items"].as_array().unwrap().iter().zip(&ids) {
                        if item["status"] == 201 {
                            ack(id, 1, &format!("note {id}"), false, false);
                            mine.push((id.clone(), 1));
                        }
                    }
                }
            }
            5..=8 if !mine.is_empty() => {
                let at = (i as usize * 7) % mine.len();
                let (target, version) = mine[at].clone();
                let text = format!("amended {w}-{i}");
                let body = json!({"reason": "corrected", "expected_version": version,
                    "metadata": {"text": text}});
                if let Ok((201, b)) = post(&format!("/v1/records/{target}/amendments"), dr, &body) {
                    let v = b["version"].as_u64().unwrap();
                    ack(&target, v, &text, false, false);
                    mine[at].1 = v;
                }
            }
            9 if !mine.is_empty() => {
                let (target, version) = mine.swap_remove(0);
                log.lock().unwrap().erasing.insert(target.clone());
                let body = json!({"reason": "patient request"});
                if let Ok((200, _)) = post(&format!("/v1/records/{target}/erase"), admin, &body) {
                    ack(&target, version, "", false, true);
                }
            }
            _ => {}
        }
    }
}

/// A directory's names as one sync made them durable: (name, is a directory, key).
type Names = Vec<(String, bool, String)>;

/// The journal the shim wrote, by key: the points at which each file was synced (its
/// bytes then are `v/<point>`), each directory's names at each of its syncs, and every
/// directory's names as they were (synced or not) at each point.
struct Journal {
    root: String,
    first: u64,
    last: u64,
    files: HashMap<String, Vec<u64>>,
    dirs: HashMap<String, Vec<(u64, Names)>>,
    listings: HashMap<(u64, String), Names>,
}

/// What a power cut keeps of the directories' changes that were not synced.
#[derive(Clone, Copy, Debug)]
enum Tear {
    /// None of them (a name is durable once its directory is fsynced).
    SyncedNames,
    /// All of them, in order (a journaling file system that committed its metadata); the
    /// files' unsynced bytes are still lost: a new file may be there and empty.
    EveryName,
}

impl Journal {
    fn read(out: &Path) -> Journal {
        let text = std::fs::read_to_string(out.join("journal")).unwrap();
        let mut j = Journal {
            root: String::new(),
            first: 0,
            last: 0,
            files: HashMap::new(),
            dirs: HashMap::new(),
            listings: HashMap::new(),
        };
        let mut lines = text.lines();
        while let Some(line) = lines.next() {
            let f: Vec<&str> = line.split('\t').collect();
            match f[0] {
                "R" => j.root = f[1].to_owned(),
                "B" => j.first = f[1].parse().unwrap(),
                "F" => {
                    let p: u64 = f[1].parse().unwrap();
                    j.files.entry(f[2].to_owned()).or_default().push(p);
                    j.last = j.last.max(p);
                }
                "D" | "L" => {
                    let p: u64 = f[1].parse().unwrap();
                    let n: usize = f[3].parse().unwrap();
                    let names = (0..n)
                        .map(|_| {
                            let e: Vec<&str> = lines.next().unwrap().split('\t').collect();
                            assert_eq!(e[0], "E", "a directory's names: {line}");
                            (e[1].to_owned(), e[2] == "d", e[3].to_owned())
                        })
                        .collect();
                    if f[0] == "D" {
                        j.dirs.entry(f[2].to_owned()).or_default().push((p, names));
                    } else {
                        j.listings.insert((p, f[2].to_owned()), names);
                    }
                    j.last = j.last.max(p);
                }
                other => panic!("journal line {other:?}"),
            }
        }
        assert!(
            !j.root.is_empty() && j.first > 0,
            "the shim recorded no baseline"
        );
        j
    }

    /// The data dir a power cut right after point `k` leaves, written to `to`.
    fn image(&self, out: &Path, k: u64, tear: Tear, to: &Path) {
        self.build(out, &self.root, k, tear, to);
    }

    fn build(&self, out: &Path, dir: &str, k: u64, tear: Tear, to: &Path) {
        std::fs::create_dir_all(to).unwrap();
        let synced = || {
            self.dirs.get(dir).and_then(|v| {
                v.iter()
                    .rev()
                    .find(|(p, _)| *p <= k)
                    .map(|(_, names)| names)
            })
        };
        let names = match tear {
            Tear::SyncedNames => synced(),
            // The baseline (point `first`) has no listing: its names are all synced.
            Tear::EveryName => self.listings.get(&(k, dir.to_owned())).or_else(synced),
        };
        let Some(names) = names else {
            return; // a directory whose names were never synced is empty
        };
        for (name, is_dir, key) in names {
            let path = to.join(name);
            if *is_dir {
                self.build(out, key, k, tear, &path);
                continue;
            }
            let copy = self
                .files
                .get(key)
                .and_then(|v| v.iter().rev().find(|p| **p <= k));
            match copy {
                Some(p) => {
                    std::fs::copy(out.join("v").join(p.to_string()), &path).unwrap();
                }
                None => {
                    std::fs::File::create(&path).unwrap(); // named, never synced: no bytes
                }
            }
        }
    }
}

/// The server binary: this build's, or `MEDLEDGER_BIN` (a release build for the long run).
fn bin() -> PathBuf {
    std::env::var_os("MEDLEDGER_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_medledger")))
}

fn start_on(
    dir: &Path,
    addr: SocketAddr,
    args: &[&str],
    env: &[(&str, &std::ffi::OsStr)],
    log: &Path,
) -> Running {
    Running(start_logged_with(&bin(), dir, addr, args, env, log))
}

/// Every acknowledged write before point `k` is on image `dir`, and both verifies pass.
fn check_image(
    dir: &Path,
    k: u64,
    tear: Tear,
    told: &Told,
    (admin, dr): (&str, &str),
    log: &Path,
) -> usize {
    let addr = free_port();
    // Reads are not recorded here: each would wait for a block of its own.
    let server = start_on(dir, addr, &["--audit-reads", "off"], &[], log);
    let deadline = Instant::now() + Duration::from_secs(60);
    while request(addr, "GET", "/readyz", None, None).unwrap().1["projector_lag_blocks"] != 0 {
        assert!(
            Instant::now() < deadline,
            "point {k} ({tear:?}): the views did not catch up"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // The last acknowledgement of each record at or before k.
    let mut promised: HashMap<&str, &Ack> = HashMap::new();
    let mut erased: HashSet<&str> = HashSet::new();
    let mut payload: HashSet<&str> = HashSet::new();
    for a in told.acks.iter().filter(|a| a.point <= k) {
        if a.erased {
            erased.insert(&a.id);
        } else {
            promised.insert(&a.id, a);
        }
        if a.payload {
            payload.insert(&a.id);
        }
    }
    // Four readers (the check's time is mostly these requests).
    let promised: Vec<(&str, &Ack)> = promised.into_iter().collect();
    std::thread::scope(|scope| {
        for part in promised.chunks(promised.len().div_ceil(4).max(1)) {
            let (erased, payload) = (&erased, &payload);
            scope.spawn(move || {
                for (id, a) in part {
                    let expect = Expect {
                        ack: a,
                        erased: erased.contains(id),
                        payload: payload.contains(id),
                        erasing: told.erasing.contains(*id),
                    };
                    read_back(addr, admin, id, &expect, k, tear);
                }
            });
        }
    });
    // The recovered stores (ledger, key log, payload store) take a new write.
    let body = record("r-after", "after the cut", true).to_string();
    let (status, answer) = request(addr, "POST", "/v1/records", Some(dr), Some(&body)).unwrap();
    assert_eq!(
        status, 201,
        "point {k} ({tear:?}): a write after recovery: {answer}"
    );
    server.stop();
    for args in [&["verify"][..], &["verify", "--views"][..]] {
        let out = Command::new(bin())
            .args(args)
            .arg("--data-dir")
            .arg(dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "point {k} ({tear:?}): {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    promised.len()
}

/// What an image must show of one acknowledged record.
struct Expect<'a> {
    /// Its last acknowledged version at the point.
    ack: &'a Ack,
    /// Its erasure was acknowledged by the point.
    erased: bool,
    /// It was created with a payload.
    payload: bool,
    /// An erasure of it was sent (answered or not, before or after the point).
    erasing: bool,
}

/// One acknowledged record read back from the server on an image.
fn read_back(addr: SocketAddr, admin: &str, id: &str, e: &Expect, k: u64, tear: Tear) {
    let (status, rec) =
        request(addr, "GET", &format!("/v1/records/{id}"), Some(admin), None).unwrap();
    assert_eq!(
        status, 200,
        "point {k} ({tear:?}): acknowledged record {id}: {rec}"
    );
    let version = rec["version"].as_u64().unwrap();
    assert!(
        version >= e.ack.version,
        "point {k} ({tear:?}): {id} at version {version}, acknowledged {}",
        e.ack.version
    );
    if e.erased {
        assert_eq!(
            rec["erased"], true,
            "point {k} ({tear:?}): {id}'s acknowledged erasure: {rec}"
        );
        return;
    }
    if e.erasing && (rec["erased"] == true || rec["payload_erased"] == true) {
        return; // an unanswered erasure took effect, in part or whole
    }
    if version == e.ack.version {
        assert_eq!(
            rec["metadata"]["text"],
            e.ack.text.as_str(),
            "point {k} ({tear:?}): {id}: {rec}"
        );
    }
    if e.payload {
        let path = format!("/v1/records/{id}/payload?purpose=treatment");
        let (status, body) = request(addr, "GET", &path, Some(admin), None).unwrap();
        assert_eq!(status, 200, "point {k} ({tear:?}): {id}'s payload: {body}");
        assert_eq!(
            body["id"], id,
            "point {k} ({tear:?}): {id}'s payload: {body}"
        );
    }
}

fn shim(dir: &Path) -> PathBuf {
    let so = dir.join("powerloss.so");
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/powerloss/powerloss.c");
    let out = Command::new("cc")
        .args(["-shared", "-fPIC", "-O2", "-Wall", "-o"])
        .arg(&so)
        .arg(&source)
        .args(["-ldl", "-lpthread"])
        .output()
        .expect("cc runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    so
}

#[test]
fn a_power_cut_after_any_sync_loses_no_acknowledged_write() {
    let mut tmp = tempfile::tempdir().unwrap();
    if std::env::var_os("MEDLEDGER_POWERLOSS_KEEP").is_some() {
        eprintln!("keeping {}", tmp.path().display());
        tmp.disable_cleanup(true);
    }
    let so = shim(tmp.path());
    let data = tmp.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let data = data.canonicalize().unwrap();
    let out = tmp.path().join("out");
    std::fs::create_dir(&out).unwrap();
    // Minted before the server starts: the secret is part of the baseline.
    let dr = token(&data, "clinician", "dr-1", Some("h-1"));
    let admin = token(&data, "admin", "root-1", None);

    let addr = free_port();
    let env = [
        ("LD_PRELOAD", so.as_os_str()),
        ("POWERLOSS_ROOT", data.as_os_str()),
        ("POWERLOSS_OUT", out.as_os_str()),
    ];
    let mut server = start_on(&data, addr, &[], &env, &tmp.path().join("shimmed.log"));
    let ops: u64 = std::env::var("MEDLEDGER_POWERLOSS_OPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60);
    let log: Log = Arc::default();
    let clients: Vec<_> = (0..4)
        .map(|w| {
            let (log, dr, admin, out) = (log.clone(), dr.clone(), admin.clone(), out.clone());
            std::thread::spawn(move || client(addr, w, ops, &dr, &admin, &out, &log))
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
    server.0.kill().unwrap(); // the last image is what the shim recorded, not a clean stop
    server.0.wait().unwrap();
    let told = log.lock().unwrap().clone();
    let acks = &told.acks;
    assert!(
        acks.len() as u64 >= ops,
        "too few writes answered: {}",
        acks.len()
    );

    let journal = Journal::read(&out);
    let all: Vec<u64> = (journal.first..=journal.last).collect();
    let wanted = std::env::var("MEDLEDGER_POWERLOSS_POINTS").unwrap_or_default();
    let chosen: Vec<u64> = match wanted.as_str() {
        "all" => all.clone(),
        n => {
            let n: usize = n.parse().unwrap_or(24).clamp(1, all.len());
            let mut c: Vec<u64> = (0..n).map(|i| all[i * all.len() / n]).collect();
            c.push(journal.last);
            c.dedup();
            c
        }
    };
    let started = Instant::now();
    let mut checked = 0;
    for (i, k) in chosen.iter().enumerate() {
        for tear in [Tear::SyncedNames, Tear::EveryName] {
            let image = tmp.path().join(format!("image-{i}-{tear:?}"));
            journal.image(&out, *k, tear, &image);
            checked += check_image(
                &image,
                *k,
                tear,
                &told,
                (&admin, &dr),
                &tmp.path().join("image.log"),
            );
            std::fs::remove_dir_all(&image).unwrap();
        }
    }
    eprintln!(
        "{} writes acknowledged; {} sync points ({} to {}), {} checked with both tears in {:.0} s, {checked} acknowledged records read back",
        acks.len(),
        all.len(),
        journal.first,
        journal.last,
        chosen.len(),
        started.elapsed().as_secs_f64()
    );
}
