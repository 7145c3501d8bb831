#!/usr/bin/env bash
# `bench/compare.sh [--quick]`: medledger beside PostgreSQL, SQLite, Redis and NATS
# JetStream in one run on this machine, with ratios (issue 7).
#
#  1. peers-bench (bench/peers): each peer installed from Debian's packages
#     (scripts/install-peers.sh), started on 127.0.0.1 with its data in a temp dir, asked
#     for its durability setting, loaded with the generated records, stopped;
#  2. medledger embedded: `medledger bench ingest`, the same record size and clients;
#  3. medledger over HTTP: bench/http.sh (wrk, keep-alive connections);
#  4. bench/report.py: the Markdown table and the ratios, bench/charts.py the PNG charts,
#     from the files of this run only.
#
# Output: target/bench-compare/<timestamp>/ (the JSON lines, report.md, ingest.png and
# timeline.png; docs/bench/ holds the charts of the run docs/BENCHMARKS.md records). --quick is the
# CI smoke size (about a minute); the default takes about 10 minutes here.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
quick=()
records=10000; clients=64; body=1024
if [ "${1:-}" = "--quick" ]; then quick=(--quick); records=1000; clients=16; body=256; fi
"$root/scripts/install-peers.sh"
target=${CARGO_TARGET_DIR:-$root/target}
# Two builds, each with its own package's features (a workspace build would unify them
# and change RocksDB's build, which takes well over 10 minutes here).
(cd "$root" && cargo build --release --locked -p medledger --bin medledger >&2)
(cd "$root" && cargo build --release --locked -p medledger-bench-peers --bin peers-bench >&2)
out="$root/target/bench-compare/$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$out"
echo "$body" > "$out/body_bytes"

echo "== peers" >&2
"$target/release/peers-bench" "${quick[@]}" --body-bytes "$body" | tee "$out/peers.jsonl" >&2

echo "== medledger embedded" >&2
data=$(mktemp -d -t medledger-compare.XXXXXX)
trap 'rm -rf "$data"' EXIT
# Ten times the peers' single-record count: at medledger's rate the peers' 10,000 would
# be over in a tenth of a second, too short to time.
"$target/release/medledger" bench ingest --data-dir "$data" --events "$((records * 10))" \
  --record-bytes "$body" --submitters "$clients" > "$out/embedded.json"
cat "$out/embedded.json" >&2

echo "== medledger over HTTP" >&2
MEDLEDGER_BIN="$target/release/medledger" "$here/http.sh" "${quick[@]}" | grep '^{' > "$out/http.jsonl"
cat "$out/http.jsonl" >&2

python3 "$here/report.py" "$out" > "$out/report.md"
python3 -c 'import matplotlib' 2>/dev/null || python3 -m pip install -q matplotlib >&2
python3 "$here/charts.py" "$out" "$out" >&2
cat "$out/report.md"
echo "(files in $out)" >&2
