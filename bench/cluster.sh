#!/usr/bin/env bash
# `bench/cluster.sh [ROUNDS] [SECONDS] [KILLS] [TRANSFERS] [PARTITIONS]`: a three-node cluster against one node, on
# this machine in one run (issue 22). The three nodes share its cores, so the figures are
# ratios against the single node measured here.
#
#   1. ROUNDS (2) alternations of: one node, then three nodes (wrk against the leader):
#      ~1 KiB records one per request (256 keep-alive connections), the same with a
#      ~100-byte inline payload (which a cluster sends to a majority before the record's
#      block), and in batches of 50 (32 connections), SECONDS (10) each;
#   2. KILLS (20) leader SIGKILLs under 4 writers through the other nodes: the time from
#      the kill to the first acknowledged write through the new leader (p50, p99), the
#      killed node restarted and caught up; then every acknowledged record is read from
#      every node and every node's tip compared (lost and divergent counts must be 0).
#      `bench/cluster.sh 0 0 100` runs only this, with 100 kills;
#   3. TRANSFERS (20) leadership handovers to a random other node under the same writers
#      (`medledger cluster transfer-leader`'s route): the time until the target leads;
#   4. PARTITIONS (0) leader partitions, by bench/cluster-partitions.sh (network
#      namespaces, root). The long run: `bench/cluster.sh 0 0 100 20 20`.
#
# Release build, rate limit off, every address 127.0.0.1, data in a temp dir; every server
# is stopped when the script exits, also on failure. MEDLEDGER_BIN picks the binary.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
rounds=${1:-2} secs=${2:-10} kills=${3:-20} transfers=${4:-20} partitions=${5:-0}
. "$root/scripts/lib/packages.sh"
# shellcheck disable=SC2046
apt_install bench/cluster.sh $(missing_packages wrk curl python3)
command -v wrk >/dev/null || { echo "bench/cluster.sh: wrk missing after install" >&2; exit 1; }
. "$here/lib/servers.sh"
bench_data cluster

rows=()
# CPU ticks (user + system) the servers used so far: the three nodes share the cores,
# so CPU per record tells what the cluster's work costs apart from the waits.
cpu_ticks() {
  local p t=0 f
  for p in "${pids[@]}"; do
    f=$(cut -d')' -f2 "/proc/$p/stat" 2>/dev/null) || continue
    set -- $f
    t=$((t + ${12} + ${13}))
  done
  echo "$t"
}
hz=$(getconf CLK_TCK)
load() { # mode url token
  local out json kind conns before after
  for kind in meta inline batch; do
    conns=256; [ "$kind" = batch ] && conns=32
    before=$(cpu_ticks)
    out=$(TOKEN=$3 SCRIPTS=$here/http KIND=$kind BATCH=50 \
      wrk -t2 -c"$conns" -d"${secs}s" --timeout 10s -s "$here/http/payload.lua" "$2" 2>&1)
    after=$(cpu_ticks)
    json=$(printf '%s\n' "$out" | sed -n 's/^WRKJSON //p')
    [ -n "$json" ] || { echo "wrk failed: $out" >&2; exit 1; }
    json="{\"mode\":\"$1\",\"cpu_s\":$(( (after - before) * 1000 / hz ))e-3,${json#\{}"
    echo "WRKJSON $json"
    rows+=("$json")
  done
}

single() {
  local d=$data/single-$1 port
  port=$(free_port)
  "$bin" serve --data-dir "$d" --listen "127.0.0.1:$port" --rate-limit-per-sec 0 2>>"$data/single.log" &
  pids+=($!)
  wait_up "http://127.0.0.1:$port" "$data/single.log"
  load single "http://127.0.0.1:$port" "$("$bin" token --data-dir "$d" --role admin --sub admin-1 | tail -1)"
  stop_all
}

cluster_file() { # dir
  local f=$1/cluster.toml
  mkdir -p "$1"
  echo 'cluster_id = "bench"' >"$f"
  for i in 1 2 3; do
    printf '[[node]]\nid = %d\nraft = "127.0.0.1:%s"\nhttp = "127.0.0.1:%s"\n' "$i" "$(free_port)" "$(free_port)" >>"$f"
  done
  echo "$f"
}
http_of() { awk -v id="$2" '$1=="id"{n=$3} $1=="http"&&n==id{gsub(/"/,"",$3); print $3}' "$1"; }

leader_url() { # file token
  local i s
  for _ in $(seq 1 400); do
    for i in 1 2 3; do
      s=$(curl -fsS -H "Authorization: Bearer $2" "http://$(http_of "$1" "$i")/v1/cluster" 2>/dev/null || true)
      l=$(printf '%s' "$s" | python3 -c 'import json,sys
try: print(json.load(sys.stdin)["leader_id"] or "")
except Exception: print("")')
      [ -n "$l" ] && { echo "http://$(http_of "$1" "$l")"; return 0; }
    done
    sleep 0.05
  done
  echo "no leader" >&2; exit 1
}

three() {
  local d=$data/cluster-$1 f i
  f=$(cluster_file "$d")
  for i in 1 2 3; do
    "$bin" serve --cluster "$f" --node-id "$i" --data-dir "$d/n$i" --rate-limit-per-sec 0 2>>"$data/cluster.log" &
    pids+=($!)
  done
  for i in 1 2 3; do wait_up "http://$(http_of "$f" "$i")" "$data/cluster.log"; done
  local admin
  admin=$("$bin" token --data-dir "$d/n1" --role admin --sub admin-1 | tail -1)
  load cluster "$(leader_url "$f" "$admin")" "$admin"
  stop_all
}

for r in $(seq 1 "$rounds"); do
  single "$r"
  three "$r"
done

# Failover: a fresh cluster, driven by cluster_failover.py (it starts and stops the nodes).
d=$data/failover
f=$(cluster_file "$d")
python3 - "$f" "$d" "$bin" >"$d/state.json" <<'PY'
import json, sys, re
f, d, bin_ = sys.argv[1:]
text = open(f).read()
nodes = []
for m in re.finditer(r'id = (\d+)\nraft = "([^"]+)"\nhttp = "([^"]+)"', text):
    i = int(m.group(1))
    nodes.append({"id": i, "http": m.group(3), "log": f"{d}/n{i}.log",
                  "cmd": [bin_, "serve", "--cluster", f, "--node-id", str(i), "--data-dir", f"{d}/n{i}",
                          "--rate-limit-per-sec", "0"]})
print(json.dumps({"nodes": nodes}))
PY
# Tokens need the derived secret in a data dir: a node writes it at its first start, so
# mint after the driver's first start (it reads the tokens from TOKENS_FROM).
python3 - "$d/state.json" "$bin" "$d" <<'PY'
import json, subprocess, sys, time, urllib.request
state_path, bin_, d = sys.argv[1:]
state = json.load(open(state_path))
n = state["nodes"][0]
p = subprocess.Popen(n["cmd"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
for _ in range(400):
    try:
        urllib.request.urlopen(f"http://{n['http']}/healthz", timeout=1); break
    except Exception:
        time.sleep(0.05)
p.terminate(); p.wait()
tok = lambda *a: subprocess.run([bin_, "token", "--data-dir", f"{d}/n1", *a], capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
state["admin"] = tok("--role", "admin", "--sub", "admin-1")
state["clinician"] = tok("--role", "clinician", "--sub", "dr-1", "--hospital", "h-1")
json.dump(state, open(state_path, "w"))
PY
fo=$(python3 "$here/cluster_failover.py" "$d/state.json" "$kills" 0 "$transfers" | sed -n 's/^FAILOVERJSON //p')
echo "FAILOVERJSON $fo"

python3 - "$fo" "${rows[@]}" <<'PY'
import json, sys
fo = json.loads(sys.argv[1])
rows = [json.loads(r) for r in sys.argv[2:]]
print("\n| mode | load | records/s | p50 ms | p99 ms | non-2xx | server CPU µs/record |")
print("|---|---|---:|---:|---:|---:|---:|")
for r in rows:
    rec = r["rps"] * r["records_per_request"]
    cpu = r["cpu_s"] * 1e6 / max(1, rec * r["seconds"])
    load = {"meta": "one per request, 256 conns", "inline": "one per request with a payload, 256 conns",
            "batch": "batches of 50, 32 conns"}[r["kind"]]
    print(f"| {r['mode']} | {load} | {rec:,.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['errors_status']} | {cpu:,.0f} |")
for kind, name in (("meta", "one per request"), ("inline", "one per request with a payload"),
                   ("batch", "batches of 50")) if rows else ():
    s = [r["rps"] * r["records_per_request"] for r in rows if r["mode"] == "single" and r["kind"] == kind]
    c = [r["rps"] * r["records_per_request"] for r in rows if r["mode"] == "cluster" and r["kind"] == kind]
    print(f"\ncluster / single, {name}: {sum(c) / len(c) / (sum(s) / len(s)):.2f} (means of {len(s)} runs each)")
print(f"\nfailover over {fo['kills']} leader kills: p50 {fo['failover_p50_ms']} ms, p99 {fo['failover_p99_ms']} ms, "
      f"max {fo['failover_max_ms']} ms; restarted node caught up in p50 {fo['catchup_p50_ms']} ms; "
      f"{fo['acked']} records acknowledged, {fo['lost']} lost, {fo['divergent']} divergent heights; "
      f"{fo['amendments']} amendments, {fo['version_reads']} version reads, {fo['version_regressions']} regressions")
print(f"\nleadership transfers: {fo['transfers']}, until the target led: p50 {fo['transfer_p50_ms']} ms, "
      f"max {fo['transfer_max_ms']} ms")
PY
if [ "$partitions" -gt 0 ]; then
  echo
  "$here/cluster-partitions.sh" "$partitions"
fi
