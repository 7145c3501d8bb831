//! schemathesis, a schema-driven fuzzer (installed by scripts/setup-test.sh), against a
//! real `medledger serve`: every operation of `/v1/openapi.json`, with the token of each
//! role, its examples, its coverage phase (boundary and invalid values of every parameter
//! and body) and random inputs. Every answer must be documented (status, content type,
//! headers such as Retry-After, and the body's schema) and none a 5xx.
//!
//! CI: about 1,800 cases per role (`-n 10`); more with `MEDLEDGER_FUZZ_ROUNDS=N` (the
//! cases per operation and phase; docs/RELIABILITY.md has the long run's figures). The
//! routes that replace keys are left out: a rotated JWT secret would turn the rest of
//! the run into 401s (tests/http_api.rs and tests/explorer_api.rs cover them).

use std::path::PathBuf;
use std::process::Command;

mod common;
use common::fuzz::rounds;
use common::server::{free_port, request, start, token, Running};

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

#[test]
fn every_answer_matches_the_openapi_document() {
    let bin = schemathesis();
    assert!(
        bin.exists(),
        "{} is missing: run scripts/setup-test.sh",
        bin.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let addr = free_port();
    let server = Running(start(dir.path(), addr));
    // The ids of the document's examples exist, read once: the examples phase then gets
    // successes to check against the success schemas (a record, its history, the
    // timelines, the access logs), not only 404s.
    let dr = token(dir.path(), "clinician", "dr-1", Some("h-1"));
    let body = r#"{"record_id":"r-1","patient_id":"p-1","hospital_id":"h-1","record_type":"lab_result","metadata":{"title":"CBC"}}"#;
    let (s, b) = request(addr, "POST", "/v1/records", Some(&dr), Some(body)).unwrap();
    assert_eq!(s, 201, "{b}");
    let (s, b) = request(addr, "GET", "/v1/records/r-1", Some(&dr), None).unwrap();
    assert_eq!(s, 200, "{b}");
    let per_operation = rounds(10).to_string();
    let mut total = 0;
    for (role, sub, hospital) in [
        ("admin", "admin-1", None),
        ("clinician", "dr-1", Some("h-1")),
        ("patient", "p-1", None),
        ("auditor", "au-1", None),
    ] {
        let bearer = token(dir.path(), role, sub, hospital);
        let out = Command::new(&bin)
            .current_dir(dir.path())
            .args(["run", &format!("http://{addr}/v1/openapi.json")])
            .args(["-H", &format!("Authorization: Bearer {bearer}")])
            .args([
                "--checks",
                "not_a_server_error,status_code_conformance,content_type_conformance,\
                 response_headers_conformance,response_schema_conformance",
            ])
            .args(["-n", &per_operation, "--generation-deterministic"])
            .args(["--phases", "examples,coverage,fuzzing", "--no-color"])
            .args(["--request-timeout", "30"])
            .args(["--exclude-path", "/v1/keys/rotate-jwt"])
            .args(["--exclude-path", "/v1/keys/rotate"])
            .args(["--exclude-path", "/v1/checkpoint/rotate"])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "schemathesis as {role} found answers the document does not describe:\n{text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let cases = generated(&text).unwrap_or_else(|| panic!("no summary:\n{text}"));
        eprintln!("{role}: {cases} cases, all passed");
        total += cases;
    }
    drop(server);
    assert!(total >= 2_000, "only {total} cases");
}
