//! `medledger keys rotate|rotate-jwt`: re-wraps every data key under a new master key
//! (docs/PAYLOADS.md, "Master key rotation"), or replaces the JWT secret (docs/API.md), on
//! a running server. The request's admin token is minted from the data dir's JWT secret.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use super::cluster::{admin_token, call};

/// What to rotate.
pub enum Rotate {
    /// The master key (`POST /v1/keys/rotate`).
    MasterKey,
    /// The JWT secret, the old one accepted for this many seconds more.
    Jwt { grace_seconds: u64 },
}

/// Runs the rotation against the server at `url`; prints its JSON answer. 0 on success,
/// 1 when the server refused or failed, 2 on a usage or connection problem.
pub fn run_rotate(url: &str, data_dir: &Path, what: Rotate, out: &mut dyn Write) -> i32 {
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
    let (path, body) = match what {
        Rotate::MasterKey => ("/v1/keys/rotate", serde_json::json!({})),
        Rotate::Jwt { grace_seconds } => (
            "/v1/keys/rotate-jwt",
            serde_json::json!({ "grace_seconds": grace_seconds }),
        ),
    };
    match call(&client, url, &token, path, Some(body)) {
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
