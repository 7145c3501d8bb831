//! The `medledger` command.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use medledger::cli;
use medledger::orderer::{CutPolicy, CutterConfig};
use medledger::views::Backend;

#[derive(Parser)]
#[command(
    name = "medledger",
    version,
    about = "Event-sourced, hash-chained ledger for medical records"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Open the ledger (recovering a torn tail) and check every frame, hash link, Merkle
    /// root and index entry. Prints JSON; exit 0 when sound, 1 naming the first bad block.
    ///
    /// With --views: rebuild the views into a scratch directory up to the live views'
    /// height and compare every view byte for byte; exit 1 naming the first differing key.
    Verify {
        #[arg(long, env = "MEDLEDGER_DATA_DIR", default_value = "medledger-data")]
        data_dir: PathBuf,
        /// Check the materialized views against a rebuild instead of the ledger.
        #[arg(long)]
        views: bool,
        /// The view store to check (with --views).
        #[arg(long, env = "MEDLEDGER_VIEW_BACKEND", value_enum, default_value_t = BackendArg::Rocksdb)]
        backend: BackendArg,
    },
    /// Drop the materialized views and rebuild them from block 0. The live views are
    /// replaced only when the rebuild is complete and durable. Prints a JSON summary
    /// (events, blocks, seconds, events_per_sec); progress goes to stderr.
    Rebuild {
        #[arg(long, env = "MEDLEDGER_DATA_DIR", default_value = "medledger-data")]
        data_dir: PathBuf,
        /// The view store to rebuild.
        #[arg(long, env = "MEDLEDGER_VIEW_BACKEND", value_enum, default_value_t = BackendArg::Rocksdb)]
        backend: BackendArg,
    },
    /// Copy a node's data dir (ledger, payload store and keys) to DIR while its server
    /// runs, then recover and verify the copy. Prints JSON; exit 0 when the copy verifies.
    Backup {
        #[arg(long, env = "MEDLEDGER_DATA_DIR", default_value = "medledger-data")]
        data_dir: PathBuf,
        /// The backup directory (missing or empty).
        #[arg(long)]
        to: PathBuf,
    },
    /// Copy a backup into a new data dir and verify it there. Prints JSON; exit 0 when
    /// it verifies. Start the server on it: the views are rebuilt from the ledger.
    Restore {
        /// A directory `medledger backup` wrote.
        #[arg(long)]
        from: PathBuf,
        /// The new data dir (missing or empty).
        #[arg(long, env = "MEDLEDGER_DATA_DIR")]
        data_dir: PathBuf,
    },
    /// Print block headers as JSON lines.
    Blocks {
        #[arg(long, env = "MEDLEDGER_DATA_DIR", default_value = "medledger-data")]
        data_dir: PathBuf,
        /// First block number.
        #[arg(long, default_value_t = 0)]
        from: u64,
        /// How many blocks (at most 100,000).
        #[arg(long, default_value_t = 100)]
        limit: u64,
    },
    /// Run the server: the ledger, the orderer, the views and the HTTP API, on embedded
    /// defaults (no daemon to start by hand). Stops gracefully on SIGTERM or SIGINT.
    Serve(Box<ServeArgs>),
    /// Mint a bearer token (HS256, with the data dir's secret; created if missing). The
    /// token is the last line printed.
    Token {
        #[arg(long, env = "MEDLEDGER_DATA_DIR", default_value = "medledger-data")]
        data_dir: PathBuf,
        /// patient, clinician, auditor or admin.
        #[arg(long)]
        role: String,
        /// The caller's id (a patient id, a clinician id, ...).
        #[arg(long)]
        sub: String,
        /// The caller's hospital (clinicians).
        #[arg(long)]
        hospital: Option<String>,
        /// Hours until the token expires (at most 8,760).
        #[arg(long, default_value_t = 12)]
        ttl_hours: u64,
    },
    /// Print realistic synthetic events (hospitals, clinicians, patients, record types,
    /// amendments, status changes, grants, erasures, access logs) as NDJSON envelopes.
    /// Deterministic for a seed; every event is valid for the contract in order.
    Fixtures {
        /// Events to print (at most 100,000,000).
        #[arg(long, default_value_t = 1000)]
        events: u64,
        /// Seed of the generator.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// The keys of a running server (docs/PAYLOADS.md).
    Keys {
        #[command(subcommand)]
        keys: KeysCommand,
    },
    /// A running cluster's membership (docs/CLUSTER.md), asked of any node.
    Cluster {
        #[command(subcommand)]
        cluster: ClusterCommand,
    },
    /// IPFS helpers.
    Ipfs {
        #[command(subcommand)]
        ipfs: IpfsCommand,
    },
    /// The payload store (encrypted payloads and their keys, under DATA_DIR/payloads).
    Payloads {
        #[command(subcommand)]
        payloads: PayloadsCommand,
    },
    /// Offline proof checks (no server, no data dir).
    Proof {
        #[command(subcommand)]
        proof: ProofCommand,
    },
    /// Benchmarks.
    Bench {
        #[command(subcommand)]
        bench: Bench,
    },
}

#[derive(Subcommand)]
enum IpfsCommand {
    /// Print the CID of FILE as Kubo computes it (`ipfs add --only-hash`): 256 KiB chunks,
    /// balanced DAG, 174 links per node; CIDv0 by default, CIDv1 with raw leaves with
    /// `--cid-version 1`. Nothing is stored.
    Add {
        /// Only compute the CID (the only mode: medledger never adds plaintext files).
        #[arg(long, required = true)]
        only_hash: bool,
        #[arg(long, default_value_t = 0)]
        cid_version: u8,
        file: PathBuf,
    },
    /// Ask the running server for the payload store and the IPFS replication outbox
    /// (depth, failures, replicated); prints JSON.
    Status {
        /// The server's address.
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        url: String,
        /// The server's data dir (its secret mints the request's token).
        #[arg(long, env = "MEDLEDGER_DATA_DIR", default_value = "medledger-data")]
        data_dir: PathBuf,
    },
}

#[derive(Args)]
struct ClusterTarget {
    /// Any node's public address.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// A node's data dir (its JWT secret mints the request's admin token).
    #[arg(long, env = "MEDLEDGER_DATA_DIR", default_value = "medledger-data")]
    data_dir: PathBuf,
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Re-wrap every data key under a new master key (a file), online; the old master
    /// key file is replaced and nothing stays wrapped under it.
    Rotate(ClusterTarget),
    /// Replace the JWT secret; tokens signed with the old one stay accepted for
    /// --grace-seconds (at most a week). Mint new tokens with `medledger token` afterwards.
    RotateJwt {
        #[command(flatten)]
        target: ClusterTarget,
        #[arg(long, default_value_t = 86_400)]
        grace_seconds: u64,
    },
}

#[derive(Subcommand)]
enum ClusterCommand {
    /// The cluster as the node sees it: leader, term, nodes, roles, lag (JSON).
    Status(ClusterTarget),
    /// Add a node as a learner; returns once it has caught up (by snapshot, then log).
    /// Start it first with a cluster file that lists it (and the same secret).
    AddLearner {
        #[command(flatten)]
        target: ClusterTarget,
        #[arg(long)]
        id: u64,
        /// Its node-to-node address.
        #[arg(long)]
        raft: std::net::SocketAddr,
        /// Its public address.
        #[arg(long)]
        http: std::net::SocketAddr,
    },
    /// Make a learner a voter.
    Promote {
        #[command(flatten)]
        target: ClusterTarget,
        #[arg(long)]
        id: u64,
    },
    /// Remove a node from the voters and the cluster.
    Remove {
        #[command(flatten)]
        target: ClusterTarget,
        #[arg(long)]
        id: u64,
    },
    /// Hand the leadership to another voter (before stopping the leader's machine);
    /// returns once it leads. Writes pause for the handover.
    TransferLeader {
        #[command(flatten)]
        target: ClusterTarget,
        #[arg(long)]
        id: u64,
    },
}

#[derive(Subcommand)]
enum PayloadsCommand {
    /// Unpin every payload and destroy every key no record version in the ledger names
    /// (orphans of a crash between a payload's store and its record's commit, or of a
    /// refused submission). Refuses to run while a server holds the data dir (the ledger
    /// is locked); `serve` does the same at start. Prints one JSON object with counts.
    Reconcile {
        #[arg(long, env = "MEDLEDGER_DATA_DIR", default_value = "medledger-data")]
        data_dir: PathBuf,
        /// The master key that wraps payload keys; default DATA_DIR/payloads/master.key.
        #[arg(long, env = "MEDLEDGER_MASTER_KEY")]
        master_key: Option<PathBuf>,
        /// The Kubo node the server replicates to: the unpins are queued for it.
        #[arg(long, env = "MEDLEDGER_IPFS_API")]
        ipfs_api: Option<String>,
    },
}

#[derive(Subcommand)]
enum ProofCommand {
    /// Check a tx proof (`GET /v1/tx/{id}/proof`), a consistency proof with its two
    /// checkpoints (`GET /v1/checkpoint/consistency`) or a checkpoint, against the
    /// server's public key. Exit 0 when it verifies, 1 with the reason when not.
    Verify {
        /// The checkpoint public key: 64 hex digits, the JSON of `GET /v1/checkpoint/key`,
        /// or a file holding either.
        #[arg(long)]
        key: String,
        /// The proof document (JSON).
        file: PathBuf,
    },
}

#[derive(Subcommand)]
enum Bench {
    /// Durable ingest through the library API; prints one JSON object.
    Ingest(IngestArgs),
    /// Generate a ledger of realistic events, rebuild the views with each backend and time
    /// patient-timeline pages; prints one JSON object, backends side by side.
    Rebuild(RebuildArgs),
    /// Durable `put`s into the embedded payload store from concurrent callers; prints one
    /// JSON object with payloads/s and fsyncs per payload.
    Payloads(PayloadsBenchArgs),
}

#[derive(Args)]
struct PayloadsBenchArgs {
    /// The store goes in DATA_DIR/bench-payloads (replaced).
    #[arg(long, env = "MEDLEDGER_DATA_DIR", default_value = "medledger-data")]
    data_dir: PathBuf,
    /// Payloads to store.
    #[arg(long, default_value_t = 100_000)]
    payloads: u64,
    /// Plaintext bytes of each payload.
    #[arg(long, default_value_t = 4096)]
    payload_bytes: usize,
    /// Concurrent callers, each waiting for its `put` before the next.
    #[arg(long, default_value_t = 64)]
    callers: usize,
}

#[derive(Args)]
struct ServeArgs {
    /// A TOML file of settings (keys are these flags' names, e.g. `listen`,
    /// `batch_timeout_ms`); flags and environment variables override it.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    #[arg(long, env = "MEDLEDGER_DATA_DIR", default_value = "medledger-data")]
    data_dir: PathBuf,
    /// Address to listen on (loopback by default).
    #[arg(long, env = "MEDLEDGER_LISTEN", default_value = "127.0.0.1:8080")]
    listen: std::net::SocketAddr,
    /// The view store.
    #[arg(long, env = "MEDLEDGER_VIEW_BACKEND", value_enum, default_value_t = BackendArg::Rocksdb)]
    backend: BackendArg,
    /// RS256: check bearer tokens with this PEM public key instead of the data dir's
    /// HS256 secret.
    #[arg(long, env = "MEDLEDGER_JWT_PUBLIC_KEY", conflicts_with = "jwks_file")]
    jwt_public_key: Option<PathBuf>,
    /// Check bearer tokens with your identity provider's signing keys: a JWKS document
    /// (RS256/384/512, PS256/384/512, ES256, ES384, EdDSA keys, chosen by the token's
    /// `kid`). Re-read on SIGHUP and every `--jwks-refresh-secs`; a file that does not
    /// parse leaves the keys as they were.
    #[arg(long, env = "MEDLEDGER_JWKS_FILE")]
    jwks_file: Option<PathBuf>,
    /// How often the JWKS file is looked at for a change (seconds).
    #[arg(long, env = "MEDLEDGER_JWKS_REFRESH_SECS", default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    jwks_refresh_secs: u64,
    /// The claim holding the caller's id: a name, or a dotted path into nested claims.
    #[arg(long, env = "MEDLEDGER_JWT_SUBJECT_CLAIM", default_value = "sub", value_parser = claim_value)]
    jwt_subject_claim: String,
    /// The claim holding the caller's role (`patient`, `clinician`, `auditor`, `admin`):
    /// a string, or an array with exactly one of them (Keycloak: `realm_access.roles`).
    #[arg(long, env = "MEDLEDGER_JWT_ROLE_CLAIM", default_value = "role", value_parser = claim_value)]
    jwt_role_claim: String,
    /// The claim holding a clinician's hospital id.
    #[arg(long, env = "MEDLEDGER_JWT_HOSPITAL_CLAIM", default_value = "hospital", value_parser = claim_value)]
    jwt_hospital_claim: String,
    /// Clock difference allowed between the identity provider and this server for
    /// `exp`, `nbf` and `iat` (seconds).
    #[arg(long, env = "MEDLEDGER_JWT_CLOCK_SKEW_SECS", default_value_t = medledger::api::auth::CLOCK_SKEW_SECS_DEFAULT,
          value_parser = clap::value_parser!(u64).range(0..=medledger::api::auth::CLOCK_SKEW_SECS_MAX))]
    jwt_clock_skew_secs: u64,
    /// The longest a bearer token may live (`exp - iat`, seconds); tokens must then carry
    /// `iat`. Unset: any lifetime.
    #[arg(long, env = "MEDLEDGER_JWT_MAX_LIFETIME_SECS",
          value_parser = clap::value_parser!(u64).range(60..=medledger::api::auth::TOKEN_LIFETIME_SECS_MAX))]
    jwt_max_lifetime_secs: Option<u64>,
    /// The `iss` every bearer token must carry (your identity provider's issuer URL, e.g.
    /// Keycloak's `https://HOST/realms/REALM`). Unset: not checked.
    #[arg(long, env = "MEDLEDGER_JWT_ISSUER", value_parser = claim_value)]
    jwt_issuer: Option<String>,
    /// A value every bearer token's `aud` must hold (the client id your identity provider
    /// issues tokens for). Unset: `aud` is not checked.
    #[arg(long, env = "MEDLEDGER_JWT_AUDIENCE", value_parser = claim_value)]
    jwt_audience: Option<String>,
    /// Serve HTTPS with this certificate chain (PEM, the server's certificate first);
    /// needs `--tls-key`. Without it: plain HTTP (loopback by default).
    #[arg(long, env = "MEDLEDGER_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The private key of `--tls-cert` (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "MEDLEDGER_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Reads of clinical content on the ledger: `sync` answers once the read's access
    /// event is durable, `async` once it is queued (lost if the process dies within
    /// BatchTimeout plus one block's fsync), `off` records none.
    #[arg(long, env = "MEDLEDGER_AUDIT_READS", value_enum, default_value_t = medledger::api::audit::AuditReads::Sync)]
    audit_reads: medledger::api::audit::AuditReads,
    /// HTTP worker threads (0: one per core).
    #[arg(long, env = "MEDLEDGER_WORKERS", default_value_t = 0)]
    workers: usize,
    /// Requests per second per client address (burst: twice that); 0 turns the limit
    /// off (benchmarks). Over the limit: 429 with Retry-After.
    #[arg(long, env = "MEDLEDGER_RATE_LIMIT_PER_SEC", default_value_t = medledger::serve::RATE_LIMIT_PER_SEC_DEFAULT)]
    rate_limit_per_sec: u32,
    /// Free space (MiB) kept on the data dir's disk for the views' flushes and recovery:
    /// below it writes answer 507 `storage_full` (nothing written) until space is freed.
    /// 0 turns the reserve off.
    #[arg(long, env = "MEDLEDGER_DISK_RESERVE_MIB", default_value_t = medledger::disk::RESERVE_BYTES_DEFAULT >> 20,
          value_parser = clap::value_parser!(u64).range(0..=medledger::disk::RESERVE_MIB_MAX))]
    disk_reserve_mib: u64,
    /// Chunk workers uploading a payload's blocks at once.
    #[arg(long, env = "IPFS_UPLOAD_CONCURRENCY", default_value_t = 4)]
    ipfs_upload_concurrency: usize,
    /// Blocks fetched ahead while a payload is read.
    #[arg(long, env = "IPFS_DOWNLOAD_CONCURRENCY", default_value_t = 6)]
    ipfs_download_concurrency: usize,
    /// A Kubo node's RPC API (e.g. http://127.0.0.1:5001) to replicate encrypted payloads
    /// to, from a durable outbox; without it payloads stay in the embedded store only.
    #[arg(long, env = "MEDLEDGER_IPFS_API")]
    ipfs_api: Option<String>,
    /// CID version of new payloads: 0 (Kubo's default) or 1 (raw leaves).
    #[arg(long, env = "MEDLEDGER_CID_VERSION", default_value_t = 0)]
    cid_version: u8,
    /// The master key that wraps payload keys (32 bytes, mode 0600); default
    /// DATA_DIR/payloads/master.key, created on first start.
    #[arg(long, env = "MEDLEDGER_MASTER_KEY")]
    master_key: Option<PathBuf>,
    /// A command whose standard output is the master key in 64 hex digits (a KMS or HSM
    /// client), run with `sh -c`. Or give the key itself in the environment variable
    /// MEDLEDGER_MASTER_KEY_HEX. At most one of the three ways.
    #[arg(long, env = "MEDLEDGER_MASTER_KEY_COMMAND")]
    master_key_command: Option<String>,
    /// Export traces over OTLP/HTTP (protobuf) to --otlp-endpoint: a span per request,
    /// with the wait for the block's fsync inside (`true`/`false`, `1`/`0`).
    #[arg(long, env = "OTEL_ENABLED", value_parser = clap::builder::BoolishValueParser::new(), default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    otel_enabled: bool,
    /// The OTLP collector's base URL; traces go to its `/v1/traces`.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT", default_value = medledger::telemetry::OTLP_ENDPOINT_DEFAULT)]
    otlp_endpoint: String,
    /// Submissions waiting to be cut, at most; beyond it submissions get 503 busy.
    #[arg(long, env = "MEDLEDGER_QUEUE_CAPACITY", default_value_t = 65_536)]
    queue_capacity: usize,
    /// Run as a node of the cluster this TOML file describes (docs/CLUSTER.md); the node
    /// listens on its `http` address from the file. Needs --node-id.
    #[arg(
        long,
        env = "MEDLEDGER_CLUSTER",
        value_name = "FILE",
        requires = "node_id"
    )]
    cluster: Option<PathBuf>,
    /// This node's id in the --cluster file.
    #[arg(long, env = "MEDLEDGER_NODE_ID", requires = "cluster")]
    node_id: Option<u64>,
    #[command(flatten)]
    cutter: CutterArgs,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum BackendArg {
    /// RocksDB, one column family per view (the default).
    Rocksdb,
    /// sled, one tree with the view as key prefix.
    Sled,
}

impl BackendArg {
    fn backend(self) -> Backend {
        match self {
            BackendArg::Rocksdb => Backend::RocksDb,
            BackendArg::Sled => Backend::Sled,
        }
    }
}

#[derive(Args)]
struct RebuildArgs {
    /// The benchmark's ledger and views go in DATA_DIR/bench-rebuild (replaced).
    #[arg(long, env = "MEDLEDGER_DATA_DIR", default_value = "medledger-data")]
    data_dir: PathBuf,
    /// Events to generate (at most 100,000,000).
    #[arg(long, default_value_t = 1_000_000)]
    events: u64,
    /// Seed of the fixture generator.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Backends to rebuild, in order.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [BackendArg::Rocksdb, BackendArg::Sled])]
    backends: Vec<BackendArg>,
    /// Patient-timeline pages (50 records) timed on each rebuilt store.
    #[arg(long, default_value_t = 20_000)]
    queries: usize,
}

#[derive(Clone, Copy, ValueEnum)]
enum Policy {
    /// Hyperledger Fabric exactly: a batch waits for the count, the bytes or the timer.
    Strict,
    /// Also cut whenever the writer is idle (group commit): a lone submission waits one
    /// fsync, not the timer.
    Eager,
}

#[derive(Args)]
struct IngestArgs {
    #[arg(long, env = "MEDLEDGER_DATA_DIR", default_value = "medledger-data")]
    data_dir: PathBuf,
    /// Events to commit.
    #[arg(long, default_value_t = 1_000_000)]
    events: u64,
    /// Encoded size of each event in bytes (metadata and payload reference, no payload).
    #[arg(long, default_value_t = 256)]
    record_bytes: usize,
    /// Concurrent submitters, each waiting for its receipt before the next submission.
    #[arg(long, default_value_t = 2048)]
    submitters: usize,
    #[command(flatten)]
    cutter: CutterArgs,
}

/// The block cutter's knobs (Hyperledger Fabric's orderer settings).
#[derive(Args)]
struct CutterArgs {
    /// BatchTimeout: a pending batch is cut this long after it started. Fabric's default
    /// is 2 s; ours is 10 ms because every submitter waits for its block.
    #[arg(long, env = "MEDLEDGER_BATCH_TIMEOUT_MS", default_value_t = 10)]
    batch_timeout_ms: u64,
    /// MaxMessageCount: a batch is cut when it holds this many transactions.
    #[arg(long, env = "MEDLEDGER_MAX_MESSAGE_COUNT", default_value_t = 500)]
    max_message_count: u32,
    /// PreferredMaxBytes: a batch is cut before it would grow past this size; a larger
    /// transaction goes alone in its own block.
    #[arg(long, env = "MEDLEDGER_PREFERRED_MAX_BYTES", default_value_t = 2 * 1024 * 1024)]
    preferred_max_bytes: u32,
    /// AbsoluteMaxBytes: a larger transaction is rejected at ingress.
    #[arg(long, env = "MEDLEDGER_ABSOLUTE_MAX_BYTES", default_value_t = 10 * 1024 * 1024)]
    absolute_max_bytes: u32,
    /// Cut policy.
    #[arg(long, env = "MEDLEDGER_CUT_POLICY", value_enum, default_value_t = Policy::Eager)]
    cut_policy: Policy,
    /// Blocks cut but not yet durable, at most.
    #[arg(long, env = "MEDLEDGER_MAX_INFLIGHT_BLOCKS", default_value_t = 4)]
    max_inflight_blocks: usize,
}

impl CutterArgs {
    fn config(&self) -> CutterConfig {
        CutterConfig {
            batch_timeout: Duration::from_millis(self.batch_timeout_ms),
            max_message_count: self.max_message_count,
            preferred_max_bytes: self.preferred_max_bytes,
            absolute_max_bytes: self.absolute_max_bytes,
            policy: match self.cut_policy {
                Policy::Strict => CutPolicy::Strict,
                Policy::Eager => CutPolicy::Eager,
            },
        }
    }
}

/// An issuer or audience setting: 1 to 1,024 bytes of visible ASCII (URLs and client
/// ids), so a stray space or newline in a config file is an error, not a silent mismatch.
fn claim_value(text: &str) -> Result<String, String> {
    if (1..=1024).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_graphic()) {
        Ok(text.to_owned())
    } else {
        Err("must be 1 to 1,024 visible ASCII characters (no spaces)".into())
    }
}

fn main() -> ExitCode {
    // The config file is the lowest layer under flags and environment variables: it is
    // applied (as environment variables) before the command line is parsed.
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args.get(1).is_some_and(|a| a == "serve") {
        let cmd = Cli::command();
        let serve = cmd.find_subcommand("serve").expect("the serve subcommand");
        if let Err(e) = cli::config_file::apply(serve, &args) {
            eprintln!("medledger: {e}");
            return ExitCode::from(2);
        }
    }
    let cli = Cli::parse();
    let otlp_endpoint = match &cli.command {
        Command::Serve(a) if a.otel_enabled => Some(a.otlp_endpoint.as_str()),
        _ => None,
    };
    let telemetry = match medledger::telemetry::init(otlp_endpoint) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("medledger: {e}");
            return ExitCode::from(2);
        }
    };
    let mut stdout = std::io::stdout().lock();
    let code = match cli.command {
        Command::Verify {
            data_dir,
            views: false,
            ..
        } => cli::verify::run(&data_dir, &mut stdout),
        Command::Verify {
            data_dir,
            views: true,
            backend,
        } => cli::rebuild::run_verify_views(&data_dir, backend.backend(), &mut stdout),
        Command::Serve(a) => {
            let cluster = match (&a.cluster, a.node_id) {
                (Some(file), Some(node_id)) => {
                    match medledger::cluster::ClusterConfig::load(file)
                        .and_then(|config| config.node(node_id).map(|n| (config, n)))
                    {
                        Ok((config, _)) => {
                            Some(medledger::serve::ClusterSettings { config, node_id })
                        }
                        Err(e) => {
                            eprintln!("medledger: {e}");
                            return ExitCode::from(2);
                        }
                    }
                }
                _ => None,
            };
            let listen = match &cluster {
                Some(c) => c.config.nodes[&c.node_id].http,
                None => a.listen,
            };
            let config = medledger::serve::ServeConfig {
                data_dir: a.data_dir,
                listen,
                backend: a.backend.backend(),
                orderer: medledger::orderer::OrdererConfig {
                    cutter: a.cutter.config(),
                    inflight_blocks_max: a.cutter.max_inflight_blocks,
                    queue_capacity: a.queue_capacity,
                },
                jwt_public_key: a.jwt_public_key,
                jwks_file: a.jwks_file,
                jwks_refresh: std::time::Duration::from_secs(a.jwks_refresh_secs),
                jwt_rules: medledger::api::auth::TokenRules {
                    issuer: a.jwt_issuer,
                    audience: a.jwt_audience,
                    claims: medledger::api::auth::ClaimPaths {
                        subject: a.jwt_subject_claim,
                        role: a.jwt_role_claim,
                        hospital: a.jwt_hospital_claim,
                    },
                    clock_skew_secs: a.jwt_clock_skew_secs,
                    max_lifetime_secs: a.jwt_max_lifetime_secs,
                },
                workers: a.workers,
                rate_limit_per_sec: a.rate_limit_per_sec,
                disk_reserve_bytes: a.disk_reserve_mib << 20,
                audit_reads: a.audit_reads,
                tls: match (a.tls_cert, a.tls_key) {
                    (Some(cert), Some(key)) => Some(medledger::serve::TlsFiles { cert, key }),
                    _ => None,
                },
                body_grace: medledger::api::slow_body::BODY_GRACE,
                payloads: medledger::serve::PayloadSettings {
                    upload_concurrency: a.ipfs_upload_concurrency,
                    download_concurrency: a.ipfs_download_concurrency,
                    cid_version: a.cid_version,
                    ipfs_api: a.ipfs_api,
                    master_key: a.master_key,
                    master_key_hex: match std::env::var("MEDLEDGER_MASTER_KEY_HEX") {
                        Ok(text) => match medledger::serve::master_key_from_hex(&text) {
                            Ok(seed) => Some(seed),
                            Err(e) => {
                                eprintln!("medledger: MEDLEDGER_MASTER_KEY_HEX: {e}");
                                return ExitCode::from(2);
                            }
                        },
                        Err(_) => None,
                    },
                    master_key_command: a.master_key_command,
                },
                cluster,
            };
            match medledger::serve::run(config) {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("medledger: {e}");
                    2
                }
            }
        }
        Command::Token {
            data_dir,
            role,
            sub,
            hospital,
            ttl_hours,
        } => cli::token::run(&data_dir, &role, &sub, hospital, ttl_hours, &mut stdout),
        Command::Ipfs {
            ipfs: IpfsCommand::Add {
                cid_version, file, ..
            },
        } => cli::ipfs::run_only_hash(&file, cid_version, &mut stdout),
        Command::Ipfs {
            ipfs: IpfsCommand::Status { url, data_dir },
        } => cli::ipfs::run_status(&url, &data_dir, &mut stdout),
        Command::Payloads {
            payloads:
                PayloadsCommand::Reconcile {
                    data_dir,
                    master_key,
                    ipfs_api,
                },
        } => {
            let params = cli::payloads::ReconcileParams {
                data_dir,
                master_key,
                ipfs_api,
            };
            cli::payloads::run_reconcile(&params, &mut stdout)
        }
        Command::Bench {
            bench: Bench::Payloads(a),
        } => {
            let params = cli::bench_payloads::PayloadsBenchParams {
                data_dir: a.data_dir,
                payloads: a.payloads,
                payload_bytes: a.payload_bytes,
                callers: a.callers,
            };
            match cli::bench_payloads::run(&params) {
                Ok(report) => {
                    println!("{report}");
                    0
                }
                Err(e) => {
                    eprintln!("medledger: {e}");
                    2
                }
            }
        }
        Command::Proof {
            proof: ProofCommand::Verify { key, file },
        } => cli::proof::run_verify(&key, &file, &mut stdout),
        Command::Fixtures { events, seed } => cli::fixtures::run(events, seed, &mut stdout),
        Command::Rebuild { data_dir, backend } => {
            cli::rebuild::run_rebuild(&data_dir, backend.backend(), &mut stdout)
        }
        Command::Bench {
            bench: Bench::Rebuild(a),
        } => {
            let params = cli::bench_rebuild::RebuildParams {
                data_dir: a.data_dir,
                events: a.events,
                seed: a.seed,
                backends: a.backends.iter().map(|b| b.backend()).collect(),
                queries: a.queries,
            };
            match cli::bench_rebuild::run(&params) {
                Ok(report) => {
                    println!("{report}");
                    0
                }
                Err(e) => {
                    eprintln!("medledger: {e}");
                    2
                }
            }
        }
        Command::Blocks {
            data_dir,
            from,
            limit,
        } => cli::blocks::run(&data_dir, from, limit, &mut stdout),
        Command::Keys {
            keys: KeysCommand::Rotate(t),
        } => cli::keys::run_rotate(
            &t.url,
            &t.data_dir,
            cli::keys::Rotate::MasterKey,
            &mut stdout,
        ),
        Command::Keys {
            keys:
                KeysCommand::RotateJwt {
                    target,
                    grace_seconds,
                },
        } => cli::keys::run_rotate(
            &target.url,
            &target.data_dir,
            cli::keys::Rotate::Jwt { grace_seconds },
            &mut stdout,
        ),
        Command::Cluster { cluster } => {
            use medledger::cli::cluster::{run, Action};
            let (t, action) = match cluster {
                ClusterCommand::Status(t) => (t, Action::Status),
                ClusterCommand::AddLearner {
                    target,
                    id,
                    raft,
                    http,
                } => (target, Action::AddLearner { id, raft, http }),
                ClusterCommand::Promote { target, id } => (target, Action::Promote(id)),
                ClusterCommand::Remove { target, id } => (target, Action::Remove(id)),
                ClusterCommand::TransferLeader { target, id } => {
                    (target, Action::TransferLeader(id))
                }
            };
            run(&t.url, &t.data_dir, action, &mut stdout)
        }
        Command::Backup { data_dir, to } => cli::backup::run_backup(&data_dir, &to, &mut stdout),
        Command::Restore { from, data_dir } => {
            cli::backup::run_restore(&from, &data_dir, &mut stdout)
        }
        Command::Bench {
            bench: Bench::Ingest(a),
        } => {
            let config = a.cutter.config();
            if let Err(e) = config.validate() {
                eprintln!("medledger: {e}");
                return ExitCode::from(2);
            }
            let params = cli::bench_ingest::IngestParams {
                data_dir: a.data_dir,
                events: a.events,
                record_bytes: a.record_bytes,
                submitters: a.submitters,
                cutter: config,
                inflight_blocks_max: a.cutter.max_inflight_blocks,
            };
            match cli::bench_ingest::run(&params) {
                Ok(report) => {
                    println!("{report}");
                    0
                }
                Err(e) => {
                    eprintln!("medledger: {e}");
                    2
                }
            }
        }
    };
    telemetry.shutdown();
    ExitCode::from(u8::try_from(code).unwrap_or(2))
}
