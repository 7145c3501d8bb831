#!/usr/bin/env bash
# `bench/pages-ab.sh OLD_BIN NEW_BIN DATA_DIR [ROUNDS]`: timeline pages of 50 served by two
# medledger binaries from the same data dir, alternately, ROUNDS times each (5 by
# default): pages/s, p99 and the server's CPU per page, then the means and new/old.
#
# Page throughput on this 2-core VM drifts by 10% and more over minutes, and wrk shares
# the cores with the server: one run of each proves little; alternating them, the drift
# falls on both. Each run starts the binary on DATA_DIR (127.0.0.1 only), warms it for
# 4 s, measures 10 s of bench/http/read.lua on 64 connections (an admin's token), stops
# it. When DATA_DIR holds no data yet, NEW_BIN fills it first: 20 s of
# bench/http/submit.lua on 256 connections (~300,000 records here), the peers' records
# and patients (`peers-bench --quick --requests-out`). Both binaries must read the same
# data-dir layout. The server is stopped when the script exits, also on failure.
set -euo pipefail
if [ $# -lt 3 ]; then
  echo "usage: bench/pages-ab.sh OLD_BIN NEW_BIN DATA_DIR [ROUNDS]" >&2
  exit 2
fi
old=$1 new=$2 data=$3 rounds=${4:-5}
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
. "$root/scripts/lib/packages.sh"
# shellcheck disable=SC2046
apt_install bench/pages-ab.sh $(missing_packages wrk curl python3)
for bin in "$old" "$new"; do
  [ -x "$bin" ] || { echo "bench/pages-ab.sh: $bin is not an executable" >&2; exit 1; }
done
target=${CARGO_TARGET_DIR:-$root/target}
requests=$data.requests
if [ ! -s "$requests/patients.txt" ]; then
  (cd "$root" && cargo build --release --locked -p medledger-bench-peers --bin peers-bench >&2)
  "$target/release/peers-bench" --quick --body-bytes 1024 --requests-out "$requests" >&2
fi
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
url="http://127.0.0.1:$port"
pid=
stop() {
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then kill -TERM "$pid"; wait "$pid" || true; fi
  pid=
}
trap stop EXIT
start() { # binary
  "$1" serve --data-dir "$data" --listen "127.0.0.1:$port" --rate-limit-per-sec 0 2>>"$data.log" &
  pid=$!
  for _ in $(seq 1 400); do
    curl -fsS "$url/healthz" >/dev/null 2>&1 && return 0
    sleep 0.05
  done
  echo "bench/pages-ab.sh: $1 did not start; see $data.log" >&2
  exit 1
}
export REQUESTS_DIR=$requests SCRIPTS=$here/http
if [ ! -d "$data/blocks" ]; then
  start "$new"
  TOKEN=$("$new" token --data-dir "$data" --role admin --sub admin-1 | tail -1) BATCH=1 \
    wrk -t2 -c256 -d20s --timeout 10s -s "$here/http/submit.lua" "$url" >&2
  stop
fi
export TOKEN
TOKEN=$("$new" token --data-dir "$data" --role admin --sub admin-1 | tail -1)
rows=()
for r in $(seq 1 "$rounds"); do
  for which in old new; do
    bin=$old; [ "$which" = new ] && bin=$new
    start "$bin"
    wrk -t2 -c64 -d4s -s "$here/http/read.lua" "$url" >/dev/null
    c0=$(awk '{print $14 + $15}' "/proc/$pid/stat")
    json=$(wrk -t2 -c64 -d10s --timeout 10s -s "$here/http/read.lua" "$url" | sed -n 's/^WRKJSON //p')
    c1=$(awk '{print $14 + $15}' "/proc/$pid/stat")
    stop
    [ -n "$json" ] || { echo "bench/pages-ab.sh: wrk failed" >&2; exit 1; }
    row="{\"bin\":\"$which\",\"round\":$r,\"cpu_ticks\":$((c1 - c0)),${json#\{}"
    echo "$row"
    rows+=("$row")
  done
done
python3 - "$(getconf CLK_TCK)" "${rows[@]}" <<'PY'
import json, sys
hz, rows = int(sys.argv[1]), [json.loads(r) for r in sys.argv[2:]]
mean = {}
for which in ("old", "new"):
    rs = [r for r in rows if r["bin"] == which]
    rps = [r["rps"] for r in rs]
    cpu = [r["cpu_ticks"] / hz * 1e6 / r["requests"] for r in rs]
    mean[which] = (sum(rps) / len(rps), sum(cpu) / len(cpu))
    print(f"{which}: pages/s {' · '.join(f'{x:,.0f}' for x in rps)}; mean {mean[which][0]:,.0f}; "
          f"server CPU {mean[which][1]:,.0f} µs/page")
print(f"new/old: {mean['new'][0] / mean['old'][0]:.2f}× pages/s, "
      f"{mean['new'][1] / mean['old'][1]:.2f}× CPU per page")
PY
