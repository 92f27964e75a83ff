#!/usr/bin/env bash
# Fetches Debian bookworm's nginx (1.22, linked against the system OpenSSL 3.0: TLS 1.3 with
# classical groups only) into a cache outside the repo, for the sidecar-vs-nginx comparison.
# The .deb comes from the machine's own Debian mirror (`apt-get download`, which reads the
# system's apt sources and settings; no root needed, nothing installed or started) and is
# unpacked with `dpkg -x`. When the system has no package lists yet (a fresh image before its
# first `apt-get update`), the index is fetched into the cache with the same sources, and the
# system's apt state is not touched. Idempotent; safe to run concurrently (flock). The package
# is unpacked beside its final place and renamed, so a killed run leaves nothing that passes
# the check below. MCP_PQTLS_INTEROP_DIR moves the cache.
# Prints the path of the nginx binary as the last line of stdout; all else goes to stderr.
set -euo pipefail

cache="${MCP_PQTLS_INTEROP_DIR:-$HOME/.cache/mcp-pqtls-interop}"
root="$cache/nginx"
bin="$root/usr/sbin/nginx"
mkdir -p "$cache"
exec 9>"$cache/nginx.lock"
flock 9

log() { echo "install-nginx: $*" >&2; }

if ! [ -x "$bin" ] || ! "$bin" -v >/dev/null 2>&1; then
  log "fetching Debian's nginx package"
  rm -rf "$cache"/nginx-fetch.* # what a killed run left (we hold the lock)
  work="$(mktemp -d "$cache/nginx-fetch.XXXXXX")"
  trap 'rm -rf "$work"' EXIT
  mkdir -p "$work/debs"
  # apt-get download writes into the current directory.
  if ! (cd "$work/debs" && apt-get -q -o APT::Sandbox::User="$(id -un)" download nginx >&2); then
    # No (usable) system lists: the system's sources and settings, with lists and cache here.
    log "no nginx in the system's package lists; fetching the index of its own sources into the cache"
    mkdir -p "$work/lists/partial" "$work/cache/archives/partial"
    cat >"$work/apt.conf" <<CONF
Dir::State::Lists "$work/lists";
Dir::Cache "$work/cache";
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
APT::Sandbox::User "$(id -un)";
CONF
    (export APT_CONFIG="$work/apt.conf" && apt-get -q update >&2 &&
      cd "$work/debs" && apt-get -q download nginx >&2) || {
      log "apt-get download nginx failed; is the Debian mirror in /etc/apt/sources.list(.d) reachable?"
      exit 1
    }
  fi
  dpkg -x "$work"/debs/nginx_*.deb "$work/root"
  "$work/root/usr/sbin/nginx" -v >&2
  rm -rf "$root"
  mv "$work/root" "$root"
fi
echo "$bin"
