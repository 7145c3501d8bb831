//! The authorization matrix: every role × route × ownership cell, asserted.
//!
//! Ownership: a patient's own record or another's; a clinician of the record's hospital,
//! one the patient granted (unexpired, in scope), one whose grant expired, one whose grant
//! covers other record types, one of another hospital; an auditor; an admin; nobody (no
//! token). Each cell states the status, and for lists whether the record is visible.

use actix_web::http::StatusCode;
use actix_web::test;
use serde_json::{json, Value};

use medledger::api::auth::{self, Role};
use medledger::serve::app;

mod common;
use common::api::Env;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Who {
    /// Patient p-1, whose record r-1 is.
    OwnPatient,
    /// Patient p-2.
    OtherPatient,
    /// dr-1 of h-1, the record's hospital.
    SameHospital,
    /// dr-g of h-2, granted by p-1 (no expiry, every type).
    Granted,
    /// dr-x of h-2, whose grant from p-1 has expired.
    ExpiredGrant,
    /// dr-s of h-2, granted by p-1 for `imaging` only (r-1 is a `lab_result`).
    OutOfScopeGrant,
    /// dr-2 of h-2, no grant.
    OtherHospital,
    Auditor,
    Admin,
    Nobody,
}

const EVERYONE: [Who; 10] = [
    Who::OwnPatient,
    Who::OtherPatient,
    Who::SameHospital,
    Who::Granted,
    Who::ExpiredGrant,
    Who::OutOfScopeGrant,
    Who::OtherHospital,
    Who::Auditor,
    Who::Admin,
    Who::Nobody,
];

/// The bearer token of each caller (none for `Nobody`).
fn token(env: &Env, who: Who) -> Option<String> {
    let (role, sub, hospital) = match who {
        Who::OwnPatient => (Role::Patient, "p-1", None),
        Who::OtherPatient => (Role::Patient, "p-2", None),
        Who::SameHospital => (Role::Clinician, "dr-1", Some("h-1")),
        Who::Granted => (Role::Clinician, "dr-g", Some("h-2")),
        Who::ExpiredGrant => (Role::Clinician, "dr-x", Some("h-2")),
        Who::OutOfScopeGrant => (Role::Clinician, "dr-s", Some("h-2")),
        Who::OtherHospital => (Role::Clinician, "dr-2", Some("h-2")),
        Who::Auditor => (Role::Auditor, "au-1", None),
        Who::Admin => (Role::Admin, "admin-1", None),
        Who::Nobody => return None,
    };
    Some(env.token(role, sub, hospital))
}

macro_rules! send {
    ($svc:expr, $env:expr, $who:expr, $req:expr) => {{
        let mut req = $req;
        if let Some(t) = token(&$env, $who) {
            req = req.insert_header(("Authorization", t));
        }
        let res = test::call_service($svc, req.to_request()).await;
        let status = res.status();
        let body = test::read_body(res).await;
        let text = String::from_utf8_lossy(&body).into_owned();
        (status, text)
    }};
}

fn code_of(text: &str) -> String {
    serde_json::from_str::<Value>(text)
        .ok()
        .and_then(|v| v["error"]["code"].as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// What a cell expects: a status, and for lists whether r-1 is in the answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cell {
    /// 409 `not_a_cluster`: allowed, but this server runs as one node.
    NotACluster,
    Ok,
    OkWithout,
    Created,
    Forbidden,
    Unauthorized,
}

fn check(route: &str, who: Who, expected: Cell, status: StatusCode, body: &str) {
    let shows_r1 = body.contains("\"r-1\"");
    let got = match status {
        StatusCode::OK if shows_r1 => Cell::Ok,
        StatusCode::OK => Cell::OkWithout,
        StatusCode::CREATED => Cell::Created,
        StatusCode::FORBIDDEN if code_of(body) == "forbidden" => Cell::Forbidden,
        StatusCode::UNAUTHORIZED if code_of(body) == "unauthorized" => Cell::Unauthorized,
        StatusCode::CONFLICT if code_of(body) == "not_a_cluster" => Cell::NotACluster,
        other => panic!("{route} as {who:?}: unexpected {other}: {body}"),
    };
    assert_eq!(got, expected, "{route} as {who:?}: {status} {body}");
}

/// Auditors and admins see it (without records); nobody else.
const EXPLORERS_ONLY: [Cell; 10] = {
    use Cell::*;
    [
        Forbidden,
        Forbidden,
        Forbidden,
        Forbidden,
        Forbidden,
        Forbidden,
        Forbidden,
        OkWithout,
        OkWithout,
        Unauthorized,
    ]
};

#[actix_web::test]
async fn every_role_route_and_ownership_cell() {
    let env = Env::new();
    let svc = test::init_service(app(env.core.state.clone())).await;
    let admin = Who::Admin;

    // Setup, as the admin and the patient: r-1 (p-1, h-1, lab_result, by dr-1 as
    // admin), grants from p-1 to dr-g (open), dr-s (imaging only), dr-x (expires in 1.5 s),
    // and one record per writer for amendment and status cells.
    let (s, b) = send!(
        &svc,
        env,
        admin,
        test::TestRequest::post().uri("/v1/records").set_json(
            json!({"record_id": "r-1", "patient_id": "p-1", "hospital_id": "h-1",
                "record_type": "lab_result", "metadata": {"title": "CBC"}})
        )
    );
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let soon = chrono_like_rfc3339(auth::now_secs() * 1000 + 1_500);
    for (grantee, extra) in [
        ("dr-g", json!({})),
        ("dr-s", json!({"scope": ["imaging"]})),
        ("dr-x", json!({"expires_at": soon})),
        ("dr-r1", json!({})),
        ("dr-r2", json!({})),
    ] {
        let mut body = json!({"grantee_id": grantee});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let (s, b) = send!(
            &svc,
            env,
            Who::OwnPatient,
            test::TestRequest::post()
                .uri("/v1/patients/p-1/grants")
                .set_json(&body)
        );
        assert_eq!(s, StatusCode::CREATED, "grant to {grantee}: {b}");
    }
    for who in EVERYONE {
        let id = format!("r-w-{who:?}");
        let (s, b) = send!(
            &svc,
            env,
            admin,
            test::TestRequest::post().uri("/v1/records").set_json(
                json!({"record_id": id, "patient_id": "p-1", "hospital_id": "h-1",
                    "record_type": "lab_result"})
            )
        );
        assert_eq!(s, StatusCode::CREATED, "{b}");
    }
    // Let dr-x's grant expire.
    std::thread::sleep(std::time::Duration::from_millis(1_700));

    use Cell::*;
    use Who::*;
    // Reads of r-1 and lists that may contain it. Columns follow EVERYONE's order.
    let reads: [(&str, [Cell; 10]); 9] = [
        (
            "/v1/records/r-1",
            [
                Ok,
                Forbidden,
                Ok,
                Ok,
                Forbidden,
                Forbidden,
                Forbidden,
                Ok,
                Ok,
                Unauthorized,
            ],
        ),
        (
            "/v1/records/r-1/history",
            [
                Ok,
                Forbidden,
                Ok,
                Ok,
                Forbidden,
                Forbidden,
                Forbidden,
                Ok,
                Ok,
                Unauthorized,
            ],
        ),
        (
            "/v1/patients/p-1/records?limit=100",
            [
                Ok,
                Forbidden,
                Ok,
                Ok,
                OkWithout,
                OkWithout,
                OkWithout,
                Ok,
                Ok,
                Unauthorized,
            ],
        ),
        (
            "/v1/patients/p-1/export",
            [
                Ok,
                Forbidden,
                Ok,
                Ok,
                OkWithout,
                OkWithout,
                OkWithout,
                Ok,
                Ok,
                Unauthorized,
            ],
        ),
        (
            "/v1/patients/p-1/grants",
            [
                OkWithout,
                Forbidden,
                Forbidden,
                Forbidden,
                Forbidden,
                Forbidden,
                Forbidden,
                Forbidden,
                OkWithout,
                Unauthorized,
            ],
        ),
        (
            "/v1/hospitals/h-1/records?limit=100",
            [
                Forbidden,
                Forbidden,
                Ok,
                Forbidden,
                Forbidden,
                Forbidden,
                Forbidden,
                Ok,
                Ok,
                Unauthorized,
            ],
        ),
        (
            "/v1/clinicians/admin-1/records?limit=100",
            [
                Forbidden,
                Forbidden,
                Forbidden,
                Forbidden,
                Forbidden,
                Forbidden,
                Forbidden,
                Ok,
                Ok,
                Unauthorized,
            ],
        ),
        ("/v1/chain", EXPLORERS_ONLY),
        ("/v1/cluster", EXPLORERS_ONLY),
    ];
    for (route, cells) in reads {
        for (who, expected) in EVERYONE.into_iter().zip(cells) {
            let (s, b) = send!(&svc, env, who, test::TestRequest::get().uri(route));
            check(route, who, expected, s, &b);
        }
    }
    // dr-1's own list: only dr-1 (and auditors, admins) may read it.
    for who in EVERYONE {
        let (s, b) = send!(
            &svc,
            env,
            who,
            test::TestRequest::get().uri("/v1/clinicians/dr-1/records")
        );
        let expected = match who {
            SameHospital | Auditor | Admin => OkWithout,
            Nobody => Unauthorized,
            _ => Forbidden,
        };
        check("/v1/clinicians/dr-1/records", who, expected, s, &b);
    }

    // Writes. Creating for h-1: its clinicians and admins.
    for who in EVERYONE {
        let (s, b) = send!(
            &svc,
            env,
            who,
            test::TestRequest::post().uri("/v1/records").set_json(
                json!({"record_id": format!("r-new-{who:?}"), "patient_id": "p-1",
                    "hospital_id": "h-1", "record_type": "lab_result"})
            )
        );
        let expected = match who {
            SameHospital | Admin => Created,
            Nobody => Unauthorized,
            _ => Forbidden,
        };
        check("POST /v1/records", who, expected, s, &b);
    }
    // Amending and changing the status of an h-1 record: the same; a grant is for reading.
    for who in EVERYONE {
        let id = format!("r-w-{who:?}");
        let (s, b) = send!(
            &svc,
            env,
            who,
            test::TestRequest::post()
                .uri(&format!("/v1/records/{id}/amendments"))
                .set_json(json!({"reason": "typo", "metadata": {"title": "fixed"}}))
        );
        let expected = match who {
            SameHospital | Admin => Created,
            Nobody => Unauthorized,
            _ => Forbidden,
        };
        check("POST amendments", who, expected, s, &b);
        let (s, b) = send!(
            &svc,
            env,
            who,
            test::TestRequest::post()
                .uri(&format!("/v1/records/{id}/status"))
                .set_json(json!({"status": "archived", "reason": "done"}))
        );
        check("POST status", who, expected, s, &b);
    }
    // Granting and revoking p-1's access: p-1 and admins.
    for who in EVERYONE {
        let (s, b) = send!(
            &svc,
            env,
            who,
            test::TestRequest::post()
                .uri("/v1/patients/p-1/grants")
                .set_json(json!({"grantee_id": format!("dr-new-{who:?}")}))
        );
        let expected = match who {
            OwnPatient | Admin => Created,
            Nobody => Unauthorized,
            _ => Forbidden,
        };
        check("POST grants", who, expected, s, &b);
        let grantee = match who {
            OwnPatient => "dr-r1",
            Admin => "dr-r2",
            _ => "dr-g",
        };
        let (s, b) = send!(
            &svc,
            env,
            who,
            test::TestRequest::delete().uri(&format!("/v1/patients/p-1/grants/{grantee}"))
        );
        let expected = match who {
            OwnPatient | Admin => OkWithout,
            Nobody => Unauthorized,
            _ => Forbidden,
        };
        check("DELETE grant", who, expected, s, &b);
    }
    drop(svc);
    env.core.close();
}

/// RFC 3339 UTC text of `ms` since the epoch, as the API reads timestamps.
fn chrono_like_rfc3339(ms: u64) -> String {
    medledger::chaincode::Timestamp(ms as i64).to_string()
}

/// The routes `every_role_route_and_ownership_cell` exercises, as `ROUTES` names them.
const MATRIX_ROUTES: &[(&str, &str)] = &[
    ("post", "/v1/records"),
    ("get", "/v1/records/{id}"),
    ("get", "/v1/records/{id}/history"),
    ("post", "/v1/records/{id}/amendments"),
    ("post", "/v1/records/{id}/status"),
    ("get", "/v1/patients/{id}/records"),
    ("get", "/v1/patients/{id}/export"),
    ("post", "/v1/patients/{id}/grants"),
    ("get", "/v1/patients/{id}/grants"),
    ("delete", "/v1/patients/{id}/grants/{grantee}"),
    ("get", "/v1/clinicians/{id}/records"),
    ("get", "/v1/hospitals/{id}/records"),
    ("get", "/v1/chain"),
    ("get", "/v1/cluster"),
];

/// The routes `payload_batch_and_explorer_cells` exercises.
const MORE_ROUTES: &[(&str, &str)] = &[
    ("post", "/v1/records/batch"),
    ("get", "/v1/records/{id}/payload"),
    ("post", "/v1/records/{id}/erase"),
    ("post", "/v1/patients/{id}/erase"),
    ("post", "/v1/keys/rotate"),
    ("post", "/v1/keys/rotate-jwt"),
    ("post", "/v1/checkpoint/rotate"),
    ("get", "/v1/ipfs/status"),
    ("get", "/v1/blocks"),
    ("get", "/v1/blocks/by-hash/{hash}"),
    ("get", "/v1/blocks/{number}"),
    ("get", "/v1/tx/{id}"),
    ("get", "/v1/tx/{id}/proof"),
    ("get", "/v1/checkpoint"),
    ("get", "/v1/checkpoint/consistency"),
    ("get", "/v1/activity"),
];

/// Every route that needs a token has its cells here: a new route fails this test until
/// it is added to one of the two matrices.
#[actix_web::test]
async fn every_route_with_a_token_is_in_the_matrix() {
    let mut covered: Vec<(&str, &str)> = MATRIX_ROUTES
        .iter()
        .chain(MORE_ROUTES)
        .chain(CLUSTER_ROUTES)
        .copied()
        .collect();
    covered.sort_unstable();
    let mut needed: Vec<(&str, &str)> = medledger::api::ROUTES
        .iter()
        .filter(|r| r.auth)
        .map(|r| (r.method, r.path))
        .collect();
    needed.sort_unstable();
    assert_eq!(
        covered, needed,
        "routes with a token vs the matrices' routes"
    );
}

/// The routes `cluster_membership_cells` exercises.
const CLUSTER_ROUTES: &[(&str, &str)] = &[
    ("post", "/v1/cluster/learners"),
    ("post", "/v1/cluster/voters"),
    ("post", "/v1/cluster/leader"),
];

/// Membership changes and leadership transfers are for admins alone (on one node they are refused as such; the
/// cluster tests change a real cluster's membership).
#[actix_web::test]
async fn cluster_membership_cells() {
    use Cell::*;
    let env = Env::new();
    let svc = test::init_service(app(env.core.state.clone())).await;
    let bodies = [
        (
            "/v1/cluster/learners",
            json!({"id": 4, "raft": "127.0.0.1:7104", "http": "127.0.0.1:8104"}),
        ),
        ("/v1/cluster/voters", json!({"voters": [1, 2, 4]})),
        ("/v1/cluster/leader", json!({"id": 2})),
    ];
    for (route, body) in bodies {
        let cells = [
            Forbidden,
            Forbidden,
            Forbidden,
            Forbidden,
            Forbidden,
            Forbidden,
            Forbidden,
            Forbidden,
            NotACluster,
            Unauthorized,
        ];
        for (who, expected) in EVERYONE.into_iter().zip(cells) {
            let req = test::TestRequest::post().uri(route).set_json(body.clone());
            let (s, b) = send!(&svc, env, who, req);
            check(route, who, expected, s, &b);
        }
    }
}

#[actix_web::test]
async fn payload_batch_and_explorer_cells() {
    use Cell::*;
    use Who::*;
    let env = Env::new();
    let svc = test::init_service(app(env.core.state.clone())).await;

    // r-1 of p-1 at h-1 with a payload; one more per caller to erase; p-1 grants dr-g.
    let with_payload = |id: &str| {
        json!({"record_id": id, "patient_id": "p-1", "hospital_id": "h-1",
            "record_type": "lab_result", "metadata": {"title": "CBC"},
            "payload": {"content_type": "application/json", "data": {"wbc": 5.1}}})
    };
    let (s, created) = send!(
        &svc,
        env,
        Admin,
        test::TestRequest::post()
            .uri("/v1/records")
            .set_json(with_payload("r-1"))
    );
    assert_eq!(s, StatusCode::CREATED, "{created}");
    let created: Value = serde_json::from_str(&created).unwrap();
    let tx_id = created["tx_id"].as_str().unwrap().to_owned();
    for who in EVERYONE {
        let (s, b) = send!(
            &svc,
            env,
            Admin,
            test::TestRequest::post()
                .uri("/v1/records")
                .set_json(with_payload(&format!("r-e-{who:?}")))
        );
        assert_eq!(s, StatusCode::CREATED, "{b}");
    }
    let (s, b) = send!(
        &svc,
        env,
        OwnPatient,
        test::TestRequest::post()
            .uri("/v1/patients/p-1/grants")
            .set_json(json!({"grantee_id": "dr-g"}))
    );
    assert_eq!(s, StatusCode::CREATED, "{b}");

    // The payload: those who may read the record, but never auditors.
    for who in EVERYONE {
        let (s, b) = send!(
            &svc,
            env,
            who,
            test::TestRequest::get().uri("/v1/records/r-1/payload")
        );
        let expected = match who {
            OwnPatient | SameHospital | Granted | Admin => OkWithout,
            Nobody => Unauthorized,
            _ => Forbidden,
        };
        check("GET payload", who, expected, s, &b);
    }
    // Admin-only writes: erasing a record, forgetting a patient (p-e has no records: an
    // admin's answer is 200 with nothing erased), rotating the master key, the
    // checkpoint key and the JWT secret.
    for who in EVERYONE {
        let expected = match who {
            Admin => OkWithout,
            Nobody => Unauthorized,
            _ => Forbidden,
        };
        let reason = json!({"reason": "patient request"});
        for (label, req) in [
            (
                "POST erase",
                test::TestRequest::post()
                    .uri(&format!("/v1/records/r-e-{who:?}/erase"))
                    .set_json(&reason),
            ),
            (
                "POST patient erase",
                test::TestRequest::post()
                    .uri("/v1/patients/p-e/erase")
                    .set_json(&reason),
            ),
            (
                "POST keys rotate",
                test::TestRequest::post().uri("/v1/keys/rotate"),
            ),
            // The tokens of this test, minted with the old secret, stay accepted: the
            // grace is an hour.
            (
                "POST checkpoint rotate",
                test::TestRequest::post().uri("/v1/checkpoint/rotate"),
            ),
            (
                "POST keys rotate-jwt",
                test::TestRequest::post()
                    .uri("/v1/keys/rotate-jwt")
                    .set_json(json!({"grace_seconds": 3600})),
            ),
        ] {
            let (s, b) = send!(&svc, env, who, req);
            check(label, who, expected, s, &b);
        }
    }
    // A batch for h-1: each item is judged like a create (the answer is 200 with an
    // outcome per item), so the cell is that item's status.
    for who in EVERYONE {
        let (s, b) = send!(
            &svc,
            env,
            who,
            test::TestRequest::post()
                .uri("/v1/records/batch")
                .set_json(json!({"records": [
                    {"record_id": format!("r-b-{who:?}"), "patient_id": "p-1",
                     "hospital_id": "h-1", "record_type": "lab_result"}
                ]}))
        );
        let item = match who {
            SameHospital | Admin => Some(201),
            Nobody => None,
            _ => Some(403),
        };
        match item {
            None => check("POST batch", who, Unauthorized, s, &b),
            Some(item) => {
                assert_eq!(s, StatusCode::OK, "POST batch as {who:?}: {b}");
                let body: Value = serde_json::from_str(&b).unwrap();
                assert_eq!(
                    body["items"][0]["status"], item,
                    "POST batch as {who:?}: {b}"
                );
            }
        }
    }

    // The explorer and the payload store's status: auditors and admins.
    let (s, block) = send!(
        &svc,
        env,
        Admin,
        test::TestRequest::get().uri("/v1/blocks/1")
    );
    assert_eq!(s, StatusCode::OK, "{block}");
    let hash = serde_json::from_str::<Value>(&block).unwrap()["hash"]
        .as_str()
        .unwrap()
        .to_owned();
    let (s, checkpoint) = send!(
        &svc,
        env,
        Admin,
        test::TestRequest::get().uri("/v1/checkpoint")
    );
    assert_eq!(s, StatusCode::OK, "{checkpoint}");
    let size = serde_json::from_str::<Value>(&checkpoint).unwrap()["tree_size"]
        .as_u64()
        .unwrap();
    for route in [
        "/v1/ipfs/status".to_owned(),
        "/v1/blocks".to_owned(),
        format!("/v1/blocks/by-hash/{hash}"),
        "/v1/blocks/1".to_owned(),
        format!("/v1/tx/{tx_id}"),
        format!("/v1/tx/{tx_id}/proof"),
        "/v1/checkpoint".to_owned(),
        format!("/v1/checkpoint/consistency?from=1&to={size}"),
        "/v1/activity".to_owned(),
    ] {
        for who in EVERYONE {
            let (s, b) = send!(&svc, env, who, test::TestRequest::get().uri(&route));
            let expected = match who {
                Auditor | Admin => OkWithout,
                Nobody => Unauthorized,
                _ => Forbidden,
            };
            let expected = if expected == OkWithout && b.contains("\"r-1\"") {
                Ok
            } else {
                expected
            };
            check(&route, who, expected, s, &b);
        }
    }
    drop(svc);
    env.core.close();
}

/// A timeline page holds the rows the caller may read, however many it may not read lie
/// between them: neither a short page nor a cursor tells that hidden records exist.
#[actix_web::test]
async fn pages_do_not_reveal_hidden_records() {
    let env = Env::new();
    let svc = test::init_service(app(env.core.state.clone())).await;
    // p-1's records, newest last: 6 lab results, the imaging study dr-s may read, 6 more.
    for i in 0..13 {
        let record_type = if i == 6 { "imaging" } else { "lab_result" };
        let (s, b) = send!(
            &svc,
            env,
            Who::Admin,
            test::TestRequest::post().uri("/v1/records").set_json(
                json!({"record_id": format!("r-{i}"), "patient_id": "p-1", "hospital_id": "h-1",
                    "record_type": record_type})
            )
        );
        assert_eq!(s, StatusCode::CREATED, "{b}");
    }
    let (s, b) = send!(
        &svc,
        env,
        Who::OwnPatient,
        test::TestRequest::post()
            .uri("/v1/patients/p-1/grants")
            .set_json(json!({"grantee_id": "dr-s", "scope": ["imaging"]}))
    );
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let page = |uri: String| {
        let svc = &svc;
        let env = &env;
        async move {
            let (s, b) = send!(
                svc,
                env,
                Who::OutOfScopeGrant,
                test::TestRequest::get().uri(&uri)
            );
            assert_eq!(s, StatusCode::OK, "{b}");
            serde_json::from_str::<Value>(&b).unwrap()
        }
    };
    // A page of one: the readable record, though six newer ones come first.
    let first = page("/v1/patients/p-1/records?limit=1".into()).await;
    let ids: Vec<_> = first["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["record_id"].clone())
        .collect();
    assert_eq!(ids, vec![json!("r-6")], "{first}");
    // What follows holds nothing more (the six older ones are hidden too).
    if let Some(cursor) = first["next_cursor"].as_str() {
        let rest = page(format!("/v1/patients/p-1/records?limit=1&cursor={cursor}")).await;
        assert_eq!(rest["items"], json!([]), "{rest}");
        assert!(rest["next_cursor"].is_null(), "{rest}");
    }
    // A page of five: the one record, and no cursor (nothing more it may read).
    let all = page("/v1/patients/p-1/records?limit=5".into()).await;
    assert_eq!(all["items"].as_array().unwrap().len(), 1, "{all}");
    assert!(all["next_cursor"].is_null(), "{all}");
}
