//! PostgreSQL's search over a bulk export's records finds the records holding every word
//! of a query, newest first, from the metadata's string values only (never its keys, never
//! an erased record), whatever the words' case, with or without a btree on `created_at`;
//! the search figures count its hits.
//!
//! Needs PostgreSQL: `scripts/install-peers.sh` installs it. A missing binary fails the
//! test with that command in the message; nothing is skipped.

use medledger_bench_peers::peers::postgres::{ChainMode, Postgres};
use medledger_bench_peers::{workload, Peer, ReadOptions};

const EXPORT: &[(&str, &str)] = &[
    (
        "lab_result.ndjson",
        concat!(
            r#"{"record_id":"r-1","patient_id":"p-1","hospital_id":"h-1","record_type":"lab_result","created_at":"2026-01-01T08:00:00.000Z","version":1,"metadata":{"title":"Complete blood count","department":"laboratory","codes":["718-7"]},"erased":false}"#,
            "\n",
            r#"{"record_id":"r-2","patient_id":"p-2","hospital_id":"h-1","record_type":"lab_result","created_at":"2026-01-03T08:00:00.000Z","version":1,"metadata":{"title":"Lipid panel","department":"laboratory","detail":{"lines":["cholesterol count"]}},"erased":false}"#,
            "\n",
        ),
    ),
    (
        "clinical_note.ndjson",
        concat!(
            r#"{"record_id":"r-3","patient_id":"p-1","hospital_id":"h-2","record_type":"clinical_note","created_at":"2026-01-02T08:00:00.000Z","version":2,"metadata":{"title":"Progress note","note":"Blood pressure stable; repeat count in two weeks."},"erased":false}"#,
            "\n",
            r#"{"record_id":"r-4","patient_id":"p-3","hospital_id":"h-2","record_type":"clinical_note","created_at":"2026-01-04T08:00:00.000Z","version":3,"metadata":null,"erased":true}"#,
            "\n",
        ),
    ),
];

fn ids(pg: &Postgres, words: &str) -> Vec<String> {
    let mut session = pg.session().expect("a session");
    session
        .search(words, 50)
        .unwrap_or_else(|e| panic!("search {words:?}: {e}"))
        .expect("PostgreSQL searches")
        .into_iter()
        .map(|hit| hit.record_id)
        .collect()
}

#[test]
fn postgres_search_finds_the_records_holding_every_word_newest_first() {
    let base = tempfile::tempdir().expect("temp dir");
    let export = tempfile::tempdir().expect("temp dir");
    for (name, text) in EXPORT {
        std::fs::write(export.path().join(name), text).expect("write the export");
    }
    let pg = Postgres::start(base.path(), ChainMode::Chained).expect("postgresql starts");
    let load = pg.load_export(export.path()).expect("the export loads");
    assert_eq!((load.files, load.records), (2, 4));
    assert_eq!(load.records_without_metadata, 1);
    let built = workload::build(&pg, "search_index", load.records, || {
        pg.build_search_index().map(Some)
    })
    .expect("the index builds")
    .expect("a figure");
    assert!(built.bytes_on_disk_breakdown["search_words_index"] > 0);

    assert_eq!(
        ids(&pg, "blood count"),
        ["r-3", "r-1"],
        "both words, newest first"
    );
    assert_eq!(ids(&pg, "BLOOD Complete"), ["r-1"], "case is folded");
    assert_eq!(
        ids(&pg, "count"),
        ["r-2", "r-3", "r-1"],
        "nested strings too"
    );
    assert!(ids(&pg, "blood lipid").is_empty(), "the words are ANDed");
    assert!(ids(&pg, "title").is_empty(), "keys are not words");
    assert!(ids(&pg, "note").contains(&"r-3".to_string()));

    let figures = pg
        .search_reads(
            "two_terms",
            &["blood count".to_string(), "lipid panel".to_string()],
            &ReadOptions {
                clients: 2,
                pages: 40,
                limit: 50,
                seconds_max: 30,
            },
        )
        .expect("searches run")
        .expect("PostgreSQL searches");
    assert_eq!(figures.workload, "search_two_terms");
    assert_eq!(figures.operations, 40);
    // Half the searches find 2 records, half find 1.
    assert_eq!(figures.records, 60);

    // A btree on created_at beside the GIN index changes the plans, not the answers.
    pg.build_created_at_index().expect("the btree builds");
    assert_eq!(ids(&pg, "blood count"), ["r-3", "r-1"]);
    assert_eq!(ids(&pg, "count"), ["r-2", "r-3", "r-1"]);
    let plan = pg.explain_search("it's blood", 50).expect("a plan");
    assert!(
        plan.iter().any(|l| l.contains("Execution Time")),
        "{plan:?}"
    );
}
