#!/usr/bin/env bash
# `scripts/fuzz.sh [--seconds N] [TARGET...]`: coverage-guided fuzzing (libFuzzer, through
# the libfuzzer-sys crate, cargo-fuzz's layout under fuzz/) of the decoders that read
# bytes from a disk, a peer or a user: `block` (block, header and frame, and the offline
# verifier's header), `envelope`, `dag_pb` (nodes and CIDs from an IPFS node),
# `view_values` (the views' rows) and `proof_document` (what `medledger proof` checks).
# Each target runs N seconds (default 60) from a seed corpus made from `medledger
# fixtures` (fuzz/src/bin/corpus.rs), with AddressSanitizer, debug assertions and
# overflow checks; a crash, a panic or a failed assertion stops it and leaves the input
# under fuzz/artifacts/TARGET/. Prints one FUZZJSON line per target (runs, coverage,
# corpus size) and exits non-zero if any target failed.
#
# Not part of CI: the sanitizer flags need a nightly compiler, which RUSTC_BOOTSTRAP=1
# stands in for on this stable toolchain, and the instrumented build takes minutes.
# RocksDB (the views crate's) is linked from the main release build's archive when there
# is one, so it is not compiled a second time.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
seconds=60
if [ "${1:-}" = "--seconds" ]; then
  seconds=${2:?--seconds needs a number}
  shift 2
fi
[[ "$seconds" =~ ^[1-9][0-9]*$ ]] && [ "$seconds" -le 86400 ] || { echo "scripts/fuzz.sh: --seconds takes 1 to 86400" >&2; exit 2; }
all=(block envelope dag_pb view_values proof_document)
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=("${all[@]}")
for t in "${targets[@]}"; do
  [[ " ${all[*]} " == *" $t "* ]] || { echo "scripts/fuzz.sh: no target $t (targets: ${all[*]})" >&2; exit 2; }
done

"$root/scripts/setup.sh"
target=${CARGO_TARGET_DIR:-$root/target}
# The main release build: the fixtures' generator, and its RocksDB archive.
(cd "$root" && cargo build --release --locked -p medledger --bin medledger >&2)
archive=$(ls -t "$target"/release/build/librocksdb-sys-*/out/librocksdb.a 2>/dev/null | head -1 || true)
if [ -n "$archive" ]; then
  export ROCKSDB_LIB_DIR=${archive%/*} ROCKSDB_STATIC=1
fi
fuzz_target_dir=$target/fuzz
host=$(rustc -vV | sed -n 's/^host: //p')

work=$(mktemp -d -t medledger-fuzz.XXXXXX)
trap 'rm -rf "$work"' EXIT
"$target/release/medledger" fixtures --events 3000 --seed 7 >"$work/fixtures.ndjson"
# The corpus writer, uninstrumented (it is not a fuzz target).
(cd "$root/fuzz" && CARGO_TARGET_DIR=$fuzz_target_dir cargo run --release --locked --bin corpus -- \
  "$work/fixtures.ndjson" "$work/corpus" >&2)

# cargo-fuzz's flags: libFuzzer's coverage instrumentation, ASan, and the checks a debug
# build has. `--target` keeps them off build scripts and proc macros.
export RUSTC_BOOTSTRAP=1
export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing -Zsanitizer=address \
-Cdebug-assertions -Coverflow-checks"
bins=()
for t in "${targets[@]}"; do bins+=(--bin "$t"); done
(cd "$root/fuzz" && CARGO_TARGET_DIR=$fuzz_target_dir cargo build --release --locked \
  --target "$host" "${bins[@]}" >&2)

failed=0
for t in "${targets[@]}"; do
  mkdir -p "$root/fuzz/artifacts/$t"
  log=$work/$t.log
  rc=0
  # -rss_limit_mb: ASan's shadow memory counts; -max_len: the seeds' largest is 16 KiB.
  "$fuzz_target_dir/$host/release/$t" "$work/corpus/$t" \
    -max_total_time="$seconds" -max_len=20000 -rss_limit_mb=4096 -print_final_stats=1 \
    -artifact_prefix="$root/fuzz/artifacts/$t/" >"$log" 2>&1 || rc=$?
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)
  ft=$(grep -o 'ft: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)
  corpus=$(ls "$work/corpus/$t" | wc -l)
  echo "FUZZJSON {\"target\":\"$t\",\"seconds\":$seconds,\"runs\":${runs:-0},\"coverage\":${cov:-0},\"features\":${ft:-0},\"corpus\":$corpus,\"exit\":$rc}"
  if [ "$rc" -ne 0 ]; then
    failed=1
    echo "scripts/fuzz.sh: $t failed (exit $rc); its log:" >&2
    tail -40 "$log" >&2
  fi
done
exit $failed
