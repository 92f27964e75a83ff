#!/usr/bin/env bash
# Installs OpenSSL 3.5 (the first release with ML-KEM hybrids in TLS) into a cache outside
# the repo, from the source bundled in the crates.io crate `openssl-src` (crates.io is the
# only source of OpenSSL reachable from our build machines; cargo fetches it through its own
# registry configuration). Idempotent; safe to run concurrently (flock). A build that is killed
# half-way is redone on the next run: the install counts only once its marker file, written
# last, is there. MCP_PQTLS_INTEROP_DIR moves the cache. Prints the path of the `openssl`
# binary on stdout.
set -euo pipefail

cache="${MCP_PQTLS_INTEROP_DIR:-$HOME/.cache/mcp-pqtls-interop}"
series="${OPENSSL_SRC_SERIES:-~300.5}"
prefix="$cache/openssl-3.5"
bin="$prefix/bin/openssl"

mkdir -p "$cache"
exec 9>"$cache/openssl.lock"
flock 9

log() { echo "install-openssl: $*" >&2; }

# Complete = the marker written after the last step, and a binary that runs. A cache from
# before the marker existed counts when its last step (openssl.cnf) is there.
marker="$prefix/.mcp-pqtls-complete"
if [ -x "$bin" ] && "$bin" version 2>/dev/null | grep -q '^OpenSSL 3\.5'; then
  [ -f "$marker" ] || { [ -f "$prefix/ssl/openssl.cnf" ] && "$bin" version >"$marker"; }
  if [ -f "$marker" ]; then
    echo "$bin"
    exit 0
  fi
fi
[ -e "$prefix" ] && log "removing the incomplete install in $prefix"
rm -rf "$prefix"

# Resolve the source through cargo so the version pin and checksum come from crates.io.
fetch="$cache/openssl-src-fetch"
mkdir -p "$fetch/src"
cat >"$fetch/Cargo.toml" <<TOML
[package]
name = "openssl-src-fetch"
version = "0.0.0"
edition = "2021"
publish = false

[dependencies]
openssl-src = "$series"

[workspace]
TOML
: >"$fetch/src/lib.rs"
log "fetching openssl-src $series from crates.io"
manifest=$(cd "$fetch" && cargo metadata --format-version 1 --quiet |
  python3 -c 'import json,sys; m=json.load(sys.stdin); print(next(p["manifest_path"] for p in m["packages"] if p["name"]=="openssl-src"))')
src="$(dirname "$manifest")/openssl"

build="$cache/openssl-build"
rm -rf "$build"
cp -r "$src" "$build"
cd "$build"
# `openssl-src` strips util/providers.num and apps/openssl.cnf: no-module keeps Configure happy.
log "building OpenSSL in $build (takes 2-3 minutes on 2 cores)"
start=$SECONDS
./Configure linux-x86_64 no-shared no-module no-tests no-docs \
  --prefix="$prefix" --openssldir="$prefix/ssl" >"$cache/openssl-configure.log" 2>&1
make -j"$(nproc)" build_programs >"$cache/openssl-make.log" 2>&1
make install_sw >>"$cache/openssl-make.log" 2>&1
log "built and installed in $((SECONDS - start)) s"
mkdir -p "$prefix/ssl"
# `openssl req` needs a config file; the crate does not ship apps/openssl.cnf.
cat >"$prefix/ssl/openssl.cnf" <<'CNF'
[req]
distinguished_name = dn
[dn]
CNF
cd "$cache"
rm -rf "$build"
"$bin" version >&2
"$bin" version >"$marker"
echo "$bin"
