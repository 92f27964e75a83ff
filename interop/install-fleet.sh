#!/usr/bin/env bash
# Installs what the fleet tests run beside the sidecars: Debian's Redis (`redis-server`, for
# the shared rate limits) and HAProxy (`haproxy`, the load balancer in front of the
# replicas). Idempotent; safe to run concurrently (flock, and apt's own lock waited for, never
# under a timeout that could kill an install). Packages come from this machine's apt sources:
# nothing here names a mirror. Everything goes to stderr except the LAST line of stdout: the
# directory holding both binaries' paths as `redis-server` and `haproxy` symlinks.
#
# Environment: MCP_PQTLS_FLEET_DIR moves that directory (default <repo>/target/fleet-bin).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dir="${MCP_PQTLS_FLEET_DIR:-$root/target/fleet-bin}"
log() { echo "install-fleet: $*" >&2; }
die() { echo "install-fleet: ERROR: $*" >&2; exit 1; }
# shellcheck source=interop/apt.sh
source "$(dirname "${BASH_SOURCE[0]}")/apt.sh"

mkdir -p "$(dirname "$dir")"
exec 9>"$dir.lock"
flock 9

find_bin() { command -v "$1" 2>/dev/null || { [ -x "/usr/sbin/$1" ] && echo "/usr/sbin/$1"; } || { [ -x "/usr/bin/$1" ] && echo "/usr/bin/$1"; } || true; }

missing=()
for pkg in redis-server haproxy; do
  [ -n "$(find_bin "$pkg")" ] || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
  apt_install "${missing[@]}"
  # Debian starts the packaged services; the tests run their own on free ports.
  for svc in redis-server haproxy; do
    if command -v systemctl >/dev/null 2>&1; then systemctl stop "$svc" >/dev/null 2>&1 || true; fi
    if command -v service >/dev/null 2>&1; then service "$svc" stop >/dev/null 2>&1 || true; fi
  done
fi
mkdir -p "$dir"
for b in redis-server haproxy; do
  path="$(find_bin "$b")"
  [ -n "$path" ] || die "$b is not installed"
  ln -sf "$path" "$dir/$b"
done
"$dir/redis-server" --version >&2
"$dir/haproxy" -v 2>&1 | sed -n 1p >&2
echo "$dir"
