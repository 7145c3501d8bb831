//! The views against a model: a ledger of realistic fixture events (plus events the
//! contract must reject) is projected block by block by the live projector into RocksDB,
//! and rebuilt in large batches into every other backend. Every query answers what an
//! in-memory model of the same events says, and every backend holds the same bytes.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Duration;

use medledger::fixtures::{FixtureConfig, Fixtures};
use medledger_chaincode::contract::{
    apply_grant_event, apply_record_event, GrantState, RecordState,
};
use medledger_chaincode::{Envelope, Event, RecordStatus, Timestamp};
use medledger_storage::{Ledger, LedgerOptions};
use medledger_views::projector::Projector;
use medledger_views::query::{Owner, QueryError, TimelineFilter, Views};
use medledger_views::rebuild::{digest_views, project_all, Plan, PARTITION_BYTES, WRITE_BATCH_OPS};
use medledger_views::{Backend, ViewStore};

const EVENTS: usize = 12_000;

#[derive(Default)]
struct Model {
    /// record id → every version: (block, position, state).
    records: HashMap<String, Vec<(u64, u32, RecordState)>>,
    grants: BTreeMap<(String, String), GrantState>,
    /// record id → (block, position) of each `AccessLogged` (payload reads before
    /// `RecordsRead`).
    audit: HashMap<String, Vec<(u64, u32)>>,
    /// patient id → (block, position, record ids) of each `RecordsRead`.
    reads: HashMap<String, Vec<(u64, u32, Vec<String>)>>,
    rejected: Vec<(u64, u32, &'static str)>,
}

impl Model {
    fn apply(&mut self, block: u64, pos: u32, event: &Event) {
        match event {
            Event::AccessGranted(e) => self.grant(block, pos, &e.patient_id, &e.grantee_id, event),
            Event::AccessRevoked(e) => self.grant(block, pos, &e.patient_id, &e.grantee_id, event),
            Event::RecordsRead(e) => self.reads.entry(e.patient_id.clone()).or_default().push((
                block,
                pos,
                e.record_ids.clone(),
            )),
            _ => {
                let id = event.record_id().unwrap().to_owned();
                let current = self.records.get(&id).and_then(|v| v.last()).map(|v| &v.2);
                match apply_record_event(current, event) {
                    Ok(state) => {
                        if let Event::AccessLogged(_) = event {
                            self.audit.entry(id).or_default().push((block, pos));
                        } else {
                            self.records
                                .entry(id)
                                .or_default()
                                .push((block, pos, state));
                        }
                    }
                    Err(e) => self.rejected.push((block, pos, e.code())),
                }
            }
        }
    }

    fn grant(&mut self, block: u64, pos: u32, patient: &str, grantee: &str, event: &Event) {
        let key = (patient.to_owned(), grantee.to_owned());
        match apply_grant_event(self.grants.get(&key), event) {
            Ok(Some(g)) => {
                self.grants.insert(key, g);
            }
            Ok(None) => {
                self.grants.remove(&key);
            }
            Err(e) => self.rejected.push((block, pos, e.code())),
        }
    }

    fn current(&self, id: &str) -> &RecordState {
        &self.records[id].last().unwrap().2
    }

    /// Record ids of a timeline, newest first (created_at desc, then record id).
    fn timeline(&self, keep: impl Fn(&RecordState) -> bool) -> Vec<String> {
        let mut rows: Vec<(Timestamp, String)> = self
            .records
            .values()
            .map(|v| &v.last().unwrap().2)
            .filter(|s| keep(s))
            .map(|s| (s.created_at, s.record_id.clone()))
            .collect();
        rows.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
        rows.into_iter().map(|r| r.1).collect()
    }
}

/// Fixture events with invalid ones mixed in: replayed amendments (a stale version) and
/// events about records that do not exist.
fn events() -> Vec<Envelope> {
    let fixtures = Fixtures::new(FixtureConfig {
        seed: 42,
        patients: 300,
        ..FixtureConfig::default()
    });
    let mut out: Vec<Envelope> = Vec::with_capacity(EVENTS + EVENTS / 50);
    for (i, env) in fixtures.take(EVENTS).enumerate() {
        let replay = matches!(
            env.event,
            Event::RecordAmended(_) | Event::RecordStatusChanged(_)
        ) && i % 7 == 0;
        out.push(env.clone());
        if replay {
            let mut again = env;
            again.tx_id.0[15] ^= 0x5a;
            out.push(again); // same version again: version_conflict (or status_unchanged)
        }
        if i % 997 == 0 {
            let mut ghost = out.last().unwrap().clone();
            ghost.tx_id.0[14] ^= 0x33;
            if let Event::RecordAmended(e) = &mut ghost.event {
                e.record_id = format!("r-ghost-{i}");
                out.push(ghost); // unknown_record
            }
        }
    }
    out
}

/// Writes the events into a ledger in blocks of 1 to 300 transactions.
fn ledger(dir: &std::path::Path, events: &[Envelope]) -> (Ledger, Vec<Vec<Envelope>>) {
    let (ledger, _) = Ledger::open(dir, LedgerOptions::default()).unwrap();
    let mut blocks = Vec::new();
    let mut rest = events;
    let mut n = 0usize;
    while !rest.is_empty() {
        n += 1;
        let take = ((n * 7919) % 300 + 1).min(rest.len());
        let (head, tail) = rest.split_at(take);
        rest = tail;
        common::append_block(&ledger, head);
        blocks.push(head.to_vec());
    }
    (ledger, blocks)
}

#[test]
fn views_answer_what_the_model_says_on_every_backend() {
    let dir = tempfile::tempdir().unwrap();
    let events = events();
    let (ledger, blocks) = ledger(dir.path(), &events);
    let ledger = Arc::new(ledger);

    let mut model = Model::default();
    for (i, block) in blocks.iter().enumerate() {
        for (pos, env) in block.iter().enumerate() {
            model.apply(i as u64 + 1, pos as u32, &env.event);
        }
    }
    assert!(model.rejected.len() > 50, "the run must exercise rejection");
    assert!(
        model.records.values().any(|v| v.len() > 2),
        "some records have history"
    );

    // The live projector, one block per batch, into RocksDB.
    let live: Arc<dyn ViewStore> = Arc::from(
        Backend::RocksDb
            .open(&dir.path().join("live"), false)
            .unwrap(),
    );
    let projector = Projector::start(ledger.clone(), live.clone()).unwrap();
    let height = ledger.tip().height;
    projector
        .wait_for_height(height, Duration::from_secs(60))
        .unwrap();
    assert_eq!(projector.lag().blocks, 0);
    let (applied, rejected) = projector.counts();
    assert_eq!(applied + rejected, events.len() as u64);
    assert_eq!(rejected, model.rejected.len() as u64);
    projector.shutdown();

    check_against_model(live.as_ref(), &model, height);

    // Every backend rebuilt in large batches holds the same bytes as the live views.
    let live_digests = digest_views(live.as_ref()).unwrap();
    // Small batches and partitions too: many of each, batches holding several partitions.
    for &backend in Backend::compiled() {
        for (batch_ops, partition_bytes) in [(2_000, 64 << 10), (WRITE_BATCH_OPS, PARTITION_BYTES)]
        {
            let path = dir
                .path()
                .join(format!("rebuilt-{}-{batch_ops}", backend.name()));
            let store = backend.open(&path, true).unwrap();
            let plan = Plan {
                work_dir: &dir.path().join("parts"),
                batch_ops,
                partition_bytes,
            };
            let summary = project_all(&ledger, store.as_ref(), height, &plan, &mut |_| {}).unwrap();
            store.flush().unwrap();
            assert_eq!(summary.events, events.len() as u64);
            assert_eq!(summary.rejected, model.rejected.len() as u64);
            let digests = digest_views(store.as_ref()).unwrap();
            assert_eq!(digests, live_digests, "{} {batch_ops}", backend.name());
            check_against_model(store.as_ref(), &model, height);
        }
    }
}

fn check_against_model(store: &dyn ViewStore, model: &Model, height: u64) {
    let views = Views::new(store);
    assert_eq!(views.applied_height().unwrap(), height);

    // Records, history and time travel.
    for (id, versions) in &model.records {
        let current = views.record(id).unwrap().expect("record exists");
        assert_eq!(&current.state, &versions.last().unwrap().2);
        let history = views.record_history(id, 0, 1000).unwrap();
        assert_eq!(history.len(), versions.len(), "{id}");
        for (h, (b, p, s)) in history.iter().zip(versions) {
            assert_eq!((h.at.block, h.at.position, &h.state), (*b, *p, s));
        }
        // Paged one and two at a time, across the superseded versions and the current
        // one (stored in different views), every version comes once, in order; and each
        // version reads alone.
        for page in [1, 2] {
            let (mut paged, mut after) = (Vec::new(), 0);
            loop {
                let got = views.record_history(id, after, page).unwrap();
                assert!(got.len() <= page);
                let Some(last) = got.last() else { break };
                after = last.state.version;
                paged.extend(got);
            }
            assert_eq!(paged, history, "{id} in pages of {page}");
        }
        for h in &history {
            let alone = views.record_version(id, h.state.version).unwrap();
            assert_eq!(alone.as_ref(), Some(h), "{id} v{}", h.state.version);
        }
        let next = versions.len() as u32 + 1;
        assert_eq!(views.record_version(id, next).unwrap(), None);
        for (b, _, _) in versions {
            // The last version made in a block up to b (one block may hold several).
            let want = &versions.iter().rev().find(|v| v.0 <= *b).unwrap().2;
            assert_eq!(&views.record_as_of(id, b + 1).unwrap().unwrap().state, want);
        }
        let first_block = versions[0].0;
        assert_eq!(views.record_as_of(id, first_block).unwrap(), None);
    }
    assert_eq!(views.record("r-never").unwrap(), None);

    // The counts: every patient's by type and status, the newest record of each type,
    // and the stats of every hospital by month, type and status (filtered too).
    let mut patient_counts: BTreeMap<&str, BTreeMap<(&str, u8), u64>> = BTreeMap::new();
    let mut stats: BTreeMap<(&str, i64, &str, u8), u64> = BTreeMap::new();
    let code = medledger_views::keys::status_code;
    for versions in model.records.values() {
        let s = &versions.last().unwrap().2;
        *patient_counts
            .entry(&s.patient_id)
            .or_default()
            .entry((&s.record_type, code(s.status)))
            .or_default() += 1;
        let month = s.created_at.month_index();
        *stats
            .entry((&s.hospital_id, month, &s.record_type, code(s.status)))
            .or_default() += 1;
    }
    assert!(
        stats
            .keys()
            .map(|k| k.1)
            .collect::<std::collections::BTreeSet<_>>()
            .len()
            > 1,
        "the fixtures span months"
    );
    for (patient, want) in &patient_counts {
        let got = views.patient_counts(patient).unwrap();
        assert!(!got.truncated);
        let got: BTreeMap<(&str, u8), u64> = got
            .types
            .iter()
            .flat_map(|t| {
                (0..3u8)
                    .filter(|c| t.by_status[usize::from(*c)] > 0)
                    .map(|c| ((t.record_type.as_str(), c), t.by_status[usize::from(c)]))
            })
            .collect();
        assert_eq!(&got, want, "counts of {patient}");
        let mut types: Vec<&str> = want.keys().map(|(t, _)| *t).collect();
        types.dedup();
        let latest = views
            .latest_of_types(patient, types.iter().copied())
            .unwrap();
        let newest = |t: &str| {
            model
                .records
                .values()
                .map(|v| &v.last().unwrap().2)
                .filter(|s| s.patient_id == *patient && s.record_type == t)
                .max_by(|a, b| (a.created_at, &b.record_id).cmp(&(b.created_at, &a.record_id)))
                .map(|s| s.record_id.clone())
        };
        let want_latest: Vec<String> = types.iter().filter_map(|t| newest(t)).collect();
        let got_latest: Vec<String> = latest.iter().map(|e| e.state.record_id.clone()).collect();
        assert_eq!(got_latest, want_latest, "latest of each type of {patient}");
    }
    assert_eq!(
        views.patient_counts("p-never").unwrap(),
        medledger_views::summary::PatientCounts::default()
    );
    let all = views
        .stats(&medledger_views::summary::StatsFilter::default())
        .unwrap();
    let got: BTreeMap<(&str, i64, &str, u8), u64> = all
        .iter()
        .map(|r| {
            (
                (
                    r.hospital_id.as_str(),
                    r.month,
                    r.record_type.as_str(),
                    code(r.status),
                ),
                r.count,
            )
        })
        .collect();
    assert_eq!(got, stats, "stats");
    let (hospital, month) = {
        let k = stats.keys().nth(stats.len() / 2).unwrap();
        (k.0, k.1)
    };
    let filter = medledger_views::summary::StatsFilter {
        hospital_id: Some(hospital.to_owned()),
        status: Some(RecordStatus::Active),
        from_month: Some(month - 1),
        to_month: Some(month + 1),
        ..Default::default()
    };
    let got: u64 = views.stats(&filter).unwrap().iter().map(|r| r.count).sum();
    let want: u64 = stats
        .iter()
        .filter(|(k, _)| k.0 == hospital && (month - 1..=month).contains(&k.1) && k.3 == 0)
        .map(|(_, n)| n)
        .sum();
    assert!(want > 0);
    assert_eq!(got, want, "stats of {hospital} around month {month}");

    // Rejections carry the contract's code.
    for (b, p, code) in &model.rejected {
        assert_eq!(views.rejection(*b, *p).unwrap().unwrap().code, *code);
    }

    // Grants and the audit trail.
    for ((patient, grantee), g) in &model.grants {
        assert_eq!(views.grant(patient, grantee).unwrap().as_ref(), Some(g));
    }
    for (id, entries) in &model.audit {
        let trail = views.audit_trail(id, None, 1000).unwrap();
        let got: Vec<_> = trail.iter().map(|e| (e.at.block, e.at.position)).collect();
        assert_eq!(&got, entries);
    }
    // The access logs, newest first, paged by cursor: a patient's, and each record's
    // (its patient's reads that name it).
    assert!(!model.reads.is_empty(), "the fixtures read records");
    for (patient, entries) in &model.reads {
        let mut records: Vec<Option<&str>> = vec![None];
        records.extend(
            entries
                .iter()
                .flat_map(|(_, _, ids)| ids.iter().map(|i| Some(i.as_str()))),
        );
        records.sort();
        records.dedup();
        for record in records {
            let mut got = Vec::new();
            let mut after = None;
            loop {
                let page = views.access_log(patient, record, after, 3).unwrap();
                got.extend(page.items.iter().map(|e| (e.at.block, e.at.position)));
                match page.next {
                    Some(next) => after = Some(next),
                    None => break,
                }
            }
            let want: Vec<(u64, u32)> = entries
                .iter()
                .rev()
                .filter(|(_, _, ids)| record.is_none_or(|r| ids.iter().any(|i| i == r)))
                .map(|(b, p, _)| (*b, *p))
                .collect();
            assert_eq!(got, want, "access log of {patient} {record:?}");
        }
    }

    // Timelines, with and without filters, paged by cursor until the end.
    let mut patients: Vec<&str> = model
        .records
        .values()
        .map(|v| v[0].2.patient_id.as_str())
        .collect();
    patients.sort();
    patients.dedup();
    let busiest = *patients
        .iter()
        .max_by_key(|p| {
            model
                .records
                .values()
                .filter(|v| v[0].2.patient_id == **p)
                .count()
        })
        .unwrap();
    let some_state = model
        .current(&model.timeline(|s| s.patient_id == busiest)[0])
        .clone();
    let mid = some_state.created_at;
    type Keep<'a> = Box<dyn Fn(&RecordState) -> bool + 'a>;
    let cases: Vec<(Owner<'_>, TimelineFilter, Keep<'_>)> = vec![
        (
            Owner::Patient(busiest),
            TimelineFilter::default(),
            Box::new(move |s| s.patient_id == busiest),
        ),
        (
            Owner::Patient(busiest),
            TimelineFilter {
                status: Some(RecordStatus::Active),
                ..Default::default()
            },
            Box::new(move |s| s.patient_id == busiest && s.status == RecordStatus::Active),
        ),
        (
            Owner::Patient(busiest),
            TimelineFilter {
                record_type: Some(some_state.record_type.clone()),
                ..Default::default()
            },
            {
                let t = some_state.record_type.clone();
                Box::new(move |s| s.patient_id == busiest && s.record_type == t)
            },
        ),
        (
            Owner::Hospital(&some_state.hospital_id),
            TimelineFilter {
                status: Some(RecordStatus::Archived),
                ..Default::default()
            },
            {
                let h = some_state.hospital_id.clone();
                Box::new(move |s| s.hospital_id == h && s.status == RecordStatus::Archived)
            },
        ),
        (
            Owner::Author(&some_state.author_id),
            TimelineFilter {
                from: Some(Timestamp(mid.0 - 86_400_000 * 30)),
                to: Some(mid),
                ..Default::default()
            },
            {
                let a = some_state.author_id.clone();
                Box::new(move |s| {
                    s.author_id == a
                        && s.created_at < mid
                        && s.created_at.0 >= mid.0 - 86_400_000 * 30
                })
            },
        ),
    ];
    for (owner, filter, keep) in &cases {
        let want = model.timeline(keep);
        for limit in [1, 7, 1000] {
            let mut got = Vec::new();
            let mut cursor: Option<String> = None;
            loop {
                let page = views
                    .timeline(*owner, filter, cursor.as_deref(), limit)
                    .unwrap();
                assert!(page.items.len() <= limit);
                got.extend(page.items.iter().map(|e| e.state.record_id.clone()));
                match page.next_cursor {
                    Some(c) => cursor = Some(c),
                    None => break,
                }
            }
            assert_eq!(got, want, "{owner:?} {filter:?} limit {limit}");
        }
        let mut streamed = Vec::new();
        views
            .export_timeline(*owner, filter, &mut |e| {
                streamed.push(e.state.record_id);
                ControlFlow::Continue(())
            })
            .unwrap();
        assert_eq!(streamed, want);
    }

    // Bad arguments are errors, not empty answers.
    let p = Owner::Patient(busiest);
    assert!(matches!(
        views.timeline(p, &TimelineFilter::default(), None, 0),
        Err(QueryError::InvalidLimit(0))
    ));
    assert!(matches!(
        views.timeline(p, &TimelineFilter::default(), Some("zz"), 5),
        Err(QueryError::InvalidCursor)
    ));
    let backwards = TimelineFilter {
        from: Some(Timestamp(5)),
        to: Some(Timestamp(5)),
        ..Default::default()
    };
    assert!(matches!(
        views.timeline(p, &backwards, None, 5),
        Err(QueryError::InvalidRange)
    ));
}

#[test]
fn tampered_or_foreign_cursors_and_empty_timelines() {
    let dir = tempfile::tempdir().unwrap();
    let events = events();
    let (ledger, _) = ledger(dir.path(), &events[..3_000]);
    let store = Backend::RocksDb.open(&dir.path().join("v"), true).unwrap();
    let plan = Plan {
        work_dir: &dir.path().join("parts"),
        batch_ops: WRITE_BATCH_OPS,
        partition_bytes: PARTITION_BYTES,
    };
    project_all(
        &ledger,
        store.as_ref(),
        ledger.tip().height,
        &plan,
        &mut |_| {},
    )
    .unwrap();
    store.flush().unwrap();
    let views = Views::new(store.as_ref());
    let all = TimelineFilter::default();

    // The busiest patient, paged two at a time.
    let mut counts: HashMap<String, usize> = HashMap::new();
    for env in &events[..3_000] {
        if let Event::RecordCreated(e) = &env.event {
            *counts.entry(e.patient_id.clone()).or_default() += 1;
        }
    }
    let (patient, n) = counts.iter().max_by_key(|(_, n)| **n).unwrap();
    assert!(*n >= 4);
    let page = views
        .timeline(Owner::Patient(patient), &all, None, 2)
        .unwrap();
    let cursor = page.next_cursor.unwrap();
    assert!(views
        .timeline(Owner::Patient(patient), &all, Some(&cursor), 2)
        .is_ok());

    // Every single-character change of the cursor is refused.
    for i in 0..cursor.len() {
        let mut bad = cursor.clone().into_bytes();
        bad[i] = if bad[i] == b'0' { b'1' } else { b'0' };
        let bad = String::from_utf8(bad).unwrap();
        assert!(
            matches!(
                views.timeline(Owner::Patient(patient), &all, Some(&bad), 2),
                Err(QueryError::InvalidCursor)
            ),
            "changed at {i}"
        );
    }
    // A cursor of another query (another patient, another filter, another owner kind).
    let other = counts.keys().find(|p| *p != patient).unwrap();
    for (owner, filter) in [
        (Owner::Patient(other.as_str()), all.clone()),
        (
            Owner::Patient(patient),
            TimelineFilter {
                status: Some(RecordStatus::Active),
                ..Default::default()
            },
        ),
        (Owner::Hospital(patient), all.clone()),
    ] {
        assert!(matches!(
            views.timeline(owner, &filter, Some(&cursor), 2),
            Err(QueryError::InvalidCursor)
        ));
    }
    assert!(matches!(
        views.timeline(Owner::Patient(patient), &all, Some(&cursor[..10]), 2),
        Err(QueryError::InvalidCursor)
    ));
    assert!(matches!(
        views.timeline(Owner::Patient(patient), &all, Some(&"ab".repeat(400)), 2),
        Err(QueryError::InvalidCursor)
    ));

    // Empty results: an unknown owner, a window with no records, a type nobody has.
    let none = views
        .timeline(Owner::Patient("p-nobody"), &all, None, 10)
        .unwrap();
    assert!(none.items.is_empty() && none.next_cursor.is_none());
    let before_time = TimelineFilter {
        to: Some(Timestamp(0)),
        ..Default::default()
    };
    assert!(views
        .timeline(Owner::Patient(patient), &before_time, None, 10)
        .unwrap()
        .items
        .is_empty());
    let no_type = TimelineFilter {
        record_type: Some("no_such_type".into()),
        ..Default::default()
    };
    assert!(views
        .timeline(Owner::Patient(patient), &no_type, None, 10)
        .unwrap()
        .items
        .is_empty());
    assert!(views.record_history("r-nobody", 0, 10).unwrap().is_empty());
    assert!(views.grants("p-nobody", None, 10).unwrap().is_empty());
}
