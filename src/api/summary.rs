//! `GET /v1/patients/{id}/summary` (a patient's records at a glance) and `GET /v1/stats`
//! (counts of records by hospital, type, month and status), both from the counts the
//! projector keeps (`patient_counts`, `stats`): no timeline is scanned per call.

use std::collections::BTreeMap;

use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{json, Value};

use medledger_chaincode::contract::GrantState;
use medledger_chaincode::time::{month_text, parse_month};
use medledger_chaincode::RecordStatus;
use medledger_views::keys::STATUSES;
use medledger_views::query::{Owner, TimelineFilter, Views};
use medledger_views::summary::{PatientCounts, StatRow, StatsFilter, TypeCounts};
use medledger_views::values::VersionEntry;

use super::audit::{self, Declared};
use super::auth::{Caller, Role};
use super::error::ApiError;
use super::lookup::{check_id, honour_min_height, query_error};
use super::records::record_json;
use super::submit::{ensure_key, now, store_error};
use super::AppState;

type Data = web::Data<AppState>;

/// Active records a summary lists, newest first (`active.count` counts them all).
pub const SUMMARY_ACTIVE_SHOWN: usize = 20;
/// Open grants a summary lists.
pub const SUMMARY_GRANTS_SHOWN: usize = 100;
/// Groups a stats answer holds, at most.
pub const STATS_GROUPS_MAX: usize = 10_000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SummaryQuery {
    min_height: Option<u64>,
    purpose: Option<String>,
    break_glass: Option<String>,
}

/// What a summary's caller may see: every type, or those a clinician's grant covers.
enum Scope {
    All,
    Types(Vec<String>),
}

impl Scope {
    fn covers(&self, record_type: &str) -> bool {
        match self {
            Scope::All => true,
            Scope::Types(types) => types.iter().any(|t| t == record_type),
        }
    }
}

/// `GET /v1/patients/{id}/summary`: counts by type and status, the newest record of each
/// type, the newest active records, open grants and the last read, in one call. The
/// patient, auditors and admins see it whole; a clinician needs a current grant (and sees
/// the types it covers) or break-glass. The records shown are a read on the ledger
/// (`what: summary`).
pub async fn patient_summary(
    state: Data,
    caller: Caller,
    path: web::Path<String>,
    query: web::Query<SummaryQuery>,
) -> Result<HttpResponse, ApiError> {
    let patient_id = path.into_inner();
    check_id("a patient id", &patient_id)?;
    if !caller.may_list_patient(&patient_id) {
        return Err(ApiError::forbidden(format!(
            "you may not read the summary of `{patient_id}`"
        )));
    }
    let declared = Declared::parse(
        &caller,
        query.purpose.as_deref(),
        query.break_glass.as_deref(),
        true,
    )?;
    honour_min_height(&state, query.min_height).await?;
    let (st, patient) = (state.clone(), patient_id.clone());
    let grantee = (caller.role() == Role::Clinician).then(|| caller.id().to_owned());
    let read = web::block(move || read_summary(&st, &patient, grantee.as_deref()))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))??;
    let scope = match caller.role() {
        Role::Clinician if declared.is_break_glass() => Scope::All,
        Role::Clinician => match &read.caller_grant {
            Some(g) if g.expires_at.is_none_or(|end| now() < end) => {
                if g.scope.is_empty() {
                    Scope::All
                } else {
                    Scope::Types(g.scope.clone())
                }
            }
            _ => {
                return Err(ApiError::forbidden(format!(
                    "a summary of `{patient_id}` needs the patient's grant, or break-glass"
                )))
            }
        },
        Role::Patient | Role::Auditor | Role::Admin => Scope::All,
    };
    let types: Vec<&TypeCounts> = read
        .counts
        .types
        .iter()
        .filter(|t| scope.covers(&t.record_type))
        .collect();
    let latest: Vec<&VersionEntry> = read
        .latest
        .iter()
        .filter(|e| scope.covers(&e.state.record_type))
        .collect();
    let active: Vec<&VersionEntry> = read
        .active
        .iter()
        .filter(|e| scope.covers(&e.state.record_type))
        .collect();
    // Each record shown once in the read's event, and rendered once (the newest of a
    // type is often among the active ones too).
    let mut shown: Vec<(&str, &str)> = Vec::with_capacity(latest.len() + active.len());
    for e in latest.iter().chain(&active) {
        let read = (e.state.patient_id.as_str(), e.state.record_id.as_str());
        if !shown.contains(&read) {
            shown.push(read);
        }
    }
    audit::record(&state, &caller, &declared, "summary", &shown).await?;

    let mut rendered: Vec<(&str, Box<RawValue>)> = Vec::with_capacity(shown.len());
    for e in latest.iter().chain(&active) {
        if rendered.iter().any(|(id, _)| *id == e.state.record_id) {
            continue;
        }
        ensure_key(&state, &e.state).await;
        let json = record_json(state.payloads.keys(), e)?;
        let raw = serde_json::value::to_raw_value(&json)
            .map_err(|e| ApiError::internal(format!("rendering a record: {e}")))?;
        rendered.push((&e.state.record_id, raw));
    }
    let raw_of = |record_id: &str| -> &RawValue {
        rendered
            .iter()
            .find(|(id, _)| *id == record_id)
            .map(|(_, raw)| raw.as_ref())
            .expect("every record shown is rendered")
    };
    let total = |status: Option<RecordStatus>| -> u64 {
        types
            .iter()
            .map(|t| status.map_or_else(|| t.total(), |s| t.of(s)))
            .sum()
    };
    let by_type: Vec<TypeJson<'_>> = types
        .iter()
        .map(|t| TypeJson {
            record_type: &t.record_type,
            total: t.total(),
            by_status: ByStatus::of(|s| t.of(s)),
            latest: latest
                .iter()
                .find(|e| e.state.record_type == t.record_type)
                .map(|e| raw_of(&e.state.record_id)),
        })
        .collect();
    let active_items: Vec<&RawValue> = active.iter().map(|e| raw_of(&e.state.record_id)).collect();
    // Grants and reads are the patient's business (and auditors', admins').
    let grants = caller.may_manage_grants_of(&patient_id).then(|| {
        let now = now();
        read.grants
            .iter()
            .filter(|g| g.expires_at.is_none_or(|end| now < end))
            .map(|g| {
                json!({
                    "grantee_id": g.grantee_id,
                    "granted_at": g.granted_at,
                    "expires_at": g.expires_at,
                    "scope": g.scope,
                })
            })
            .collect::<Vec<_>>()
    });
    let last_read = match (&read.last_read, caller.may_read_access_log_of(&patient_id)) {
        (Some(e), true) => Some(json!({
            "read_at": e.read_at,
            "reader": {"id": e.reader_id, "role": e.reader_role, "hospital": e.reader_hospital},
            "what": e.what,
            "purpose": e.purpose,
            "break_glass": e.break_glass.is_some(),
        })),
        _ => None,
    };
    Ok(HttpResponse::Ok().json(SummaryJson {
        patient_id: &patient_id,
        height: read.height,
        records: total(None),
        by_status: ByStatus::of(|s| total(Some(s))),
        by_type,
        types_truncated: read.counts.truncated,
        active: ActiveJson {
            count: total(Some(RecordStatus::Active)),
            items: active_items,
        },
        grants,
        last_read,
    }))
}

/// A summary's answer, written straight from the records' rendered JSON.
#[derive(Serialize)]
struct SummaryJson<'a> {
    patient_id: &'a str,
    height: u64,
    records: u64,
    by_status: ByStatus,
    by_type: Vec<TypeJson<'a>>,
    types_truncated: bool,
    active: ActiveJson<'a>,
    grants: Option<Vec<Value>>,
    last_read: Option<Value>,
}

#[derive(Serialize)]
struct TypeJson<'a> {
    record_type: &'a str,
    total: u64,
    by_status: ByStatus,
    latest: Option<&'a RawValue>,
}

#[derive(Serialize)]
struct ActiveJson<'a> {
    count: u64,
    items: Vec<&'a RawValue>,
}

/// Counts by status.
#[derive(Serialize)]
struct ByStatus {
    active: u64,
    archived: u64,
    entered_in_error: u64,
}

impl ByStatus {
    fn of(count: impl Fn(RecordStatus) -> u64) -> ByStatus {
        ByStatus {
            active: count(RecordStatus::Active),
            archived: count(RecordStatus::Archived),
            entered_in_error: count(RecordStatus::EnteredInError),
        }
    }
}

/// What a summary reads from the views, in one blocking call.
struct SummaryRead {
    height: u64,
    counts: PatientCounts,
    latest: Vec<VersionEntry>,
    active: Vec<VersionEntry>,
    grants: Vec<GrantState>,
    /// A clinician caller's grant.
    caller_grant: Option<GrantState>,
    last_read: Option<medledger_views::values::AccessLogEntry>,
}

fn read_summary(
    state: &AppState,
    patient_id: &str,
    grantee: Option<&str>,
) -> Result<SummaryRead, ApiError> {
    let views = Views::new(state.views.as_ref());
    let caller_grant = match grantee {
        Some(g) => views.grant(patient_id, g).map_err(store_error)?,
        None => None,
    };
    let height = views.applied_height().map_err(store_error)?;
    let counts = views.patient_counts(patient_id).map_err(store_error)?;
    let latest = views
        .latest_of_types(
            patient_id,
            counts.types.iter().map(|t| t.record_type.as_str()),
        )
        .map_err(store_error)?;
    let active_filter = TimelineFilter {
        status: Some(RecordStatus::Active),
        ..TimelineFilter::default()
    };
    let active = views
        .timeline(
            Owner::Patient(patient_id),
            &active_filter,
            None,
            SUMMARY_ACTIVE_SHOWN,
        )
        .map_err(query_error)?
        .items;
    let grants = views
        .grants(patient_id, None, SUMMARY_GRANTS_SHOWN)
        .map_err(query_error)?;
    let last_read = views
        .access_log(patient_id, None, None, 1)
        .map_err(query_error)?
        .items
        .into_iter()
        .next();
    Ok(SummaryRead {
        height,
        counts,
        latest,
        active,
        grants,
        caller_grant,
        last_read,
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatsQuery {
    group_by: Option<String>,
    hospital_id: Option<String>,
    #[serde(rename = "type")]
    record_type: Option<String>,
    status: Option<RecordStatus>,
    from: Option<String>,
    to: Option<String>,
    min_height: Option<u64>,
}

/// A dimension of `group_by`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Dimension {
    Hospital,
    Type,
    Month,
    Status,
}

impl Dimension {
    const ALL: [(&'static str, Dimension); 4] = [
        ("hospital", Dimension::Hospital),
        ("type", Dimension::Type),
        ("month", Dimension::Month),
        ("status", Dimension::Status),
    ];

    fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, d)| *d == self)
            .map(|(n, _)| *n)
            .expect("every dimension is named")
    }
}

fn parse_group_by(text: Option<&str>) -> Result<Vec<Dimension>, ApiError> {
    let Some(text) = text else {
        return Ok(vec![Dimension::Month]);
    };
    let invalid = || {
        ApiError::bad_request(
            "invalid_group_by",
            "group_by is a comma-separated list of hospital, type, month and status",
        )
    };
    let mut dims = Vec::new();
    for part in text.split(',').filter(|p| !p.is_empty()) {
        let dim = Dimension::ALL
            .iter()
            .find(|(n, _)| *n == part)
            .map(|(_, d)| *d)
            .ok_or_else(invalid)?;
        if !dims.contains(&dim) {
            dims.push(dim);
        }
    }
    Ok(dims)
}

fn parse_month_param(name: &str, text: Option<&str>) -> Result<Option<i64>, ApiError> {
    text.map(|t| {
        parse_month(t).ok_or_else(|| {
            ApiError::bad_request(
                "invalid_month",
                format!("{name} is a month, YYYY-MM (such as 2026-11)"),
            )
        })
    })
    .transpose()
}

/// One group of a stats answer: its key in the dimensions asked for, in order (the
/// month descending, newest first).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Part {
    Text(String),
    NewestFirst(std::cmp::Reverse<i64>),
    Status(u8),
}

#[derive(Serialize)]
struct Group {
    #[serde(skip_serializing_if = "Option::is_none")]
    hospital_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    record_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    month: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<RecordStatus>,
    count: u64,
}

/// `GET /v1/stats`: counts of records by any of hospital, type, month (of creation) and
/// status, filtered by hospital, type, status and a range of months (`to` exclusive).
/// Admins and auditors see every hospital; a clinician sees its own hospital's.
pub async fn stats(
    state: Data,
    caller: Caller,
    query: web::Query<StatsQuery>,
) -> Result<HttpResponse, ApiError> {
    let query = query.into_inner();
    let dims = parse_group_by(query.group_by.as_deref())?;
    if let Some(id) = &query.hospital_id {
        check_id("hospital_id", id)?;
    }
    let hospital_id = match caller.role() {
        Role::Admin | Role::Auditor => query.hospital_id,
        Role::Clinician => match (query.hospital_id, caller.hospital()) {
            (None, Some(own)) => Some(own.to_owned()),
            (Some(h), Some(own)) if h == own => Some(h),
            _ => {
                return Err(ApiError::forbidden(
                    "a clinician sees the counts of its own hospital",
                ))
            }
        },
        Role::Patient => return Err(ApiError::forbidden("patients have no access to the stats")),
    };
    let filter = StatsFilter {
        hospital_id,
        record_type: query.record_type,
        status: query.status,
        from_month: parse_month_param("from", query.from.as_deref())?,
        to_month: parse_month_param("to", query.to.as_deref())?,
    };
    honour_min_height(&state, query.min_height).await?;
    let st = state.clone();
    let (height, rows) = web::block(move || {
        let views = Views::new(st.views.as_ref());
        let height = views.applied_height().map_err(store_error)?;
        let rows = views.stats(&filter).map_err(query_error)?;
        Ok::<_, ApiError>((height, rows))
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))??;
    let mut groups: BTreeMap<Vec<Part>, u64> = BTreeMap::new();
    let mut total = 0u64;
    for row in &rows {
        total += row.count;
        let key = dims.iter().map(|d| part(*d, row)).collect();
        *groups.entry(key).or_insert(0) += row.count;
        if groups.len() > STATS_GROUPS_MAX {
            return Err(ApiError::bad_request(
                "query_too_broad",
                format!("the answer would hold more than {STATS_GROUPS_MAX} groups: group by fewer dimensions, or narrow it"),
            ));
        }
    }
    let groups: Vec<Group> = groups
        .into_iter()
        .map(|(key, count)| {
            let mut group = Group {
                hospital_id: None,
                record_type: None,
                month: None,
                status: None,
                count,
            };
            for (dim, part) in dims.iter().zip(key) {
                match (dim, part) {
                    (Dimension::Hospital, Part::Text(h)) => group.hospital_id = Some(h),
                    (Dimension::Type, Part::Text(t)) => group.record_type = Some(t),
                    (Dimension::Month, Part::NewestFirst(m)) => {
                        group.month = Some(month_text(m.0).unwrap_or_else(|| m.0.to_string()))
                    }
                    (Dimension::Status, Part::Status(s)) => {
                        group.status = STATUSES.get(usize::from(s)).copied()
                    }
                    _ => unreachable!("parts are made per dimension"),
                }
            }
            group
        })
        .collect();
    Ok(HttpResponse::Ok().json(json!({
        "group_by": dims.iter().map(|d| d.name()).collect::<Vec<_>>(),
        "height": height,
        "total": total,
        "groups": groups,
    })))
}

fn part(dim: Dimension, row: &StatRow) -> Part {
    match dim {
        Dimension::Hospital => Part::Text(row.hospital_id.clone()),
        Dimension::Type => Part::Text(row.record_type.clone()),
        Dimension::Month => Part::NewestFirst(std::cmp::Reverse(row.month)),
        Dimension::Status => Part::Status(medledger_views::keys::status_code(row.status)),
    }
}

/// The query parameters of `GET /v1/stats`, for the OpenAPI document.
pub(super) fn query_params(min_height: super::openapi::Param) -> Vec<super::openapi::Param> {
    let month = json!({"type": "string", "pattern": "^[0-9]{4}-(0[1-9]|1[0-2])$"});
    vec![
        (
            "group_by",
            json!({"type": "string", "pattern": "^((hospital|type|month|status)(,(hospital|type|month|status))*)?$"}),
            "Comma-separated dimensions (default month; a repeated one counts once); empty: the total only.",
        ),
        ("hospital_id", json!({"type": "string", "pattern": "^[A-Za-z0-9._:@-]{1,128}$"}), "Only this hospital (a clinician: its own, the default)."),
        ("type", json!({"type": "string", "minLength": 1, "maxLength": medledger_chaincode::limits::RECORD_TYPE_LEN_MAX}), "Only this record type."),
        (
            "status",
            json!({"type": "string", "enum": ["active", "archived", "entered_in_error"]}),
            "Only records with this status now.",
        ),
        ("from", month.clone(), "Records created in this month (YYYY-MM) or later."),
        ("to", month, "Records created before this month (YYYY-MM)."),
        min_height,
    ]
}

/// The success bodies of the two routes, for the OpenAPI document.
pub(super) fn schemas() -> Vec<(&'static str, Value)> {
    use super::openapi::{array, closed, closed_optional, count, id, reference, time};
    let by_status =
        closed(json!({"active": count(), "archived": count(), "entered_in_error": count()}));
    let status = json!({"type": "string", "enum": ["active", "archived", "entered_in_error"]});
    let summary = closed(json!({
        "patient_id": id(),
        "height": count(),
        "records": count(),
        "by_status": by_status,
        "by_type": array(closed(json!({
            "record_type": id(), "total": count(), "by_status": by_status,
            "latest": {"oneOf": [{"type": "null"}, reference("record")]}
        }))),
        "types_truncated": {"type": "boolean"},
        "active": closed(json!({"count": count(), "items": array(reference("record"))})),
        "grants": {"oneOf": [{"type": "null"}, array(closed(json!({
            "grantee_id": id(), "granted_at": time(),
            "expires_at": {"oneOf": [{"type": "null"}, time()]},
            "scope": array(id())
        })))]},
        "last_read": {"oneOf": [{"type": "null"}, closed(json!({
            "read_at": time(),
            "reader": closed(json!({
                "id": id(),
                "role": {"type": "string", "enum": ["patient", "clinician", "auditor", "admin"]},
                "hospital": {"type": ["string", "null"]}
            })),
            "what": {"type": "string", "enum": medledger_chaincode::READ_KINDS},
            "purpose": {"type": "string", "enum": medledger_chaincode::READ_PURPOSES},
            "break_glass": {"type": "boolean"}
        }))]}
    }));
    let group = closed_optional(
        json!({
            "hospital_id": id(), "record_type": id(),
            "month": {"type": "string", "pattern": "^[0-9]{4}-[0-9]{2}$"},
            "status": status, "count": {"type": "integer", "minimum": 1}
        }),
        &["hospital_id", "record_type", "month", "status"],
    );
    let stats = closed(json!({
        "group_by": array(json!({"type": "string", "enum": ["hospital", "type", "month", "status"]})),
        "height": count(),
        "total": count(),
        "groups": array(group)
    }));
    vec![("patient_summary", summary), ("stats", stats)]
}
