//! The payload pipeline end to end over the embedded store: round trips, durability
//! across reopen, erasure, limits, verification, and bounded concurrency.

mod common;
use common::read_all;

use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::stream::{self, Stream};
use medledger_payload::pinstore::{EmbeddedStore, GcStats, PinStore, PinStoreError};
use medledger_payload::{Block, Cid, CidVersion, PayloadConfig, Payloads};
use sha2::{Digest, Sha256};

fn plaintext(len: usize, salt: u8) -> Vec<u8> {
    (0..len)
        .map(|i| ((i * 13 + i / 1000) % 256) as u8 ^ salt)
        .collect()
}

/// The body as a lazy stream of `piece`-byte chunks.
fn body(data: Vec<u8>, piece: usize) -> impl Stream<Item = Result<Bytes, io::Error>> + Send {
    let data = Bytes::from(data);
    let pieces: Vec<Bytes> = (0..data.len())
        .step_by(piece.max(1))
        .map(|i| data.slice(i..(i + piece).min(data.len())))
        .collect();
    stream::iter(pieces.into_iter().map(Ok))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payloads_round_trip_and_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let mut stored = Vec::new();
    for version in [CidVersion::V0, CidVersion::V1] {
        let mut config = PayloadConfig::new(dir.path());
        config.cid_version = version;
        let payloads = Payloads::open(config).unwrap();
        for (len, piece) in [
            (0, 1),
            (1, 1),
            (262_143, 4096),
            (262_144, 100_000),
            (3 << 20, 65_537),
            (1 << 20, 1 << 20),
        ] {
            let data = plaintext(len, len as u8);
            let payload = payloads
                .put(body(data.clone(), piece), "application/pdf")
                .await
                .unwrap();
            assert_eq!(payload.size, len as u64);
            assert_eq!(payload.sha256, <[u8; 32]>::from(Sha256::digest(&data)));
            assert_eq!(payload.cid.version(), version);
            assert_eq!(
                read_all(&payloads, &payload).await.unwrap(),
                data,
                "len {len}"
            );
            stored.push((payload, data));
        }
    }
    let payloads = Payloads::open(PayloadConfig::new(dir.path())).unwrap();
    for (payload, data) in &stored {
        assert_eq!(&read_all(&payloads, payload).await.unwrap(), data);
    }
    // Same plaintext twice: different keys, so different ciphertext and CIDs.
    let a = payloads
        .put(body(b"same".to_vec(), 4), "text/plain")
        .await
        .unwrap();
    let b = payloads
        .put(body(b"same".to_vec(), 4), "text/plain")
        .await
        .unwrap();
    assert_ne!(a.cid, b.cid);
    assert_ne!(a.key_id, b.key_id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erased_payloads_can_never_be_read_and_their_blocks_are_collected() {
    let dir = tempfile::tempdir().unwrap();
    let payloads = Payloads::open(PayloadConfig::new(dir.path())).unwrap();
    let keep = payloads
        .put(body(plaintext(700_000, 1), 50_000), "x")
        .await
        .unwrap();
    let gone = payloads
        .put(body(plaintext(900_000, 2), 50_000), "x")
        .await
        .unwrap();
    let roots = payloads.pinned_roots().await.unwrap();
    assert!(roots.contains(&keep.cid) && roots.contains(&gone.cid));
    payloads.erase(&gone.key_id, &gone.cid).await.unwrap();
    assert!(!payloads.pinned_roots().await.unwrap().contains(&gone.cid));
    payloads.erase(&gone.key_id, &gone.cid).await.unwrap(); // idempotent
    let error = read_all(&payloads, &gone).await.unwrap_err();
    assert_eq!(error.code(), "payload_erased");
    let before = payloads.bytes_stored().await.unwrap();
    let stats = payloads.gc().await.unwrap();
    assert!(stats.blocks_removed >= 4, "{stats:?}");
    assert!(payloads.bytes_stored().await.unwrap() < before);
    drop(payloads);
    let payloads = Payloads::open(PayloadConfig::new(dir.path())).unwrap();
    assert_eq!(
        read_all(&payloads, &gone).await.unwrap_err().code(),
        "payload_erased"
    );
    assert_eq!(
        read_all(&payloads, &keep).await.unwrap(),
        plaintext(700_000, 1)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_and_verification_fail_with_stable_codes() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = PayloadConfig::new(dir.path());
    config.max_payload_bytes = 1000;
    let payloads = Payloads::open(config).unwrap();
    let error = payloads
        .put(body(plaintext(1001, 0), 100), "x")
        .await
        .unwrap_err();
    assert_eq!(error.code(), "payload_too_large");
    let ok = payloads
        .put(body(plaintext(1000, 0), 100), "x")
        .await
        .unwrap();

    let mut wrong_sha = ok.clone();
    wrong_sha.sha256[0] ^= 1;
    assert_eq!(
        read_all(&payloads, &wrong_sha).await.unwrap_err().code(),
        "payload_corrupt"
    );
    let mut wrong_size = ok.clone();
    wrong_size.size -= 1;
    assert_eq!(
        read_all(&payloads, &wrong_size).await.unwrap_err().code(),
        "payload_corrupt"
    );
    let mut unknown = ok.clone();
    unknown.key_id = "0123456789abcdef0123456789abcdef".into();
    assert_eq!(
        read_all(&payloads, &unknown).await.unwrap_err().code(),
        "payload_not_found"
    );
    let mut bad_id = ok.clone();
    bad_id.key_id = "../../etc/passwd".into();
    assert_eq!(
        read_all(&payloads, &bad_id).await.unwrap_err().code(),
        "invalid_key_id"
    );
    let mut other_cid = ok.clone();
    other_cid.cid = Cid::for_block(CidVersion::V1, medledger_payload::Codec::Raw, b"nothing");
    assert_eq!(
        read_all(&payloads, &other_cid).await.unwrap_err().code(),
        "payload_not_found"
    );
    // Another payload's blocks under this key fail authentication.
    let other = payloads
        .put(body(plaintext(1000, 9), 100), "x")
        .await
        .unwrap();
    let mut swapped = ok.clone();
    swapped.cid = other.cid;
    assert_eq!(
        read_all(&payloads, &swapped).await.unwrap_err().code(),
        "payload_corrupt"
    );
}

/// A store that records how many calls are in flight at once.
struct CountingStore {
    inner: EmbeddedStore,
    puts_in_flight: AtomicUsize,
    puts_max: AtomicUsize,
    gets_in_flight: AtomicUsize,
    gets_max: AtomicUsize,
}

struct InFlight<'a>(&'a AtomicUsize);

impl<'a> InFlight<'a> {
    fn enter(counter: &'a AtomicUsize, max: &AtomicUsize) -> InFlight<'a> {
        let now = counter.fetch_add(1, Ordering::SeqCst) + 1;
        max.fetch_max(now, Ordering::SeqCst);
        InFlight(counter)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

#[async_trait]
impl PinStore for CountingStore {
    async fn put_block(&self, block: Block) -> Result<(), PinStoreError> {
        let _guard = InFlight::enter(&self.puts_in_flight, &self.puts_max);
        tokio::time::sleep(Duration::from_millis(3)).await;
        self.inner.put_block(block).await
    }
    async fn get_block(&self, cid: &Cid) -> Result<Option<Bytes>, PinStoreError> {
        let _guard = InFlight::enter(&self.gets_in_flight, &self.gets_max);
        tokio::time::sleep(Duration::from_millis(3)).await;
        self.inner.get_block(cid).await
    }
    async fn has_block(&self, cid: &Cid) -> Result<bool, PinStoreError> {
        self.inner.has_block(cid).await
    }
    async fn pin(&self, root: &Cid) -> Result<(), PinStoreError> {
        self.inner.pin(root).await
    }
    async fn unpin(&self, root: &Cid) -> Result<(), PinStoreError> {
        self.inner.unpin(root).await
    }
    async fn is_pinned(&self, root: &Cid) -> Result<bool, PinStoreError> {
        self.inner.is_pinned(root).await
    }
    async fn pinned_roots(&self) -> Result<Vec<Cid>, PinStoreError> {
        self.inner.pinned_roots().await
    }
    async fn sync(&self) -> Result<(), PinStoreError> {
        self.inner.sync().await
    }
    async fn gc(&self) -> Result<GcStats, PinStoreError> {
        self.inner.gc().await
    }
    async fn stored_bytes(&self) -> Result<u64, PinStoreError> {
        self.inner.stored_bytes().await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_and_downloads_stay_within_their_worker_pools() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(CountingStore {
        inner: EmbeddedStore::open(&dir.path().join("blocks")).unwrap(),
        puts_in_flight: AtomicUsize::new(0),
        puts_max: AtomicUsize::new(0),
        gets_in_flight: AtomicUsize::new(0),
        gets_max: AtomicUsize::new(0),
    });
    let config = PayloadConfig::new(dir.path());
    assert_eq!(
        (config.upload_concurrency, config.download_concurrency),
        (4, 6)
    );
    let payloads = Payloads::open_with_store(config, store.clone()).unwrap();
    // 24 MiB in one 24 MiB piece and in small pieces: ~100 blocks each time.
    let data = plaintext(24 << 20, 5);
    for piece in [24 << 20, 10_000] {
        let payload = payloads.put(body(data.clone(), piece), "x").await.unwrap();
        let max = store.puts_max.load(Ordering::SeqCst);
        assert!(max <= 4, "{max} uploads in flight");
        assert!(max >= 2, "uploads did not run concurrently ({max})");
        assert_eq!(read_all(&payloads, &payload).await.unwrap(), data);
        let max = store.gets_max.load(Ordering::SeqCst);
        // Six leaves ahead plus the walker's parent fetch.
        assert!(max <= 7, "{max} downloads in flight");
        assert!(max >= 3, "downloads did not run concurrently ({max})");
    }
}
