#!/usr/bin/env bash
# `bench/compare.sh [--quick] [--write-docs]`: medledger beside PostgreSQL, SQLite, Redis and NATS
# JetStream in one run on this machine, with ratios (issue 7).
#
#  1. peers-bench (bench/peers): each peer installed from Debian's packages
#     (scripts/install-peers.sh), started on 127.0.0.1 with its data in a temp dir, asked
#     for its durability setting, loaded with the generated records, stopped;
#  2. medledger embedded: `medledger bench ingest`, the same record size and clients,
#     with its CPU seconds, peak RSS and bytes on disk per record;
#  3. medledger over HTTP: bench/http.sh (wrk, keep-alive connections) sending the
#     peers' own records and reading the peers' patients (`peers-bench --requests-out`):
#     ingest, timeline pages, the mixed 80/20 run, bytes on disk, and a rebuild;
#  4. bench/report.py: the Markdown table and the ratios, bench/charts.py the PNG charts,
#     from the files of this run only.
#
# Output: target/bench-compare/<timestamp>/ (the JSON lines, report.md, ingest.png and
# timeline.png). --write-docs puts the report between the markers in docs/BENCHMARKS.md and
# the charts in docs/bench/. --quick is the CI smoke size (about a minute); the default
# takes about 10 minutes here.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
quick=(); write_docs=0
records=10000; clients=64; body=1024
for arg in "$@"; do
  case $arg in
    --quick) quick=(--quick); records=1000; clients=16; body=256 ;;
    --write-docs) write_docs=1 ;;
    *) echo "usage: bench/compare.sh [--quick] [--write-docs]" >&2; exit 2 ;;
  esac
done
"$root/scripts/install-peers.sh"
target=${CARGO_TARGET_DIR:-$root/target}
# Two builds, each with its own package's features (a workspace build would unify them
# and change RocksDB's build, which takes well over 10 minutes here).
# MEDLEDGER_BIN measures that medledger binary instead of building one.
medledger=${MEDLEDGER_BIN:-}
if [ -z "$medledger" ]; then
  (cd "$root" && cargo build --release --locked -p medledger --bin medledger >&2)
  medledger="$target/release/medledger"
fi
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
/usr/bin/time -o "$data/time" -f '%U %S %M' "$medledger" bench ingest \
  --data-dir "$data/embedded" --events "$((records * 10))" \
  --record-bytes "$body" --submitters "$clients" > "$data/embedded.json"
read -r user sys peak_kib < "$data/time"
bytes=$(du -sb "$data/embedded" | cut -f1)
python3 - "$data/embedded.json" "$user" "$sys" "$peak_kib" "$bytes" > "$out/embedded.json" <<'PY'
import json, sys
j = json.loads(open(sys.argv[1]).read())
j["process_cpu_seconds"] = round(float(sys.argv[2]) + float(sys.argv[3]), 2)
j["peak_rss_bytes"] = int(sys.argv[4]) * 1024
j["bytes_on_disk"] = int(sys.argv[5])
j["bytes_on_disk_per_record"] = int(sys.argv[5]) // j["events"]
print(json.dumps(j))
PY
cat "$out/embedded.json" >&2

echo "== medledger over HTTP" >&2
"$target/release/peers-bench" "${quick[@]}" --body-bytes "$body" --requests-out "$data/requests"
REQUESTS_DIR="$data/requests" MEDLEDGER_BIN="$medledger" "$here/http.sh" "${quick[@]}" \
  | grep '^{' > "$out/http.jsonl"
cat "$out/http.jsonl" >&2

python3 "$here/report.py" "$out" > "$out/report.md"
python3 -c 'import matplotlib' 2>/dev/null || python3 -m pip install -q matplotlib >&2
python3 "$here/charts.py" "$out" "$out" >&2
cat "$out/report.md"
echo "(files in $out)" >&2
if [ $write_docs = 1 ]; then
  # The run's tables into docs/BENCHMARKS.md between its markers, its charts into docs/bench/.
  python3 - "$root/docs/BENCHMARKS.md" "$out" "${out#"$root/"}" <<'PY'
import sys
from pathlib import Path
doc, run, name = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
begin = "<!-- compare.sh --write-docs: begin (generated from the run's files; do not edit) -->"
end = "<!-- compare.sh --write-docs: end -->"
text = doc.read_text()
head, rest = text.split(begin, 1)
_, tail = rest.split(end, 1)
body = f"Run: `{name}`.\n\n" + (run / "report.md").read_text().strip() + "\n"
doc.write_text(head + begin + "\n" + body + end + tail)
PY
  cp "$out/ingest.png" "$out/timeline.png" "$root/docs/bench/"
  echo "docs/BENCHMARKS.md and docs/bench/ updated from $out" >&2
fi
