#!/usr/bin/env bash
# `bench/slow-fsync.sh BIN DATA_DIR [PAYLOADS] [CALLERS]`: how the payload store's group
# commit shares fdatasyncs as a disk's flush gets slower. Runs `medledger bench payloads`
# (4 KiB payloads, CALLERS concurrent callers, 64 by default) on this disk as it is, then
# with every fdatasync/fsync taking 0.5, 1 and 2 ms more (bench/lib/slow_fsync.c, loaded
# with LD_PRELOAD into the bench process only), and prints payloads/s and fsyncs per
# payload for each. A group is what waits while a sync runs, so fsyncs per payload is
# about logs ÷ (payloads/s × sync time): docs/BENCHMARKS.md, issue 23.
set -euo pipefail
if [ $# -lt 2 ]; then
  echo "usage: bench/slow-fsync.sh BIN DATA_DIR [PAYLOADS] [CALLERS]" >&2
  exit 2
fi
bin=$1 data=$2 payloads=${3:-30000} callers=${4:-64}
here=$(cd "$(dirname "$0")" && pwd)
shim=$(mktemp -d -t medledger-slow-fsync.XXXXXX)
trap 'rm -rf "$shim"' EXIT
cc -O2 -shared -fPIC -o "$shim/slow_fsync.so" "$here/lib/slow_fsync.c" -ldl
mkdir -p "$data"
printf '| extra per fsync | payloads/s | fsyncs per payload | p50 ms | p99 ms |\n|---:|---:|---:|---:|---:|\n'
for extra_us in 0 500 1000 2000; do
  out=$(SLOW_FSYNC_US=$extra_us LD_PRELOAD="$shim/slow_fsync.so" "$bin" bench payloads \
    --data-dir "$data" --payloads "$payloads" --payload-bytes 4096 --callers "$callers" | tail -1)
  python3 - "$extra_us" "$out" <<'PY'
import json, sys
d = json.loads(sys.argv[2])
print(f"| {int(sys.argv[1]) / 1000:g} ms | {d['payloads_per_sec']:,.0f} | {d['fsyncs_per_payload']:.3f} | {d['p50_ms']} | {d['p99_ms']} |")
PY
done
rm -rf "$data/bench-payloads"
