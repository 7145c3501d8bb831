#!/usr/bin/env bash
# `bench/cluster-partitions.sh [N]`: N (20) partitions in one run (issue 22). Runs
# tests/cluster_partition.rs with MEDLEDGER_PARTITIONS=N: three nodes in network
# namespaces of their own; each round cuts the leader's Raft link while clients still
# reach it, writes through both sides, heals, and waits for every node to agree; at the
# end every acknowledged write is on every node and no write sent to a cut-off leader is
# on any. Needs root (network namespaces); every address is in the namespaces the test
# makes and removes.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
n=${1:-20}
cd "$root"
MEDLEDGER_PARTITIONS=$n cargo test --locked --test cluster_partition -- --nocapture 2>&1 |
  grep -E "partitions:|test result|panicked|acknowledged by a leader"
