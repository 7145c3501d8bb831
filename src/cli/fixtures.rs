//! `medledger fixtures`: realistic synthetic events as NDJSON (one JSON envelope per
//! line), from the seeded generator in `medledger::fixtures`. The same seed
//! gives the same bytes on every machine; `fixtures/sample/` holds a committed sample.

use std::io::Write;

use crate::fixtures::{FixtureConfig, Fixtures};

/// At most this many events per run.
pub const EVENTS_MAX: u64 = 100_000_000;

/// Writes `events` envelopes generated with `seed` to `out`. Exit 0, or 2 on a bad
/// argument or a write error.
pub fn run(events: u64, seed: u64, out: &mut dyn Write) -> i32 {
    if events > EVENTS_MAX {
        eprintln!("medledger: --events is at most {EVENTS_MAX}");
        return 2;
    }
    let fixtures = Fixtures::new(FixtureConfig {
        seed,
        ..FixtureConfig::default()
    });
    let mut out = std::io::BufWriter::new(out);
    for env in fixtures.take(events as usize) {
        let line = serde_json::to_string(&env).expect("envelopes serialize");
        if let Err(e) = writeln!(out, "{line}") {
            eprintln!("medledger: writing the fixtures: {e}");
            return 2;
        }
    }
    match out.flush() {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("medledger: writing the fixtures: {e}");
            2
        }
    }
}
