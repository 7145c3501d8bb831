#!/usr/bin/env bash
# `bench/http.sh [--quick]`: medledger over HTTP, measured with wrk on this machine.
#
#   1. durable submissions: POST /v1/records of the peers' records (~1 KiB JSON each),
#      256 keep-alive connections, default server settings (eager cut policy) but no
#      rate limit; the server's CPU seconds, peak RSS and bytes on disk per record;
#      then the same records through POST /v1/records/batch: 4 per request over 256
#      connections, and 50 per request over 64 connections (the peers' batched runs);
#   2. patient timeline pages (limit 50) of the peers' patients, 64 connections; then the
#      same pages asked again with their validators (If-None-Match: 304s); then the same
#      patients' summaries (GET /v1/patients/{id}/summary), 64 connections and one;
#   3. the peers' mixed run: 80% timeline pages, 20% submissions, 64 connections;
#   4. latency at low load (one connection): eager policy, then `--cut-policy strict`;
#   5. `medledger rebuild` of the views from the ledger those runs wrote.
#
# The records and patients come from `peers-bench --requests-out` (the same generator,
# seed and order the peers are loaded with); REQUESTS_DIR names a directory that already
# holds them (bench/compare.sh passes its run's). Every run prints a WRKJSON line
# (requests/s, p50/p99/p99.9 ms, non-2xx count) and the script ends with a Markdown table
# for docs/BENCHMARKS.md. The server and wrk share the machine's cores. The server binds
# 127.0.0.1 only, its data is in a temp dir, and it is stopped (SIGTERM) when the script
# exits, also on failure.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
quick=0
[ "${1:-}" = "--quick" ] && quick=1
if [ $quick = 1 ]; then submit_s=5; batch_s=3; read_s=5; mixed_s=5; low_s=3; else submit_s=30; batch_s=15; read_s=20; mixed_s=15; low_s=10; fi

. "$(cd "$(dirname "$0")/.." && pwd)/scripts/lib/packages.sh"
# shellcheck disable=SC2046
apt_install bench/http.sh $(missing_packages wrk)
command -v wrk >/dev/null || { echo "bench/http.sh: wrk missing after install" >&2; exit 1; }
target=${CARGO_TARGET_DIR:-$root/target}
bin=${MEDLEDGER_BIN:-}
if [ -z "$bin" ]; then
  (cd "$root" && cargo build --release --locked -p medledger --bin medledger >&2)
  bin="$target/release/medledger"
fi

data=$(mktemp -d -t medledger-bench-http.XXXXXX)
pid=
stop() {
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then kill -TERM "$pid"; wait "$pid" || true; fi
  pid=
}
trap 'stop; rm -rf "$data"' EXIT

requests=${REQUESTS_DIR:-}
if [ -z "$requests" ]; then
  (cd "$root" && cargo build --release --locked -p medledger-bench-peers --bin peers-bench >&2)
  requests="$data/requests"
  q=(); [ $quick = 1 ] && q=(--quick)
  "$target/release/peers-bench" "${q[@]}" --body-bytes 1024 --requests-out "$requests"
fi
export REQUESTS_DIR=$requests SCRIPTS=$here/http

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
url="http://127.0.0.1:$port"
start() {
  "$bin" serve --data-dir "$data/server" --listen "127.0.0.1:$port" --rate-limit-per-sec 0 "$@" 2>>"$data/serve.log" &
  pid=$!
  for _ in $(seq 1 200); do
    curl -fsS "$url/healthz" >/dev/null 2>&1 && return 0
    sleep 0.05
  done
  echo "bench/http.sh: the server did not start; log:" >&2; cat "$data/serve.log" >&2; exit 1
}
cpu_seconds() { awk '{ printf "%.2f", ($14 + $15) / 100 }' "/proc/$pid/stat"; }
peak_rss_bytes() { awk '/^VmHWM:/ { print $2 * 1024 }' "/proc/$pid/status"; }
metric() { curl -fsS "$url/metrics" | awk -v m="$1" '$1 == m { print $2 }'; }

start
admin=$("$bin" token --data-dir "$data/server" --role admin --sub admin-1 | tail -1)

results=()
run() { # name, connections, threads, seconds, script[, records per batch request]
  local name=$1 conns=$2 threads=$3 secs=$4 script=$5 batch=${6:-1} out json cpu0 cpu1
  cpu0=$(cpu_seconds)
  out=$(TOKEN=$admin BATCH=$batch wrk -t"$threads" -c"$conns" -d"${secs}s" --timeout 10s -s "$here/http/$script" "$url" 2>&1)
  cpu1=$(cpu_seconds)
  json=$(printf '%s\n' "$out" | sed -n 's/^WRKJSON //p')
  [ -n "$json" ] || { echo "bench/http.sh: wrk failed: $out" >&2; exit 1; }
  json="{\"run\":\"$name\",\"connections\":$conns,\"server_cpu_seconds\":$(python3 -c "print(round($cpu1 - $cpu0, 2))"),\"server_peak_rss_bytes\":$(peak_rss_bytes),$(printf '%s' "$json" | cut -c2-)"
  echo "$json"
  results+=("$name|$conns|$json")
}

run submit-eager 256 2 "$submit_s" submit.lua
run submit-batch-4 256 2 "$batch_s" batch.lua 4
run submit-batch-50 64 2 "$batch_s" batch.lua 50
# Reads start once the views have caught up with the submissions.
for _ in $(seq 1 600); do [ "$(metric medledger_projector_lag_blocks)" = 0 ] && break; sleep 0.1; done
run timeline-pages 64 2 "$read_s" read.lua
# Repeated reads of unchanged timelines: each page's validator (ETag), then the same
# pages again with If-None-Match (304 without reading a record).
python3 - "$url" "$admin" "$REQUESTS_DIR/patients.txt" >"$data/etags.txt" <<'PY'
import http.client, sys
url, token, patients = sys.argv[1], sys.argv[2], sys.argv[3]
host, port = url[len("http://"):].split(":")
c = http.client.HTTPConnection(host, int(port), timeout=10)
for p in sorted({l.strip() for l in open(patients) if l.strip()}):
    c.request("GET", f"/v1/patients/{p}/records?limit=50", headers={"Authorization": f"Bearer {token}"})
    r = c.getresponse()
    r.read()
    tag = r.getheader("ETag")
    if r.status != 200 or not tag:
        sys.exit(f"no validator for {p}: {r.status}")
    print(f"{p}\t{tag}")
PY
export ETAGS=$data/etags.txt
run timeline-pages-304 64 2 "$read_s" read.lua
unset ETAGS
ROUTE=summary run patient-summary 64 2 "$read_s" read.lua
ROUTE=summary run patient-summary-low-load 1 1 "$low_s" read.lua
run mixed-80-20 64 2 "$mixed_s" mixed.lua
run low-load-eager 1 1 "$low_s" submit.lua
# Bytes on disk per committed record: the whole data dir (ledger, index, views, keys,
# token secret) after a clean stop, over the records the server committed.
committed=$(metric medledger_committed_total)
stop
bytes=$(du -sb "$data/server" | cut -f1)
echo "{\"run\":\"disk\",\"records\":$committed,\"bytes_on_disk\":$bytes,\"bytes_on_disk_per_record\":$((bytes / committed))}"

# Rebuild every view from the ledger the runs above wrote (the peers' reindex).
if ! rebuild=$(/usr/bin/time -f 'PEAKRSS %M' "$bin" rebuild --data-dir "$data/server" 2>"$data/rebuild.err" | tail -1); then
  # e.g. {"ok":false,"error":"not enough free space ..."}: the data dir goes with the trap.
  echo "bench/http.sh: medledger rebuild failed: $rebuild" >&2
  tail -3 "$data/rebuild.err" >&2
  exit 1
fi
peak_kib=$(sed -n 's/^PEAKRSS //p' "$data/rebuild.err")
echo "{\"run\":\"rebuild\",\"peak_rss_bytes\":$((peak_kib * 1024)),$(printf '%s' "$rebuild" | cut -c2-)"

start --cut-policy strict
run low-load-strict 1 1 "$low_s" submit.lua
stop

echo
echo "| run | connections | requests/s | records/s | p50 ms | p99 ms | p99.9 ms | non-2xx | batches with a failed record | socket errors | server CPU s |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
for r in "${results[@]}"; do
  IFS='|' read -r name conns json <<<"$r"
  python3 - "$name" "$conns" "$json" <<'PY'
import json, sys
name, conns, j = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
sock = j["errors_connect"] + j["errors_read"] + j["errors_write"] + j["errors_timeout"]
per = j.get("records_per_request", 1)
failed = j.get("batches_with_failed_records", "—")
print(f"| {name} | {conns} | {j['rps']:,.0f} | {j['rps'] * per:,.0f} | {j['p50_ms']:.2f} | {j['p99_ms']:.2f} | {j['p999_ms']:.2f} | {j['errors_status']} | {failed} | {sock} | {j['server_cpu_seconds']} |")
PY
done
