#!/usr/bin/env bash
# The main job: set up, build, and run medledger on its embedded defaults.
# For now (before `medledger serve` lands) that is the durable ingest benchmark on an
# embedded data dir, ./medledger-data/bench-ingest, followed by a full verification of
# the ledger it wrote. Extra arguments go to `medledger bench ingest`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
data_dir=${MEDLEDGER_DATA_DIR:-medledger-data/bench-ingest}
cargo run --release --locked --bin medledger -- bench ingest --data-dir "$data_dir" --events 1000000 --record-bytes 256 "$@"
cargo run --release --locked --bin medledger -- verify --data-dir "$data_dir"
