//! schemathesis, a schema-driven fuzzer (installed by scripts/setup-test.sh), against a
//! real `medledger serve`: every operation of `/v1/openapi.json`, with the token of each
//! role, its examples, its coverage phase (boundary and invalid values of every parameter
//! and body) and random inputs. Every answer must be documented (status, content type,
//! headers such as Retry-After, and the body's schema) and none a 5xx.
//!
//! CI: about 1,800 cases per role (`-n 10`); more with `MEDLEDGER_FUZZ_ROUNDS=N` (the
//! cases per operation and phase; docs/RELIABILITY.md has the long run's figures). The
//! routes that replace keys are left out of the role runs: a rotated JWT secret would
//! turn the rest of the run into 401s. They run after, on their own, with the routes
//! whose ids only the server makes (a tx id, a block hash) fixed to real ones, and the
//! cluster routes against a one-node cluster: so every success schema is checked against
//! real answers, and the test fails if an operation stops answering 2xx.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

mod common;
use common::fuzz::rounds;
use common::server::{free_port, request, start, start_logged, token, Running};
use medledger::api::ROUTES;

fn schemathesis() -> PathBuf {
    if let Some(path) = std::env::var_os("MEDLEDGER_SCHEMATHESIS") {
        return path.into();
    }
    let tools = std::env::var_os("MEDLEDGER_TOOLS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cache/medledger-tools")
        });
    tools.join("schemathesis/bin/schemathesis")
}

/// "N generated, M passed" (or "... found K unique failures") from schemathesis' summary.
fn generated(out: &str) -> Option<u64> {
    out.lines().find_map(|l| {
        let (n, _) = l.trim().split_once(" generated, ")?;
        n.parse().ok()
    })
}

/// One schemathesis run against the server at `addr` as `bearer`, with `args` added (and
/// the settings of `config`, if any); its HAR report goes to `reports/{name}.har`.
/// Panics unless every answer is documented; returns the number of cases.
fn run(
    reports: &Path,
    name: &str,
    (addr, bearer): (SocketAddr, &str),
    config: Option<&Path>,
    args: &[&str],
) -> u64 {
    let mut cmd = Command::new(schemathesis());
    cmd.current_dir(reports);
    if let Some(config) = config {
        cmd.arg("--config-file").arg(config);
    }
    let out = cmd
        .args(["run", &format!("http://{addr}/v1/openapi.json")])
        .args(["-H", &format!("Authorization: Bearer {bearer}")])
        .args([
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,\
             response_headers_conformance,response_schema_conformance",
        ])
        .args(["-n", &rounds(10).to_string(), "--generation-deterministic"])
        .args(["--phases", "examples,coverage,fuzzing", "--no-color"])
        .args(["--request-timeout", "30", "--report", "har"])
        .arg("--report-har-path")
        .arg(reports.join(format!("{name}.har")))
        .args(args)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "schemathesis ({name}) found answers the document does not describe:\n{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cases = generated(&text).unwrap_or_else(|| panic!("no summary:\n{text}"));
    eprintln!("{name}: {cases} cases, all passed");
    cases
}

/// The route (`GET /v1/records/{id}`) a request's method and URL name; a literal segment
/// wins over a parameter.
fn operation_of(method: &str, url: &str) -> Option<String> {
    let path = url.split("://").nth(1)?;
    let path = &path[path.find('/')?..];
    let path = path.split(['?', '#']).next()?;
    let segments: Vec<&str> = path.split('/').collect();
    ROUTES
        .iter()
        .filter(|r| r.method.eq_ignore_ascii_case(method))
        .filter_map(|r| {
            let pattern: Vec<&str> = r.path.split('/').collect();
            let params = pattern.iter().filter(|p| p.starts_with('{')).count();
            let matches = pattern.len() == segments.len()
                && pattern
                    .iter()
                    .zip(&segments)
                    .all(|(p, s)| p == s || (p.starts_with('{') && !s.is_empty()));
            matches.then_some((params, r))
        })
        .min_by_key(|(params, _)| *params)
        .map(|(_, r)| format!("{} {}", r.method.to_ascii_uppercase(), r.path))
}

/// 2xx answers per route in the HAR reports under `reports`.
fn successes(reports: &Path) -> BTreeMap<String, u64> {
    let mut out: BTreeMap<String, u64> = ROUTES
        .iter()
        .map(|r| (format!("{} {}", r.method.to_ascii_uppercase(), r.path), 0))
        .collect();
    for entry in std::fs::read_dir(reports).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "har") {
            continue;
        }
        let har: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        for e in har["log"]["entries"].as_array().unwrap() {
            let status = e["response"]["status"].as_u64().unwrap_or(0);
            let method = e["request"]["method"].as_str().unwrap_or("");
            let url = e["request"]["url"].as_str().unwrap_or("");
            if let (true, Some(op)) = ((200..300).contains(&status), operation_of(method, url)) {
                *out.entry(op).or_default() += 1;
            }
        }
    }
    out
}

/// What the fixed-id run needs: ids only the server makes, of things the role runs do
/// not touch (patient p-2's record `r-pay` with a JSON payload, and its grant to dr-9).
fn fixed_ids(addr: SocketAddr, dr: &str, admin: &str) -> String {
    let body = r#"{"record_id":"r-pay","patient_id":"p-2","hospital_id":"h-1","record_type":"imaging","metadata":{"title":"X-ray"},"payload":{"content_type":"application/json","data":{"finding":"none"}}}"#;
    let (s, receipt) = request(addr, "POST", "/v1/records", Some(dr), Some(body)).unwrap();
    assert_eq!(s, 201, "{receipt}");
    let grant = r#"{"grantee_id":"dr-9"}"#;
    let path = "/v1/patients/p-2/grants";
    let (s, b) = request(addr, "POST", path, Some(admin), Some(grant)).unwrap();
    assert_eq!(s, 201, "{b}");
    let path = format!("/v1/blocks/{}", receipt["block_number"]);
    let (s, block) = request(addr, "GET", &path, Some(admin), None).unwrap();
    assert_eq!(s, 200, "{block}");
    // A complete bulk export of the imaging records (r-pay's), made first: the role runs
    // never learn its id (they may fill the exports kept, or delete the ones they made).
    let (s, started) = request(
        addr,
        "POST",
        "/v1/exports",
        Some(admin),
        Some(r#"{"record_type":"imaging"}"#),
    )
    .unwrap();
    assert_eq!(s, 202, "{started}");
    let status_url = started["status_url"].as_str().unwrap().to_owned();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while request(addr, "GET", &status_url, Some(admin), None)
        .unwrap()
        .0
        != 200
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the export did not end"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let export = format!(
        r#""path.id" = {}, "path.type" = "imaging""#,
        started["export_id"]
    );
    let tx = format!(r#""path.id" = {}"#, receipt["tx_id"]);
    let record = r#""path.id" = "r-pay""#.to_owned();
    let fixed = [
        ("GET /v1/tx/{id}", tx.clone()),
        ("GET /v1/tx/{id}/proof", tx),
        (
            "GET /v1/blocks/by-hash/{hash}",
            format!(r#""path.hash" = {}"#, block["hash"]),
        ),
        ("GET /v1/records/{id}", record.clone()),
        ("GET /v1/records/{id}/history", record.clone()),
        ("GET /v1/records/{id}/payload", record),
        (
            "DELETE /v1/patients/{id}/grants/{grantee}",
            r#""path.id" = "p-2", "path.grantee" = "dr-9""#.to_owned(),
        ),
        ("GET /v1/exports/{id}/files/{type}", export),
    ];
    fixed
        .iter()
        .map(|(op, params)| {
            format!("[[operations]]\ninclude-name = \"{op}\"\nparameters = {{ {params} }}\n\n")
        })
        .collect()
}

/// The routes of ids only the server makes, fixed by `config` ([`fixed_ids`]), and the
/// routes that replace keys, as the admin.
fn server_made_ids_and_keys(reports: &Path, addr: SocketAddr, admin: &str, config: &Path) {
    let mut args = Vec::new();
    for name in [
        "GET /v1/tx/{id}",
        "GET /v1/tx/{id}/proof",
        "GET /v1/blocks/by-hash/{hash}",
        "GET /v1/records/{id}",
        "GET /v1/records/{id}/history",
        "GET /v1/records/{id}/payload",
        "DELETE /v1/patients/{id}/grants/{grantee}",
        "GET /v1/exports/{id}/files/{type}",
        "POST /v1/checkpoint/rotate",
        "POST /v1/keys/rotate",
    ] {
        args.extend(["--include-name", name]);
    }
    run(reports, "fixed-ids", (addr, admin), Some(config), &args);
    // The JWT secret last of all: a rotation without grace ends the admin token.
    let args = ["--include-path", "/v1/keys/rotate-jwt"];
    run(reports, "jwt-rotation", (addr, admin), None, &args);
}

/// One node is a cluster of its own: its status has the cluster's shape, and it takes
/// itself as the voters and the leader. A learner is left out: adding one waits until a
/// node at the made-up address catches up.
fn one_node_cluster(reports: &Path) {
    let node = tempfile::tempdir().unwrap();
    let (raft, http) = (free_port(), free_port());
    let file = node.path().join("cluster.toml");
    std::fs::write(
        &file,
        format!("cluster_id = \"schemathesis\"\n[[node]]\nid = 1\nraft = \"{raft}\"\nhttp = \"{http}\"\n"),
    )
    .unwrap();
    let data = node.path().join("node-1");
    let cluster_args = ["--cluster", file.to_str().unwrap(), "--node-id", "1"];
    let log = node.path().join("serve.log");
    let server = Running(start_logged(&data, http, &cluster_args, &[], &log));
    let bearer = token(&data, "admin", "admin-1", None);
    let args = [
        "--include-path",
        "/v1/cluster",
        "--include-path",
        "/v1/cluster/voters",
        "--include-path",
        "/v1/cluster/leader",
    ];
    run(reports, "one-node-cluster", (http, &bearer), None, &args);
    drop(server);
}

#[test]
fn every_answer_matches_the_openapi_document() {
    let bin = schemathesis();
    assert!(
        bin.exists(),
        "{} is missing: run scripts/setup-test.sh",
        bin.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let reports = tempfile::tempdir().unwrap();
    let addr = free_port();
    let server = Running(start(dir.path(), addr));
    // The ids of the document's examples exist, read once: the examples phase then gets
    // successes to check against the success schemas (a record, its history, the
    // timelines, the access logs), not only 404s.
    let dr = token(dir.path(), "clinician", "dr-1", Some("h-1"));
    let admin = token(dir.path(), "admin", "admin-1", None);
    let body = r#"{"record_id":"r-1","patient_id":"p-1","hospital_id":"h-1","record_type":"lab_result","metadata":{"title":"CBC"}}"#;
    let (s, b) = request(addr, "POST", "/v1/records", Some(&dr), Some(body)).unwrap();
    assert_eq!(s, 201, "{b}");
    let (s, b) = request(addr, "GET", "/v1/records/r-1", Some(&dr), None).unwrap();
    assert_eq!(s, 200, "{b}");
    let config = reports.path().join("fixed-ids.toml");
    std::fs::write(&config, fixed_ids(addr, &dr, &admin)).unwrap();
    let mut total = 0;
    // The admin last: it erases r-1 and forgets p-1, after which the others read 410s.
    for (role, sub, hospital) in [
        ("clinician", "dr-1", Some("h-1")),
        ("patient", "p-1", None),
        ("auditor", "au-1", None),
        ("admin", "admin-1", None),
    ] {
        let bearer = token(dir.path(), role, sub, hospital);
        let args = [
            "--exclude-path",
            "/v1/keys/rotate-jwt",
            "--exclude-path",
            "/v1/keys/rotate",
            "--exclude-path",
            "/v1/checkpoint/rotate",
        ];
        total += run(reports.path(), role, (addr, &bearer), None, &args);
    }
    assert!(total >= 2_000, "only {total} cases");
    server_made_ids_and_keys(reports.path(), addr, &admin, &config);
    drop(server);

    one_node_cluster(reports.path());

    // Every success schema was checked against a real answer, but those of two routes.
    let successes = successes(reports.path());
    for (op, n) in &successes {
        eprintln!("{n:6} 2xx  {op}");
    }
    let unreached = [
        // Waits for the new node to catch up.
        "POST /v1/cluster/learners",
        // schemathesis does not request the document it tests with.
        "GET /v1/openapi.json",
    ];
    let never: Vec<&String> = successes
        .iter()
        .filter(|(op, n)| **n == 0 && !unreached.contains(&op.as_str()))
        .map(|(op, _)| op)
        .collect();
    assert!(never.is_empty(), "never answered 2xx: {never:?}");
}
