//! `medledger serve`: the ledger, the orderer, the views and their projector, and the HTTP
//! API, on embedded defaults (data dir `./medledger-data`, `127.0.0.1:8080`).
//!
//! Shutdown on SIGTERM or SIGINT is graceful: the server stops accepting, lets in-flight
//! requests finish (their submissions drain through the orderer and are fsynced), then the
//! orderer, the projector, the views and the ledger close in that order.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::dev::Service;
use actix_web::middleware::Compress;
use actix_web::{web, App, HttpServer};

use medledger_payload::{CidVersion, PayloadConfig, PayloadError, Payloads};
use medledger_proof::KeyError;
use medledger_storage::{Ledger, LedgerOptions, StorageError};
use medledger_views::projector::Projector;
use medledger_views::rebuild::{open_views, rebuild, RebuildError};
use medledger_views::{Backend, ViewError};

use crate::api::auth::{self, Auth};
use crate::api::error::ApiError;
use crate::api::limits::{client_key, RateLimiter};
use crate::api::{self, AppState};
use crate::orderer::{Orderer, OrdererConfig, OrdererError};
use crate::reconcile::{reconcile_payloads, ReconcileError};

/// Why the server did not start or stopped with an error. Startup errors go to the
/// operator's console (they may name files in the data dir; they never reach a client).
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// An orderer knob is out of range, or its threads would not start.
    #[error(transparent)]
    Orderer(#[from] OrdererError),
    /// A payload setting is out of range.
    #[error("{0}")]
    PayloadSetting(String),
    #[error("creating {path}: {source}", path = .path.display())]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("opening the ledger in {path}: {source}", path = .path.display())]
    Ledger { path: PathBuf, source: StorageError },
    /// The views were of an older layout and rebuilding them failed.
    #[error("rebuilding the views: {0}")]
    Rebuild(RebuildError),
    #[error(transparent)]
    Views(RebuildError),
    #[error(transparent)]
    Projector(#[from] medledger_views::projector::StartError),
    /// The JWT key or secret could not be read or made.
    #[error("{0}")]
    Auth(String),
    #[error("TLS: {0}")]
    Tls(String),
    /// The checkpoint key's files (a rotation's leftovers) could not be handled.
    #[error("the checkpoint key files: {0}")]
    CheckpointKeyFiles(String),
    #[error("reading {path}: {source}", path = .path.display())]
    JwtKey {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("opening the payload store: {0}")]
    Payloads(PayloadError),
    #[error("opening the search index: {0}")]
    Search(String),
    #[error("starting the replication runtime: {0}")]
    Runtime(std::io::Error),
    /// Removing payloads no record names failed; nothing is served until it succeeds.
    #[error("reconciling the payload store with the ledger: {0}")]
    Reconcile(#[from] ReconcileError),
    #[error("the checkpoint key {path}: {source}", path = .path.display())]
    CheckpointKey { path: PathBuf, source: KeyError },
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    /// The HTTP server stopped with an error.
    #[error("the HTTP server failed: {0}")]
    Http(std::io::Error),
    #[error(transparent)]
    Cluster(#[from] crate::cluster::ClusterError),
    /// The data dir holds a cluster node's Raft log but no `--cluster` was given (its
    /// ledger must only grow through its cluster).
    #[error(
        "{path} holds a cluster node's Raft log; start it with --cluster FILE --node-id N",
        path = .0.display()
    )]
    ClusterDataDir(PathBuf),
    /// The data dir's JWT secret is not the one the cluster secret gives.
    #[error(
        "{path} is not the JWT secret this cluster derives from its secret; move it away \
         (every node must accept every node's tokens)",
        path = .0.display()
    )]
    ClusterJwtSecret(PathBuf),
}

/// `serve --cluster FILE --node-id N`.
#[derive(Clone, Debug)]
pub struct ClusterSettings {
    pub config: crate::cluster::ClusterConfig,
    pub node_id: u64,
}

/// The PEM files of HTTPS: the certificate chain (the server's first) and its private key.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The largest certificate chain or key file read.
const TLS_FILE_BYTES_MAX: u64 = 1 << 20;

impl TlsFiles {
    /// The rustls configuration of these files: TLS 1.2 and 1.3 with rustls' safe
    /// defaults (ring), no client certificates, HTTP/1.1 offered by ALPN.
    pub fn server_config(&self) -> Result<rustls::ServerConfig, String> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let read = |path: &std::path::Path, what: &str| {
            crate::disk::read_bounded(path, TLS_FILE_BYTES_MAX, what)
        };
        let chain = read(&self.cert, "certificate")?;
        let certs = CertificateDer::pem_slice_iter(&chain)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("the certificate {} is not PEM: {e}", self.cert.display()))?;
        if certs.is_empty() {
            return Err(format!(
                "the certificate {} holds no CERTIFICATE block",
                self.cert.display()
            ));
        }
        let key = PrivateKeyDer::from_pem_slice(&read(&self.key, "key")?).map_err(|e| {
            format!(
                "the key {} is not a PEM private key (PKCS#8, PKCS#1 or SEC1): {e}",
                self.key.display()
            )
        })?;
        // ring's provider: X25519, P-256 and P-384 key exchange, no post-quantum hybrid
        // (X25519MLKEM768 needs aws-lc-rs, a CMake build of AWS-LC; rustls deprecates
        // ring's provider for that reason alone).
        #[allow(deprecated)]
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|e| format!("the certificate and key do not make a server identity: {e}"))?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(config)
    }
}

/// Everything `serve` needs.
#[derive(Clone, Debug)]
pub struct ServeConfig {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub backend: Backend,
    pub orderer: OrdererConfig,
    /// RS256 public key (PEM); without it, HS256 with the data dir's secret.
    pub jwt_public_key: Option<PathBuf>,
    /// Check bearer tokens with the keys of this JWKS file (re-read on SIGHUP and every
    /// `jwks_refresh`).
    pub jwks_file: Option<PathBuf>,
    pub jwks_refresh: Duration,
    /// The issuer and audience every token must name, when set.
    pub jwt_rules: crate::api::auth::TokenRules,
    /// HTTP worker threads (0: one per core).
    pub workers: usize,
    /// Requests per second per client address (burst: twice that); 0 turns it off.
    pub rate_limit_per_sec: u32,
    /// Time a request body has before it must keep coming (it grows with what arrives:
    /// `api::slow_body`); a body too slow is answered 408 `body_timeout`.
    pub body_grace: Duration,
    /// The payload pipeline.
    pub payloads: PayloadSettings,
    /// A node of a cluster (none: one node on its own, the default).
    pub cluster: Option<ClusterSettings>,
    /// Free space kept on the data dir's disk (`crate::disk`): writes are refused with
    /// 507 below it, and the ledger refuses blocks below half of it. 0: no reserve.
    pub disk_reserve_bytes: u64,
    /// Serve HTTPS with this certificate chain and key (PEM files); none: plain HTTP.
    pub tls: Option<TlsFiles>,
    /// Whether reads of clinical content wait for their access event.
    pub audit_reads: crate::api::audit::AuditReads,
}

/// The payload pipeline's knobs (the data dir and the size limit come from the rest of
/// the config: payloads live in `<data_dir>/payloads`, and are at most AbsoluteMaxBytes).
#[derive(Clone, Debug)]
pub struct PayloadSettings {
    /// Blocks uploaded at once (`IPFS_UPLOAD_CONCURRENCY`).
    pub upload_concurrency: usize,
    /// Blocks fetched ahead on reads (`IPFS_DOWNLOAD_CONCURRENCY`).
    pub download_concurrency: usize,
    /// CID version of new payloads (0: Kubo's default; 1: raw leaves).
    pub cid_version: u8,
    /// A Kubo node's RPC API to replicate pinned payloads to (none: embedded only).
    pub ipfs_api: Option<String>,
    /// The master key file (none: `<data_dir>/payloads/master.key`, created on first start).
    pub master_key: Option<PathBuf>,
    /// The master key itself, from the environment (`MEDLEDGER_MASTER_KEY_HEX`, 64 hex
    /// digits): for a secret store that injects it. Never printed.
    pub master_key_hex: Option<medledger_payload::SecretSeed>,
    /// A command whose standard output is the master key in 64 hex digits
    /// (`--master-key-command`): for a KMS or HSM client. Run with `sh -c`, at most
    /// [`MASTER_KEY_COMMAND_WAIT`].
    pub master_key_command: Option<String>,
}

/// How long `--master-key-command` may take.
pub const MASTER_KEY_COMMAND_WAIT: Duration = Duration::from_secs(30);

/// Reads 64 hex digits (surrounding whitespace ignored) as a 32-byte key; the error never
/// repeats the text.
pub fn master_key_from_hex(text: &str) -> Result<medledger_payload::SecretSeed, String> {
    let mut bytes = [0u8; 32];
    hex::decode_to_slice(text.trim(), &mut bytes)
        .map_err(|_| "the master key must be 64 hex digits (32 bytes)".to_string())?;
    Ok(medledger_payload::SecretSeed(bytes))
}

/// Runs `command` with `sh -c` and reads its standard output as the master key. Fails,
/// without repeating the output, when it exits non-zero, runs past
/// [`MASTER_KEY_COMMAND_WAIT`] (it is killed) or prints anything but 64 hex digits.
pub fn master_key_from_command(command: &str) -> Result<medledger_payload::SecretSeed, String> {
    use std::io::Read;
    let mut child = std::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .map_err(|e| format!("the master key command could not start: {e}"))?;
    let mut stdout = child.stdout.take().expect("piped");
    let reader = std::thread::spawn(move || {
        let mut out = Vec::new();
        // At most a little more than a key's text: a command printing more is refused.
        let _ = (&mut stdout).take(4096).read_to_end(&mut out);
        out
    });
    let deadline = std::time::Instant::now() + MASTER_KEY_COMMAND_WAIT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10))
            }
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "the master key command ran past {} s and was stopped",
                    MASTER_KEY_COMMAND_WAIT.as_secs()
                ));
            }
            Err(e) => return Err(format!("the master key command: {e}")),
        }
    };
    let out = reader.join().unwrap_or_default();
    if !status.success() {
        return Err(format!("the master key command failed ({status})"));
    }
    let text = String::from_utf8(out)
        .map_err(|_| "the master key command printed something other than hex".to_string())?;
    master_key_from_hex(&text).map_err(|e| format!("the master key command's output: {e}"))
}

/// The master key given as bytes (environment or command), if one is; at most one way of
/// giving the key may be set.
fn master_key_seed(
    config: &ServeConfig,
) -> Result<Option<medledger_payload::SecretSeed>, ServeError> {
    let s = &config.payloads;
    let given = [
        s.master_key.is_some(),
        s.master_key_hex.is_some(),
        s.master_key_command.is_some(),
    ]
    .iter()
    .filter(|g| **g)
    .count();
    let setting = |m: String| ServeError::PayloadSetting(m);
    if given > 1 {
        return Err(setting(
            "give the master key one way: --master-key FILE, MEDLEDGER_MASTER_KEY_HEX or --master-key-command"
                .into(),
        ));
    }
    if config.cluster.is_some() && given > 0 {
        return Err(setting(
            "a cluster's master key is derived from the cluster secret: do not give one".into(),
        ));
    }
    match (&s.master_key_hex, &s.master_key_command) {
        (Some(seed), _) => Ok(Some(seed.clone())),
        (None, Some(command)) => master_key_from_command(command).map(Some).map_err(setting),
        (None, None) => Ok(None),
    }
}

impl Default for PayloadSettings {
    fn default() -> Self {
        PayloadSettings {
            upload_concurrency: 4,
            download_concurrency: 6,
            cid_version: 0,
            ipfs_api: None,
            master_key: None,
            master_key_hex: None,
            master_key_command: None,
        }
    }
}

/// The most chunk workers either pool may have.
pub const PAYLOAD_CONCURRENCY_MAX: usize = 64;

/// The file in the data dir holding the Ed25519 key that signs checkpoints (mode 0600).
pub const CHECKPOINT_KEY_FILE: &str = "checkpoint.key";
/// The public halves of the checkpoint keys rotated out, in the data dir.
pub const CHECKPOINT_RETIRED_KEYS_FILE: &str = "checkpoint-keys.json";

/// The default per-client rate limit (requests per second).
pub const RATE_LIMIT_PER_SEC_DEFAULT: u32 = 1_000;

impl ServeConfig {
    /// The embedded defaults for `data_dir`: 127.0.0.1:8080, RocksDB views, the default
    /// cutter, the data dir's HS256 secret, one worker per core, the default rate limit.
    pub fn new(data_dir: PathBuf) -> ServeConfig {
        ServeConfig {
            data_dir,
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            backend: Backend::RocksDb,
            orderer: OrdererConfig::default(),
            jwt_public_key: None,
            jwks_file: None,
            jwks_refresh: Duration::from_secs(60),
            jwt_rules: crate::api::auth::TokenRules::default(),
            workers: 0,
            rate_limit_per_sec: RATE_LIMIT_PER_SEC_DEFAULT,
            body_grace: api::slow_body::BODY_GRACE,
            payloads: PayloadSettings::default(),
            cluster: None,
            disk_reserve_bytes: crate::disk::RESERVE_BYTES_DEFAULT,
            tls: None,
            audit_reads: crate::api::audit::AuditReads::Sync,
        }
    }
}

/// The running parts behind the HTTP layer.
pub struct Core {
    pub state: web::Data<AppState>,
    /// The runtime of the payload pipeline's background replication (Kubo), if any.
    replication: Option<tokio::runtime::Runtime>,
    /// Keeps the key store in step with the ledger (crate::keeper).
    keeper: std::sync::Mutex<Option<crate::keeper::Keeper>>,
    /// A reconcile ran at open (the store was not closed cleanly): the blocks of orphans
    /// and of uploads a crash cut short are garbage for a GC once the server runs.
    collect_garbage: bool,
}

impl Drop for Core {
    fn drop(&mut self) {
        // Not a blocking drop: a Core may be dropped inside an async test.
        if let Some(rt) = self.replication.take() {
            rt.shutdown_background();
        }
        // The indexer's thread holds the ledger: it ends with its pass (milliseconds).
        self.state.search.stop();
    }
}

/// Opens the payload pipeline; with a Kubo node, on a runtime of its own, so replication
/// runs whatever runtime the HTTP workers use.
fn open_payloads(
    config: &ServeConfig,
) -> Result<(Arc<Payloads>, Option<tokio::runtime::Runtime>), ServeError> {
    let s = &config.payloads;
    for (name, n) in [
        ("upload", s.upload_concurrency),
        ("download", s.download_concurrency),
    ] {
        if !(1..=PAYLOAD_CONCURRENCY_MAX).contains(&n) {
            return Err(ServeError::PayloadSetting(format!(
                "the IPFS {name} concurrency must be between 1 and {PAYLOAD_CONCURRENCY_MAX}, not {n}"
            )));
        }
    }
    let cid_version = match s.cid_version {
        0 => CidVersion::V0,
        1 => CidVersion::V1,
        other => {
            return Err(ServeError::PayloadSetting(format!(
                "the CID version must be 0 or 1, not {other}"
            )))
        }
    };
    let mut pc = PayloadConfig::new(config.data_dir.join("payloads"));
    pc.master_key_path = s.master_key.clone();
    pc.master_key_bytes = master_key_seed(config)?;
    if let Some(c) = &config.cluster {
        // Every node wraps keys under the same master key, derived from the cluster
        // secret, so a record's content key sent to another node opens there.
        pc.master_key_bytes = Some(medledger_payload::SecretSeed(
            c.config.derive_key("payload-master-key"),
        ));
    }
    pc.upload_concurrency = s.upload_concurrency;
    pc.download_concurrency = s.download_concurrency;
    pc.cid_version = cid_version;
    pc.max_payload_bytes = u64::from(config.orderer.cutter.absolute_max_bytes);
    pc.kubo = s.ipfs_api.clone();
    let open = |pc| Payloads::open(pc).map_err(ServeError::Payloads);
    match &s.ipfs_api {
        None => Ok((Arc::new(open(pc)?), None)),
        Some(_) => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("medledger-ipfs")
                .enable_all()
                .build()
                .map_err(ServeError::Runtime)?;
            let payloads = {
                let _guard = rt.enter();
                open(pc)?
            };
            Ok((Arc::new(payloads), Some(rt)))
        }
    }
}

impl Core {
    /// Opens the ledger, starts the orderer and the projector, and prepares the
    /// authentication key. Prints how to mint a token when it creates the secret.
    pub fn open(config: &ServeConfig) -> Result<Core, ServeError> {
        config.orderer.validate()?;
        medledger_storage::ledger::fs::create_dir_durably(&config.data_dir).map_err(|source| {
            ServeError::DataDir {
                path: config.data_dir.clone(),
                source,
            }
        })?;
        let raft_dir = config.data_dir.join(crate::cluster::RAFT_DIR);
        if config.cluster.is_none() && raft_dir.exists() {
            return Err(ServeError::ClusterDataDir(raft_dir));
        }
        let ledger_options = LedgerOptions {
            genesis_timestamp_ms: config
                .cluster
                .as_ref()
                .map(|_| crate::cluster::GENESIS_TIMESTAMP_MS),
            // Writes are refused at the door below the whole reserve; the ledger's half
            // is for the blocks already on their way then.
            reserve_bytes: config.disk_reserve_bytes / 2,
            ..LedgerOptions::default()
        };
        let (ledger, recovery) =
            Ledger::open(&config.data_dir, ledger_options).map_err(|source| {
                ServeError::Ledger {
                    path: config.data_dir.clone(),
                    source,
                }
            })?;
        if let Some(t) = &recovery.truncated {
            tracing::warn!(?t, "recovered an unacknowledged torn tail");
        }
        let ledger = Arc::new(ledger);
        let views = match open_views(&config.data_dir, config.backend) {
            Err(RebuildError::Views(ViewError::Layout { found, expected })) => {
                // Views are derived data: views of an older layout are rebuilt from the
                // ledger, as `medledger rebuild` would, before anything is served.
                tracing::warn!(
                    found,
                    expected,
                    "the views were written in another layout; rebuilding them from the ledger"
                );
                let summary = rebuild(&config.data_dir, &ledger, config.backend, &mut |_| {})
                    .map_err(ServeError::Rebuild)?;
                tracing::info!(
                    events = summary.events,
                    seconds = summary.seconds,
                    "rebuilt the views"
                );
                open_views(&config.data_dir, config.backend)
            }
            other => other,
        }
        .map_err(ServeError::Views)?;
        let projector = Arc::new(
            Projector::start(ledger.clone(), views.clone()).map_err(ServeError::Projector)?,
        );
        let (payloads, replication) = open_payloads(config)?;
        // Before the HTTP server accepts a request, so no submission is in flight whose
        // payload is stored but whose record is not yet committed (it would look orphaned).
        // Not in a cluster: there a record's key and payload arrive before its block (the
        // leader sends them first), so what no local block names yet is no orphan.
        let mut collect_garbage = false;
        if config.cluster.is_none() && payloads.clean_stop_height() == Some(ledger.tip().height) {
            // Stopped cleanly with no orphan at this height, and opened by nothing since
            // (every open removes the mark): nothing to reconcile.
            tracing::info!(
                height = ledger.tip().height,
                "the payload store was closed cleanly at this height: no reconcile"
            );
        } else if config.cluster.is_none() {
            collect_garbage = true;
            let reconciled = reconcile_payloads(&ledger, &payloads)?;
            if reconciled.orphan_roots_unpinned + reconciled.orphan_keys_destroyed > 0 {
                tracing::warn!(
                    orphan_roots_unpinned = reconciled.orphan_roots_unpinned,
                    orphan_keys_destroyed = reconciled.orphan_keys_destroyed,
                    "removed payloads no record names (left by a crash or a refused submission)"
                );
            }
        }
        let cluster = match &config.cluster {
            None => None,
            Some(c) => {
                let nudged = projector.clone();
                // A message carries at most max_payload_entries (8) blocks.
                let rpc_body_max =
                    8 * config.orderer.cutter.absolute_max_bytes as usize + (1 << 20);
                Some(crate::cluster::Cluster::start(
                    c.config.clone(),
                    c.node_id,
                    &config.data_dir,
                    ledger.clone(),
                    payloads.clone(),
                    Box::new(move || nudged.nudge()),
                    rpc_body_max,
                )?)
            }
        };
        let orderer = Arc::new(match &cluster {
            None => Orderer::start(ledger.clone(), config.orderer.clone())?,
            Some(c) => {
                Orderer::start_replicated(ledger.clone(), c.clone(), config.orderer.clone())?
            }
        });
        let auth = match &config.jwt_public_key {
            None if config.jwks_file.is_some() => {
                let path = config.jwks_file.as_ref().expect("checked");
                Auth::jwks_file(path, &config.jwt_rules).map_err(ServeError::Auth)?
            }
            Some(path) => {
                let pem = std::fs::read(path).map_err(|source| ServeError::JwtKey {
                    path: path.clone(),
                    source,
                })?;
                Auth::rs256(&pem, &config.jwt_rules).map_err(ServeError::Auth)?
            }
            None if config.cluster.is_some() => {
                let c = config.cluster.as_ref().expect("checked");
                let secret = c.config.derive_key("jwt-hs256");
                let path = config.data_dir.join(auth::SECRET_FILE);
                // Written for `medledger token --data-dir`, which reads it.
                let (have, _) =
                    auth::install_secret(&config.data_dir, &secret).map_err(ServeError::Auth)?;
                if have != secret {
                    return Err(ServeError::ClusterJwtSecret(path));
                }
                Auth::hs256(&secret, &config.jwt_rules)
            }
            None => {
                let (checker, created) = Auth::hs256_of(&config.data_dir, &config.jwt_rules)
                    .map_err(ServeError::Auth)?;
                if created {
                    eprintln!(
                        "medledger: created an HS256 secret in {}; mint a token with\n  medledger token --data-dir {} --role clinician --sub dr-1 --hospital h-1",
                        config.data_dir.join(auth::SECRET_FILE).display(),
                        config.data_dir.display()
                    );
                }
                checker
            }
        };
        let key_path = config.data_dir.join(CHECKPOINT_KEY_FILE);
        let checkpoint_key = match &config.cluster {
            // Every node signs checkpoints with the same key, derived from the cluster secret.
            Some(c) => medledger_proof::CheckpointKey::from_seed(
                &c.config.derive_key("checkpoint-ed25519"),
            ),
            None => {
                medledger_proof::CheckpointKey::load_or_create(&key_path).map_err(|source| {
                    ServeError::CheckpointKey {
                        path: key_path.clone(),
                        source,
                    }
                })?
            }
        };
        let key_files = match &config.cluster {
            Some(_) => None,
            None => {
                let files = crate::explorer::KeyFiles {
                    key: key_path.clone(),
                    retired: config.data_dir.join(CHECKPOINT_RETIRED_KEYS_FILE),
                };
                files.recover().map_err(ServeError::CheckpointKeyFiles)?;
                Some(files)
            }
        };
        let search = Arc::new(
            crate::search::Search::open(&config.data_dir, payloads.keys(), &ledger)
                .map_err(ServeError::Search)?,
        );
        search
            .start(
                ledger.clone(),
                views.clone(),
                projector.clone(),
                payloads.keys().clone(),
            )
            .map_err(ServeError::Runtime)?;
        let state = web::Data::new(AppState {
            search,
            explorer: crate::explorer::Explorer::new(ledger.clone(), checkpoint_key, key_files),
            payloads,
            ledger,
            orderer,
            views,
            projector,
            auth,
            audit_reads: config.audit_reads,
            rate_limit: (config.rate_limit_per_sec > 0)
                .then(|| RateLimiter::new(config.rate_limit_per_sec)),
            body_grace: config.body_grace,
            metrics: api::metrics::Metrics::default(),
            cluster,
            payloads_unresolved: Default::default(),
            disk: crate::disk::DiskSpace::new(config.data_dir.clone(), config.disk_reserve_bytes),
            exports: api::bulk_export::Exports::open(&config.data_dir).map_err(|source| {
                ServeError::DataDir {
                    path: config.data_dir.join(api::bulk_export::EXPORTS_DIR),
                    source,
                }
            })?,
        });
        api::bulk_export::Exports::resume(&state);
        let keeper = crate::keeper::Keeper::start(state.clone(), config.data_dir.clone())
            .map_err(ServeError::Runtime)?;
        Ok(Core {
            state,
            replication,
            keeper: std::sync::Mutex::new(Some(keeper)),
            collect_garbage,
        })
    }

    /// Drains and closes everything, in order.
    pub fn close(&self) {
        if let Some(mut keeper) = self.keeper.lock().unwrap_or_else(|e| e.into_inner()).take() {
            keeper.stop();
        }
        // Exports stop after their step (to resume at the next start) before the
        // orderer refuses their reads' events.
        self.state.exports.stop();
        self.state.orderer.shutdown();
        if let Some(c) = &self.state.cluster {
            c.shutdown();
        }
        self.state.projector.nudge();
        let height = self.state.ledger.tip().height;
        let _ = self
            .state
            .projector
            .wait_for_height(height, Duration::from_secs(10));
        self.state.search.stop();
        self.state.projector.shutdown();
        if let Err(e) = self.state.views.flush() {
            tracing::error!(error = %e, "flushing the views");
        }
        let closed = self.state.ledger.close();
        if let Err(e) = &closed {
            tracing::error!(error = %e, "closing the ledger");
        }
        // Nothing stores a payload any more: if every one stored was named by a committed
        // record or abandoned, the next start needs no reconcile.
        if closed.is_ok() && self.state.cluster.is_none() && !self.state.payloads_unresolved.any() {
            if let Err(e) = self.state.payloads.mark_clean_stop(height) {
                tracing::error!(error = %e, "marking the payload store's clean stop");
            }
        }
    }
}

/// The actix application over `state`, as `serve` runs it (tests use it too).
pub fn app(
    state: web::Data<AppState>,
) -> App<
    impl actix_web::dev::ServiceFactory<
        actix_web::dev::ServiceRequest,
        Config = (),
        Response = actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    App::new()
        .app_data(state)
        .wrap_fn(|req, srv| {
            let started = Instant::now();
            let method = req.method().clone();
            // One span per request (exported when OTLP is on; free when it is off). The
            // route is known after routing; no path, id or body goes into it.
            let span = tracing::info_span!(
                "http.request",
                otel.kind = "server",
                http.request.method = %method,
                http.route = tracing::field::Empty,
                http.response.status_code = tracing::field::Empty,
            );
            crate::telemetry::join_remote_trace(&span, req.headers());
            let state = req.app_data::<web::Data<AppState>>().cloned();
            let mut req = req;
            if let Some(s) = &state {
                // A body must keep coming (the server's request timeout covers the head).
                let body = actix_web::HttpMessage::take_payload(&mut req);
                req.set_payload(api::slow_body::with_deadline(
                    body,
                    s.body_grace,
                    api::slow_body::BODY_BYTES_PER_SEC,
                ));
            }
            let limited = state
                .as_ref()
                .and_then(|s| s.rate_limit.as_ref())
                .and_then(|rl| rl.check(&client_key(&req), started).err());
            // A write on a node that does not lead: redirected (or 503), not served.
            let elsewhere = match (&state, limited) {
                (Some(s), None) => api::cluster::write_elsewhere(
                    s,
                    req.method(),
                    req.uri().path_and_query().map_or("/", |p| p.as_str()),
                ),
                _ => None,
            };
            // Either the service's future, or the 429 answered without calling it.
            let call = match (limited, elsewhere) {
                (None, Some(res)) => Err(req.into_response(res)),
                (None, None) => Ok(span.in_scope(|| srv.call(req))),
                (Some(retry_after), _) => {
                    let mut e = ApiError::new(
                        actix_web::http::StatusCode::TOO_MANY_REQUESTS,
                        "rate_limited",
                        "too many requests from this address; slow down",
                    );
                    e.retry_after = Some(retry_after);
                    Err(req.into_response(actix_web::ResponseError::error_response(&e)))
                }
            };
            let request_span = span.clone();
            let handled = async move {
                let res = match call {
                    Ok(fut) => fut.await?.map_into_boxed_body(),
                    Err(res) => res,
                };
                if let Some(state) = state {
                    let pattern = res.request().match_pattern();
                    let route = pattern.as_deref().unwrap_or("unmatched");
                    let elapsed = started.elapsed();
                    if !span.is_disabled() {
                        let status = crate::telemetry::otel_int(res.status().as_u16().into());
                        crate::telemetry::rename(&span, format!("{method} {route}"));
                        span.record("http.route", route);
                        span.record("http.response.status_code", status);
                    }
                    state.metrics.observe(
                        &method,
                        route,
                        res.status().as_u16(),
                        elapsed.as_secs_f64(),
                    );
                    // Structured access log (RUST_LOG=medledger=debug); the path's ids are
                    // not logged, only the route pattern.
                    tracing::debug!(
                        method = %method,
                        route = %route,
                        status = res.status().as_u16(),
                        micros = elapsed.as_micros() as u64,
                        "http request"
                    );
                }
                Ok(res)
            };
            tracing::Instrument::instrument(handled, request_span)
        })
        .wrap(Compress::default())
        .configure(api::configure)
}

/// Runs the server until SIGTERM or SIGINT.
pub fn run(config: ServeConfig) -> Result<(), ServeError> {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    limit_malloc_arenas(cores.max(2));
    let core = Core::open(&config)?;
    let state = core.state.clone();
    let workers = if config.workers == 0 {
        cores
    } else {
        config.workers
    };
    let watched = state.clone();
    let collect_garbage = core.collect_garbage;
    let tls = match &config.tls {
        Some(files) => match files.server_config() {
            Ok(tls) => Some(tls),
            Err(e) => {
                core.close();
                return Err(ServeError::Tls(e));
            }
        },
        None => None,
    };
    return_freed_memory_every(Duration::from_secs(10));
    let result = actix_web::rt::System::new().block_on(async move {
        let server = HttpServer::new(move || app(state.clone()))
            .workers(workers)
            .backlog(4096)
            .max_connections(25_000)
            .client_request_timeout(Duration::from_secs(30))
            .shutdown_timeout(30);
        let scheme = if tls.is_some() { "https" } else { "http" };
        let server = match tls {
            Some(tls) => server.bind_rustls_0_23(config.listen, tls),
            None => server.bind(config.listen),
        }
        .map_err(|source| ServeError::Listen {
            addr: config.listen,
            source,
        })?;
        eprintln!(
            "medledger: serving on {scheme}://{} (data dir {})",
            config.listen,
            config.data_dir.display()
        );
        if collect_garbage {
            // In the background: a GC copies without the store's lock.
            watched.payloads.collect_garbage_soon();
        }
        if config.jwks_file.is_some() {
            eprintln!(
                "medledger: bearer tokens are checked with {}",
                watched.auth.describe()
            );
            actix_web::rt::spawn(watch_jwks(watched, config.jwks_refresh));
        }
        server.run().await.map_err(ServeError::Http)
    });
    core.close();
    result
}

/// Caps the arenas glibc's malloc spreads allocations over (RocksDB's memory; Rust's is
/// mimalloc's) at one per core, before the server's threads start. By default it makes up
/// to 8 per core as threads contend, each a 64 MiB heap; the block caches' blocks, freed
/// and allocated again by every thread that reads, left holes in all of them that
/// `malloc_trim` cannot return (smaller than a page, or between blocks in use): in a
/// 30-minute soak on 2 cores ~15 arenas held ~220 MiB of free memory resident, and RSS grew
/// 13.5% after the warm-up while mimalloc's memory and malloc's bytes in use stayed flat
/// (docs/RELIABILITY.md "Soak"). One arena per core keeps the holes few and reused.
fn limit_malloc_arenas(arenas: usize) {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only sets malloc's parameters; called before the threads it
        // concerns exist.
        let arenas = i32::try_from(arenas).unwrap_or(i32::MAX);
        if unsafe { libc::mallopt(libc::M_ARENA_MAX, arenas) } != 1 {
            tracing::warn!(arenas, "malloc did not take the arena limit");
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    let _ = arenas;
}

/// Every `period`, gives the memory glibc's malloc holds freed back to the kernel, from a
/// thread of its own for the process's life. RocksDB allocates through glibc (Rust through
/// mimalloc), and its flushes and compactions free large buffers that malloc then kept: in
/// an 8-minute soak the freed memory malloc held grew from 91 to 207 MiB, the largest part
/// of RSS's growth (docs/RELIABILITY.md "Soak"). `malloc_trim(0)` returns the free pages
/// of every arena, not only the top of the heap.
fn return_freed_memory_every(period: Duration) {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let spawned = std::thread::Builder::new()
            .name("malloc-trim".into())
            .spawn(move || loop {
                std::thread::sleep(period);
                // SAFETY: malloc_trim takes the arenas' own locks; any thread may call it.
                unsafe {
                    libc::malloc_trim(0);
                }
            });
        if let Err(e) = spawned {
            tracing::warn!("not returning freed memory to the kernel: {e}");
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    let _ = period;
}

/// Re-reads the JWKS file on SIGHUP and every `every`: an identity provider rolls its keys
/// over by publishing the new one first. A file that does not read or parse is logged and
/// the keys stay as they were.
async fn watch_jwks(state: web::Data<AppState>, every: Duration) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hangup = match signal(SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::error!(error = %e, "no SIGHUP handler; the JWKS file is re-read on the timer only");
            None
        }
    };
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        let why = match &mut hangup {
            Some(h) => tokio::select! {
                _ = h.recv() => "SIGHUP",
                _ = tick.tick() => "timer",
            },
            None => {
                tick.tick().await;
                "timer"
            }
        };
        match state.auth.reload_jwks() {
            Ok(Some((keys, skipped))) => {
                tracing::info!(
                    keys,
                    skipped,
                    why,
                    "the JWKS file changed: its keys replace the set"
                )
            }
            Ok(None) => tracing::debug!(why, "the JWKS file is unchanged"),
            Err(e) => {
                tracing::error!(error = %e, why, "the JWKS file was not taken; the keys stay as they were")
            }
        }
    }
}
