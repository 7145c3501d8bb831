//! Tokens from an identity provider, minted by an independent library (PyJWT with
//! cryptography, tests/idp/mint.py, installed by scripts/setup-test.sh), against a real
//! `medledger serve` with `--jwks-file`, an issuer, an audience, Keycloak's role claim and
//! a maximum lifetime: RS256, ES256 and EdDSA accepted; a wrong `aud` or `iss`, an expired
//! or not yet valid token, an unknown `kid`, `alg: none`, an HS256 token signed with the
//! RSA public key (the confusion attack) and the rest refused with 401. Then a key
//! rollover: the JWKS file is replaced and SIGHUP makes the server take it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

mod common;
use common::server::{free_port, request, start_with_env, Running};

/// The Python of the venv scripts/setup-test.sh made with tests/idp/requirements.txt.
fn python() -> PathBuf {
    let tools = std::env::var_os("MEDLEDGER_TOOLS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cache/medledger-tools")
        });
    let python = tools.join("pyjwt/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run scripts/setup-test.sh",
        python.display()
    );
    python
}

fn mint(dir: &Path) -> serde_json::Map<String, Value> {
    let out = Command::new(python())
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/idp/mint.py"))
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "mint.py: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tokens: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("tokens.json")).unwrap()).unwrap();
    tokens.as_object().unwrap().clone()
}

#[test]
fn identity_provider_tokens_are_checked_as_configured_and_keys_roll_over() {
    let keys = tempfile::tempdir().unwrap();
    let tokens = mint(keys.path());
    let jwks = keys.path().join("jwks.json");
    let data = tempfile::tempdir().unwrap();
    let addr = free_port();
    let server = Running(start_with_env(
        data.path(),
        addr,
        &[
            ("MEDLEDGER_JWKS_FILE", jwks.to_str().unwrap()),
            // A long timer: the rollover below must be taken on SIGHUP.
            ("MEDLEDGER_JWKS_REFRESH_SECS", "3600"),
            ("MEDLEDGER_JWT_ISSUER", "https://idp.test/realms/hospital"),
            ("MEDLEDGER_JWT_AUDIENCE", "medledger"),
            ("MEDLEDGER_JWT_ROLE_CLAIM", "realm_access.roles"),
            ("MEDLEDGER_JWT_MAX_LIFETIME_SECS", "3600"),
        ],
    ));
    // GET /v1/chain is for auditors and admins: the tokens name an admin.
    let answer = |case: &str| {
        let (status, body) = request(
            addr,
            "GET",
            "/v1/chain",
            Some(tokens[case].as_str().unwrap()),
            None,
        )
        .unwrap();
        (
            status,
            body["error"]["message"].as_str().unwrap_or("").to_owned(),
        )
    };
    for case in ["rs256", "es256", "eddsa"] {
        assert_eq!(answer(case).0, 200, "{case}");
    }
    let refusals = [
        ("wrong_aud", "the bearer token is not for this service (aud)"),
        ("no_aud", "the bearer token lacks a required claim"),
        ("wrong_iss", "the bearer token is from another issuer (iss)"),
        ("expired", "the bearer token has expired"),
        ("not_yet_valid", "the bearer token is not valid yet (nbf)"),
        ("too_long", "the bearer token lives longer than this server accepts (3600 s)"),
        ("no_iat", "the bearer token lacks a required claim (iat)"),
        ("unknown_kid", "the bearer token's key (kid) is not in this server's key set"),
        ("wrong_key", "the bearer token's signature does not verify"),
        (
            "two_roles",
            "the bearer token's `realm_access.roles` claim must name exactly one role of patient, clinician, auditor, admin",
        ),
        (
            "no_role",
            "the bearer token's `realm_access.roles` claim must name exactly one role of patient, clinician, auditor, admin",
        ),
        // `none` is no algorithm the JWT library knows: the header does not parse.
        (
            "alg_none",
            "the bearer token is not a valid JWT with the claims this server needs",
        ),
        (
            "hs256_confusion",
            "the bearer token is signed with another algorithm than this server accepts",
        ),
        (
            "es256_with_rsa_kid",
            "the bearer token is signed with another algorithm than this server accepts",
        ),
        ("next_rsa", "the bearer token's key (kid) is not in this server's key set"),
    ];
    for (case, message) in refusals {
        let (status, said) = answer(case);
        assert_eq!((status, said.as_str()), (401, message), "{case}");
    }

    // The provider rolls its keys over: rsa-1 gone, rsa-2 new. Written by rename, as a
    // config manager would, then SIGHUP.
    let next = keys.path().join("jwks.json.new");
    std::fs::copy(keys.path().join("jwks-next.json"), &next).unwrap();
    std::fs::rename(&next, &jwks).unwrap();
    let hup = Command::new("kill")
        .args(["-HUP", &server.0.id().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    while answer("next_rsa").0 != 200 {
        assert!(
            Instant::now() < deadline,
            "the new key set was not taken on SIGHUP"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // rsa-1's token was remembered as verified: it goes with its key.
    assert_eq!(answer("rs256").0, 401);
    assert_eq!(answer("es256").0, 200);
    // A broken file is not taken: the keys stay as they were, and the server stays up.
    std::fs::write(&jwks, b"{\"keys\": [").unwrap();
    assert!(Command::new("kill")
        .args(["-HUP", &server.0.id().to_string()])
        .status()
        .unwrap()
        .success());
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(answer("next_rsa").0, 200);
    assert_eq!(answer("rs256").0, 401);
    server.stop();
}

#[test]
fn a_key_set_that_does_not_parse_stops_the_start_with_a_clear_error() {
    let data = tempfile::tempdir().unwrap();
    let jwks = data.path().join("jwks.json");
    std::fs::write(&jwks, br#"{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}"#).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_medledger"))
        .args(["serve", "--data-dir"])
        .arg(data.path().join("data"))
        .args(["--listen", &free_port().to_string(), "--jwks-file"])
        .arg(&jwks)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("the key set has no signature key this server uses"),
        "{stderr}"
    );
}
