//! The `medledger` subcommands, run in-process: `blocks` prints headers as JSON lines
//! within its bounds, `verify` reports a recovered torn tail, `bench ingest` commits
//! exactly what it reports and leaves a ledger that verifies.

use std::path::Path;
use std::time::Duration;

use medledger::cli;
use medledger::cli::bench_ingest::IngestParams;
use medledger::orderer::CutterConfig;

fn ingest(dir: &Path, events: u64) -> serde_json::Value {
    cli::bench_ingest::run(&IngestParams {
        data_dir: dir.to_path_buf(),
        events,
        record_bytes: 300,
        submitters: 16,
        cutter: CutterConfig {
            batch_timeout: Duration::from_millis(5),
            max_message_count: 40,
            ..CutterConfig::default()
        },
        inflight_blocks_max: 4,
    })
    .unwrap()
}

fn blocks(dir: &Path, from: u64, limit: u64) -> (i32, Vec<serde_json::Value>) {
    let mut out = Vec::new();
    let code = cli::blocks::run(dir, from, limit, &mut out);
    let lines = String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (code, lines)
}

#[test]
fn bench_ingest_commits_what_it_reports_and_the_ledger_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let report = ingest(dir.path(), 1_000);
    assert_eq!(report["events"], 1_000);
    assert_eq!(report["record_bytes"], 300);
    let blocks_made = report["blocks"].as_u64().unwrap();
    // 1,000 events in blocks of at most 40.
    assert!(blocks_made >= 25, "{report}");
    for key in [
        "events_per_sec",
        "seconds",
        "fsyncs",
        "p50_ms",
        "p99_ms",
        "cpu_seconds",
    ] {
        assert!(report[key].is_number(), "{key} missing: {report}");
    }
    assert!(report["fsyncs"].as_u64().unwrap() >= blocks_made);

    let (code, headers) = blocks(dir.path(), 0, 100_000);
    assert_eq!(code, 0);
    assert_eq!(
        headers.len() as u64,
        blocks_made + 1,
        "genesis plus the ingest's blocks"
    );
    assert_eq!(headers[0]["cut_reason"], "genesis");
    let txs: u64 = headers
        .iter()
        .map(|h| h["tx_count"].as_u64().unwrap())
        .sum();
    assert_eq!(txs, 1_000);
    for pair in headers.windows(2) {
        assert_eq!(pair[1]["prev_hash"], pair[0]["hash"]);
        assert_eq!(
            pair[1]["number"].as_u64().unwrap(),
            pair[0]["number"].as_u64().unwrap() + 1
        );
    }

    let mut out = Vec::new();
    assert_eq!(cli::verify::run(dir.path(), &mut out), 0);
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["verify"]["transactions"], 1_000);
}

#[test]
fn blocks_honours_from_and_limit_and_refuses_a_huge_limit() {
    let dir = tempfile::tempdir().unwrap();
    ingest(dir.path(), 200);
    let (code, page) = blocks(dir.path(), 2, 3);
    assert_eq!(code, 0);
    let numbers: Vec<u64> = page.iter().map(|h| h["number"].as_u64().unwrap()).collect();
    assert_eq!(numbers, vec![2, 3, 4]);
    let (code, past_end) = blocks(dir.path(), 1_000_000, 10);
    assert_eq!((code, past_end.len()), (0, 0));
    let (code, err) = blocks(dir.path(), 0, cli::blocks::LIMIT_MAX + 1);
    assert_eq!(code, 2);
    assert!(err[0]["error"].as_str().unwrap().contains("--limit"));
}

#[test]
fn verify_reports_a_recovered_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    ingest(dir.path(), 100);
    // An unacknowledged write that tore: garbage after the last frame.
    let seg = dir.path().join("blocks").join("seg-000000.log");
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes.extend_from_slice(&[0x55; 37]);
    std::fs::write(&seg, &bytes).unwrap();
    let mut out = Vec::new();
    assert_eq!(cli::verify::run(dir.path(), &mut out), 0);
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["recovery"]["truncated"]["bytes"], 37, "{v}");
    assert_eq!(v["verify"]["transactions"], 100);
}

#[test]
fn bench_ingest_refuses_out_of_range_parameters() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = IngestParams {
        data_dir: dir.path().to_path_buf(),
        events: 0,
        record_bytes: 300,
        submitters: 1,
        cutter: CutterConfig::default(),
        inflight_blocks_max: 4,
    };
    assert!(cli::bench_ingest::run(&p).unwrap_err().contains("--events"));
    p.events = 10;
    p.submitters = 0;
    assert!(cli::bench_ingest::run(&p)
        .unwrap_err()
        .contains("--submitters"));
}

/// `fixtures/sample/events-seed1-250.ndjson` is what `medledger fixtures --events 250
/// --seed 1` prints, byte for byte. After a deliberate change of the generator, regenerate
/// it with `MEDLEDGER_BLESS=1 cargo test --test cli_commands` and say why in the commit.
#[test]
fn the_committed_fixture_sample_is_what_the_generator_prints() {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/sample/events-seed1-250.ndjson");
    let mut out = Vec::new();
    assert_eq!(medledger::cli::fixtures::run(250, 1, &mut out), 0);
    if std::env::var_os("MEDLEDGER_BLESS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &out).unwrap();
    }
    let committed = std::fs::read(&path).expect("the committed sample");
    assert!(
        out == committed,
        "the generator no longer prints the committed sample"
    );
    let lines: Vec<&str> = std::str::from_utf8(&out).unwrap().lines().collect();
    assert_eq!(lines.len(), 250);
    for line in lines {
        let env: medledger_chaincode::Envelope = serde_json::from_str(line).unwrap();
        env.check_limits().unwrap();
    }
}

/// `medledger ipfs add --only-hash` prints Kubo's CIDs (goldens from `ipfs add
/// --only-hash`, issue 5), for v0 and v1 (raw leaves); a bad version is refused.
#[test]
fn ipfs_add_only_hash_prints_kubos_cids() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("hello.txt");
    std::fs::write(&file, b"hello world\n").unwrap();
    let run = |version: &str| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_medledger"))
            .args(["ipfs", "add", "--only-hash", "--cid-version", version])
            .arg(&file)
            .output()
            .unwrap();
        (out.status.code(), String::from_utf8(out.stdout).unwrap())
    };
    assert_eq!(
        run("0"),
        (
            Some(0),
            "QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5o\n".into()
        )
    );
    assert_eq!(
        run("1"),
        (
            Some(0),
            "bafkreifjjcie6lypi6ny7amxnfftagclbuxndqonfipmb64f2km2devei4\n".into()
        )
    );
    assert_eq!(run("2").0, Some(2));
}

/// A ledger open in one process is refused to every other, before anything is read or
/// recovered, with a message that says so: here `verify` and `rebuild` run as child
/// processes while this one holds it, and a second open in this process is refused too.
#[test]
fn a_ledger_open_elsewhere_is_refused_with_a_clear_error() {
    use medledger_storage::{Ledger, LedgerOptions, StorageError};

    let dir = tempfile::tempdir().unwrap();
    ingest(dir.path(), 50);
    let (ledger, _) = Ledger::open(dir.path(), LedgerOptions::default()).unwrap();
    let height = ledger.tip().height;
    for args in [&["verify"][..], &["rebuild"][..]] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_medledger"))
            .args(args)
            .arg("--data-dir")
            .arg(dir.path())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {text}");
        assert!(
            text.contains("the ledger is already open"),
            "{args:?}: {text}"
        );
        assert!(text.contains("LOCK"), "{args:?}: {text}");
    }
    match Ledger::open(dir.path(), LedgerOptions::default()) {
        Err(StorageError::InUse { path }) => assert!(path.ends_with("LOCK"), "{path}"),
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("a second open succeeded"),
    }
    // Nothing changed; once released, the ledger opens again.
    assert_eq!(ledger.tip().height, height);
    drop(ledger);
    let (ledger, _) = Ledger::open(dir.path(), LedgerOptions::default()).unwrap();
    assert_eq!(ledger.tip().height, height);
}
