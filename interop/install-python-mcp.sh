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
# installed into it from a pip wheel (see fetch_pip_wheel). Packages come from wherever pip's own
# configuration points (PIP_INDEX_URL, pip.conf): nothing here names a package index.
# A killed install is redone on the next run: the marker is written last.
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

# Fetch a pip wheel into $1 and echo the wheel's path: with the base interpreter's pip if it
# has one (`pip download`, which follows pip's own configuration), else from a local wheel
# directory (pip's find-links, Debian's python3-pip-whl), else from the package index that pip's
# configuration names (PIP_INDEX_URL, PIP_CONFIG_FILE, /etc/xdg/pip/pip.conf, /etc/pip.conf,
# ~/.pip/pip.conf, ~/.config/pip/pip.conf; pip's own default when none sets one), over PEP 503/691
# (the simple API every mirror serves), hash-checked, honouring pip's cert/proxy settings.
fetch_pip_wheel() {
  local dir="$1"
  if "$base_python" -m pip --version >/dev/null 2>&1 &&
    "$base_python" -m pip download --quiet --no-deps --only-binary=:all: -d "$dir" pip >&2; then
    :
  else
    "$base_python" - "$dir" >&2 <<'PY'
import configparser, glob, hashlib, html.parser, json, os, re, shutil, ssl, sys
import urllib.parse, urllib.request

dest = sys.argv[1]

def pip_config():
    """pip's settings from its config files and PIP_* variables, later ones winning."""
    files = ["/etc/xdg/pip/pip.conf", "/etc/pip.conf",
             os.path.expanduser("~/.pip/pip.conf"), os.path.expanduser("~/.config/pip/pip.conf")]
    if os.environ.get("PIP_CONFIG_FILE"):
        files.append(os.environ["PIP_CONFIG_FILE"])
    parser = configparser.RawConfigParser()
    parser.read([f for f in files if os.path.isfile(f)])
    conf = {}
    for section in ("global", "download", "install"):
        if parser.has_section(section):
            conf.update({k.replace("_", "-"): v for k, v in parser.items(section)})
    for key, value in os.environ.items():
        if key.startswith("PIP_"):
            conf[key[4:].lower().replace("_", "-")] = value
    return conf

def version(name):
    m = re.match(r"pip-(\d+(?:\.\d+)*)-py3-none-any\.whl$", name)
    return tuple(int(x) for x in m.group(1).split(".")) if m else None

conf = pip_config()

# 1. A pip wheel already on this machine.
local = []
for d in conf.get("find-links", "").split() + ["/usr/share/python-wheels"]:
    if os.path.isdir(d):
        local += [p for p in glob.glob(os.path.join(d, "pip-*.whl")) if version(os.path.basename(p))]
if local:
    best = max(local, key=lambda p: version(os.path.basename(p)))
    shutil.copy(best, dest)
    print("install-python-mcp: pip wheel from", best)
    sys.exit(0)

# 2. The configured index (pip's default index only when nothing is configured).
index = (conf.get("index-url") or "https://pypi.org/simple").rstrip("/") + "/"
context = ssl.create_default_context(cafile=conf.get("cert") or None)
handlers = [urllib.request.HTTPSHandler(context=context)]
if conf.get("proxy"):
    handlers.append(urllib.request.ProxyHandler({"http": conf["proxy"], "https": conf["proxy"]}))
opener = urllib.request.build_opener(*handlers)
timeout = float(conf.get("timeout") or conf.get("default-timeout") or 60)

def get(url, accept="*/*"):
    req = urllib.request.Request(url, headers={"Accept": accept})
    with opener.open(req, timeout=timeout) as r:
        return r.read(), r.geturl(), r.headers.get_content_type()

class Links(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.files = []
    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "a" and "href" in a and "data-yanked" not in a:
            url = a["href"]
            frag = urllib.parse.urlparse(url).fragment
            name = urllib.parse.unquote(urllib.parse.urlparse(url).path.rsplit("/", 1)[-1])
            sha = frag[len("sha256="):] if frag.startswith("sha256=") else None
            self.files.append({"filename": name, "url": url, "sha256": sha})

body, base, ctype = get(index + "pip/",
                        "application/vnd.pypi.simple.v1+json, text/html;q=0.1")
if ctype == "application/vnd.pypi.simple.v1+json":
    files = [{"filename": f["filename"], "url": f["url"], "sha256": f.get("hashes", {}).get("sha256")}
             for f in json.loads(body)["files"] if not f.get("yanked")]
else:
    links = Links()
    links.feed(body.decode("utf-8", "replace"))
    files = links.files
wheels = [f for f in files if version(f["filename"])]
if not wheels:
    sys.exit("no pip wheel on " + index)
wheel = max(wheels, key=lambda f: version(f["filename"]))
data, _, _ = get(urllib.parse.urljoin(base, wheel["url"]))  # some mirrors give relative URLs
if not wheel["sha256"] or hashlib.sha256(data).hexdigest() != wheel["sha256"]:
    sys.exit("missing or mismatched sha256 for " + wheel["filename"] + " from " + index)
with open(os.path.join(dest, wheel["filename"]), "wb") as f:
    f.write(data)
print("install-python-mcp: pip wheel", wheel["filename"], "from", index)
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
    "retrying with --without-pip and a pip wheel from the configured index"
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
    die "could not download a pip wheel (pip config list: is the index reachable?)"
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

index=$("$py" -m pip config list 2>/dev/null | grep -E 'index-url|find-links' | tr '\n' ' ' || true)
log "installing $pin into $venv (pip's configuration: ${index:-its default index})"
if ! "$py" -m pip install --quiet --disable-pip-version-check "$pin" >&2; then
  rm -rf "$venv"
  die "pip install $pin failed (is the index in pip's configuration reachable? pip config list)"
fi
"$py" - >&2 <<'PY' || { rm -rf "$venv"; die "the installed SDK is not usable"; }
import importlib.metadata as md
import httpx2, uvicorn, mcp.server.mcpserver, mcp.client.streamable_http, mcp.client.sse  # noqa
print("install-python-mcp: mcp", md.version("mcp"), "uvicorn", md.version("uvicorn"),
      "httpx2", md.version("httpx2"))
PY
printf '%s' "$pin" >"$marker"
echo "$py"
