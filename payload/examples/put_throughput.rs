//! Rough throughput of the embedded pipeline: `put` then `get` of one payload.
//!
//!     cargo run --release -p medledger-payload --example put_throughput -- [MiB] [DIR]
//!
//! Benchmarks proper live in bench/; this is a quick check while developing the crate.

use std::time::Instant;

use bytes::Bytes;
use futures_util::stream::{self, StreamExt};
use medledger_payload::{PayloadConfig, Payloads};

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let mut args = std::env::args().skip(1);
    let mib: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(64);
    let dir = match args.next() {
        Some(dir) => std::path::PathBuf::from(dir),
        None => std::env::temp_dir().join(format!("payload-throughput-{}", std::process::id())),
    };
    let payloads = Payloads::open(PayloadConfig::new(&dir)).expect("open the pipeline");
    let piece: Bytes = (0..1 << 20)
        .map(|i: u32| (i % 251) as u8)
        .collect::<Vec<u8>>()
        .into();
    let body = stream::iter((0..mib).map(move |_| Ok::<_, std::io::Error>(piece.clone())));
    let start = Instant::now();
    let payload = payloads
        .put(body, "application/octet-stream")
        .await
        .expect("put");
    let put_s = start.elapsed().as_secs_f64();
    let start = Instant::now();
    let mut stream = payloads.get(&payload).await.expect("get");
    let mut read = 0usize;
    while let Some(piece) = stream.next().await {
        read += piece.expect("verified piece").len();
    }
    let get_s = start.elapsed().as_secs_f64();
    assert_eq!(read, mib << 20);
    println!(
        "{mib} MiB in {}: put {:.0} MiB/s (durable), get {:.0} MiB/s (verified); cpus {}",
        dir.display(),
        mib as f64 / put_s,
        mib as f64 / get_s,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    drop(payloads);
    if std::env::args().nth(2).is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
}
