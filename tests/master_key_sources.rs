//! Where the master key comes from: a file (0600, created on first start), the
//! environment (`MEDLEDGER_MASTER_KEY_HEX`), or a command's output (a KMS client). One
//! way at a time; a wrong key is refused at start, not found out on the first read; the
//! errors never repeat the key or the command's output. And its rotation, online.

use actix_web::http::StatusCode;
use actix_web::test;
use serde_json::json;

use medledger::api::auth::Role;
use medledger::serve::{app, master_key_from_hex, Core, ServeConfig};

mod common;
use common::api::bearer;

const KEY_A: &str = "0a0b0c0d0e0f101112131415161718191a1b1c1d1e1f202122232425262728aa";
const KEY_B: &str = "ff0b0c0d0e0f101112131415161718191a1b1c1d1e1f202122232425262728bb";

fn config(dir: &std::path::Path, set: impl FnOnce(&mut ServeConfig)) -> ServeConfig {
    let mut c = ServeConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        workers: 1,
        ..ServeConfig::new(dir.to_path_buf())
    };
    set(&mut c);
    c
}

fn open_err(c: &ServeConfig) -> String {
    match Core::open(c) {
        Ok(_) => panic!("the server started"),
        Err(e) => e.to_string(),
    }
}

/// A GET of `uri` through `svc` with the `Authorization` value `token`.
macro_rules! get {
    ($svc:expr, $uri:expr, $token:expr) => {
        test::call_service(
            $svc,
            test::TestRequest::get()
                .uri($uri)
                .insert_header(("Authorization", $token))
                .to_request(),
        )
        .await
    };
}

fn token(dir: &std::path::Path) -> String {
    bearer(dir, Role::Clinician, "dr-1", Some("h-1"))
}

#[actix_web::test]
async fn the_key_from_a_command_or_the_environment_opens_what_it_sealed() {
    let dir = tempfile::tempdir().unwrap();
    // A command (as a KMS client would be) seals a record and its payload...
    let by_command = config(dir.path(), |c| {
        c.payloads.master_key_command = Some(format!("printf '%s\\n' {KEY_A}"));
    });
    let core = Core::open(&by_command).unwrap();
    let svc = test::init_service(app(core.state.clone())).await;
    let dr = token(dir.path());
    let res = test::call_service(
        &svc,
        test::TestRequest::post()
            .uri("/v1/records")
            .insert_header(("Authorization", dr.as_str()))
            .set_json(
                json!({"record_id": "r-1", "patient_id": "p-1", "hospital_id": "h-1",
                "record_type": "note", "metadata": {"n": 1},
                "payload": {"content_type": "text/plain", "data": "document"}}),
            )
            .to_request(),
    )
    .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    // The answer holds the app's state (and so the ledger) until dropped.
    drop(res);
    drop(svc);
    core.close();
    drop(core);
    assert!(
        !dir.path().join("payloads/master.key").exists(),
        "no key file is made when the key comes from elsewhere"
    );

    // ... and the same key from the environment opens both.
    let by_env = config(dir.path(), |c| {
        c.payloads.master_key_hex = Some(master_key_from_hex(KEY_A).unwrap());
    });
    let core = Core::open(&by_env).unwrap();
    let svc = test::init_service(app(core.state.clone())).await;
    let res = get!(&svc, "/v1/records/r-1", dr.as_str());
    assert_eq!(res.status(), StatusCode::OK);
    let body: serde_json::Value = test::read_body_json(res).await;
    assert_eq!(body["metadata"], json!({"n": 1}));
    let res = get!(&svc, "/v1/records/r-1/payload", dr.as_str());
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(test::read_body(res).await, "\"document\"".as_bytes());
    drop(svc);
    core.close();
    drop(core);

    // Another key is refused at start, naming no key.
    let wrong = open_err(&config(dir.path(), |c| {
        c.payloads.master_key_hex = Some(master_key_from_hex(KEY_B).unwrap());
    }));
    assert!(wrong.contains("does not unwrap"), "{wrong}");
    assert!(!wrong.contains(KEY_B) && !wrong.contains(KEY_A), "{wrong}");
}

#[actix_web::test]
async fn bad_sources_are_refused_without_echoing_them() {
    let dir = tempfile::tempdir().unwrap();
    let two = open_err(&config(dir.path(), |c| {
        c.payloads.master_key_hex = Some(master_key_from_hex(KEY_A).unwrap());
        c.payloads.master_key_command = Some(format!("printf {KEY_A}"));
    }));
    assert!(two.contains("one way"), "{two}");
    let failed = open_err(&config(dir.path(), |c| {
        c.payloads.master_key_command = Some("echo SECRET-OUTPUT; exit 3".into());
    }));
    assert!(failed.contains("failed"), "{failed}");
    assert!(!failed.contains("SECRET-OUTPUT"), "{failed}");
    let not_hex = open_err(&config(dir.path(), |c| {
        c.payloads.master_key_command = Some("echo not-a-key-SECRET".into());
    }));
    assert!(not_hex.contains("64 hex digits"), "{not_hex}");
    assert!(!not_hex.contains("SECRET"), "{not_hex}");
    let short = master_key_from_hex("abcd").unwrap_err();
    assert!(!short.contains("abcd"), "{short}");
    // Nothing was started by any of them: a default start works and makes its key file.
    let core = Core::open(&config(dir.path(), |_| {})).unwrap();
    core.close();
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(dir.path().join("payloads/master.key"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
}

#[actix_web::test]
async fn a_rotation_online_keeps_every_record_and_payload_readable() {
    let dir = tempfile::tempdir().unwrap();
    let core = Core::open(&config(dir.path(), |_| {})).unwrap();
    let svc = test::init_service(app(core.state.clone())).await;
    let dr = token(dir.path());
    let admin = bearer(dir.path(), Role::Admin, "admin-1", None);
    for i in 0..20 {
        let res = test::call_service(
            &svc,
            test::TestRequest::post()
                .uri("/v1/records")
                .insert_header(("Authorization", dr.as_str()))
                .set_json(json!({"record_id": format!("r-{i}"), "patient_id": "p-1",
                    "hospital_id": "h-1", "record_type": "note", "metadata": {"i": i},
                    "payload": {"content_type": "text/plain", "data": format!("doc {i}")}}))
                .to_request(),
        )
        .await;
        assert_eq!(res.status(), StatusCode::CREATED);
    }
    let master = dir.path().join("payloads/master.key");
    let before = std::fs::read(&master).unwrap();
    let res = test::call_service(
        &svc,
        test::TestRequest::post()
            .uri("/v1/keys/rotate")
            .insert_header(("Authorization", admin.as_str()))
            .to_request(),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    let body: serde_json::Value = test::read_body_json(res).await;
    // 20 records' content keys and 20 payloads' keys.
    assert_eq!(body["keys_rewrapped"], 40, "{body}");
    assert_ne!(
        std::fs::read(&master).unwrap(),
        before,
        "a new master key file"
    );
    for i in 0..20 {
        let res = get!(&svc, &format!("/v1/records/r-{i}"), dr.as_str());
        let body: serde_json::Value = test::read_body_json(res).await;
        assert_eq!(body["metadata"], json!({"i": i}));
        let res = get!(&svc, &format!("/v1/records/r-{i}/payload"), dr.as_str());
        assert_eq!(
            test::read_body(res).await,
            format!("\"doc {i}\"").as_bytes()
        );
    }
    drop(svc);
    core.close();
    drop(core);
    // After a restart the new master key opens everything; a new record too.
    let core = Core::open(&config(dir.path(), |_| {})).unwrap();
    let svc = test::init_service(app(core.state.clone())).await;
    let res = get!(&svc, "/v1/records/r-7", dr.as_str());
    let body: serde_json::Value = test::read_body_json(res).await;
    assert_eq!(body["metadata"], json!({"i": 7}));
    drop(svc);
    core.close();
    drop(core);

    // A key from the environment is not this server's to rotate.
    let other = tempfile::tempdir().unwrap();
    let core = Core::open(&config(other.path(), |c| {
        c.payloads.master_key_hex = Some(master_key_from_hex(KEY_A).unwrap());
    }))
    .unwrap();
    let svc = test::init_service(app(core.state.clone())).await;
    let admin = bearer(other.path(), Role::Admin, "admin-1", None);
    let res = test::call_service(
        &svc,
        test::TestRequest::post()
            .uri("/v1/keys/rotate")
            .insert_header(("Authorization", admin.as_str()))
            .to_request(),
    )
    .await;
    assert_eq!(res.status(), StatusCode::CONFLICT);
    let body: serde_json::Value = test::read_body_json(res).await;
    assert_eq!(body["error"]["code"], "master_key_not_a_file");
}
