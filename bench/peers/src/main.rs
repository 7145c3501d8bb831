//! `peers-bench`: runs the peers alone, printing one JSON line for the machine, one for
//! the parameters, then one per (peer, body size, workload).
//!
//! For each peer and body size: a fresh peer ingests N records one per write call; a
//! second fresh peer ingests them `--batch` per write call, then serves timeline pages,
//! the 80/20 mixed run and the reindex. Each peer is stopped and its data removed before
//! the next starts, so the peers never compete for the 2 cores.
//!
//! `peers-bench search --records DIR --queries FILE`: PostgreSQL's full-text search over
//! the records of a medledger bulk export (bench/search.sh runs it beside medledger's).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use medledger_bench_peers::peers::postgres::{ChainMode, Postgres};
use medledger_bench_peers::{
    measure_machine, search, workload, Figures, GenConfig, IngestOptions, MixedOptions, Peer,
    PeerKind, PeerRecord, ReadOptions, RecordGen, Result,
};

#[derive(Parser, Debug)]
#[command(
    about = "PostgreSQL, SQLite, Redis and NATS JetStream under medledger's workloads",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    args: Args,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// PostgreSQL's full-text search (a GIN index over the metadata's words) on the
    /// records of a medledger bulk export, one run per class of queries.
    Search(SearchArgs),
}

#[derive(clap::Args, Debug, serde::Serialize)]
struct SearchArgs {
    /// The export's NDJSON files (`*.ndjson`, as `GET /v1/exports/{id}/files/{type}`
    /// serves them).
    #[arg(long, value_name = "DIR")]
    records: PathBuf,
    /// One query a line: `<class><TAB><words>` (the words are ANDed).
    #[arg(long, value_name = "FILE")]
    queries: PathBuf,
    /// Concurrent clients (one thread and connection each).
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// Seconds each class runs with `--clients` clients.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// Seconds each class then runs with one client (latency at low load); 0 skips it.
    #[arg(long, default_value_t = 10)]
    low_load_seconds: u64,
    /// Hits per search (the newest first).
    #[arg(long, default_value_t = 50)]
    limit: usize,
    /// Where PostgreSQL's temp data dir goes (the disk being measured).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Measure the GIN index alone: skip the second pass with a btree on `created_at`.
    #[arg(long)]
    gin_only: bool,
}

#[derive(clap::Args, Debug, serde::Serialize)]
struct Args {
    /// Records ingested one per write call (a fresh peer per body size).
    #[arg(long, default_value_t = 10_000)]
    records: usize,
    /// Records ingested `--batch` per write call (another fresh peer), then read.
    #[arg(long, default_value_t = 100_000)]
    batched_records: usize,
    /// Concurrent clients (one thread and connection each).
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// Body sizes in bytes, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = [1024usize, 256])]
    body_bytes: Vec<usize>,
    /// Records per write call in the batched ingest.
    #[arg(long, default_value_t = 50)]
    batch: usize,
    /// Timeline pages read after the batched ingest.
    #[arg(long, default_value_t = 20_000)]
    pages: usize,
    /// Records per timeline page.
    #[arg(long, default_value_t = 50)]
    page_limit: usize,
    /// Operations in the mixed 80/20 run.
    #[arg(long, default_value_t = 20_000)]
    mixed_operations: usize,
    /// Time limit of the mixed run, seconds.
    #[arg(long, default_value_t = 15)]
    mixed_seconds: u64,
    /// Time limit of the timeline reads, seconds.
    #[arg(long, default_value_t = 15)]
    read_seconds: u64,
    /// Patients the records are spread over.
    #[arg(long, default_value_t = 10_000)]
    patients: u32,
    /// Generator seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Peers to run, comma-separated (postgresql, postgresql-unchained, sqlite, redis,
    /// nats-jetstream).
    #[arg(long, value_delimiter = ',', default_values_t = PeerKind::ALL.map(|k| k.name().to_string()))]
    peers: Vec<String>,
    /// Where the peers' temp data dirs go (the disk being measured).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Write the run's records as medledger `POST /v1/records` bodies
    /// (DIR/records.ndjson, the single-record writes of the first body size) and the
    /// patients whose timelines are read (DIR/patients.txt), then exit: bench/http.sh
    /// sends these, so medledger is loaded with the same records as the peers.
    #[arg(long, value_name = "DIR")]
    requests_out: Option<PathBuf>,
    /// CI smoke mode: 1,000 + 5,000 records, 1,000 pages, 1,000 mixed operations, 16
    /// clients, 256 B only; finishes in well under a minute.
    #[arg(long)]
    quick: bool,
}

impl Args {
    fn apply_quick(&mut self) {
        if self.quick {
            self.records = 1_000;
            self.batched_records = 5_000;
            self.pages = 1_000;
            self.mixed_operations = 1_000;
            self.mixed_seconds = 5;
            self.read_seconds = 5;
            self.patients = 1_000;
            self.clients = self.clients.min(16);
            self.body_bytes = vec![256];
        }
    }
}

fn print(f: &Figures) {
    println!("{}", serde_json::to_string(f).expect("figures serialise"));
}

fn run_peer(kind: PeerKind, args: &Args, body_bytes: usize, base: &std::path::Path) -> Result<()> {
    let mut gen = generator(args, body_bytes);
    let records = gen.take_records(args.records.max(args.batched_records));
    let mixed_writes: Vec<PeerRecord> = gen.take_records(args.mixed_operations / 4 + 1);
    let patients: Vec<String> = (0..args.pages.clamp(1, 100_000))
        .map(|_| gen.patient())
        .collect();

    {
        let single = &records[..args.records];
        let options = IngestOptions {
            clients: args.clients,
            batch: 1,
        };
        let peer = kind.start(base)?;
        print(&peer.ingest(single, &options)?);
    }
    let batched = &records[..args.batched_records];
    let options = IngestOptions {
        clients: args.clients,
        batch: args.batch,
    };
    let peer = kind.start(base)?;
    print(&peer.ingest(batched, &options)?);
    let read = ReadOptions {
        clients: args.clients,
        pages: args.pages,
        limit: args.page_limit,
        seconds_max: args.read_seconds,
    };
    print(&peer.timeline_reads(&patients, &read)?);
    if let Some(f) = peer.summary_reads(&patients, &read)? {
        print(&f);
    }
    let mixed = MixedOptions {
        clients: args.clients,
        operations: args.mixed_operations,
        seconds_max: args.mixed_seconds,
        write_percent: 20,
        limit: args.page_limit,
        seed: args.seed,
    };
    let mut stored = batched.len() as u64;
    for f in peer.mixed(&mixed_writes, &patients, &mixed)? {
        if f.workload == "mixed_write" {
            stored += f.records;
        }
        print(&f);
    }
    if let Some(f) = peer.reindex(stored)? {
        print(&f);
    }
    if let Some(rows) = peer.verify_chain()? {
        let line = serde_json::json!({ "peer": kind.name(), "body_bytes": body_bytes, "chain_verified_rows": rows });
        println!("{line}");
    }
    Ok(())
}

/// The stream `run_peer` draws from for `body_bytes`: its records, then its patients.
fn generator(args: &Args, body_bytes: usize) -> RecordGen {
    RecordGen::new(GenConfig {
        seed: args.seed,
        patients: args.patients,
        body_bytes,
        ..GenConfig::default()
    })
}

/// `--requests-out DIR`: the records and patients of [`run_peer`], for medledger's HTTP run.
fn write_requests(args: &Args, dir: &std::path::Path) -> std::io::Result<()> {
    use std::io::Write;
    let body_bytes = args.body_bytes[0];
    let mut gen = generator(args, body_bytes);
    let records = gen.take_records(args.records.max(args.batched_records));
    let _mixed_writes = gen.take_records(args.mixed_operations / 4 + 1);
    let patients: Vec<String> = (0..args.pages.clamp(1, 100_000))
        .map(|_| gen.patient())
        .collect();
    std::fs::create_dir_all(dir)?;
    let mut out = std::io::BufWriter::new(std::fs::File::create(dir.join("records.ndjson"))?);
    for r in &records[..args.records] {
        writeln!(
            out,
            "{}",
            medledger_bench_peers::record::medledger_request(r)
        )?;
    }
    out.flush()?;
    std::fs::write(dir.join("patients.txt"), patients.join("\n") + "\n")
}

/// `peers-bench search`: PostgreSQL loaded with the export (setup), its GIN index built
/// and timed, each query run once (the hits each answers, for bench/search.sh to check),
/// then each class of queries by `clients` clients and by one; then the same again with a
/// btree on `created_at` beside the GIN index (unless `--gin-only`).
fn run_search(args: &SearchArgs) -> Result<()> {
    let classes = search::read_queries(&args.queries)?;
    search::export_files(&args.records)?; // before PostgreSQL starts: no files, no run
    let base = args.data_dir.clone().unwrap_or_else(std::env::temp_dir);
    println!(
        "{}",
        serde_json::json!({ "machine": measure_machine(&base)? })
    );
    let counts: Vec<_> = classes
        .iter()
        .map(|c| serde_json::json!({ "class": c.name, "queries": c.queries.len() }))
        .collect();
    println!(
        "{}",
        serde_json::json!({ "parameters": args, "query_classes": counts })
    );
    let pg = Postgres::start(&base, ChainMode::Chained)?;
    let load = pg.load_export(&args.records)?;
    println!(
        "{}",
        serde_json::json!({ "peer": pg.name(), "search_load": load })
    );
    let built = workload::build(&pg, "search_index", load.records, || {
        pg.build_search_index().map(Some)
    })?;
    print(&built.expect("the search index is always built"));
    let mut session = pg.session()?;
    for class in &classes {
        for words in &class.queries {
            let hits = session.search(words, args.limit)?.unwrap_or_default();
            let line = serde_json::json!({ "peer": pg.name(), "search_query":
                { "class": class.name, "words": words, "hits": hits.len() } });
            println!("{line}");
        }
    }
    drop(session);
    run_classes(&pg, &classes, args, "gin")?;
    if !args.gin_only {
        let built = workload::build(&pg, "search_time_index", load.records, || {
            pg.build_created_at_index().map(Some)
        })?;
        print(&built.expect("the created_at index is always built"));
        run_classes(&pg, &classes, args, "gin+created_at")?;
    }
    Ok(())
}

/// Each class's plan (its first query's), then each class by `args.clients` clients and
/// by one; `indexes` names the indexes the table has, in every line.
fn run_classes(
    pg: &Postgres,
    classes: &[search::QueryClass],
    args: &SearchArgs,
    indexes: &str,
) -> Result<()> {
    for class in classes {
        let words = &class.queries[0]; // a class holds one query at least (parse_queries)
        let plan = pg.explain_search(words, args.limit)?;
        let line = serde_json::json!({ "peer": pg.name(), "search_plan":
            { "class": class.name, "indexes": indexes, "words": words, "plan": plan } });
        println!("{line}");
    }
    let mut runs = vec![(args.clients, args.seconds)];
    if args.low_load_seconds > 0 && args.clients != 1 {
        runs.push((1, args.low_load_seconds));
    }
    for (clients, seconds) in runs {
        for class in classes {
            let options = ReadOptions {
                clients,
                pages: usize::MAX,
                limit: args.limit,
                seconds_max: seconds,
            };
            if let Some(f) = pg.search_reads(&class.name, &class.queries, &options)? {
                print_search(&class.name, indexes, &f);
            }
        }
    }
    Ok(())
}

/// A search's figures with what bench/search.sh reports beside them: the class, the
/// table's indexes, the hits per search and the server's CPU per search.
fn print_search(class: &str, indexes: &str, f: &Figures) {
    let mut line = serde_json::to_value(f).expect("figures serialise");
    let per_search = |x: f64| (f.operations > 0).then(|| x / f.operations as f64);
    line["class"] = class.into();
    line["indexes"] = indexes.into();
    line["hits_per_search"] = per_search(f.records as f64).into();
    line["server_cpu_us_per_search"] = f
        .server_cpu_seconds
        .and_then(|cpu| per_search(cpu * 1e6))
        .into();
    println!("{line}");
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::Search(search)) = &cli.command {
        return match run_search(search) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("peers-bench search: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let mut args = cli.args;
    args.apply_quick();
    if let Some(dir) = args.requests_out.clone() {
        return match write_requests(&args, &dir) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("peers-bench: writing requests to {}: {e}", dir.display());
                ExitCode::FAILURE
            }
        };
    }
    let base = args.data_dir.clone().unwrap_or_else(std::env::temp_dir);
    let mut kinds = Vec::new();
    for name in &args.peers {
        match PeerKind::parse(name) {
            Some(k) => kinds.push(k),
            None => {
                eprintln!("peers-bench: unknown peer {name:?}");
                return ExitCode::from(2);
            }
        }
    }
    match measure_machine(&base) {
        Ok(m) => println!("{}", serde_json::json!({ "machine": m })),
        Err(e) => {
            eprintln!("peers-bench: measuring the machine: {e}");
            return ExitCode::FAILURE;
        }
    }
    println!("{}", serde_json::json!({ "parameters": &args }));
    for body_bytes in args.body_bytes.clone() {
        for &kind in &kinds {
            if let Err(e) = run_peer(kind, &args, body_bytes, &base) {
                eprintln!("peers-bench: {} ({body_bytes} B): {e}", kind.name());
                return ExitCode::FAILURE;
            }
        }
    }
    ExitCode::SUCCESS
}
