#!/usr/bin/env bash
# Installs Go 1.27 into a cache outside the repo and builds the Go TLS interop peer
# (interop/go/peer.go, stdlib only) with it. Debian bookworm ships at most Go 1.23, which has
# no ML-KEM. Go 1.27 (1.27.3) does X25519MLKEM768, SecP256r1MLKEM768, SecP384r1MLKEM1024 and
# MLKEM1024 (not MLKEM768), and ML-DSA certificates. Debian packages golang-1.27 only in sid
# (trixie stops at 1.24), and Debian mirrors are the only download source reachable from our build machines,
# so the toolchain comes from sid's golang-1.27-go/-src .debs, fetched with a private apt
# configuration (the system's apt state is not touched) and unpacked with `dpkg -x`.
# The mirror is the machine's own: the Debian archive its apt sources name (asked of apt itself,
# `apt-get indextargets`, so one-line and deb822 sources alike), with its Acquire settings
# (proxies, retries, snapshot date checks); MCP_PQTLS_DEBIAN_MIRROR overrides it.
# Idempotent; safe to run concurrently (flock). A killed run leaves nothing that passes the
# checks below (the toolchain is unpacked beside its final place and renamed; the peer likewise).
# Rebuilds the peer only when its source changed. MCP_PQTLS_INTEROP_DIR moves the cache.
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

# The Debian archive the machine's apt sources use (for its own release, main component): the
# same mirror serves sid. Origin/Label are known once the system's lists are downloaded; without
# them, the entry for the machine's own codename.
debian_mirror() {
  if [ -n "${MCP_PQTLS_DEBIAN_MIRROR:-}" ]; then
    echo "$MCP_PQTLS_DEBIAN_MIRROR"
    return
  fi
  local codename uri
  codename="$(. /etc/os-release && echo "${VERSION_CODENAME:-}")"
  uri=$(apt-get indextargets --format '$(REPO_URI)' 'Identifier: Packages' 'Component: main' \
    'Origin: Debian' 'Label: Debian' 2>/dev/null | head -n 1)
  [ -n "$uri" ] || [ -z "$codename" ] ||
    uri=$(apt-get indextargets --format '$(REPO_URI)' 'Identifier: Packages' 'Component: main' \
      "Release: $codename" 2>/dev/null | head -n 1)
  [ -n "$uri" ] || {
    log "no Debian archive in this machine's apt sources (apt-get indextargets);" \
      "set MCP_PQTLS_DEBIAN_MIRROR, e.g. to the URI of a Debian mirror"
    return 1
  }
  echo "${uri%/}"
}

if ! { [ -x "$go" ] && [[ "$("$go" version)" == *" go$series"* ]]; }; then
  mirror="$(debian_mirror)"
  apt="$cache/apt"
  rm -rf "$apt"
  mkdir -p "$apt/lists/partial" "$apt/cache/archives/partial" "$apt/debs"
  : >"$apt/status"
  echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror $suite main" \
    >"$apt/sources.list"
  # Instead of /etc/apt/apt.conf{,.d}: no system sources, pins or state; but the system's
  # Acquire settings (proxy, auth, retries, Check-Valid-Until for a snapshot mirror) are kept,
  # as apt-config prints them, less the extra index targets (DEP-11) and languages.
  {
    cat <<CONF
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
APT::Sandbox::User "$(id -un)";
CONF
    apt-config dump | grep -E '^Acquire::' | grep -v -E '^Acquire::(IndexTargets|Languages)'
    echo 'Acquire::Languages "none";'
  } >"$apt/apt.conf"
  export APT_CONFIG="$apt/apt.conf"
  log "fetching the Debian $suite package index from $mirror"
  apt-get -q update >&2
  log "downloading golang-$series-go and golang-$series-src from Debian $suite"
  (cd "$apt/debs" && apt-get -q download "golang-$series-go" "golang-$series-src" >&2)
  rm -rf "$root.tmp"
  for deb in "$apt/debs"/*.deb; do dpkg -x "$deb" "$root.tmp"; done
  rm -rf "$root"
  mv "$root.tmp" "$root"
  rm -rf "$apt"
  unset APT_CONFIG
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
