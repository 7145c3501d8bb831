//! What a write needs on a majority besides its block: its record's content key and its
//! payload. The leader sends both to every other member before it proposes the block and
//! goes on only once a majority of the voters (itself included) hold them durably
//! (IPFS Cluster's `replication_factor_min`); a node that missed one (it was down)
//! fetches it from the others when a read or its key keeper needs it. See
//! docs/CLUSTER.md, "Keys and payloads".

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use medledger_payload::keystore::{record_key_id, KeyKind, KeyStoreError};
use medledger_payload::{Cid, PayloadError, StoredPayload};

use super::network::{Copy, CopyRefused, KeyAnswer, PayloadId, PayloadPiece, WireBlock};
use super::{Cluster, KEY_WAIT, PAYLOAD_WAIT};

/// Whether a node fetched a payload it lacked.
#[derive(Debug, PartialEq, Eq)]
pub enum PayloadFetch {
    /// It was here already, or is now.
    Held,
    /// Its key was destroyed on another node (its record was erased), and now here.
    Erased,
    /// No node that answered holds it.
    Absent,
}

impl Cluster {
    /// Runs `send(peer)` for every other member, each on Raft's runtime (so those left
    /// when a majority is reached still finish), and returns once a majority of the
    /// voters, this node included, answered `Ok`; an error as soon as one answers that
    /// `what` was erased there.
    async fn on_majority<F>(
        &self,
        what: &str,
        wait: Duration,
        send: impl Fn(String) -> F,
    ) -> Result<(), String>
    where
        F: Future<Output = Result<(), CopyRefused>> + Send + 'static,
    {
        let peers = self.peers();
        let needed = peers.voters / 2 + 1;
        let mut held = 1; // this node
        if held >= needed && peers.addrs.is_empty() {
            return Ok(());
        }
        let (tx, mut rx) = tokio::sync::mpsc::channel(peers.addrs.len().max(1));
        for (i, raft) in peers.addrs.into_iter().enumerate() {
            // A learner gets its copy too, but only voters make the majority.
            let voter = i < peers.voter_peers;
            let (tx, sent) = (tx.clone(), send(raft));
            self.handle.spawn(async move {
                let _ = tx.send((voter, sent.await)).await;
            });
        }
        drop(tx);
        let mut errors = Vec::new();
        let deadline = tokio::time::sleep(wait);
        tokio::pin!(deadline);
        while held < needed {
            tokio::select! {
                next = rx.recv() => match next {
                    Some((voter, Ok(()))) => held += usize::from(voter),
                    Some((_, Err(CopyRefused::Erased))) => {
                        return Err(format!("{what} was erased on another node"));
                    }
                    Some((_, Err(CopyRefused::Failed(e)))) => errors.push(e),
                    None => break,
                },
                () = &mut deadline => {
                    errors.push("no majority in time".into());
                    break;
                }
            }
        }
        if held >= needed {
            Ok(())
        } else {
            // The peers' errors name their addresses: logged, not answered.
            tracing::warn!(errors = %errors.join("; "), "{what} did not reach a majority");
            Err(format!(
                "{what} reached {held} of the {needed} nodes a majority needs"
            ))
        }
    }

    /// Sends the content key of `record_id` (which this node holds) to every other member
    /// and returns once a majority of the voters hold it durably: the key of a record is
    /// then as durable as the block that needs it, which is proposed only after this.
    pub async fn replicate_key(&self, record_id: &str) -> Result<(), String> {
        let key_id = Arc::new(record_key_id(record_id));
        let wrapped = Arc::new(
            self.payloads
                .keys()
                .wrapped(&key_id)
                .map_err(|e| e.to_string())?,
        );
        let shipper = self.shipper.clone();
        self.on_majority("the record's content key", KEY_WAIT, |raft| {
            let (shipper, key_id, wrapped) = (shipper.clone(), key_id.clone(), wrapped.clone());
            async move {
                let copy = Copy::Key {
                    key_id: key_id.to_string(),
                    wrapped: wrapped.to_vec(),
                };
                shipper.ship(&raft, copy).await
            }
        })
        .await
    }

    /// Sends a copy of a payload this node stored (blocks, then its wrapped key) to every
    /// other member and returns once a majority of the voters hold it durably.
    pub async fn replicate_payload(&self, stored: &StoredPayload) -> Result<(), String> {
        let cids = Arc::new(
            self.payloads
                .dag_cids(&stored.cid)
                .await
                .map_err(|e| e.to_string())?,
        );
        let wrapped = self
            .payloads
            .keys()
            .wrapped(&stored.key_id)
            .map_err(|e| e.to_string())?;
        let (root, key_id) = (stored.cid, stored.key_id.clone());
        let (net, payloads, shipper) = (
            self.net.clone(),
            self.payloads.clone(),
            self.shipper.clone(),
        );
        self.on_majority("the payload", PAYLOAD_WAIT, |raft| {
            let (net, payloads, cids) = (net.clone(), payloads.clone(), cids.clone());
            let shipper = shipper.clone();
            let (id, wrapped) = (PayloadId::new(&root, &key_id), wrapped.clone());
            async move {
                let copy = net
                    .payload_copy(&raft, &payloads, &cids, id, wrapped)
                    .await?;
                shipper.ship(&raft, copy).await
            }
        })
        .await
    }

    /// Tells every other member to drop its copy of a payload no record will name (its
    /// submission was refused or rejected). Not waited on: a copy left behind is an
    /// orphan, ciphertext whose key no record names.
    pub fn drop_payload(&self, stored: &StoredPayload) {
        for raft in self.peers().addrs {
            let (net, id) = (
                self.net.clone(),
                PayloadId::new(&stored.cid, &stored.key_id),
            );
            self.handle.spawn(async move {
                if let Err(e) = net.drop_payload(&raft, &id).await {
                    tracing::warn!(error = %e, "a refused submission's payload copy stays on {raft}");
                }
            });
        }
    }

    /// Makes sure this node holds the payload `root` (key `key_id`), fetching it from the
    /// other members when it lacks it (it was down when the leader sent it, or it joined
    /// later).
    pub async fn ensure_payload(&self, root: &Cid, key_id: &str) -> Result<PayloadFetch, String> {
        let payloads = &self.payloads;
        if payloads.keys().is_erased(key_id) {
            return Ok(PayloadFetch::Erased);
        }
        let holds = || async {
            payloads
                .holds(root, key_id)
                .await
                .map_err(|e| e.to_string())
        };
        if holds().await? {
            return Ok(PayloadFetch::Held);
        }
        // One fetch at a time (a read and the key keeper may want the same payload; this
        // is the path of a node that was away, not of every read).
        let _one = self.fetching.lock().await;
        if holds().await? {
            return Ok(PayloadFetch::Held);
        }
        let id = PayloadId::new(root, key_id);
        let mut errors = Vec::new();
        'peers: for raft in self.peers().addrs {
            let mut from = 0u32;
            loop {
                let piece = match self.net.payload_piece(&raft, &id, from).await {
                    Ok(p) => p,
                    Err(e) => {
                        errors.push(e);
                        continue 'peers;
                    }
                };
                match piece {
                    PayloadPiece::Absent => continue 'peers,
                    PayloadPiece::Erased => {
                        payloads
                            .erase(key_id, root)
                            .await
                            .map_err(|e| e.to_string())?;
                        return Ok(PayloadFetch::Erased);
                    }
                    PayloadPiece::Blocks {
                        blocks,
                        wrapped_key,
                    } => {
                        if blocks.is_empty() && wrapped_key.is_none() {
                            errors.push(format!("{raft} sent an empty piece"));
                            continue 'peers;
                        }
                        from += blocks.len() as u32;
                        let blocks = WireBlock::blocks(blocks)?;
                        if let Err(e) = payloads.put_blocks(blocks).await {
                            errors.push(format!("{raft}: {e}"));
                            continue 'peers;
                        }
                        let Some(wrapped) = wrapped_key else {
                            continue;
                        };
                        return match payloads.adopt(root, key_id, &wrapped).await {
                            Ok(()) => {
                                self.stats
                                    .payloads_fetched
                                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                                Ok(PayloadFetch::Held)
                            }
                            Err(PayloadError::Erased(_)) => Ok(PayloadFetch::Erased),
                            Err(e) => Err(e.to_string()),
                        };
                    }
                }
            }
        }
        if errors.is_empty() {
            Ok(PayloadFetch::Absent)
        } else {
            Err(errors.join("; "))
        }
    }

    /// Fetches `record_id`'s content key from the other members when this node lacks it
    /// (it was down when the leader sent it): `None` when it is here (or erased here),
    /// else what the others answered (stored, as [`Cluster::fetch_key`] does).
    pub async fn ensure_record_key(&self, record_id: &str) -> Result<Option<KeyAnswer>, String> {
        let key_id = record_key_id(record_id);
        match self.payloads.keys().load_cached(&key_id) {
            Err(KeyStoreError::NotFound(_)) => self.fetch_key(&key_id).await.map(Some),
            _ => Ok(None),
        }
    }

    /// Asks the other members for a key this node lacks, storing it (or its erasure)
    /// when one has it; the answer says which.
    pub async fn fetch_key(&self, key_id: &str) -> Result<KeyAnswer, String> {
        let keys = self.payloads.keys();
        let mut errors = Vec::new();
        for raft in self.peers().addrs {
            match self.net.get_key(&raft, key_id).await {
                Ok(KeyAnswer::Wrapped(wrapped)) => {
                    return match keys.store_wrapped(key_id, &wrapped, KeyKind::Record).await {
                        Ok(()) => Ok(KeyAnswer::Wrapped(wrapped)),
                        Err(KeyStoreError::Erased(_)) => Ok(KeyAnswer::Erased),
                        Err(e) => Err(e.to_string()),
                    };
                }
                Ok(KeyAnswer::Erased) => {
                    keys.destroy(key_id).map_err(|e| e.to_string())?;
                    return Ok(KeyAnswer::Erased);
                }
                Ok(KeyAnswer::Absent) => {}
                Err(e) => errors.push(e),
            }
        }
        if errors.is_empty() {
            Ok(KeyAnswer::Absent)
        } else {
            Err(errors.join("; "))
        }
    }
}
