#!/usr/bin/env bash
# Handshake capacity: full TLS 1.3 handshakes per second and server CPU per handshake, for
# X25519MLKEM768 and X25519, of `mcp-pqtls reflect` and of OpenSSL 3.5 `s_server`, each pinned
# to one core, driven by a neutral client (OpenSSL `s_time -new`, several in parallel, on the
# other core). Runs are interleaved (ours, OpenSSL, ours, ...) and the medians reported.
#   benches/load/capacity.sh [SECONDS_PER_RUN] [ROUNDS]     (default 5 s, 3 rounds)
# Prints a markdown table on stdout; everything on 127.0.0.1. CAPACITY_BIN picks the
# mcp-pqtls binary (default: a release build); the test suite's smoke run uses the debug one.
# CPU time comes from /proc/PID/stat (utime + stime of the server process).
set -euo pipefail
cd "$(dirname "$0")/../.."
secs="${1:-5}"
rounds="${2:-3}"
clients="${CAPACITY_CLIENTS:-4}"
server_cpu="${CAPACITY_SERVER_CPU:-0}"
client_cpu="${CAPACITY_CLIENT_CPU:-1}"
# The TLS 1.3 suite the clients offer (both servers follow the client's order); default
# OpenSSL's own list, which puts TLS_AES_256_GCM_SHA384 first.
suite=()
[ -n "${CAPACITY_SUITE:-}" ] && suite=(-ciphersuites "$CAPACITY_SUITE")
# One CPU only: share it (the numbers then mean less; the smoke run still works).
[ "$(nproc)" -ge 2 ] || client_cpu=0

source benches/load/lib.sh
openssl="$(bash interop/install-openssl.sh)"
ours="$(binary "${CAPACITY_BIN:-}")"
scratch
"$ours" certs init "$work/pki" >/dev/null
ticks="$(getconf CLK_TCK)"


# One run: prints "<handshakes> <server cpu seconds>".
run() {
  local server="$1" group="$2" port pid
  port="$(free_port)"
  if [ "$server" = ours ]; then
    # warn: no per-connection log line (an info line per handshake would be measured too).
    RUST_LOG=warn taskset -c "$server_cpu" "$ours" reflect --listen "127.0.0.1:$port" \
      --cert "$work/pki/server.pem" --key "$work/pki/server.key" \
      --groups "$group" --policy classical-allowed >/dev/null 2>&1 &
  else
    taskset -c "$server_cpu" "$openssl" s_server -quiet -tls1_3 -accept "$port" -groups "$group" \
      -cert "$work/pki/server.pem" -key "$work/pki/server.key" </dev/null >/dev/null 2>&1 &
  fi
  pid=$!
  wait_port "$port"
  local before after total=0
  before="$(cpu_ticks "$pid")"
  for i in $(seq "$clients"); do
    taskset -c "$client_cpu" "$openssl" s_time -connect "127.0.0.1:$port" -new -time "$secs" "${suite[@]}" \
      >"$work/s_time.$i" 2>&1 &
  done
  wait $(jobs -p | grep -v "^$pid\$") 2>/dev/null || true
  after="$(cpu_ticks "$pid")"
  kill "$pid"; wait "$pid" 2>/dev/null || true
  for i in $(seq "$clients"); do
    # "N connections in T real seconds, ..."
    n="$(awk '/real seconds/ {print $1; exit}' "$work/s_time.$i")"
    total=$((total + ${n:-0}))
  done
  echo "$total $(awk -v a="$before" -v b="$after" -v t="$ticks" 'BEGIN {print (b - a) / t}')"
}


echo "| group | server | handshakes/s (median) | server CPU µs per handshake (median) |"
echo "|---|---|---|---|"
declare -A cpu
for group in X25519MLKEM768 X25519; do
  : >"$work/ours.rate"; : >"$work/ours.cpu"; : >"$work/openssl.rate"; : >"$work/openssl.cpu"
  for r in $(seq "$rounds"); do
    for server in ours openssl; do
      read -r n s < <(run "$server" "$group")
      echo "capacity: $group $server round $r: $n handshakes, $s s CPU" >&2
      awk -v n="$n" -v t="$secs" 'BEGIN {printf "%.0f\n", n / t}' >>"$work/$server.rate"
      awk -v n="$n" -v s="$s" 'BEGIN {if (n > 0) printf "%.1f\n", s * 1e6 / n; else print "nan"}' >>"$work/$server.cpu"
    done
  done
  for server in ours openssl; do
    cpu[$group.$server]="$(median <"$work/$server.cpu")"
    name="mcp-pqtls reflect"; [ "$server" = openssl ] && name="OpenSSL 3.5 s_server"
    echo "| $group | $name | $(median <"$work/$server.rate") | ${cpu[$group.$server]} |"
  done
done
echo
awk -v o="${cpu[X25519MLKEM768.ours]}" -v s="${cpu[X25519MLKEM768.openssl]}" -v c="${cpu[X25519.ours]}" 'BEGIN {
  printf "Capacity ratios (CPU per handshake, lower is better): OpenSSL / ours for X25519MLKEM768 = %.2f×; ours X25519 / ours X25519MLKEM768 = %.2f×.\n", s / o, c / o }'
