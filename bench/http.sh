#!/usr/bin/env bash
# `bench/http.sh [--quick]`: medledger over HTTP, measured with wrk on this machine.
#
#   1. durable submissions: POST /v1/records, ~1 KiB JSON records, 256 keep-alive
#      connections, default server settings (eager cut policy) but no rate limit;
#   2. patient timeline pages (limit 50) over the patients just written, 64 connections;
#   3. latency at low load (one connection): eager policy, then `--cut-policy strict`.
#
# Every run prints a WRKJSON line (requests/s, p50/p99/p99.9 ms, non-2xx count) and the
# script ends with a Markdown table for docs/BENCHMARKS.md. The server and wrk share the
# machine's cores. The server binds 127.0.0.1 only, its data is in a temp dir, and it is
# stopped (SIGTERM) when the script exits, also on failure.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
quick=0
[ "${1:-}" = "--quick" ] && quick=1
if [ $quick = 1 ]; then submit_s=5; read_s=5; low_s=3; else submit_s=30; read_s=20; low_s=10; fi

command -v wrk >/dev/null || { apt-get install -y -q wrk >/dev/null || { echo "bench/http.sh: install wrk (apt-get install wrk)" >&2; exit 1; }; }
bin=${MEDLEDGER_BIN:-}
if [ -z "$bin" ]; then
  (cd "$root" && cargo build --release --locked --bin medledger >&2)
  bin="${CARGO_TARGET_DIR:-$root/target}/release/medledger"
fi

data=$(mktemp -d -t medledger-bench-http.XXXXXX)
pid=
stop() {
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then kill -TERM "$pid"; wait "$pid" || true; fi
  pid=
}
trap 'stop; rm -rf "$data"' EXIT

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
url="http://127.0.0.1:$port"
start() {
  "$bin" serve --data-dir "$data" --listen "127.0.0.1:$port" --rate-limit-per-sec 0 "$@" 2>>"$data/serve.log" &
  pid=$!
  for _ in $(seq 1 200); do
    curl -fsS "$url/healthz" >/dev/null 2>&1 && return 0
    sleep 0.05
  done
  echo "bench/http.sh: the server did not start; log:" >&2; cat "$data/serve.log" >&2; exit 1
}

start
clinician=$("$bin" token --data-dir "$data" --role clinician --sub dr-1 --hospital h-1 | tail -1)
auditor=$("$bin" token --data-dir "$data" --role auditor --sub au-1 | tail -1)

results=()
run() { # name, connections, threads, seconds, script, token
  local name=$1 conns=$2 threads=$3 secs=$4 script=$5 token=$6 out
  out=$(TOKEN=$token wrk -t"$threads" -c"$conns" -d"${secs}s" --timeout 10s -s "$here/http/$script" "$url" 2>&1)
  local json
  json=$(printf '%s\n' "$out" | sed -n 's/^WRKJSON //p')
  [ -n "$json" ] || { echo "bench/http.sh: wrk failed: $out" >&2; exit 1; }
  echo "{\"run\":\"$name\",\"connections\":$conns,$(printf '%s' "$json" | cut -c2-)"
  results+=("$name|$conns|$json")
}

run submit-eager 256 2 "$submit_s" submit.lua "$clinician"
curl -fsS -o /dev/null "$url/v1/chain" -H "Authorization: Bearer $auditor"
run timeline-pages 64 2 "$read_s" read.lua "$auditor"
run low-load-eager 1 1 "$low_s" submit.lua "$clinician"
stop
start --cut-policy strict
run low-load-strict 1 1 "$low_s" submit.lua "$clinician"
stop

echo
echo "| run | connections | requests/s | p50 ms | p99 ms | p99.9 ms | non-2xx | socket errors |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|"
for r in "${results[@]}"; do
  IFS='|' read -r name conns json <<<"$r"
  python3 - "$name" "$conns" "$json" <<'PY'
import json, sys
name, conns, j = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
sock = j["errors_connect"] + j["errors_read"] + j["errors_write"] + j["errors_timeout"]
print(f"| {name} | {conns} | {j['rps']:,.0f} | {j['p50_ms']:.2f} | {j['p99_ms']:.2f} | {j['p999_ms']:.2f} | {j['errors_status']} | {sock} |")
PY
done
