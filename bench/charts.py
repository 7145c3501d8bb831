#!/usr/bin/env python3
"""PNG charts of one bench/compare.sh run: ingest throughput and p99, timeline pages.

    bench/charts.py RUN_DIR OUT_DIR

Reads the same files as bench/report.py (nothing typed in by hand) and writes
OUT_DIR/ingest.png and OUT_DIR/timeline.png. Needs matplotlib (compare.sh installs it).
"""
import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

run, out = Path(sys.argv[1]), Path(sys.argv[2])
out.mkdir(parents=True, exist_ok=True)
peers = [json.loads(l) for l in (run / "peers.jsonl").read_text().splitlines() if l.strip()]
rows = [p for p in peers if "workload" in p]
embedded = json.loads((run / "embedded.json").read_text())
http = {j["run"]: j for j in (json.loads(l) for l in (run / "http.jsonl").read_text().splitlines() if l.strip())}
body = int((run / "body_bytes").read_text())

names, rates, p99s, colors = [], [], [], []
names.append("medledger\nembedded"); rates.append(embedded["events_per_sec"]); p99s.append(embedded["p99_ms"]); colors.append("#0b5cad")
if "submit-eager" in http:
    h = http["submit-eager"]
    names.append("medledger\nHTTP"); rates.append(h["rps"]); p99s.append(h["p99_ms"]); colors.append("#3d8ad8")
for r in rows:
    if r["workload"] == "ingest" and r["batch"] == 1 and r["body_bytes"] == body:
        label = r["peer"].replace("-", "\n")
        if not r["acknowledged_after_disk"]:
            label += "\n(NOT durable)"
        names.append(label); rates.append(r["records_per_second"]); p99s.append(r["latency"]["p99_us"] / 1000)
        colors.append("#999999" if not r["acknowledged_after_disk"] else "#d9822b")

fig, (a, b) = plt.subplots(1, 2, figsize=(13, 4.8))
a.bar(names, rates, color=colors)
a.set_yscale("log")
a.set_ylabel("durable records/s (log scale)")
a.set_title(f"Ingest, one {body} B record per call")
b.bar(names, p99s, color=colors)
b.set_yscale("log")
b.set_ylabel("p99 latency, ms (log scale)")
b.set_title("p99 latency of the same runs")
for ax in (a, b):
    ax.tick_params(axis="x", labelsize=8)
fig.suptitle("medledger beside its peers, one run on the same 2 cores (bench/compare.sh)")
fig.tight_layout()
fig.savefig(out / "ingest.png", dpi=110)

names, pages, colors = [], [], []
if "timeline-pages" in http:
    names.append("medledger\nHTTP"); pages.append(http["timeline-pages"]["rps"]); colors.append("#3d8ad8")
for r in rows:
    if r["workload"] == "timeline":
        label = r["peer"].replace("-", "\n") + ("" if r["acknowledged_after_disk"] else "\n(NOT durable)")
        names.append(label); pages.append(r["operations_per_second"])
        colors.append("#999999" if not r["acknowledged_after_disk"] else "#d9822b")
fig, ax = plt.subplots(figsize=(9, 4.5))
ax.bar(names, pages, color=colors)
ax.set_ylabel("timeline pages/s (50 records)")
ax.set_title("Patient timeline pages, same run")
ax.tick_params(axis="x", labelsize=8)
fig.tight_layout()
fig.savefig(out / "timeline.png", dpi=110)
print(f"charts in {out}")
