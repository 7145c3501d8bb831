//! Timeline routes: a patient's, a clinician's or a hospital's records, newest first,
//! filtered and paged, with only what the caller may read.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use medledger_chaincode::contract::GrantState;
use medledger_chaincode::{RecordStatus, Timestamp};
use medledger_views::query::{Owner, TimelineFilter, Views};

use super::audit::{self, Declared};
use super::auth::{Caller, Role};
use super::error::ApiError;
use super::lookup::{
    honour_min_height, may_read, not_modified, page_limit, query_error, with_validator,
};
use super::records::{record_json, RecordJson};
use super::submit::ensure_key;
use super::submit::{now, store_error};
use super::AppState;

type Data = web::Data<AppState>;

/// Reads of a timeline one request makes, at most, to fill a page with rows the caller
/// may read (each reads up to the page's size in rows it returns).
const PAGE_READS_MAX: usize = 8;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimelineQuery {
    #[serde(rename = "type")]
    record_type: Option<String>,
    status: Option<RecordStatus>,
    from: Option<Timestamp>,
    to: Option<Timestamp>,
    limit: Option<usize>,
    cursor: Option<String>,
    min_height: Option<u64>,
    purpose: Option<String>,
    break_glass: Option<String>,
}

impl TimelineQuery {
    fn filter(&self) -> TimelineFilter {
        TimelineFilter {
            record_type: self.record_type.clone(),
            status: self.status,
            from: self.from,
            to: self.to,
        }
    }
}

#[derive(Clone, Copy)]
enum OwnerKind {
    Patient,
    Clinician,
    Hospital,
}

impl OwnerKind {
    fn owner(self, id: &str) -> Owner<'_> {
        match self {
            OwnerKind::Patient => Owner::Patient(id),
            OwnerKind::Clinician => Owner::Author(id),
            OwnerKind::Hospital => Owner::Hospital(id),
        }
    }
}

/// The validator of a timeline page (see `medledger_views::changes`): `changed`, the
/// height of the owner's last change (taken before the grant and the rows are read, so
/// both are at least as new as it), with everything else the page depends on: the caller (role, id,
/// hospital), the query, and for a clinician on a patient's timeline whether their grant
/// exists and has expired. None where what the caller may read of the page can change
/// with no change of the owner's timeline: the records a clinician wrote may be of
/// hospitals it no longer works at, read through the grants of every patient in them.
fn validator(
    state: &AppState,
    changed: u64,
    caller: &Caller,
    kind: OwnerKind,
    owner: &str,
    query: &TimelineQuery,
    grant: Option<&Option<GrantState>>,
) -> Option<String> {
    let grant = match (caller.role(), kind) {
        (Role::Clinician, OwnerKind::Clinician) => return None,
        (Role::Clinician, OwnerKind::Hospital) if caller.hospital() != Some(owner) => return None,
        (_, _) => match grant {
            None => '-',
            Some(None) => 'n',
            Some(Some(g)) if g.expires_at.is_some_and(|end| now() >= end) => 'x',
            Some(Some(_)) => 'g',
        },
    };
    let mut scope = Sha256::new();
    for part in [
        format!("{:?}", caller.role()).as_str(),
        caller.id(),
        caller.hospital().unwrap_or(""),
        owner,
        query.record_type.as_deref().unwrap_or(""),
        &format!(
            "{:?}|{:?}|{:?}|{:?}|{}",
            kind as u8,
            query.status,
            query.from,
            query.to,
            query.limit.unwrap_or(0)
        ),
        query.cursor.as_deref().unwrap_or(""),
        query.break_glass.as_deref().unwrap_or(""),
    ] {
        scope.update((part.len() as u64).to_be_bytes());
        scope.update(part.as_bytes());
    }
    let scope = hex::encode(&scope.finalize()[..8]);
    Some(format!(
        "W/\"t-{:x}-{changed}-{grant}-{scope}\"",
        state.projector.changes().epoch()
    ))
}

async fn timeline(
    state: Data,
    caller: Caller,
    kind: OwnerKind,
    owner: String,
    query: TimelineQuery,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let allowed = match kind {
        OwnerKind::Patient => caller.may_list_patient(&owner),
        OwnerKind::Clinician => caller.may_list_clinician(&owner),
        OwnerKind::Hospital => caller.may_list_hospital(&owner),
    };
    if !allowed {
        return Err(ApiError::forbidden(format!(
            "you may not list the records of `{owner}`"
        )));
    }
    let declared = Declared::parse(
        &caller,
        query.purpose.as_deref(),
        query.break_glass.as_deref(),
        matches!(kind, OwnerKind::Patient),
    )?;
    let limit = page_limit(query.limit)?;
    honour_min_height(&state, query.min_height).await?;
    // Taken first: the grant and the rows read after it are at least as new as it.
    let changed = state.projector.changes().of(kind.owner(&owner));
    // Every row of a patient's timeline is that patient's: a clinician's grant is read
    // once for the page, not once per row.
    let grant = match (kind, caller.role()) {
        (OwnerKind::Patient, Role::Clinician) => Some(
            Views::new(state.views.as_ref())
                .grant(&owner, caller.id())
                .map_err(store_error)?,
        ),
        _ => None,
    };
    let etag = validator(
        &state,
        changed,
        &caller,
        kind,
        &owner,
        &query,
        grant.as_ref(),
    );
    if let Some(tag) = &etag {
        if not_modified(&req, tag) {
            return Ok(with_validator(HttpResponse::NotModified().finish(), tag));
        }
    }
    #[derive(Serialize)]
    struct Page<'a> {
        items: Vec<RecordJson<'a>>,
        next_cursor: Option<String>,
    }
    // A page holds `limit` rows the caller may read, whatever it may not read between
    // them: rows are fetched until the page is full or the timeline ends, so neither a
    // short page nor a cursor tells that hidden rows exist (up to PAGE_READS_MAX
    // reads of the timeline per request; past that the page is short and has a cursor).
    let readable = |entry: &medledger_views::values::VersionEntry| -> Result<bool, ApiError> {
        Ok(declared.is_break_glass()
            || match &grant {
                Some(g) => caller.may_read_record(&entry.state, g.as_ref(), now()),
                None => may_read(&state, &caller, entry)?,
            })
    };
    let mut entries = Vec::with_capacity(limit);
    let mut cursor = query.cursor.clone();
    let mut reads = 0usize;
    let mut hidden = false;
    let filter = query.filter();
    let read = |want: usize, after: Option<String>| {
        let (st, owner, filter) = (state.clone(), owner.clone(), filter.clone());
        async move {
            web::block(move || {
                let views = Views::new(st.views.as_ref());
                views.timeline(kind.owner(&owner), &filter, after.as_deref(), want)
            })
            .await
            .map_err(|e| ApiError::internal(e.to_string()))?
            .map_err(query_error)
        }
    };
    loop {
        let page = read(limit - entries.len(), cursor.clone()).await?;
        reads += 1;
        for entry in page.items {
            if readable(&entry)? {
                entries.push(entry);
            } else {
                hidden = true;
            }
        }
        cursor = page.next_cursor;
        if entries.len() >= limit || cursor.is_none() || reads >= PAGE_READS_MAX {
            break;
        }
    }
    // A full page's cursor must not promise rows the caller cannot see: where rows may
    // be hidden (a clinician's, outside its own hospital's list, without break-glass),
    // look ahead (within the same budget of reads) for one it may read; none before the
    // end, and the page is the last.
    let may_hide = caller.role() == Role::Clinician
        && !declared.is_break_glass()
        && !(matches!(kind, OwnerKind::Hospital) && caller.hospital() == Some(owner.as_str()));
    let mut ahead = cursor.clone();
    while (hidden || may_hide) && entries.len() >= limit && reads < PAGE_READS_MAX {
        let Some(after) = ahead.take() else {
            cursor = None;
            break;
        };
        let page = read(limit, Some(after)).await?;
        reads += 1;
        let mut found = false;
        for entry in &page.items {
            if readable(entry)? {
                found = true;
                break;
            }
        }
        match page.next_cursor {
            _ if found => break,
            // The timeline ends with nothing more the caller may read.
            None => {
                cursor = None;
                break;
            }
            next => ahead = next,
        }
    }
    let shown: Vec<(&str, &str)> = entries
        .iter()
        .map(|e| (e.state.patient_id.as_str(), e.state.record_id.as_str()))
        .collect();
    audit::record(&state, &caller, &declared, "timeline", &shown).await?;
    let mut items = Vec::with_capacity(entries.len());
    for entry in &entries {
        ensure_key(&state, &entry.state).await;
        items.push(record_json(state.payloads.keys(), entry)?);
    }
    let response = HttpResponse::Ok().json(Page {
        items,
        next_cursor: cursor,
    });
    Ok(match &etag {
        Some(tag) => with_validator(response, tag),
        None => response,
    })
}

/// `GET /v1/patients/{id}/records`.
pub async fn patient_timeline(
    state: Data,
    caller: Caller,
    path: web::Path<String>,
    query: web::Query<TimelineQuery>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    timeline(
        state,
        caller,
        OwnerKind::Patient,
        path.into_inner(),
        query.into_inner(),
        req,
    )
    .await
}

/// `GET /v1/clinicians/{id}/records`.
pub async fn clinician_timeline(
    state: Data,
    caller: Caller,
    path: web::Path<String>,
    query: web::Query<TimelineQuery>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    timeline(
        state,
        caller,
        OwnerKind::Clinician,
        path.into_inner(),
        query.into_inner(),
        req,
    )
    .await
}

/// `GET /v1/hospitals/{id}/records`.
pub async fn hospital_timeline(
    state: Data,
    caller: Caller,
    path: web::Path<String>,
    query: web::Query<TimelineQuery>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    timeline(
        state,
        caller,
        OwnerKind::Hospital,
        path.into_inner(),
        query.into_inner(),
        req,
    )
    .await
}
