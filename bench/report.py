#!/usr/bin/env python3
"""Turns one bench/compare.sh run (its JSON lines) into a Markdown report with ratios.

    bench/report.py RUN_DIR > report.md

RUN_DIR holds peers.jsonl (peers-bench), embedded.json (medledger bench ingest) and
http.jsonl (bench/http.sh). Every figure printed comes from those files; nothing is
typed in by hand.
"""
import json
import sys
from pathlib import Path

run = Path(sys.argv[1])
peers = [json.loads(l) for l in (run / "peers.jsonl").read_text().splitlines() if l.strip()]
machine = next(p["machine"] for p in peers if "machine" in p)
params = next(p["parameters"] for p in peers if "parameters" in p)
rows = [p for p in peers if "workload" in p]
embedded = json.loads((run / "embedded.json").read_text())
http = {j["run"]: j for j in (json.loads(l) for l in (run / "http.jsonl").read_text().splitlines() if l.strip())}
body = int((run / "body_bytes").read_text())


def find(peer, workload, batch=None):
    for r in rows:
        if r["peer"] == peer and r["workload"] == workload and (batch is None or r["batch"] == batch) \
                and (workload != "ingest" or r["body_bytes"] == body):
            return r
    return None


def fmt(x, digits=0):
    return "—" if x is None else f"{x:,.{digits}f}"


print(f"Machine: {machine['cores']} cores ({machine.get('cpu_model', '?')}), "
      f"{machine['memory_bytes'] / 2**30:.0f} GiB, disk {machine['fdatasync_per_second']:,.0f} "
      f"fdatasync/s measured at the start, load average {machine.get('load_average_1m', '?')}. "
      "The load generators and every server share these cores.")
print()
print(f"Records: {body} B bodies, {params['records']:,} single-record writes with "
      f"{params['clients']} clients; {params['batched_records']:,} records in batches of "
      f"{params['batch']}; timeline pages of {params['page_limit']}.")
print()
print("| system | durability | ingest, 1 record per call: rec/s (p99 ms) | ingest, batched: rec/s (p99 ms) | timeline pages/s (p99 ms) |")
print("|---|---|---:|---:|---:|")
ml_ingest = embedded["events_per_sec"]
print(f"| medledger embedded (library, {embedded['submitters']} submitters) | fdatasync per block, ack after | "
      f"{fmt(ml_ingest)} ({embedded['p99_ms']:.1f}) | (the cutter batches) | — |")
hs = http.get("submit-eager")
ht = http.get("timeline-pages")
# POST /v1/records/batch with the peers' batch size and clients, if the run has it.
hb = http.get(f"submit-batch-{params['batch']}")
hb_rps = hb and hb["rps"] * hb["records_per_request"]
conns = f"{hs['connections'] if hs else '?'} connections" + (f", batched {hb['connections']}" if hb else "")
print(f"| medledger over HTTP (wrk, {conns}) | fdatasync per block, ack after | "
      f"{fmt(hs and hs['rps'])} ({fmt(hs and hs['p99_ms'], 1)}) | "
      f"{fmt(hb_rps) + ' (' + fmt(hb['p99_ms'], 1) + ')' if hb else '—'} | "
      f"{fmt(ht and ht['rps'])} ({fmt(ht and ht['p99_ms'], 1)}) |")
peer_names = []
for r in rows:
    if r["peer"] not in peer_names:
        peer_names.append(r["peer"])
for name in peer_names:
    one, batched, tl = find(name, "ingest", 1), find(name, "ingest", params["batch"]), find(name, "timeline")
    durable = one["acknowledged_after_disk"] if one else True
    dur = (one or batched or tl)["durability"]
    label = "" if durable else " **(acknowledges before disk: not comparable)**"
    cell = lambda r, per="records_per_second": "—" if r is None else f"{r[per]:,.0f} ({r['latency']['p99_us'] / 1000:.1f})"
    print(f"| {name}{label} | {dur} | {cell(one)} | {cell(batched)} | {cell(tl, 'operations_per_second')} |")
print()
print("Ratios, medledger ÷ peer (durable peers only; > 1 means medledger is faster):")
print()
print("| peer | embedded ingest ÷ peer 1-per-call | HTTP ingest ÷ peer 1-per-call | HTTP batched ÷ peer batched | HTTP timeline ÷ peer timeline |")
print("|---|---:|---:|---:|---:|")
for name in peer_names:
    one, batched, tl = find(name, "ingest", 1), find(name, "ingest", params["batch"]), find(name, "timeline")
    if one and not one["acknowledged_after_disk"]:
        continue
    ratio = lambda a, r, per="records_per_second": "—" if (a is None or r is None or not r[per]) else f"{a / r[per]:.1f}×"
    print(f"| {name} | {ratio(ml_ingest, one)} | {ratio(hs and hs['rps'], one)} | {ratio(hb_rps, batched)} | "
          f"{ratio(ht and ht['rps'], tl, 'operations_per_second')} |")

# Second table: the mixed run, rebuild, and what each system spends per record.
print()
print("Mixed 80% reads / 20% writes, rebuild, and resources (server processes only; the "
      "load generators' CPU is not counted):")
print()
print("| system | mixed 80/20: operations/s (p99 ms) | rebuild or reindex: records/s | server CPU per record ingested, 1 per call | peak RSS | bytes on disk per record |")
print("|---|---:|---:|---:|---:|---:|")


def mib(b):
    return "—" if b is None else f"{b / 2**20:,.0f} MiB"


hm, hr, hd = http.get("mixed-80-20"), http.get("rebuild"), http.get("disk")
http_runs = [j for j in http.values() if "server_peak_rss_bytes" in j]
http_rss = max((j["server_peak_rss_bytes"] for j in http_runs), default=None)
print(f"| medledger embedded | — | (as over HTTP) | "
      f"{fmt(embedded['cpu_seconds'] / embedded['events'] * 1e6, 1)} µs² | "
      f"{mib(embedded.get('peak_rss_bytes'))} | {fmt(embedded.get('bytes_on_disk_per_record'))}³ |")
print(f"| medledger over HTTP | {fmt(hm and hm['rps'])} ({fmt(hm and hm['p99_ms'], 1)}) | "
      f"{fmt(hr and hr['events_per_sec'])} | "
      f"{fmt(hs and hs['server_cpu_seconds'] / hs['requests'] * 1e6, 1)} µs | {mib(http_rss)} | "
      f"{fmt(hd and hd['bytes_on_disk_per_record'])} |")
peer_extra = {}
for name in peer_names:
    one, mr, mw, ri = find(name, "ingest", 1), find(name, "mixed_read"), find(name, "mixed_write"), find(name, "reindex")
    rows_of = [r for r in rows if r["peer"] == name]
    rss = max((r["server_peak_memory_bytes"] or 0 for r in rows_of), default=0) or None
    mixed_ops = (mr["operations_per_second"] + mw["operations_per_second"]) if mr and mw else None
    mixed_p99 = max(mr["latency"]["p99_us"], mw["latency"]["p99_us"]) / 1000 if mr and mw else None
    per_record = next((r["bytes_on_disk_per_record"] for r in (ri, find(name, "ingest", params["batch"]))
                       if r and r.get("bytes_on_disk_per_record")), None)
    cpu = one["server_cpu_seconds"] / one["records"] * 1e6 if one and one.get("server_cpu_seconds") else None
    peer_extra[name] = (mixed_ops, ri and ri["records_per_second"])
    durable = one["acknowledged_after_disk"] if one else True
    label = "" if durable else " (not durable)"
    print(f"| {name}{label} | {fmt(mixed_ops)} ({fmt(mixed_p99, 1)}) | {fmt(ri and ri['records_per_second'])} | "
          f"{fmt(cpu, 1)} µs | {mib(rss)} | {fmt(per_record)} |")
print()
print("² the library's CPU during the timed ingest (the process's, generating the events "
      "excluded). ³ the ledger alone: `bench ingest` projects no views.")
print("The mixed run's p99 is over both kinds for medledger (wrk keeps one distribution) and "
      "the worse of reads and writes for the peers. medledger rebuilds every view from the "
      "ledger (`medledger rebuild`); the peers rebuild their indexes.")
print()
print("| peer | HTTP mixed ÷ peer mixed | rebuild ÷ peer reindex |")
print("|---|---:|---:|")
for name in peer_names:
    one = find(name, "ingest", 1)
    if one and not one["acknowledged_after_disk"]:
        continue
    mixed_ops, reindex = peer_extra[name]
    r = lambda a, b: "—" if not a or not b else f"{a / b:.1f}×"
    print(f"| {name} | {r(hm and hm['rps'], mixed_ops)} | {r(hr and hr['events_per_sec'], reindex)} |")

# Third table: every workload's latency distribution, from the same files.
print()
print("Latency of every workload (ms), as each load generator measured it:")
print()
print("| system | workload | operations/s | p50 | p99 | p99.9 |")
print("|---|---|---:|---:|---:|---:|")
print(f"| medledger embedded | ingest, 1 per call | {fmt(embedded['events_per_sec'])} | "
      f"{embedded['p50_ms']:.2f} | {embedded['p99_ms']:.2f} | {embedded['p999_ms']:.2f} |")
for name in ("submit-eager", "submit-batch-4", f"submit-batch-{params['batch']}", "timeline-pages",
             "timeline-pages-304", "patient-summary", "patient-summary-low-load", "mixed-80-20", "low-load-eager", "low-load-strict"):
    j = http.get(name)
    if j and not (name == "submit-batch-4" and params["batch"] == 4):
        per = j.get("records_per_request", 1)
        label = f"{name} ({j['connections']} conn.{', records/s' if per > 1 else ''})"
        print(f"| medledger over HTTP | {label} | {fmt(j['rps'] * per)} | "
              f"{j['p50_ms']:.2f} | {j['p99_ms']:.2f} | {j['p999_ms']:.2f} |")
for r in rows:
    if r["workload"] == "reindex" or (r["workload"] == "ingest" and r["body_bytes"] != body):
        continue
    lat = r["latency"]
    label = r["workload"] + (f", {r['batch']} per call" if r["workload"] == "ingest" else "")
    print(f"| {r['peer']} | {label} | {fmt(r['operations_per_second'])} | {lat['p50_us'] / 1000:.2f} | "
          f"{lat['p99_us'] / 1000:.2f} | {lat['p999_us'] / 1000:.2f} |")
h304 = http.get("timeline-pages-304")
if ht and h304:
    print()
    print(f"Repeated reads of unchanged timelines with If-None-Match: {fmt(h304['rps'])} pages/s, "
          f"{h304['rps'] / ht['rps']:.1f}× the uncached page rate in the same run "
          f"({h304.get('not_modified', 0):,} of {h304['requests']:,} answers 304).")
hsum = http.get("patient-summary")
if hsum:
    print()
    line = (f"Patient summaries (`GET /v1/patients/{{id}}/summary`: counts by type and status, the "
            f"newest record of each type, 20 active records; a read on the ledger): "
            f"{fmt(hsum['rps'])}/s, p50 {hsum['p50_ms']:.2f} ms, p99 {hsum['p99_ms']:.2f} ms, "
            f"p99.9 {hsum['p999_ms']:.2f} ms")
    low = http.get("patient-summary-low-load")
    if low:
        line += f" (one connection: p50 {low['p50_ms']:.2f} ms, p99 {low['p99_ms']:.2f} ms)"
    peers_sum = [(n, find(n, "summary")) for n in peer_names if find(n, "summary")]
    for n, r in peers_sum:
        line += (f"; {n} {fmt(r['operations_per_second'])}/s, p99 {r['latency']['p99_us'] / 1000:.2f} ms "
                 f"({hsum['rps'] / r['operations_per_second']:.1f}×)")
    print(line + ".")
