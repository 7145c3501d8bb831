//! Three real `medledger serve --cluster` processes on 127.0.0.1: writes go through the
//! leader (a follower answers 307 with the leader's URL), every node serves reads, and
//! every node's chain has the same hash at the same height. The leader is SIGKILLed
//! under load: every acknowledged record is readable afterwards from every node, a new
//! leader takes writes, and the killed node rejoins and catches up.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

mod common;
use common::server::{free_port, request, token, wait_healthy, Running};

struct Node {
    id: u64,
    raft: SocketAddr,
    http: SocketAddr,
    dir: PathBuf,
    /// The cluster file it is started with.
    file: PathBuf,
}

struct Cluster {
    _root: tempfile::TempDir,
    /// The first nodes' cluster file.
    file: PathBuf,
    nodes: Vec<Node>,
    /// `--audit-reads` of the nodes: `off` by default here, so a read on a follower
    /// shows that node's own views (the replication under test); with reads recorded,
    /// a follower sends them to the leader
    /// (`reads_of_clinical_content_are_recorded_by_the_leader`).
    audit_reads: &'static str,
}

impl Cluster {
    fn new(n: u64) -> Cluster {
        let root = tempfile::tempdir().unwrap();
        let mut text = String::from("cluster_id = \"test-cluster\"\n");
        let mut nodes = Vec::new();
        let file = root.path().join("cluster.toml");
        for id in 1..=n {
            let (raft, http) = (free_port(), free_port());
            text.push_str(&format!(
                "[[node]]\nid = {id}\nraft = \"{raft}\"\nhttp = \"{http}\"\n"
            ));
            let dir = root.path().join(format!("node-{id}"));
            let file = file.clone();
            nodes.push(Node {
                id,
                raft,
                http,
                dir,
                file,
            });
        }
        std::fs::write(&file, text).unwrap();
        Cluster {
            _root: root,
            file,
            nodes,
            audit_reads: "off",
        }
    }

    fn spawn(&self, i: usize) -> Child {
        let node = &self.nodes[i];
        let child = Command::new(env!("CARGO_BIN_EXE_medledger"))
            .args(["serve", "--cluster"])
            .arg(&node.file)
            .args(["--node-id", &node.id.to_string(), "--data-dir"])
            .arg(&node.dir)
            .args(["--workers", "1", "--rate-limit-per-sec", "0"])
            .args(["--audit-reads", self.audit_reads])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        wait_healthy(child, node.http)
    }

    /// A node more: its own cluster file lists the others and itself (same directory, so
    /// the same secret); it is not the lowest id, so it waits to be added.
    fn add_node(&mut self) -> usize {
        let id = self.nodes.len() as u64 + 1;
        let (raft, http) = (free_port(), free_port());
        let mut text = std::fs::read_to_string(&self.file).unwrap();
        text.push_str(&format!(
            "[[node]]\nid = {id}\nraft = \"{raft}\"\nhttp = \"{http}\"\n"
        ));
        let file = self.file.with_file_name(format!("cluster-{id}.toml"));
        std::fs::write(&file, text).unwrap();
        let dir = self.file.with_file_name(format!("node-{id}"));
        self.nodes.push(Node {
            id,
            raft,
            http,
            dir,
            file,
        });
        self.nodes.len() - 1
    }

    /// Waits until a node names a leader; returns its index in `nodes`.
    fn leader(&self, admin: &str, among: &[usize]) -> usize {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            for &i in among {
                if let Ok((200, s)) =
                    request(self.nodes[i].http, "GET", "/v1/cluster", Some(admin), None)
                {
                    if let Some(id) = s["leader_id"].as_u64() {
                        if let Some(j) = self.nodes.iter().position(|n| n.id == id) {
                            if among.contains(&j) {
                                return j;
                            }
                        }
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("no leader elected among {among:?}");
    }
}

/// `GET /v1/cluster` as an admin: (status, body).
fn status_of(addr: SocketAddr, admin: &str) -> (u16, Value) {
    request(addr, "GET", "/v1/cluster", Some(admin), None).unwrap()
}

fn chain(addr: SocketAddr, admin: &str) -> (u64, Value) {
    let (s, c) = request(addr, "GET", "/v1/chain", Some(admin), None).unwrap();
    assert_eq!(s, 200, "{c}");
    (c["height"].as_u64().unwrap(), c["tip_hash"].clone())
}

/// Waits until every node in `among` has the same height (at least `min`) and returns it,
/// asserting their tip hashes are equal: a hash chain equal at the tip is equal at every
/// height below.
fn converge(c: &Cluster, admin: &str, among: &[usize], min: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let tips: Vec<_> = among
            .iter()
            .map(|&i| chain(c.nodes[i].http, admin))
            .collect();
        if tips.iter().all(|t| t.0 == tips[0].0 && t.0 >= min) {
            for t in &tips {
                assert_eq!(t.1, tips[0].1, "same height {}, different tips", t.0);
            }
            return tips[0].0;
        }
        assert!(
            Instant::now() < deadline,
            "nodes did not converge: {tips:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn record_body(id: &str) -> String {
    format!(
        r#"{{"record_id":"{id}","patient_id":"p-1","hospital_id":"h-1","record_type":"note","metadata":{{"t":"x"}}}}"#
    )
}

/// Posts a record, following a 307 to the leader; the final status and body.
fn create(c: &Cluster, mut at: SocketAddr, token: &str, id: &str) -> (u16, Value) {
    for _ in 0..3 {
        let (s, b) = match request(
            at,
            "POST",
            "/v1/records",
            Some(token),
            Some(&record_body(id)),
        ) {
            Ok(r) => r,
            Err(_) => return (0, Value::Null),
        };
        if s != 307 {
            return (s, b);
        }
        let location = b["error"]["details"]["location"]
            .as_str()
            .unwrap_or_default();
        let host = location
            .trim_start_matches("http://")
            .split('/')
            .next()
            .unwrap();
        at = host.parse().unwrap();
        assert!(
            c.nodes.iter().any(|n| n.http == at),
            "307 to a node of the cluster"
        );
    }
    panic!("redirected in a loop");
}

fn assert_readable(addr: SocketAddr, token: &str, ids: &[String], height: u64) {
    for id in ids {
        let (s, b) = request(
            addr,
            "GET",
            &format!("/v1/records/{id}?min_height={height}"),
            Some(token),
            None,
        )
        .unwrap();
        assert_eq!(s, 200, "record {id} on {addr}: {b}");
        // Its metadata opens here: the leader sent the record's key to this node, or this
        // node fetched it (it was down when the key was sent).
        assert_eq!(
            b["metadata"],
            serde_json::json!({"t": "x"}),
            "{id} on {addr}"
        );
    }
}

/// The body of a GET as text (`/metrics`).
fn get_text(addr: SocketAddr, path: &str) -> String {
    String::from_utf8(raw(addr, "GET", path, None, "text/plain", b"").1).unwrap()
}

fn mint(dir: &Path, role: &str, sub: &str) -> String {
    token(dir, role, sub, Some("h-1"))
}

#[test]
fn reads_of_clinical_content_are_recorded_by_the_leader() {
    let mut c = Cluster::new(3);
    c.audit_reads = "sync";
    let _procs: Vec<Running> = (0..3).map(|i| Running(c.spawn(i))).collect();
    let admin = mint(&c.nodes[0].dir, "admin", "root");
    let dr = mint(&c.nodes[0].dir, "clinician", "dr-1");
    let all = [0, 1, 2];
    let leader = c.leader(&admin, &all);
    let follower = (leader + 1) % 3;
    let (s, b) = create(&c, c.nodes[leader].http, &dr, "r-read");
    assert_eq!(s, 201, "{b}");
    let height = b["height"].as_u64().unwrap();
    // A follower cannot put the read on the ledger: it sends the reader to the leader.
    let (s, b) = request(
        c.nodes[follower].http,
        "GET",
        &format!("/v1/records/r-read?min_height={height}"),
        Some(&dr),
        None,
    )
    .unwrap();
    assert_eq!(s, 307, "{b}");
    assert_eq!(b["error"]["code"], "not_leader");
    let location = b["error"]["details"]["location"].as_str().unwrap();
    assert_eq!(
        location,
        format!(
            "http://{}/v1/records/r-read?min_height={height}",
            c.nodes[leader].http
        )
    );
    let (s, b) = request(
        c.nodes[leader].http,
        "GET",
        "/v1/records/r-read",
        Some(&dr),
        None,
    )
    .unwrap();
    assert_eq!(s, 200, "{b}");
    // The read is on every node's ledger: its access log shows it anywhere.
    let tip = converge(&c, &admin, &all, height + 1);
    let (s, b) = request(
        c.nodes[follower].http,
        "GET",
        &format!("/v1/records/r-read/access-log?min_height={tip}"),
        Some(&admin),
        None,
    )
    .unwrap();
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["items"][0]["reader"]["id"], "dr-1");
    assert_eq!(b["items"][0]["what"], "record");
}

#[test]
fn three_nodes_replicate_fail_over_and_agree() {
    let c = Cluster::new(3);
    let mut procs: Vec<Option<Running>> = (0..3).map(|i| Some(Running(c.spawn(i)))).collect();
    // Any node's data dir mints tokens every node accepts.
    let admin = mint(&c.nodes[2].dir, "admin", "root");
    let dr = mint(&c.nodes[1].dir, "clinician", "dr-1");
    let all = [0, 1, 2];
    let leader = c.leader(&admin, &all);
    let follower = (leader + 1) % 3;

    // A write sent to a follower is redirected to the leader, and lands.
    let (s, b) = request(
        c.nodes[follower].http,
        "POST",
        "/v1/records",
        Some(&dr),
        Some(&record_body("r-first")),
    )
    .unwrap();
    assert_eq!(s, 307, "{b}");
    assert_eq!(b["error"]["code"], "not_leader");
    let (s, b) = create(&c, c.nodes[follower].http, &dr, "r-first");
    assert_eq!(s, 201, "{b}");
    let mut acked = vec!["r-first".to_owned()];
    for i in 0..20 {
        let id = format!("r-seq-{i}");
        let (s, b) = create(&c, c.nodes[leader].http, &dr, &id);
        assert_eq!(s, 201, "{b}");
        acked.push(id);
    }
    let (_, receipt) = create(&c, c.nodes[leader].http, &dr, "r-last");
    acked.push("r-last".into());
    let height = receipt["height"].as_u64().unwrap();
    // Read-your-writes on every node, and the same chain everywhere.
    for n in &c.nodes {
        assert_readable(n.http, &dr, &acked, height);
    }
    converge(&c, &admin, &all, height);
    let (s, status) = status_of(c.nodes[follower].http, &admin);
    assert_eq!(s, 200);
    assert_eq!(status["cluster_id"], "test-cluster");
    assert_eq!(status["nodes"].as_array().unwrap().len(), 3);
    let (s, _) = request(
        c.nodes[follower].http,
        "GET",
        "/v1/cluster",
        Some(&dr),
        None,
    )
    .unwrap();
    assert_eq!(s, 403, "clinicians do not see the cluster");
    let metrics = get_text(c.nodes[leader].http, "/metrics");
    assert!(
        metrics.contains("\nmedledger_cluster_is_leader 1\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("\nmedledger_cluster_nodes 3\n"),
        "{metrics}"
    );
    let lag_series = metrics
        .lines()
        .filter(|l| l.starts_with("medledger_cluster_replication_lag_entries{"))
        .count();
    assert_eq!(lag_series, 2, "one lag series per follower: {metrics}");
    let metrics = get_text(c.nodes[follower].http, "/metrics");
    assert!(
        metrics.contains("\nmedledger_cluster_is_leader 0\n"),
        "{metrics}"
    );

    // The leader is SIGKILLed while 4 writers run against the other nodes.
    let acked = Arc::new(Mutex::new(acked));
    let stop = Arc::new(AtomicBool::new(false));
    let survivors: Vec<usize> = all.iter().copied().filter(|&i| i != leader).collect();
    let c = Arc::new(c);
    let first_after_kill = Arc::new(Mutex::new(None::<Instant>));
    let killed_at = Arc::new(Mutex::new(None::<Instant>));
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let (c, acked, stop, dr) = (c.clone(), acked.clone(), stop.clone(), dr.clone());
            let (first, killed) = (first_after_kill.clone(), killed_at.clone());
            let targets = survivors.clone();
            std::thread::spawn(move || {
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) && i < 5_000 {
                    let id = format!("r-{w}-{i}");
                    let at = c.nodes[targets[i % targets.len()]].http;
                    let (s, _) = create(&c, at, &dr, &id);
                    match s {
                        201 => {
                            acked.lock().unwrap().push(id);
                            if killed.lock().unwrap().is_some() {
                                first.lock().unwrap().get_or_insert_with(Instant::now);
                            }
                        }
                        // Refused or unknown during the election: not acknowledged.
                        _ => std::thread::sleep(Duration::from_millis(20)),
                    }
                    i += 1;
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(700));
    let (_, before) = status_of(c.nodes[leader].http, &admin);
    let last_index_before_kill = before["last_log_index"].as_u64().unwrap();
    let killed = procs[leader].take().unwrap();
    drop(killed); // SIGKILL and reap
    *killed_at.lock().unwrap() = Some(Instant::now());
    let new_leader = c.leader(&admin, &survivors);
    assert_ne!(new_leader, leader);
    std::thread::sleep(Duration::from_millis(1_500));
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.join().unwrap();
    }
    let kill = killed_at.lock().unwrap().unwrap();
    let first = first_after_kill
        .lock()
        .unwrap()
        .expect("the new leader took writes");
    eprintln!(
        "failover: first acknowledged write {} ms after the SIGKILL",
        first.duration_since(kill).as_millis()
    );
    let acked = acked.lock().unwrap().clone();
    let unique: HashSet<_> = acked.iter().collect();
    assert_eq!(unique.len(), acked.len(), "no record acknowledged twice");
    let height = converge(&c, &admin, &survivors, 0);
    for &i in &survivors {
        assert_readable(c.nodes[i].http, &dr, &acked, height);
    }

    // More blocks than the log keeps: the killed node can only catch up by installing a
    // snapshot (blocks fetched from another node's ledger).
    let mut more = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, s) = status_of(c.nodes[new_leader].http, &admin);
        if s["purged_index"]
            .as_u64()
            .is_some_and(|p| p > last_index_before_kill)
        {
            break;
        }
        assert!(Instant::now() < deadline, "the log was not purged: {s}");
        let id = format!("r-more-{}", more.len());
        if create(&c, c.nodes[new_leader].http, &dr, &id).0 == 201 {
            more.push(id);
        }
    }
    let mut acked = acked;
    acked.extend(more);
    let height = converge(&c, &admin, &survivors, 0);

    // The killed node rejoins, catches up, and agrees.
    procs[leader] = Some(Running(c.spawn(leader)));
    let height = converge(&c, &admin, &all, height);
    assert_readable(c.nodes[leader].http, &dr, &acked, height);
    let (_, rejoined) = status_of(c.nodes[leader].http, &admin);
    assert!(
        rejoined["snapshot_index"]
            .as_u64()
            .is_some_and(|i| i > last_index_before_kill),
        "the rejoined node installed a snapshot: {rejoined}"
    );
    eprintln!(
        "{} records acknowledged, all readable on all three nodes at height {height}",
        acked.len()
    );

    // An erasure through the leader reaches every node's key store.
    let leader = c.leader(&admin, &all);
    let (s, b) = request(
        c.nodes[leader].http,
        "POST",
        "/v1/records/r-first/erase",
        Some(&admin),
        Some(r#"{"reason":"patient request"}"#),
    )
    .unwrap();
    assert_eq!(s, 200, "{b}");
    let height = b["height"].as_u64().unwrap();
    for n in &c.nodes {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let (s, b) = request(
                n.http,
                "GET",
                &format!("/v1/records/r-first?min_height={height}"),
                Some(&dr),
                None,
            )
            .unwrap();
            assert_eq!(s, 200, "{b}");
            if b["erased"] == true {
                assert_eq!(b["metadata"], Value::Null, "{b}");
                break;
            }
            assert!(Instant::now() < deadline, "not erased on {}: {b}", n.http);
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn one_node_cluster(root: &Path) -> medledger::serve::ClusterSettings {
    let file = root.join("one.toml");
    let (raft, http) = (free_port(), free_port());
    std::fs::write(
        &file,
        format!("cluster_id = \"solo\"\n[[node]]\nid = 1\nraft = \"{raft}\"\nhttp = \"{http}\"\n"),
    )
    .unwrap();
    medledger::serve::ClusterSettings {
        config: medledger::cluster::ClusterConfig::load(&file).unwrap(),
        node_id: 1,
    }
}

#[test]
fn a_data_dir_stays_a_single_node_or_a_cluster_node() {
    use medledger::serve::{Core, ServeConfig, ServeError};
    let root = tempfile::tempdir().unwrap();
    let single = root.path().join("single");
    Core::open(&ServeConfig::new(single.clone()))
        .unwrap()
        .close();
    // A single node's ledger has its own genesis: it cannot join a cluster.
    let mut config = ServeConfig::new(single);
    config.cluster = Some(one_node_cluster(root.path()));
    let err = Core::open(&config).err().expect("refused");
    assert!(err.to_string().contains("genesis block differs"), "{err}");

    // A cluster node's data dir cannot be served without its cluster.
    let node = root.path().join("node");
    let mut config = ServeConfig::new(node.clone());
    config.cluster = Some(one_node_cluster(root.path()));
    Core::open(&config).unwrap().close();
    let err = Core::open(&ServeConfig::new(node)).err().expect("refused");
    assert!(matches!(err, ServeError::ClusterDataDir(_)), "{err}");
}

#[test]
fn raft_messages_without_the_cluster_secret_are_refused() {
    use medledger::serve::{Core, ServeConfig};
    let root = tempfile::tempdir().unwrap();
    let mut config = ServeConfig::new(root.path().join("node"));
    let settings = one_node_cluster(root.path());
    let raft = settings.config.nodes[&1].raft;
    config.cluster = Some(settings);
    let core = Core::open(&config).unwrap();
    let genesis = hex::encode(medledger_storage::Block::genesis(0).hash());
    // A forged "campaign now" would move the leadership: refused like Raft's own.
    for ((cluster, genesis, mac, code), route) in [
        ("solo", genesis.as_str(), "00", "bad_mac"),
        ("other", genesis.as_str(), "00", "cluster_mismatch"),
        ("solo", "00", "00", "genesis_mismatch"),
    ]
    .into_iter()
    .flat_map(|c| [(c, "/raft/vote"), (c, "/raft/elect")])
    {
        let (s, b) = common::server::request_with_headers(
            raft,
            "POST",
            route,
            None,
            Some("{}"),
            &[
                ("x-medledger-cluster", cluster),
                ("x-medledger-genesis", genesis),
                ("x-medledger-mac", mac),
            ],
        )
        .unwrap();
        assert_eq!(
            (s, b["error"]["code"].as_str()),
            (403, Some(code)),
            "{route}: {b}"
        );
    }
    core.close();
}

#[test]
fn a_node_is_added_promoted_another_removed_and_the_leadership_handed_over() {
    let mut c = Cluster::new(3);
    let mut procs: Vec<Option<Running>> = (0..3).map(|i| Some(Running(c.spawn(i)))).collect();
    let admin = mint(&c.nodes[0].dir, "admin", "root");
    let dr = mint(&c.nodes[0].dir, "clinician", "dr-1");
    let leader = c.leader(&admin, &[0, 1, 2]);
    let mut acked = Vec::new();
    for i in 0..40 {
        let id = format!("r-{i}");
        assert_eq!(create(&c, c.nodes[leader].http, &dr, &id).0, 201);
        acked.push(id);
    }
    let new = c.add_node();
    procs.push(Some(Running(c.spawn(new))));
    // One membership command against `url`; its status JSON (exit 0 asserted).
    let dir = c.nodes[(leader + 1) % 3].dir.to_str().unwrap().to_owned();
    let change = |action: &str, url: String, extra: &[&str]| -> Value {
        let out = Command::new(env!("CARGO_BIN_EXE_medledger"))
            .args(["cluster", action, "--url", &url, "--data-dir", &dir])
            .args(extra)
            .output()
            .unwrap();
        let status: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{action}: {status} {err}");
        status
    };
    let roles = |status: &Value| -> BTreeMap<u64, String> {
        let nodes = status["nodes"].as_array().unwrap();
        nodes
            .iter()
            .map(|n| {
                (
                    n["id"].as_u64().unwrap(),
                    n["role"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    };
    // Asked of a follower: the change follows the 307 to the leader.
    let follower = (leader + 1) % 3;
    let at_follower = format!("http://{}", c.nodes[follower].http);
    let (raft, http) = (c.nodes[new].raft.to_string(), c.nodes[new].http.to_string());
    let status = change(
        "add-learner",
        at_follower.clone(),
        &["--id", "4", "--raft", &raft, "--http", &http],
    );
    assert_eq!(
        roles(&status).get(&4).map(String::as_str),
        Some("learner"),
        "{status}"
    );
    let status = change("promote", at_follower, &["--id", "4"]);
    assert_eq!(
        roles(&status).get(&4).map(String::as_str),
        Some("follower"),
        "{status}"
    );
    // The follower leaves: the voters are the other two and the new node.
    let gone = c.nodes[follower].id.to_string();
    let status = change(
        "remove",
        format!("http://{}", c.nodes[leader].http),
        &["--id", &gone],
    );
    let after = roles(&status);
    assert!(
        !after.contains_key(&c.nodes[follower].id) && after.contains_key(&4),
        "{status}"
    );
    procs[follower] = None; // stopped: the cluster no longer needs it
    let rest: Vec<usize> = (0..4).filter(|&i| i != follower).collect();
    for i in 0..20 {
        let id = format!("r-after-{i}");
        let (s, b) = create(&c, c.nodes[new].http, &dr, &id);
        assert_eq!(s, 201, "{b}");
        acked.push(id);
    }
    // The leadership is handed to the new node (asked of it: a follower follows the 307
    // to the leader), while a client goes on writing.
    assert_ne!(c.leader(&admin, &rest), new);
    let stop = AtomicBool::new(false);
    let during = std::thread::scope(|s| {
        let writer = s.spawn(|| {
            let mut ok = Vec::new();
            for n in 0.. {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let id = format!("r-transfer-{n}");
                match create(&c, c.nodes[leader].http, &dr, &id) {
                    (201, _) => ok.push(id),
                    // During the handover: nothing was proposed (503), or no answer.
                    (503, _) | (0, _) => std::thread::sleep(Duration::from_millis(20)),
                    (s, b) => panic!("a write during the transfer: {s} {b}"),
                }
            }
            ok
        });
        std::thread::sleep(Duration::from_millis(300));
        let status = change(
            "transfer-leader",
            format!("http://{}", c.nodes[new].http),
            &["--id", "4"],
        );
        assert_eq!(status["leader_id"], 4, "{status}");
        std::thread::sleep(Duration::from_millis(300));
        stop.store(true, Ordering::Relaxed);
        writer.join().unwrap()
    });
    assert!(
        !during.is_empty(),
        "no write acknowledged around the transfer"
    );
    acked.extend(during);
    // The new node takes writes itself (no 307).
    let (s, b) = request(
        c.nodes[new].http,
        "POST",
        "/v1/records",
        Some(&dr),
        Some(&record_body("r-new-leader")),
    )
    .unwrap();
    assert_eq!(s, 201, "{b}");
    acked.push("r-new-leader".into());
    // Handing it to a node that is not a voter is refused.
    let out = Command::new(env!("CARGO_BIN_EXE_medledger"))
        .args(["cluster", "transfer-leader", "--url"])
        .arg(format!("http://{}", c.nodes[new].http))
        .args(["--data-dir", &dir, "--id", &gone])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("transfer_refused"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let height = converge(&c, &admin, &rest, 0);
    assert_readable(c.nodes[new].http, &dr, &acked, height);
}

/// One request with raw bytes both ways (`Connection: close`): (status, body bytes).
fn raw(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    content_type: &str,
    body: &[u8],
) -> (u16, Vec<u8>) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{auth}Content-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    s.write_all(body).unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    let split = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head");
    let status = String::from_utf8_lossy(&out[..split])
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, out[split + 4..].to_vec())
}

/// A counter's value in `addr`'s `/metrics`.
fn counter(addr: SocketAddr, name: &str) -> u64 {
    let metrics = get_text(addr, "/metrics");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {metrics}"))
}

/// The payload of `id` as `addr` serves it once its views reach `height`.
fn payload_on(addr: SocketAddr, token: &str, id: &str, height: u64) -> (u16, Vec<u8>) {
    raw(
        addr,
        "GET",
        &format!("/v1/records/{id}/payload?min_height={height}"),
        Some(token),
        "application/json",
        b"",
    )
}

/// A payload is acknowledged only once a majority holds it, and then every node serves
/// it: the node that was down when it was written fetches it, and it outlives the node
/// that took it. Its erasure reaches every node.
#[test]
fn payloads_reach_a_majority_and_every_node_serves_them() {
    let c = Cluster::new(3);
    let mut procs: Vec<Option<Running>> = (0..3).map(|i| Some(Running(c.spawn(i)))).collect();
    let admin = mint(&c.nodes[0].dir, "admin", "root");
    let dr = mint(&c.nodes[0].dir, "clinician", "dr-1");
    let all = [0, 1, 2];
    let leader = c.leader(&admin, &all);
    let down = (leader + 1) % 3;
    let up = (leader + 2) % 3;
    drop(procs[down].take()); // SIGKILL: a majority is still up

    // 2.5 MB: ten leaves under a parent node, sent (and fetched) in two messages.
    let file: Vec<u8> = (0..2_500_000u32).map(|i| (i * 31 % 253) as u8).collect();
    let boundary = "clusterTESTboundary";
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"record\"\r\nContent-Type: application/json\r\n\r\n{}\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"scan.bin\"\r\nContent-Type: application/dicom\r\n\r\n",
        record_body("r-pay")
    )
    .into_bytes();
    body.extend_from_slice(&file);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let (s, receipt) = raw(
        c.nodes[leader].http,
        "POST",
        "/v1/records",
        Some(&dr),
        &format!("multipart/form-data; boundary={boundary}"),
        &body,
    );
    assert_eq!(s, 201, "{}", String::from_utf8_lossy(&receipt));
    let receipt: Value = serde_json::from_slice(&receipt).unwrap();
    let height = receipt["height"].as_u64().unwrap();
    // Acknowledged once the other node up held the copy the leader sent it.
    assert_eq!(
        counter(
            c.nodes[up].http,
            "medledger_cluster_payload_copies_received_total"
        ),
        1
    );
    for i in [leader, up] {
        let (s, got) = payload_on(c.nodes[i].http, &dr, "r-pay", height);
        assert_eq!(s, 200, "on node {i}: {}", String::from_utf8_lossy(&got));
        assert!(got == file, "the same bytes on node {i}");
    }

    // The node that was down catches up and serves it (fetched from the others).
    procs[down] = Some(Running(c.spawn(down)));
    converge(&c, &admin, &all, height);
    let (s, got) = payload_on(c.nodes[down].http, &dr, "r-pay", height);
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&got));
    assert!(got == file, "the same bytes on the node that was down");
    assert_eq!(
        counter(
            c.nodes[down].http,
            "medledger_cluster_payloads_fetched_total"
        ),
        1
    );
    assert_eq!(
        counter(
            c.nodes[down].http,
            "medledger_cluster_payload_copies_received_total"
        ),
        0
    );

    // The node that took it dies; the other two still serve it.
    drop(procs[leader].take());
    let survivors = [down, up];
    let new_leader = c.leader(&admin, &survivors);
    for i in survivors {
        let (s, got) = payload_on(c.nodes[i].http, &dr, "r-pay", height);
        assert_eq!(s, 200);
        assert!(
            got == file,
            "the same bytes on node {i} after the leader died"
        );
    }

    // Its erasure reaches every live node: the payload is gone there.
    let (s, b) = request(
        c.nodes[new_leader].http,
        "POST",
        "/v1/records/r-pay/erase",
        Some(&admin),
        Some(r#"{"reason":"patient request"}"#),
    )
    .unwrap();
    assert_eq!(s, 200, "{b}");
    let height = b["height"].as_u64().unwrap();
    for i in survivors {
        let (s, got) = payload_on(c.nodes[i].http, &dr, "r-pay", height);
        assert_eq!(s, 410, "{}", String::from_utf8_lossy(&got));
    }
}
