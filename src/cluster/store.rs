//! The Raft log and the state machine openraft drives.
//!
//! - **The log** is a RocksDB instance in `<data_dir>/raft` (key `l` + index, big-endian):
//!   appends, truncations and the vote are synced writes (WAL fdatasync) before openraft is
//!   told they are durable. An entry is a whole block, encoded as in the segments.
//! - **The state machine** is the ledger. Applying an entry appends its block (write +
//!   fdatasync) when it links to the ledger's tip. An entry whose block does not link
//!   (cut by a leader that was deposed before it, on a tip that moved) is skipped, on every
//!   node alike, because every node applies the same entries in the same order to the
//!   same ledger: the ledgers stay byte-identical. A block already in the ledger with the
//!   same hash (the applied id is saved after the append, so a crash in between re-applies)
//!   is not appended twice.
//! - **A snapshot is the ledger itself.** Its data is the height and tip hash it covers
//!   and the node that built it; the log is purged up to it. A node that needs entries
//!   already purged installs the snapshot by fetching the blocks it lacks from the
//!   builder's ledger (or any other node's), appending each under the chain rules, and
//!   checking the tip hash it ends on.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage, RaftStateMachine, Snapshot};
use openraft::{
    Entry, EntryPayload, LogId, OptionalSend, RaftLogReader, RaftSnapshotBuilder, SnapshotMeta,
    StorageError, StorageIOError, StoredMembership, Vote,
};
use rocksdb::{WriteBatch, WriteOptions, DB};
use serde::{Deserialize, Serialize};

use medledger_storage::{Block, Ledger, StorageError as LedgerError};

use super::TypeConfig;

type NodeId = u64;
type Membership = StoredMembership<NodeId, super::ClusterNode>;

/// What applying one entry did; the leader's answer to `client_write`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Applied {
    /// The block was appended (or was already there, after a restart).
    Block { number: u64, bytes: u64 },
    /// The block does not link to the ledger's tip: never appended, anywhere.
    Skipped { number: u64, height: u64 },
    /// The entry carried no block (a leader's blank entry or a membership change).
    NoBlock,
}

/// An entry's application data: one encoded block.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockEntry {
    #[serde(with = "as_bytes")]
    pub block: Vec<u8>,
}

/// A `Vec<u8>` as one byte string (a length and a copy), not a sequence of u8 values
/// (serde's default, which bincode encodes one byte per call).
pub(super) mod as_bytes {
    use serde::de::{Deserializer, SeqAccess, Visitor};
    use serde::Serializer;

    pub fn serialize<S: Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(b)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        struct Bytes;
        impl<'de> Visitor<'de> for Bytes {
            type Value = Vec<u8>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a byte string")
            }
            fn visit_bytes<E>(self, v: &[u8]) -> Result<Vec<u8>, E> {
                Ok(v.to_vec())
            }
            fn visit_byte_buf<E>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
                Ok(v)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
                let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 20));
                while let Some(b) = seq.next_element()? {
                    out.push(b);
                }
                Ok(out)
            }
        }
        d.deserialize_byte_buf(Bytes)
    }
}

const VOTE: &[u8] = b"m/vote";
const COMMITTED: &[u8] = b"m/committed";
const PURGED: &[u8] = b"m/purged";
const APPLIED: &[u8] = b"s/applied";
const MEMBERSHIP: &[u8] = b"s/membership";
const SNAPSHOT: &[u8] = b"s/snapshot";

/// What a snapshot's data says: the ledger up to `height`, ending on `tip_hash`, as the
/// node `source` holds it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotData {
    pub height: u64,
    pub tip_hash: [u8; 32],
    pub source: u64,
}

/// The last snapshot built or installed here (its meta and data), kept in the store.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta<NodeId, super::ClusterNode>,
    data: Vec<u8>,
}

fn log_key(index: u64) -> [u8; 9] {
    let mut k = [b'l'; 9];
    k[1..].copy_from_slice(&index.to_be_bytes());
    k
}

pub(super) fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    bincode::serde::encode_to_vec(v, bincode::config::standard())
        .expect("encoding to a Vec does not fail")
}

pub(super) fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    match bincode::serde::decode_from_slice(bytes, bincode::config::standard()) {
        Ok((v, n)) if n == bytes.len() => Ok(v),
        Ok((_, n)) => Err(format!("{} trailing bytes", bytes.len() - n)),
        Err(e) => Err(e.to_string()),
    }
}

fn synced() -> WriteOptions {
    let mut w = WriteOptions::default();
    w.set_sync(true);
    w
}

/// Opens the Raft store in `dir`.
pub fn open_db(dir: &std::path::Path) -> Result<Arc<DB>, rocksdb::Error> {
    let mut opts = rocksdb::Options::default();
    opts.create_if_missing(true);
    // Entries are whole blocks, already compact: no compression (its CPU bought nothing).
    opts.set_compression_type(rocksdb::DBCompressionType::None);
    // Entries live a few hundred blocks before the purge behind a snapshot deletes them:
    // a memtable that holds them that long flushes tombstones, not the blocks again.
    opts.set_write_buffer_size(256 << 20);
    opts.set_max_total_wal_size(256 << 20);
    DB::open(&opts, dir).map(Arc::new)
}

/// The Raft log (and vote) in RocksDB.
#[derive(Clone)]
pub struct LogStore {
    db: Arc<DB>,
}

impl LogStore {
    pub fn new(db: Arc<DB>) -> LogStore {
        LogStore { db }
    }

    fn get<T: serde::de::DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, String> {
        match self.db.get(key).map_err(|e| e.to_string())? {
            None => Ok(None),
            Some(bytes) => decode(&bytes).map(Some),
        }
    }

    fn last_log_id(&self) -> Result<Option<LogId<NodeId>>, String> {
        let mut it = self.db.raw_iterator();
        it.seek_for_prev(log_key(u64::MAX));
        match it.key() {
            Some(k) if k.first() == Some(&b'l') => {
                let entry: Entry<TypeConfig> = decode(it.value().unwrap_or_default())?;
                Ok(Some(entry.log_id))
            }
            _ => it.status().map(|()| None).map_err(|e| e.to_string()),
        }
    }

    /// Whether this node has any Raft state (a vote or a log entry).
    pub fn is_empty(&self) -> Result<bool, String> {
        Ok(self.get::<Vote<NodeId>>(VOTE)?.is_none() && self.last_log_id()?.is_none())
    }
}

fn read_err(e: impl ToString) -> StorageError<NodeId> {
    StorageIOError::read_logs(openraft::AnyError::error(e.to_string())).into()
}

fn write_err(e: impl ToString) -> StorageError<NodeId> {
    StorageIOError::write_logs(openraft::AnyError::error(e.to_string())).into()
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError<NodeId>> {
        let start = match range.start_bound() {
            Bound::Included(n) => *n,
            Bound::Excluded(n) => n + 1,
            Bound::Unbounded => 0,
        };
        let mut out = Vec::new();
        let mut it = self.db.raw_iterator();
        it.seek(log_key(start));
        while let (Some(k), Some(v)) = (it.key(), it.value()) {
            if k.len() != 9 || k[0] != b'l' {
                break;
            }
            let index = u64::from_be_bytes(k[1..].try_into().expect("9-byte key"));
            if !range.contains(&index) {
                break;
            }
            out.push(decode(v).map_err(read_err)?);
            it.next();
        }
        it.status().map_err(read_err)?;
        Ok(out)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<NodeId>> {
        let last_purged_log_id = self.get(PURGED).map_err(read_err)?;
        let last_log_id = self.last_log_id().map_err(read_err)?.or(last_purged_log_id);
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError<NodeId>> {
        self.db
            .put_opt(VOTE, encode(vote), &synced())
            .map_err(|e| StorageIOError::write_vote(openraft::AnyError::error(e.to_string())))?;
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError<NodeId>> {
        self.get(VOTE)
            .map_err(|e| StorageIOError::read_vote(openraft::AnyError::error(e)).into())
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId<NodeId>>,
    ) -> Result<(), StorageError<NodeId>> {
        self.db
            .put(COMMITTED, encode(&committed))
            .map_err(write_err)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<NodeId>>, StorageError<NodeId>> {
        Ok(self
            .get::<Option<LogId<NodeId>>>(COMMITTED)
            .map_err(read_err)?
            .flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut batch = WriteBatch::default();
        for e in entries {
            batch.put(log_key(e.log_id.index), encode(&e));
        }
        let result = self.db.write_opt(batch, &synced());
        let io = result
            .as_ref()
            .map(|_| ())
            .map_err(|e| std::io::Error::other(e.to_string()));
        callback.log_io_completed(io);
        result.map_err(write_err)
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        let mut batch = WriteBatch::default();
        batch.delete_range(log_key(log_id.index), log_key(u64::MAX));
        batch.delete(log_key(u64::MAX));
        self.db.write_opt(batch, &synced()).map_err(write_err)
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        let mut batch = WriteBatch::default();
        batch.put(PURGED, encode(&log_id));
        batch.delete_range(log_key(0), log_key(log_id.index + 1));
        self.db.write_opt(batch, &synced()).map_err(write_err)
    }
}

/// The state machine: the ledger, plus the last applied log id and membership.
pub struct StateMachine {
    db: Arc<DB>,
    ledger: Arc<Ledger>,
    applied: Option<LogId<NodeId>>,
    membership: Membership,
    /// Called after every applied batch (the projector's nudge).
    on_apply: Box<dyn Fn() + Send + Sync>,
    node_id: NodeId,
    /// Fetches blocks from peers when a snapshot is installed.
    net: super::network::Network,
    stats: Arc<super::ClusterStats>,
}

impl StateMachine {
    pub fn open(
        db: Arc<DB>,
        ledger: Arc<Ledger>,
        on_apply: Box<dyn Fn() + Send + Sync>,
        node_id: NodeId,
        net: super::network::Network,
        stats: Arc<super::ClusterStats>,
    ) -> Result<StateMachine, String> {
        let store = LogStore { db: db.clone() };
        Ok(StateMachine {
            applied: store.get::<Option<LogId<NodeId>>>(APPLIED)?.flatten(),
            membership: store.get(MEMBERSHIP)?.unwrap_or_default(),
            db,
            ledger,
            on_apply,
            node_id,
            net,
            stats,
        })
    }

    fn save_applied(&self) -> Result<(), rocksdb::Error> {
        // Not synced: the ledger is, and re-applying after a crash is idempotent. (A purge
        // of the log is a synced write, which makes this one durable before it.)
        let mut batch = WriteBatch::default();
        batch.put(APPLIED, encode(&self.applied));
        batch.put(MEMBERSHIP, encode(&self.membership));
        self.db.write(batch)
    }

    /// Makes the ledger hold blocks `0..data.height` ending on `data.tip_hash`, fetching
    /// the missing ones from the snapshot's source (or another member).
    async fn catch_up(
        &self,
        data: &SnapshotData,
        meta: &SnapshotMeta<NodeId, super::ClusterNode>,
    ) -> Result<(), String> {
        let mut sources: Vec<String> = Vec::new();
        let members = meta.last_membership.membership();
        if let Some(n) = members.get_node(&data.source) {
            sources.push(n.raft.clone());
        }
        for (id, n) in members.nodes() {
            if *id != data.source && *id != self.node_id {
                sources.push(n.raft.clone());
            }
        }
        let mut errors = Vec::new();
        'fetch: while self.ledger.tip().height < data.height {
            let from = self.ledger.tip().height;
            for src in &sources {
                match self.net.fetch_blocks(src, from, data.height).await {
                    Ok(list) if !list.is_empty() => {
                        for b in list {
                            let block = Block::decode(&b.block).map_err(|e| e.to_string())?;
                            self.ledger.append(&block).map_err(|e| e.to_string())?;
                        }
                        continue 'fetch;
                    }
                    Ok(_) => errors.push(format!("{src} has no block {from}")),
                    Err(e) => errors.push(e),
                }
            }
            return Err(format!(
                "no member gave block {from} of the snapshot's {}: {}",
                data.height,
                errors.join("; ")
            ));
        }
        let Some(last_number) = data.height.checked_sub(1) else {
            return Err("a snapshot of an empty ledger (no genesis block)".into());
        };
        let last = self
            .ledger
            .block(last_number)
            .map_err(|e| e.to_string())?
            .ok_or("the ledger lost a block it just held")?;
        if last.hash() != data.tip_hash {
            return Err(format!(
                "block {last_number} here differs from the snapshot's: this node's ledger diverged"
            ));
        }
        Ok(())
    }

    fn apply_block(&self, log_id: &LogId<NodeId>, bytes: &[u8]) -> Result<Applied, LedgerError> {
        let block = match Block::decode(bytes) {
            Ok(b) => b,
            Err(e) => {
                // Every node decodes the same bytes the same way: skipping is deterministic.
                tracing::error!(index = log_id.index, error = %e, "a Raft entry holds no valid block; skipped");
                return Ok(Applied::Skipped {
                    number: u64::MAX,
                    height: self.ledger.tip().height,
                });
            }
        };
        let number = block.header.number;
        let tip = self.ledger.tip();
        if number < tip.height {
            // Applied before a crash that came before the applied id was saved?
            if let Some(have) = self.ledger.block(number)? {
                if have.hash() == block.hash() {
                    return Ok(Applied::Block {
                        number,
                        bytes: bytes.len() as u64,
                    });
                }
            }
        }
        if number != tip.height {
            return Ok(Applied::Skipped {
                number,
                height: tip.height,
            });
        }
        match self.ledger.append(&block) {
            Ok(r) => Ok(Applied::Block {
                number: r.number,
                bytes: u64::from(r.location.len),
            }),
            // Refused before anything was written (the chain rules): skipped everywhere.
            Err(LedgerError::DoesNotExtend { reason: why, .. }) => {
                tracing::warn!(number, %why, "a committed block does not link; skipped");
                Ok(Applied::Skipped {
                    number,
                    height: tip.height,
                })
            }
            Err(e) => Err(e),
        }
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<NodeId>>, Membership), StorageError<NodeId>> {
        Ok((self.applied, self.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Applied>, StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut out = Vec::new();
        for entry in entries {
            let log_id = entry.log_id;
            let applied = match entry.payload {
                EntryPayload::Blank => Applied::NoBlock,
                EntryPayload::Normal(b) => self.apply_block(&log_id, &b.block).map_err(|e| {
                    StorageIOError::apply(log_id, openraft::AnyError::error(e.to_string()))
                })?,
                EntryPayload::Membership(m) => {
                    self.membership = StoredMembership::new(Some(log_id), m);
                    Applied::NoBlock
                }
            };
            self.applied = Some(log_id);
            out.push(applied);
        }
        self.save_applied().map_err(|e| {
            StorageIOError::write_state_machine(openraft::AnyError::error(e.to_string()))
        })?;
        (self.on_apply)();
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        let tip = self.ledger.tip();
        SnapshotBuilder {
            db: self.db.clone(),
            stats: self.stats.clone(),
            applied: self.applied,
            membership: self.membership.clone(),
            data: SnapshotData {
                height: tip.height,
                tip_hash: tip.tip_hash,
                source: self.node_id,
            },
        }
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<std::io::Cursor<Vec<u8>>>, StorageError<NodeId>> {
        Ok(Box::new(std::io::Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, super::ClusterNode>,
        snapshot: Box<std::io::Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<NodeId>> {
        let bytes = snapshot.into_inner();
        let fail = |e: String| -> StorageError<NodeId> {
            StorageIOError::read_snapshot(Some(meta.signature()), openraft::AnyError::error(e))
                .into()
        };
        let data: SnapshotData = decode(&bytes).map_err(fail)?;
        tracing::info!(
            height = data.height,
            source = data.source,
            "installing a snapshot"
        );
        self.catch_up(&data, meta).await.map_err(fail)?;
        self.applied = meta.last_log_id;
        self.membership = meta.last_membership.clone();
        self.save_applied().map_err(|e| fail(e.to_string()))?;
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data: bytes,
        };
        self.db
            .put(SNAPSHOT, encode(&stored))
            .map_err(|e| fail(e.to_string()))?;
        self.stats
            .snapshots_installed
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        (self.on_apply)();
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, StorageError<NodeId>> {
        let store = LogStore {
            db: self.db.clone(),
        };
        let stored: Option<StoredSnapshot> = store.get(SNAPSHOT).map_err(|e| {
            StorageError::from(StorageIOError::read_snapshot(
                None,
                openraft::AnyError::error(e),
            ))
        })?;
        Ok(stored.map(|s| Snapshot {
            meta: s.meta,
            snapshot: Box::new(std::io::Cursor::new(s.data)),
        }))
    }
}

/// Builds a snapshot of the state it was made at (under the state machine's lock): the
/// applied log id, the membership and the ledger's tip then.
pub struct SnapshotBuilder {
    db: Arc<DB>,
    stats: Arc<super::ClusterStats>,
    applied: Option<LogId<NodeId>>,
    membership: Membership,
    data: SnapshotData,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<NodeId>> {
        let id = match self.applied {
            Some(l) => format!("{}-{}-{}", l.leader_id.term, l.index, self.data.height),
            None => format!("none-{}", self.data.height),
        };
        let meta = SnapshotMeta {
            last_log_id: self.applied,
            last_membership: self.membership.clone(),
            snapshot_id: id,
        };
        let data = encode(&self.data);
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data: data.clone(),
        };
        self.db.put(SNAPSHOT, encode(&stored)).map_err(|e| {
            StorageIOError::write_snapshot(
                Some(meta.signature()),
                openraft::AnyError::error(e.to_string()),
            )
        })?;
        self.stats
            .snapshots_built
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(Snapshot {
            meta,
            snapshot: Box::new(std::io::Cursor::new(data)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_block_entry_is_its_bytes_behind_a_length() {
        let e = BlockEntry {
            block: vec![7u8; 1000],
        };
        let bytes = encode(&e);
        // One varint length (3 bytes for 1000) and the bytes themselves.
        assert_eq!(bytes.len(), 1003);
        assert_eq!(decode::<BlockEntry>(&bytes).unwrap(), e);
        assert!(decode::<BlockEntry>(&bytes[..500]).is_err());
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(decode::<BlockEntry>(&longer)
            .unwrap_err()
            .contains("trailing"));
    }
}
