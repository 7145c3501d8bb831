//! The block explorer page in a real browser: headless Chromium (Debian's `chromium`)
//! driven by playwright-core (`tests/browser/`, installed by scripts/test.sh), against a
//! real `medledger serve` seeded with records. The page must load, show the right height,
//! draw its charts (blocks per minute, records per month), check a transaction's proof
//! with WebCrypto, open its block, and take a screenshot
//! (written to `target/explorer-browser/explorer.png`).

use std::path::{Path, PathBuf};
use std::process::Command;

mod common;
use common::server::{free_port, request, start, token, Running};

#[test]
fn the_explorer_page_checks_a_proof_in_chromium() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let browser_dir = root.join("tests/browser");
    assert!(
        browser_dir.join("node_modules/playwright-core").is_dir(),
        "playwright-core is not installed: run `npm ci --prefix tests/browser` (scripts/test.sh does)"
    );
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        Path::new(&chromium).exists(),
        "{chromium} is missing: `apt-get install chromium` (scripts/setup-test.sh does)"
    );

    let dir = tempfile::tempdir().unwrap();
    let addr = free_port();
    let server = Running(start(dir.path(), addr));
    let clinician = token(dir.path(), "clinician", "dr-1", Some("h-1"));
    let auditor = token(dir.path(), "auditor", "au-1", None);
    let mut last_tx = String::new();
    for i in 0..6 {
        let body = format!(
            r#"{{"patient_id":"p-{i}","hospital_id":"h-1","record_type":"lab_result","metadata":{{"n":{i}}}}}"#
        );
        let (status, receipt) =
            request(addr, "POST", "/v1/records", Some(&clinician), Some(&body)).unwrap();
        assert_eq!(status, 201, "{receipt}");
        last_tx = receipt["tx_id"].as_str().unwrap().to_owned();
    }
    let (status, chain) = request(addr, "GET", "/v1/chain", Some(&auditor), None).unwrap();
    assert_eq!(status, 200, "{chain}");
    let height = chain["height"].as_u64().unwrap();

    let out_dir: PathBuf = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
        .join("explorer-browser");
    std::fs::create_dir_all(&out_dir).unwrap();
    let shot = out_dir.join("explorer.png");
    let _ = std::fs::remove_file(&shot);
    let run = Command::new("node")
        .arg(browser_dir.join("explorer.mjs"))
        .arg(format!("http://{addr}"))
        .arg(&auditor)
        .arg(height.to_string())
        .arg(&last_tx)
        .arg(&out_dir)
        .arg("6")
        .env("CHROMIUM", &chromium)
        .output()
        .expect("node runs");
    drop(server);
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        run.status.success(),
        "the browser run failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("proof: Proof checked"), "{stdout}");
    let png = std::fs::read(&shot).expect("a screenshot was written");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "{} bytes",
        png.len()
    );
}
