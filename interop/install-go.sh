#!/usr/bin/env bash
# Installs Go 1.27 into a cache outside the repo and builds the Go TLS interop peer
# (interop/go/peer.go, stdlib only) with it. Debian bookworm ships at most Go 1.23, which has
# no ML-KEM. Go 1.27 (1.27.3) does X25519MLKEM768, SecP256r1MLKEM768, SecP384r1MLKEM1024 and
# MLKEM1024 (not MLKEM768), and ML-DSA certificates. Debian packages golang-1.27 only in sid
# (trixie stops at 1.24), and Debian mirrors are the only download source reachable from our build machines,
# so the toolchain comes from sid's golang-1.27-go/-src .debs, fetched with a private apt
# configuration (the system's apt state is not touched) and unpacked with `dpkg -x`.
# Idempotent; safe to run concurrently (flock). Rebuilds the peer only when its source changed.
# Prints the path of the peer binary as the last line of stdout; all else goes to stderr.
set -euo pipefail

cache="${MCP_PQTLS_INTEROP_DIR:-$HOME/.cache/mcp-pqtls-interop}"
series=1.27
suite=sid
root="$cache/go-$series"
goroot="$root/usr/lib/go-$series"
peer_src="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/go"
out="$cache/go-peer"
bin="$out/peer"

mkdir -p "$cache"
exec 9>"$cache/go.lock"
flock 9

log() { echo "install-go: $*" >&2; }

# A hermetic Go: no downloads, no toolchain switching, no user config or caches outside $cache.
export GOROOT="$goroot" GOTOOLCHAIN=local GOPROXY=off GOFLAGS=-mod=mod GOENV=off \
  GOCACHE="$cache/go-cache/build" GOPATH="$cache/go-cache/gopath" \
  XDG_CONFIG_HOME="$cache/go-cache/config" CGO_ENABLED=0
go="$goroot/bin/go"

if ! { [ -x "$go" ] && [[ "$("$go" version)" == *" go$series"* ]]; }; then
  apt="$cache/apt"
  mkdir -p "$apt/lists/partial" "$apt/cache/archives/partial" "$apt/debs"
  : >"$apt/status"
  echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian $suite main" \
    >"$apt/sources.list"
  # Read instead of /etc/apt/apt.conf{,.d}: no system config, sources, pins or state.
  cat >"$apt/apt.conf" <<CONF
Dir::Etc::main "/dev/null";
Dir::Etc::Parts "/dev/null";
Dir::Etc::SourceList "$apt/sources.list";
Dir::Etc::SourceParts "/dev/null";
Dir::Etc::Preferences "/dev/null";
Dir::Etc::PreferencesParts "/dev/null";
Dir::State "$apt";
Dir::State::Lists "$apt/lists";
Dir::State::status "$apt/status";
Dir::Cache "$apt/cache";
Dir::Log "$apt";
Acquire::Languages "none";
// Our mirror serves a frozen snapshot (as the system config also allows); InRelease is
// still signature-checked and the .debs hash-checked against it.
Acquire::Check-Valid-Until "false";
Acquire::Check-Date "false";
APT::Sandbox::User "$(id -un)";
CONF
  export APT_CONFIG="$apt/apt.conf"
  log "fetching the Debian $suite package index"
  apt-get -q update >&2
  rm -f "$apt/debs"/*.deb
  log "downloading golang-$series-go and golang-$series-src from Debian $suite"
  (cd "$apt/debs" && apt-get -q download "golang-$series-go" "golang-$series-src" >&2)
  rm -rf "$root.tmp"
  for deb in "$apt/debs"/*.deb; do dpkg -x "$deb" "$root.tmp"; done
  rm -rf "$root"
  mv "$root.tmp" "$root"
  rm -rf "$apt"
fi

hash=$( (
  "$go" version
  cat "$peer_src/go.mod" "$peer_src/peer.go"
) | sha256sum | cut -d' ' -f1)
if [ -x "$bin" ] && [ "$(cat "$out/source.sha256" 2>/dev/null)" = "$hash" ]; then
  echo "$bin"
  exit 0
fi
log "building the Go peer with $("$go" version)"
mkdir -p "$out"
(cd "$peer_src" && "$go" build -trimpath -o "$bin.tmp" .)
mv "$bin.tmp" "$bin"
echo "$hash" >"$out/source.sha256"
echo "$bin"
