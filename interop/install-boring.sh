#!/usr/bin/env bash
# Builds the BoringSSL interop peer (interop/boring, a standalone Cargo project) into a cache
# outside the repo. BoringSSL makes no releases; the crates.io crate `boring` bundles a pinned,
# Cloudflare-patched copy of its source in `boring-sys` (crates.io is the only source reachable
# from our build machines), so the peer is a small Rust program on top of it. Building boring-sys needs cmake, a C/C++
# compiler and libclang (bindgen); missing Debian packages are installed with apt-get.
# Rebuilds only when the peer's source changes (hash of Cargo.toml, Cargo.lock, src/).
# Idempotent; safe to run concurrently (flock). The stamp is removed before a build and written
# after it, so a killed build is redone on the next run. MCP_PQTLS_INTEROP_DIR moves the cache
# (cargo's registry stays cargo's own). Prints the peer binary path on stdout, last.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
src="$here/boring"
cache="${MCP_PQTLS_INTEROP_DIR:-$HOME/.cache/mcp-pqtls-interop}"
out="$cache/boring-peer"
target="$out/target"
bin="$target/release/boring-peer"
stamp="$out/source.sha256"
jobs="${CARGO_BUILD_JOBS:-2}"

log() { echo "install-boring: $*" >&2; }

source_hash() {
  (cd "$src" && find Cargo.toml Cargo.lock src -type f 2>/dev/null | LC_ALL=C sort |
    xargs sha256sum) | sha256sum | cut -d' ' -f1
}

mkdir -p "$out"
exec 9>"$cache/boring.lock"
flock 9

if [ -x "$bin" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$(source_hash)" ]; then
  echo "$bin"
  exit 0
fi

# Build prerequisites of boring-sys: cmake (BoringSSL build), clang + libclang-dev
# (bindgen loads libclang at build time), git (boring-sys applies its patches with git).
missing=()
for pkg in cmake clang libclang-dev git; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' ||
    command -v "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    log "missing build prerequisites: ${missing[*]} (run: sudo apt-get install -y ${missing[*]})"
    exit 1
  fi
  log "installing missing build prerequisites with apt-get: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q "${missing[@]}" >&2 ||
    { apt-get update -q >&2 && apt-get install -y -q "${missing[@]}" >&2; }
fi

rm -f "$stamp"
log "building $src in release into $target (-j$jobs; first build compiles BoringSSL, ~3-5 minutes on 2 cores)"
start=$(date +%s)
CARGO_TARGET_DIR="$target" cargo build --release -j"$jobs" \
  --manifest-path "$src/Cargo.toml" >"$out/build.log" 2>&1 ||
  { tail -n 40 "$out/build.log" >&2; log "build failed; full log in $out/build.log"; exit 1; }
log "built in $(($(date +%s) - start)) s"
# Hash after the build: cargo (re)writes Cargo.lock next to Cargo.toml when it has to
# (no --locked: a dependency edit should just work; the lock file pins everything else).
source_hash >"$stamp"
echo "$bin"
