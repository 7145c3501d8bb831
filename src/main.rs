//! The `medledger` command.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use medledger::cli;
use medledger::orderer::{CutPolicy, CutterConfig};

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
    Verify {
        #[arg(long, env = "MEDLEDGER_DATA_DIR", default_value = "medledger-data")]
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
    /// Benchmarks.
    Bench {
        #[command(subcommand)]
        bench: Bench,
    },
}

#[derive(Subcommand)]
enum Bench {
    /// Durable ingest through the library API; prints one JSON object.
    Ingest(IngestArgs),
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

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let mut stdout = std::io::stdout().lock();
    let code = match cli.command {
        Command::Verify { data_dir } => cli::verify::run(&data_dir, &mut stdout),
        Command::Blocks {
            data_dir,
            from,
            limit,
        } => cli::blocks::run(&data_dir, from, limit, &mut stdout),
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
                max_inflight_blocks: a.cutter.max_inflight_blocks,
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
    ExitCode::from(u8::try_from(code).unwrap_or(2))
}
