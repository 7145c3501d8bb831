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
tools=${MEDLEDGER_TOOLS:-$HOME/.cache/medledger-tools}
# `pip_venv NAME CHECK WHAT PIP_ARGS...`: unless CHECK (a function) passes, makes the venv
# $tools/NAME anew and pip-installs PIP_ARGS in it (WHAT names them), then CHECK must pass.
pip_venv() {
  local name=$1 check=$2 what=$3 venv=$tools/$1
  shift 3
  "$check" && return 0
  if [ "${MEDLEDGER_SETUP_DRY_RUN:-0}" = 1 ]; then
    echo "setup-test: would install $what (pip)"
    return 0
  fi
  echo "setup-test: installing $what in $venv (pip)" >&2
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check "$@"
  "$check" || { echo "setup-test: $what missing from $venv after pip install" >&2; exit 1; }
}
# schemathesis in a venv of its own (its dependencies stay out of the system's Python).
st_version=4.32.5
st_ok() { "$tools/schemathesis/bin/schemathesis" --version 2>/dev/null | grep -qx "schemathesis, version $st_version"; }
pip_venv schemathesis st_ok "schemathesis $st_version" "schemathesis==$st_version"
# PyJWT and cryptography in a venv of their own: tests/idp_tokens.rs mints identity
# provider tokens with a library independent of the server's (tests/idp/requirements.txt),
# exactly the versions pinned there.
jwt_ok() { "$tools/pyjwt/bin/pip" freeze 2>/dev/null | sort | cmp -s - <(sort tests/idp/requirements.txt); }
pip_venv pyjwt jwt_ok tests/idp/requirements.txt -r tests/idp/requirements.txt
echo "setup-test: ok" >&2
