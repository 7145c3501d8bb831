//! One conformance suite, run against every `PinStore`: the embedded blockstore and a real
//! IPFS node over Kubo's RPC API.

mod common;

use std::time::Duration;

use bytes::Bytes;
use medledger_payload::pinstore::{EmbeddedStore, KuboStore, PinStore, PinStoreError};
use medledger_payload::{Block, Cid, CidVersion, Codec, FileBuilder};

/// A DAG of `len` deterministic bytes (salted, so each run stores new blocks).
fn dag(version: CidVersion, len: usize, salt: u8) -> (Vec<Block>, Cid) {
    let data: Vec<u8> = (0..len).map(|i| (i % 253) as u8 ^ salt).collect();
    let mut builder = FileBuilder::new(version);
    let mut blocks = builder.push(&data);
    let (rest, summary) = builder.finish();
    blocks.extend(rest);
    (blocks, summary.root)
}

fn salt() -> u8 {
    (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos()
        % 251) as u8
}

/// The suite. `supports_gc`: the store collects garbage itself (the embedded store);
/// a Kubo node's GC is the node's, and the store must say so rather than pretend.
async fn conformance(store: &dyn PinStore, supports_gc: bool) {
    let salt = salt();
    for version in [CidVersion::V0, CidVersion::V1] {
        // Three chunks: leaves and one parent.
        let (blocks, root) = dag(version, 3 * 262_144 + 100, salt);
        assert_eq!(blocks.len(), 5);
        for block in &blocks {
            store.put_block(block.clone()).await.unwrap();
        }
        store.put_block(blocks[0].clone()).await.unwrap(); // idempotent
        store.sync().await.unwrap();
        for block in &blocks {
            assert!(store.has_block(&block.cid).await.unwrap(), "{}", block.cid);
            let got = store
                .get_block(&block.cid)
                .await
                .unwrap()
                .expect("stored block");
            assert_eq!(got, block.data);
        }
        assert!(!store.is_pinned(&root).await.unwrap());
        store.pin(&root).await.unwrap();
        store.pin(&root).await.unwrap(); // idempotent
        assert!(
            store.is_pinned(&root).await.unwrap(),
            "{version:?} root pinned"
        );
        store.unpin(&root).await.unwrap();
        assert!(!store.is_pinned(&root).await.unwrap());
        store.unpin(&root).await.unwrap(); // idempotent
        store.pin(&root).await.unwrap();
        assert!(store.is_pinned(&root).await.unwrap());
    }

    // Absent blocks.
    let absent = Cid::for_block(CidVersion::V1, Codec::Raw, &[salt, 1, 2, 3, 4, 5, 6, 7]);
    assert!(!store.has_block(&absent).await.unwrap());
    assert_eq!(store.get_block(&absent).await.unwrap(), None);
    assert!(matches!(
        store.pin(&absent).await,
        Err(PinStoreError::Missing(_))
    ));

    // Bytes that do not match the CID are refused.
    let lie = Block::claimed(
        Cid::for_block(CidVersion::V1, Codec::Raw, b"one thing"),
        Bytes::from_static(b"another thing"),
    );
    assert!(matches!(
        store.put_block(lie).await,
        Err(PinStoreError::CidMismatch { .. })
    ));

    // GC keeps pinned DAGs and removes unpinned ones.
    let (kept_blocks, kept_root) = dag(CidVersion::V1, 2 * 262_144 + 1, salt ^ 0x55);
    let (gone_blocks, gone_root) = dag(CidVersion::V1, 2 * 262_144 + 2, salt ^ 0xaa);
    for block in kept_blocks.iter().chain(&gone_blocks) {
        store.put_block(block.clone()).await.unwrap();
    }
    store.sync().await.unwrap();
    store.pin(&kept_root).await.unwrap();
    store.pin(&gone_root).await.unwrap();
    store.unpin(&gone_root).await.unwrap();
    if supports_gc {
        let before = store.stored_bytes().await.unwrap();
        let stats = store.gc().await.unwrap();
        assert_eq!(stats.blocks_removed, gone_blocks.len() as u64);
        assert_eq!(
            store.stored_bytes().await.unwrap(),
            before - stats.bytes_removed
        );
        for block in &kept_blocks {
            assert_eq!(
                store.get_block(&block.cid).await.unwrap().unwrap(),
                block.data
            );
        }
        for block in &gone_blocks {
            assert!(!store.has_block(&block.cid).await.unwrap());
        }
        assert_eq!(store.gc().await.unwrap().blocks_removed, 0);
    } else {
        assert!(matches!(
            store.gc().await,
            Err(PinStoreError::Unsupported(_))
        ));
    }
    assert!(store.is_pinned(&kept_root).await.unwrap());
    let roots = store.pinned_roots().await.unwrap();
    assert!(roots.iter().any(|r| r.same_content(&kept_root)));
    assert!(!roots.iter().any(|r| r.same_content(&gone_root)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_store_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).unwrap();
    conformance(&store, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_store_keeps_pins_and_blocks_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let (blocks, root) = dag(CidVersion::V0, 5 * 262_144, 7);
    {
        let store = EmbeddedStore::open(dir.path()).unwrap();
        for block in &blocks {
            store.put_block(block.clone()).await.unwrap();
        }
        store.pin(&root).await.unwrap();
        // An upload that never got pinned (a crash mid-upload) leaves orphans.
        let (orphans, _) = dag(CidVersion::V1, 262_144 + 5, 9);
        for block in orphans {
            store.put_block(block).await.unwrap();
        }
        store.sync().await.unwrap();
    }
    let store = EmbeddedStore::open(dir.path()).unwrap();
    assert!(store.is_pinned(&root).await.unwrap());
    for block in &blocks {
        assert_eq!(
            store.get_block(&block.cid).await.unwrap().unwrap(),
            block.data
        );
    }
    // Orphans from before the reopen are collected; the pinned DAG is not.
    assert_eq!(store.gc().await.unwrap().blocks_removed, 3);
    drop(store);
    let store = EmbeddedStore::open(dir.path()).unwrap();
    assert!(store.is_pinned(&root).await.unwrap());
    assert_eq!(
        store.get_block(&root).await.unwrap().unwrap(),
        blocks.last().unwrap().data
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_gc_spares_an_upload_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).unwrap();
    let (blocks, root) = dag(CidVersion::V1, 2 * 262_144 + 9, 3);
    for block in &blocks {
        store.put_block(block.clone()).await.unwrap();
    }
    assert_eq!(store.gc().await.unwrap().blocks_removed, 0);
    store.pin(&root).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubo_store_conforms_against_a_real_node() {
    let node = common::TestNode::start();
    let store = KuboStore::new(&node.api)
        .unwrap()
        .with_lookup_timeout(Duration::from_secs(2));
    let version = store.health().await.expect("the node answers version");
    assert!(!version.is_empty());
    conformance(&store, false).await;
}
