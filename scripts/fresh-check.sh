#!/usr/bin/env bash
# Proves the README's two commands from nothing, whatever this machine's history: builds a
# clean Debian 12 root (debootstrap), gives it what a fresh machine of this kind has and no
# more, clones this repository's HEAD into it, and runs there, timing each step:
#   1. scripts/run.sh: set up, build, start the server on its embedded defaults, then the
#      README's curl session (mint a token, create a record, read the timeline);
#   2. scripts/test.sh: set up and pass the whole test suite.
#
#   scripts/fresh-check.sh [--keep] [--only run|test]    (root; takes ~50 min on 2 cores)
#
# What the clean root starts with, as a new machine of this kind (the env notes' package
# list): build-essential, ca-certificates, curl, git, python3, procps, iproute2, llvm-14-dev
# (which brings libclang-cpp14: the package that hid a missing libclang-dev, issue 19),
# this machine's nodejs package (repacked with dpkg-repack: the image's vendor build of Node
# 20) and its npm as upgraded on the machine, its local CA certificates, and the machine's one Rust toolchain, mounted read-only. Nothing else: not
# clang, libclang-dev, chromium, PostgreSQL, Redis, NATS, nor any cache (cargo registry,
# target dir, npm cache): the two commands must install all of it.
# Prints one line per step with its time and a summary; exits 1 at the first failed step
# (its log is kept under the root's /var/log/fresh-check/).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
keep=0 only=""
while [ $# -gt 0 ]; do
  case $1 in
    --keep) keep=1 ;;
    --only) only=$2; shift ;;
    *) echo "usage: $0 [--keep] [--only run|test]" >&2; exit 2 ;;
  esac
  shift
done
[ "$(id -u)" -eq 0 ] || { echo "fresh-check: run as root (debootstrap, chroot, mount)" >&2; exit 1; }
. "$here/scripts/lib/packages.sh"
# shellcheck disable=SC2046
apt_install fresh-check $(missing_packages debootstrap dpkg-repack)

root=$(mktemp -d /var/tmp/medledger-fresh.XXXXXX)
logs=$root/var/log/fresh-check
mounted=()
cleanup() {
  local m
  local p
  for p in /proc/[0-9]*; do # every process still running inside the root
    [ "$(readlink "$p/root" 2>/dev/null)" = "$root" ] && kill -9 "${p#/proc/}" 2>/dev/null
  done
  sleep 1
  for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do umount -l "${mounted[i]}" 2>/dev/null || true; done
  if [ "$keep" -eq 1 ]; then echo "fresh-check: root kept at $root" >&2; else rm -rf --one-file-system "$root"; fi
}
trap cleanup EXIT
step() { # step NAME COMMAND...: runs, logs, times; stops the check on failure
  local name=$1; shift
  local start=$SECONDS
  if "$@" >"$logs/$name.log" 2>&1; then
    printf 'fresh-check: %-28s ok    %5d s\n' "$name" $((SECONDS - start))
  else
    printf 'fresh-check: %-28s FAILED after %d s; last lines of %s:\n' "$name" $((SECONDS - start)) "$logs/$name.log"
    tail -40 "$logs/$name.log"
    keep=1
    exit 1
  fi
}
# The machine's own CA settings (this workplace's network verifies TLS with its own CAs,
# which a machine of this kind has installed and names in these variables).
ca_env=()
for v in SSL_CERT_FILE SSL_CERT_DIR CURL_CA_BUNDLE NODE_EXTRA_CA_CERTS GIT_SSL_CAINFO REQUESTS_CA_BUNDLE PIP_CERT; do
  [ -z "${!v:-}" ] || ca_env+=("$v=${!v}")
done
in_root() { # runs a bash script in the clean root, as its root user, in /src
  chroot "$root" /usr/bin/env -i HOME=/root PATH=/opt/rust/bin:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin \
    LANG=C.UTF-8 CI=true "${ca_env[@]}" bash -c "set -eo pipefail; cd /src
$1"
}

mkdir -p "$root"
# mktemp made it 0700: as the root's "/", that stops every other user at the door (the
# PostgreSQL peer runs initdb as the postgres user). A machine's / is 0755.
chmod 755 "$root"
t0=$SECONDS
mirror=$(grep -hm1 '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}')
mirror=${mirror:-http://deb.debian.org/debian}
base_pkgs=build-essential,ca-certificates,curl,git,python3,procps,iproute2,llvm-14-dev,util-linux
mkdir -p "$root/var/log"
debootstrap_log=$(mktemp)
start=$SECONDS
debootstrap --variant=minbase --include="$base_pkgs" bookworm "$root" "$mirror" >"$debootstrap_log" 2>&1 ||
  { tail -30 "$debootstrap_log"; echo "fresh-check: debootstrap failed" >&2; exit 1; }
mkdir -p "$logs"; mv "$debootstrap_log" "$logs/debootstrap.log"
printf 'fresh-check: %-28s ok    %5d s\n' debootstrap $((SECONDS - start))

# The machine's own apt sources (with security updates), DNS, CA certificates (as on the
# machine: its local ones added to the system bundle), and its nodejs package.
cp /etc/apt/sources.list.d/*.sources "$root/etc/apt/sources.list.d/" 2>/dev/null || true
[ ! -f /etc/apt/sources.list.d/debian.sources ] || rm -f "$root/etc/apt/sources.list"
cp /etc/resolv.conf "$root/etc/resolv.conf"
if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
  mkdir -p "$root/usr/local/share/ca-certificates"
  cp /usr/local/share/ca-certificates/*.crt "$root/usr/local/share/ca-certificates/"
  step local-ca-certificates chroot "$root" update-ca-certificates
fi
if pkg_installed nodejs; then
  (cd "$root/tmp" && dpkg-repack nodejs >/dev/null 2>&1)
  step install-image-nodejs chroot "$root" bash -c 'dpkg -i /tmp/nodejs_*.deb && rm /tmp/nodejs_*.deb'
  # The machine upgrades the npm its nodejs package brought (npm -g) when it starts: the
  # repacked package's npm files are a mix of both, so the machine's npm comes whole.
  if [ -d /usr/lib/node_modules/npm ]; then
    rm -rf "$root/usr/lib/node_modules/npm"
    cp -a /usr/lib/node_modules/npm "$root/usr/lib/node_modules/npm"
  fi
fi
# The root is a mount point of its own, as "/" is on a machine: `ip netns exec` (the
# partition test's namespaces) remounts "/" as a slave, which a plain directory refuses.
mount --bind "$root" "$root"
mounted+=("$root")
for m in proc sys dev dev/pts; do
  mkdir -p "$root/$m"
  case $m in
    proc) mount -t proc proc "$root/proc" ;;
    sys) mount -t sysfs sys "$root/sys" ;;
    dev) mount --rbind /dev "$root/dev"; mount --make-rslave "$root/dev" ;;
    dev/pts) continue ;;
  esac
  mounted+=("$root/$m")
done
mkdir -p "$root/opt/rust"
mount --bind "$(rustc --print sysroot)" "$root/opt/rust"
mount -o remount,bind,ro "$root/opt/rust"
mounted+=("$root/opt/rust")
git clone -q "$here" "$root/src"
echo "fresh-check: root $root, HEAD $(git -C "$here" rev-parse --short HEAD), toolchain $(rustc --version)"

run_check() {
  # The README's commands as written: defaults (./medledger-data, 127.0.0.1:8080).
  in_root 'nohup scripts/run.sh >/var/log/fresh-check/run-server.log 2>&1 &
    pid=$!
    for _ in $(seq 1 3600); do
      curl -fsS http://127.0.0.1:8080/readyz >/dev/null 2>&1 && break
      kill -0 $pid 2>/dev/null || { echo "run.sh stopped"; tail -40 /var/log/fresh-check/run-server.log; exit 1; }
      sleep 1
    done
    curl -fsS http://127.0.0.1:8080/readyz
    TOKEN=$(./target/release/medledger token --role clinician --sub dr-1 --hospital h-1 | tail -1)
    created=$(curl -fsS -H "Authorization: Bearer $TOKEN" -H "Content-Type: application/json" \
      -d "{\"patient_id\":\"p-1\",\"hospital_id\":\"h-1\",\"record_type\":\"lab_result\",\"metadata\":{\"title\":\"CBC\"}}" \
      http://127.0.0.1:8080/v1/records)
    echo "created: $created"
    page=$(curl -fsS -H "Authorization: Bearer $TOKEN" http://127.0.0.1:8080/v1/patients/p-1/records)
    echo "timeline: $page"
    rid=$(echo "$created" | sed -n "s/.*\"record_id\":\"\([^\"]*\)\".*/\1/p")
    echo "$page" | grep -q "$rid"
    kill -INT $pid   # run.sh execs the server: $pid is the server
    wait $pid || true'
}
test_check() {
  in_root 'scripts/test.sh'
}
case $only in
  "" ) step "run.sh (+ curl session)" run_check; step "test.sh" test_check ;;
  run) step "run.sh (+ curl session)" run_check ;;
  test) step "test.sh" test_check ;;
  *) echo "fresh-check: --only run|test" >&2; exit 2 ;;
esac
grep -E "^test result|passed|failed" "$logs/test.sh.log" 2>/dev/null | tail -3 || true
echo "fresh-check: all steps passed in $((SECONDS - t0)) s"
