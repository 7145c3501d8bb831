//! The block explorer's JSON routes through actix's test service, over a real ledger:
//! what they return is checked against the ledger's own bytes (hashes recomputed here),
//! and every bad input gets its 4xx code.

use actix_web::http::StatusCode;
use actix_web::test;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use medledger::api::auth::Role;
use medledger::serve::{app, Core, ServeConfig};

#[macro_use]
mod common;
use common::api::Env;

fn env() -> Env {
    Env::new()
}
use medledger_storage::merkle;

macro_rules! get {
    ($svc:expr, $uri:expr, $token:expr) => {
        call!(
            $svc,
            test::TestRequest::get()
                .uri(&$uri)
                .insert_header(("Authorization", $token.as_str()))
        )
    };
}

fn hex32(v: &Value) -> [u8; 32] {
    let mut out = [0u8; 32];
    hex::decode_to_slice(v.as_str().expect("hex string"), &mut out).expect("32 hex bytes");
    out
}

fn code(b: &Value) -> Option<&str> {
    b["error"]["code"].as_str()
}

#[actix_web::test]
async fn explorer_routes_match_the_ledger() {
    let env = env();
    let svc = test::init_service(app(env.core.state.clone())).await;
    let dr = env.token(Role::Clinician, "dr-1", Some("h-1"));
    let auditor = env.token(Role::Auditor, "au-1", None);

    // Five records for three patients, each answered after its block is durable.
    let mut receipts = Vec::new();
    for (i, patient) in ["p-1", "p-2", "p-1", "p-3", "p-2"].iter().enumerate() {
        let body = json!({"patient_id": patient, "hospital_id": "h-1",
            "record_type": "lab_result", "created_at": "2026-11-23T10:00:00Z",
            "metadata": {"n": i}});
        let (s, b) = call!(
            &svc,
            test::TestRequest::post()
                .uri("/v1/records")
                .insert_header(("Authorization", dr.as_str()))
                .set_json(&body)
        );
        assert_eq!(s, StatusCode::CREATED, "{b}");
        receipts.push(b);
    }

    // Only auditors and admins explore.
    let (s, b) = get!(&svc, "/v1/chain", dr);
    assert_eq!((s, code(&b)), (StatusCode::FORBIDDEN, Some("forbidden")));

    // The chain: height, tip, genesis and totals agree with the ledger.
    let (s, chain) = get!(&svc, "/v1/chain", auditor);
    assert_eq!(s, StatusCode::OK, "{chain}");
    let tip = env.core.state.ledger.tip();
    assert_eq!(chain["height"], tip.height);
    assert_eq!(hex32(&chain["tip_hash"]), tip.tip_hash);
    let genesis = env.core.state.ledger.block(0).unwrap().unwrap();
    assert_eq!(hex32(&chain["genesis_hash"]), genesis.hash());
    assert_eq!(chain["totals"]["records"], 5);
    assert_eq!(chain["totals"]["patients"], 3);
    assert_eq!(chain["totals"]["tx"], 5);
    assert_eq!(chain["cutter"]["max_message_count"], 500);

    // Each receipt's block: the header hash and data hash recomputed from the listed tx
    // hashes, and the tx at the receipt's position.
    for r in &receipts {
        let n = r["block_number"].as_u64().unwrap();
        let (s, block) = get!(&svc, format!("/v1/blocks/{n}"), auditor);
        assert_eq!(s, StatusCode::OK, "{block}");
        let ledger_block = env.core.state.ledger.block(n).unwrap().unwrap();
        assert_eq!(hex32(&block["hash"]), ledger_block.hash());
        assert_eq!(
            hex32(&block["hash"]),
            <[u8; 32]>::from(Sha256::digest(ledger_block.header.encode()))
        );
        let tx_hashes: Vec<[u8; 32]> = block["txs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| hex32(&t["tx_hash"]))
            .collect();
        assert_eq!(block["tx_count"], tx_hashes.len());
        assert_eq!(
            hex32(&block["data_hash"]),
            merkle::root_of_hashes(&tx_hashes)
        );
        let pos = r["position"].as_u64().unwrap() as usize;
        assert_eq!(block["txs"][pos]["tx_id"], r["tx_id"]);
        assert_eq!(block["txs"][pos]["type"], "record_created");
        // Browsing never shows metadata.
        assert!(!block.to_string().contains("\"metadata\""));

        // The same block by its hash.
        let hash = block["hash"].as_str().unwrap();
        let (s, by_hash) = get!(&svc, format!("/v1/blocks/by-hash/{hash}"), auditor);
        assert_eq!(s, StatusCode::OK);
        assert_eq!(by_hash, block);

        // The transaction: its place, hash and verdict.
        let tx_id = r["tx_id"].as_str().unwrap();
        let (s, tx) = get!(&svc, format!("/v1/tx/{tx_id}"), auditor);
        assert_eq!(s, StatusCode::OK, "{tx}");
        assert_eq!(tx["block_number"], n);
        assert_eq!(tx["position"], pos);
        assert_eq!(tx["tx_hash"], block["txs"][pos]["tx_hash"]);
        assert_eq!(tx["validation"]["status"], "valid");
        assert_eq!(tx["submitter"], "dr-1");
    }

    // Paging newest first, then oldest first, covers every block exactly once.
    let height = tip.height;
    for order in ["desc", "asc"] {
        let mut seen = Vec::new();
        let mut uri = format!("/v1/blocks?limit=2&order={order}");
        loop {
            let (s, page) = get!(&svc, uri, auditor);
            assert_eq!(s, StatusCode::OK, "{page}");
            for b in page["blocks"].as_array().unwrap() {
                assert!(b.get("txs").is_none());
                seen.push(b["number"].as_u64().unwrap());
            }
            match page["next_from"].as_u64() {
                Some(next) => uri = format!("/v1/blocks?limit=2&order={order}&from={next}"),
                None => break,
            }
        }
        let mut expected: Vec<u64> = (0..height).collect();
        if order == "desc" {
            expected.reverse();
        }
        assert_eq!(seen, expected, "{order}");
    }

    // Activity over the last two hours counts every transaction.
    let (s, act) = get!(&svc, "/v1/activity?bucket=hour&buckets=2", auditor);
    assert_eq!(s, StatusCode::OK, "{act}");
    let txs: u64 = act["series"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["tx"].as_u64().unwrap())
        .sum();
    let blocks: u64 = act["series"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["blocks"].as_u64().unwrap())
        .sum();
    assert_eq!((txs, blocks), (5, height));

    // Bad input: each a 4xx with its code.
    for (uri, status, expected) in [
        (
            "/v1/blocks?limit=0",
            StatusCode::BAD_REQUEST,
            "invalid_limit",
        ),
        (
            "/v1/blocks?limit=101",
            StatusCode::BAD_REQUEST,
            "invalid_limit",
        ),
        (
            "/v1/blocks?order=up",
            StatusCode::BAD_REQUEST,
            "invalid_order",
        ),
        (
            "/v1/blocks?bogus=1",
            StatusCode::BAD_REQUEST,
            "invalid_query",
        ),
        (
            "/v1/blocks/x1",
            StatusCode::BAD_REQUEST,
            "invalid_block_number",
        ),
        ("/v1/blocks/999999", StatusCode::NOT_FOUND, "not_found"),
        (
            "/v1/blocks/by-hash/abc",
            StatusCode::BAD_REQUEST,
            "invalid_hash",
        ),
        (
            "/v1/blocks/by-hash/0000000000000000000000000000000000000000000000000000000000000000",
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            "/v1/tx/not-a-uuid",
            StatusCode::BAD_REQUEST,
            "invalid_tx_id",
        ),
        (
            "/v1/tx/00000000-0000-7000-8000-000000000000",
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            "/v1/activity?bucket=day",
            StatusCode::BAD_REQUEST,
            "invalid_bucket",
        ),
        (
            "/v1/activity?buckets=0",
            StatusCode::BAD_REQUEST,
            "invalid_buckets",
        ),
        (
            "/v1/activity?buckets=100000",
            StatusCode::BAD_REQUEST,
            "invalid_buckets",
        ),
    ] {
        let (s, b) = get!(&svc, uri, auditor);
        assert_eq!((s, code(&b)), (status, Some(expected)), "{uri}: {b}");
    }
    // Proofs: every receipt's tx proof verifies offline against the public key, through
    // the library and through `medledger proof verify`; a flipped hash does not.
    let (s, key) = call!(&svc, test::TestRequest::get().uri("/v1/checkpoint/key"));
    assert_eq!(s, StatusCode::OK, "{key}");
    assert_eq!(key["algorithm"], "ed25519");
    let key_text = key.to_string();
    let (s, first_cp) = get!(&svc, "/v1/checkpoint", auditor);
    assert_eq!(s, StatusCode::OK, "{first_cp}");
    assert_eq!(first_cp["tree_size"], height);
    assert_eq!(hex32(&first_cp["tip_hash"]), tip.tip_hash);
    medledger_proof::verify_json(first_cp.to_string().as_bytes(), &key_text).unwrap();
    for r in &receipts {
        let tx_id = r["tx_id"].as_str().unwrap();
        let (s, proof) = get!(&svc, format!("/v1/tx/{tx_id}/proof"), auditor);
        assert_eq!(s, StatusCode::OK, "{proof}");
        assert_eq!(proof["block_number"], r["block_number"]);
        assert_eq!(proof["leaf_index"], r["position"]);
        assert_eq!(proof["chain"]["root"], first_cp["root"]);
        let summary = medledger_proof::verify_json(proof.to_string().as_bytes(), &key_text)
            .unwrap_or_else(|e| panic!("{tx_id}: {e}: {proof}"));
        assert!(!summary.is_empty());

        let file = env.dir.path().join("proof.json");
        std::fs::write(&file, proof.to_string()).unwrap();
        let mut out = Vec::new();
        assert_eq!(
            medledger::cli::proof::run_verify(&key_text, &file, &mut out),
            0,
            "{}",
            String::from_utf8_lossy(&out)
        );
        let mut bad = proof.clone();
        let flipped = {
            let h = bad["tx_hash"].as_str().unwrap().to_owned();
            let last = if h.ends_with('0') { '1' } else { '0' };
            format!("{}{last}", &h[..63])
        };
        bad["tx_hash"] = json!(flipped);
        std::fs::write(&file, bad.to_string()).unwrap();
        let mut out = Vec::new();
        assert_eq!(
            medledger::cli::proof::run_verify(&key_text, &file, &mut out),
            1
        );
        assert!(String::from_utf8_lossy(&out).contains("NOT verified"));
    }

    // More blocks, then a consistency proof from the first checkpoint to the new head.
    let body = json!({"patient_id": "p-9", "hospital_id": "h-1", "record_type": "imaging"});
    let (s, b) = call!(
        &svc,
        test::TestRequest::post()
            .uri("/v1/records")
            .insert_header(("Authorization", dr.as_str()))
            .set_json(&body)
    );
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let new_height = env.core.state.ledger.tip().height;
    assert!(new_height > height);
    let (s, cons) = get!(
        &svc,
        format!("/v1/checkpoint/consistency?from={height}"),
        auditor
    );
    assert_eq!(s, StatusCode::OK, "{cons}");
    assert_eq!(cons["from"], height);
    assert_eq!(cons["to"], new_height);
    assert_eq!(cons["from_root"], first_cp["root"]);
    medledger_proof::verify_json(cons.to_string().as_bytes(), &key_text).unwrap();
    // Every pair of sizes has a proof that verifies.
    for from in 1..=new_height {
        let (s, c) = get!(
            &svc,
            format!("/v1/checkpoint/consistency?from={from}&to={new_height}"),
            auditor
        );
        assert_eq!(s, StatusCode::OK, "{c}");
        medledger_proof::verify_json(c.to_string().as_bytes(), &key_text)
            .unwrap_or_else(|e| panic!("{from}..{new_height}: {e}"));
    }
    for (uri, status, expected) in [
        (
            "/v1/checkpoint/consistency?from=0",
            StatusCode::BAD_REQUEST,
            "invalid_range",
        ),
        (
            "/v1/checkpoint/consistency?from=2&to=1",
            StatusCode::BAD_REQUEST,
            "invalid_range",
        ),
        (
            "/v1/checkpoint/consistency?from=1&to=99999",
            StatusCode::BAD_REQUEST,
            "invalid_range",
        ),
        (
            "/v1/checkpoint/consistency",
            StatusCode::BAD_REQUEST,
            "invalid_query",
        ),
        (
            "/v1/tx/not-a-uuid/proof",
            StatusCode::BAD_REQUEST,
            "invalid_tx_id",
        ),
        (
            "/v1/tx/00000000-0000-7000-8000-000000000000/proof",
            StatusCode::NOT_FOUND,
            "not_found",
        ),
    ] {
        let (s, b) = get!(&svc, uri, auditor);
        assert_eq!((s, code(&b)), (status, Some(expected)), "{uri}: {b}");
    }
    for uri in [
        "/v1/checkpoint",
        "/v1/tx/00000000-0000-7000-8000-000000000000/proof",
    ] {
        let (s, b) = get!(&svc, uri, dr);
        assert_eq!(
            (s, code(&b)),
            (StatusCode::FORBIDDEN, Some("forbidden")),
            "{uri}"
        );
    }
    // The checkpoint key survives a restart: the same key id.
    let key_id = key["key_id"].clone();
    drop(svc);
    env.core.close();
    drop(env.core);
    let config = ServeConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        workers: 1,
        ..ServeConfig::new(env.dir.path().to_path_buf())
    };
    let core = Core::open(&config).unwrap();
    assert_eq!(
        core.state.explorer.key_doc().key_id,
        key_id.as_str().unwrap()
    );
    core.close();
}

/// The explorer page is served, self-contained, with a strict content security policy.
#[actix_web::test]
async fn explorer_page_is_served() {
    let env = env();
    let svc = test::init_service(app(env.core.state.clone())).await;
    let res =
        test::call_service(&svc, test::TestRequest::get().uri("/explorer").to_request()).await;
    assert_eq!(res.status(), StatusCode::OK);
    let csp = res
        .headers()
        .get("content-security-policy")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert!(csp.contains("default-src 'none'") && csp.contains("connect-src 'self'"));
    let body = String::from_utf8(test::read_body(res).await.to_vec()).unwrap();
    assert!(body.contains("<title>medledger explorer</title>"));
    // No external resources: every script and style is inline.
    assert!(!body.contains("src=\"http") && !body.contains("href=\"http"));
    drop(svc);
    env.core.close();
}

/// A rotation of the checkpoint key: new checkpoints are signed by the new key, the old
/// key's public half stays published, and a checkpoint signed before verifies with it
/// (and not with the new one). It survives a restart; admins only.
#[actix_web::test]
async fn a_rotated_checkpoint_key_stays_published_and_verifies_what_it_signed() {
    let env = env();
    let svc = test::init_service(app(env.core.state.clone())).await;
    let dr = env.token(Role::Clinician, "dr-1", Some("h-1"));
    let auditor = env.token(Role::Auditor, "au-1", None);
    let admin = env.token(Role::Admin, "admin-1", None);
    let body = json!({"patient_id": "p-1", "hospital_id": "h-1", "record_type": "note"});
    let (s, b) = call!(
        &svc,
        test::TestRequest::post()
            .uri("/v1/records")
            .insert_header(("Authorization", dr.as_str()))
            .set_json(&body)
    );
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let (_, old_key) = call!(&svc, test::TestRequest::get().uri("/v1/checkpoint/key"));
    let (s, old_cp) = get!(&svc, "/v1/checkpoint", auditor);
    assert_eq!(s, StatusCode::OK, "{old_cp}");

    for (token, status) in [
        (&auditor, StatusCode::FORBIDDEN),
        (&dr, StatusCode::FORBIDDEN),
    ] {
        let (s, _) = call!(
            &svc,
            test::TestRequest::post()
                .uri("/v1/checkpoint/rotate")
                .insert_header(("Authorization", token.as_str()))
        );
        assert_eq!(s, status);
    }
    let (s, new_key) = call!(
        &svc,
        test::TestRequest::post()
            .uri("/v1/checkpoint/rotate")
            .insert_header(("Authorization", admin.as_str()))
    );
    assert_eq!(s, StatusCode::OK, "{new_key}");
    assert_ne!(new_key["key_id"], old_key["key_id"]);
    let (_, served) = call!(&svc, test::TestRequest::get().uri("/v1/checkpoint/key"));
    assert_eq!(served, new_key);
    let (s, new_cp) = get!(&svc, "/v1/checkpoint", auditor);
    assert_eq!(s, StatusCode::OK);
    assert_eq!(new_cp["key_id"], new_key["key_id"]);
    medledger_proof::verify_json(new_cp.to_string().as_bytes(), &new_key.to_string()).unwrap();

    // The old key is published with the keys rotated out, and verifies the old checkpoint.
    let (s, keys) = call!(&svc, test::TestRequest::get().uri("/v1/checkpoint/keys"));
    assert_eq!(s, StatusCode::OK, "{keys}");
    assert_eq!(keys["current"], new_key);
    let retired = &keys["retired"][0];
    assert_eq!(retired["key_id"], old_key["key_id"]);
    assert!(retired["retired_at_ms"].as_i64().unwrap() > 0);
    let published = json!({"key_id": retired["key_id"], "public_key": retired["public_key"],
        "algorithm": retired["algorithm"]});
    medledger_proof::verify_json(old_cp.to_string().as_bytes(), &published.to_string()).unwrap();
    assert!(
        medledger_proof::verify_json(old_cp.to_string().as_bytes(), &new_key.to_string()).is_err()
    );

    // After a restart: the new key signs, the old one is still listed.
    drop(svc);
    let Env { dir, core, .. } = env;
    core.close();
    drop(core);
    let config = ServeConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        workers: 1,
        ..ServeConfig::new(dir.path().to_path_buf())
    };
    let core = Core::open(&config).unwrap();
    let svc = test::init_service(app(core.state.clone())).await;
    let (_, keys) = call!(&svc, test::TestRequest::get().uri("/v1/checkpoint/keys"));
    assert_eq!(keys["current"], new_key);
    assert_eq!(keys["retired"][0]["key_id"], old_key["key_id"]);
}
