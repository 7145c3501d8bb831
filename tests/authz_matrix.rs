//! The authorization matrix: every route that needs a token × every caller × ownership,
//! asserted.
//!
//! [`ROWS`] holds the cells: each route of `medledger::api::ROUTES` with `auth: true` has
//! one row, or one per case of ownership, stating what each of the ten callers gets: the
//! status, and for lists whether the row's item is visible. A route without a row fails
//! `every_route_with_a_token_has_its_cells`, so no route can be added without its cells.
//!
//! Ownership: a patient's own record or another's; a clinician of the record's hospital,
//! one the patient granted (unexpired, in scope), one whose grant expired, one whose grant
//! covers other record types, one of another hospital; an auditor; an admin; nobody (no
//! token). A caller the rules refuse gets 401 or 403; one they let through gets what the
//! route answers it, never a 5xx.

use actix_web::http::StatusCode;
use actix_web::test;
use serde_json::{json, Value};

use medledger::api::auth::Role;
use medledger::api::ROUTES;
use medledger::serve::app;

mod common;
use common::api::Env;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Who {
    /// Patient p-1, whose records r-1, r-2 are.
    OwnPatient,
    /// Patient p-2, whose record r-p2 (of h-2) is.
    OtherPatient,
    /// dr-1 of h-1, the hospital of p-1's records, and the author of r-1.
    SameHospital,
    /// dr-g of h-2, granted by p-1 (no expiry, every type).
    Granted,
    /// dr-x of h-2, whose grant from p-1 has expired.
    ExpiredGrant,
    /// dr-s of h-2, granted by p-1 for `imaging` only (p-1's records are `lab_result`s).
    OutOfScopeGrant,
    /// dr-2 of h-2, no grant; the author of r-p2.
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

/// What a cell expects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cell {
    /// 200; for a row with a marker, the marker is in the answer (the item is visible).
    Ok,
    /// 200 without the row's marker: the list is answered, the item is not in it.
    OkWithout,
    Created,
    /// 404 `no_payload`: the caller may read the record, which has no payload.
    NoPayload,
    /// 410 `payload_erased`: the caller may read the record, whose payload was erased.
    PayloadErased,
    /// 409 `not_a_cluster`: allowed, but this server runs as one node.
    NotACluster,
    /// 202: a job started.
    Accepted,
    /// 400 `break_glass_not_allowed`: break-glass is for clinicians only.
    NoBreakGlass,
    Forbidden,
    Unauthorized,
}

impl Cell {
    /// Whether the caller got past authorization.
    fn allowed(self) -> bool {
        !matches!(self, Cell::Forbidden | Cell::Unauthorized)
    }
}

/// How a row's answer is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Answer {
    /// The status of the answer.
    Status,
    /// A batch answers 200 to every caller with a token and judges each item like a
    /// create: the cell is the status of the request's one item.
    FirstItem,
}

/// Which server a row runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Server {
    /// The server the other `Shared` rows use: what its cells write (records, grants of
    /// their own, an erasure of a record of its own) changes no other cell's answer.
    Shared,
    /// A fresh server with the same setup, for this row alone: its allowed cell changes
    /// what every later request would meet (a rotated key or secret, a forgotten patient).
    Own,
}

/// The cells of one route in one case of ownership.
struct Row {
    /// As `ROUTES` names the route.
    method: &'static str,
    path: &'static str,
    /// Which case, for routes with more than one row.
    case: &'static str,
    server: Server,
    answer: Answer,
    /// For lists: text in the answer when the row's item is visible (`Ok`, else
    /// `OkWithout`).
    marker: Option<&'static str>,
    /// The request of `who`'s cell.
    request: fn(&Facts, Who) -> test::TestRequest,
    /// The expected answer of each caller, in the order of [`EVERYONE`].
    cells: [Cell; 10],
}

fn row(
    method: &'static str,
    path: &'static str,
    case: &'static str,
    request: fn(&Facts, Who) -> test::TestRequest,
    cells: [Cell; 10],
) -> Row {
    Row {
        method,
        path,
        case,
        server: Server::Shared,
        answer: Answer::Status,
        marker: None,
        request,
        cells,
    }
}

impl Row {
    fn showing(mut self, marker: &'static str) -> Row {
        self.marker = Some(marker);
        self
    }

    fn on_its_own_server(mut self) -> Row {
        self.server = Server::Own;
        self
    }

    fn per_item(mut self) -> Row {
        self.answer = Answer::FirstItem;
        self
    }
}

/// What the setup learnt that requests name.
struct Facts {
    /// The transaction that created r-1.
    r1_tx: String,
    /// The hash of block 1.
    block_1_hash: String,
    /// The chain's blocks at the latest checkpoint after the setup.
    tree_size: u64,
    /// Bulk exports of au-1's, complete: the first is read, the others deleted (by au-1
    /// and by an admin).
    exports: Vec<String>,
}

fn get(uri: &str) -> test::TestRequest {
    test::TestRequest::get().uri(uri)
}

fn post(uri: &str, body: Value) -> test::TestRequest {
    test::TestRequest::post().uri(uri).set_json(body)
}

/// A new lab result of `patient` at `hospital`.
fn new_record(id: &str, patient: &str, hospital: &str) -> Value {
    json!({"record_id": id, "patient_id": patient, "hospital_id": hospital,
        "record_type": "lab_result", "metadata": {"title": "CBC"}})
}

/// A new lab result of p-1 at h-1 with an inline payload.
fn with_payload(id: &str) -> Value {
    let mut body = new_record(id, "p-1", "h-1");
    body["payload"] = json!({"content_type": "application/json", "data": {"wbc": 5.1}});
    body
}

const REASON: &str = "patient request";

use Cell::*;

/// Auditors and admins; nobody else.
const EXPLORERS: [Cell; 10] = [
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
];

/// Admins alone.
const ADMINS: [Cell; 10] = [
    Forbidden,
    Forbidden,
    Forbidden,
    Forbidden,
    Forbidden,
    Forbidden,
    Forbidden,
    Forbidden,
    Ok,
    Unauthorized,
];

/// Admins alone, who are told this is no cluster: cluster membership and leadership
/// change only on a cluster's leader, and this server runs as one node (tests/cluster.rs
/// changes a real cluster's membership).
const CLUSTER_ADMINS: [Cell; 10] = [
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

/// Writers of h-1's records: its clinicians and admins (a grant is for reading).
const H1_WRITERS: [Cell; 10] = [
    Forbidden,
    Forbidden,
    Created,
    Forbidden,
    Forbidden,
    Forbidden,
    Forbidden,
    Forbidden,
    Created,
    Unauthorized,
];

/// Readers of r-1 (p-1's lab result at h-1): p-1, h-1's clinicians, dr-g, auditors, admins.
const R1_READERS: [Cell; 10] = [
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
];

/// Under `?break_glass=`: every clinician reads p-1's records; patients, auditors and
/// admins may not declare it.
const BREAK_GLASS: [Cell; 10] = [
    NoBreakGlass,
    NoBreakGlass,
    Ok,
    Ok,
    Ok,
    Ok,
    Ok,
    NoBreakGlass,
    NoBreakGlass,
    Unauthorized,
];

/// Readers of p-1's payloads: as [`R1_READERS`], without auditors.
fn payload_readers(allowed: Cell) -> [Cell; 10] {
    let mut cells = R1_READERS;
    for (cell, who) in cells.iter_mut().zip(EVERYONE) {
        *cell = match (*cell, who) {
            (_, Who::Auditor) => Forbidden,
            (Ok, _) => allowed,
            (other, _) => other,
        };
    }
    cells
}

/// Every route that needs a token, with its cells. Columns follow [`EVERYONE`]:
/// OwnPatient, OtherPatient, SameHospital, Granted, ExpiredGrant, OutOfScopeGrant,
/// OtherHospital, Auditor, Admin, Nobody.
fn rows() -> Vec<Row> {
    vec![
        // ---- Records ----
        row(
            "post",
            "/v1/records",
            "for h-1",
            |_, who| {
                post(
                    "/v1/records",
                    new_record(&format!("r-new-{who:?}"), "p-1", "h-1"),
                )
            },
            H1_WRITERS,
        ),
        // The clinicians of h-2, whatever their grants, write h-2's records.
        row(
            "post",
            "/v1/records",
            "for h-2",
            |_, who| {
                post(
                    "/v1/records",
                    new_record(&format!("r-new2-{who:?}"), "p-2", "h-2"),
                )
            },
            [
                Forbidden,
                Forbidden,
                Forbidden,
                Created,
                Created,
                Created,
                Created,
                Forbidden,
                Created,
                Unauthorized,
            ],
        ),
        row(
            "post",
            "/v1/records/batch",
            "one record for h-1",
            |_, who| {
                post(
                    "/v1/records/batch",
                    json!({"records": [new_record(&format!("r-b-{who:?}"), "p-1", "h-1")]}),
                )
            },
            H1_WRITERS,
        )
        .per_item(),
        row(
            "get",
            "/v1/records/{id}",
            "r-1",
            |_, _| get("/v1/records/r-1"),
            R1_READERS,
        )
        .showing("\"r-1\""),
        // Break-glass: every clinician reads, flagged; other roles may not declare it.
        row(
            "get",
            "/v1/records/{id}",
            "r-1 under break-glass",
            |_, _| get("/v1/records/r-1?break_glass=unconscious"),
            BREAK_GLASS,
        )
        .showing("\"r-1\""),
        row(
            "get",
            "/v1/patients/{id}/records",
            "p-1 under break-glass",
            |_, _| get("/v1/patients/p-1/records?limit=1000&break_glass=unconscious"),
            // The list's own rule first: another patient may not list p-1 at all.
            [
                NoBreakGlass,
                Forbidden,
                Ok,
                Ok,
                Ok,
                Ok,
                Ok,
                NoBreakGlass,
                NoBreakGlass,
                Unauthorized,
            ],
        )
        .showing("\"r-1\""),
        // p-2's record at h-2: h-2's clinicians read it, whatever p-1 granted them.
        row(
            "get",
            "/v1/records/{id}",
            "r-p2 (p-2 at h-2)",
            |_, _| get("/v1/records/r-p2"),
            [
                Forbidden,
                Ok,
                Forbidden,
                Ok,
                Ok,
                Ok,
                Ok,
                Ok,
                Ok,
                Unauthorized,
            ],
        )
        .showing("\"r-p2\""),
        row(
            "get",
            "/v1/records/{id}/history",
            "r-1",
            |_, _| get("/v1/records/r-1/history"),
            R1_READERS,
        )
        .showing("\"r-1\""),
        row(
            "post",
            "/v1/records/{id}/amendments",
            "a record of p-1 at h-1 per caller",
            |_, who| {
                post(
                    &format!("/v1/records/r-a-{who:?}/amendments"),
                    json!({"reason": "typo", "metadata": {"title": "fixed"}}),
                )
            },
            H1_WRITERS,
        ),
        row(
            "post",
            "/v1/records/{id}/status",
            "a record of p-1 at h-1 per caller",
            |_, who| {
                post(
                    &format!("/v1/records/r-s-{who:?}/status"),
                    json!({"status": "archived", "reason": "done"}),
                )
            },
            H1_WRITERS,
        ),
        // Erasing is for admins, also of a patient's own record. Each caller names a
        // record of p-1 at h-1 of its own (r-e-*, with a payload), so the admin's erasure
        // changes no other cell.
        row(
            "post",
            "/v1/records/{id}/erase",
            "a record of p-1 at h-1 per caller",
            |_, who| {
                post(
                    &format!("/v1/records/r-e-{who:?}/erase"),
                    json!({"reason": REASON}),
                )
            },
            ADMINS,
        ),
        // Forgetting p-1 erases r-1 and every other record of p-1: on a server of its own.
        // The patient may not forget themself either.
        row(
            "post",
            "/v1/patients/{id}/erase",
            "p-1",
            |_, _| post("/v1/patients/p-1/erase", json!({"reason": REASON})),
            ADMINS,
        )
        .on_its_own_server(),
        // ---- Payloads ----
        row(
            "get",
            "/v1/records/{id}/payload",
            "r-1, with a payload",
            |_, _| get("/v1/records/r-1/payload"),
            payload_readers(Ok),
        ),
        // r-2 has no payload: those who may read it are told so (404 `no_payload`), the
        // others are refused before the record's payload is looked at.
        row(
            "get",
            "/v1/records/{id}/payload",
            "r-2, without a payload",
            |_, _| get("/v1/records/r-2/payload"),
            payload_readers(NoPayload),
        ),
        // r-gone's payload was erased (410 `payload_erased`); the refused do not learn it.
        row(
            "get",
            "/v1/records/{id}/payload",
            "r-gone, erased",
            |_, _| get("/v1/records/r-gone/payload"),
            payload_readers(PayloadErased),
        ),
        row(
            "get",
            "/v1/ipfs/status",
            "",
            |_, _| get("/v1/ipfs/status"),
            EXPLORERS,
        ),
        // ---- Timelines and the export ----
        row(
            "get",
            "/v1/patients/{id}/records",
            "p-1",
            |_, _| get("/v1/patients/p-1/records?limit=1000"),
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
        )
        .showing("\"r-1\""),
        row(
            "get",
            "/v1/patients/{id}/records",
            "p-2 (r-p2 at h-2)",
            |_, _| get("/v1/patients/p-2/records?limit=1000"),
            [
                Forbidden,
                Ok,
                OkWithout,
                Ok,
                Ok,
                Ok,
                Ok,
                Ok,
                Ok,
                Unauthorized,
            ],
        )
        .showing("\"r-p2\""),
        row(
            "get",
            "/v1/patients/{id}/export",
            "p-1",
            |_, _| get("/v1/patients/p-1/export"),
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
        )
        .showing("\"r-1\""),
        // A summary counts every record of the patient, whatever the hospital: a
        // clinician needs a current grant (and sees the types it covers).
        row(
            "get",
            "/v1/patients/{id}/summary",
            "p-1",
            |_, _| get("/v1/patients/p-1/summary"),
            [
                Ok,
                Forbidden,
                Forbidden,
                Ok,
                Forbidden,
                OkWithout,
                Forbidden,
                Ok,
                Ok,
                Unauthorized,
            ],
        )
        .showing("\"lab_result\""),
        // A search answers everyone with a token, with only what each may read: r-1 as
        // its readers read it, nothing of it for the others.
        row(
            "get",
            "/v1/search",
            "r-1's words",
            |f, _| {
                get(&format!(
                    "/v1/search?q=cbc&limit=1000&min_height={}",
                    f.tree_size
                ))
            },
            [
                Ok,
                OkWithout,
                Ok,
                Ok,
                OkWithout,
                OkWithout,
                OkWithout,
                Ok,
                Ok,
                Unauthorized,
            ],
        )
        .showing("\"r-1\""),
        // Counts by hospital: every hospital for auditors and admins, its own for a
        // clinician, none for a patient.
        row(
            "get",
            "/v1/stats",
            "h-1",
            |_, _| get("/v1/stats?group_by=hospital"),
            [
                Forbidden,
                Forbidden,
                Ok,
                OkWithout,
                OkWithout,
                OkWithout,
                OkWithout,
                Ok,
                Ok,
                Unauthorized,
            ],
        )
        .showing("\"h-1\""),
        // Bulk exports: admins and auditors; an auditor its own, an admin every one.
        row(
            "post",
            "/v1/exports",
            "lab results",
            |_, _| post("/v1/exports", json!({"record_type": "lab_result"})),
            [
                Forbidden,
                Forbidden,
                Forbidden,
                Forbidden,
                Forbidden,
                Forbidden,
                Forbidden,
                Accepted,
                Accepted,
                Unauthorized,
            ],
        ),
        row(
            "get",
            "/v1/exports/{id}",
            "au-1's",
            |f, _| get(&format!("/v1/exports/{}", f.exports[0])),
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
        row(
            "get",
            "/v1/exports/{id}/files/{type}",
            "au-1's",
            |f, _| get(&format!("/v1/exports/{}/files/lab_result", f.exports[0])),
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
        row(
            "delete",
            "/v1/exports/{id}",
            "au-1's",
            |f, who| {
                let id = &f.exports[if who == Who::Admin { 2 } else { 1 }];
                test::TestRequest::delete().uri(&format!("/v1/exports/{id}"))
            },
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
        row(
            "get",
            "/v1/hospitals/{id}/records",
            "h-1",
            |_, _| get("/v1/hospitals/h-1/records?limit=1000"),
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
        )
        .showing("\"r-1\""),
        row(
            "get",
            "/v1/hospitals/{id}/records",
            "h-2",
            |_, _| get("/v1/hospitals/h-2/records?limit=1000"),
            [
                Forbidden,
                Forbidden,
                Forbidden,
                Ok,
                Ok,
                Ok,
                Ok,
                Ok,
                Ok,
                Unauthorized,
            ],
        )
        .showing("\"r-p2\""),
        row(
            "get",
            "/v1/clinicians/{id}/records",
            "dr-1, r-1's author",
            |_, _| get("/v1/clinicians/dr-1/records?limit=1000"),
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
        )
        .showing("\"r-1\""),
        row(
            "get",
            "/v1/clinicians/{id}/records",
            "dr-2, r-p2's author",
            |_, _| get("/v1/clinicians/dr-2/records?limit=1000"),
            [
                Forbidden,
                Forbidden,
                Forbidden,
                Forbidden,
                Forbidden,
                Forbidden,
                Ok,
                Ok,
                Ok,
                Unauthorized,
            ],
        )
        .showing("\"r-p2\""),
        // ---- Access logs (who read what): the patient, auditors, admins ----
        row(
            "get",
            "/v1/records/{id}/access-log",
            "r-1",
            |_, _| get("/v1/records/r-1/access-log"),
            [
                Ok,
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
        row(
            "get",
            "/v1/patients/{id}/access-log",
            "p-1",
            |_, _| get("/v1/patients/p-1/access-log"),
            [
                Ok,
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
        // ---- Grants ----
        row(
            "post",
            "/v1/patients/{id}/grants",
            "p-1",
            |_, who| {
                post(
                    "/v1/patients/p-1/grants",
                    json!({"grantee_id": format!("dr-new-{who:?}")}),
                )
            },
            [
                Created,
                Forbidden,
                Forbidden,
                Forbidden,
                Forbidden,
                Forbidden,
                Forbidden,
                Forbidden,
                Created,
                Unauthorized,
            ],
        ),
        row(
            "post",
            "/v1/patients/{id}/grants",
            "p-2",
            |_, who| {
                post(
                    "/v1/patients/p-2/grants",
                    json!({"grantee_id": format!("dr-new-{who:?}")}),
                )
            },
            [
                Forbidden,
                Created,
                Forbidden,
                Forbidden,
                Forbidden,
                Forbidden,
                Forbidden,
                Forbidden,
                Created,
                Unauthorized,
            ],
        ),
        row(
            "get",
            "/v1/patients/{id}/grants",
            "p-1",
            |_, _| get("/v1/patients/p-1/grants?limit=1000"),
            [
                Ok,
                Forbidden,
                Forbidden,
                Forbidden,
                Forbidden,
                Forbidden,
                Forbidden,
                Forbidden,
                Ok,
                Unauthorized,
            ],
        )
        .showing("\"dr-g\""),
        // Clinicians holding a grant of p-1 try to give it up (dr-g, dr-x, dr-s): only the
        // patient and admins manage grants. The others each name a grant of p-1 of their
        // own (dr-r-*, granted in the setup), so a refusal is the rule's and not a missing
        // grant's, and the revocations allowed change no other cell.
        row(
            "delete",
            "/v1/patients/{id}/grants/{grantee}",
            "p-1, the caller's own grant or one per caller",
            |_, who| {
                let grantee = match who {
                    Who::Granted => "dr-g".to_owned(),
                    Who::ExpiredGrant => "dr-x".to_owned(),
                    Who::OutOfScopeGrant => "dr-s".to_owned(),
                    other => format!("dr-r-{other:?}"),
                };
                test::TestRequest::delete().uri(&format!("/v1/patients/p-1/grants/{grantee}"))
            },
            [
                Ok,
                Forbidden,
                Forbidden,
                Forbidden,
                Forbidden,
                Forbidden,
                Forbidden,
                Forbidden,
                Ok,
                Unauthorized,
            ],
        ),
        // ---- Keys: each changes what every later request meets, so each has its own
        // server. The tokens of this test, minted with the old JWT secret, stay accepted
        // for the grace. ----
        row(
            "post",
            "/v1/keys/rotate-jwt",
            "",
            |_, _| post("/v1/keys/rotate-jwt", json!({"grace_seconds": 3600})),
            ADMINS,
        )
        .on_its_own_server(),
        row(
            "post",
            "/v1/keys/rotate",
            "",
            |_, _| test::TestRequest::post().uri("/v1/keys/rotate"),
            ADMINS,
        )
        .on_its_own_server(),
        row(
            "post",
            "/v1/checkpoint/rotate",
            "",
            |_, _| test::TestRequest::post().uri("/v1/checkpoint/rotate"),
            ADMINS,
        )
        .on_its_own_server(),
        // ---- The cluster ----
        row(
            "get",
            "/v1/cluster",
            "",
            |_, _| get("/v1/cluster"),
            EXPLORERS,
        ),
        row(
            "post",
            "/v1/cluster/learners",
            "",
            |_, _| {
                post(
                    "/v1/cluster/learners",
                    json!({"id": 4, "raft": "127.0.0.1:7104", "http": "127.0.0.1:8104"}),
                )
            },
            CLUSTER_ADMINS,
        ),
        row(
            "post",
            "/v1/cluster/voters",
            "",
            |_, _| post("/v1/cluster/voters", json!({"voters": [1, 2, 4]})),
            CLUSTER_ADMINS,
        ),
        row(
            "post",
            "/v1/cluster/leader",
            "",
            |_, _| post("/v1/cluster/leader", json!({"id": 2})),
            CLUSTER_ADMINS,
        ),
        // ---- The block explorer ----
        row("get", "/v1/chain", "", |_, _| get("/v1/chain"), EXPLORERS),
        row("get", "/v1/blocks", "", |_, _| get("/v1/blocks"), EXPLORERS),
        row(
            "get",
            "/v1/blocks/by-hash/{hash}",
            "block 1",
            |f, _| get(&format!("/v1/blocks/by-hash/{}", f.block_1_hash)),
            EXPLORERS,
        ),
        row(
            "get",
            "/v1/blocks/{number}",
            "block 1",
            |_, _| get("/v1/blocks/1"),
            EXPLORERS,
        ),
        row(
            "get",
            "/v1/tx/{id}",
            "r-1's creation",
            |f, _| get(&format!("/v1/tx/{}", f.r1_tx)),
            EXPLORERS,
        ),
        row(
            "get",
            "/v1/tx/{id}/proof",
            "r-1's creation",
            |f, _| get(&format!("/v1/tx/{}/proof", f.r1_tx)),
            EXPLORERS,
        ),
        row(
            "get",
            "/v1/checkpoint",
            "",
            |_, _| get("/v1/checkpoint"),
            EXPLORERS,
        ),
        row(
            "get",
            "/v1/checkpoint/consistency",
            "from 1 to the setup's checkpoint",
            |f, _| {
                get(&format!(
                    "/v1/checkpoint/consistency?from=1&to={}",
                    f.tree_size
                ))
            },
            EXPLORERS,
        ),
        row(
            "get",
            "/v1/activity",
            "",
            |_, _| get("/v1/activity"),
            EXPLORERS,
        ),
    ]
}

/// Every route that needs a token has its cells: a new route fails here, by name, until
/// its rows are in [`rows`]; and no row names a route that is gone or needs no token.
#[actix_web::test]
async fn every_route_with_a_token_has_its_cells() {
    let rows = rows();
    let missing: Vec<String> = ROUTES
        .iter()
        .filter(|r| r.auth)
        .filter(|r| {
            !rows
                .iter()
                .any(|row| row.method == r.method && row.path == r.path)
        })
        .map(|r| format!("{} {}", r.method.to_ascii_uppercase(), r.path))
        .collect();
    assert!(
        missing.is_empty(),
        "routes that need a token and have no cells in tests/authz_matrix.rs: {missing:?}"
    );
    for row in &rows {
        assert!(
            ROUTES
                .iter()
                .any(|r| r.auth && r.method == row.method && r.path == row.path),
            "the row {} {} ({}) names no route that needs a token",
            row.method,
            row.path,
            row.case
        );
    }
}

/// Whether the concrete `path` is one of the route pattern's (`{name}` matches a segment).
fn path_matches(pattern: &str, path: &str) -> bool {
    let (pattern, path): (Vec<&str>, Vec<&str>) =
        (pattern.split('/').collect(), path.split('/').collect());
    pattern.len() == path.len()
        && pattern
            .iter()
            .zip(&path)
            .all(|(p, s)| p == s || (p.starts_with('{') && !s.is_empty()))
}

/// The cell `got` for an answer to `row`'s request; panics on a 5xx or on an answer no
/// cell describes.
fn cell_of(row: &Row, label: &str, status: StatusCode, body: &str) -> Cell {
    assert!(
        !status.is_server_error(),
        "{label}: the server failed with {status}: {body}"
    );
    if row.answer == Answer::FirstItem && status == StatusCode::OK {
        let v: Value = serde_json::from_str(body).unwrap_or(Value::Null);
        let item = &v["items"][0];
        assert_eq!(
            v["items"].as_array().map(Vec::len),
            Some(1),
            "{label}: {body}"
        );
        return match (item["status"].as_u64(), item["error"]["code"].as_str()) {
            (Some(201), _) => Created,
            (Some(403), Some("forbidden")) => Forbidden,
            (Some(s), _) if s >= 500 => panic!("{label}: the item failed with {s}: {body}"),
            _ => panic!("{label}: an item no cell describes: {body}"),
        };
    }
    let code = code_of(body);
    match (status, code.as_str()) {
        (StatusCode::OK, _) => match row.marker {
            Some(marker) if !body.contains(marker) => OkWithout,
            _ => Ok,
        },
        (StatusCode::CREATED, _) => Created,
        (StatusCode::ACCEPTED, _) => Accepted,
        (StatusCode::NOT_FOUND, "no_payload") => NoPayload,
        (StatusCode::GONE, "payload_erased") => PayloadErased,
        (StatusCode::CONFLICT, "not_a_cluster") => NotACluster,
        (StatusCode::BAD_REQUEST, "break_glass_not_allowed") => NoBreakGlass,
        (StatusCode::FORBIDDEN, "forbidden") => Forbidden,
        (StatusCode::UNAUTHORIZED, "unauthorized") => Unauthorized,
        _ => panic!("{label}: an answer no cell describes, {status}: {body}"),
    }
}

/// Runs every cell of `row`: those the rules refuse first, then the allowed ones, so an
/// allowed cell that changes state (an erasure, a rotation) comes after the refusals.
async fn run_row(
    call: &impl AsyncFn(Who, test::TestRequest) -> (StatusCode, String),
    facts: &Facts,
    row: &Row,
) {
    for allowed in [false, true] {
        for (who, expected) in EVERYONE.into_iter().zip(row.cells) {
            if expected.allowed() != allowed {
                continue;
            }
            // The request is the route's: its method and a path of its pattern.
            let probe = (row.request)(facts, who).to_request();
            let label = format!(
                "{} {} ({}) as {who:?}",
                probe.method(),
                probe.uri(),
                row.case
            );
            assert!(
                probe.method().as_str().eq_ignore_ascii_case(row.method)
                    && path_matches(row.path, probe.path()),
                "{label}: the request is not one of {} {}",
                row.method,
                row.path
            );
            let (status, body) = call(who, (row.request)(facts, who)).await;
            let got = cell_of(row, &label, status, &body);
            assert_eq!(got, expected, "{label}: {status} {body}");
        }
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// RFC 3339 UTC text of `ms` since the epoch, as the API reads timestamps.
fn rfc3339(ms: i64) -> String {
    medledger::chaincode::Timestamp(ms).to_string()
}

/// The records, grants and facts the rows name, set up through the API:
/// - r-1 (p-1, h-1, lab_result, with a payload) by dr-1; r-2 (the same, no payload) by
///   dr-1; r-gone (with a payload) erased; r-p2 (p-2, h-2) by dr-2;
/// - per caller, records of p-1 at h-1 to amend (r-a-*), change the status of (r-s-*)
///   and erase (r-e-*, with a payload), and a grant of p-1 to revoke (dr-r-*);
/// - grants of p-1 to dr-g (open), dr-s (imaging only), dr-x (expired when this returns).
async fn setup(call: &impl AsyncFn(Who, test::TestRequest) -> (StatusCode, String)) -> Facts {
    use Who::*;
    let expect = |what: &str, want: StatusCode, (status, body): (StatusCode, String)| {
        assert_eq!(status, want, "setup, {what}: {body}");
        serde_json::from_str::<Value>(&body).unwrap_or(Value::Null)
    };
    // dr-x's grant first: it runs out while the rest is set up.
    let expiry = now_ms() + 1_200;
    let grant = |grantee: &str, extra: Value| {
        let mut body = json!({"grantee_id": grantee});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        post("/v1/patients/p-1/grants", body)
    };
    let req = grant("dr-x", json!({"expires_at": rfc3339(expiry)}));
    expect(
        "grant to dr-x",
        StatusCode::CREATED,
        call(OwnPatient, req).await,
    );

    let created = expect(
        "r-1",
        StatusCode::CREATED,
        call(SameHospital, post("/v1/records", with_payload("r-1"))).await,
    );
    let r1_tx = created["tx_id"].as_str().unwrap().to_owned();
    let req = post("/v1/records", new_record("r-2", "p-1", "h-1"));
    expect("r-2", StatusCode::CREATED, call(SameHospital, req).await);
    let req = post("/v1/records", new_record("r-p2", "p-2", "h-2"));
    expect("r-p2", StatusCode::CREATED, call(OtherHospital, req).await);
    let req = post("/v1/records", with_payload("r-gone"));
    expect("r-gone", StatusCode::CREATED, call(Admin, req).await);
    let req = post("/v1/records/r-gone/erase", json!({"reason": REASON}));
    expect("erasing r-gone", StatusCode::OK, call(Admin, req).await);
    for who in EVERYONE {
        let req = post("/v1/records", with_payload(&format!("r-e-{who:?}")));
        expect("r-e-*", StatusCode::CREATED, call(Admin, req).await);
    }
    let batch: Vec<Value> = EVERYONE
        .iter()
        .flat_map(|who| {
            [
                new_record(&format!("r-a-{who:?}"), "p-1", "h-1"),
                new_record(&format!("r-s-{who:?}"), "p-1", "h-1"),
            ]
        })
        .collect();
    let req = post("/v1/records/batch", json!({ "records": batch }));
    let answer = expect("r-a-*, r-s-*", StatusCode::OK, call(Admin, req).await);
    assert_eq!(answer["failed"], 0, "setup, r-a-*, r-s-*: {answer}");
    let mut grants = vec![
        ("dr-g".to_owned(), json!({})),
        ("dr-s".to_owned(), json!({"scope": ["imaging"]})),
    ];
    grants.extend(EVERYONE.map(|who| (format!("dr-r-{who:?}"), json!({}))));
    for (grantee, extra) in grants {
        let req = grant(&grantee, extra);
        expect(&grantee, StatusCode::CREATED, call(OwnPatient, req).await);
    }

    let block = expect(
        "block 1",
        StatusCode::OK,
        call(Admin, get("/v1/blocks/1")).await,
    );
    let block_1_hash = block["hash"].as_str().unwrap().to_owned();
    let checkpoint = expect(
        "the checkpoint",
        StatusCode::OK,
        call(Admin, get("/v1/checkpoint")).await,
    );
    let tree_size = checkpoint["tree_size"].as_u64().unwrap();

    // Let dr-x's grant run out, then check the grants are what the cells assume.
    let left = expiry + 100 - now_ms();
    if left > 0 {
        actix_web::rt::time::sleep(std::time::Duration::from_millis(left as u64)).await;
    }
    let listed = expect(
        "p-1's grants",
        StatusCode::OK,
        call(Admin, get("/v1/patients/p-1/grants?limit=1000")).await,
    );
    let of = |grantee: &str| {
        listed["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["grantee_id"] == grantee)
            .unwrap_or_else(|| panic!("setup: no grant to {grantee}: {listed}"))
            .clone()
    };
    let (open, scoped, expired) = (of("dr-g"), of("dr-s"), of("dr-x"));
    assert!(
        open["expires_at"].is_null() && open["scope"] == json!([]),
        "{open}"
    );
    assert!(
        scoped["expires_at"].is_null() && scoped["scope"] == json!(["imaging"]),
        "{scoped}"
    );
    assert_eq!(expired["expires_at"], json!(rfc3339(expiry)), "{expired}");
    assert!(now_ms() > expiry, "dr-x's grant has not run out yet");
    // Three bulk exports of au-1's (the lab results), complete: one read, two deleted.
    let mut exports = Vec::new();
    for _ in 0..3 {
        let req = post("/v1/exports", json!({"record_type": "lab_result"}));
        let started = expect("an export", StatusCode::ACCEPTED, call(Auditor, req).await);
        let url = started["status_url"].as_str().unwrap().to_owned();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let (status, body) = call(Auditor, get(&url)).await;
            if status == StatusCode::OK {
                assert!(body.contains("\"complete\""), "setup, export: {body}");
                break;
            }
            assert_eq!(status, StatusCode::ACCEPTED, "setup, export: {body}");
            assert!(
                std::time::Instant::now() < deadline,
                "setup: the export did not end"
            );
            actix_web::rt::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        exports.push(started["export_id"].as_str().unwrap().to_owned());
    }
    Facts {
        r1_tx,
        block_1_hash,
        tree_size,
        exports,
    }
}

/// The rows that share one server, on one server.
#[actix_web::test]
async fn every_cell_of_the_shared_rows() {
    let env = Env::new();
    let svc = test::init_service(app(env.core.state.clone())).await;
    let call = async |who: Who, req: test::TestRequest| send!(&svc, env, who, req);
    let facts = setup(&call).await;
    for row in rows().iter().filter(|r| r.server == Server::Shared) {
        run_row(&call, &facts, row).await;
    }
    drop(svc);
    env.core.close();
}

/// The rows that change what every later request meets, each on a fresh server set up as
/// the shared one.
#[actix_web::test]
async fn every_cell_of_the_rows_that_change_global_state() {
    for row in rows().iter().filter(|r| r.server == Server::Own) {
        let env = Env::new();
        let svc = test::init_service(app(env.core.state.clone())).await;
        let call = async |who: Who, req: test::TestRequest| send!(&svc, env, who, req);
        let facts = setup(&call).await;
        run_row(&call, &facts, row).await;
        drop(svc);
        env.core.close();
    }
}

/// A timeline page holds the rows the caller may read, however many it may not read lie
/// between them: neither a short page nor a cursor tells that hidden records exist.
#[actix_web::test]
async fn pages_do_not_reveal_hidden_records() {
    let env = Env::new();
    let svc = test::init_service(app(env.core.state.clone())).await;
    // p-1's records, newest last: 6 lab results, the imaging study dr-s may read, 6 more.
    // Each a minute apart: records created in the same millisecond are ordered by id
    // (r-9 before r-6 before r-12), which would put more hidden rows after r-6 than the
    // 8 reads of a page can pass.
    for i in 0..13 {
        let record_type = if i == 6 { "imaging" } else { "lab_result" };
        let (s, b) = send!(
            &svc,
            env,
            Who::Admin,
            test::TestRequest::post().uri("/v1/records").set_json(
                json!({"record_id": format!("r-{i}"), "patient_id": "p-1", "hospital_id": "h-1",
                    "record_type": record_type, "created_at": format!("2026-11-23T10:{i:02}:00Z")})
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
    // Read after the grant: the views hold it (a 201 is durable, not yet projected).
    let height = serde_json::from_str::<Value>(&b).unwrap()["height"]
        .as_u64()
        .unwrap();
    let page = |uri: String| {
        let uri = format!("{uri}&min_height={height}");
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
