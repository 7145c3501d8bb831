//! Queries over the views: what the HTTP API serves.
//!
//! Every list is bounded: a page holds at most [`PAGE_LIMIT_MAX`] items, and a page stops
//! after reading [`SCAN_ROWS_MAX`] index rows even if the filters kept fewer items (the
//! cursor then continues from there), so no request scans a hospital's whole history.
//! Whole timelines are read with [`Views::export_timeline`], which streams in constant
//! memory.

use std::ops::ControlFlow;

use medledger_chaincode::contract::GrantState;
use medledger_chaincode::{RecordStatus, Timestamp};
use sha2::{Digest, Sha256};

use super::keys;
use super::values::{self, AccessLogEntry, AuditEntry, Rejection, Summary, VersionEntry};
use super::{View, ViewError, ViewStore};

/// The most items one page returns.
pub const PAGE_LIMIT_MAX: usize = 1000;
/// The most index rows one page reads.
pub const SCAN_ROWS_MAX: usize = 10_000;

/// Whose timeline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Owner<'a> {
    Patient(&'a str),
    Author(&'a str),
    Hospital(&'a str),
}

/// Filters of a timeline query. Times bound `created_at`: `from` inclusive, `to`
/// exclusive.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TimelineFilter {
    pub record_type: Option<String>,
    pub status: Option<RecordStatus>,
    pub from: Option<Timestamp>,
    pub to: Option<Timestamp>,
}

/// A page of an access log: the reads, and where the next page starts (none: the log
/// ends here).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccessLogPage {
    pub items: Vec<AccessLogEntry>,
    pub next: Option<(u64, u32)>,
}

/// One page of a timeline, newest first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Page {
    pub items: Vec<VersionEntry>,
    /// Pass back to continue; `None` when the timeline has no more rows.
    pub next_cursor: Option<String>,
}

/// A query argument that cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The cursor was not made by this query.
    #[error("the cursor is not valid for this query")]
    InvalidCursor,
    /// The limit is 0 or above [`PAGE_LIMIT_MAX`].
    #[error("limit must be between 1 and {PAGE_LIMIT_MAX}, got {0}")]
    InvalidLimit(usize),
    /// `from` is not before `to`.
    #[error("`from` must be before `to`")]
    InvalidRange,
    /// The query would read more than `rows` rows: narrow it.
    #[error("the query reads more than {rows} rows: narrow it (a hospital, a range of months)")]
    TooBroad { rows: usize },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] ViewError),
}

impl QueryError {
    /// A stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            QueryError::InvalidCursor => "invalid_cursor",
            QueryError::InvalidLimit(_) => "invalid_limit",
            QueryError::InvalidRange => "invalid_range",
            QueryError::TooBroad { .. } => "query_too_broad",
            QueryError::Store(_) => "store_error",
        }
    }
}

/// Read access to the views.
#[derive(Clone, Copy)]
pub struct Views<'s> {
    store: &'s dyn ViewStore,
}

/// Called with each timeline key read and, when the row passes the filters, its record id.
type RowVisitor<'a> = dyn FnMut(&[u8], Option<String>) -> ControlFlow<()> + 'a;

/// Which index serves a timeline query, and the key prefix within it.
struct Plan {
    view: View,
    prefix: Vec<u8>,
}

impl<'s> Views<'s> {
    /// Queries over `store`.
    pub fn new(store: &'s dyn ViewStore) -> Self {
        Views { store }
    }

    /// The store queried.
    pub(crate) fn store(&self) -> &'s dyn ViewStore {
        self.store
    }

    /// Blocks `0..height` are reflected.
    pub fn applied_height(&self) -> Result<u64, ViewError> {
        self.store.applied_height()
    }

    /// The record's current version.
    pub fn record(&self, record_id: &str) -> Result<Option<VersionEntry>, ViewError> {
        self.store
            .get(View::Records, &keys::record(record_id))?
            .map(|b| values::decode(&b, "record"))
            .transpose()
    }

    /// The current version of each of `record_ids` (in one multi-get), `None` for an id
    /// the views do not hold.
    pub fn records(&self, record_ids: &[&str]) -> Result<Vec<Option<VersionEntry>>, ViewError> {
        let wanted: Vec<Vec<u8>> = record_ids.iter().map(|id| keys::record(id)).collect();
        self.store
            .get_many(View::Records, &wanted)?
            .into_iter()
            .map(|row| row.map(|b| values::decode(&b, "record")).transpose())
            .collect()
    }

    /// One version of a record.
    pub fn record_version(
        &self,
        record_id: &str,
        version: u32,
    ) -> Result<Option<VersionEntry>, ViewError> {
        // `record_versions` holds the superseded versions; the current one is in
        // `records`.
        if let Some(bytes) = self.store.get(
            View::RecordVersions,
            &keys::record_version(record_id, version),
        )? {
            return values::decode(&bytes, "record version").map(Some);
        }
        Ok(self
            .record(record_id)?
            .filter(|current| current.state.version == version))
    }

    /// Versions of a record oldest first, after version `after` (0 for the start), at most
    /// `limit`.
    pub fn record_history(
        &self,
        record_id: &str,
        after: u32,
        limit: usize,
    ) -> Result<Vec<VersionEntry>, QueryError> {
        check_limit(limit)?;
        // The current version is read first: if the projector supersedes it during the
        // scan, the scan finds it in `record_versions` and it is not added twice.
        let current = self.record(record_id)?;
        let prefix = keys::record_versions_prefix(record_id);
        let cursor = (after > 0).then(|| keys::record_version(record_id, after));
        let mut versions = self
            .store
            .scan(View::RecordVersions, &prefix, cursor.as_deref(), limit)?
            .iter()
            .map(|(_, v)| values::decode(v, "record version"))
            .collect::<Result<Vec<VersionEntry>, ViewError>>()?;
        // When the superseded versions ran out, the current one comes last.
        let last = versions.last().map_or(after, |v| v.state.version);
        if let Some(current) = current.filter(|c| versions.len() < limit && c.state.version > last)
        {
            versions.push(current);
        }
        Ok(versions)
    }

    /// The record as it was when the ledger had `height` blocks (blocks `0..height`):
    /// its last version made in a block below `height`, or `None` if it did not exist yet.
    /// A binary search over versions (their blocks only grow): O(log versions) reads.
    pub fn record_as_of(
        &self,
        record_id: &str,
        height: u64,
    ) -> Result<Option<VersionEntry>, ViewError> {
        let Some(current) = self.record(record_id)? else {
            return Ok(None);
        };
        if current.at.block < height {
            return Ok(Some(current));
        }
        // Invariant: versions below `lo` were made below `height`; versions >= `hi` not.
        let (mut lo, mut hi) = (1u32, current.state.version);
        let mut best = None;
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let entry = self
                .record_version(record_id, mid)?
                .ok_or(ViewError::Malformed {
                    what: "record history (a version is missing)",
                })?;
            if entry.at.block < height {
                lo = mid + 1;
                best = Some(entry);
            } else {
                hi = mid;
            }
        }
        Ok(best)
    }

    /// A patient's grant to a grantee.
    pub fn grant(
        &self,
        patient_id: &str,
        grantee_id: &str,
    ) -> Result<Option<GrantState>, ViewError> {
        self.store
            .get(View::Grants, &keys::grant(patient_id, grantee_id))?
            .map(|b| values::decode(&b, "grant"))
            .transpose()
    }

    /// A patient's grants in grantee order, at most `limit`, after grantee `after`.
    pub fn grants(
        &self,
        patient_id: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<GrantState>, QueryError> {
        check_limit(limit)?;
        let prefix = keys::timeline_prefix(patient_id);
        let cursor = after.map(|g| keys::grant(patient_id, g));
        self.store
            .scan(View::Grants, &prefix, cursor.as_deref(), limit)?
            .iter()
            .map(|(_, v)| values::decode(v, "grant").map_err(QueryError::from))
            .collect()
    }

    /// A record's access log in ledger order, at most `limit`, after `(block, position)`.
    pub fn audit_trail(
        &self,
        record_id: &str,
        after: Option<(u64, u32)>,
        limit: usize,
    ) -> Result<Vec<AuditEntry>, QueryError> {
        check_limit(limit)?;
        let prefix = keys::record_versions_prefix(record_id);
        let cursor = after.map(|(b, p)| keys::audit(record_id, b, p));
        self.store
            .scan(View::Audit, &prefix, cursor.as_deref(), limit)?
            .iter()
            .map(|(_, v)| values::decode(v, "audit entry").map_err(QueryError::from))
            .collect()
    }

    /// The reads of a patient's clinical content, or of one of its records (`record`),
    /// newest first, at most `limit`, after the read at `(block, position)`. A record's
    /// reads are found among its patient's: a page stops after [`SCAN_ROWS_MAX`] of them
    /// even if fewer matched, and its `next` says where to go on.
    pub fn access_log(
        &self,
        patient_id: &str,
        record: Option<&str>,
        after: Option<(u64, u32)>,
        limit: usize,
    ) -> Result<AccessLogPage, QueryError> {
        check_limit(limit)?;
        let prefix = keys::access_log_prefix(patient_id);
        let cursor = after.map(|(b, p)| keys::access_log(patient_id, b, p));
        let mut page = AccessLogPage {
            items: Vec::new(),
            next: None,
        };
        let mut scanned = 0usize;
        let mut failure = None;
        self.store
            .for_each(View::AccessLog, &prefix, cursor.as_deref(), &mut |_, v| {
                scanned += 1;
                let entry: AccessLogEntry = match values::decode(v, "access log entry") {
                    Ok(e) => e,
                    Err(e) => {
                        failure = Some(e);
                        return ControlFlow::Break(());
                    }
                };
                let at = (entry.at.block, entry.at.position);
                if record.is_none_or(|r| entry.record_ids.iter().any(|id| id == r)) {
                    page.items.push(entry);
                }
                if page.items.len() >= limit || scanned >= SCAN_ROWS_MAX {
                    page.next = Some(at);
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            })?;
        if let Some(e) = failure {
            return Err(e.into());
        }
        Ok(page)
    }

    /// Why the transaction at `(block, position)` was rejected, if it was.
    pub fn rejection(&self, block: u64, position: u32) -> Result<Option<Rejection>, ViewError> {
        self.store
            .get(View::Rejected, &keys::rejected(block, position))?
            .map(|b| values::decode(&b, "rejection"))
            .transpose()
    }

    /// One page of a timeline, newest first, with the records' current versions.
    pub fn timeline(
        &self,
        owner: Owner<'_>,
        filter: &TimelineFilter,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Page, QueryError> {
        check_limit(limit)?;
        let plan = plan(owner, filter)?;
        let after = match cursor {
            None => start_after(&plan, filter),
            Some(c) => Some(open_cursor(&plan, c)?),
        };
        // The page's record keys from the scan, then their rows in one lookup.
        let mut wanted: Vec<Vec<u8>> = Vec::with_capacity(limit.min(1024));
        let mut scanned = 0usize;
        let mut last_key: Option<Vec<u8>> = None;
        let mut exhausted = true;
        let scan_rows_max = SCAN_ROWS_MAX.max(limit);
        self.visit(&plan, filter, after.as_deref(), &mut |key, summary_ok| {
            scanned += 1;
            last_key = Some(key.to_vec());
            if let Some(record_id) = summary_ok {
                wanted.push(keys::record(&record_id));
            }
            if wanted.len() >= limit || scanned >= scan_rows_max {
                exhausted = false;
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })?;
        let items = self
            .store
            .get_many(View::Records, &wanted)?
            .into_iter()
            .map(|row| match row {
                Some(b) => values::decode(&b, "record"),
                None => Err(ViewError::Malformed {
                    what: "timeline (a row names no record)",
                }),
            })
            .collect::<Result<Vec<VersionEntry>, ViewError>>()?;
        let next_cursor = match (exhausted, last_key) {
            (false, Some(k)) => Some(seal_cursor(&plan, &k[plan.prefix.len()..])),
            _ => None,
        };
        Ok(Page { items, next_cursor })
    }

    /// Streams a whole timeline, newest first, in constant memory: `visit` gets each
    /// record's current version until it breaks.
    pub fn export_timeline(
        &self,
        owner: Owner<'_>,
        filter: &TimelineFilter,
        visit: &mut dyn FnMut(VersionEntry) -> ControlFlow<()>,
    ) -> Result<(), QueryError> {
        let plan = plan(owner, filter)?;
        let after = start_after(&plan, filter);
        let mut failure = None;
        self.visit(&plan, filter, after.as_deref(), &mut |_, matched| {
            let Some(record_id) = matched else {
                return ControlFlow::Continue(());
            };
            match self.record(&record_id) {
                Ok(Some(entry)) => visit(entry),
                Ok(None) => {
                    failure = Some(ViewError::Malformed {
                        what: "timeline (a row names no record)",
                    });
                    ControlFlow::Break(())
                }
                Err(e) => {
                    failure = Some(e);
                    ControlFlow::Break(())
                }
            }
        })?;
        match failure {
            Some(e) => Err(e.into()),
            None => Ok(()),
        }
    }

    /// Walks the plan's rows after `after` until `from`, calling `visit` with each key and
    /// the record id when the row passes the filters (`None` when it does not).
    fn visit(
        &self,
        plan: &Plan,
        filter: &TimelineFilter,
        after: Option<&[u8]>,
        visit: &mut RowVisitor<'_>,
    ) -> Result<(), QueryError> {
        let mut malformed = None;
        self.store
            .for_each(plan.view, &plan.prefix, after, &mut |key, value| {
                let Some((created_at, record_id)) = keys::parse_timeline(&plan.prefix, key) else {
                    malformed = Some("timeline key");
                    return ControlFlow::Break(());
                };
                if filter.from.is_some_and(|from| created_at < from) {
                    return ControlFlow::Break(());
                }
                let summary: Summary = match values::decode(value, "timeline summary") {
                    Ok(s) => s,
                    Err(_) => {
                        malformed = Some("timeline summary");
                        return ControlFlow::Break(());
                    }
                };
                let keep = filter.status.is_none_or(|s| s == summary.status)
                    && filter
                        .record_type
                        .as_deref()
                        .is_none_or(|t| t == summary.record_type)
                    && filter.to.is_none_or(|to| created_at < to);
                visit(key, keep.then_some(record_id))
            })?;
        match malformed {
            Some(what) => Err(ViewError::Malformed { what }.into()),
            None => Ok(()),
        }
    }
}

/// Bytes of the check tag that ends a cursor.
const CURSOR_TAG_BYTES: usize = 8;

/// A cursor: hex of the last key read (after the owner prefix) and a tag binding it to
/// the query's index and prefix, so a cursor that was altered or made for another query is
/// refused (`invalid_cursor`) rather than silently starting somewhere else. The tag is a
/// checksum, not a secret: a forged cursor can only start the caller's own query at
/// another row.
fn seal_cursor(plan: &Plan, suffix: &[u8]) -> String {
    let mut bytes = suffix.to_vec();
    bytes.extend_from_slice(&cursor_tag(plan, suffix));
    hex::encode(bytes)
}

fn open_cursor(plan: &Plan, cursor: &str) -> Result<Vec<u8>, QueryError> {
    // desc(created_at), a record id of at most ID_LEN_MAX bytes, and the tag, in hex.
    let max = 8 + medledger_chaincode::limits::ID_LEN_MAX + CURSOR_TAG_BYTES;
    if cursor.len() > 2 * max {
        return Err(QueryError::InvalidCursor);
    }
    let bytes = hex::decode(cursor).map_err(|_| QueryError::InvalidCursor)?;
    if bytes.len() < 8 + CURSOR_TAG_BYTES {
        return Err(QueryError::InvalidCursor);
    }
    let (suffix, tag) = bytes.split_at(bytes.len() - CURSOR_TAG_BYTES);
    if tag != cursor_tag(plan, suffix) {
        return Err(QueryError::InvalidCursor);
    }
    let mut key = plan.prefix.clone();
    key.extend_from_slice(suffix);
    Ok(key)
}

fn cursor_tag(plan: &Plan, suffix: &[u8]) -> [u8; CURSOR_TAG_BYTES] {
    let mut h = Sha256::new();
    h.update(b"medledger-cursor-v1");
    h.update([plan.view as u8]);
    h.update((plan.prefix.len() as u32).to_le_bytes());
    h.update(&plan.prefix);
    h.update(suffix);
    let digest = h.finalize();
    let mut tag = [0u8; CURSOR_TAG_BYTES];
    tag.copy_from_slice(&digest[..CURSOR_TAG_BYTES]);
    tag
}

fn check_limit(limit: usize) -> Result<(), QueryError> {
    if limit == 0 || limit > PAGE_LIMIT_MAX {
        return Err(QueryError::InvalidLimit(limit));
    }
    Ok(())
}

/// Picks the narrowest index: a patient's records of one type, a patient's active records,
/// or the owner's whole timeline.
fn plan(owner: Owner<'_>, filter: &TimelineFilter) -> Result<Plan, QueryError> {
    if let (Some(from), Some(to)) = (filter.from, filter.to) {
        if from >= to {
            return Err(QueryError::InvalidRange);
        }
    }
    Ok(match owner {
        Owner::Patient(p) => match (&filter.record_type, filter.status) {
            (Some(t), _) => Plan {
                view: View::PatientTypeTimeline,
                prefix: keys::type_timeline_prefix(p, t),
            },
            (None, Some(RecordStatus::Active)) => Plan {
                view: View::Active,
                prefix: keys::timeline_prefix(p),
            },
            (None, _) => Plan {
                view: View::PatientTimeline,
                prefix: keys::timeline_prefix(p),
            },
        },
        Owner::Author(a) => Plan {
            view: View::AuthorTimeline,
            prefix: keys::timeline_prefix(a),
        },
        Owner::Hospital(h) => Plan {
            view: View::HospitalTimeline,
            prefix: keys::timeline_prefix(h),
        },
    })
}

/// With a `to` bound, the scan starts after every row at or above it: keys are newest
/// first, so rows created before `to` follow the key `prefix ‖ desc(to) ‖ 0xff..`.
fn start_after(plan: &Plan, filter: &TimelineFilter) -> Option<Vec<u8>> {
    let to = filter.to?;
    let mut key = plan.prefix.clone();
    key.extend_from_slice(&keys::desc(to));
    key.extend_from_slice(&[0xff; 256]);
    Some(key)
}
