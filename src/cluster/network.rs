//! Node-to-node Raft RPCs: HTTP POSTs of bincode bodies between the nodes' `raft`
//! addresses.
//!
//! Every request names the cluster id and the sender's genesis hash and carries an
//! HMAC-SHA256 of both, the route and the body under the cluster secret; a node refuses
//! (403) a request from another cluster, another genesis, or without a valid MAC, and
//! (413) a body larger than [`RpcLimits::body_max`]. Every call has a deadline (openraft's
//! per-RPC TTL).

use std::sync::Arc;
use std::time::Duration;

use actix_web::{web, HttpRequest, HttpResponse};
use hmac::{Hmac, Mac};
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{AnyError, Raft};
use serde::de::DeserializeOwned;
use serde::Serialize;
use sha2::Sha256;

use medledger_payload::keystore::{KeyKind, KeyStoreError};
use medledger_payload::{Block, Cid, PayloadError, Payloads};
use medledger_storage::Ledger;

use super::store::{as_bytes, decode, encode, BlockEntry};
use super::{ClusterNode, TypeConfig};

type NodeId = u64;

/// HMAC-SHA256 of the concatenated `parts` under `key`.
pub fn mac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut m = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    for p in parts {
        m.update(p);
    }
    m.finalize().into_bytes().into()
}

const H_CLUSTER: &str = "x-medledger-cluster";
const H_GENESIS: &str = "x-medledger-genesis";
const H_MAC: &str = "x-medledger-mac";

/// What every message between two nodes must agree on, and the key that signs it.
pub struct PeerAuth {
    pub cluster_id: String,
    /// Hex of this node's genesis block hash.
    pub genesis: String,
    pub secret: Vec<u8>,
}

impl PeerAuth {
    /// The MAC of a message: cluster id, genesis hash, route and body, under the secret.
    fn mac_of(&self, route: &str, body: &[u8]) -> Hmac<Sha256> {
        let mut m = Hmac::<Sha256>::new_from_slice(&self.secret).expect("any key length");
        for p in [
            self.cluster_id.as_bytes(),
            b"\0",
            self.genesis.as_bytes(),
            b"\0",
            route.as_bytes(),
            b"\0",
            body,
        ] {
            m.update(p);
        }
        m
    }

    fn sign(&self, route: &str, body: &[u8]) -> String {
        hex::encode(self.mac_of(route, body).finalize().into_bytes())
    }

    /// Checks a request's headers and MAC (in constant time); the refusal's code otherwise.
    fn check(&self, req: &HttpRequest, route: &str, body: &[u8]) -> Result<(), &'static str> {
        let header = |name| req.headers().get(name).and_then(|v| v.to_str().ok());
        if header(H_CLUSTER) != Some(self.cluster_id.as_str()) {
            return Err("cluster_mismatch");
        }
        if header(H_GENESIS) != Some(self.genesis.as_str()) {
            return Err("genesis_mismatch");
        }
        let given = header(H_MAC)
            .and_then(|h| hex::decode(h).ok())
            .ok_or("bad_mac")?;
        let m = self.mac_of(route, body);
        m.verify_slice(&given).map_err(|_| "bad_mac")
    }
}

/// Bounds on node-to-node messages.
#[derive(Clone, Copy, Debug)]
pub struct RpcLimits {
    /// The largest request or response body.
    pub body_max: usize,
}

/// Makes a connection per peer (reqwest pools the TCP connections).
#[derive(Clone)]
pub struct Network {
    client: reqwest::Client,
    auth: Arc<PeerAuth>,
    limits: RpcLimits,
}

impl Network {
    /// A POST of `body` to `route` at `base` (`http://host:port`), carrying the cluster
    /// id, the genesis hash and the MAC every node checks.
    fn signed_post(&self, base: &str, route: &str, body: Vec<u8>) -> reqwest::RequestBuilder {
        self.client
            .post(format!("{base}{route}"))
            .header(H_CLUSTER, &self.auth.cluster_id)
            .header(H_GENESIS, &self.auth.genesis)
            .header(H_MAC, self.auth.sign(route, &body))
            .header("content-type", "application/octet-stream")
            .body(body)
    }

    pub fn new(auth: Arc<PeerAuth>, limits: RpcLimits) -> Result<Network, reqwest::Error> {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_millis(500))
            .pool_idle_timeout(Duration::from_secs(30))
            .build()?;
        Ok(Network {
            client,
            auth,
            limits,
        })
    }
}

impl Network {
    /// Block bytes per message of a payload copy.
    pub fn copy_bytes(&self) -> usize {
        self.limits.copy_bytes()
    }

    /// Blocks `from..to` of the ledger of the node at `raft` (as many as fit in one
    /// answer; at least one), to install a snapshot.
    pub async fn fetch_blocks(
        &self,
        raft: &str,
        from: u64,
        to: u64,
    ) -> Result<Vec<BlockEntry>, String> {
        let body = encode(&(from, to));
        let res = self
            .signed_post(&format!("http://{raft}"), BLOCKS, body)
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .map_err(|e| format!("asking {raft} for blocks: {e}"))?;
        if !res.status().is_success() {
            return Err(format!(
                "{raft} answered {} to a blocks request",
                res.status()
            ));
        }
        if res
            .content_length()
            .is_some_and(|n| n > self.limits.body_max as u64)
        {
            return Err(format!("{raft} sent too large an answer"));
        }
        let bytes = res.bytes().await.map_err(|e| e.to_string())?;
        decode(&bytes)
    }
}

/// What a node holds of a key another node asks for.
#[derive(Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum KeyAnswer {
    /// The key, wrapped under the cluster's master key.
    Wrapped(Vec<u8>),
    /// Destroyed here (the record was erased).
    Erased,
    /// Never held here.
    Absent,
}

impl Network {
    /// Asks the node at `raft` for a key.
    pub async fn get_key(&self, raft: &str, key_id: &str) -> Result<KeyAnswer, String> {
        let res = self
            .signed_post(&format!("http://{raft}"), KEY_GET, encode(&key_id))
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .map_err(|e| format!("asking {raft} for a key: {e}"))?;
        if !res.status().is_success() {
            return Err(format!("{raft} answered {} to a key request", res.status()));
        }
        let bytes = res.bytes().await.map_err(|e| e.to_string())?;
        decode(&bytes)
    }
}

/// One block of a payload's DAG between two nodes (still ciphertext; the receiver checks
/// it against its CID).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct WireBlock {
    #[serde(with = "as_bytes")]
    pub cid: Vec<u8>,
    #[serde(with = "as_bytes")]
    pub data: Vec<u8>,
}

impl WireBlock {
    fn of(b: Block) -> WireBlock {
        WireBlock {
            cid: b.cid.to_bytes(),
            data: b.data.to_vec(),
        }
    }

    fn block(self) -> Result<Block, String> {
        let cid = Cid::from_bytes(&self.cid).map_err(|e| format!("a block's CID: {e}"))?;
        Ok(Block::claimed(cid, self.data.into()))
    }

    /// The blocks a message carries (an unreadable CID refuses them all).
    pub fn blocks(wire: Vec<WireBlock>) -> Result<Vec<Block>, String> {
        wire.into_iter().map(WireBlock::block).collect()
    }
}

/// The blocks `cids[*next..]` of this node's store, as many as one message carries
/// (`budget` bytes of block data, at least one block); `next` moves past them.
async fn next_blocks(
    payloads: &Payloads,
    cids: &[Cid],
    next: &mut usize,
    budget: usize,
) -> Result<Vec<WireBlock>, PayloadError> {
    let (mut blocks, mut bytes) = (Vec::new(), 0usize);
    while let Some(cid) = cids.get(*next) {
        let block = payloads
            .blocks(std::slice::from_ref(cid))
            .await?
            .pop()
            .expect("one block asked, one given");
        if !blocks.is_empty() && bytes + block.data.len() > budget {
            break;
        }
        bytes += block.data.len();
        blocks.push(WireBlock::of(block));
        *next += 1;
    }
    Ok(blocks)
}

/// A payload a node holds: its root and its data key's id.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct PayloadId {
    #[serde(with = "as_bytes")]
    pub root: Vec<u8>,
    pub key_id: String,
}

impl PayloadId {
    pub fn new(root: &Cid, key_id: &str) -> PayloadId {
        PayloadId {
            root: root.to_bytes(),
            key_id: key_id.to_owned(),
        }
    }

    fn root(&self) -> Result<Cid, String> {
        Cid::from_bytes(&self.root).map_err(|e| format!("a payload's root: {e}"))
    }
}

/// The last message of a payload copy: its last blocks, and the order to hold it (its
/// key wrapped under the shared master key).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct Hold {
    id: PayloadId,
    #[serde(with = "as_bytes")]
    wrapped: Vec<u8>,
    blocks: Vec<WireBlock>,
}

/// What the leader sends a node to hold durably before it proposes the block that needs
/// it. Many travel in one message ([`super::shipper`]), so they share the receiver's
/// group commits.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub enum Copy {
    /// A record's content key, wrapped under the shared master key.
    Key {
        key_id: String,
        #[serde(with = "as_bytes")]
        wrapped: Vec<u8>,
    },
    /// A payload's last blocks, pin and data key.
    Payload(Hold),
}

impl Copy {
    /// Its size in a message, about.
    pub fn bytes(&self) -> usize {
        match self {
            Copy::Key { key_id, wrapped } => key_id.len() + wrapped.len() + 16,
            Copy::Payload(h) => {
                h.id.root.len()
                    + h.id.key_id.len()
                    + h.wrapped.len()
                    + h.blocks
                        .iter()
                        .map(|b| b.cid.len() + b.data.len() + 16)
                        .sum::<usize>()
                    + 32
            }
        }
    }
}

/// A node's answer for one copy.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub enum CopyAnswer {
    /// Held durably.
    Held,
    /// Refused: its key was destroyed there (the record was erased).
    Erased,
    /// Not held (the reason).
    Failed(String),
}

/// A node's answer to "send me blocks of this payload from the `from`th on".
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub enum PayloadPiece {
    /// The next blocks, in the sender's order; with the last of them, the data key.
    Blocks {
        blocks: Vec<WireBlock>,
        wrapped_key: Option<Vec<u8>>,
    },
    /// Its key was destroyed here (the record was erased).
    Erased,
    /// Not held here.
    Absent,
}

/// Why a copy of a payload did not reach another node.
#[derive(Debug)]
pub enum CopyRefused {
    /// The payload's key was destroyed there (its record was erased).
    Erased,
    /// Anything else: unreachable, refused, timed out.
    Failed(String),
}

impl std::fmt::Display for CopyRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CopyRefused::Erased => f.write_str("the other node answered 410 (erased there)"),
            CopyRefused::Failed(e) => f.write_str(e),
        }
    }
}

impl Network {
    /// A signed POST that must answer 2xx (410 is [`CopyRefused::Erased`]); its body.
    async fn post_ok(
        &self,
        raft: &str,
        route: &str,
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<web::Bytes, CopyRefused> {
        let res = self
            .signed_post(&format!("http://{raft}"), route, body)
            .timeout(timeout)
            .send()
            .await
            .map_err(|e| CopyRefused::Failed(format!("{route} to {raft}: {e}")))?;
        match res.status() {
            s if s.is_success() => {}
            reqwest::StatusCode::GONE => return Err(CopyRefused::Erased),
            s => {
                return Err(CopyRefused::Failed(format!(
                    "{raft} answered {s} to {route}"
                )))
            }
        }
        if res
            .content_length()
            .is_some_and(|n| n > self.limits.body_max as u64)
        {
            return Err(CopyRefused::Failed(format!(
                "{raft} sent too large an answer"
            )));
        }
        res.bytes()
            .await
            .map_err(|e| CopyRefused::Failed(e.to_string()))
    }

    /// A copy of a payload this node holds, for the node at `raft`: the blocks `cids` (the
    /// whole DAG, [`Payloads::dag_cids`]) that do not fit in one message are sent first,
    /// in messages of at most [`COPY_MESSAGE_BYTES_MAX`]; the rest, with the order to hold
    /// it, is the copy returned (a small payload is all in it).
    pub async fn payload_copy(
        &self,
        raft: &str,
        payloads: &Payloads,
        cids: &[Cid],
        id: PayloadId,
        wrapped: Vec<u8>,
    ) -> Result<Copy, CopyRefused> {
        let mut next = 0;
        loop {
            let blocks = next_blocks(payloads, cids, &mut next, self.limits.copy_bytes())
                .await
                .map_err(|e| CopyRefused::Failed(e.to_string()))?;
            if next == cids.len() {
                return Ok(Copy::Payload(Hold {
                    id,
                    wrapped,
                    blocks,
                }));
            }
            self.post_ok(raft, PAYLOAD_BLOCKS, encode(&blocks), COPY_TIMEOUT)
                .await?;
        }
    }

    /// Sends `copies` to the node at `raft` in one message; its answer for each, in order.
    pub async fn send_copies(
        &self,
        raft: &str,
        copies: &[Copy],
    ) -> Result<Vec<CopyAnswer>, String> {
        let bytes = self
            .post_ok(raft, COPIES, encode(&copies), COPIES_TIMEOUT)
            .await
            .map_err(|e| e.to_string())?;
        let answers: Vec<CopyAnswer> = decode(&bytes)?;
        if answers.len() != copies.len() {
            return Err(format!(
                "{raft} answered {} copies of {}",
                answers.len(),
                copies.len()
            ));
        }
        Ok(answers)
    }

    /// Blocks of a payload the node at `raft` holds, from the `from`th of its DAG on.
    pub async fn payload_piece(
        &self,
        raft: &str,
        id: &PayloadId,
        from: u32,
    ) -> Result<PayloadPiece, String> {
        let bytes = self
            .post_ok(raft, PAYLOAD_GET, encode(&(id, from)), COPY_TIMEOUT)
            .await
            .map_err(|e| e.to_string())?;
        decode(&bytes)
    }

    /// Tells the node at `raft` to drop its copy of a payload no record will name (its
    /// submission was refused or rejected).
    pub async fn drop_payload(&self, raft: &str, id: &PayloadId) -> Result<(), String> {
        self.post_ok(raft, PAYLOAD_DROP, encode(id), Duration::from_secs(5))
            .await
            .map(drop)
            .map_err(|e| e.to_string())
    }
}

impl Network {
    /// Asks the node at `raft` to campaign now, once its log reaches `last_log_index` (a
    /// leader handing its leadership over, [`super::Cluster::transfer_leader`]).
    pub async fn elect(&self, raft: &str, last_log_index: Option<u64>) -> Result<(), String> {
        self.post_ok(raft, ELECT, encode(&last_log_index), Duration::from_secs(5))
            .await
            .map(drop)
            .map_err(|e| e.to_string())
    }
}

/// The most block bytes in one message of a payload copy: a large payload goes in
/// several, so a copy in flight holds at most this much per peer.
pub const COPY_MESSAGE_BYTES_MAX: usize = 2 << 20;

impl RpcLimits {
    /// Block bytes per message of a payload copy (at least one block per message).
    pub fn copy_bytes(&self) -> usize {
        (self.body_max / 2).min(COPY_MESSAGE_BYTES_MAX)
    }
}

/// The longest one message of a payload copy's leading blocks may take.
const COPY_TIMEOUT: Duration = Duration::from_secs(30);

/// The longest a message of copies may take (its writes have stopped waiting for it by
/// then: 5 s for a key).
const COPIES_TIMEOUT: Duration = Duration::from_secs(10);

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Peer;

    async fn new_client(&mut self, target: NodeId, node: &ClusterNode) -> Peer {
        Peer {
            target,
            base: format!("http://{}", node.raft),
            net: self.clone(),
        }
    }
}

/// One peer's end of the connection.
pub struct Peer {
    target: NodeId,
    base: String,
    net: Network,
}

impl Peer {
    async fn call<Req, Resp, E>(
        &self,
        route: &str,
        req: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<NodeId, ClusterNode, RaftError<NodeId, E>>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let body = encode(req);
        let network = |e: String| RPCError::Network(NetworkError::new(&AnyError::error(e)));
        if body.len() > self.net.limits.body_max {
            return Err(network(format!(
                "the {route} request is {} bytes, more than {}",
                body.len(),
                self.net.limits.body_max
            )));
        }
        let sent = self
            .net
            .signed_post(&self.base, route, body)
            .timeout(option.hard_ttl())
            .send()
            .await;
        let res = match sent {
            Ok(r) => r,
            Err(e) if e.is_connect() => return Err(RPCError::Unreachable(Unreachable::new(&e))),
            Err(e) => return Err(RPCError::Network(NetworkError::new(&e))),
        };
        if !res.status().is_success() {
            let status = res.status();
            let text = res.text().await.unwrap_or_default();
            return Err(network(format!(
                "node {} answered {status}: {}",
                self.target,
                text.chars().take(200).collect::<String>()
            )));
        }
        if res
            .content_length()
            .is_some_and(|n| n > self.net.limits.body_max as u64)
        {
            return Err(network(format!(
                "node {} sent too large an answer",
                self.target
            )));
        }
        let bytes = res
            .bytes()
            .await
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let answer: Result<Resp, RaftError<NodeId, E>> = decode(&bytes).map_err(network)?;
        answer.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for Peer {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, ClusterNode, RaftError<NodeId>>>
    {
        self.call(APPEND, &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, ClusterNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        self.call(SNAPSHOT, &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, ClusterNode, RaftError<NodeId>>> {
        self.call(VOTE, &rpc, &option).await
    }
}

const APPEND: &str = "/raft/append";
const VOTE: &str = "/raft/vote";
const SNAPSHOT: &str = "/raft/snapshot";
const BLOCKS: &str = "/raft/blocks";
const COPIES: &str = "/raft/copies";
const KEY_GET: &str = "/raft/keys/get";
const PAYLOAD_BLOCKS: &str = "/raft/payloads/blocks";
const PAYLOAD_GET: &str = "/raft/payloads/get";
const PAYLOAD_DROP: &str = "/raft/payloads/drop";
const ELECT: &str = "/raft/elect";

struct RpcState {
    raft: Raft<TypeConfig>,
    auth: Arc<PeerAuth>,
    ledger: Arc<Ledger>,
    payloads: Arc<Payloads>,
    stats: Arc<super::ClusterStats>,
    limits: RpcLimits,
}

fn refused(code: &'static str) -> HttpResponse {
    HttpResponse::Forbidden().json(serde_json::json!({"error": {"code": code,
        "message": "this node refuses the message: another cluster, another genesis, or a bad MAC"}}))
}

fn bad_body(e: String) -> HttpResponse {
    HttpResponse::BadRequest()
        .json(serde_json::json!({"error": {"code": "bad_body", "message": e}}))
}

fn octets<T: Serialize>(v: &T) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/octet-stream")
        .body(encode(v))
}

/// Why a request was not admitted.
enum Refusal {
    /// Another cluster, another genesis, or a bad MAC (the code).
    Peer(&'static str),
    /// The body does not decode.
    Body(String),
}

impl Refusal {
    fn response(self) -> HttpResponse {
        match self {
            Refusal::Peer(code) => refused(code),
            Refusal::Body(e) => bad_body(e),
        }
    }
}

/// A request after its route's checks: the MAC and headers, then the body's decoding.
fn admitted<T: DeserializeOwned>(
    req: &HttpRequest,
    route: &str,
    body: &[u8],
    st: &RpcState,
) -> Result<T, Refusal> {
    st.auth.check(req, route, body).map_err(Refusal::Peer)?;
    decode(body).map_err(Refusal::Body)
}

async fn append(req: HttpRequest, body: web::Bytes, st: web::Data<RpcState>) -> HttpResponse {
    match admitted::<AppendEntriesRequest<TypeConfig>>(&req, APPEND, &body, &st) {
        Ok(rpc) => octets(&st.raft.append_entries(rpc).await),
        Err(refusal) => refusal.response(),
    }
}

async fn vote(req: HttpRequest, body: web::Bytes, st: web::Data<RpcState>) -> HttpResponse {
    match admitted::<VoteRequest<NodeId>>(&req, VOTE, &body, &st) {
        Ok(rpc) => octets(&st.raft.vote(rpc).await),
        Err(refusal) => refusal.response(),
    }
}

async fn snapshot(req: HttpRequest, body: web::Bytes, st: web::Data<RpcState>) -> HttpResponse {
    match admitted::<InstallSnapshotRequest<TypeConfig>>(&req, SNAPSHOT, &body, &st) {
        Ok(rpc) => octets(&st.raft.install_snapshot(rpc).await),
        Err(refusal) => refusal.response(),
    }
}

/// Blocks `from..to` of this node's ledger, as many as fit in half the body limit (at
/// least one); for a peer installing a snapshot.
async fn blocks(req: HttpRequest, body: web::Bytes, st: web::Data<RpcState>) -> HttpResponse {
    let (from, to) = match admitted::<(u64, u64)>(&req, BLOCKS, &body, &st) {
        Ok(r) => r,
        Err(refusal) => return refusal.response(),
    };
    let st2 = st.clone();
    let read = web::block(move || -> Result<Vec<BlockEntry>, String> {
        let to = to.min(st2.ledger.tip().height);
        let (mut out, mut bytes) = (Vec::new(), 0usize);
        for n in from..to {
            let Some(b) = st2.ledger.block(n).map_err(|e| e.to_string())? else {
                break;
            };
            let mut enc = Vec::with_capacity(b.encoded_len());
            b.encode_into(&mut enc);
            if !out.is_empty() && bytes + enc.len() > st2.limits.body_max / 2 {
                break;
            }
            bytes += enc.len();
            out.push(BlockEntry { block: enc });
        }
        Ok(out)
    })
    .await;
    match read {
        Ok(Ok(list)) => octets(&list),
        Ok(Err(e)) => internal("ledger_read", e),
        Err(e) => internal("ledger_read", e),
    }
}

/// Holds the copies the leader sent (keys and payloads), all at once, so they share the
/// key log's and the pack's group commits; durable before the answer, which says for
/// each whether it is held or was erased here.
async fn copies(req: HttpRequest, body: web::Bytes, st: web::Data<RpcState>) -> HttpResponse {
    let copies = match admitted::<Vec<Copy>>(&req, COPIES, &body, &st) {
        Ok(r) => r,
        Err(refusal) => return refusal.response(),
    };
    let started = std::time::Instant::now();
    let n = copies.len();
    let held = futures_util::future::join_all(copies.into_iter().map(|copy| hold(&st, copy))).await;
    if started.elapsed() > std::time::Duration::from_secs(1) {
        let ms = started.elapsed().as_millis() as u64;
        tracing::warn!(copies = n, ms, "holding copies sent by the leader was slow");
    }
    octets(&held)
}

/// Holds one copy.
async fn hold(st: &RpcState, copy: Copy) -> CopyAnswer {
    match copy {
        Copy::Key { key_id, wrapped } => {
            match st
                .payloads
                .keys()
                .store_wrapped(&key_id, &wrapped, KeyKind::Record)
                .await
            {
                Ok(()) => CopyAnswer::Held,
                Err(KeyStoreError::Erased(_)) => CopyAnswer::Erased,
                Err(e) => {
                    tracing::error!(error = %e, "storing a key sent by the leader");
                    CopyAnswer::Failed(e.to_string())
                }
            }
        }
        Copy::Payload(h) => match hold_payload(st, h).await {
            Ok(()) => {
                st.stats
                    .payload_copies_received
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                CopyAnswer::Held
            }
            Err(PayloadError::Erased(_)) => CopyAnswer::Erased,
            Err(e) => {
                tracing::warn!(error = %e, "holding a payload sent by the leader");
                CopyAnswer::Failed(e.to_string())
            }
        },
    }
}

/// Stores a payload copy's last blocks, pins it and stores its key.
async fn hold_payload(st: &RpcState, h: Hold) -> Result<(), PayloadError> {
    let root = h.id.root().map_err(PayloadError::Corrupt)?;
    let blocks = WireBlock::blocks(h.blocks).map_err(PayloadError::Corrupt)?;
    st.payloads.put_blocks(blocks).await?;
    st.payloads.adopt(&root, &h.id.key_id, &h.wrapped).await
}

/// A key this node holds, for a node that lacks it (it was down when the key was sent).
async fn key_get(req: HttpRequest, body: web::Bytes, st: web::Data<RpcState>) -> HttpResponse {
    let key_id = match admitted::<String>(&req, KEY_GET, &body, &st) {
        Ok(r) => r,
        Err(refusal) => return refusal.response(),
    };
    match st.payloads.keys().wrapped(&key_id) {
        Ok(wrapped) => octets(&KeyAnswer::Wrapped(wrapped)),
        Err(KeyStoreError::Erased(_)) => octets(&KeyAnswer::Erased),
        Err(KeyStoreError::NotFound(_)) => octets(&KeyAnswer::Absent),
        Err(e) => internal("key_store", e),
    }
}

fn internal(code: &'static str, e: impl std::fmt::Display) -> HttpResponse {
    HttpResponse::InternalServerError()
        .json(serde_json::json!({"error": {"code": code, "message": e.to_string()}}))
}

/// Blocks of a payload copy the leader sends (checked against their CIDs; not durable
/// before the hold that follows).
async fn payload_blocks(
    req: HttpRequest,
    body: web::Bytes,
    st: web::Data<RpcState>,
) -> HttpResponse {
    let wire = match admitted::<Vec<WireBlock>>(&req, PAYLOAD_BLOCKS, &body, &st) {
        Ok(r) => r,
        Err(refusal) => return refusal.response(),
    };
    let blocks = match WireBlock::blocks(wire) {
        Ok(b) => b,
        Err(e) => return bad_body(e),
    };
    match st.payloads.put_blocks(blocks).await {
        Ok(()) => HttpResponse::Ok().finish(),
        Err(e @ PayloadError::Corrupt(_)) => bad_body(e.to_string()),
        Err(e) => internal("payload_store", e),
    }
}

/// Blocks of a payload this node holds, for a node that lacks it: from the `from`th
/// block of its DAG, as many as fit in one copy message (at least one), with its
/// wrapped key after the last.
async fn payload_get(req: HttpRequest, body: web::Bytes, st: web::Data<RpcState>) -> HttpResponse {
    let (id, from) = match admitted::<(PayloadId, u32)>(&req, PAYLOAD_GET, &body, &st) {
        Ok(r) => r,
        Err(refusal) => return refusal.response(),
    };
    let root = match id.root() {
        Ok(r) => r,
        Err(e) => return bad_body(e),
    };
    let keys = st.payloads.keys();
    if keys.is_erased(&id.key_id) {
        return octets(&PayloadPiece::Erased);
    }
    match st.payloads.holds(&root, &id.key_id).await {
        Ok(true) => {}
        Ok(false) => return octets(&PayloadPiece::Absent),
        Err(e) => return internal("payload_store", e),
    }
    let cids = match st.payloads.dag_cids(&root).await {
        Ok(c) => c,
        Err(e) => return internal("payload_store", e),
    };
    let mut next = from as usize;
    let blocks = match next_blocks(&st.payloads, &cids, &mut next, st.limits.copy_bytes()).await {
        Ok(b) => b,
        Err(e) => return internal("payload_store", e),
    };
    let wrapped_key = if next >= cids.len() {
        match keys.wrapped(&id.key_id) {
            Ok(w) => Some(w),
            Err(KeyStoreError::Erased(_)) => return octets(&PayloadPiece::Erased),
            Err(e) => return internal("key_store", e),
        }
    } else {
        None
    };
    octets(&PayloadPiece::Blocks {
        blocks,
        wrapped_key,
    })
}

/// Drops a copy of a payload no record will name (its submission was refused or
/// rejected on the leader): its key is destroyed and it is unpinned.
async fn payload_drop(req: HttpRequest, body: web::Bytes, st: web::Data<RpcState>) -> HttpResponse {
    let id = match admitted::<PayloadId>(&req, PAYLOAD_DROP, &body, &st) {
        Ok(r) => r,
        Err(refusal) => return refusal.response(),
    };
    let root = match id.root() {
        Ok(r) => r,
        Err(e) => return bad_body(e),
    };
    match st.payloads.erase(&id.key_id, &root).await {
        Ok(()) => HttpResponse::Ok().finish(),
        Err(PayloadError::InvalidKeyId) => bad_body("invalid key id".into()),
        Err(e) => internal("payload_store", e),
    }
}

/// How long a node asked to campaign waits for its log to reach the leader's.
const ELECT_LOG_WAIT: Duration = Duration::from_secs(2);

/// Campaigns now (the leader hands its leadership to this node), once this node's log
/// holds the leader's last entry: a voter refuses a candidate whose log is behind its own.
async fn elect(req: HttpRequest, body: web::Bytes, st: web::Data<RpcState>) -> HttpResponse {
    let wanted = match admitted::<Option<u64>>(&req, ELECT, &body, &st) {
        Ok(r) => r,
        Err(refusal) => return refusal.response(),
    };
    let mut metrics = st.raft.metrics();
    let caught_up = tokio::time::timeout(
        ELECT_LOG_WAIT,
        metrics.wait_for(|m| m.last_log_index >= wanted),
    )
    .await;
    if !matches!(caught_up, Ok(Ok(_))) {
        return HttpResponse::Conflict().json(serde_json::json!({"error": {
            "code": "log_behind",
            "message": "this node's log did not reach the leader's last entry in time"}}));
    }
    match st.raft.trigger().elect().await {
        Ok(()) => HttpResponse::Ok().finish(),
        Err(e) => internal("raft", e),
    }
}

/// The node-to-node server, on its own thread and actix system.
pub struct RpcServer {
    handle: actix_web::dev::ServerHandle,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RpcServer {
    /// Listens on `addr` and serves `raft`'s RPCs.
    pub fn start(
        addr: std::net::SocketAddr,
        raft: Raft<TypeConfig>,
        auth: Arc<PeerAuth>,
        ledger: Arc<Ledger>,
        payloads: Arc<Payloads>,
        stats: Arc<super::ClusterStats>,
        limits: RpcLimits,
    ) -> std::io::Result<RpcServer> {
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("medledger-raft-rpc".into())
            .spawn(move || {
                let state = web::Data::new(RpcState {
                    raft,
                    auth,
                    ledger,
                    payloads,
                    stats,
                    limits,
                });
                actix_web::rt::System::new().block_on(async move {
                    let server = actix_web::HttpServer::new(move || {
                        actix_web::App::new()
                            .app_data(state.clone())
                            .app_data(web::PayloadConfig::new(limits.body_max))
                            .route(APPEND, web::post().to(append))
                            .route(VOTE, web::post().to(vote))
                            .route(SNAPSHOT, web::post().to(snapshot))
                            .route(BLOCKS, web::post().to(blocks))
                            .route(COPIES, web::post().to(copies))
                            .route(KEY_GET, web::post().to(key_get))
                            .route(PAYLOAD_BLOCKS, web::post().to(payload_blocks))
                            .route(PAYLOAD_GET, web::post().to(payload_get))
                            .route(PAYLOAD_DROP, web::post().to(payload_drop))
                            .route(ELECT, web::post().to(elect))
                    })
                    .workers(1)
                    .client_request_timeout(Duration::from_secs(10))
                    .shutdown_timeout(1)
                    .disable_signals()
                    .bind(addr);
                    match server {
                        Ok(s) => {
                            let s = s.run();
                            let _ = tx.send(Ok(s.handle()));
                            let _ = s.await;
                        }
                        Err(e) => {
                            let _ = tx.send(Err(e));
                        }
                    }
                })
            })?;
        let handle = rx
            .recv()
            .map_err(|_| std::io::Error::other("the Raft RPC thread stopped"))??;
        Ok(RpcServer {
            handle,
            thread: Some(thread),
        })
    }

    /// Stops accepting and waits for the thread.
    pub fn stop(&mut self) {
        if let Some(t) = self.thread.take() {
            let h = self.handle.clone();
            // The handle's stop is a future; any runtime may drive it.
            let _ = std::thread::spawn(move || {
                actix_web::rt::System::new().block_on(h.stop(false));
            })
            .join();
            let _ = t.join();
        }
    }
}
