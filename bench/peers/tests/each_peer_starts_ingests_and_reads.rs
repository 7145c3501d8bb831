//! Every peer starts from its installed binaries, reports the durability we configured
//! (as the running peer answers it), ingests, serves a patient's timeline newest first,
//! rebuilds its secondary structures, and leaves no process or data behind when dropped.
//!
//! These tests need the servers: `scripts/install-peers.sh` installs them. A missing
//! binary fails the test with that command in the message; nothing is skipped.

use std::path::Path;

use medledger_bench_peers::{
    Durability, GenConfig, IngestOptions, MixedOptions, Peer, PeerKind, PeerRecord, RecordGen,
};

const RECORDS: usize = 400;

fn records() -> Vec<PeerRecord> {
    RecordGen::new(GenConfig {
        seed: 7,
        patients: 40,
        body_bytes: 256,
        ..GenConfig::default()
    })
    .take_records(RECORDS)
}

/// The patient's records as the peer must return them: newest first, at most `limit`.
fn expected_page(records: &[PeerRecord], patient: &str, limit: usize) -> Vec<PeerRecord> {
    let mut mine: Vec<PeerRecord> = records
        .iter()
        .filter(|r| r.patient_id == patient)
        .cloned()
        .collect();
    mine.sort_by_key(|r| std::cmp::Reverse(r.created_at_micros));
    mine.truncate(limit);
    mine
}

fn busiest_patient(records: &[PeerRecord]) -> String {
    let mut counts = std::collections::BTreeMap::new();
    for r in records {
        *counts.entry(r.patient_id.clone()).or_insert(0) += 1;
    }
    let (patient, _) = counts
        .into_iter()
        .max_by_key(|(_, n)| *n)
        .expect("records are not empty");
    patient
}

fn assert_timeline(peer: &dyn Peer, records: &[PeerRecord]) {
    let patient = busiest_patient(records);
    let limit = 10;
    let page = peer
        .timeline_page(&patient, limit)
        .unwrap_or_else(|e| panic!("{}: timeline: {e}", peer.name()));
    let expected = expected_page(records, &patient, limit);
    assert_eq!(page.len(), expected.len(), "{}: page length", peer.name());
    let times: Vec<i64> = page.iter().map(|r| r.created_at_micros).collect();
    let expected_times: Vec<i64> = expected.iter().map(|r| r.created_at_micros).collect();
    assert_eq!(times, expected_times, "{}: newest first", peer.name());
    for r in &page {
        let original = records
            .iter()
            .find(|o| o.record_id == r.record_id)
            .expect("a stored record");
        assert_eq!(r, original, "{}: the row round-trips", peer.name());
    }
    let none = peer
        .timeline_page("p-nobody", limit)
        .unwrap_or_else(|e| panic!("{}: timeline: {e}", peer.name()));
    assert!(none.is_empty());
}

fn exercise(kind: PeerKind, check_durability: impl Fn(&Durability)) {
    let base = tempfile::tempdir().expect("temp dir");
    let records = records();
    let peer = kind
        .start(base.path())
        .unwrap_or_else(|e| panic!("{}: start: {e}", kind.name()));
    let data_dir = peer.data_dir().to_path_buf();
    let pid = peer.server_pid();
    let durability = peer
        .durability()
        .unwrap_or_else(|e| panic!("{}: durability: {e}", kind.name()));
    check_durability(&durability);

    let (first, rest) = records.split_at(RECORDS / 2);
    let single = peer
        .ingest(
            first,
            &IngestOptions {
                clients: 4,
                batch: 1,
            },
        )
        .unwrap_or_else(|e| panic!("{}: ingest: {e}", kind.name()));
    assert_eq!(single.records, first.len() as u64);
    assert_eq!(
        single.acknowledged_after_disk,
        durability.acknowledged_after_disk
    );
    let batched = peer
        .ingest(
            rest,
            &IngestOptions {
                clients: 2,
                batch: 25,
            },
        )
        .unwrap_or_else(|e| panic!("{}: ingest: {e}", kind.name()));
    assert_eq!(batched.records, rest.len() as u64);
    assert!(batched.bytes_on_disk.unwrap_or(0) > 0);
    assert_timeline(peer.as_ref(), &records);

    if let Some(figures) = peer
        .reindex(RECORDS as u64)
        .unwrap_or_else(|e| panic!("{}: reindex: {e}", kind.name()))
    {
        assert_eq!(figures.operations, 1);
    }
    // The rebuilt structures serve the same pages.
    assert_timeline(peer.as_ref(), &records);

    let mixed = peer
        .mixed(
            &RecordGen::new(GenConfig {
                seed: 8,
                patients: 40,
                body_bytes: 256,
                ..GenConfig::default()
            })
            .take_records(RECORDS)
            .into_iter()
            .map(|mut r| {
                r.record_id = format!("m-{}", r.record_id);
                r
            })
            .collect::<Vec<_>>(),
            &[busiest_patient(&records)],
            &MixedOptions {
                clients: 2,
                operations: 100,
                seconds_max: 30,
                write_percent: 20,
                limit: 10,
                seed: 1,
            },
        )
        .unwrap_or_else(|e| panic!("{}: mixed: {e}", kind.name()));
    assert_eq!(mixed.len(), 2);
    assert_eq!(mixed[0].operations + mixed[1].operations, 100);

    // The SQL peers chain every row, across concurrent writers and batch sizes.
    let chained = peer
        .verify_chain()
        .unwrap_or_else(|e| panic!("{}: chain: {e}", kind.name()));
    if matches!(kind, PeerKind::Postgres | PeerKind::Sqlite) {
        assert_eq!(chained, Some(RECORDS as u64 + mixed[1].operations));
    } else {
        assert_eq!(chained, None);
    }

    drop(peer);
    assert!(!data_dir.exists(), "{}: data dir removed", kind.name());
    if let Some(pid) = pid {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "{}: server process {pid} stopped",
            kind.name()
        );
    }
}

#[test]
fn postgres_commits_synchronously_and_chains_rows() {
    exercise(PeerKind::Postgres, |d| {
        assert_eq!(d.settings["synchronous_commit"], "on");
        assert_eq!(d.settings["fsync"], "on");
        assert!(d.acknowledged_after_disk);
    });
}

#[test]
fn postgres_unchained_has_the_same_durability_and_no_chain() {
    exercise(PeerKind::PostgresUnchained, |d| {
        assert_eq!(d.settings["synchronous_commit"], "on");
        assert_eq!(d.settings["fsync"], "on");
        assert!(d.acknowledged_after_disk);
    });
}

#[test]
fn sqlite_runs_wal_with_synchronous_full() {
    exercise(PeerKind::Sqlite, |d| {
        assert_eq!(d.settings["journal_mode"], "wal");
        assert_eq!(d.settings["synchronous"], "FULL");
        assert!(d.acknowledged_after_disk);
    });
}

#[test]
fn redis_fsyncs_the_aof_on_every_write() {
    exercise(PeerKind::Redis, |d| {
        assert_eq!(d.settings["appendonly"], "yes");
        assert_eq!(d.settings["appendfsync"], "always");
        assert_eq!(d.settings["save"], "");
        assert!(d.acknowledged_after_disk);
    });
}

#[test]
fn nats_stores_to_file_and_says_whether_it_fsyncs() {
    exercise(PeerKind::Nats, |d| {
        assert_eq!(d.settings["storage"], "file");
        let fsyncs = d.settings["sync_always"] == "true";
        assert_eq!(d.acknowledged_after_disk, fsyncs);
        if !fsyncs {
            assert!(
                d.summary.contains("ACKNOWLEDGED BEFORE DISK"),
                "{}",
                d.summary
            );
        }
        if d.settings["server_version"].starts_with("2.9.") {
            // 2.9 cannot fsync per write: the label must say so.
            assert!(!d.acknowledged_after_disk);
            assert_eq!(
                d.settings["sync_interval_always_requested"],
                "rejected by the server"
            );
        }
    });
}
