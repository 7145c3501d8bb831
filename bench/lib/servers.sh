# Shared by the bench scripts that start servers of their own (bench/cluster.sh,
# bench/cluster-join.sh, bench/soak.sh); source it after setting `root` (the repository).
#
# - `bin`: MEDLEDGER_BIN, or the release binary built here;
# - `data`: a temp dir named after the script (`bench_data NAME`);
# - `pids` and `stop_all`: every server started (`pids+=($!)`) is stopped with TERM when
#   the script exits, also on failure, and `data` is removed;
# - `free_port`: a free TCP port on 127.0.0.1;
# - `wait_up URL LOG`: waits (20 s at most) until URL/healthz answers, else prints LOG.

bin=${MEDLEDGER_BIN:-}
if [ -z "$bin" ]; then
  (cd "$root" && cargo build --release --locked -p medledger --bin medledger >&2)
  bin="${CARGO_TARGET_DIR:-$root/target}/release/medledger"
fi

pids=()
stop_all() {
  for p in "${pids[@]}"; do
    if kill -0 "$p" 2>/dev/null; then kill -TERM "$p"; wait "$p" || true; fi
  done
  pids=()
}

bench_data() { # NAME
  data=$(mktemp -d -t "medledger-bench-$1.XXXXXX")
  trap 'stop_all; rm -rf "$data"' EXIT
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

wait_up() { # url log
  for _ in $(seq 1 400); do curl -fsS "$1/healthz" >/dev/null 2>&1 && return 0; sleep 0.05; done
  echo "a server did not start:" >&2; cat "$2" >&2; exit 1
}
