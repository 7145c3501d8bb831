#!/usr/bin/env bash
# `bench/audit-ab.sh BIN DATA_DIR [ROUNDS] [MODE]`: the cost of reads on the ledger. Timeline
# pages of 50 (bench/pages-ab.sh: 64 connections, an admin's token, 10 s measured after
# 4 s of warm-up) served by the same binary from the same data dir with
# `--audit-reads off` ("old") and `--audit-reads MODE` ("new"; `sync`, the default, or
# `async`), alternately, ROUNDS times each (5 by default): pages/s, p99 and the server's
# CPU per page, then MODE/off. Every page read with reads on the ledger appends one
# `RecordsRead` event (the ledger grows by one event a page during the "new" runs).
set -euo pipefail
if [ $# -lt 2 ]; then
  echo "usage: bench/audit-ab.sh BIN DATA_DIR [ROUNDS] [sync|async]" >&2
  exit 2
fi
bin=$(cd "$(dirname "$1")" && pwd)/$(basename "$1") data=$2 rounds=${3:-5} mode=${4:-sync}
case "$mode" in sync|async) ;; *) echo "bench/audit-ab.sh: MODE is sync or async" >&2; exit 2 ;; esac
here=$(cd "$(dirname "$0")" && pwd)
wrappers=$(mktemp -d -t medledger-audit-ab.XXXXXX)
trap 'rm -rf "$wrappers"' EXIT
for m in off "$mode"; do
  # `serve` gets the mode; every other command (token) runs as it is.
  cat > "$wrappers/medledger-$m" <<WRAP
#!/usr/bin/env bash
if [ "\${1:-}" = serve ]; then exec "$bin" "\$@" --audit-reads $m; fi
exec "$bin" "\$@"
WRAP
  chmod +x "$wrappers/medledger-$m"
done
echo "old: --audit-reads off; new: --audit-reads $mode" >&2
"$here/pages-ab.sh" "$wrappers/medledger-off" "$wrappers/medledger-$mode" "$data" "$rounds"
