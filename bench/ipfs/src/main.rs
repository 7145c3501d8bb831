//! `ipfs-bench [--api URL] [--mib N] [--concurrency 1,2,4,8]`: one N MiB payload (64 by
//! default) through the payload pipeline with a real IPFS node (Kubo's RPC API) as the
//! store, for each upload / download concurrency, and the speedup of the default (4 up,
//! 6 down) over 1. Without `--api` it starts the test node (tests/ipfs-test-node/start.sh)
//! on a free loopback port and stops it afterwards.
//!
//! `ipfs-bench --connection-cost [--api URL]`: the cost of ipfs-api-backend-hyper opening
//! a new connection per request (`pool_max_idle_per_host(0)`): 500 `version` calls
//! through `KuboStore::health`, against 500 over one kept-alive connection.
//!
//! `ipfs-bench --embedded [--dir DIR] [--runs 3]`: the same payload through the default
//! pipeline into the embedded blockstore (durable: fsynced before `put` returns), in DIR
//! (on the disk being measured; a temp dir by default).
//!
//! Prints one JSON line per concurrency and a summary line. Each put is encrypt, chunk,
//! hash and `block/put` of every block, then `pin/add` of the root; each get fetches,
//! verifies every block against its CID and decrypts.

use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use futures_util::StreamExt;
use medledger_payload::pinstore::{KuboStore, PinStore};
use medledger_payload::{PayloadConfig, Payloads};

struct Node {
    state: Option<String>,
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(state) = &self.state {
            let root = env!("CARGO_MANIFEST_DIR");
            let _ = Command::new("bash")
                .arg(format!("{root}/../../tests/ipfs-test-node/stop.sh"))
                .arg(state)
                .status();
        }
    }
}

fn start_node() -> (String, Node) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let root = env!("CARGO_MANIFEST_DIR");
    let out = Command::new("bash")
        .arg(format!("{root}/../../tests/ipfs-test-node/start.sh"))
        .arg(port.to_string())
        .output()
        .expect("bash runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "the IPFS test node did not start: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let field = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(k))
            .map(str::to_owned)
            .unwrap_or_else(|| panic!("start.sh printed no {k}: {text}"))
    };
    (
        field("API="),
        Node {
            state: Some(field("STATE=")),
        },
    )
}

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mib: usize = arg(&args, "--mib").map_or(64, |v| v.parse().expect("--mib N"));
    assert!((1..=1024).contains(&mib), "--mib is 1 to 1024");
    if args.iter().any(|a| a == "--embedded") {
        embedded(&args, mib);
        return;
    }
    if args.iter().any(|a| a == "--connection-cost") {
        let (api, _node) = match arg(&args, "--api") {
            Some(api) => (api, Node { state: None }),
            None => start_node(),
        };
        connection_cost(&api);
        return;
    }
    let levels: Vec<usize> = arg(&args, "--concurrency")
        .unwrap_or_else(|| "1,2,4,8".into())
        .split(',')
        .map(|v| v.parse().expect("--concurrency 1,2,4,8"))
        .collect();
    let (api, _node) = match arg(&args, "--api") {
        Some(api) => (api, Node { state: None }),
        None => start_node(),
    };
    let payload = test_payload(mib);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut results = Vec::new();
    for &c in &levels {
        let dir = tempfile::tempdir().unwrap();
        let mut config = PayloadConfig::new(dir.path());
        config.upload_concurrency = c;
        config.download_concurrency = c;
        config.max_payload_bytes = (mib as u64) << 20;
        let (put_s, get_s) = rt.block_on(async {
            let store: Arc<dyn PinStore> = Arc::new(KuboStore::new(&api).expect("node URL"));
            let payloads = Payloads::open_with_store(config, store).unwrap();
            put_get(&payloads, &payload).await
        });
        let line = serde_json::json!({
            "concurrency": c, "mib": mib,
            "put_mib_per_sec": mib as f64 / put_s, "get_mib_per_sec": mib as f64 / get_s,
            "put_seconds": put_s, "get_seconds": get_s,
        });
        println!("{line}");
        results.push((c, mib as f64 / put_s, mib as f64 / get_s));
    }
    let at = |c: usize| results.iter().find(|r| r.0 == c).copied();
    if let (Some(one), Some(up)) = (at(1), at(4)) {
        let down = at(6).or(at(8)).unwrap_or(up);
        println!(
            "{}",
            serde_json::json!({
                "speedup_put_default_4_over_1": up.1 / one.1,
                "speedup_get_over_1": down.2 / one.2,
                "get_speedup_measured_at": if at(6).is_some() { 6 } else if at(8).is_some() { 8 } else { 4 },
            })
        );
    }
}

fn test_payload(mib: usize) -> Vec<u8> {
    (0..mib * 1024 * 1024)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[3])
        .collect()
}

/// Put then get through `payloads`; (put seconds, get seconds).
async fn put_get(payloads: &Payloads, payload: &[u8]) -> (f64, f64) {
    let pieces: Vec<Result<Bytes, std::io::Error>> = payload
        .chunks(1 << 20)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    let t = Instant::now();
    let stored = payloads
        .put(
            futures_util::stream::iter(pieces),
            "application/octet-stream",
        )
        .await
        .unwrap();
    let put_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let mut stream = payloads.get(&stored).await.unwrap();
    let mut n = 0usize;
    while let Some(piece) = stream.next().await {
        n += piece.unwrap().len();
    }
    assert_eq!(n, payload.len(), "read back whole");
    (put_s, t.elapsed().as_secs_f64())
}

fn embedded(args: &[String], mib: usize) {
    let runs: usize = arg(args, "--runs").map_or(3, |v| v.parse().expect("--runs N"));
    let base = arg(args, "--dir").map(std::path::PathBuf::from);
    let payload = test_payload(mib);
    let rt = tokio::runtime::Runtime::new().unwrap();
    for run in 1..=runs {
        let dir = match &base {
            Some(b) => tempfile::tempdir_in(b).unwrap(),
            None => tempfile::tempdir().unwrap(),
        };
        let mut config = PayloadConfig::new(dir.path());
        config.max_payload_bytes = (mib as u64) << 20;
        let (put_s, get_s) = rt.block_on(async {
            let payloads = Payloads::open(config).unwrap();
            put_get(&payloads, &payload).await
        });
        println!(
            "{}",
            serde_json::json!({
                "store": "embedded", "run": run, "mib": mib,
                "put_mib_per_sec_durable": mib as f64 / put_s,
                "get_mib_per_sec_verified": mib as f64 / get_s,
            })
        );
    }
}

/// Mean µs per `version` call: through the crate (a connection each), and over one
/// kept-alive connection (HTTP/1.1 written by hand).
fn connection_cost(api: &str) {
    use std::io::{BufRead, BufReader, Read, Write};
    const CALLS: u32 = 500;
    let rt = tokio::runtime::Runtime::new().unwrap();
    let store = KuboStore::new(api).unwrap();
    rt.block_on(store.health()).unwrap();
    let t = Instant::now();
    for _ in 0..CALLS {
        rt.block_on(store.health()).unwrap();
    }
    let crate_us = t.elapsed().as_secs_f64() * 1e6 / f64::from(CALLS);

    let authority = api.trim_start_matches("http://").trim_end_matches('/');
    let stream = std::net::TcpStream::connect(authority).unwrap();
    stream.set_nodelay(true).unwrap();
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    let mut call = || {
        write!(
            writer,
            "POST /api/v0/version HTTP/1.1\r\nHost: {authority}\r\nContent-Length: 0\r\n\r\n"
        )
        .unwrap();
        let mut length = None;
        let mut chunked = false;
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            let l = line.trim_end().to_ascii_lowercase();
            if l.is_empty() {
                break;
            }
            if let Some(v) = l.strip_prefix("content-length:") {
                length = v.trim().parse::<usize>().ok();
            }
            chunked |= l == "transfer-encoding: chunked";
        }
        if let Some(n) = length {
            let mut body = vec![0u8; n];
            reader.read_exact(&mut body).unwrap();
        } else if chunked {
            loop {
                let mut size = String::new();
                reader.read_line(&mut size).unwrap();
                let n = usize::from_str_radix(size.trim(), 16).unwrap();
                let mut chunk = vec![0u8; n + 2];
                reader.read_exact(&mut chunk).unwrap();
                if n == 0 {
                    break;
                }
            }
        }
    };
    call();
    let t = Instant::now();
    for _ in 0..CALLS {
        call();
    }
    let kept_us = t.elapsed().as_secs_f64() * 1e6 / f64::from(CALLS);
    println!(
        "{}",
        serde_json::json!({
            "calls": CALLS,
            "crate_new_connection_each_us": crate_us,
            "kept_alive_connection_us": kept_us,
            "cost_per_request_us": crate_us - kept_us,
        })
    );
}
