#!/usr/bin/env bash
# `bench/payload-http.sh [ROUNDS] [SECONDS]`: what a payload costs a record over HTTP
# (issue 23), measured with wrk on this machine in one run.
#
#   1. the disk's durable sequential MiB/s (dd of 512 MiB ending in one fdatasync), in the
#      server's data dir's file system;
#   2. ROUNDS (2) alternations of: ~1 KiB records without a payload, then the same records
#      with a ~100-byte inline FHIR payload; 256 keep-alive connections, SECONDS (10) each;
#   3. records with a 64 KiB multipart payload (32 connections) and a 1 MiB one
#      (8 connections): payload MiB/s against the disk's.
#
# One server on its defaults except the rate limit (off), release build, data in a temp
# dir, bound to 127.0.0.1 and stopped (SIGTERM) when the script exits, also on failure.
# Prints one WRKJSON line per run and a Markdown table. MEDLEDGER_BIN picks the binary.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
rounds=${1:-2} secs=${2:-10}
. "$root/scripts/lib/packages.sh"
# shellcheck disable=SC2046
apt_install bench/payload-http.sh $(missing_packages wrk)
command -v wrk >/dev/null || { echo "bench/payload-http.sh: wrk missing after install" >&2; exit 1; }
bin=${MEDLEDGER_BIN:-}
if [ -z "$bin" ]; then
  (cd "$root" && cargo build --release --locked -p medledger --bin medledger >&2)
  bin="${CARGO_TARGET_DIR:-$root/target}/release/medledger"
fi

data=$(mktemp -d -t medledger-bench-payload.XXXXXX)
pid=
stop() {
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then kill -TERM "$pid"; wait "$pid" || true; fi
  pid=
}
trap 'stop; rm -rf "$data"' EXIT

disk_mib_s=$(dd if=/dev/zero of="$data/dd.bin" bs=1M count=512 conv=fdatasync 2>&1 \
  | awk '/copied/ { for (i = 1; i <= NF; i++) if ($i == "s,") { print 512 / $(i - 1); exit } }')
rm -f "$data/dd.bin"
echo "disk: ${disk_mib_s} MiB/s durable sequential (dd, 512 MiB, one fdatasync)"

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
url="http://127.0.0.1:$port"
"$bin" serve --data-dir "$data/server" --listen "127.0.0.1:$port" --rate-limit-per-sec 0 2>>"$data/serve.log" &
pid=$!
for _ in $(seq 1 200); do curl -fsS "$url/healthz" >/dev/null 2>&1 && break; sleep 0.05; done
curl -fsS "$url/healthz" >/dev/null || { echo "the server did not start:" >&2; cat "$data/serve.log" >&2; exit 1; }
admin=$("$bin" token --data-dir "$data/server" --role admin --sub admin-1 | tail -1)

rows=()
run() { # kind, connections, payload bytes
  local out json
  out=$(TOKEN=$admin SCRIPTS=$here/http KIND=$1 PAYLOAD_BYTES=${3:-0} \
    wrk -t2 -c"$2" -d"${secs}s" --timeout 10s -s "$here/http/payload.lua" "$url" 2>&1)
  json=$(printf '%s\n' "$out" | sed -n 's/^WRKJSON //p')
  [ -n "$json" ] || { echo "wrk failed: $out" >&2; exit 1; }
  echo "WRKJSON $json"
  rows+=("$json")
}
for _ in $(seq 1 "$rounds"); do
  run meta 256
  run inline 256
done
run multipart 32 65536
run multipart 8 1048576

python3 - "$disk_mib_s" "${rows[@]}" <<'PY'
import json, sys
disk = float(sys.argv[1])
rows = [json.loads(r) for r in sys.argv[2:]]
meta = [r for r in rows if r["kind"] == "meta"]
inline = [r for r in rows if r["kind"] == "inline"]
print("\n| body | connections | records/s | p50 ms | p99 ms | non-2xx | payload MiB/s | of the disk's |")
print("|---|---:|---:|---:|---:|---:|---:|---:|")
for r in rows:
    conns = 256 if r["kind"] != "multipart" else (32 if r["payload_bytes"] == 65536 else 8)
    mib = r["rps"] * r["payload_bytes"] / 2**20 if r["kind"] == "multipart" else None
    name = {"meta": "metadata only", "inline": "+ ~100-byte inline payload"}.get(r["kind"], f"+ {r['payload_bytes'] // 1024} KiB multipart payload")
    print(f"| {name} | {conns} | {r['rps']:,.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['errors_status']} | "
          + (f"{mib:,.1f} | {mib / disk:.0%} |" if mib is not None else " | |"))
m = sum(r["rps"] for r in meta) / len(meta)
i = sum(r["rps"] for r in inline) / len(inline)
print(f"\ninline payload / metadata only: {i / m:.2f} (means of {len(meta)} runs each); disk {disk:.0f} MiB/s")
PY
