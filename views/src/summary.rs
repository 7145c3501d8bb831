//! Queries over the count views: a patient's summary ([`Views::patient_counts`],
//! [`Views::latest_of_types`]) and the hospitals' live aggregates ([`Views::stats`]).
//!
//! Both read counts the projector keeps as records are created and change status
//! (`patient_counts`, `stats`; views/src/derive.rs), never a timeline: a summary reads
//! a patient's count rows, one timeline row per record type and those records; the
//! stats read one row per (hospital, month, type, status) in range.

use std::ops::ControlFlow;

use medledger_chaincode::RecordStatus;

use super::keys;
use super::query::{QueryError, Views};
use super::values::{self, VersionEntry};
use super::{View, ViewError};

/// The most record types a summary counts: a patient's count rows read at most three
/// times this many (one per status).
pub const SUMMARY_TYPES_MAX: usize = 256;
/// The most `stats` rows one query reads.
pub const STATS_ROWS_MAX: usize = 200_000;

/// How many of a patient's records have one type, by status.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TypeCounts {
    pub record_type: String,
    /// Indexed by [`keys::status_code`].
    pub by_status: [u64; 3],
}

impl TypeCounts {
    /// Records of this type, whatever their status.
    pub fn total(&self) -> u64 {
        self.by_status.iter().sum()
    }

    /// Records of this type and `status`.
    pub fn of(&self, status: RecordStatus) -> u64 {
        self.by_status[usize::from(keys::status_code(status))]
    }
}

/// A patient's counts by record type, in type order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PatientCounts {
    pub types: Vec<TypeCounts>,
    /// The patient has more than [`SUMMARY_TYPES_MAX`] record types: `types` holds the
    /// first ones.
    pub truncated: bool,
}

/// One row of the live aggregates: the records of a hospital created in a month with a
/// type and status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatRow {
    pub hospital_id: String,
    /// [`Timestamp::month_index`](medledger_chaincode::Timestamp::month_index).
    pub month: i64,
    pub record_type: String,
    pub status: RecordStatus,
    pub count: u64,
}

/// Which `stats` rows a query reads: all optional, months as month indexes, `to`
/// exclusive.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StatsFilter {
    pub hospital_id: Option<String>,
    pub record_type: Option<String>,
    pub status: Option<RecordStatus>,
    pub from_month: Option<i64>,
    pub to_month: Option<i64>,
}

impl Views<'_> {
    /// A patient's record counts by type and status (no rows: no records).
    pub fn patient_counts(&self, patient_id: &str) -> Result<PatientCounts, ViewError> {
        let prefix = keys::patient_counts_prefix(patient_id);
        let mut counts = PatientCounts::default();
        let mut failure = None;
        self.store()
            .for_each(View::PatientCounts, &prefix, None, &mut |k, v| {
                let parsed = keys::parse_patient_count(&prefix, k).zip(keys::decode_count(v));
                let Some(((record_type, status), n)) = parsed else {
                    failure = Some(ViewError::Malformed {
                        what: "patient count",
                    });
                    return ControlFlow::Break(());
                };
                if counts
                    .types
                    .last()
                    .is_none_or(|t| t.record_type != record_type)
                {
                    if counts.types.len() == SUMMARY_TYPES_MAX {
                        counts.truncated = true;
                        return ControlFlow::Break(());
                    }
                    counts.types.push(TypeCounts {
                        record_type,
                        by_status: [0; 3],
                    });
                }
                let last = counts.types.last_mut().expect("pushed above");
                last.by_status[usize::from(keys::status_code(status))] = n;
                ControlFlow::Continue(())
            })?;
        match failure {
            Some(e) => Err(e),
            None => Ok(counts),
        }
    }

    /// The newest record of each of `types` a patient has (a type it has none of is
    /// skipped): one timeline row per type, then the records in one lookup.
    pub fn latest_of_types<'t>(
        &self,
        patient_id: &str,
        types: impl IntoIterator<Item = &'t str>,
    ) -> Result<Vec<VersionEntry>, ViewError> {
        let mut wanted = Vec::new();
        for record_type in types {
            let prefix = keys::type_timeline_prefix(patient_id, record_type);
            let rows = self
                .store()
                .scan(View::PatientTypeTimeline, &prefix, None, 1)?;
            if let Some((key, _)) = rows.first() {
                let (_, record_id) =
                    keys::parse_timeline(&prefix, key).ok_or(ViewError::Malformed {
                        what: "type timeline key",
                    })?;
                wanted.push(keys::record(&record_id));
            }
        }
        self.store()
            .get_many(View::Records, &wanted)?
            .into_iter()
            .map(|row| match row {
                Some(b) => values::decode(&b, "record"),
                None => Err(ViewError::Malformed {
                    what: "type timeline (a row names no record)",
                }),
            })
            .collect()
    }

    /// The `stats` rows `filter` selects: by hospital, newest month first. Fails with
    /// [`QueryError::TooBroad`] rather than read more than [`STATS_ROWS_MAX`] rows, and
    /// [`QueryError::InvalidRange`] when `from_month` is not before `to_month`.
    pub fn stats(&self, filter: &StatsFilter) -> Result<Vec<StatRow>, QueryError> {
        if let (Some(from), Some(to)) = (filter.from_month, filter.to_month) {
            if from >= to {
                return Err(QueryError::InvalidRange);
            }
        }
        let prefix = filter
            .hospital_id
            .as_deref()
            .map(keys::timeline_prefix)
            .unwrap_or_default();
        // A single hospital's rows start at its newest month in range.
        let after = match (&filter.hospital_id, filter.to_month) {
            (Some(h), Some(to)) => {
                let mut k = keys::timeline_prefix(h);
                k.extend_from_slice(&keys::desc_month(to));
                // Strictly after: the rows of month `to - 1` and older, none of `to`.
                k.push(0xff);
                Some(k)
            }
            _ => None,
        };
        let mut rows = Vec::new();
        let mut scanned = 0usize;
        let mut failure = None;
        self.store()
            .for_each(View::Stats, &prefix, after.as_deref(), &mut |k, v| {
                scanned += 1;
                if scanned > STATS_ROWS_MAX {
                    failure = Some(QueryError::TooBroad {
                        rows: STATS_ROWS_MAX,
                    });
                    return ControlFlow::Break(());
                }
                let Some((key, count)) = keys::parse_stat(k).zip(keys::decode_count(v)) else {
                    failure = Some(QueryError::Store(ViewError::Malformed { what: "stat" }));
                    return ControlFlow::Break(());
                };
                if filter.from_month.is_some_and(|from| key.month < from) {
                    // Older months follow: done with this hospital (and, when it is the
                    // only one, with the query).
                    return if filter.hospital_id.is_some() {
                        ControlFlow::Break(())
                    } else {
                        ControlFlow::Continue(())
                    };
                }
                let wanted = filter.to_month.is_none_or(|to| key.month < to)
                    && filter
                        .record_type
                        .as_deref()
                        .is_none_or(|t| t == key.record_type)
                    && filter.status.is_none_or(|s| s == key.status);
                if wanted {
                    rows.push(StatRow {
                        hospital_id: key.hospital_id,
                        month: key.month,
                        record_type: key.record_type,
                        status: key.status,
                        count,
                    });
                }
                ControlFlow::Continue(())
            })?;
        match failure {
            Some(e) => Err(e),
            None => Ok(rows),
        }
    }
}
