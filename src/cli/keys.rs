//! `medledger keys rotate`: re-wraps every data key under a new master key, on a running
//! server (docs/PAYLOADS.md, "Master key rotation"). The request's admin token is minted
//! from the data dir's JWT secret.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use super::cluster::{admin_token, call};

/// Runs the rotation against the server at `url`; prints its JSON answer. 0 on success,
/// 1 when the server refused or failed, 2 on a usage or connection problem.
pub fn run_rotate(url: &str, data_dir: &Path, out: &mut dyn Write) -> i32 {
    let token = match admin_token(data_dir) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("medledger keys rotate: {e}");
            return 2;
        }
    };
    let client = match reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(600))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("medledger keys rotate: {e}");
            return 2;
        }
    };
    let url = url.trim_end_matches('/');
    match call(
        &client,
        url,
        &token,
        "/v1/keys/rotate",
        Some(serde_json::json!({})),
    ) {
        Ok(answer) => {
            let _ = writeln!(out, "{answer}");
            0
        }
        Err(e) => {
            eprintln!("medledger keys rotate: {e}");
            1
        }
    }
}
