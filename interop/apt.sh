# shellcheck shell=bash
# Sourced by the install scripts: apt_install PKG... installs Debian packages from the
# machine's own apt sources (nothing here names a mirror), as root, waiting for apt's own
# lock rather than failing when another installer holds it, and never under a timeout (a
# killed dpkg leaves a half-configured package). When the cached package lists are stale, it
# refreshes them once and tries again. The caller defines log and die.
apt_install() {
  [ "$(id -u)" = 0 ] || die "missing $*: run 'sudo apt-get install -y $*'"
  log "installing $* with apt-get"
  local apt=(apt-get -o DPkg::Lock::Timeout=-1)
  if ! DEBIAN_FRONTEND=noninteractive "${apt[@]}" install -y -q --no-install-recommends "$@" >&2; then
    log "apt-get install failed; refreshing the package lists and trying again"
    "${apt[@]}" -q update >&2
    DEBIAN_FRONTEND=noninteractive "${apt[@]}" install -y -q --no-install-recommends "$@" >&2 ||
      die "apt-get install $* failed (are this machine's apt sources reachable?)"
  fi
}
