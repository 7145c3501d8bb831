#!/usr/bin/env bash
# Installs the servers that bench/peers compares medledger against: PostgreSQL 15,
# Redis 7 and NATS server 2.9, from Debian's packages. SQLite needs no package: the
# `rusqlite` crate builds it (`bundled`).
#
# Idempotent: installs only what is missing. Starts no system service: the harness
# starts each peer itself from these binaries, with its data in a temp dir, on 127.0.0.1.
set -euo pipefail
need=()
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v nats-server >/dev/null 2>&1 || need+=(nats-server)
if [ ${#need[@]} -gt 0 ]; then
  echo "install-peers: installing ${need[*]}" >&2
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  # policy-rc.d exit 101 tells invoke-rc.d not to start the packages' services.
  policy=/usr/sbin/policy-rc.d
  added_policy=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | $sudo_cmd tee "$policy" >/dev/null
    $sudo_cmd chmod +x "$policy"
    added_policy=1
  fi
  trap '[ "$added_policy" -eq 1 ] && $sudo_cmd rm -f "$policy"' EXIT
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { echo "install-peers: initdb still missing" >&2; exit 1; }
command -v redis-server >/dev/null 2>&1 || { echo "install-peers: redis-server still missing" >&2; exit 1; }
command -v nats-server >/dev/null 2>&1 || { echo "install-peers: nats-server still missing" >&2; exit 1; }
