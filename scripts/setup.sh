#!/usr/bin/env bash
# Installs what building medledger needs on a fresh Debian machine of this kind, by package
# state (dpkg), then checks the result the way the build will look for it:
#  - clang and libclang-dev: the rocksdb crate compiles RocksDB from source and generates
#    its bindings with bindgen, whose loader (clang-sys) links an unversioned libclang.so
#    found through $LIBCLANG_PATH, `llvm-config --libdir` or the system directories;
#  - g++ (RocksDB is C++), and ca-certificates for cargo's downloads.
# Idempotent: installs nothing when everything is present. Exits 1 with one line naming
# what is still missing.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib/packages.sh"
missing=$(missing_packages ca-certificates g++ clang libclang-dev)
# shellcheck disable=SC2086 # one word per package
apt_install setup $missing
# A dry run that would install something stops here; one that would not goes on to the checks.
[ "${MEDLEDGER_SETUP_DRY_RUN:-0}" = 1 ] && [ -n "$missing" ] && exit 0
if ! lib=$(libclang_found); then
  echo "setup: no libclang.so where the rocksdb build looks (LIBCLANG_PATH, llvm-config --libdir, /usr/lib/llvm-*/lib): install libclang-dev" >&2
  exit 1
fi
command -v c++ >/dev/null 2>&1 || { echo "setup: no C++ compiler (c++): install g++" >&2; exit 1; }
command -v cargo >/dev/null 2>&1 || { echo "setup: cargo is required (this machine kind ships it)" >&2; exit 1; }
echo "setup: ok (libclang: $lib)" >&2
