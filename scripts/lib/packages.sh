# Shared by scripts/setup.sh, scripts/setup-test.sh and scripts/install-peers.sh: decide
# what to install by Debian's package state (dpkg), never by a file glob that another
# package can satisfy, install it, then check the result the way its user will look for it.
#
# Test hooks (tests/setup_scripts.rs): MEDLEDGER_DPKG_ADMINDIR points dpkg-query at a fake
# package database, MEDLEDGER_SETUP_ROOT prefixes the directories searched for libclang,
# and MEDLEDGER_SETUP_DRY_RUN=1 prints what would be installed instead of installing it.

# pkg_installed NAME: is package NAME installed (dpkg state "install ok installed")?
pkg_installed() {
  local status
  status=$(dpkg-query --admindir="${MEDLEDGER_DPKG_ADMINDIR:-/var/lib/dpkg}" -W \
    -f='${db:Status-Abbrev}' "$1" 2>/dev/null) || return 1
  [ "${status:0:2}" = "ii" ]
}

# missing_packages NAME...: prints the names of those not installed, one line.
missing_packages() {
  local out=() p
  for p in "$@"; do pkg_installed "$p" || out+=("$p"); done
  echo "${out[*]}"
}

# apt_install TAG NAME...: installs the packages (no services started: policy-rc.d 101),
# or with MEDLEDGER_SETUP_DRY_RUN=1 prints "TAG: would install NAME...".
apt_install() {
  local tag=$1; shift
  [ $# -gt 0 ] || return 0
  if [ "${MEDLEDGER_SETUP_DRY_RUN:-0}" = 1 ]; then
    echo "$tag: would install $*"
    return 0
  fi
  echo "$tag: installing $* (apt-get)" >&2
  local sudo_cmd="" policy=/usr/sbin/policy-rc.d added=0
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  if [ ! -e "$policy" ]; then
    # exit 101 tells invoke-rc.d not to start the packages' services (PostgreSQL, Redis):
    # the tests and benches start their own, on loopback, with data in a temp dir.
    printf '#!/bin/sh\nexit 101\n' | $sudo_cmd tee "$policy" >/dev/null
    $sudo_cmd chmod +x "$policy"
    added=1
  fi
  local rc=0
  { $sudo_cmd apt-get update -qq &&
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "$@" >/dev/null; } || rc=$?
  [ "$added" -eq 0 ] || $sudo_cmd rm -f "$policy"
  [ "$rc" -eq 0 ] || { echo "$tag: apt-get install $* failed (exit $rc)" >&2; return 1; }
}

# libclang_dirs: the directories clang-sys (bindgen's loader) searches for libclang when it
# links: $LIBCLANG_PATH, `llvm-config --libdir`, then the usual system directories.
libclang_dirs() {
  local root=${MEDLEDGER_SETUP_ROOT:-}
  [ -z "${LIBCLANG_PATH:-}" ] || echo "$LIBCLANG_PATH"
  if command -v llvm-config >/dev/null 2>&1; then llvm-config --libdir 2>/dev/null || true; fi
  local d
  for d in "$root"/usr/lib/llvm-*/lib "$root"/usr/local/llvm*/lib "$root"/usr/lib/x86_64-linux-gnu \
           "$root"/usr/lib64 "$root"/usr/lib "$root"/usr/local/lib; do
    [ -d "$d" ] && echo "$d"
  done
  return 0
}

# libclang_found: prints the first library clang-sys would link (an unversioned
# libclang.so or libclang-N.so; not libclang-cpp, not a versioned libclang.so.1, which
# the linker cannot take) and succeeds, or fails printing nothing.
libclang_found() {
  local d f name
  while IFS= read -r d; do
    for f in "$d"/libclang.so "$d"/libclang-*.so; do
      [ -e "$f" ] || continue
      name=${f##*/}
      case $name in libclang-cpp*) continue ;; esac
      echo "$f"
      return 0
    done
  done < <(libclang_dirs)
  return 1
}
