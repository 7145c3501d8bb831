#!/usr/bin/env bash
# `bench/clinical-ab.sh OLD_BIN NEW_BIN [ROUNDS]`: what sealing clinical text costs
# (issue 24). Two medledger binaries, alternately, ROUNDS times each (2 by default): OLD
# writes metadata in the clear (block format 1), NEW seals it under a content key per
# record (block format 2: a key made and made durable per new record, AES-256-GCM per
# field) and opens it on every read. Each run, on a fresh data dir in a temp dir:
#   - embedded: `medledger bench ingest`, 200,000 events of ~300 bytes, 2,048 submitters
#     (NEW seals inside the timing);
#   - submit:   a fresh server (defaults, no rate limit, 127.0.0.1 only), wrk POST
#     /v1/records, ~1 KiB records, 256 keep-alive connections, 10 s;
#   - timeline: wrk GET /v1/patients/{id}/records?limit=50 over the patients just
#     written, 64 connections, 10 s (NEW opens each record's metadata with its key).
# Then, NEW only: a patient with 10,000 records (written in batches of 1,000) is
# forgotten with POST /v1/patients/{id}/erase, timed with curl.
# Alternating puts the machine's drift on both. Prints the runs, then a table of means
# and NEW/OLD ratios. Every server is stopped on exit.
set -euo pipefail
[ $# -ge 2 ] || { echo "usage: bench/clinical-ab.sh OLD_BIN NEW_BIN [ROUNDS]" >&2; exit 2; }
old=$1 new=$2 rounds=${3:-2}
here=$(cd "$(dirname "$0")" && pwd)
. "$(cd "$(dirname "$0")/.." && pwd)/scripts/lib/packages.sh"
# shellcheck disable=SC2046
apt_install bench/clinical-ab.sh $(missing_packages wrk curl python3)
command -v wrk >/dev/null || { echo "bench/clinical-ab.sh: wrk missing after install" >&2; exit 1; }
for bin in "$old" "$new"; do [ -x "$bin" ] || { echo "bench/clinical-ab.sh: $bin is not an executable" >&2; exit 1; }; done
work=$(mktemp -d -t medledger-clinical-ab.XXXXXX)
pid=
stop() { if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then kill -TERM "$pid"; wait "$pid" || true; fi; pid=; }
trap 'stop; rm -rf "$work"' EXIT
mkdir -p "$work/requests"
python3 - "$work/requests" <<'PY'
import json, random, sys
rnd = random.Random(24)
with open(sys.argv[1] + "/records.ndjson", "w") as f:
    for i in range(20000):
        note = "".join(rnd.choice("abcdefghijklmnopqrstuvwxyz ") for _ in range(900))
        f.write(json.dumps({"patient_id": f"p-{rnd.randrange(400)}", "hospital_id": f"h-{rnd.randrange(8)}",
                            "record_type": rnd.choice(["lab_result", "note", "imaging"]),
                            "metadata": {"title": f"t-{i}", "note": note}}, separators=(",", ":")) + "\n")
with open(sys.argv[1] + "/patients.txt", "w") as f:
    for p in range(400):
        f.write(f"p-{p}\n")
for b in range(10):
    with open(sys.argv[1] + f"/forget-{b}.json", "w") as f:
        json.dump({"records": [{"patient_id": "p-forget", "hospital_id": "h-1", "record_type": "note",
                                "metadata": {"title": f"f-{b}-{i}", "note": "x" * 200}}
                               for i in range(1000)]}, f, separators=(",", ":"))
PY
export REQUESTS_DIR=$work/requests SCRIPTS=$here/http
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
url="http://127.0.0.1:$port"
results=$work/results
: >"$results"
serve() { # bin data
  "$1" serve --data-dir "$2" --listen "127.0.0.1:$port" --rate-limit-per-sec 0 2>>"$work/serve.log" &
  pid=$!
  for _ in $(seq 1 200); do curl -fsS "$url/healthz" >/dev/null 2>&1 && return; sleep 0.05; done
  echo "bench/clinical-ab.sh: the server did not start" >&2; exit 1
}
one() { # label bin
  local label=$1 bin=$2 data token out json
  data=$(mktemp -d "$work/data.XXXXXX")
  out=$("$bin" bench ingest --data-dir "$data/embedded" --events 200000 --record-bytes 300 --submitters 2048)
  echo "$label embedded $(printf '%s' "$out" | tr -d '\n')" | tee -a "$results"
  serve "$bin" "$data/server"
  token=$("$bin" token --data-dir "$data/server" --role admin --sub admin-1 | tail -1)
  for spec in "submit 256 2 10 submit.lua" "timeline 64 2 10 read.lua"; do
    read -r name conns threads secs script <<<"$spec"
    out=$(TOKEN=$token BATCH=1 wrk -t"$threads" -c"$conns" -d"${secs}s" --timeout 10s -s "$here/http/$script" "$url" 2>&1)
    json=$(printf '%s\n' "$out" | sed -n 's/^WRKJSON //p')
    [ -n "$json" ] || { echo "bench/clinical-ab.sh: wrk failed: $out" >&2; exit 1; }
    echo "$label $name $json" | tee -a "$results"
  done
  if [ "$label" = new ]; then
    for b in $(seq 0 9); do
      curl -fsS -o /dev/null -H "Authorization: Bearer $token" -H 'Content-Type: application/json' \
        --data-binary "@$REQUESTS_DIR/forget-$b.json" "$url/v1/records/batch"
    done
    out=$(curl -fsS -w ' %{time_total}' -H "Authorization: Bearer $token" -H 'Content-Type: application/json' \
      --data '{"reason":"patient request under GDPR art. 17"}' "$url/v1/patients/p-forget/erase")
    echo "$label erase {\"answer\": ${out% *}, \"seconds\": ${out##* }}" | tee -a "$results"
  fi
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
    label, name, j = line.split(" ", 2)
    runs[(label, name)].append(json.loads(j))
mean = lambda xs: sum(xs) / len(xs)
print()
print("| run | old | new | new/old | old p99 ms | new p99 ms |")
print("|---|---:|---:|---:|---:|---:|")
e = lambda label, k: mean([j[k] for j in runs[(label, "embedded")]])
print(f"| embedded ingest, events/s | {e('old','events_per_sec'):,.0f} | {e('new','events_per_sec'):,.0f} | {e('new','events_per_sec')/e('old','events_per_sec'):.2f} | {e('old','p99_ms'):.1f} | {e('new','p99_ms'):.1f} |")
print(f"| embedded ingest, CPU µs/event | {e('old','cpu_us_per_event'):.1f} | {e('new','cpu_us_per_event'):.1f} | {e('new','cpu_us_per_event')/e('old','cpu_us_per_event'):.2f} | | |")
for name, unit in [("submit", "records/s"), ("timeline", "pages/s")]:
    w = lambda label, k: mean([j[k] for j in runs[(label, name)]])
    print(f"| HTTP {name}, {unit} | {w('old','rps'):,.0f} | {w('new','rps'):,.0f} | {w('new','rps')/w('old','rps'):.2f} | {w('old','p99_ms'):.1f} | {w('new','p99_ms'):.1f} |")
    errs = [sum(j["errors_status"] for j in runs[(l, name)]) for l in ("old", "new")]
    if any(errs):
        print(f"|   non-2xx old / new | {errs[0]} | {errs[1]} | | | |")
print()
seal = [j.get("seal_us_mean") for j in runs[("new", "embedded")]]
print(f"new, sealing per event in the embedded runs (µs, key creation's group commit included): {seal}")
for j in runs[("new", "erase")]:
    print(f"new, forgetting a patient with 10,000 records: {j['seconds']:.2f} s ({j['answer']})")
PY
