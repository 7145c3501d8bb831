#!/usr/bin/env bash
# Installs what the test suite needs beyond the build (idempotent):
#  - Debian's chromium, for the block explorer's browser test (tests/explorer_browser.rs);
#  - playwright-core from npm, which drives it (tests/browser/, pinned by its lock file);
#  - PostgreSQL, Redis and NATS server, the peers the bench/peers tests start
#    (scripts/install-peers.sh);
#  - the IPFS test node's npm packages are installed by tests/ipfs-test-node/start.sh
#    itself on first use.
set -euo pipefail
cd "$(dirname "$0")/.."
sudo_cmd=""
[ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
need=()
[ -x /usr/bin/chromium ] || need+=(chromium)
command -v node >/dev/null 2>&1 || need+=(nodejs npm)
if [ ${#need[@]} -gt 0 ]; then
  echo "setup-test: installing ${need[*]}" >&2
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
if [ ! -d tests/browser/node_modules/playwright-core ]; then
  echo "setup-test: npm ci in tests/browser" >&2
  npm ci --prefix tests/browser --no-audit --no-fund --loglevel=error >/dev/null
fi
scripts/install-peers.sh
