#!/usr/bin/env bash
# Installs the servers that bench/peers compares medledger against, from Debian's packages
# by package state (dpkg): PostgreSQL 15, Redis 7 and NATS server 2.9. SQLite needs no
# package: the `rusqlite` crate builds it (`bundled`). Then checks each binary where the
# harness looks for it.
#
# Idempotent: installs only what is missing. Starts no system service: the harness
# starts each peer itself from these binaries, with its data in a temp dir, on 127.0.0.1.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib/packages.sh"
missing=$(missing_packages postgresql redis-server nats-server)
# shellcheck disable=SC2086 # one word per package
apt_install install-peers $missing
# A dry run that would install something stops here; one that would not goes on to the checks.
[ "${MEDLEDGER_SETUP_DRY_RUN:-0}" = 1 ] && [ -n "$missing" ] && exit 0
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || { echo "install-peers: /usr/lib/postgresql/*/bin/initdb missing: install postgresql" >&2; exit 1; }
command -v redis-server >/dev/null 2>&1 || { echo "install-peers: redis-server missing: install redis-server" >&2; exit 1; }
command -v nats-server >/dev/null 2>&1 || { echo "install-peers: nats-server missing: install nats-server" >&2; exit 1; }
