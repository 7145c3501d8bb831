//! Full-text search over HTTP (`GET /v1/search`): every word matched, newest first, the
//! filters, the pages, the marks, what each caller finds, amendments and erasures
//! followed by the index, the read recorded on the ledger, the index rebuilt from the
//! ledger when it is lost, and no word of the records in its files.

use actix_web::http::StatusCode;
use actix_web::test;
use serde_json::{json, Value};

use medledger::api::auth::Role;
use medledger::search::SearchStore;
use medledger::serve::{app, Core, ServeConfig};

mod common;
use common::api::Env;

macro_rules! call {
    ($svc:expr, $token:expr, $req:expr) => {{
        let req = $req.insert_header(("Authorization", $token.clone()));
        let res = test::call_service($svc, req.to_request()).await;
        let status = res.status();
        let body: Value =
            serde_json::from_slice(&test::read_body(res).await).unwrap_or(Value::Null);
        (status, body)
    }};
}

/// Creates `records` in one batch as `token`; every one must be taken.
macro_rules! create {
    ($svc:expr, $token:expr, $records:expr) => {{
        let (status, body) = call!(
            $svc,
            $token,
            test::TestRequest::post()
                .uri("/v1/records/batch")
                .set_json(json!({ "records": $records }))
        );
        assert_eq!((status, &body["failed"]), (StatusCode::OK, &json!(0)), "{body}");
    }};
}

fn record(id: &str, patient: &str, hospital: &str, kind: &str, at: &str, metadata: Value) -> Value {
    json!({"record_id": id, "patient_id": patient, "hospital_id": hospital,
        "record_type": kind, "created_at": at, "metadata": metadata})
}

/// The record ids of a search answer, in order.
fn ids(body: &Value) -> Vec<String> {
    body["items"]
        .as_array()
        .unwrap_or_else(|| panic!("no items: {body}"))
        .iter()
        .map(|h| h["record"]["record_id"].as_str().unwrap().to_owned())
        .collect()
}

macro_rules! search {
    ($env:expr, $svc:expr, $token:expr, $query:expr) => {{
        let tip = $env.core.state.ledger.tip().height;
        let uri = format!("/v1/search?{}&min_height={tip}", $query);
        call!($svc, $token, test::TestRequest::get().uri(&uri))
    }};
}

#[actix_web::test]
async fn search_finds_every_word_newest_first_marks_them_and_follows_amendments_and_erasures() {
    let env = Env::new();
    let svc = test::init_service(app(env.core.state.clone())).await;
    let admin = env.token(Role::Admin, "admin-1", None);
    let auditor = env.token(Role::Auditor, "au-1", None);
    let records = [
        record(
            "r-1",
            "p-1",
            "h-1",
            "lab_result",
            "2026-10-01T10:00:00Z",
            json!({"title": "Chest X-ray", "note": "left lung clear"}),
        ),
        record(
            "r-2",
            "p-1",
            "h-2",
            "imaging",
            "2026-11-01T10:00:00Z",
            json!({"title": "Chest CT", "note": "Nodule, right <lung>", "codes": ["R91.1"]}),
        ),
        record(
            "r-3",
            "p-2",
            "h-1",
            "lab_result",
            "2026-09-01T10:00:00Z",
            json!({"title": "Blood count", "hb": 135}),
        ),
        record(
            "r-4",
            "p-3",
            "h-2",
            "imaging",
            "2026-08-01T10:00:00Z",
            json!({"title": "Knee MRI", "department": "chest? no: orthopaedics"}),
        ),
    ];
    create!(&svc, admin, records);

    // Every word, any case, newest by clinical time first; keys are not words.
    let (status, body) = search!(env, &svc, auditor, "q=CHEST");
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(ids(&body), ["r-2", "r-1", "r-4"]);
    assert!(body["indexed_height"].as_u64().unwrap() >= 1);
    let (_, body) = search!(env, &svc, auditor, "q=chest%20lung");
    assert_eq!(ids(&body), ["r-2", "r-1"]);
    let (_, body) = search!(env, &svc, auditor, "q=lung+nodule");
    assert_eq!(ids(&body), ["r-2"]);
    // The marks: every matched word of every value, the rest escaped.
    let marks = &body["items"][0]["highlights"];
    assert_eq!(
        marks,
        &json!([{"field": "note", "fragment": "<mark>Nodule</mark>, right &lt;<mark>lung</mark>&gt;"}]),
        "{body}"
    );
    let (_, body) = search!(env, &svc, auditor, "q=135");
    assert_eq!(ids(&body), ["r-3"]);
    let (_, body) = search!(env, &svc, auditor, "q=title");
    assert_eq!(ids(&body), Vec::<String>::new(), "keys are not indexed");
    let (_, body) = search!(env, &svc, auditor, "q=r91+1");
    assert_eq!(ids(&body), ["r-2"]);

    // Filters.
    let (_, body) = search!(env, &svc, auditor, "q=chest&hospital_id=h-1");
    assert_eq!(ids(&body), ["r-1"]);
    let (_, body) = search!(env, &svc, auditor, "q=chest&type=imaging");
    assert_eq!(ids(&body), ["r-2", "r-4"]);
    let (_, body) = search!(env, &svc, auditor, "q=chest&patient_id=p-1");
    assert_eq!(ids(&body), ["r-2", "r-1"]);
    let (_, body) = search!(
        env,
        &svc,
        auditor,
        "q=chest&from=2026-09-15T00:00:00Z&to=2026-10-01T10:00:00Z"
    );
    assert_eq!(ids(&body), ["r-1"]);

    // Pages: a full page has a cursor only when another hit follows.
    let (_, page) = search!(env, &svc, auditor, "q=chest&limit=2");
    assert_eq!(ids(&page), ["r-2", "r-1"]);
    let cursor = page["next_cursor"].as_str().unwrap().to_owned();
    let (_, page) = search!(
        env,
        &svc,
        auditor,
        format!("q=chest&limit=2&cursor={cursor}")
    );
    assert_eq!(ids(&page), ["r-4"]);
    assert_eq!(page["next_cursor"], Value::Null);
    let (_, page) = search!(env, &svc, auditor, "q=chest&limit=3");
    assert_eq!(
        page["next_cursor"],
        Value::Null,
        "no cursor when nothing follows"
    );

    // An amendment replaces the metadata's words; its reason's words are added.
    let (status, body) = call!(&svc, admin, test::TestRequest::post().uri("/v1/records/r-1/amendments")
        .set_json(json!({"reason": "Wrong body part recorded", "metadata": {"title": "Abdomen X-ray"}})));
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (_, body) = search!(env, &svc, auditor, "q=chest");
    assert_eq!(ids(&body), ["r-2", "r-4"]);
    let (_, body) = search!(env, &svc, auditor, "q=abdomen");
    assert_eq!(ids(&body), ["r-1"]);
    let (_, body) = search!(env, &svc, auditor, "q=body+part");
    assert_eq!(ids(&body), ["r-1"]);
    assert_eq!(
        body["items"][0]["highlights"],
        json!([]),
        "a reason's words are not in the metadata"
    );
    // A status change's reason too.
    let (status, body) = call!(
        &svc,
        admin,
        test::TestRequest::post()
            .uri("/v1/records/r-3/status")
            .set_json(json!({"status": "archived", "reason": "duplicate sample"}))
    );
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (_, body) = search!(env, &svc, auditor, "q=duplicate");
    assert_eq!(ids(&body), ["r-3"]);

    // An erasure removes every word of the record.
    let (status, body) = call!(
        &svc,
        admin,
        test::TestRequest::post()
            .uri("/v1/records/r-2/erase")
            .set_json(json!({"reason": "patient request"}))
    );
    assert_eq!(status, StatusCode::OK, "{body}");
    for q in ["chest", "nodule", "r91", "patient"] {
        let (_, body) = search!(env, &svc, auditor, format!("q={q}"));
        assert!(!ids(&body).contains(&"r-2".to_owned()), "{q}: {body}");
    }

    // The hits shown are a read on the ledger, under their patients.
    let tip = env.core.state.ledger.tip().height;
    let (status, log) = call!(
        &svc,
        admin,
        test::TestRequest::get().uri(&format!("/v1/patients/p-3/access-log?min_height={tip}"))
    );
    assert_eq!(status, StatusCode::OK, "{log}");
    let searched = log["items"].as_array().unwrap().iter().any(|e| {
        e["what"] == "search"
            && e["reader"]["id"] == "au-1"
            && e["record_ids"]
                .as_array()
                .is_some_and(|r| r.contains(&json!("r-4")))
    });
    assert!(searched, "{log}");

    // Bad queries, each with its code.
    for (query, code) in [
        ("q=", "invalid_search"),
        ("q=%20.%2C", "invalid_search"),
        ("q=a+b+c+d+e+f+g+h+i", "invalid_search"),
        ("q=chest&limit=0", "invalid_limit"),
        ("q=chest&cursor=nonsense", "invalid_cursor"),
        ("q=chest&patient_id=a%20b", "invalid_id"),
        ("q=chest&type=Not-A-Type", "invalid_type"),
        (
            "q=chest&from=2026-10-02T00:00:00Z&to=2026-10-01T00:00:00Z",
            "invalid_range",
        ),
        ("limit=3", "invalid_query"),
        ("q=chest&bogus=1", "invalid_query"),
    ] {
        let (status, body) = call!(
            &svc,
            auditor,
            test::TestRequest::get().uri(&format!("/v1/search?{query}"))
        );
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (StatusCode::BAD_REQUEST, Some(code)),
            "{query}: {body}"
        );
    }
    let long = format!("/v1/search?q={}", "a".repeat(513));
    let (status, body) = call!(&svc, auditor, test::TestRequest::get().uri(&long));
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_search"))
    );
}

#[actix_web::test]
async fn each_caller_finds_only_what_it_may_read_and_a_page_fills_past_hidden_hits() {
    let env = Env::new();
    let svc = test::init_service(app(env.core.state.clone())).await;
    let admin = env.token(Role::Admin, "admin-1", None);
    let clinician = env.token(Role::Clinician, "dr-1", Some("h-1"));
    let patient = env.token(Role::Patient, "p-9", None);
    // Three of h-1 (older), then 60 of another hospital's patient p-9 (newer): the
    // clinician's page of 3 must reach past the 60 it may not read.
    let mut records = Vec::new();
    for i in 0..3 {
        records.push(record(
            &format!("r-h1-{i}"),
            "p-1",
            "h-1",
            "lab_result",
            &format!("2026-01-0{}T10:00:00Z", i + 1),
            json!({"note": "fever"}),
        ));
    }
    for i in 0..60 {
        records.push(record(
            &format!("r-h2-{i}"),
            "p-9",
            "h-2",
            if i % 2 == 0 { "imaging" } else { "lab_result" },
            &format!("2026-03-01T10:{:02}:00Z", i),
            json!({"note": "fever"}),
        ));
    }
    create!(&svc, admin, records);

    let (status, body) = search!(env, &svc, clinician, "q=fever&limit=3");
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(ids(&body), ["r-h1-2", "r-h1-1", "r-h1-0"]);
    assert_eq!(body["next_cursor"], Value::Null, "nothing more it may read");

    // A grant of imaging only: the clinician now finds p-9's imaging records.
    let (status, body) = call!(
        &svc,
        patient,
        test::TestRequest::post()
            .uri("/v1/patients/p-9/grants")
            .set_json(json!({"grantee_id": "dr-1", "scope": ["imaging"]}))
    );
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (_, body) = search!(env, &svc, clinician, "q=fever&limit=100");
    let found = ids(&body);
    assert_eq!(found.len(), 33, "{found:?}");
    assert!(found.iter().all(|id| id.starts_with("r-h1-")
        || id.trim_start_matches("r-h2-").parse::<u32>().unwrap() % 2 == 0));

    // A patient finds its own records only, and may not name another patient.
    let (_, body) = search!(env, &svc, patient, "q=fever&limit=100");
    assert_eq!(ids(&body).len(), 60);
    assert!(ids(&body).iter().all(|id| id.starts_with("r-h2-")));
    let (status, body) = search!(env, &svc, patient, "q=fever&patient_id=p-1");
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("forbidden")),
        "{body}"
    );
    // Break-glass is for one patient's records, not a search.
    let (status, body) = search!(env, &svc, clinician, "q=fever&break_glass=emergency");
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
}

/// Every file of `dir`, recursively, as bytes.
fn files_of(dir: &std::path::Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files_of(&path));
        } else {
            out.push((path.clone(), std::fs::read(&path).unwrap()));
        }
    }
    out
}

#[actix_web::test]
async fn a_lost_index_is_built_again_from_the_ledger_and_holds_no_word() {
    let dir = tempfile::tempdir().unwrap();
    let config = ServeConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        workers: 1,
        ..ServeConfig::new(dir.path().to_path_buf())
    };
    let admin = common::api::bearer(dir.path(), Role::Admin, "admin-1", None);
    let query = |tip: u64| format!("/v1/search?q=zebrafinch&limit=100&min_height={tip}");
    let first = {
        let core = Core::open(&config).unwrap();
        let svc = test::init_service(app(core.state.clone())).await;
        let records: Vec<Value> = (0..40)
            .map(|i| {
                record(
                    &format!("r-{i}"),
                    &format!("p-{}", i % 7),
                    "h-1",
                    "lab_result",
                    &format!("2026-02-{:02}T10:00:00Z", i % 28 + 1),
                    json!({"note": if i % 3 == 0 { "zebrafinch seen" } else { "nothing" }}),
                )
            })
            .collect();
        create!(&svc, admin, records);
        // An amendment and an erasure, so that a replay meets both.
        let (status, body) = call!(
            &svc,
            admin,
            test::TestRequest::post()
                .uri("/v1/records/r-0/amendments")
                .set_json(json!({"reason": "misread", "metadata": {"note": "an owl"}}))
        );
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let (status, body) = call!(
            &svc,
            admin,
            test::TestRequest::post()
                .uri("/v1/records/r-3/erase")
                .set_json(json!({"reason": "asked"}))
        );
        assert_eq!(status, StatusCode::OK, "{body}");
        let tip = core.state.ledger.tip().height;
        let (status, body) = call!(&svc, admin, test::TestRequest::get().uri(&query(tip)));
        assert_eq!(status, StatusCode::OK, "{body}");
        core.close();
        ids(&body)
    };
    assert_eq!(first.len(), 12, "{first:?}");
    // No word of a record in the index's files (they hold keyed hashes).
    let search_dir = dir.path().join("search");
    for (path, bytes) in files_of(&search_dir) {
        for word in [&b"zebrafinch"[..], b"nothing"] {
            assert!(
                !bytes.windows(word.len()).any(|w| w == word),
                "{} holds a word",
                path.display()
            );
        }
    }
    let rows = || SearchStore::open(&search_dir).unwrap().rows().unwrap();
    let before = rows();
    assert!(before.len() > 40, "{} rows", before.len());

    // Replayed from an earlier height over rows already written (what a crash that
    // lost the height but not the rows would leave): the same rows, no count twice.
    SearchStore::open(&search_dir).unwrap().rewind(1).unwrap();
    let reopen = || async {
        let core = Core::open(&config).unwrap();
        let svc = test::init_service(app(core.state.clone())).await;
        let tip = core.state.ledger.tip().height;
        let (status, body) = call!(&svc, admin, test::TestRequest::get().uri(&query(tip)));
        assert_eq!(status, StatusCode::OK, "{body}");
        core.close();
        ids(&body)
    };
    assert_eq!(reopen().await, first);
    assert!(rows() == before, "a replay changed the index");

    // Lost: built again from the ledger at the next start, with the same hits and rows.
    std::fs::remove_dir_all(&search_dir).unwrap();
    assert_eq!(reopen().await, first);
    assert!(rows() == before, "a rebuilt index differs");
    // Damaged so that it does not open: the server starts all the same and builds it again.
    std::fs::write(search_dir.join("CURRENT"), b"no such manifest\n").unwrap();
    assert_eq!(reopen().await, first);
    assert!(
        rows() == before,
        "an index built again after damage differs"
    );

    // `verify --views` checks the index against one built afresh: equal, then, with one
    // posting deleted behind the index's back, the first difference named.
    let verify = || {
        let mut out = Vec::new();
        let code = medledger::cli::rebuild::run_verify_views(
            dir.path(),
            medledger_views::Backend::RocksDb,
            &mut out,
        );
        let answer: Value = serde_json::from_slice(&out).unwrap();
        (code, answer)
    };
    let (code, answer) = verify();
    assert_eq!(
        (code, &answer["search"]["ok"]),
        (0, &json!(true)),
        "{answer}"
    );
    assert_eq!(
        answer["search"]["rows"].as_u64().unwrap() as usize,
        before.len()
    );
    {
        let cfs = ["postings", "docs", "df", "meta"];
        let db = rocksdb::DB::open_cf(&rocksdb::Options::default(), &search_dir, cfs).unwrap();
        let postings = db.cf_handle("postings").unwrap();
        let (key, _) = db
            .iterator_cf(postings, rocksdb::IteratorMode::Start)
            .next()
            .unwrap()
            .unwrap();
        db.delete_cf(postings, &key).unwrap();
    }
    let (code, answer) = verify();
    assert_eq!(
        (code, &answer["search"]["ok"], &answer["ok"]),
        (1, &json!(false), &json!(false)),
        "{answer}"
    );
    assert!(
        answer["search"]["first_difference"]
            .as_str()
            .unwrap()
            .starts_with("postings "),
        "{answer}"
    );
    assert!(
        !dir.path().join("search.verify").exists(),
        "the fresh index is removed"
    );
}
