#!/usr/bin/env bash
# `bench/soak.sh [--minutes N]` (default 30): medledger under a steady mixed load for N
# minutes, at half the maximum measured at the start of the same run.
#
#   1. the maximum: the peers' mixed run (80% timeline pages of 50, 20% durable
#      submissions, bench/http/mixed.lua) over 64 keep-alive connections for 20 s;
#   2. the soak: the same mix at half that rate (each connection pauses SOAK_DELAY_MS
#      before each request), one wrk run per minute so every minute reports its own
#      requests/s, p50/p99/p99.9 and errors, with the server's RSS at its end and what
#      holds memory (the views' block cache, memtables and table readers, the key log's
#      index: from /metrics);
#   3. the verdict: RSS growth from the end of the warm-up (the first fifth of the
#      minutes, at least one) to the end, the spread of the per-minute p99s, the errors
#      (non-2xx answers and socket errors) and the server log's ERROR lines.
#
# Prints one SOAKJSON line per minute and a Markdown table for docs/RELIABILITY.md.
# Exits non-zero if a minute had an error, the log an ERROR line, or RSS grew 10% or
# more after the warm-up. The server binds 127.0.0.1 only, its data is in a temp dir, and
# it is stopped (SIGTERM) when the script exits, also on failure.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
minutes=30
if [ "${1:-}" = "--minutes" ]; then
  minutes=${2:?--minutes needs a number}
fi
[[ "$minutes" =~ ^[1-9][0-9]*$ ]] && [ "$minutes" -le 1440 ] || { echo "bench/soak.sh: --minutes takes 1 to 1440" >&2; exit 2; }

. "$root/scripts/lib/packages.sh"
# shellcheck disable=SC2046
apt_install bench/soak.sh $(missing_packages wrk curl)
command -v wrk >/dev/null || { echo "bench/soak.sh: wrk missing after install" >&2; exit 1; }
target=${CARGO_TARGET_DIR:-$root/target}
. "$here/lib/servers.sh"
bench_data soak

(cd "$root" && cargo build --release --locked -p medledger-bench-peers --bin peers-bench >&2)
"$target/release/peers-bench" --body-bytes 1024 --requests-out "$data/requests"
export REQUESTS_DIR=$data/requests SCRIPTS=$here/http

port=$(free_port)
url="http://127.0.0.1:$port"
"$bin" serve --data-dir "$data/server" --listen "127.0.0.1:$port" --rate-limit-per-sec 0 2>>"$data/serve.log" &
pid=$!
pids+=("$pid")
wait_up "$url" "$data/serve.log"
admin=$("$bin" token --data-dir "$data/server" --role admin --sub admin-1 | tail -1)
rss_bytes() { awk '/^VmRSS:/ { print $2 * 1024 }' "/proc/$pid/status"; }
conns=64

wrk_json() { # seconds, then env assignments for the script
  local secs=$1 out json
  shift
  out=$(env "$@" TOKEN="$admin" wrk -t2 -c$conns -d"${secs}s" --timeout 10s -s "$here/http/mixed.lua" "$url" 2>&1)
  json=$(printf '%s\n' "$out" | sed -n 's/^WRKJSON //p')
  [ -n "$json" ] || { echo "bench/soak.sh: wrk failed: $out" >&2; exit 1; }
  printf '%s' "$json"
}

max=$(wrk_json 20 SOAK_DELAY_MS=)
max_rps=$(python3 -c "import json,sys; print(round(json.loads(sys.argv[1])['rps']))" "$max")
# Each connection: one request, then the pause; 64 connections at half the maximum.
delay_ms=$(python3 -c "print(max(1, round($conns * 1000 / ($max_rps / 2))))")
echo "SOAKJSON {\"phase\":\"maximum\",\"rps\":$max_rps,\"target_rps\":$((max_rps / 2)),\"delay_ms\":$delay_ms}"

lines=()
for m in $(seq 1 "$minutes"); do
  json=$(wrk_json 60 SOAK_DELAY_MS="$delay_ms")
  errors=$(grep -c 'ERROR' "$data/serve.log" || true)
  # What holds the memory: the views' block cache, memtables and table readers, and the
  # key log's index (from /metrics).
  held=$(curl -fsS "$url/metrics" | awk '
    /^medledger_views_memory_bytes\{kind="block_cache"\}/ { c = $2 }
    /^medledger_views_memory_bytes\{kind="memtables"\}/ { t = $2 }
    /^medledger_views_memory_bytes\{kind="table_readers"\}/ { r = $2 }
    /^medledger_ledger_index_memory_bytes/ { i += $2 }
    /^medledger_search_memory_bytes/ { s += $2 }
    $1 == "medledger_keys_indexed" { k = $2 }
    /^medledger_heap_bytes\{kind="mimalloc_committed"\}/ { mi = $2 }
    /^medledger_heap_bytes\{kind="malloc_in_use"\}/ { mu = $2 }
    /^medledger_heap_bytes\{kind="malloc_free_held"\}/ { mf = $2 }
    END { printf "\"block_cache_bytes\":%.0f,\"memtable_bytes\":%.0f,\"table_reader_bytes\":%.0f,\"ledger_index_bytes\":%.0f,\"keys_indexed\":%.0f,\"search_index_bytes\":%.0f,\"mimalloc_bytes\":%.0f,\"malloc_in_use_bytes\":%.0f,\"malloc_free_bytes\":%.0f", c, t, r, i, k, s, mi, mu, mf }')
  line="{\"minute\":$m,\"rss_bytes\":$(rss_bytes),$held,\"log_errors\":$errors,$(printf '%s' "$json" | cut -c2-)"
  echo "SOAKJSON $line"
  lines+=("$line")
done
committed=$(curl -fsS "$url/metrics" | awk '$1 == "medledger_committed_total" { print $2 }')
stop_all

printf '%s\n' "${lines[@]}" >"$data/minutes.ndjson"
python3 - "$minutes" "$max_rps" "$committed" "$data/minutes.ndjson" <<'PY'
import json, sys
minutes, max_rps, committed = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
rows = [json.loads(l) for l in open(sys.argv[4]) if l.strip()]
warm = max(1, minutes // 5)
print()
print("| minute | requests/s | p50 ms | p99 ms | p99.9 ms | errors | RSS MiB | views: block cache MiB | memtables MiB | table readers MiB | ledger index MiB | keys indexed | search index MiB | mimalloc MiB | malloc in use MiB | malloc free held MiB |")
print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
errors = 0
for r in rows:
    e = r["errors_status"] + r["errors_connect"] + r["errors_read"] + r["errors_write"] + r["errors_timeout"]
    errors += e
    mib = lambda k: f"{r[k] / 2**20:,.0f}"
    print(f"| {r['minute']} | {r['rps']:,.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['p999_ms']:.2f} | {e} | {mib('rss_bytes')} "
          f"| {mib('block_cache_bytes')} | {mib('memtable_bytes')} | {mib('table_reader_bytes')} | {mib('ledger_index_bytes')} | {r['keys_indexed']:,} "
          f"| {mib('search_index_bytes')} | {mib('mimalloc_bytes')} | {mib('malloc_in_use_bytes')} | {mib('malloc_free_bytes')} |")
base = rows[warm - 1]["rss_bytes"]
end = rows[-1]["rss_bytes"]
growth = (end - base) / base * 100
p99 = [r["p99_ms"] for r in rows[warm:]] or [rows[-1]["p99_ms"]]
log_errors = rows[-1]["log_errors"]
print()
print(f"{minutes} minutes at {sum(r['rps'] for r in rows) / len(rows):,.0f} requests/s "
      f"(maximum {max_rps:,}/s), {committed} records committed; RSS {base / 2**20:,.0f} MiB after "
      f"{warm} min of warm-up, {end / 2**20:,.0f} MiB at the end ({growth:+.1f}%); p99 after the "
      f"warm-up {min(p99):.2f}–{max(p99):.2f} ms; {errors} errors; {log_errors} ERROR lines in the log")
ok = errors == 0 and log_errors == 0 and growth < 10
print("SOAK " + ("PASS" if ok else "FAIL"))
sys.exit(0 if ok else 1)
PY
