//! `medledger token`: mint an HS256 bearer token with the data dir's secret.

use std::io::Write;
use std::path::Path;

use crate::api::auth::{self, Claims, Role};

/// Prints the token as the last line; exit 0, or 2 with a reason on stderr.
pub fn run(
    data_dir: &Path,
    role: &str,
    sub: &str,
    hospital: Option<String>,
    ttl_hours: u64,
    out: &mut dyn Write,
) -> i32 {
    let Some(role) = Role::parse(role) else {
        eprintln!("medledger: --role must be patient, clinician, auditor or admin");
        return 2;
    };
    // The server takes only tokens whose ids the ledger takes.
    if !medledger_chaincode::is_valid_id(sub) {
        eprintln!("medledger: --sub must be 1 to 128 bytes of letters, digits and . _ : @ -");
        return 2;
    }
    if hospital
        .as_deref()
        .is_some_and(|h| !medledger_chaincode::is_valid_id(h))
    {
        eprintln!("medledger: --hospital must be 1 to 128 bytes of letters, digits and . _ : @ -");
        return 2;
    }
    if !(1..=8_760).contains(&ttl_hours) {
        eprintln!("medledger: --ttl-hours must be between 1 and 8,760");
        return 2;
    }
    if role == Role::Clinician && hospital.is_none() {
        eprintln!("medledger: a clinician's token needs --hospital");
        return 2;
    }
    let (secret, created) = match auth::load_or_create_secret(data_dir) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("medledger: {e}");
            return 2;
        }
    };
    if created {
        eprintln!(
            "medledger: created a new secret in {}",
            data_dir.join(auth::SECRET_FILE).display()
        );
    }
    let claims = Claims {
        sub: sub.to_owned(),
        role,
        hospital,
        exp: auth::now_secs() + ttl_hours * 3600,
    };
    match auth::mint(&secret, &claims) {
        Ok(token) => {
            let _ = writeln!(out, "{token}");
            0
        }
        Err(e) => {
            eprintln!("medledger: {e}");
            2
        }
    }
}
