//! A partition, with real links: three `medledger serve --cluster` nodes, each in a
//! network namespace this test makes, joined for Raft through a bridge in a fourth
//! namespace, and each reachable by clients over a link of its own. The leader's Raft link
//! is taken down (the leader is cut off from the other two, clients still reach it):
//! it must not acknowledge a write while cut off; the other two elect a leader and take
//! writes; after the link is back, the old leader's uncommitted tail is gone and every
//! node has the same chain.
//!
//! Needs root (network namespaces), as CI runs; every address is in the namespaces the
//! test made (10.R.0.0/16, R from the process id), removed at the end.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::server::{request, token, wait_healthy, Running};

fn ip(args: &[&str]) {
    common::run_as_root("ip", args, "network namespaces");
}

/// The namespaces and links; deleting the namespaces removes every veth.
struct Net {
    tag: String,
    r: u32,
}

impl Net {
    fn ns(&self, n: u32) -> String {
        format!("{}-{n}", self.tag)
    }
    fn switch(&self) -> String {
        format!("{}-sw", self.tag)
    }
    fn raft_if(&self, n: u32) -> String {
        format!("{}r{n}", self.tag)
    }
    fn raft_addr(&self, n: u32) -> SocketAddr {
        format!("10.{}.1.{n}:7000", self.r).parse().unwrap()
    }
    fn http_addr(&self, n: u32) -> SocketAddr {
        format!("10.{}.{}.2:8000", self.r, 10 + n).parse().unwrap()
    }

    fn new(nodes: u32) -> Net {
        let r = 100 + std::process::id() % 100;
        let net = Net {
            tag: format!("mlp{r}"),
            r,
        };
        let sw = net.switch();
        ip(&["netns", "add", &sw]);
        ip(&["-n", &sw, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &sw, "link", "set", "br0", "up"]);
        for n in 1..=nodes {
            let ns = net.ns(n);
            ip(&["netns", "add", &ns]);
            ip(&["-n", &ns, "link", "set", "lo", "up"]);
            // The Raft link: node ⇄ bridge.
            let (inner, outer) = (net.raft_if(n), format!("{}s{n}", net.tag));
            ip(&[
                "link", "add", &inner, "type", "veth", "peer", "name", &outer,
            ]);
            ip(&["link", "set", &inner, "netns", &ns]);
            ip(&["link", "set", &outer, "netns", &sw]);
            ip(&["-n", &sw, "link", "set", &outer, "master", "br0", "up"]);
            let raft_ip = format!("10.{r}.1.{n}/24");
            ip(&["-n", &ns, "addr", "add", &raft_ip, "dev", &inner]);
            ip(&["-n", &ns, "link", "set", &inner, "up"]);
            // The client link: node ⇄ this (the test's) namespace.
            let (inner, outer) = (format!("{}c{n}", net.tag), format!("{}h{n}", net.tag));
            ip(&[
                "link", "add", &inner, "type", "veth", "peer", "name", &outer,
            ]);
            ip(&["link", "set", &inner, "netns", &ns]);
            ip(&[
                "addr",
                "add",
                &format!("10.{r}.{}.1/30", 10 + n),
                "dev",
                &outer,
            ]);
            ip(&["link", "set", &outer, "up"]);
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("10.{r}.{}.2/30", 10 + n),
                "dev",
                &inner,
            ]);
            ip(&["-n", &ns, "link", "set", &inner, "up"]);
        }
        net
    }

    fn cut(&self, n: u32, up: bool) {
        let state = if up { "up" } else { "down" };
        ip(&["-n", &self.ns(n), "link", "set", &self.raft_if(n), state]);
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for n in 1..=3 {
            let _ = Command::new("ip")
                .args(["netns", "del", &self.ns(n)])
                .status();
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.switch()])
            .status();
    }
}

fn spawn(net: &Net, file: &PathBuf, dir: &PathBuf, n: u32) -> Child {
    let child = Command::new("ip")
        .args(["netns", "exec", &net.ns(n), env!("CARGO_BIN_EXE_medledger")])
        .args(["serve", "--cluster"])
        .arg(file)
        .args(["--node-id", &n.to_string(), "--data-dir"])
        .arg(dir)
        .args(["--workers", "1", "--rate-limit-per-sec", "0"])
        // Reads here check each node's own views; recorded reads go to the leader
        // (tests/cluster.rs).
        .args(["--audit-reads", "off"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_healthy(child, net.http_addr(n))
}

fn body(id: &str) -> String {
    format!(
        r#"{{"record_id":"{id}","patient_id":"p-1","hospital_id":"h-1","record_type":"note","metadata":{{"t":"x"}}}}"#
    )
}

fn leader_of(net: &Net, admin: &str, among: &[u32]) -> u32 {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        for &n in among {
            if let Ok((200, s)) = request(net.http_addr(n), "GET", "/v1/cluster", Some(admin), None)
            {
                if let Some(l) = s["leader_id"].as_u64().map(|l| l as u32) {
                    if among.contains(&l) && s["node_id"].as_u64() == Some(u64::from(n)) {
                        // Asked of a node that is in the same part as the leader it names.
                        return l;
                    }
                }
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("no leader among {among:?}");
}

/// Creates a record at node `n`, following 307s; the final status.
fn create(net: &Net, mut at: SocketAddr, token: &str, id: &str) -> u16 {
    for _ in 0..3 {
        let Ok((s, b)) = request(at, "POST", "/v1/records", Some(token), Some(&body(id))) else {
            return 0;
        };
        if s != 307 {
            return s;
        }
        let location = b["error"]["details"]["location"]
            .as_str()
            .unwrap_or_default();
        at = location
            .trim_start_matches("http://")
            .split('/')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=3).any(|n| net.http_addr(n) == at));
    }
    panic!("redirected in a loop");
}

fn tip(addr: SocketAddr, admin: &str) -> (u64, serde_json::Value) {
    let (s, c) = request(addr, "GET", "/v1/chain", Some(admin), None).unwrap();
    assert_eq!(s, 200, "{c}");
    (c["height"].as_u64().unwrap(), c["tip_hash"].clone())
}

#[test]
fn a_leader_cut_off_acknowledges_nothing_and_its_tail_is_dropped() {
    let net = Net::new(3);
    let root = tempfile::tempdir().unwrap();
    let mut text = String::from("cluster_id = \"partition-test\"\n");
    for n in 1..=3 {
        text.push_str(&format!(
            "[[node]]\nid = {n}\nraft = \"{}\"\nhttp = \"{}\"\n",
            net.raft_addr(n),
            net.http_addr(n)
        ));
    }
    let file = root.path().join("cluster.toml");
    std::fs::write(&file, text).unwrap();
    let dirs: Vec<PathBuf> = (1..=3).map(|n| root.path().join(format!("n{n}"))).collect();
    let _procs: Vec<Running> = (1..=3)
        .map(|n| Running(spawn(&net, &file, &dirs[n as usize - 1], n)))
        .collect();
    let admin = token(&dirs[0], "admin", "root", None);
    let dr = token(&dirs[0], "clinician", "dr-1", Some("h-1"));

    let old = leader_of(&net, &admin, &[1, 2, 3]);
    let mut acked = Vec::new();
    for i in 0..10 {
        let id = format!("r-before-{i}");
        assert_eq!(create(&net, net.http_addr(old), &dr, &id), 201);
        acked.push(id);
    }

    // MEDLEDGER_PARTITIONS rounds (1 in CI; `bench/cluster-partitions.sh N` runs more): each
    // cuts off whoever leads, writes through both sides, heals and waits for agreement.
    let rounds: u32 = std::env::var("MEDLEDGER_PARTITIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let mut cut_ids = Vec::new();
    let mut height;
    let mut old = old;
    let mut failovers = Vec::new();
    let mut round = 0;
    loop {
        net.cut(old, false);
        let cut_at = Instant::now();
        // Clients still reach the old leader; nothing it takes may be acknowledged.
        let cut_writes: Vec<_> = (0..3)
            .map(|k| {
                let (addr, dr) = (net.http_addr(old), dr.clone());
                std::thread::spawn(move || {
                    let id = format!("r-cut-{round}-{k}");
                    let got = request(addr, "POST", "/v1/records", Some(&dr), Some(&body(&id)));
                    (id, got.map(|(s, b)| (s, b["error"]["code"].clone())))
                })
            })
            .collect();
        let rest: Vec<u32> = (1..=3).filter(|&n| n != old).collect();
        let new = leader_of(&net, &admin, &rest);
        assert_ne!(new, old);
        let mut took = None;
        for i in 0..10 {
            let id = format!("r-during-{round}-{i}");
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let s = create(&net, net.http_addr(new), &dr, &id);
                if s == 201 {
                    took.get_or_insert(cut_at.elapsed());
                    break;
                }
                // 503 while the new leader settles; 409 if an unknown outcome did land.
                if s == 409 {
                    break;
                }
                assert!(Instant::now() < deadline, "the majority takes writes ({s})");
                std::thread::sleep(Duration::from_millis(50));
            }
            acked.push(id);
        }
        eprintln!(
            "the majority's first acknowledged write came {:?} after the cut",
            took.unwrap()
        );
        for t in cut_writes {
            let (id, got) = t.join().unwrap();
            match got {
                Ok((201, _)) => {
                    panic!("{id} was acknowledged by a leader cut off from the majority")
                }
                Ok((s, code)) => eprintln!("{id}: {s} {code}"),
                Err(e) => eprintln!("{id}: no answer ({e})"),
            }
            cut_ids.push(id);
        }

        net.cut(old, true);
        let deadline = Instant::now() + Duration::from_secs(60);
        height = loop {
            let tips: Vec<_> = (1..=3).map(|n| tip(net.http_addr(n), &admin)).collect();
            if tips.iter().all(|t| t == &tips[0]) {
                break tips[0].0;
            }
            assert!(
                Instant::now() < deadline,
                "the nodes did not agree after healing: {tips:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        failovers.push(took.expect("the majority took a write"));
        round += 1;
        if round == rounds {
            break;
        }
        old = leader_of(&net, &admin, &[1, 2, 3]);
    }
    failovers.sort();
    eprintln!(
        "{rounds} partitions: {} writes acknowledged, {} sent to a cut-off leader (none \
         acknowledged, none on any node); majority's first write after the cut: median \
         {:?}, max {:?}",
        acked.len(),
        cut_ids.len(),
        failovers[failovers.len() / 2],
        failovers.last().unwrap()
    );
    for n in 1..=3 {
        for id in &acked {
            let path = format!("/v1/records/{id}?min_height={height}");
            let (s, b) = request(net.http_addr(n), "GET", &path, Some(&dr), None).unwrap();
            assert_eq!(s, 200, "{id} on node {n}: {b}");
        }
        // The old leader's tail was never committed: on no node, not even its own.
        for id in &cut_ids {
            let path = format!("/v1/records/{id}?min_height={height}");
            let (s, b) = request(net.http_addr(n), "GET", &path, Some(&dr), None).unwrap();
            assert_eq!(s, 404, "{id} on node {n}: {b}");
        }
    }
}
