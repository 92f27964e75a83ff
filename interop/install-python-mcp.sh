#!/usr/bin/env bash
# Creates (when missing) a Python virtualenv holding the official MCP Python SDK, used by the
# interop tests as a real MCP server (tests/mcp/server.py) and client (tests/mcp/client.py).
# Idempotent; safe to run concurrently (flock on "<venv>.lock"); a fast no-op once installed
# (a marker file inside the venv records the pinned version). Everything goes to stderr except
# the LAST line of stdout: the path of the venv's python interpreter.
#
# Environment:
#   MCP_PQTLS_PYTHON_VENV  where the venv lives (default: <repo root>/target/mcp-python)
#   MCP_PQTLS_PYTHON       interpreter used to create it (default: python3; needs >= 3.11,
#                          because the SDK's HTTP library httpx2 does)
#
# Works without root: if `python3 -m venv` cannot bootstrap pip (Debian without the
# python3-venv package has no ensurepip), the venv is created `--without-pip` and pip is
# installed into it from a pip wheel fetched from PyPI.
set -euo pipefail

# Pinned: mcp 2.3.0 was the newest release on PyPI when this was written (2.x renamed FastMCP
# to mcp.server.mcpserver.MCPServer; tests/mcp/*.py rely on the 2.x names). Only mcp itself is
# pinned: its dependencies (httpx2, uvicorn, starlette, ...) resolve at install time. Bumping
# MCP_VERSION rebuilds existing venvs (the marker no longer matches).
MCP_VERSION="2.3.0"
pin="mcp==$MCP_VERSION"

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${MCP_PQTLS_PYTHON_VENV:-$root/target/mcp-python}"
base_python="${MCP_PQTLS_PYTHON:-python3}"
py="$venv/bin/python"
marker="$venv/.mcp-pqtls-installed"

log() { echo "install-python-mcp: $*" >&2; }
die() { echo "install-python-mcp: ERROR: $*" >&2; exit 1; }

installed() {
  [ -x "$py" ] && [ -f "$marker" ] && [ "$(cat "$marker")" = "$pin" ] &&
    "$py" -c 'import sys' 2>/dev/null
}

mkdir -p "$(dirname "$venv")"
exec 9>"$venv.lock"
flock 9

if installed; then
  echo "$py"
  exit 0
fi

command -v "$base_python" >/dev/null 2>&1 ||
  die "no '$base_python' on PATH (set MCP_PQTLS_PYTHON to a Python >= 3.11 interpreter)"
"$base_python" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' ||
  die "$("$base_python" --version 2>&1) is too old: the MCP SDK needs Python >= 3.11"

# Any previous (partial or other-version) venv is rebuilt from scratch.
if [ -e "$venv" ]; then
  log "removing stale venv $venv"
  rm -rf "$venv"
fi

# Fetch a pip wheel from PyPI into $1 (with the base interpreter's pip if it has one, else with
# urllib against PyPI's JSON API) and echo the wheel's path.
fetch_pip_wheel() {
  local dir="$1"
  if "$base_python" -m pip --version >/dev/null 2>&1 &&
    "$base_python" -m pip download --quiet --no-deps --only-binary=:all: -d "$dir" pip >&2; then
    :
  else
    "$base_python" - "$dir" >&2 <<'PY'
import hashlib, json, os, sys, urllib.parse, urllib.request
dest = sys.argv[1]
with urllib.request.urlopen("https://pypi.org/pypi/pip/json", timeout=60) as r:
    meta, base = json.load(r), r.geturl()
wheel = next(f for f in meta["urls"] if f["packagetype"] == "bdist_wheel")
# Some PyPI mirrors answer with relative file URLs.
with urllib.request.urlopen(urllib.parse.urljoin(base, wheel["url"]), timeout=120) as r:
    data = r.read()
if hashlib.sha256(data).hexdigest() != wheel["digests"]["sha256"]:
    sys.exit("sha256 mismatch for " + wheel["filename"])
with open(os.path.join(dest, wheel["filename"]), "wb") as f:
    f.write(data)
PY
  fi
  local whl
  whl=$(ls "$dir"/pip-*.whl 2>/dev/null | head -n1)
  [ -n "$whl" ] || return 1
  echo "$whl"
}

create_venv() {
  log "creating venv $venv with $("$base_python" --version 2>&1)"
  if "$base_python" -m venv "$venv" >&2 && "$py" -m pip --version >/dev/null 2>&1; then
    return 0
  fi
  log "'$base_python -m venv' could not bootstrap pip (no ensurepip / python3-venv?);" \
    "retrying with --without-pip and a pip wheel from PyPI"
  rm -rf "$venv"
  if ! "$base_python" -m venv --without-pip "$venv" >&2; then
    rm -rf "$venv"
    die "'$base_python -m venv --without-pip' failed: this Python has no usable venv module." \
      "Install python3-venv, or point MCP_PQTLS_PYTHON at another Python >= 3.11."
  fi
  local tmp whl
  tmp=$(mktemp -d)
  if ! whl=$(fetch_pip_wheel "$tmp"); then
    rm -rf "$tmp" "$venv"
    die "could not download a pip wheel from PyPI"
  fi
  # A wheel is a zip of pure-Python code: pip can run from it to install itself.
  if ! "$py" "$whl/pip" install --quiet --no-index "$whl" >&2; then
    rm -rf "$tmp" "$venv"
    die "could not install pip into $venv from $whl"
  fi
  rm -rf "$tmp"
  "$py" -m pip --version >/dev/null 2>&1 || { rm -rf "$venv"; die "pip does not run in $venv"; }
}

create_venv

log "installing $pin into $venv (from PyPI)"
if ! "$py" -m pip install --quiet --disable-pip-version-check "$pin" >&2; then
  rm -rf "$venv"
  die "pip install $pin failed (is PyPI reachable?)"
fi
"$py" - >&2 <<'PY' || { rm -rf "$venv"; die "the installed SDK is not usable"; }
import importlib.metadata as md
import httpx2, uvicorn, mcp.server.mcpserver, mcp.client.streamable_http, mcp.client.sse  # noqa
print("install-python-mcp: mcp", md.version("mcp"), "uvicorn", md.version("uvicorn"),
      "httpx2", md.version("httpx2"))
PY
printf '%s' "$pin" >"$marker"
echo "$py"
