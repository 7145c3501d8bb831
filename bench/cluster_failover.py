#!/usr/bin/env python3
"""Leader kills and partitions against a running three-node cluster (bench/cluster.sh).

Usage: cluster_failover.py STATE_JSON KILLS PARTITIONS [TRANSFERS]

STATE_JSON names the nodes (id, http, data dir, the command that starts each), the admin
and clinician tokens. For each kill: the leader is SIGKILLed while 4 writer threads create
records through the other nodes (following 307s); the time from the kill to the first
201 is the failover time; the node is restarted and must catch up. Partitions (network
namespaces, root) are done by tests/cluster_partition.rs; here PARTITIONS must be 0.
After the kills, TRANSFERS (0) times the leadership is handed to a random other node
(`POST /v1/cluster/leader`) under the same writers: the time until the target leads.
At the end every acknowledged record must be readable on every node, and every node must
have the same tip: a line of JSON with the counts, and a Markdown summary.

A history check runs beside: every 4th write amends the writer's own record (with its
expected version), and a reader reads acknowledged versions back from random live nodes
with `min_height` set to the write's height: a version older than one acknowledged at
or below that height is a regression (counted; must be 0).
"""
import atexit
import http.client
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time


def request(addr, method, path, token=None, body=None, timeout=10):
    host, port = addr.split(":")
    c = http.client.HTTPConnection(host, int(port), timeout=timeout)
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = "Bearer " + token
    try:
        c.request(method, path, body=body, headers=headers)
        r = c.getresponse()
        data = r.read()
        try:
            return r.status, json.loads(data or b"null")
        except ValueError:
            return r.status, None
    except OSError:
        return 0, None
    finally:
        c.close()


def main():
    state = json.load(open(sys.argv[1]))
    kills, partitions = int(sys.argv[2]), int(sys.argv[3])
    transfers = int(sys.argv[4]) if len(sys.argv) > 4 else 0
    if partitions:
        sys.exit("partitions: run tests/cluster_partition.rs (network namespaces)")
    nodes = {n["id"]: n for n in state["nodes"]}
    admin, dr = state["admin"], state["clinician"]
    procs = {n["id"]: subprocess.Popen(n["cmd"], stdout=subprocess.DEVNULL,
                                       stderr=open(n["log"], "ab")) for n in state["nodes"]}
    # Every node this script started stops with it, also when it fails.
    atexit.register(lambda: [p.kill() for p in procs.values() if p.poll() is None])

    def up(i):
        for _ in range(600):
            if request(nodes[i]["http"], "GET", "/healthz", timeout=1)[0] == 200:
                return
            time.sleep(0.05)
        sys.exit(f"node {i} did not start")

    def leader(among):
        deadline = time.time() + 30
        while time.time() < deadline:
            for i in among:
                s, b = request(nodes[i]["http"], "GET", "/v1/cluster", admin, timeout=1)
                if s == 200 and b.get("leader_id") in among:
                    return b["leader_id"]
            time.sleep(0.02)
        sys.exit(f"no leader among {among}")

    def tips(among):
        out = []
        for i in among:
            s, b = request(nodes[i]["http"], "GET", "/v1/chain", admin)
            out.append((b["height"], b["tip_hash"]) if s == 200 else None)
        return out

    def converge(among):
        deadline = time.time() + 120
        while time.time() < deadline:
            t = tips(among)
            if None not in t and all(x == t[0] for x in t):
                return t[0][0]
            if None not in t:
                heights = {}
                for h, tip in t:
                    if heights.setdefault(h, tip) != tip:
                        return -1  # two nodes, one height, different blocks
            time.sleep(0.05)
        sys.exit(f"no convergence: {tips(among)}")

    for i in nodes:
        up(i)
    acked, lock = [], threading.Lock()
    first_ok = [None]
    stop = threading.Event()
    counter = [0]

    versions = []  # (record id, version, height) of every acknowledged amendment
    own = {}  # writer -> (record id, its last acknowledged version)

    def post(at, path, body):
        for _ in range(3):
            s, b = request(at, "POST", path, dr, body, timeout=8)
            if s == 307:
                at = b["error"]["details"]["location"][len("http://"):].split("/")[0]
                continue
            return s, b
        return s, b

    def writer(w):
        while not stop.is_set():
            with lock:
                counter[0] += 1
                n = counter[0]
            targets = [i for i in nodes if procs[i].poll() is None]
            at = nodes[targets[n % len(targets)]]["http"]
            if n % 4 == 0 and w in own:
                rid, version = own[w]
                body = json.dumps({"reason": "amended", "metadata": {"n": n},
                                   "expected_version": version})
                s, b = post(at, f"/v1/records/{rid}/amendments", body)
                if s == 201:
                    with lock:
                        own[w] = (rid, b["version"])
                        versions.append((rid, b["version"], b["height"]))
                elif s == 409:
                    # An unknown outcome that did land: learn the version from a read.
                    s2, r = request(at, "GET", f"/v1/records/{rid}", dr)
                    if s2 == 200:
                        own[w] = (rid, r.get("version", version))
                    time.sleep(0.01)
                else:
                    time.sleep(0.01)
                continue
            rid = f"fo-{w}-{n}"
            body = json.dumps({"record_id": rid, "patient_id": f"p-{w}", "hospital_id": "h-1",
                               "record_type": "note", "metadata": {"t": "x"}})
            s, b = post(at, "/v1/records", body)
            if s == 201:
                with lock:
                    acked.append(rid)
                    own.setdefault(w, (rid, 1))
                    if first_ok[0] is None:
                        first_ok[0] = time.monotonic()
            else:
                time.sleep(0.01)

    regressions = [0]
    checked = [0]

    def reader():
        while not stop.is_set():
            with lock:
                sample = random.choice(versions) if versions else None
            live = [i for i in nodes if procs[i].poll() is None]
            if sample is None or not live:
                time.sleep(0.01)
                continue
            rid, version, height = sample
            s, r = request(nodes[random.choice(live)]["http"], "GET",
                           f"/v1/records/{rid}?min_height={height}", dr, timeout=8)
            if s == 200:
                checked[0] += 1
                if r.get("version", 0) < version:
                    regressions[0] += 1
            time.sleep(0.005)

    threads = [threading.Thread(target=writer, args=(w,), daemon=True) for w in range(4)]
    threads.append(threading.Thread(target=reader, daemon=True))
    for t in threads:
        t.start()
    failovers, divergent, catchups = [], 0, []
    for k in range(kills):
        time.sleep(0.5)
        old = leader(list(nodes))
        procs[old].send_signal(signal.SIGKILL)
        procs[old].wait()
        killed = time.monotonic()
        with lock:
            first_ok[0] = None
        rest = [i for i in nodes if i != old]
        while True:
            with lock:
                t = first_ok[0]
            if t is not None and t > killed:
                failovers.append(t - killed)
                break
            if time.monotonic() - killed > 30:
                sys.exit(f"kill {k}: no write acknowledged within 30 s")
            time.sleep(0.005)
        procs[old] = subprocess.Popen(nodes[old]["cmd"], stdout=subprocess.DEVNULL,
                                      stderr=open(nodes[old]["log"], "ab"))
        up(old)
        t0 = time.monotonic()
        # Caught up: the restarted node reaches the height the others had at its restart.
        target = max(h for h, _ in filter(None, tips(rest)))
        while True:
            h = tips([old])[0]
            if h and h[0] >= target:
                break
            time.sleep(0.02)
        catchups.append(time.monotonic() - t0)
        if converge(list(nodes)) < 0:
            divergent += 1
    handovers = []
    for k in range(transfers):
        time.sleep(0.5)
        old = leader(list(nodes))
        target = random.choice([i for i in nodes if i != old])
        t0 = time.monotonic()
        s, b = request(nodes[old]["http"], "POST", "/v1/cluster/leader", admin,
                       json.dumps({"id": target}), timeout=15)
        if s != 200 or b.get("leader_id") != target:
            sys.exit(f"transfer {k} from {old} to {target}: {s} {b}")
        handovers.append(time.monotonic() - t0)
        if converge(list(nodes)) < 0:
            divergent += 1
    stop.set()
    for t in threads:
        t.join()
    height = converge(list(nodes))
    if height < 0:
        divergent += 1
    lost = 0
    for i in nodes:
        for rid in acked:
            s, _ = request(nodes[i]["http"], "GET", f"/v1/records/{rid}?min_height={height}", dr)
            if s != 200:
                lost += 1
    # Every node ends with each amended record at least at its last acknowledged version.
    for rid, version, _ in versions:
        for i in nodes:
            s, r = request(nodes[i]["http"], "GET", f"/v1/records/{rid}?min_height={height}", dr)
            if s != 200 or r.get("version", 0) < version:
                regressions[0] += 1
    for p in procs.values():
        p.send_signal(signal.SIGTERM)
    for p in procs.values():
        p.wait()
    f, h = sorted(failovers), sorted(handovers)
    pct = lambda q, f=f: f[min(len(f) - 1, int(q * len(f)))] * 1000 if f else 0
    result = {"kills": kills, "acked": len(acked), "lost": lost, "divergent": divergent,
              "amendments": len(versions), "version_reads": checked[0],
              "version_regressions": regressions[0],
              "failover_p50_ms": round(pct(0.5), 1), "failover_p99_ms": round(pct(0.99), 1),
              "failover_max_ms": round(max(f) * 1000, 1) if f else 0,
              "transfers": transfers, "transfer_p50_ms": round(pct(0.5, h), 1),
              "transfer_max_ms": round(max(h) * 1000, 1) if h else 0,
              "catchup_p50_ms": round(sorted(catchups)[len(catchups) // 2] * 1000, 1) if catchups else 0,
              "height": height}
    print("FAILOVERJSON " + json.dumps(result))
    sys.exit(1 if lost or divergent or regressions[0] else 0)


if __name__ == "__main__":
    main()
