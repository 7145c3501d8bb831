#!/usr/bin/env bash
# The main job: set up, build, and run the medledger server on its embedded defaults
# (data dir ./medledger-data, http://127.0.0.1:8080, no daemon to start by hand).
# Extra arguments go to `medledger serve` (see `medledger serve --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --release --locked --bin medledger
exec ./target/release/medledger serve "$@"
