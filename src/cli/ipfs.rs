//! `medledger ipfs add --only-hash FILE [--cid-version 0|1]`: the CID Kubo's
//! `ipfs add --only-hash` prints for the same bytes and settings (256 KiB chunks, balanced
//! layout, 174 links per node; v1 with raw leaves), without storing anything.

use std::io::Write;
use std::path::Path;

use medledger_payload::{only_hash, CidVersion};

/// Prints the CID and returns 0, or prints why not and returns 2.
pub fn run_only_hash(file: &Path, cid_version: u8, out: &mut dyn Write) -> i32 {
    let version = match cid_version {
        0 => CidVersion::V0,
        1 => CidVersion::V1,
        other => {
            eprintln!("medledger: --cid-version must be 0 or 1, not {other}");
            return 2;
        }
    };
    let reader = match std::fs::File::open(file) {
        Ok(f) => std::io::BufReader::with_capacity(1 << 20, f),
        Err(e) => {
            eprintln!("medledger: {}: {e}", file.display());
            return 2;
        }
    };
    match only_hash(reader, version) {
        Ok(cid) => {
            let _ = writeln!(out, "{cid}");
            0
        }
        Err(e) => {
            eprintln!("medledger: reading {}: {e}", file.display());
            2
        }
    }
}

/// `medledger ipfs status`: asks the running server (`GET /v1/ipfs/status`, with an
/// auditor token minted from the data dir's secret) for the payload store and the
/// replication outbox, and prints its JSON. The stores are never opened here: the server
/// owns them while it runs. Returns 0, or 2 with the reason.
pub fn run_status(url: &str, data_dir: &Path, out: &mut dyn Write) -> i32 {
    use std::io::Read;
    let Some(authority) = url.strip_prefix("http://").map(|r| r.trim_end_matches('/')) else {
        eprintln!("medledger: --url must be http://HOST:PORT (the server's own listener)");
        return 2;
    };
    let secret = match crate::api::auth::load_or_create_secret(data_dir) {
        Ok((s, _)) => s,
        Err(e) => {
            eprintln!("medledger: {e}");
            return 2;
        }
    };
    let claims = crate::api::auth::Claims {
        sub: "medledger-cli".into(),
        role: crate::api::auth::Role::Auditor,
        hospital: None,
        exp: crate::api::auth::now_secs() + 60,
    };
    let token = match crate::api::auth::mint(&secret, &claims) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("medledger: minting a token: {e}");
            return 2;
        }
    };
    let request = format!(
        "GET /v1/ipfs/status HTTP/1.1\r\nHost: {authority}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    );
    let mut raw = Vec::new();
    let result = std::net::TcpStream::connect(authority).and_then(|mut s| {
        s.set_read_timeout(Some(std::time::Duration::from_secs(10)))?;
        s.write_all(request.as_bytes())?;
        s.take(1 << 20).read_to_end(&mut raw)
    });
    if let Err(e) = result {
        eprintln!("medledger: no server answers at {url}: {e}");
        return 2;
    }
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    if !head.starts_with("HTTP/1.1 200") {
        eprintln!(
            "medledger: the server answered {}: {body}",
            head.lines().next().unwrap_or("")
        );
        return 2;
    }
    let _ = writeln!(out, "{}", body.trim());
    0
}
