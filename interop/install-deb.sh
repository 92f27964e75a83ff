#!/usr/bin/env bash
# Installs what tests/deploy.rs packages and checks the deploy/ files with: cargo-deb (from
# crates.io, into a project-local root) and, when missing, Debian's systemd (for
# `systemd-analyze verify` and `security`) and dpkg. Idempotent; safe to run concurrently
# (flock, and apt's own lock waited for); never under a timeout: `cargo install` puts the
# binary in place only once it is built, so a killed install is redone on the next run.
# Packages come from this machine's apt sources: nothing here names a mirror. Everything goes
# to stderr except the LAST line of stdout: the path of the cargo-deb binary.
#
# Environment: MCP_PQTLS_DEB_ROOT moves the cargo-deb root (default <repo>/target/cargo-deb).
set -euo pipefail

# Pinned, like cargo-deny and cargo-fuzz: the newest release when this was written. Bumping it
# reinstalls (the version check below no longer matches).
CARGO_DEB_VERSION="3.8.0"

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
root="${MCP_PQTLS_DEB_ROOT:-$repo/target/cargo-deb}"
log() { echo "install-deb: $*" >&2; }
die() { echo "install-deb: ERROR: $*" >&2; exit 1; }
# shellcheck source=interop/apt.sh
source "$(dirname "${BASH_SOURCE[0]}")/apt.sh"

mkdir -p "$root"
exec 9>"$root/.lock"
flock 9

missing=()
command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd)
command -v dpkg-deb >/dev/null 2>&1 || missing+=(dpkg)
if [ "${#missing[@]}" -gt 0 ]; then
  apt_install "${missing[@]}"
fi

bin="$root/bin/cargo-deb"
if ! "$bin" --version 2>/dev/null | grep -qF "$CARGO_DEB_VERSION"; then
  start=$SECONDS
  log "installing cargo-deb $CARGO_DEB_VERSION into $root (cargo install, no timeout)"
  # Its own target directory: a CARGO_TARGET_DIR set for the tests must not collect (or lock)
  # the tool's build.
  CARGO_TARGET_DIR="$root/build" cargo install --locked cargo-deb --version "$CARGO_DEB_VERSION" --root "$root" >&2
  rm -rf "$root/build"
  log "cargo-deb installed in $((SECONDS - start)) s"
fi
"$bin" --version >&2
systemd-analyze --version | sed -n 1p >&2
echo "$bin"
