#!/usr/bin/env bash
# `bench/projector-ab.sh OLD_BIN NEW_BIN DATA_DIR [RUNS]`: the live projector of two
# medledger binaries catching up with the same ledger from empty views, alternately,
# RUNS times each (3 by default).
#
# The live projector applies one block per batch, reading what each event needs from
# the views (the rebuild projects partitions instead: bench/rebuild-ab.sh). Each run
# copies DATA_DIR's ledger (blocks/ and index/, e.g. the one `medledger bench rebuild
# --data-dir D --events N --backends rocksdb` leaves in D/bench-rebuild) into a scratch
# dir without views, starts `BIN serve` on 127.0.0.1 on its defaults (empty views are at
# height 0: the live projector applies every block, no rebuild), and times until
# /metrics shows a projector lag of 0 blocks. Prints one line per run, then
# the means and the ratio new/old. The server is stopped and the scratch dir removed.
set -euo pipefail
if [ $# -lt 3 ]; then
  echo "usage: bench/projector-ab.sh OLD_BIN NEW_BIN DATA_DIR [RUNS]" >&2
  exit 2
fi
old=$1 new=$2 data=$3 runs=${4:-3}
[ -d "$data/blocks" ] || { echo "bench/projector-ab.sh: $data holds no ledger (no blocks/)" >&2; exit 1; }
scratch=$(mktemp -d -t medledger-projector-ab.XXXXXX)
pid=
cleanup() {
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then kill -TERM "$pid"; wait "$pid" || true; fi
  rm -rf "$scratch"
}
trap cleanup EXIT
blocks=$(ls "$data/blocks" | wc -l)
[ "$blocks" -gt 0 ] || { echo "bench/projector-ab.sh: $data/blocks is empty" >&2; exit 1; }

run() { # bin → prints seconds
  local bin=$1 dir="$scratch/data" port url t0 t1 lag
  rm -rf "$dir"
  mkdir -p "$dir"
  cp -r "$data/blocks" "$dir/blocks"
  [ -d "$data/index" ] && cp -r "$data/index" "$dir/index"
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  url="http://127.0.0.1:$port"
  t0=$(date +%s.%N)
  "$bin" serve --data-dir "$dir" --listen "127.0.0.1:$port" --rate-limit-per-sec 0 2>"$scratch/serve.log" &
  pid=$!
  local deadline=$((SECONDS + 600))
  while :; do
    lag=$(curl -fsS "$url/metrics" 2>/dev/null | awk '$1 == "medledger_projector_lag_blocks" { print $2 }') || true
    if [ "$lag" = 0 ]; then break; fi
    if [ $SECONDS -gt $deadline ] || grep -q "projector: invariant broken" "$scratch/serve.log"; then
      echo "bench/projector-ab.sh: $bin did not catch up (lag $lag):" >&2; tail -3 "$scratch/serve.log" >&2; exit 1
    fi
    kill -0 "$pid" 2>/dev/null || { echo "bench/projector-ab.sh: $bin exited:" >&2; tail -5 "$scratch/serve.log" >&2; exit 1; }
    sleep 0.05
  done
  t1=$(date +%s.%N)
  kill -TERM "$pid"; wait "$pid" || true; pid=
  python3 -c "print(round($t1 - $t0, 3))"
}

declare -a old_s new_s
run "$old" >/dev/null  # warm the page cache and the binaries
run "$new" >/dev/null
for i in $(seq 1 "$runs"); do
  s=$(run "$old"); old_s+=("$s"); echo "old run $i: $s s"
  s=$(run "$new"); new_s+=("$s"); echo "new run $i: $s s"
done
python3 - "$blocks" "${old_s[*]}" "${new_s[*]}" <<'PY'
import sys
old = [float(x) for x in sys.argv[2].split()]
new = [float(x) for x in sys.argv[3].split()]
mo, mn = sum(old) / len(old), sum(new) / len(new)
print(f"old mean: {mo:.2f} s, new mean: {mn:.2f} s to project every block from empty views "
      f"(start-up included); new/old time {mn / mo:.3f}")
PY
