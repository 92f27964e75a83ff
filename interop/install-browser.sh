#!/usr/bin/env bash
# Installs what the approval page's browser tests drive: Debian's Chromium (package
# `chromium`, /usr/bin/chromium) and Playwright's driver library (`playwright-core` from npm,
# which drives an installed browser and downloads none). Idempotent; safe to run concurrently
# (flock on "<prefix>.lock"); no timeout around the installs (a killed apt or npm leaves a mess
# that the next run must not trust: the marker is written last). Everything goes to stderr
# except the LAST line of stdout: the node_modules directory holding playwright-core.
#
# Packages come from the machine's own configuration: apt's sources and npm's registry
# (`npm config get registry`: .npmrc, npm_config_registry). Nothing here names a mirror.
#
# Environment:
#   MCP_PQTLS_BROWSER_DIR  where playwright-core is installed (default: <repo>/target/browser)
#   MCP_PQTLS_CHROMIUM     the browser (default: /usr/bin/chromium)
set -euo pipefail

# Pinned: what the page test was written against (the machine's probe used 1.64.1).
PLAYWRIGHT_VERSION="1.64.1"

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
prefix="${MCP_PQTLS_BROWSER_DIR:-$root/target/browser}"
chromium="${MCP_PQTLS_CHROMIUM:-/usr/bin/chromium}"
marker="$prefix/.mcp-pqtls-installed"
want="playwright-core@$PLAYWRIGHT_VERSION"

log() { echo "install-browser: $*" >&2; }
die() { echo "install-browser: ERROR: $*" >&2; exit 1; }
# shellcheck source=interop/apt.sh
source "$(dirname "${BASH_SOURCE[0]}")/apt.sh"

mkdir -p "$(dirname "$prefix")"
exec 9>"$prefix.lock"
flock 9

if [ ! -x "$chromium" ]; then
  [ "$(id -u)" = 0 ] || die "$chromium is missing: run 'sudo apt-get install -y chromium' (or set MCP_PQTLS_CHROMIUM)"
  apt_install chromium
fi
"$chromium" --version >&2 || die "$chromium does not run"

if [ -f "$marker" ] && [ "$(cat "$marker")" = "$want" ] && [ -f "$prefix/node_modules/playwright-core/package.json" ]; then
  echo "$prefix/node_modules"
  exit 0
fi

command -v npm >/dev/null || die "npm is needed (apt-get install npm)"
log "npm install $want into $prefix (registry $(npm config get registry))"
tmp="$prefix.tmp"
rm -rf "$tmp"
mkdir -p "$tmp"
# --ignore-scripts: playwright-core needs no install script (and must not fetch browsers).
npm install --silent --no-audit --no-fund --ignore-scripts --prefix "$tmp" "$want" >&2 ||
  die "npm install $want failed (is npm's registry reachable? npm config get registry)"
rm -rf "$prefix"
mv "$tmp" "$prefix"
printf '%s' "$want" >"$marker"
echo "$prefix/node_modules"
