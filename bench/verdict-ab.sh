#!/usr/bin/env bash
# `bench/verdict-ab.sh OLD_BIN NEW_BIN [ROUNDS]`: what answering with the contract's verdict
# costs (issue 20). Two medledger binaries, alternately, ROUNDS times each (2 by default):
# OLD answers a write once its block is durable, NEW once the projector has applied the
# block too (the verdict). Each run starts a fresh server (defaults, no rate limit, data
# in a temp dir, 127.0.0.1 only) and measures with wrk:
#   - submit:   POST /v1/records, ~1 KiB records, 256 keep-alive connections, 10 s;
#   - batch-50: POST /v1/records/batch, 50 records a request, 64 connections, 8 s;
#   - low-load: POST /v1/records on one connection, 5 s (latency of a lone write).
# The records are generated here (server-chosen ids: no conflicts, so both binaries do
# the same work). Alternating puts the machine's drift on both. Prints a WRKJSON line per
# run, then a table of means and NEW/OLD ratios. Every server is stopped on exit.
set -euo pipefail
[ $# -ge 2 ] || { echo "usage: bench/verdict-ab.sh OLD_BIN NEW_BIN [ROUNDS]" >&2; exit 2; }
old=$1 new=$2 rounds=${3:-2}
here=$(cd "$(dirname "$0")" && pwd)
. "$(cd "$(dirname "$0")/.." && pwd)/scripts/lib/packages.sh"
# shellcheck disable=SC2046
apt_install bench/verdict-ab.sh $(missing_packages wrk)
command -v wrk >/dev/null || { echo "bench/verdict-ab.sh: wrk missing after install" >&2; exit 1; }
for bin in "$old" "$new"; do [ -x "$bin" ] || { echo "bench/verdict-ab.sh: $bin is not an executable" >&2; exit 1; }; done
work=$(mktemp -d -t medledger-verdict-ab.XXXXXX)
pid=
stop() { if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then kill -TERM "$pid"; wait "$pid" || true; fi; pid=; }
trap 'stop; rm -rf "$work"' EXIT
mkdir -p "$work/requests"
python3 - "$work/requests/records.ndjson" <<'PY'
import json, random, sys
rnd = random.Random(20)
with open(sys.argv[1], "w") as f:
    for i in range(20000):
        note = "".join(rnd.choice("abcdefghijklmnopqrstuvwxyz ") for _ in range(900))
        f.write(json.dumps({"patient_id": f"p-{rnd.randrange(2000)}", "hospital_id": f"h-{rnd.randrange(8)}",
                            "record_type": rnd.choice(["lab_result", "note", "imaging"]),
                            "metadata": {"title": f"t-{i}", "note": note}}, separators=(",", ":")) + "\n")
PY
export REQUESTS_DIR=$work/requests SCRIPTS=$here/http
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
url="http://127.0.0.1:$port"
results=$work/results
: >"$results"
one() { # label bin
  local label=$1 bin=$2 data token
  data=$(mktemp -d "$work/data.XXXXXX")
  "$bin" serve --data-dir "$data" --listen "127.0.0.1:$port" --rate-limit-per-sec 0 2>>"$work/serve.log" &
  pid=$!
  for _ in $(seq 1 200); do curl -fsS "$url/healthz" >/dev/null 2>&1 && break; sleep 0.05; done
  token=$("$bin" token --data-dir "$data" --role admin --sub admin-1 | tail -1)
  for spec in "submit 256 2 10 submit.lua 1" "batch-50 64 2 8 batch.lua 50" "low-load 1 1 5 submit.lua 1"; do
    read -r name conns threads secs script per <<<"$spec"
    out=$(TOKEN=$token BATCH=$per wrk -t"$threads" -c"$conns" -d"${secs}s" --timeout 10s -s "$here/http/$script" "$url" 2>&1)
    json=$(printf '%s\n' "$out" | sed -n 's/^WRKJSON //p')
    [ -n "$json" ] || { echo "bench/verdict-ab.sh: wrk failed: $out" >&2; exit 1; }
    echo "$label $name $per $json" | tee -a "$results"
  done
  stop
  rm -rf "$data"
}
for r in $(seq 1 "$rounds"); do
  one old "$old"
  one new "$new"
done
python3 - "$results" <<'PY'
import json, sys, collections
runs = collections.defaultdict(list)
for line in open(sys.argv[1]):
    label, name, per, j = line.split(" ", 3)
    runs[(label, name)].append((int(per), json.loads(j)))
print()
print("| run | old records/s | new records/s | new/old | old p50 ms | new p50 ms | old p99 ms | new p99 ms | non-2xx old / new |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
for name in ["submit", "batch-50", "low-load"]:
    def mean(label, f):
        xs = [f(per, j) for per, j in runs[(label, name)]]
        return sum(xs) / len(xs)
    rec = lambda per, j: j["rps"] * per
    o, n = mean("old", rec), mean("new", rec)
    p50o, p50n = mean("old", lambda p, j: j["p50_ms"]), mean("new", lambda p, j: j["p50_ms"])
    p99o, p99n = mean("old", lambda p, j: j["p99_ms"]), mean("new", lambda p, j: j["p99_ms"])
    eo = sum(j["errors_status"] for _, j in runs[("old", name)]); en = sum(j["errors_status"] for _, j in runs[("new", name)])
    print(f"| {name} | {o:,.0f} | {n:,.0f} | {n / o:.2f} | {p50o:.2f} | {p50n:.2f} | {p99o:.2f} | {p99n:.2f} | {eo} / {en} |")
PY
