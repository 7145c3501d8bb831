//! The count views (`patient_counts`, `stats`) of a rebuild, derived from the rows of
//! the timelines they count.
//!
//! The live projector keeps the counts event by event (views/src/project.rs). A rebuild
//! cannot: its partitions are ranges of record ids, and one patient's or hospital's
//! records lie in many of them. But every count is a count of timeline rows: a
//! patient's records of one type and status are its `patient_type_timeline` rows with
//! that type and status; a hospital's records of one month, type and status are its
//! `hospital_timeline` rows created that month with them. So a bulk store asked to
//! ([`crate::ViewStore::derive_counts_at_flush`]) counts those rows as its flush merges
//! them, in key order, and writes the counts beside them: a patient's counts follow its
//! rows of one type, a hospital's those of one month, so only one group is held at a
//! time and the counts come out in key order.

use std::collections::BTreeMap;

use medledger_chaincode::{RecordStatus, Timestamp};

use crate::keys::{self, SEP};
use crate::values::{self, Summary};
use crate::{View, ViewError};

/// Where derived rows go, in key order.
pub(crate) type Out<'a> = dyn FnMut(&[u8], &[u8]) -> Result<(), ViewError> + 'a;

/// Counts the rows of one source view, in key order, into its count view.
pub(crate) struct Deriver {
    kind: Kind,
    /// The group being counted: its key prefix.
    group: Vec<u8>,
    /// Its counts: by status for a patient's type; by (type 0x00 status) for a
    /// hospital's month.
    counts: BTreeMap<Vec<u8>, u64>,
}

#[derive(Clone, Copy)]
enum Kind {
    /// `patient_type_timeline` → `patient_counts`; group: patient 0x00 type 0x00.
    PatientCounts,
    /// `hospital_timeline` → `stats`; group: hospital 0x00 desc(month).
    Stats,
}

impl Deriver {
    /// The deriver fed by `source`'s rows, if a view is derived from it.
    pub(crate) fn fed_by(source: View) -> Option<Deriver> {
        let kind = match source {
            View::PatientTypeTimeline => Kind::PatientCounts,
            View::HospitalTimeline => Kind::Stats,
            _ => return None,
        };
        Some(Deriver {
            kind,
            group: Vec::new(),
            counts: BTreeMap::new(),
        })
    }

    /// The views derived at a flush, from the rows of other views.
    pub(crate) fn is_derived(view: View) -> bool {
        matches!(view, View::PatientCounts | View::Stats)
    }

    /// The view it writes.
    pub(crate) fn view(&self) -> View {
        match self.kind {
            Kind::PatientCounts => View::PatientCounts,
            Kind::Stats => View::Stats,
        }
    }

    /// Counts one source row; rows must come in key order.
    pub(crate) fn row(
        &mut self,
        key: &[u8],
        value: &[u8],
        out: &mut Out<'_>,
    ) -> Result<(), ViewError> {
        let malformed = || ViewError::Malformed {
            what: "timeline key",
        };
        let summary: Summary = values::decode(value, "timeline summary")?;
        let owner_end = key.iter().position(|&b| b == SEP).ok_or_else(malformed)?;
        let (group, counted) = match self.kind {
            Kind::PatientCounts => {
                let type_end = key[owner_end + 1..]
                    .iter()
                    .position(|&b| b == SEP)
                    .ok_or_else(malformed)?;
                let group = &key[..owner_end + 1 + type_end + 1];
                (group.to_vec(), vec![keys::status_code(summary.status)])
            }
            Kind::Stats => {
                let created = key[owner_end + 1..]
                    .first_chunk::<8>()
                    .ok_or_else(malformed)?;
                let month = keys::undesc(*created).month_index();
                let mut group = key[..owner_end + 1].to_vec();
                group.extend_from_slice(&keys::desc_month(month));
                let mut counted = summary.record_type.into_bytes();
                counted.push(SEP);
                counted.push(keys::status_code(summary.status));
                (group, counted)
            }
        };
        if group != self.group {
            self.emit(out)?;
            self.group = group;
        }
        *self.counts.entry(counted).or_insert(0) += 1;
        Ok(())
    }

    /// Writes the last group's counts.
    pub(crate) fn finish(mut self, out: &mut Out<'_>) -> Result<(), ViewError> {
        self.emit(out)
    }

    fn emit(&mut self, out: &mut Out<'_>) -> Result<(), ViewError> {
        let mut key = Vec::new();
        for (counted, count) in std::mem::take(&mut self.counts) {
            key.clear();
            key.extend_from_slice(&self.group);
            key.extend_from_slice(&counted);
            out(&key, &keys::encode_count(count))?;
        }
        Ok(())
    }
}

/// The count rows a record of `status` adds to (`delta` 1) or takes from (-1): its
/// patient's count of its type and status, and its hospital's of its month, type and
/// status. The live projection's half of this module's rule.
pub(crate) fn count_keys(
    patient_id: &str,
    hospital_id: &str,
    record_type: &str,
    created_at: Timestamp,
    status: RecordStatus,
) -> [(View, Vec<u8>); 2] {
    let mut patient = Vec::with_capacity(patient_id.len() + record_type.len() + 3);
    keys::write_patient_count(&mut patient, patient_id, record_type, status);
    let mut hospital = Vec::with_capacity(hospital_id.len() + record_type.len() + 11);
    keys::write_stat(
        &mut hospital,
        hospital_id,
        created_at.month_index(),
        record_type,
        status,
    );
    [(View::PatientCounts, patient), (View::Stats, hospital)]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn derive(source: View, rows: &[(Vec<u8>, Vec<u8>)]) -> Vec<(Vec<u8>, u64)> {
        let mut deriver = Deriver::fed_by(source).unwrap();
        let mut out = Vec::new();
        let mut sink = |k: &[u8], v: &[u8]| {
            out.push((k.to_vec(), keys::decode_count(v).unwrap()));
            Ok(())
        };
        for (k, v) in rows {
            deriver.row(k, v, &mut sink).unwrap();
        }
        deriver.finish(&mut sink).unwrap();
        out
    }

    fn summary(status: RecordStatus, record_type: &str) -> Vec<u8> {
        values::encode(&Summary {
            status,
            record_type: record_type.into(),
        })
    }

    #[test]
    fn counts_each_patients_types_by_status_in_key_order() {
        use RecordStatus::*;
        let mut rows = vec![
            ("p-1", "lab", 9, "r-1", Archived),
            ("p-1", "lab", 8, "r-2", Active),
            ("p-1", "lab", 7, "r-3", Archived),
            ("p-1", "note", 9, "r-4", Active),
            ("p-10", "lab", 1, "r-5", EnteredInError),
        ]
        .into_iter()
        .map(|(p, t, at, r, s)| (keys::type_timeline(p, t, Timestamp(at), r), summary(s, t)))
        .collect::<Vec<_>>();
        rows.sort();
        let counted = derive(View::PatientTypeTimeline, &rows);
        let expect: Vec<(Vec<u8>, u64)> = [
            ("p-1", "lab", Active, 1),
            ("p-1", "lab", Archived, 2),
            ("p-1", "note", Active, 1),
            ("p-10", "lab", EnteredInError, 1),
        ]
        .into_iter()
        .map(|(p, t, s, n)| {
            let mut k = Vec::new();
            keys::write_patient_count(&mut k, p, t, s);
            (k, n)
        })
        .collect();
        assert_eq!(counted, expect);
    }

    #[test]
    fn counts_each_hospitals_months_newest_first_and_matches_count_keys() {
        use RecordStatus::*;
        // 2026-11-30, 2026-11-01 at midnight and a millisecond before it (UTC).
        let (nov30, nov1, oct31) = (1_795_996_800_000, 1_793_491_200_000, 1_793_491_199_999);
        let mut rows = vec![
            ("h-1", nov30, "r-1", Active, "lab"),
            ("h-1", nov1, "r-2", Active, "lab"),
            ("h-1", nov1, "r-3", Archived, "allergy"),
            ("h-1", oct31, "r-4", Active, "lab"),
            ("h-2", oct31, "r-5", Active, "lab"),
        ]
        .into_iter()
        .map(|(h, at, r, s, t)| (keys::timeline(h, Timestamp(at), r), summary(s, t)))
        .collect::<Vec<_>>();
        rows.sort();
        let counted = derive(View::HospitalTimeline, &rows);
        let key =
            |h: &str, at: i64, t: &str, s| count_keys("p-1", h, t, Timestamp(at), s)[1].1.clone();
        assert_eq!(
            counted,
            vec![
                (key("h-1", nov1, "allergy", Archived), 1),
                (key("h-1", nov30, "lab", Active), 2),
                (key("h-1", oct31, "lab", Active), 1),
                (key("h-2", oct31, "lab", Active), 1),
            ]
        );
        let mut sorted = counted.clone();
        sorted.sort();
        assert_eq!(sorted, counted, "in key order");
    }
}
