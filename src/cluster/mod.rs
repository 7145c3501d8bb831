//! The cluster (`serve --cluster FILE --node-id N`): nodes that order blocks through Raft
//! (openraft). The block is the Raft entry, as in Fabric's etcdraft: the leader's cutter
//! cuts a block and proposes it; once a majority holds the entry durably it is committed,
//! and every node applies it by appending the same bytes to its own ledger. See
//! docs/CLUSTER.md.

pub mod config;
pub mod network;
mod replica;
mod shipper;
pub mod store;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::error::{ClientWriteError, RaftError};
use openraft::{Raft, ServerState, SnapshotPolicy};
use serde::{Deserialize, Serialize};

use medledger_payload::Payloads;
use medledger_storage::{Block, Ledger};

use crate::orderer::{BlockSink, Committed, SinkError};
pub use config::{ClusterConfig, ClusterConfigError, NodeAddrs};
pub use network::KeyAnswer;
use network::{Network, PeerAuth, RpcLimits, RpcServer};
pub use replica::PayloadFetch;
use store::{Applied, BlockEntry, LogStore, StateMachine};

/// A node as Raft's membership records it: its two addresses.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterNode {
    pub raft: String,
    pub http: String,
}

impl ClusterNode {
    pub fn new(raft: std::net::SocketAddr, http: std::net::SocketAddr) -> ClusterNode {
        ClusterNode {
            raft: raft.to_string(),
            http: http.to_string(),
        }
    }
}

/// Entries a follower whose last matched log id is `matched` lacks of a log whose last
/// index is `last_log_index` (both from the leader's Raft metrics).
fn lag_entries(last_log_index: Option<u64>, matched: Option<openraft::LogId<u64>>) -> u64 {
    let last = last_log_index.map_or(0, |i| i + 1);
    last.saturating_sub(matched.map_or(0, |l| l.index + 1))
}

impl std::fmt::Display for ClusterNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "raft {} http {}", self.raft, self.http)
    }
}

openraft::declare_raft_types!(
    pub TypeConfig:
        D = BlockEntry,
        R = Applied,
        NodeId = u64,
        Node = ClusterNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = std::io::Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// Every cluster node's genesis block has this timestamp (the epoch), so each node
/// creates the same block 0 on its own, before it has talked to any other.
pub const GENESIS_TIMESTAMP_MS: i64 = 0;

/// The longest a write waits for a majority before it is answered "outcome unknown".
pub const COMMIT_WAIT: Duration = Duration::from_secs(5);

/// Entries (blocks) between two snapshots.
pub const SNAPSHOT_EVERY_ENTRIES: u64 = 256;
/// Entries kept in the log behind the last snapshot: a follower further behind catches
/// up by installing the snapshot (fetching blocks from a ledger) instead.
pub const LOG_KEPT_ENTRIES: u64 = 64;

/// The longest a membership change waits (a learner's catch-up included).
pub const MEMBERSHIP_WAIT: Duration = Duration::from_secs(120);

/// How long a record's content key may take to reach a majority before its write is
/// refused (503, nothing proposed).
pub const KEY_WAIT: Duration = Duration::from_secs(5);

/// How long a payload may take to reach a majority before its write is refused (503,
/// nothing proposed, the payload dropped).
pub const PAYLOAD_WAIT: Duration = Duration::from_secs(60);

/// The longest a leadership transfer takes before it is given up.
pub const TRANSFER_WAIT: Duration = Duration::from_secs(5);
/// How long one campaign of a transfer's target is given to win.
const TRANSFER_ROUND: Duration = Duration::from_millis(700);

/// The subdirectory of the data dir holding the Raft log and vote.
pub const RAFT_DIR: &str = "raft";

/// Why the node did not join its cluster.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error(transparent)]
    Config(#[from] ClusterConfigError),
    #[error("opening the Raft log in {path}: {message}", path = .path.display())]
    Store {
        path: std::path::PathBuf,
        message: String,
    },
    #[error(
        "this data dir's ledger was not created as a node of a cluster (its genesis block \
         differs); a cluster node starts from an empty data dir"
    )]
    ForeignGenesis,
    #[error("starting Raft: {0}")]
    Raft(String),
    #[error("cannot listen for Raft messages on {addr}: {source}")]
    Listen {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct ClusterStats {
    pub leader_changes: std::sync::atomic::AtomicU64,
    pub snapshots_built: std::sync::atomic::AtomicU64,
    pub snapshots_installed: std::sync::atomic::AtomicU64,
    /// Payload copies the leader sent here, held.
    pub payload_copies_received: std::sync::atomic::AtomicU64,
    /// Payloads this node lacked and fetched from another.
    pub payloads_fetched: std::sync::atomic::AtomicU64,
}

/// What `/metrics` shows of the cluster, as this node sees it.
#[derive(Debug, Default)]
pub struct ClusterGauges {
    pub nodes: usize,
    pub is_leader: bool,
    pub term: u64,
    /// On the leader: each follower's entries behind the leader's log.
    pub lag_entries: Vec<(u64, u64)>,
    pub seconds_since_quorum_ack: Option<f64>,
}

/// The other members as this node sees them.
struct Peers {
    /// Their node-to-node addresses: the voters first, then the learners.
    addrs: Vec<String>,
    /// How many of `addrs` are voters.
    voter_peers: usize,
    /// Voters in the membership, this node included if it is one.
    voters: usize,
}

/// A running cluster node: Raft, its RPC server, and the runtime they run on.
pub struct Cluster {
    pub node_id: u64,
    pub stats: Arc<ClusterStats>,
    pub config: ClusterConfig,
    raft: Raft<TypeConfig>,
    net: Network,
    payloads: Arc<Payloads>,
    /// Held while a payload this node lacks is fetched (see `ensure_payload`).
    fetching: tokio::sync::Mutex<()>,
    /// Keys and payloads to the other nodes, in groups.
    shipper: Arc<shipper::Shipper>,
    /// Held by the writer thread while it proposes a block, and by a leadership transfer
    /// for its whole length: no block is proposed while the leadership is handed over.
    proposing: tokio::sync::Mutex<()>,
    runtime: Mutex<Option<tokio::runtime::Runtime>>,
    rpc: Mutex<Option<RpcServer>>,
    handle: tokio::runtime::Handle,
}

impl Cluster {
    /// Starts Raft over `ledger` (already opened with [`GENESIS_TIMESTAMP_MS`]) and the
    /// node-to-node server. The node with the lowest id initializes the cluster when it
    /// has no Raft state at all; every other node waits to be contacted.
    pub fn start(
        config: ClusterConfig,
        node_id: u64,
        data_dir: &Path,
        ledger: Arc<Ledger>,
        payloads: Arc<Payloads>,
        on_apply: Box<dyn Fn() + Send + Sync>,
        rpc_body_max: usize,
    ) -> Result<Arc<Cluster>, ClusterError> {
        let me = config.node(node_id)?;
        let genesis = ledger
            .block(0)
            .map_err(|e| ClusterError::Raft(e.to_string()))?
            .ok_or(ClusterError::ForeignGenesis)?;
        if genesis.hash() != Block::genesis(GENESIS_TIMESTAMP_MS).hash() {
            return Err(ClusterError::ForeignGenesis);
        }
        let raft_dir = data_dir.join(RAFT_DIR);
        let store_err = |message: String| ClusterError::Store {
            path: raft_dir.clone(),
            message,
        };
        // The Raft log's directory durable before a vote is written in it.
        medledger_storage::ledger::fs::create_dir_durably(&raft_dir)
            .map_err(|e| store_err(e.to_string()))?;
        let db = store::open_db(&raft_dir).map_err(|e| store_err(e.to_string()))?;
        let log = LogStore::new(db.clone());
        let fresh = log.is_empty().map_err(store_err)?;
        let auth = Arc::new(PeerAuth {
            cluster_id: config.cluster_id.clone(),
            genesis: hex::encode(genesis.hash()),
            secret: config.secret.clone(),
        });
        let limits = RpcLimits {
            body_max: rpc_body_max,
        };
        let net =
            Network::new(auth.clone(), limits).map_err(|e| ClusterError::Raft(e.to_string()))?;
        let stats = Arc::new(ClusterStats::default());
        let sm = StateMachine::open(
            db,
            ledger.clone(),
            on_apply,
            node_id,
            net.clone(),
            stats.clone(),
        )
        .map_err(store_err)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("medledger-raft")
            .enable_all()
            .build()
            .map_err(|e| ClusterError::Raft(e.to_string()))?;
        let raft_config = openraft::Config {
            cluster_name: config.cluster_id.clone(),
            heartbeat_interval: 50,
            election_timeout_min: 150,
            election_timeout_max: 300,
            // Blocks are large entries: a few per message keeps each under the body limit.
            max_payload_entries: 8,
            // A snapshot is the ledger (store.rs): cheap to take, so the log stays short.
            snapshot_policy: SnapshotPolicy::LogsSinceLast(SNAPSHOT_EVERY_ENTRIES),
            max_in_snapshot_log_to_keep: LOG_KEPT_ENTRIES,
            ..Default::default()
        }
        .validate()
        .map_err(|e| ClusterError::Raft(e.to_string()))?;
        let raft = runtime
            .block_on(Raft::new(
                node_id,
                Arc::new(raft_config),
                net.clone(),
                log,
                sm,
            ))
            .map_err(|e| ClusterError::Raft(e.to_string()))?;
        let rpc = RpcServer::start(
            me.raft,
            raft.clone(),
            auth,
            ledger,
            payloads.clone(),
            stats.clone(),
            limits,
        )
        .map_err(|source| ClusterError::Listen {
            addr: me.raft,
            source,
        })?;
        let lowest = *config.nodes.keys().next().expect("a cluster has a node");
        if fresh && node_id == lowest {
            let members: BTreeMap<u64, ClusterNode> = config
                .nodes
                .iter()
                .map(|(id, a)| (*id, ClusterNode::new(a.raft, a.http)))
                .collect();
            match runtime.block_on(raft.initialize(members)) {
                Ok(()) => tracing::info!(node_id, "initialized the cluster"),
                // Another start of this node got there first: nothing to do.
                Err(e) => tracing::info!(node_id, error = %e, "cluster already initialized"),
            }
        }
        // Leader changes, counted from Raft's metrics.
        let mut watch = raft.metrics();
        let counted = stats.clone();
        runtime.spawn(async move {
            let mut last = watch.borrow().current_leader;
            while watch.changed().await.is_ok() {
                let now = watch.borrow().current_leader;
                if now != last {
                    if now.is_some() {
                        counted
                            .leader_changes
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    last = now;
                }
            }
        });
        let handle = runtime.handle().clone();
        let shipper = Arc::new(shipper::Shipper::new(net.clone(), handle.clone()));
        Ok(Arc::new(Cluster {
            node_id,
            stats,
            config,
            raft,
            net,
            payloads,
            fetching: tokio::sync::Mutex::new(()),
            shipper,
            proposing: tokio::sync::Mutex::new(()),
            runtime: Mutex::new(Some(runtime)),
            rpc: Mutex::new(Some(rpc)),
            handle,
        }))
    }

    /// The leader this node knows of, with its public HTTP address (from the membership
    /// Raft holds, which may have grown beyond the cluster file).
    pub fn leader(&self) -> Option<(u64, Option<String>)> {
        let m = self.raft.metrics();
        let m = m.borrow();
        let id = m.current_leader?;
        let http = m
            .membership_config
            .membership()
            .get_node(&id)
            .map(|n| n.http.clone());
        Some((id, http))
    }

    /// Adds `id` as a learner and waits until it has caught up (by log or snapshot);
    /// on the leader only.
    pub async fn add_learner(&self, id: u64, node: ClusterNode) -> Result<(), String> {
        let raft = self.raft.clone();
        self.membership_change(async move { raft.add_learner(id, node, true).await })
            .await
            .map_err(|e| {
                e.unwrap_or_else(|| {
                    format!("node {id} did not catch up in time; it stays a learner and goes on")
                })
            })
    }

    /// Makes `voters` the voters (joint consensus, then the new set); a voter left out is
    /// removed from the cluster. Every id must be a member already (add it as a learner).
    pub async fn set_voters(&self, voters: BTreeSet<u64>) -> Result<(), String> {
        let raft = self.raft.clone();
        self.membership_change(async move { raft.change_membership(voters, false).await })
            .await
            .map_err(|e| e.unwrap_or_else(|| "the change did not commit in time".into()))
    }

    /// Hands the leadership to the voter `target`; on the leader only. Proposals stop,
    /// `target`'s log catches up with this node's, and `target` campaigns: this node's
    /// leader lease has long expired (openraft renews it only when it is elected), so it
    /// grants the vote and steps down, and the two are a majority of three. Writes that
    /// arrive meanwhile wait, then are answered `not_committed` here (503: nothing was
    /// proposed) and go to the new leader. Returns once `target` leads.
    pub async fn transfer_leader(self: &Arc<Self>, target: u64) -> Result<(), String> {
        let me = self.clone();
        let job = self.handle.spawn(async move { me.hand_over(target).await });
        match tokio::time::timeout(TRANSFER_WAIT + Duration::from_secs(1), job).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!(
                "node {target} did not take the leadership within {} s",
                TRANSFER_WAIT.as_secs()
            )),
        }
    }

    async fn hand_over(&self, target: u64) -> Result<(), String> {
        let raft_addr = {
            let m = self.raft.metrics().borrow().membership_config.clone();
            let members = m.membership();
            if !members.voter_ids().any(|id| id == target) {
                return Err(format!("node {target} is not a voter"));
            }
            members
                .get_node(&target)
                .map(|n| n.raft.clone())
                .ok_or_else(|| format!("node {target} has no address"))?
        };
        if target == self.node_id {
            return if self.is_leader() {
                Ok(())
            } else {
                Err(format!("node {target} does not lead; ask the leader"))
            };
        }
        let started = tokio::time::Instant::now();
        let deadline = started + TRANSFER_WAIT;
        let _paused = tokio::time::timeout_at(deadline, self.proposing.lock())
            .await
            .map_err(|_| "a block in flight did not finish in time".to_string())?;
        if !self.is_leader() {
            return Err("this node no longer leads".into());
        }
        let mut metrics = self.raft.metrics();
        // Campaigns until `target` leads: the first may come before this node's lease
        // (one election timeout after it was elected) has expired.
        loop {
            let last = metrics.borrow().last_log_index;
            if let Err(e) = self.net.elect(&raft_addr, last).await {
                tracing::warn!(target, error = %e, "asking a node to campaign failed");
            }
            let round = (tokio::time::Instant::now() + TRANSFER_ROUND).min(deadline);
            let led = matches!(
                tokio::time::timeout_at(
                    round,
                    metrics.wait_for(|m| m.current_leader == Some(target)),
                )
                .await,
                Ok(Ok(_))
            );
            if led {
                tracing::info!(
                    target,
                    ms = started.elapsed().as_millis() as u64,
                    "handed the leadership over"
                );
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(format!(
                    "node {target} did not take the leadership within {} s",
                    TRANSFER_WAIT.as_secs()
                ));
            }
            if !self.is_leader() {
                // This node stepped down: the campaign under way decides. Wait for its
                // winner (the target, or another node whose timer fired first).
                let _ = tokio::time::timeout_at(
                    deadline,
                    metrics.wait_for(|m| m.current_leader.is_some_and(|l| l != self.node_id)),
                )
                .await;
                let now = self.raft.metrics().borrow().current_leader;
                return match now {
                    Some(l) if l == target => Ok(()),
                    _ => Err(format!(
                        "node {target} did not win the election (leader now: {now:?})"
                    )),
                };
            }
        }
    }

    /// Runs a membership change on Raft's runtime for at most [`MEMBERSHIP_WAIT`]; the
    /// error is Raft's (Some) or the wait's end (None).
    async fn membership_change<F, T, E>(&self, change: F) -> Result<(), Option<String>>
    where
        F: std::future::Future<Output = Result<T, E>> + Send + 'static,
        T: Send + 'static,
        E: std::fmt::Display + Send + 'static,
    {
        let job = self.handle.spawn(change);
        match tokio::time::timeout(MEMBERSHIP_WAIT, job).await {
            Ok(Ok(Ok(_))) => Ok(()),
            Ok(Ok(Err(e))) => Err(Some(e.to_string())),
            Ok(Err(e)) => Err(Some(e.to_string())),
            Err(_) => Err(None),
        }
    }

    /// The other members' node-to-node addresses, voters first.
    fn peers(&self) -> Peers {
        let m = self.raft.metrics().borrow().membership_config.clone();
        let members = m.membership();
        let voters: Vec<u64> = members.voter_ids().collect();
        let mut addrs: Vec<String> = voters
            .iter()
            .filter(|id| **id != self.node_id)
            .filter_map(|id| members.get_node(id).map(|n| n.raft.clone()))
            .collect();
        let voter_peers = addrs.len();
        for (id, node) in members.nodes() {
            if !voters.contains(id) && *id != self.node_id {
                addrs.push(node.raft.clone());
            }
        }
        Peers {
            addrs,
            voter_peers,
            voters: voters.len(),
        }
    }

    /// Whether this node leads (writes are taken here).
    pub fn is_leader(&self) -> bool {
        let m = self.raft.metrics();
        let m = m.borrow();
        m.state == ServerState::Leader && m.current_leader == Some(self.node_id)
    }

    /// The gauges `/metrics` shows.
    pub fn gauges(&self) -> ClusterGauges {
        let m = self.raft.metrics().borrow().clone();
        let lag_entries = m
            .replication
            .as_ref()
            .map(|r| {
                r.iter()
                    .filter(|(id, _)| **id != self.node_id)
                    .map(|(id, l)| (*id, lag_entries(m.last_log_index, *l)))
                    .collect()
            })
            .unwrap_or_default();
        ClusterGauges {
            nodes: m.membership_config.membership().nodes().count(),
            is_leader: m.state == ServerState::Leader,
            term: m.current_term,
            lag_entries,
            seconds_since_quorum_ack: m.millis_since_quorum_ack.map(|ms| ms as f64 / 1000.0),
        }
    }

    /// `GET /v1/cluster`'s body.
    pub fn status(&self, ledger_height: u64, views_height: u64) -> serde_json::Value {
        let m = self.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership();
        let voters: BTreeSet<u64> = membership.voter_ids().collect();
        let nodes: Vec<_> = membership
            .nodes()
            .map(|(id, a)| {
                let role = if m.current_leader == Some(*id) {
                    "leader"
                } else if voters.contains(id) {
                    "follower"
                } else {
                    "learner"
                };
                let mut n =
                    serde_json::json!({"id": id, "role": role, "http": a.http, "raft": a.raft});
                if *id == self.node_id {
                    n["committed_height"] = ledger_height.into();
                    n["applied_height"] = views_height.into();
                    n["lag_blocks"] = ledger_height.saturating_sub(views_height).into();
                } else if let Some(matched) = m.replication.as_ref().and_then(|r| r.get(id)) {
                    // On the leader: entries the follower lacks of the leader's log.
                    n["lag_entries"] = lag_entries(m.last_log_index, *matched).into();
                }
                n
            })
            .collect();
        serde_json::json!({
            "cluster_id": self.config.cluster_id,
            "node_id": self.node_id,
            "leader_id": m.current_leader,
            "term": m.current_term,
            "state": format!("{:?}", m.state),
            "last_log_index": m.last_log_index,
            "last_applied_index": m.last_applied.map(|l| l.index),
            "snapshot_index": m.snapshot.map(|l| l.index),
            "purged_index": m.purged.map(|l| l.index),
            "nodes": nodes,
        })
    }

    /// The runtime, the first time it is asked for (shutdown or drop).
    fn take_runtime(&self) -> Option<tokio::runtime::Runtime> {
        self.runtime
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }

    /// Stops Raft and the RPC server. Idempotent.
    pub fn shutdown(&self) {
        if let Some(rt) = self.take_runtime() {
            let _ = rt.block_on(self.raft.shutdown());
            if let Some(mut rpc) = self.rpc.lock().unwrap_or_else(|p| p.into_inner()).take() {
                rpc.stop();
            }
            rt.shutdown_timeout(Duration::from_secs(2));
        }
    }
}

impl Drop for Cluster {
    /// A cluster dropped without [`Cluster::shutdown`] (a start that failed later on)
    /// stops its runtime without blocking: it may be dropped inside async code.
    fn drop(&mut self) {
        if let Some(rt) = self.take_runtime() {
            rt.shutdown_background();
        }
    }
}

impl BlockSink for Cluster {
    /// Proposes the block and waits until it is committed (durable on a majority) and
    /// applied here. Called by the orderer's writer thread (not a runtime thread).
    fn commit(&self, block: &Block) -> Result<Committed, SinkError> {
        // Not a runtime thread, so it may block: a transfer holds this while it runs.
        let _proposing = self.proposing.blocking_lock();
        if !self.is_leader() {
            return Err(SinkError::NotCommitted(
                "this node is not the cluster's leader".into(),
            ));
        }
        let mut bytes = Vec::with_capacity(block.encoded_len());
        block.encode_into(&mut bytes);
        let number = block.header.number;
        let raft = self.raft.clone();
        let written = self.handle.block_on(async move {
            tokio::time::timeout(COMMIT_WAIT, raft.client_write(BlockEntry { block: bytes })).await
        });
        match written {
            Ok(Ok(res)) => match res.data {
                Applied::Block { number: n, bytes } if n == number => {
                    Ok(Committed { number, bytes })
                }
                other => Err(SinkError::NotCommitted(format!(
                    "the leadership changed while block {number} was cut ({other:?})"
                ))),
            },
            Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))) => {
                Err(SinkError::Uncertain(format!(
                    "this node stopped leading while block {number} was in flight (leader now: {:?})",
                    f.leader_id
                )))
            }
            Ok(Err(e)) => Err(SinkError::Uncertain(e.to_string())),
            Err(_) => Err(SinkError::Uncertain(format!(
                "no majority acknowledged block {number} within {} s",
                COMMIT_WAIT.as_secs()
            ))),
        }
    }
}
