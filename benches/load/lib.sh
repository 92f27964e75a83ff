# Shared by the load scripts (sourced): the binary under test, a free port, a listener's wait.

# The mcp-pqtls binary: $1 if given, else a release build.
binary() {
  if [ -n "${1:-}" ]; then
    echo "$1"
  else
    cargo build --release --quiet --bin mcp-pqtls
    echo target/release/mcp-pqtls
  fi
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# Waits (up to 10 s) until 127.0.0.1:$1 accepts TCP.
wait_port() {
  for _ in $(seq 200); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.05
  done
  return 1
}

# A scratch directory in $work, removed (with every background job killed) on exit.
scratch() {
  work="$(mktemp -d)"
  trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
}

# CPU time (utime + stime) of process $1, in clock ticks (getconf CLK_TCK per second).
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# The median of the numbers on stdin, one per line.
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR + 1) / 2)]}'; }
