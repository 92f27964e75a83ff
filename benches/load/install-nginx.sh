#!/usr/bin/env bash
# Fetches Debian bookworm's nginx (1.22, linked against the system OpenSSL 3.0: TLS 1.3 with
# classical groups only) into a cache outside the repo, for the sidecar-vs-nginx comparison.
# The .deb comes from the system's Debian mirror (`apt-get download`, no root needed, nothing
# installed or started) and is unpacked with `dpkg -x`. Idempotent; safe to run concurrently.
# Prints the path of the nginx binary as the last line of stdout; all else goes to stderr.
set -euo pipefail

cache="${MCP_PQTLS_INTEROP_DIR:-$HOME/.cache/mcp-pqtls-interop}"
root="$cache/nginx"
bin="$root/usr/sbin/nginx"
mkdir -p "$cache"
exec 9>"$cache/nginx.lock"
flock 9

if ! [ -x "$bin" ] || ! "$bin" -v >/dev/null 2>&1; then
  echo "install-nginx: fetching Debian's nginx package" >&2
  debs="$(mktemp -d)"
  trap 'rm -rf "$debs"' EXIT
  # apt-get download writes into the current directory.
  (cd "$debs" && apt-get download nginx >&2 2>&1) || {
    echo "install-nginx: apt-get download nginx failed; is a Debian mirror reachable (apt-get update)?" >&2
    exit 1
  }
  rm -rf "$root"
  dpkg -x "$debs"/nginx_*.deb "$root"
  "$bin" -v >&2
fi
echo "$bin"
