#!/usr/bin/env bash
# `bench/cluster-join.sh [RECORDS]`: how long a new node takes to join a cluster that
# holds RECORDS (1,000,000) records (issue 22). Three nodes on 127.0.0.1 are loaded with
# RECORDS ~300-byte records in batches of 1,000 (8 connections); a fourth node is started
# and added as a learner (`medledger cluster add-learner`, which returns once it caught
# up by snapshot and log); then the time until its views have applied every block.
#
# Release build, rate limit off, data in a temp dir; every server is stopped when the
# script exits, also on failure. MEDLEDGER_BIN picks the binary.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
records=${1:-1000000}
. "$root/scripts/lib/packages.sh"
# shellcheck disable=SC2046
apt_install bench/cluster-join.sh $(missing_packages curl python3)
. "$here/lib/servers.sh"
bench_data join

f=$data/cluster.toml
echo 'cluster_id = "join"' >"$f"
declare -A raft http
for i in 1 2 3 4; do raft[$i]=127.0.0.1:$(free_port); http[$i]=127.0.0.1:$(free_port); done
for i in 1 2 3; do
  printf '[[node]]\nid = %d\nraft = "%s"\nhttp = "%s"\n' "$i" "${raft[$i]}" "${http[$i]}" >>"$f"
done
# The new node's file lists the three and itself (same directory: the same secret).
f4=$data/cluster-4.toml
cp "$f" "$f4"
printf '[[node]]\nid = 4\nraft = "%s"\nhttp = "%s"\n' "${raft[4]}" "${http[4]}" >>"$f4"

for i in 1 2 3; do
  "$bin" serve --cluster "$f" --node-id "$i" --data-dir "$data/n$i" --rate-limit-per-sec 0 2>>"$data/cluster.log" &
  pids+=($!)
done
for i in 1 2 3; do wait_up "http://${http[$i]}" "$data/cluster.log"; done
admin=$("$bin" token --data-dir "$data/n1" --role admin --sub admin-1 | tail -1)
leader=$(python3 - "$admin" "${http[1]}" <<'PY'
import json, sys, time, urllib.request
admin, at = sys.argv[1:]
for _ in range(400):
    try:
        req = urllib.request.Request(f"http://{at}/v1/cluster", headers={"Authorization": f"Bearer {admin}"})
        s = json.load(urllib.request.urlopen(req, timeout=2))
        if s["leader_id"]:
            print([n["http"] for n in s["nodes"] if n["id"] == s["leader_id"]][0]); break
    except Exception:
        pass
    time.sleep(0.05)
PY
)
[ -n "$leader" ] || { echo "no leader" >&2; exit 1; }

echo "loading $records records through $leader" >&2
python3 - "$admin" "$leader" "$records" <<'PY'
import http.client, json, sys, threading, time
admin, leader, total = sys.argv[1], sys.argv[2], int(sys.argv[3])
host, port = leader.split(":")
per, workers = 1000, 8
batches = (total + per - 1) // per
next_batch, lock, failed, errors = [0], threading.Lock(), [0], {}
def work():
    c = http.client.HTTPConnection(host, int(port), timeout=60)
    while True:
        with lock:
            b = next_batch[0]; next_batch[0] += 1
        if b >= batches:
            return
        recs = [{"record_id": f"j-{b}-{i}", "patient_id": f"p-{(b * per + i) % 50000}",
                 "hospital_id": f"h-{i % 8}", "record_type": "note",
                 "metadata": {"t": "glucose 5.4 mmol/L", "n": i}} for i in range(min(per, total - b * per))]
        for attempt in range(5):
            try:
                c.request("POST", "/v1/records/batch", json.dumps({"records": recs}),
                          {"Authorization": f"Bearer {admin}", "Content-Type": "application/json"})
                r = c.getresponse(); body = json.loads(r.read())
                if r.status == 200 and body["failed"] == 0:
                    break
                if r.status == 200:
                    # Retry only the failed items; one that exists already landed before.
                    codes = [i.get("error", {}).get("code") for i in body["items"] if i["status"] != 201]
                    recs = [rec for rec, i in zip(recs, body["items"])
                            if i["status"] != 201 and i.get("error", {}).get("code") != "record_exists"]
                    with lock:
                        errors[tuple(sorted(set(codes)))] = errors.get(tuple(sorted(set(codes))), 0) + 1
                    if not recs:
                        break
                else:
                    with lock:
                        errors[r.status] = errors.get(r.status, 0) + 1
            except Exception as e:
                with lock:
                    errors[type(e).__name__] = errors.get(type(e).__name__, 0) + 1
                c = http.client.HTTPConnection(host, int(port), timeout=60)
            time.sleep(0.5)
        else:
            with lock:
                failed[0] += 1
t0 = time.monotonic()
ts = [threading.Thread(target=work) for _ in range(workers)]
[t.start() for t in ts]; [t.join() for t in ts]
dt = time.monotonic() - t0
print(f"loaded {total:,} records in {dt:.1f} s ({total / dt:,.0f} records/s); {failed[0]} batches failed; "
      f"answers retried: {errors}", file=sys.stderr)
if failed[0]:
    sys.exit(1)
PY

height=$(curl -fsS -H "Authorization: Bearer $admin" "http://$leader/v1/chain" | python3 -c 'import json,sys; print(json.load(sys.stdin)["height"])')
bytes=$(du -sb "$data/n1" | cut -f1)
"$bin" serve --cluster "$f4" --node-id 4 --data-dir "$data/n4" --rate-limit-per-sec 0 2>>"$data/cluster.log" &
pids+=($!)
wait_up "http://${http[4]}" "$data/cluster.log"
t0=$(date +%s.%N)
# It returns once the learner caught up, or after its 120 s limit (the learner goes on
# catching up): the figures below come from the new node itself.
"$bin" cluster add-learner --url "http://$leader" --data-dir "$data/n1" --id 4 \
  --raft "${raft[4]}" --http "${http[4]}" >"$data/add-learner.json" || true
python3 - "$admin" "${http[4]}" "$height" "$records" "$bytes" "$t0" <<'PY'
import json, sys, time, urllib.request
admin, at = sys.argv[1], sys.argv[2]
height, records, size, t0 = int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), float(sys.argv[6])
def get(path):
    req = urllib.request.Request(f"http://{at}{path}", headers={"Authorization": f"Bearer {admin}"})
    return json.load(urllib.request.urlopen(req, timeout=10))
ledger_at = views_at = None
deadline = time.time() + 1800
while time.time() < deadline and views_at is None:
    try:
        chain = get("/v1/chain")
        if ledger_at is None and chain["height"] >= height:
            ledger_at = time.time()
        me = [n for n in get("/v1/cluster")["nodes"] if n["id"] == 4][0]
        if ledger_at is not None and me.get("applied_height", 0) >= height:
            views_at = time.time()
    except Exception:
        pass
    time.sleep(0.2)
if views_at is None:
    sys.exit("the new node did not catch up in 30 min")
print(f"a new node joined a cluster of {records:,} records ({height:,} blocks, a node's data dir "
      f"{size / 2**20:,.0f} MiB): its ledger at the height {ledger_at - t0:.1f} s after the add, "
      f"its views {views_at - t0:.1f} s after")
PY
