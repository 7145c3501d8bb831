#!/usr/bin/env bash
# `bench/search.sh [EVENTS]`: medledger's full-text search (GET /v1/search) beside
# PostgreSQL's (a GIN index over jsonb_to_tsvector('simple', metadata, '["string"]')) on
# the same records, in one run on this machine.
#
#   1. a fixture ledger of EVENTS events (1,000,000 by default): `medledger bench rebuild
#      --events EVENTS --backends rocksdb`, served on 127.0.0.1 without a rate limit;
#   2. the search index, built by the server from block 0 after its start, timed until it
#      covers the ledger (the two gauges below on /metrics): seconds, events/s, its bytes;
#   3. every record exported as an auditor (POST /v1/exports, purpose public_health) and
#      downloaded: the records PostgreSQL is loaded with;
#   4. the queries, from the export's word frequencies (bench/search_queries.py): rarest
#      (encounter numbers, in one record or a few), rare (words in 5 to 50 records),
#      common (the most frequent), two_terms (a common word
#      AND a word of medium frequency); each query once, its hits checked against the
#      export's count;
#   5. each class with wrk (bench/http/search.lua, limit 50), SEARCH_CONNECTIONS (64)
#      connections for SEARCH_SECONDS (20) s, then one connection for
#      SEARCH_LOW_LOAD_SECONDS (10) s; the server's CPU seconds; then the server stops;
#   6. `peers-bench search` on the same export and queries: PostgreSQL started as the
#      peers' runs start it (loopback, temp data dir, durable settings), loaded with COPY,
#      its GIN index built and timed, the same classes with the same clients; then again
#      with a btree on created_at beside it (PEERS_SEARCH_FLAGS=--gin-only skips that);
#   7. a Markdown report with ratios (report.md), from this run's files only.
#
# The run's files go to target/bench-search/<time>/ (SEARCH_OUT to choose). MEDLEDGER_BIN
# and PEERS_BENCH_BIN pick the binaries (else both are built). Everything binds 127.0.0.1;
# the servers, PostgreSQL and the data are stopped and removed when the script exits, also
# on failure or a signal. The load generators and the servers share the machine's cores.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
events=${1:-1000000}
seconds=${SEARCH_SECONDS:-20}
low_seconds=${SEARCH_LOW_LOAD_SECONDS:-10}
connections=${SEARCH_CONNECTIONS:-64}
index_timeout_s=${SEARCH_INDEX_TIMEOUT_S:-3600}
export_timeout_s=${SEARCH_EXPORT_TIMEOUT_S:-3600}
limit=50
# The gauges on /metrics the wait for the search index compares (blocks).
LEDGER_HEIGHT_METRIC=medledger_ledger_height
INDEXED_HEIGHT_METRIC=medledger_search_indexed_height

"$root/scripts/install-peers.sh"
. "$root/scripts/lib/packages.sh"
# shellcheck disable=SC2046
apt_install bench/search.sh $(missing_packages wrk)
command -v wrk >/dev/null || { echo "bench/search.sh: wrk missing after install" >&2; exit 1; }
target=${CARGO_TARGET_DIR:-$root/target}
peers=${PEERS_BENCH_BIN:-}
if [ -z "$peers" ]; then
  (cd "$root" && cargo build --release --locked -p medledger-bench-peers --bin peers-bench >&2)
  peers="$target/release/peers-bench"
fi
. "$here/lib/servers.sh"
bench_data search
out=${SEARCH_OUT:-$root/target/bench-search/$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$out"
# PostgreSQL runs as the `postgres` user: it must pass through the data dir to its own.
chmod 711 "$data"
mkdir -m 755 "$data/pg"

child=
cleanup() {
  if [ -n "$child" ] && kill -0 "$child" 2>/dev/null; then kill -TERM "$child"; wait "$child" || true; fi
  stop_all
  # A PostgreSQL that peers-bench could not stop (it was killed): its postmaster by pid.
  local f p
  for f in "$data"/pg/*/data/postmaster.pid; do
    [ -f "$f" ] || continue
    p=$(head -1 "$f")
    kill -INT "$p" 2>/dev/null || continue
    for _ in $(seq 1 150); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null || true
  done
  rm -rf "$data"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
# Long steps run in the background so a signal stops them at once (see cleanup).
background() {
  "$@" &
  child=$!
  local rc=0
  wait "$child" || rc=$?
  child=
  return "$rc"
}

echo "== generating $events fixture events" >&2
background "$bin" bench rebuild --data-dir "$data" --events "$events" --backends rocksdb >"$out/rebuild.json"
dir="$data/bench-rebuild"

port=$(free_port)
url="http://127.0.0.1:$port"
started=$(date +%s.%N)
"$bin" serve --data-dir "$dir" --listen "127.0.0.1:$port" --rate-limit-per-sec 0 2>"$data/serve.log" &
pid=$!
pids+=("$pid")
for _ in $(seq 1 1200); do
  curl -fsS "$url/healthz" >/dev/null 2>&1 && break
  kill -0 "$pid" 2>/dev/null || break
  sleep 0.1
done
curl -fsS "$url/healthz" >/dev/null 2>&1 || { echo "bench/search.sh: the server did not start; log:" >&2; tail -30 "$data/serve.log" >&2; exit 1; }
up=$(date +%s.%N)
token=$("$bin" token --data-dir "$dir" --role auditor --sub au-bench | tail -1)

metric() { curl -fsS "$url/metrics" | awk -v m="$1" '$1 == m { print $2 }'; }
# Waits until the search index covers the ledger's height (at most index_timeout_s).
wait_indexed() {
  local deadline=$((SECONDS + index_timeout_s)) ledger indexed next=$((SECONDS + 30))
  while :; do
    ledger=$(metric "$LEDGER_HEIGHT_METRIC")
    indexed=$(metric "$INDEXED_HEIGHT_METRIC")
    if [ -z "$ledger" ] || [ -z "$indexed" ]; then
      echo "bench/search.sh: /metrics has no $LEDGER_HEIGHT_METRIC or $INDEXED_HEIGHT_METRIC" >&2; exit 1
    fi
    [ "$ledger" -gt 0 ] && [ "$indexed" -ge "$ledger" ] && return 0
    if [ $SECONDS -ge "$deadline" ]; then
      echo "bench/search.sh: the search index holds $indexed of $ledger blocks after ${index_timeout_s}s" >&2; exit 1
    fi
    if [ $SECONDS -ge $next ]; then echo "   indexed $indexed of $ledger blocks" >&2; next=$((SECONDS + 30)); fi
    sleep 0.2
  done
}
cpu_seconds() { awk '{ printf "%.2f", ($14 + $15) / 100 }' "/proc/$pid/stat"; }
peak_rss_bytes() { awk '/^VmHWM:/ { print $2 * 1024 }' "/proc/$pid/status"; }

echo "== waiting for the search index" >&2
wait_indexed
done_at=$(date +%s.%N)
blocks=$(metric "$LEDGER_HEIGHT_METRIC")
index_bytes=$(du -sb "$dir/search" 2>/dev/null | cut -f1 || echo null)
python3 - "$events" "$blocks" "$started" "$up" "$done_at" "${index_bytes:-null}" >"$out/medledger.jsonl" <<'PY'
import json, sys
events, blocks, started, up, done, nbytes = sys.argv[1:]
seconds = float(done) - float(started)
print(json.dumps({"run": "index", "events": int(events), "blocks": int(blocks),
                  "seconds": round(seconds, 2), "events_per_sec": round(int(events) / seconds),
                  "seconds_to_healthz": round(float(up) - float(started), 2),
                  "index_bytes": None if nbytes == "null" else int(nbytes)}))
PY
cat "$out/medledger.jsonl" >&2

echo "== exporting every record" >&2
mkdir "$data/export"
python3 - "$url" "$token" "$data/export" "$export_timeout_s" >>"$out/medledger.jsonl" <<'PY'
import hashlib, http.client, json, sys, time
url, token, into, timeout_s = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
host, port = url[len("http://"):].split(":")
headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
def call(method, path, body=None):
    c = http.client.HTTPConnection(host, int(port), timeout=60)
    c.request(method, path, body=json.dumps(body) if body is not None else None, headers=headers)
    r = c.getresponse()
    return r.status, json.loads(r.read() or b"null")
t0 = time.monotonic()
status, started = call("POST", "/v1/exports", {"purpose": "public_health"})
assert status == 202, (status, started)
while True:
    status, job = call("GET", started["status_url"])
    if status == 200:
        break
    assert status == 202 and time.monotonic() < t0 + timeout_s, (status, job)
    time.sleep(0.5)
assert job["state"] == "complete", job
exported = time.monotonic() - t0
for f in job["files"]:
    c = http.client.HTTPConnection(host, int(port), timeout=60)
    c.request("GET", f["url"], headers=headers)
    r = c.getresponse()
    assert r.status == 200, (f["url"], r.status)
    digest = hashlib.sha256()
    with open(f"{into}/{f['record_type']}.ndjson", "wb") as out:
        while chunk := r.read(1 << 20):
            digest.update(chunk)
            out.write(chunk)
    assert digest.hexdigest() == f["sha256"], (f["url"], "SHA-256 differs from the manifest's")
print(json.dumps({"run": "export", "records": job["records"], "files": len(job["files"]),
                  "bytes": sum(f["bytes"] for f in job["files"]),
                  "export_seconds": round(exported, 2),
                  "download_seconds": round(time.monotonic() - t0 - exported, 2)}))
PY
tail -1 "$out/medledger.jsonl" >&2
# The export's reads are on the ledger: let the index follow them before measuring.
wait_indexed

echo "== picking the queries" >&2
python3 "$here/search_queries.py" "$data/export" "$out/queries.tsv" "$out/expected.json"
classes=(rarest rare common two_terms)
# Each class's requests, and each query once: its hits against the export's count.
python3 - "$url" "$token" "$out/queries.tsv" "$out/expected.json" "$data" "$limit" >>"$out/medledger.jsonl" <<'PY'
import http.client, json, sys, urllib.parse
url, token, queries, expected, into, limit = sys.argv[1:]
host, port = url[len("http://"):].split(":")
matches = {(k, q): m for k, c in json.load(open(expected))["classes"].items()
           for q, m in zip(c["queries"], c["matches"])}
paths = {}
c = http.client.HTTPConnection(host, int(port), timeout=60)
for line in open(queries, encoding="utf-8"):
    cls, words = line.rstrip("\n").split("\t", 1)
    path = f"/v1/search?q={urllib.parse.quote(words)}&limit={limit}"
    paths.setdefault(cls, []).append(path)
    c.request("GET", path, headers={"Authorization": f"Bearer {token}"})
    r = c.getresponse()
    body = json.loads(r.read() or b"null")
    hits = len(body["items"]) if r.status == 200 else None
    print(json.dumps({"run": "check", "class": cls, "words": words, "status": r.status, "hits": hits,
                      "next_cursor": r.status == 200 and body.get("next_cursor") is not None,
                      "expected_hits": min(matches[(cls, words)], int(limit))}))
for cls, ps in paths.items():
    with open(f"{into}/queries-{cls}.txt", "w") as f:
        f.write("\n".join(ps) + "\n")
PY

run() { # name, class, connections, threads, seconds
  local name=$1 class=$2 conns=$3 threads=$4 secs=$5 o json cpu0 cpu1
  [ -s "$data/queries-$class.txt" ] || { echo "   no $class queries: skipped" >&2; return 0; }
  cpu0=$(cpu_seconds)
  o=$(TOKEN=$token QUERIES="$data/queries-$class.txt" SCRIPTS="$here/http" \
    wrk -t"$threads" -c"$conns" -d"${secs}s" --timeout 10s -s "$here/http/search.lua" "$url" 2>&1)
  cpu1=$(cpu_seconds)
  json=$(printf '%s\n' "$o" | sed -n 's/^WRKJSON //p')
  [ -n "$json" ] || { echo "bench/search.sh: wrk failed: $o" >&2; exit 1; }
  json="{\"run\":\"$name\",\"class\":\"$class\",\"connections\":$conns,\"server_cpu_seconds\":$(python3 -c "print(round($cpu1 - $cpu0, 2))"),\"server_peak_rss_bytes\":$(peak_rss_bytes),$(printf '%s' "$json" | cut -c2-)"
  echo "$json" | tee -a "$out/medledger.jsonl" >&2
}
echo "== medledger: searches" >&2
for class in "${classes[@]}"; do run "search-$class" "$class" "$connections" 2 "$seconds"; done
for class in "${classes[@]}"; do run "search-$class-low-load" "$class" 1 1 "$low_seconds"; done
stop_all

echo "== PostgreSQL: searches" >&2
# shellcheck disable=SC2086 # PEERS_SEARCH_FLAGS: extra flags, one word each
background "$peers" search --records "$data/export" --queries "$out/queries-pg.tsv" \
  --clients "$connections" --seconds "$seconds" --low-load-seconds "$low_seconds" \
  --limit "$limit" --data-dir "$data/pg" ${PEERS_SEARCH_FLAGS:-} >"$out/peers.jsonl"

python3 - "$out" >"$out/report.md" <<'PY'
import json, sys
from pathlib import Path
run = Path(sys.argv[1])
ml = [json.loads(l) for l in (run / "medledger.jsonl").read_text().splitlines() if l.strip()]
pg = [json.loads(l) for l in (run / "peers.jsonl").read_text().splitlines() if l.strip()]
expected = json.loads((run / "expected.json").read_text())
machine = next(p["machine"] for p in pg if "machine" in p)
classes = ["rarest", "rare", "common", "two_terms"]
ml_runs = {(j["class"], j["connections"]): j for j in ml if j["run"].startswith("search-")}
pg_runs = {(j["class"], j["clients"], j["indexes"]): j for j in pg if "class" in j and "workload" in j}
conns = sorted({c for _, c in ml_runs}, reverse=True)
fmt = lambda x, d=0: "—" if x is None else f"{x:,.{d}f}"

print(f"Machine: {machine['cores']} cores ({machine['cpu_model']}), {machine['memory_bytes'] / 2**30:.0f} GiB, "
      f"load average {machine['load_average_1m']} at PostgreSQL's start. wrk, peers-bench and the servers share these cores.")
print()
print(f"Records: {expected['records']:,} exported ({expected['records_with_metadata']:,} with metadata, "
      f"{expected['distinct_words']:,} distinct words). Queries, each answering the newest 50 hits:")
print()
print("| class | queries | records matching a query |")
print("|---|---:|---|")
for c in classes:
    e = expected["classes"][c]
    note = " (the export has too few words in 5..50 records: band widened)" if e["widened"] else ""
    print(f"| {c} | {len(e['queries'])} | {e['matches_min']:,} to {e['matches_max']:,}{note} |")
print()
for indexes, title in (("gin", "GIN index"), ("gin+created_at", "GIN index and a btree on created_at")):
    if not any(k[2] == indexes for k in pg_runs):
        continue
    print(f"medledger beside PostgreSQL ({title}); latency in ms, server CPU in µs per search; "
          "ratio = medledger's searches/s ÷ PostgreSQL's:")
    print()
    print("| class | clients | medledger searches/s | p50 | p99 | p99.9 | CPU | non-2xx | "
          "PostgreSQL searches/s | p50 | p99 | p99.9 | CPU | its hits/search | ratio |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for n in conns:
        for c in classes:
            m, p = ml_runs.get((c, n)), pg_runs.get((c, n, indexes))
            if not m and not p:
                continue
            lat = p and p["latency"]
            ratio = f"{m['rps'] / p['operations_per_second']:.2f}×" if m and p and p["operations_per_second"] else "—"
            print(f"| {c} | {n} | {fmt(m and m['rps'])} | {fmt(m and m['p50_ms'], 2)} | {fmt(m and m['p99_ms'], 2)} | "
                  f"{fmt(m and m['p999_ms'], 2)} | {fmt(m and m['server_cpu_seconds'] * 1e6 / max(m['requests'], 1))} | "
                  f"{fmt(m and m['errors_status'])} | {fmt(p and p['operations_per_second'])} | "
                  f"{fmt(lat and lat['p50_us'] / 1000, 2)} | {fmt(lat and lat['p99_us'] / 1000, 2)} | "
                  f"{fmt(lat and lat['p999_us'] / 1000, 2)} | {fmt(p and p['server_cpu_us_per_search'])} | "
                  f"{fmt(p and p['hits_per_search'], 1)} | {ratio} |")
    print()

index = next((j for j in ml if j["run"] == "index"), None)
load = next((j["search_load"] for j in pg if "search_load" in j), None)
gin = next((j for j in pg if j.get("workload") == "search_index"), None)
btree = next((j for j in pg if j.get("workload") == "search_time_index"), None)
mib = lambda b: "—" if b is None else f"{b / 2**20:,.1f} MiB"
if index:
    print(f"medledger's index from block 0 after the server's start: {index['seconds']:,.1f} s for "
          f"{index['events']:,} events ({index['events_per_sec']:,} events/s, {index['blocks']:,} blocks; "
          f"the server answered /healthz after {index['seconds_to_healthz']:.1f} s), {mib(index['index_bytes'])} on disk.")
if gin:
    sizes = gin["bytes_on_disk_breakdown"]
    print(f"PostgreSQL: COPY of the {load['records']:,} records {load['copy_seconds']:.1f} s (setup); GIN index "
          f"build and ANALYZE {gin['seconds']:.1f} s ({gin['records'] / gin['seconds']:,.0f} records/s, "
          f"server CPU {gin['server_cpu_seconds']:.1f} s), index {mib(sizes.get('search_words_index'))}, "
          f"table {mib(sizes.get('search_table_heap'))}"
          + (f"; the btree on created_at {btree['seconds']:.1f} s, {mib(btree['bytes_on_disk_breakdown'].get('search_time_index'))}" if btree else "")
          + ".")
print()
checks = [j for j in ml if j["run"] == "check"]
ok = sum(1 for j in checks if j["hits"] == j["expected_hits"])
short = [j for j in checks if j["hits"] is not None and j["hits"] < j["expected_hits"]]
failed = [j for j in checks if j["status"] != 200]
pg_checks = [j["search_query"] for j in pg if "search_query" in j]
# PostgreSQL's spelling of each query (an encounter number with its `-`) to its count.
spelled = {(k, pq): q for k, c in expected["classes"].items() for q, pq in zip(c["queries"], c["pg_queries"])}
exp = {(j["class"], j["words"]): j["expected_hits"] for j in checks}
exp = {(k, pq): exp.get((k, q)) for (k, pq), q in spelled.items()}
pg_ok = sum(1 for q in pg_checks if q["hits"] == exp.get((q["class"], q["words"])))
print(f"Hits checked once per query against the export's counts (min(matches, 50)): medledger {ok} of {len(checks)}"
      + (f", {len(short)} short ({sum(1 for j in short if j['next_cursor'])} of them with a cursor: the scan limit)" if short else "")
      + (f", {len(failed)} not 200" if failed else "")
      + f"; PostgreSQL {pg_ok} of {len(pg_checks)}.")
for j in short + failed:
    print(f"- medledger `{j['words']}` ({j['class']}): status {j['status']}, {j['hits']} hits, expected {j['expected_hits']}")
for q in pg_checks:
    if q["hits"] != exp.get((q["class"], q["words"])):
        print(f"- PostgreSQL `{q['words']}` ({q['class']}): {q['hits']} hits, expected {exp.get((q['class'], q['words']))}")
for j in pg:
    p = j.get("search_plan")
    if p and any(line.lstrip().startswith("JIT:") for line in p["plan"]):
        print(f"- PostgreSQL compiled the plan of `{p['words']}` ({p['class']}, {p['indexes']}) with JIT "
              "(its cost passed jit_above_cost): see its search_plan line in peers.jsonl.")
print()
print("Every medledger search is a read on the ledger (`what: search`); PostgreSQL logs none. "
      "medledger's words also come from amendment and status reasons; PostgreSQL's table holds "
      "each record's current metadata only.")
PY
cat "$out/report.md"
echo "(files in $out)" >&2
