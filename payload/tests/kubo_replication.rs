//! Replication to a real IPFS node (js-ipfs with Kubo's RPC API), and that no plaintext
//! byte is at rest anywhere: not in the data dir, not in the node's repo.

mod common;
use common::read_all;

use std::io;
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::stream;
use medledger_payload::pinstore::{KuboStore, PinStore};
use medledger_payload::{CidVersion, PayloadConfig, Payloads};

/// A recognisable plaintext: a fake clinical note repeated to 600 KB (three chunks).
fn recognisable_plaintext() -> Vec<u8> {
    let note = b"PATIENT Jane Q. Doe, MRN 0042-PRIVACY-MARKER, diagnosis: hypertension. ";
    note.iter().copied().cycle().take(600_000).collect()
}

/// The needle searched for: long enough to be unmistakable, short enough to fall
/// inside any chunk.
const NEEDLE: &[u8] = b"MRN 0042-PRIVACY-MARKER";

fn body(data: Vec<u8>) -> impl futures_util::Stream<Item = Result<Bytes, io::Error>> + Send {
    let data = Bytes::from(data);
    let pieces: Vec<Bytes> = (0..data.len())
        .step_by(70_000)
        .map(|i| data.slice(i..(i + 70_000).min(data.len())))
        .collect();
    stream::iter(pieces.into_iter().map(Ok))
}

/// Every regular file under `dir` containing `needle`.
fn files_containing(dir: &Path, needle: &[u8]) -> (Vec<String>, usize) {
    let mut found = Vec::new();
    let mut scanned = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.is_dir() {
            for entry in std::fs::read_dir(&path).unwrap() {
                stack.push(entry.unwrap().path());
            }
        } else if meta.is_file() {
            let bytes = std::fs::read(&path).unwrap_or_default();
            scanned += 1;
            if bytes.windows(needle.len()).any(|w| w == needle) {
                found.push(path.display().to_string());
            }
        }
    }
    (found, scanned)
}

async fn wait_for_replication(payloads: &Payloads, limit: Duration) {
    let start = Instant::now();
    loop {
        let status = payloads.replication().expect("kubo is configured");
        if status.outbox_depth == 0 {
            return;
        }
        assert!(
            start.elapsed() < limit,
            "replication did not finish in {limit:?}: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_plaintext_reaches_the_data_dir_or_the_ipfs_node() {
    let node = common::TestNode::start();
    let dir = tempfile::tempdir().unwrap();
    let plaintext = recognisable_plaintext();

    // The search must be able to find the marker, or it proves nothing.
    let control = tempfile::tempdir().unwrap();
    std::fs::write(control.path().join("control"), &plaintext).unwrap();
    assert_eq!(files_containing(control.path(), NEEDLE).0.len(), 1);

    for version in [CidVersion::V0, CidVersion::V1] {
        let mut config = PayloadConfig::new(dir.path());
        config.cid_version = version;
        config.kubo = Some(node.api.clone());
        let payloads = Payloads::open(config).unwrap();
        let payload = payloads
            .put(body(plaintext.clone()), "text/plain")
            .await
            .unwrap();
        wait_for_replication(&payloads, Duration::from_secs(60)).await;
        let kubo = KuboStore::new(&node.api).unwrap();
        assert!(
            kubo.is_pinned(&payload.cid).await.unwrap(),
            "replicated and pinned on the node"
        );
        assert_eq!(read_all(&payloads, &payload).await.unwrap(), plaintext);
    }
    let (found, scanned) = files_containing(dir.path(), NEEDLE);
    assert!(found.is_empty(), "plaintext in the data dir: {found:?}");
    assert!(scanned >= 4, "scanned only {scanned} files in the data dir");
    let (found, scanned) = files_containing(&node.state, NEEDLE);
    assert!(
        found.is_empty(),
        "plaintext in the IPFS node's repo: {found:?}"
    );
    assert!(
        scanned >= 10,
        "scanned only {scanned} files in the node's repo"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ipfs_outage_delays_replication_and_loses_nothing() {
    let node = common::TestNode::start();
    let dir = tempfile::tempdir().unwrap();
    let mut config = PayloadConfig::new(dir.path());
    config.kubo = Some(node.api.clone());
    config.cid_version = CidVersion::V1;
    node.stop();

    let data: Vec<u8> = (0..1_500_000u32).map(|i| (i % 241) as u8).collect();
    let payloads = Payloads::open(config.clone()).unwrap();
    let payload = payloads
        .put(body(data.clone()), "x")
        .await
        .expect("the local store suffices");
    // A second payload erased (and its blocks collected) before the node is back: its
    // queued pin is skipped, not retried for ever ahead of everything else.
    let erased = payloads.put(body(vec![7; 300_000]), "x").await.unwrap();
    payloads.erase(&erased.key_id, &erased.cid).await.unwrap();
    assert!(payloads.gc().await.unwrap().blocks_removed >= 2);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let status = payloads.replication().unwrap();
    assert_eq!(status.outbox_depth, 3);
    assert!(status.failures >= 1, "{status:?}");
    // The outbox survives a restart of our process, too.
    drop(payloads);
    let payloads = Payloads::open(config).unwrap();
    assert_eq!(payloads.replication().unwrap().outbox_depth, 3);

    let node = node.restart();
    wait_for_replication(&payloads, Duration::from_secs(90)).await;
    let kubo = KuboStore::new(&node.api).unwrap();
    assert!(kubo.is_pinned(&payload.cid).await.unwrap());
    assert!(kubo.get_block(&payload.cid).await.unwrap().is_some());
    assert!(!kubo.is_pinned(&erased.cid).await.unwrap());

    // Erasure reaches the node as an unpin.
    payloads.erase(&payload.key_id, &payload.cid).await.unwrap();
    wait_for_replication(&payloads, Duration::from_secs(60)).await;
    assert!(!kubo.is_pinned(&payload.cid).await.unwrap());
}

/// A payload whose local blocks are lost is still read, from the node, every block
/// checked against its CID; without the node it is not found.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_fall_back_to_the_node_when_local_blocks_are_lost() {
    let node = common::TestNode::start();
    let dir = tempfile::tempdir().unwrap();
    let data: Vec<u8> = (0..700_000u32).map(|i| (i % 251) as u8).collect();
    let mut config = PayloadConfig::new(dir.path());
    config.kubo = Some(node.api.clone());
    let payload = {
        let payloads = Payloads::open(config.clone()).unwrap();
        let payload = payloads
            .put(body(data.clone()), "application/octet-stream")
            .await
            .unwrap();
        wait_for_replication(&payloads, Duration::from_secs(60)).await;
        payload
    };
    // Lose every local block (the keys stay).
    std::fs::remove_dir_all(dir.path().join("blocks")).unwrap();
    let payloads = Payloads::open(config.clone()).unwrap();
    assert_eq!(read_all(&payloads, &payload).await.unwrap(), data);
    drop(payloads);
    // Without the node there is nowhere to fall back to.
    config.kubo = None;
    let payloads = Payloads::open(config).unwrap();
    let failed = match payloads.get(&payload).await {
        Err(_) => true,
        Ok(mut stream) => {
            let mut failed = false;
            while let Some(piece) = futures_util::StreamExt::next(&mut stream).await {
                failed |= piece.is_err();
            }
            failed
        }
    };
    assert!(failed, "a payload with no blocks anywhere cannot be read");
}
