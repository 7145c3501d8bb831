//! `medledger rebuild` and `medledger verify --views`, in-process, on every backend:
//! a rebuild reports what it replayed, a rebuilt store verifies, a tampered view is named
//! by its first differing key, and a rebuild swap interrupted by a crash is finished or
//! undone on open.

mod common;

use std::path::Path;

use medledger::cli::rebuild::{run_rebuild, run_verify_views};
use medledger::serve::{Core, ServeConfig};
use medledger_views::rebuild::{check_free_space, open_views, views_dir, RebuildError};
use medledger_views::{keys, Backend, View, ViewBatch};
use serde_json::Value;

fn json(out: &[u8]) -> Value {
    serde_json::from_slice(out).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(out)))
}

/// `verify --views` of `dir`'s `backend` views: asserts its exit code (showing what it
/// printed when the code differs) and returns the JSON it printed.
fn verify(dir: &Path, backend: Backend, code: i32) -> Value {
    let mut out = Vec::new();
    assert_eq!(
        run_verify_views(dir, backend, &mut out),
        code,
        "{}",
        String::from_utf8_lossy(&out)
    );
    json(&out)
}

/// Views behind the ledger (here: none at all) are not a pass: what they lack was not
/// compared.
#[test]
fn views_behind_the_ledger_do_not_pass() {
    let dir = tempfile::tempdir().unwrap();
    let height = common::fixture_ledger(dir.path(), 3, 200, 50);
    for &backend in Backend::compiled() {
        let report = verify(dir.path(), backend, 1);
        assert_eq!(report["ok"], false, "{report}");
        assert_eq!(report["height"], 0, "{report}");
        assert_eq!(report["ledger_height"], height, "{report}");
    }
}

#[test]
fn rebuild_then_verify_then_tamper_on_every_backend() {
    let dir = tempfile::tempdir().unwrap();
    let height = common::fixture_ledger(dir.path(), 7, 3_000, 250);

    for &backend in Backend::compiled() {
        let mut out = Vec::new();
        assert_eq!(run_rebuild(dir.path(), backend, &mut out), 0);
        let summary = json(&out);
        assert_eq!(summary["events"], 3_000, "{summary}");
        assert_eq!(summary["blocks"], height);
        assert!(summary["events_per_sec"].as_f64().unwrap() > 0.0);

        let report = verify(dir.path(), backend, 0);
        assert_eq!(report["ok"], true);
        assert_eq!(report["height"], height);

        // Tamper: one record's value changes, at the same height.
        let record_id = {
            let store = open_views(dir.path(), backend).unwrap();
            let rows = store.scan(View::Records, b"", None, 1).unwrap();
            let (key, mut value) = rows.into_iter().next().unwrap();
            *value.last_mut().unwrap() ^= 1;
            let mut batch = ViewBatch::new(height);
            batch.put(View::Records, key.clone(), value);
            store.write(&batch).unwrap();
            store.flush().unwrap();
            String::from_utf8(key).unwrap()
        };
        let report = verify(dir.path(), backend, 1);
        assert_eq!(report["ok"], false);
        assert_eq!(report["first_difference"]["view"], "records");
        assert_eq!(report["first_difference"]["key_text"], record_id.as_str());

        // A rebuild repairs it.
        assert_eq!(run_rebuild(dir.path(), backend, &mut Vec::new()), 0);
        verify(dir.path(), backend, 0);

        // A row the ledger never made is named too.
        {
            let store = open_views(dir.path(), backend).unwrap();
            let mut batch = ViewBatch::new(height);
            batch.put(View::Grants, keys::grant("p-forged", "dr-forged"), b"x");
            store.write(&batch).unwrap();
            store.flush().unwrap();
        }
        let report = verify(dir.path(), backend, 1);
        let diff = &report["first_difference"];
        assert_eq!(diff["view"], "grants");
        assert_eq!(diff["key_text"], "p-forged\u{0}dr-forged");
        assert_eq!(
            (diff["in_live"].as_bool(), diff["in_rebuilt"].as_bool()),
            (Some(true), Some(false))
        );
        assert_eq!(run_rebuild(dir.path(), backend, &mut Vec::new()), 0);
    }
}

#[test]
fn an_interrupted_swap_is_finished_or_undone_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let height = common::fixture_ledger(dir.path(), 8, 500, 100);
    let backend = Backend::RocksDb;
    assert_eq!(run_rebuild(dir.path(), backend, &mut Vec::new()), 0);
    let live = views_dir(dir.path(), backend);
    let old = dir.path().join(format!("{}.old", backend.dir_name()));
    let scratch = dir.path().join(format!("{}.rebuild", backend.dir_name()));

    // Crash after live → .old, before .rebuild → live: the old views come back whole.
    std::fs::rename(&live, &old).unwrap();
    std::fs::create_dir(&scratch).unwrap();
    std::fs::write(scratch.join("half-written"), b"?").unwrap();
    let store = open_views(dir.path(), backend).unwrap();
    assert_eq!(store.applied_height().unwrap(), height);
    drop(store);
    assert!(live.is_dir() && !old.exists() && !scratch.exists());

    // Crash after the swap, before .old was removed: the leftover goes.
    std::fs::create_dir(&old).unwrap();
    let store = open_views(dir.path(), backend).unwrap();
    assert_eq!(store.applied_height().unwrap(), height);
    assert!(!old.exists());
    drop(store);

    // A crashed rebuild's partitions, and a crashed `verify --views`'s scratch store
    // and partitions, go too.
    let leftovers: Vec<_> = ["rebuild-parts", "verify", "verify-parts"]
        .iter()
        .map(|suffix| dir.path().join(format!("{}.{suffix}", backend.dir_name())))
        .collect();
    for leftover in &leftovers {
        std::fs::create_dir(leftover).unwrap();
        std::fs::write(leftover.join("part-00000"), b"?").unwrap();
    }
    let store = open_views(dir.path(), backend).unwrap();
    assert_eq!(store.applied_height().unwrap(), height);
    for leftover in &leftovers {
        assert!(!leftover.exists(), "{} is left", leftover.display());
    }
}

/// A rebuild that would surely fill the disk is refused before it starts, with the sizes
/// in the message; one that fits goes ahead.
#[test]
fn a_rebuild_that_cannot_fit_is_refused_before_it_starts() {
    let dir = tempfile::tempdir().unwrap();
    check_free_space(dir.path(), 1 << 20, Backend::RocksDb).unwrap();
    // sled's views take about four times the ledger: a ledger that RocksDB's rebuild
    // has room for, with a quarter of the free space, is refused to sled's.
    let free = match check_free_space(dir.path(), u64::MAX / 4, Backend::RocksDb) {
        Err(RebuildError::NoSpace {
            available_bytes, ..
        }) => available_bytes,
        other => panic!("{other:?}"),
    };
    check_free_space(dir.path(), free / 4, Backend::RocksDb).unwrap();
    assert!(matches!(
        check_free_space(dir.path(), free / 4, Backend::Sled),
        Err(RebuildError::NoSpace { .. })
    ));
    match check_free_space(dir.path(), u64::MAX / 4, Backend::RocksDb) {
        Err(
            e @ RebuildError::NoSpace {
                needed_bytes,
                available_bytes,
                ..
            },
        ) => {
            assert!(needed_bytes > available_bytes, "{e}");
            let message = e.to_string();
            assert!(message.contains("not enough free space"), "{message}");
            assert!(message.contains(&available_bytes.to_string()), "{message}");
        }
        other => panic!("{other:?}"),
    }
}

/// A rebuild that fails part way leaves the live views as they were and takes its
/// scratch store away with it.
#[test]
fn a_failed_rebuild_leaves_the_live_views_and_no_scratch() {
    let dir = tempfile::tempdir().unwrap();
    common::fixture_ledger(dir.path(), 11, 500, 100);
    let backend = Backend::RocksDb;
    let mut out = Vec::new();
    assert_eq!(run_rebuild(dir.path(), backend, &mut out), 0);
    let before =
        medledger_views::rebuild::digest_views(open_views(dir.path(), backend).unwrap().as_ref())
            .unwrap();
    // A file where the rebuild keeps its partitions: it fails once its store is open.
    let parts = dir
        .path()
        .join(format!("{}.rebuild-parts", backend.dir_name()));
    std::fs::write(&parts, b"in the way").unwrap();
    let mut out = Vec::new();
    assert_ne!(run_rebuild(dir.path(), backend, &mut out), 0);
    assert_eq!(json(&out)["ok"], false, "{}", String::from_utf8_lossy(&out));
    let scratch = dir.path().join(format!("{}.rebuild", backend.dir_name()));
    assert!(!scratch.exists(), "the scratch store is left behind");
    std::fs::remove_file(&parts).unwrap();
    let after =
        medledger_views::rebuild::digest_views(open_views(dir.path(), backend).unwrap().as_ref())
            .unwrap();
    assert_eq!(before, after);
}

/// Views ahead of the ledger (a height it does not reach) are compared up to its tip and
/// reported as differing, not refused with an error.
#[test]
fn views_ahead_of_the_ledger_are_reported_not_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let height = common::fixture_ledger(dir.path(), 13, 500, 100);
    let backend = Backend::RocksDb;
    assert_eq!(run_rebuild(dir.path(), backend, &mut Vec::new()), 0);
    {
        let store = open_views(dir.path(), backend).unwrap();
        store.write(&ViewBatch::new(height + 3)).unwrap();
        store.flush().unwrap();
    }
    let report = verify(dir.path(), backend, 1);
    assert_eq!(report["ok"], false);
    assert_eq!(report["height"], height + 3);
}

#[test]
fn no_ledger_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut out = Vec::new();
    assert_eq!(run_rebuild(dir.path(), Backend::RocksDb, &mut out), 2);
    assert!(json(&out)["error"].as_str().unwrap().contains("no ledger"));
    verify(dir.path(), Backend::RocksDb, 2);
}

#[test]
fn bench_rebuild_reports_every_backend_and_the_big_patient() {
    let dir = tempfile::tempdir().unwrap();
    let params = medledger::cli::bench_rebuild::RebuildParams {
        data_dir: dir.path().to_path_buf(),
        events: 4_000,
        seed: 3,
        backends: Backend::compiled().to_vec(),
        queries: 20,
    };
    let report = medledger::cli::bench_rebuild::run(&params).unwrap();
    let backends = report["backends"].as_array().unwrap();
    assert_eq!(backends.len(), Backend::compiled().len());
    for b in backends {
        assert_eq!(b["events"], 4_000, "{b}");
        assert_eq!(b["rejected"], 0);
        assert_eq!(b["big_patient_records"], 2_000, "half of a small run");
        assert!(b["big_first_page_p99_us"].as_f64().unwrap() > 0.0);
        assert!(b["peak_rss_bytes"].as_u64().unwrap() > 0);
    }
    let mut bad = params.clone();
    bad.events = 0;
    assert!(medledger::cli::bench_rebuild::run(&bad).is_err());
}

/// Views written in an older layout (version 1 kept the current state in
/// `record_versions` too) are refused by `verify --views` with the command that fixes
/// them, and `serve` rebuilds them from the ledger before it serves.
#[test]
fn views_of_an_older_layout_are_refused_then_rebuilt_by_serve() {
    let dir = tempfile::tempdir().unwrap();
    let height = common::fixture_ledger(dir.path(), 11, 1_000, 100);
    assert_eq!(
        run_rebuild(dir.path(), Backend::RocksDb, &mut Vec::new()),
        0
    );
    {
        // What layout 1 stored beside the views: the height alone.
        let path = views_dir(dir.path(), Backend::RocksDb);
        let cfs = rocksdb::DB::list_cf(&rocksdb::Options::default(), &path).unwrap();
        let db = rocksdb::DB::open_cf(&rocksdb::Options::default(), &path, &cfs).unwrap();
        let meta = db.cf_handle("view_meta").unwrap();
        db.put_cf(meta, b"applied_height", height.to_le_bytes())
            .unwrap();
        db.flush_cf(meta).unwrap();
    }

    let report = verify(dir.path(), Backend::RocksDb, 2);
    let error = report["error"].as_str().unwrap();
    assert!(
        error.contains("layout 1") && error.contains("medledger rebuild"),
        "{error}"
    );

    let config = ServeConfig::new(dir.path().to_path_buf());
    let core = Core::open(&config).unwrap();
    assert_eq!(core.state.views.applied_height().unwrap(), height);
    drop(core);
    verify(dir.path(), Backend::RocksDb, 0);
}
