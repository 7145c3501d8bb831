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

use medledger_payload::keystore::{KeyStore, KeyStoreError};
use medledger_storage::Ledger;

use super::store::{decode, encode, BlockEntry};
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
    /// Sends a record's wrapped content key to the node at `raft`, which stores it
    /// durably before it answers. `Ok(false)`: that node destroyed the key (erased).
    pub async fn put_key(&self, raft: &str, key_id: &str, wrapped: &[u8]) -> Result<bool, String> {
        let body = encode(&(key_id, wrapped));
        let res = self
            .signed_post(&format!("http://{raft}"), KEY_PUT, body)
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .map_err(|e| format!("sending a key to {raft}: {e}"))?;
        match res.status() {
            s if s.is_success() => Ok(true),
            reqwest::StatusCode::GONE => Ok(false),
            s => Err(format!("{raft} answered {s} to a key")),
        }
    }

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
const KEY_PUT: &str = "/raft/keys/put";
const KEY_GET: &str = "/raft/keys/get";

struct RpcState {
    raft: Raft<TypeConfig>,
    auth: Arc<PeerAuth>,
    ledger: Arc<Ledger>,
    keys: Arc<KeyStore>,
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
        Ok(Err(e)) => HttpResponse::InternalServerError()
            .json(serde_json::json!({"error": {"code": "ledger_read", "message": e}})),
        Err(e) => HttpResponse::InternalServerError()
            .json(serde_json::json!({"error": {"code": "ledger_read", "message": e.to_string()}})),
    }
}

/// Stores a record's content key sent by the leader (durable before the answer): 200, or
/// 410 when this node destroyed it (the record was erased).
async fn key_put(req: HttpRequest, body: web::Bytes, st: web::Data<RpcState>) -> HttpResponse {
    let (key_id, wrapped) = match admitted::<(String, Vec<u8>)>(&req, KEY_PUT, &body, &st) {
        Ok(r) => r,
        Err(refusal) => return refusal.response(),
    };
    match st.keys.store_wrapped(&key_id, &wrapped).await {
        Ok(()) => HttpResponse::Ok().finish(),
        Err(KeyStoreError::Erased(_)) => HttpResponse::Gone().finish(),
        Err(e) => {
            tracing::error!(error = %e, "storing a key sent by the leader");
            HttpResponse::InternalServerError()
                .json(serde_json::json!({"error": {"code": "key_store", "message": e.to_string()}}))
        }
    }
}

/// A key this node holds, for a node that lacks it (it was down when the key was sent).
async fn key_get(req: HttpRequest, body: web::Bytes, st: web::Data<RpcState>) -> HttpResponse {
    let key_id = match admitted::<String>(&req, KEY_GET, &body, &st) {
        Ok(r) => r,
        Err(refusal) => return refusal.response(),
    };
    match st.keys.wrapped(&key_id) {
        Ok(wrapped) => octets(&KeyAnswer::Wrapped(wrapped)),
        Err(KeyStoreError::Erased(_)) => octets(&KeyAnswer::Erased),
        Err(KeyStoreError::NotFound(_)) => octets(&KeyAnswer::Absent),
        Err(e) => HttpResponse::InternalServerError()
            .json(serde_json::json!({"error": {"code": "key_store", "message": e.to_string()}})),
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
        keys: Arc<KeyStore>,
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
                    keys,
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
                            .route(KEY_PUT, web::post().to(key_put))
                            .route(KEY_GET, web::post().to(key_get))
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
