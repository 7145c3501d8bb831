#!/usr/bin/env bash
# Sets up and runs the whole test suite. --no-fail-fast: one failing test binary does not
# hide the results of every binary after it.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/setup-test.sh
cargo test --workspace --locked --no-fail-fast
