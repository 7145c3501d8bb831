//! Every read of clinical content is on the ledger (issue 25): a record, its history, an
//! earlier version, a timeline page, an export and a payload each append a `RecordsRead`
//! event, durable before the answer; the patient's and the record's access logs show
//! them; break-glass lets a clinician without a grant read, flagged; a page's cursor does
//! not promise records the caller cannot see.

use actix_web::http::StatusCode;
use actix_web::test;
use serde_json::{json, Value};

use medledger::api::auth::Role;
use medledger::serve::app;
use medledger_chaincode::{Envelope, Event};

#[macro_use]
mod common;
use common::api::Env;

/// p-1's access log, once the views hold every block the ledger holds now.
fn patient_log(env: &Env) -> String {
    format!(
        "/v1/patients/p-1/access-log?min_height={}",
        env.core.state.ledger.tip().height
    )
}

/// The `RecordsRead` events on the ledger, oldest first.
fn reads_on_ledger(env: &Env) -> Vec<medledger_chaincode::RecordsRead> {
    let ledger = &env.core.state.ledger;
    let mut out = Vec::new();
    for n in 0..ledger.tip().height {
        for tx in ledger.block(n).unwrap().unwrap().txs {
            if let Event::RecordsRead(e) = Envelope::decode(&tx).unwrap().event {
                out.push(e);
            }
        }
    }
    out
}

/// Creates a record as `token`; its id.
macro_rules! create {
    ($svc:expr, $token:expr, $patient:expr, $hospital:expr, $type:expr) => {{
        let (s, b) = call!(
            $svc,
            test::TestRequest::post()
                .uri("/v1/records")
                .insert_header(("Authorization", $token.as_str()))
                .set_json(json!({"patient_id": $patient, "hospital_id": $hospital,
                    "record_type": $type, "metadata": {"title": "CBC"}}))
        );
        assert_eq!(s, StatusCode::CREATED, "{b}");
        b["record_id"].as_str().unwrap().to_owned()
    }};
}

#[actix_web::test]
async fn every_read_of_clinical_content_is_on_the_ledger_before_it_is_answered() {
    let env = Env::new();
    let svc = test::init_service(app(env.core.state.clone())).await;
    let dr1 = env.token(Role::Clinician, "dr-1", Some("h-1"));
    let p1 = env.token(Role::Patient, "p-1", None);
    let auditor = env.token(Role::Auditor, "au-1", None);
    let r1 = create!(&svc, dr1, "p-1", "h-1", "lab_result");
    let r2 = create!(&svc, dr1, "p-1", "h-1", "imaging");
    assert!(reads_on_ledger(&env).is_empty(), "writes are not reads");

    let get = |uri: String, token: &str| {
        test::TestRequest::get()
            .uri(&uri)
            .insert_header(("Authorization", token.to_owned()))
    };
    let (s, b) = call!(&svc, get(format!("/v1/records/{r1}"), &dr1));
    assert_eq!(s, StatusCode::OK, "{b}");
    // Durable before the answer: the event is in the ledger now, not later.
    let reads = reads_on_ledger(&env);
    assert_eq!(reads.len(), 1);
    let e = &reads[0];
    assert_eq!(
        (
            e.patient_id.as_str(),
            e.record_ids.clone(),
            e.reader_id.as_str(),
            e.reader_role.as_str(),
            e.reader_hospital.as_deref(),
            e.what.as_str(),
            e.purpose.as_str(),
            e.break_glass.is_some()
        ),
        (
            "p-1",
            vec![r1.clone()],
            "dr-1",
            "clinician",
            Some("h-1"),
            "record",
            "treatment",
            false
        )
    );
    // History, an earlier version, a timeline page (both records, one event), an export.
    let (s, _) = call!(&svc, get(format!("/v1/records/{r1}/history"), &p1));
    assert_eq!(s, StatusCode::OK);
    let tip = env.core.state.ledger.tip().height;
    let (s, _) = call!(
        &svc,
        get(
            format!("/v1/records/{r1}?as_of_block={tip}&purpose=patient_request"),
            &p1
        )
    );
    assert_eq!(s, StatusCode::OK);
    let (s, b) = call!(&svc, get("/v1/patients/p-1/records".into(), &p1));
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b["items"].as_array().unwrap().len(), 2);
    let (s, _) = call!(&svc, get("/v1/patients/p-1/export".into(), &auditor));
    assert_eq!(s, StatusCode::OK);
    let reads = reads_on_ledger(&env);
    let seen: Vec<(&str, &str, usize)> = reads
        .iter()
        .map(|e| (e.what.as_str(), e.reader_id.as_str(), e.record_ids.len()))
        .collect();
    assert_eq!(
        seen,
        [
            ("record", "dr-1", 1),
            ("history", "p-1", 1),
            ("as_of", "p-1", 1),
            ("timeline", "p-1", 2),
            ("export", "au-1", 2),
        ]
    );
    assert_eq!(reads[2].purpose, "patient_request");

    // Another page read (no validator sent) is another read; a 304 shows nothing new.
    let (s, _) = call!(&svc, get("/v1/patients/p-1/records".into(), &p1));
    assert_eq!(s, StatusCode::OK);
    let before = reads_on_ledger(&env).len();
    let res = test::call_service(&svc, get(format!("/v1/records/{r2}"), &p1).to_request()).await;
    let etag = res
        .headers()
        .get("etag")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(reads_on_ledger(&env).len(), before + 1);
    let (s, _) = call!(
        &svc,
        get(format!("/v1/records/{r2}"), &p1).insert_header(("If-None-Match", etag))
    );
    assert_eq!(s, StatusCode::NOT_MODIFIED);
    assert_eq!(reads_on_ledger(&env).len(), before + 1);

    // A refused read is no read; an unknown purpose is refused before anything is read.
    let p2 = env.token(Role::Patient, "p-2", None);
    let (s, _) = call!(&svc, get(format!("/v1/records/{r1}"), &p2));
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, b) = call!(
        &svc,
        get(format!("/v1/records/{r1}?purpose=curiosity"), &dr1)
    );
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_purpose"))
    );
    assert_eq!(reads_on_ledger(&env).len(), before + 1);

    // The access logs: the patient's (newest first, with the records), the record's.
    let (s, b) = call!(&svc, get(patient_log(&env), &p1));
    assert_eq!(s, StatusCode::OK, "{b}");
    let items = b["items"].as_array().unwrap();
    assert_eq!(items.len(), before + 1);
    assert_eq!(items[0]["what"], "record");
    assert_eq!(items[0]["reader"]["id"], "p-1");
    assert_eq!(items[0]["record_ids"], json!([r2]));
    assert_eq!(
        items.last().unwrap()["reader"],
        json!({"id": "dr-1", "role": "clinician", "hospital": "h-1"})
    );
    let (s, b) = call!(
        &svc,
        get(format!("/v1/records/{r1}/access-log?limit=2"), &auditor)
    );
    assert_eq!(s, StatusCode::OK, "{b}");
    let items = b["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!(
        (items[0]["what"].as_str(), items[1]["what"].as_str()),
        (Some("timeline"), Some("export"))
    );
    // The page read named both records; the record's log shows the whole read.
    assert_eq!(items[0]["record_ids"].as_array().unwrap().len(), 2);
    let cursor = b["next_cursor"].as_str().unwrap().to_owned();
    let (s, b) = call!(
        &svc,
        get(
            format!("/v1/records/{r1}/access-log?limit=10&cursor={cursor}"),
            &auditor
        )
    );
    assert_eq!(s, StatusCode::OK);
    let rest: Vec<&str> = b["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["what"].as_str().unwrap())
        .collect();
    assert_eq!(rest, ["timeline", "as_of", "history", "record"]);
    assert_eq!(b["next_cursor"], Value::Null);
    // Who may read the logs: not another patient, not a clinician.
    for token in [&p2, &dr1] {
        let (s, _) = call!(&svc, get("/v1/patients/p-1/access-log".into(), token));
        assert_eq!(s, StatusCode::FORBIDDEN);
        let (s, _) = call!(&svc, get(format!("/v1/records/{r1}/access-log"), token));
        assert_eq!(s, StatusCode::FORBIDDEN);
    }
    let (s, b) = call!(
        &svc,
        get("/v1/patients/p-1/access-log?cursor=x".into(), &p1)
    );
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_cursor"))
    );
}

#[actix_web::test]
async fn break_glass_opens_one_patients_records_flagged_and_counted() {
    let env = Env::new();
    let svc = test::init_service(app(env.core.state.clone())).await;
    let dr1 = env.token(Role::Clinician, "dr-1", Some("h-1"));
    let er = env.token(Role::Clinician, "dr-er", Some("h-9"));
    let p1 = env.token(Role::Patient, "p-1", None);
    let r1 = create!(&svc, dr1, "p-1", "h-1", "lab_result");
    let get = |uri: String, token: &str| {
        test::TestRequest::get()
            .uri(&uri)
            .insert_header(("Authorization", token.to_owned()))
    };
    // Without a grant: 403, as ever, and nothing read.
    let (s, _) = call!(&svc, get(format!("/v1/records/{r1}"), &er));
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, b) = call!(&svc, get("/v1/patients/p-1/records".into(), &er));
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b["items"], json!([]));
    assert!(
        reads_on_ledger(&env).is_empty(),
        "an empty page shows nothing"
    );
    // Break-glass: allowed, flagged, the reason sealed (not in the ledger's bytes).
    let reason = "unconscious-in-ER-no-consent-possible";
    let (s, b) = call!(
        &svc,
        get(
            format!("/v1/records/{r1}?break_glass={reason}&purpose=emergency"),
            &er
        )
    );
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["record_id"], r1.as_str());
    let (s, b) = call!(
        &svc,
        get(
            format!("/v1/patients/p-1/records?break_glass={reason}"),
            &er
        )
    );
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b["items"].as_array().unwrap().len(), 1);
    let res = test::call_service(
        &svc,
        get(format!("/v1/patients/p-1/export?break_glass={reason}"), &er).to_request(),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    let body = test::read_body(res).await;
    assert_eq!(
        String::from_utf8_lossy(&body).lines().count(),
        1,
        "{body:?}"
    );
    let reads = reads_on_ledger(&env);
    assert_eq!(reads.len(), 3);
    assert!(reads
        .iter()
        .all(|e| e.break_glass.as_ref().is_some_and(|r| r.is_sealed())));
    assert_eq!(reads[0].purpose, "emergency");
    // Nowhere on disk: not in the ledger, the views, the key store.
    for file in common::files_under(env.dir.path()) {
        let bytes = std::fs::read(&file).unwrap();
        assert!(
            !bytes.windows(reason.len()).any(|w| w == reason.as_bytes()),
            "the reason is in the clear in {}",
            file.display()
        );
    }
    // The patient sees it, reason opened.
    let (s, b) = call!(&svc, get(patient_log(&env), &p1));
    assert_eq!(s, StatusCode::OK);
    let items = b["items"].as_array().unwrap();
    assert_eq!(items.len(), 3);
    assert!(items
        .iter()
        .all(|i| i["break_glass"] == true && i["break_glass_reason"] == reason));
    // Counted.
    let res = test::call_service(&svc, test::TestRequest::get().uri("/metrics").to_request()).await;
    let text = String::from_utf8(test::read_body(res).await.to_vec()).unwrap();
    assert!(
        text.contains("medledger_break_glass_reads_total 3"),
        "{text}"
    );
    assert!(text.contains("medledger_read_events_total 3"));
    // Not for patients, not for a hospital's timeline, not empty.
    let (s, b) = call!(&svc, get(format!("/v1/records/{r1}?break_glass=x"), &p1));
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("break_glass_not_allowed"))
    );
    let (s, _) = call!(
        &svc,
        get("/v1/hospitals/h-1/records?break_glass=x".into(), &er)
    );
    assert_eq!(
        s,
        StatusCode::FORBIDDEN,
        "another hospital's list stays closed"
    );
    let (s, b) = call!(
        &svc,
        get("/v1/clinicians/dr-er/records?break_glass=x".into(), &er)
    );
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("break_glass_not_allowed"))
    );
    let (s, b) = call!(&svc, get(format!("/v1/records/{r1}?break_glass=%20"), &er));
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_break_glass"))
    );
    // Forgetting the patient takes the reasons with it; who read what stays.
    let admin = env.token(Role::Admin, "admin-1", None);
    let (s, b) = call!(
        &svc,
        test::TestRequest::post()
            .uri("/v1/patients/p-1/erase")
            .insert_header(("Authorization", admin.as_str()))
            .set_json(json!({"reason": "gdpr"}))
    );
    assert_eq!(s, StatusCode::OK, "{b}");
    let (s, b) = call!(&svc, get(patient_log(&env), &admin));
    assert_eq!(s, StatusCode::OK, "{b}");
    let items = b["items"].as_array().unwrap();
    assert_eq!(items.len(), 3);
    assert!(items
        .iter()
        .all(|i| i["break_glass"] == true && i["break_glass_reason"].is_null()));
    // A break-glass read of a forgotten patient cannot be recorded: refused before
    // anything is shown (an export too, though it streams).
    for uri in [
        format!("/v1/records/{r1}?break_glass={reason}"),
        format!("/v1/patients/p-1/export?break_glass={reason}"),
    ] {
        let (s, b) = call!(&svc, get(uri.clone(), &er));
        assert_eq!(
            (s, b["error"]["code"].as_str()),
            (StatusCode::GONE, Some("patient_forgotten")),
            "{uri}"
        );
    }
}

#[actix_web::test]
async fn a_full_page_promises_no_record_the_caller_cannot_see() {
    let env = Env::new();
    let svc = test::init_service(app(env.core.state.clone())).await;
    let dr1 = env.token(Role::Clinician, "dr-1", Some("h-1"));
    let dr2 = env.token(Role::Clinician, "dr-2", Some("h-2"));
    // p-1's records: 2 at h-2 (oldest), then 3 at h-1. dr-2 of h-2 sees only the 2.
    for _ in 0..2 {
        let _ = create!(&svc, dr2, "p-1", "h-2", "lab_result");
    }
    for _ in 0..3 {
        let _ = create!(&svc, dr1, "p-1", "h-1", "lab_result");
    }
    let page = |uri: &str, token: &str| {
        test::TestRequest::get()
            .uri(uri)
            .insert_header(("Authorization", token.to_owned()))
    };
    // dr-1 sees 3 (newest): a full page of 3, and the 2 older records are hidden from
    // it: no cursor.
    let (s, b) = call!(&svc, page("/v1/patients/p-1/records?limit=3", &dr1));
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b["items"].as_array().unwrap().len(), 3);
    assert_eq!(b["next_cursor"], Value::Null, "{b}");
    // With a page of 2, a third visible record follows: a cursor, and it leads to it.
    let (s, b) = call!(&svc, page("/v1/patients/p-1/records?limit=2", &dr1));
    assert_eq!(s, StatusCode::OK);
    let cursor = b["next_cursor"].as_str().unwrap().to_owned();
    let (s, b) = call!(
        &svc,
        page(
            &format!("/v1/patients/p-1/records?limit=2&cursor={cursor}"),
            &dr1
        )
    );
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b["items"].as_array().unwrap().len(), 1);
    assert_eq!(b["next_cursor"], Value::Null);
    // dr-2 sees the 2 older ones on one page, past the 3 it may not read.
    let (s, b) = call!(&svc, page("/v1/patients/p-1/records?limit=2", &dr2));
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b["items"].as_array().unwrap().len(), 2);
}

/// SIGKILL under a load of reads: every read answered 200 has its `RecordsRead` event on
/// the ledger after recovery (the answer waited for it to be durable), for each reader
/// and record. Reads answered while the process died may have events too, never fewer.
#[::std::prelude::v1::test]
fn no_answered_read_is_missing_from_the_ledger_after_a_sigkill() {
    use common::server::{free_port, request, start, token, Running};
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    let dir = tempfile::tempdir().unwrap();
    let addr = free_port();
    let mut server = start(dir.path(), addr);
    let writer = token(dir.path(), "clinician", "dr-1", Some("h-1"));
    for i in 0..20 {
        let body = format!(
            r#"{{"record_id":"r-{i}","patient_id":"p-{}","hospital_id":"h-1","record_type":"note","metadata":{{"n":{i}}}}}"#,
            i % 3
        );
        let (s, b) = request(addr, "POST", "/v1/records", Some(&writer), Some(&body)).unwrap();
        assert_eq!(s, 201, "{b}");
    }
    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..4)
        .map(|t| {
            let reader = format!("dr-r{t}");
            let bearer = token(dir.path(), "clinician", &reader, Some("h-1"));
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut answered: Vec<String> = Vec::new();
                let mut k = t;
                while !stop.load(Ordering::Relaxed) && answered.len() < 5_000 {
                    let id = format!("r-{}", k % 20);
                    k += 7;
                    match request(
                        addr,
                        "GET",
                        &format!("/v1/records/{id}"),
                        Some(&bearer),
                        None,
                    ) {
                        Ok((200, _)) => answered.push(id),
                        Ok(_) | Err(_) => break, // the server died mid-request
                    }
                }
                (reader, answered)
            })
        })
        .collect();
    std::thread::sleep(std::time::Duration::from_millis(1_500));
    server.kill().unwrap();
    server.wait().unwrap();
    stop.store(true, Ordering::Relaxed);
    let answered: Vec<(String, Vec<String>)> =
        readers.into_iter().map(|h| h.join().unwrap()).collect();
    let total: usize = answered.iter().map(|(_, a)| a.len()).sum();
    assert!(total > 20, "only {total} reads answered before the kill");
    // Recovery, then a clean stop, then the ledger as the next start would see it.
    Running(start(dir.path(), addr)).stop();
    let (ledger, _) =
        medledger_storage::Ledger::open(dir.path(), medledger_storage::LedgerOptions::default())
            .unwrap();
    let mut on_ledger: HashMap<(String, String), usize> = HashMap::new();
    for n in 0..ledger.tip().height {
        for tx in ledger.block(n).unwrap().unwrap().txs {
            if let Event::RecordsRead(e) = Envelope::decode(&tx).unwrap().event {
                for r in e.record_ids {
                    *on_ledger.entry((e.reader_id.clone(), r)).or_default() += 1;
                }
            }
        }
    }
    for (reader, ids) in &answered {
        let mut counts: HashMap<&str, usize> = HashMap::new();
        for id in ids {
            *counts.entry(id).or_default() += 1;
        }
        for (id, n) in counts {
            let recorded = on_ledger
                .get(&(reader.clone(), id.to_owned()))
                .copied()
                .unwrap_or(0);
            assert!(
                recorded >= n,
                "{reader} was answered {n} reads of {id}, the ledger holds {recorded}"
            );
        }
    }
    eprintln!("{total} reads answered before SIGKILL, every one on the ledger");
}
