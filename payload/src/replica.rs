//! Copies of a payload on other nodes (a cluster, docs/CLUSTER.md): what one node sends
//! of a stored payload (its DAG's blocks, still ciphertext, and its data key wrapped under
//! the master key every node shares) and what another does to hold it as durably as its
//! own puts.
//!
//! A node that receives a copy checks every block against its CID (the store does), pins
//! the root only when the whole DAG is present, and stores the key; the copy is durable
//! when [`Payloads::adopt`] returns. A key destroyed here (the record was erased) is never
//! brought back: the copy is refused with [`PayloadError::Erased`].

use std::sync::Arc;

use crate::cid::{Cid, Codec};
use crate::error::PayloadError;
use crate::keystore::{KeyKind, KeyStoreError};
use crate::pipeline::{dag_links, Payloads, DAG_DEPTH_MAX};
use crate::unixfs::Block;

/// The most blocks a payload's DAG may have to be copied (a payload of AbsoluteMaxBytes
/// at 256 KiB per leaf has a few thousand at most).
pub const DAG_BLOCKS_MAX: usize = 1 << 20;

impl Payloads {
    /// Every block of the DAG under `root`, parents before their children, left to
    /// right: the order in which a copy is sent. Only parent nodes are read (raw leaves
    /// are named by their parents).
    pub async fn dag_cids(&self, root: &Cid) -> Result<Vec<Cid>, PayloadError> {
        let mut out = Vec::new();
        let mut stack = vec![(*root, 0usize)];
        while let Some((cid, depth)) = stack.pop() {
            out.push(cid);
            if out.len() > DAG_BLOCKS_MAX {
                return Err(PayloadError::Corrupt(format!(
                    "DAG under {root} has more than {DAG_BLOCKS_MAX} blocks"
                )));
            }
            if cid.codec() == Codec::Raw {
                continue;
            }
            let links = dag_links(&*self.store, *root, cid, depth).await?;
            if !links.is_empty() && depth >= DAG_DEPTH_MAX {
                return Err(PayloadError::Corrupt(format!(
                    "DAG under {root} is deeper than {DAG_DEPTH_MAX}"
                )));
            }
            stack.extend(links.iter().rev().map(|child| (*child, depth + 1)));
        }
        Ok(out)
    }

    /// The blocks `cids` from the local store (verified against their CIDs), in order.
    pub async fn blocks(&self, cids: &[Cid]) -> Result<Vec<Block>, PayloadError> {
        let mut out = Vec::with_capacity(cids.len());
        for cid in cids {
            let data = self
                .store
                .get_block(cid)
                .await?
                .ok_or_else(|| PayloadError::NotFound(format!("block {cid} is missing")))?;
            out.push(Block::claimed(*cid, data));
        }
        Ok(out)
    }

    /// Stores blocks of a copy sent by another node. Each is checked against its CID; none
    /// is durable or pinned before [`Payloads::adopt`].
    pub async fn put_blocks(&self, blocks: Vec<Block>) -> Result<(), PayloadError> {
        for block in blocks {
            self.store.put_block(block).await?;
        }
        Ok(())
    }

    /// Holds a copy whose blocks were put: stores its data key (`wrapped` under the master
    /// key) and pins `root` (which needs the whole DAG present), both durable when this
    /// returns. [`PayloadError::Erased`] when the key was destroyed here: the copy is
    /// refused and left unpinned.
    pub async fn adopt(
        &self,
        root: &Cid,
        key_id: &str,
        wrapped: &[u8],
    ) -> Result<(), PayloadError> {
        if self.keys.is_erased(key_id) {
            return Err(PayloadError::Erased(key_id.to_owned()));
        }
        let (stored_key, pinned) = tokio::join!(
            self.keys.store_wrapped(key_id, wrapped, KeyKind::Payload),
            self.store.pin(root)
        );
        pinned?;
        match stored_key {
            Ok(()) => Ok(()),
            Err(KeyStoreError::Erased(id)) => {
                // Erased meanwhile: the blocks go at the next GC.
                self.store.unpin(root).await?;
                Err(PayloadError::Erased(id))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// True when this node holds the payload: its root pinned and its key stored.
    pub async fn holds(&self, root: &Cid, key_id: &str) -> Result<bool, PayloadError> {
        if !self.store.is_pinned(root).await? {
            return Ok(false);
        }
        let keys = Arc::clone(&self.keys);
        let id = key_id.to_owned();
        match tokio::task::spawn_blocking(move || keys.load_cached(&id))
            .await
            .expect("key store panicked")
        {
            Ok(_) => Ok(true),
            Err(KeyStoreError::NotFound(_)) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::PayloadConfig;
    use bytes::Bytes;

    fn open(dir: &std::path::Path, seed: u8) -> Payloads {
        let mut config = PayloadConfig::new(dir);
        config.master_key_bytes = Some(crate::SecretSeed([seed; 32]));
        Payloads::open(config).unwrap()
    }

    async fn put(p: &Payloads, len: usize) -> (crate::StoredPayload, Vec<u8>) {
        let body: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
        let chunks: Vec<Result<Bytes, std::io::Error>> = body
            .chunks(100_000)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        let stored = p
            .put(
                futures_util::stream::iter(chunks),
                "application/octet-stream",
            )
            .await
            .unwrap();
        (stored, body)
    }

    async fn read(p: &Payloads, stored: &crate::StoredPayload) -> Result<Vec<u8>, PayloadError> {
        use futures_util::StreamExt;
        let mut stream = p.get(stored).await?;
        let mut out = Vec::new();
        while let Some(piece) = stream.next().await {
            out.extend_from_slice(&piece?);
        }
        Ok(out)
    }

    /// A copy sent block by block and adopted reads back the same bytes on the other node,
    /// and is durable there (it survives a reopen).
    #[tokio::test]
    async fn a_copy_reads_back_on_the_other_node() {
        let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let a = open(a_dir.path(), 7);
        let b = open(b_dir.path(), 7);
        // 1.1 MB: several leaves under a parent.
        let (stored, body) = put(&a, 1_100_000).await;
        let cids = a.dag_cids(&stored.cid).await.unwrap();
        assert!(cids.len() > 2, "a parent and its leaves: {}", cids.len());
        assert_eq!(cids[0], stored.cid, "the root first");
        assert!(!b.holds(&stored.cid, &stored.key_id).await.unwrap());
        // The root alone cannot be pinned: the DAG is incomplete.
        b.put_blocks(a.blocks(&cids[..1]).await.unwrap())
            .await
            .unwrap();
        let wrapped = a.keys().wrapped(&stored.key_id).unwrap();
        assert!(b
            .adopt(&stored.cid, &stored.key_id, &wrapped)
            .await
            .is_err());
        b.put_blocks(a.blocks(&cids[1..]).await.unwrap())
            .await
            .unwrap();
        b.adopt(&stored.cid, &stored.key_id, &wrapped)
            .await
            .unwrap();
        assert!(b.holds(&stored.cid, &stored.key_id).await.unwrap());
        drop(b);
        let b = open(b_dir.path(), 7);
        assert_eq!(read(&b, &stored).await.unwrap(), body);
    }

    /// A block whose bytes do not hash to its CID is refused.
    #[tokio::test]
    async fn a_forged_block_is_refused() {
        let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let a = open(a_dir.path(), 7);
        let b = open(b_dir.path(), 7);
        let (stored, _) = put(&a, 1_000).await;
        let mut blocks = a.blocks(&[stored.cid]).await.unwrap();
        let mut forged = blocks[0].data.to_vec();
        let last = forged.len() - 1;
        forged[last] ^= 1;
        blocks[0].data = Bytes::from(forged);
        assert!(b.put_blocks(blocks).await.is_err());
    }

    /// A copy of a payload whose key was destroyed here (its record erased) is refused.
    #[tokio::test]
    async fn an_erased_payload_is_not_brought_back() {
        let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let a = open(a_dir.path(), 7);
        let b = open(b_dir.path(), 7);
        let (stored, _) = put(&a, 1_000).await;
        b.erase(&stored.key_id, &stored.cid).await.unwrap();
        let cids = a.dag_cids(&stored.cid).await.unwrap();
        b.put_blocks(a.blocks(&cids).await.unwrap()).await.unwrap();
        let wrapped = a.keys().wrapped(&stored.key_id).unwrap();
        let refused = b.adopt(&stored.cid, &stored.key_id, &wrapped).await;
        assert!(
            matches!(refused, Err(PayloadError::Erased(_))),
            "{refused:?}"
        );
        assert!(!b.holds(&stored.cid, &stored.key_id).await.unwrap());
        assert!(matches!(
            read(&b, &stored).await,
            Err(PayloadError::Erased(_))
        ));
    }
}
