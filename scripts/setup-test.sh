#!/usr/bin/env bash
# Installs what the test suite needs beyond the build, by package state (dpkg), then checks
# each result where the tests look for it (idempotent):
#  - Debian's chromium, for the block explorer's browser test (tests/explorer_browser.rs);
#  - node and npm, which run it and the IPFS test node; the machine's nodejs package may be
#    another vendor's build that carries npm itself (then Debian's npm package would
#    conflict with it), so npm is looked for as the command the tests run;
#  - curl, flock (util-linux) and sha256sum (coreutils), which tests/ipfs-test-node/start.sh uses;
#  - ip (iproute2), which makes the network namespaces of tests/cluster_partition.rs;
#  - mkfs.ext4 (e2fsprogs) and mount/umount (mount), which make the small loop-mounted disk
#    of tests/full_disk.rs;
#  - playwright-core from npm, which drives Chromium (tests/browser/, pinned by its lock file);
#  - PostgreSQL, Redis and NATS server, the peers the bench/peers tests start
#    (scripts/install-peers.sh).
#  - schemathesis (pinned, from PyPI, in a venv under ~/.cache/medledger-tools), the
#    schema-driven fuzzer tests/schemathesis.rs runs against /v1/openapi.json.
#  - PyJWT and cryptography (pinned, tests/idp/requirements.txt, in a venv), which mint the
#    identity provider tokens of tests/idp_tokens.rs.
# The IPFS test node's own npm packages are installed by tests/ipfs-test-node/start.sh on
# first use, once, under a lock.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/packages.sh
# shellcheck disable=SC2207
need=($(missing_packages chromium nodejs curl util-linux coreutils iproute2 e2fsprogs mount))
command -v npm >/dev/null 2>&1 || need+=(npm)
# The schemathesis venv needs venv and ensurepip: Debian's python3 has them only with
# python3-venv (a pyenv or upstream build has them already).
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || need+=(python3-venv)
apt_install setup-test "${need[@]}"
scripts/install-peers.sh
[ "${MEDLEDGER_SETUP_DRY_RUN:-0}" = 1 ] && [ ${#need[@]} -gt 0 ] && exit 0
[ -x /usr/bin/chromium ] || { echo "setup-test: /usr/bin/chromium missing: install chromium" >&2; exit 1; }
for c in node npm curl flock sha256sum ip mkfs.ext4 mount umount; do
  command -v "$c" >/dev/null 2>&1 || { echo "setup-test: $c missing after install" >&2; exit 1; }
done
# Whether tests/browser resolves playwright-core the way explorer.mjs will.
playwright_resolves() { node -e 'require.resolve("playwright-core", { paths: ["tests/browser"] })' >/dev/null 2>&1; }
if ! playwright_resolves; then
  echo "setup-test: npm ci in tests/browser" >&2
  npm ci --prefix tests/browser --no-audit --no-fund --loglevel=error >/dev/null
fi
playwright_resolves || { echo "setup-test: playwright-core missing in tests/browser after npm ci" >&2; exit 1; }
# schemathesis in a venv of its own (its dependencies stay out of the system's Python).
st_version=4.32.5
st_venv=${MEDLEDGER_TOOLS:-$HOME/.cache/medledger-tools}/schemathesis
st_ok() { "$st_venv/bin/schemathesis" --version 2>/dev/null | grep -qx "schemathesis, version $st_version"; }
if ! st_ok; then
  if [ "${MEDLEDGER_SETUP_DRY_RUN:-0}" = 1 ]; then
    echo "setup-test: would install schemathesis $st_version (pip)"
  else
    echo "setup-test: installing schemathesis $st_version in $st_venv (pip)" >&2
    rm -rf "$st_venv"
    python3 -m venv "$st_venv"
    "$st_venv/bin/pip" install -q --disable-pip-version-check "schemathesis==$st_version"
    st_ok || { echo "setup-test: schemathesis $st_version missing after pip install" >&2; exit 1; }
  fi
fi
# PyJWT and cryptography in a venv of their own: tests/idp_tokens.rs mints identity
# provider tokens with a library independent of the server's (tests/idp/requirements.txt).
jwt_venv=${MEDLEDGER_TOOLS:-$HOME/.cache/medledger-tools}/pyjwt
jwt_ok() { "$jwt_venv/bin/pip" freeze 2>/dev/null | sort | cmp -s - <(sort tests/idp/requirements.txt); }
if ! jwt_ok; then
  if [ "${MEDLEDGER_SETUP_DRY_RUN:-0}" = 1 ]; then
    echo "setup-test: would install tests/idp/requirements.txt (pip)"
  else
    echo "setup-test: installing tests/idp/requirements.txt in $jwt_venv (pip)" >&2
    rm -rf "$jwt_venv"
    python3 -m venv "$jwt_venv"
    "$jwt_venv/bin/pip" install -q --disable-pip-version-check -r tests/idp/requirements.txt
    jwt_ok || { echo "setup-test: $jwt_venv does not hold exactly tests/idp/requirements.txt after pip install" >&2; exit 1; }
  fi
fi
echo "setup-test: ok" >&2
