#!/usr/bin/env bash
# `bench/rebuild-ab.sh OLD_BIN NEW_BIN DATA_DIR [RUNS]`: two medledger binaries rebuilding
# the same ledger's views, alternately, RUNS times each (3 by default).
#
# The figures in the rebuild commits' messages and in docs/BENCHMARKS.md come from this
# script. A rebuild's throughput on this 2-core VM drifts by 10-20% over minutes, so one
# run of each binary proves little; alternating them, the drift falls on both. CPU
# seconds (user + system, from /usr/bin/time) are the steadier figure: a rebuild keeps
# both cores busy, so less CPU is what makes it faster. Each binary first runs once
# unmeasured (the first run after a build reads a ~450 MB binary from disk).
#
# DATA_DIR holds a ledger, e.g. the one `medledger bench rebuild --data-dir D --events N`
# leaves in D/bench-rebuild. Each run is `BIN rebuild --data-dir DATA_DIR`, which
# replaces DATA_DIR's views: make both binaries agree on the views' layout. Prints one
# line per run, then the means and the ratios new/old.
set -euo pipefail
if [ $# -lt 3 ]; then
  echo "usage: bench/rebuild-ab.sh OLD_BIN NEW_BIN DATA_DIR [RUNS]" >&2
  exit 2
fi
old=$1 new=$2 data=$3 runs=${4:-3}
. "$(cd "$(dirname "$0")/.." && pwd)/scripts/lib/packages.sh"
# shellcheck disable=SC2046
apt_install bench/rebuild-ab.sh $(missing_packages time)
[ -x /usr/bin/time ] || { echo "bench/rebuild-ab.sh: /usr/bin/time missing after install" >&2; exit 1; }
for bin in "$old" "$new"; do
  [ -x "$bin" ] || { echo "bench/rebuild-ab.sh: $bin is not an executable" >&2; exit 1; }
done
[ -d "$data/blocks" ] || { echo "bench/rebuild-ab.sh: $data holds no ledger (no blocks/)" >&2; exit 1; }

# One rebuild: prints "events/s cpu_seconds peak_rss_mib".
run() {
  local out
  out=$(/usr/bin/time -f 'TIME %U %S %M' "$1" rebuild --data-dir "$data" 2>&1) || {
    echo "bench/rebuild-ab.sh: $1 rebuild failed:" >&2
    echo "$out" | tail -5 >&2
    exit 1
  }
  local evs
  evs=$(echo "$out" | grep -o '"events_per_sec":[0-9.]*' | tail -1 | cut -d: -f2)
  echo "$out" | awk -v evs="$evs" '/^TIME/ { printf "%.0f %.2f %.0f\n", evs, $2 + $3, $4 / 1024 }'
}

run "$old" >/dev/null
run "$new" >/dev/null
results=()
for i in $(seq "$runs"); do
  for side in old new; do
    bin=$old
    [ $side = new ] && bin=$new
    r=$(run "$bin")
    echo "$side $i $r" | awk '{ printf "%s run %s: %s events/s, %s s CPU, %s MiB peak RSS\n", $1, $2, $3, $4, $5 }'
    results+=("$side $r")
  done
done
printf '%s\n' "${results[@]}" | awk '
  { n[$1]++; e[$1] += $2; c[$1] += $3; m[$1] += $4 }
  END {
    for (s in n) printf "%s mean: %.0f events/s, %.2f s CPU, %.0f MiB peak RSS (%d runs)\n", s, e[s] / n[s], c[s] / n[s], m[s] / n[s], n[s]
    printf "new/old: events/s %.3f, CPU %.3f\n", (e["new"] / n["new"]) / (e["old"] / n["old"]), (c["new"] / n["new"]) / (c["old"] / n["old"])
  }'
