#!/usr/bin/env bash
# `bench/export.sh [EVENTS]`: a bulk export (POST /v1/exports) of everything a ledger of
# EVENTS fixture events holds (1,000,000 by default): records/s, and the server's RSS
# sampled every 0.5 s before and while the job runs (constant memory is the claim).
#
# The ledger comes from `medledger bench rebuild --events EVENTS --backends rocksdb`
# (realistic fixture events, its views rebuilt), served on 127.0.0.1 with its embedded
# defaults; the export runs as an auditor with `purpose: public_health`, so every record
# exported is a read on the ledger (one event per patient per step of 4,096 timeline
# rows). Prints one JSON line: records, seconds, records_per_sec, bytes, rss_mib_before,
# rss_mib_max, rss_mib_samples. The server is stopped and the data removed on exit.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
events=${1:-1000000}
target=${CARGO_TARGET_DIR:-$root/target}
bin=${MEDLEDGER_BIN:-}
if [ -z "$bin" ]; then
  (cd "$root" && cargo build --release --locked -p medledger --bin medledger >&2)
  bin="$target/release/medledger"
fi
data=$(mktemp -d -t medledger-bench-export.XXXXXX)
pid=
cleanup() {
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then kill -TERM "$pid"; wait "$pid" || true; fi
  rm -rf "$data"
}
trap cleanup EXIT

echo "== generating $events fixture events" >&2
"$bin" bench rebuild --data-dir "$data" --events "$events" --backends rocksdb >/dev/null
dir="$data/bench-rebuild"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
url="http://127.0.0.1:$port"
"$bin" serve --data-dir "$dir" --listen "127.0.0.1:$port" --rate-limit-per-sec 0 2>"$data/serve.log" &
pid=$!
for _ in $(seq 1 600); do curl -fsS "$url/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
token=$("$bin" token --data-dir "$dir" --role auditor --sub au-bench | tail -1)

python3 - "$url" "$token" "$pid" <<'PY'
import http.client, json, sys, time
url, token, pid = sys.argv[1], sys.argv[2], sys.argv[3]
host, port = url[len("http://"):].split(":")
def rss_mib():
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
def call(method, path, body=None):
    c = http.client.HTTPConnection(host, int(port), timeout=60)
    c.request(method, path, body=json.dumps(body) if body is not None else None,
              headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    r = c.getresponse()
    return r.status, json.loads(r.read() or b"null")
before = rss_mib()
t0 = time.monotonic()
status, started = call("POST", "/v1/exports", {"purpose": "public_health"})
assert status == 202, (status, started)
samples = []
deadline = t0 + 3600
while True:
    samples.append(round(rss_mib()))
    status, job = call("GET", started["status_url"])
    if status == 200:
        break
    assert status == 202 and time.monotonic() < deadline, (status, job)
    time.sleep(0.5)
seconds = time.monotonic() - t0
assert job["state"] == "complete", job
nbytes = sum(f["bytes"] for f in job["files"])
print(json.dumps({"records": job["records"], "files": len(job["files"]), "seconds": round(seconds, 2),
                  "records_per_sec": round(job["records"] / seconds), "bytes": nbytes,
                  "rss_mib_before": round(before), "rss_mib_max": max(samples),
                  "rss_mib_samples": samples}))
PY
