#!/usr/bin/env bash
# Where a pinned `reflect` server spends its CPU on full X25519MLKEM768 handshakes driven by
# four `openssl s_time -new` clients (the capacity.sh set-up): `perf record` on the server
# for a few seconds, then the hottest symbols and the share of a few frames that matter.
#   benches/load/profile.sh [SECONDS] [GROUP]        (default 4, X25519MLKEM768)
# Needs `perf` (Debian: linux-perf) and kernel.perf_event_paranoid <= 2 (or root).
set -euo pipefail
cd "$(dirname "$0")/../.."
secs="${1:-4}"
group="${2:-X25519MLKEM768}"
source benches/load/lib.sh
command -v perf >/dev/null || { echo "profile.sh: perf not found (apt-get install linux-perf)" >&2; exit 2; }
openssl="$(bash interop/install-openssl.sh)"
ours="$(binary "${PROFILE_BIN:-}")"
scratch
"$ours" certs init "$work/pki" >/dev/null
port="$(free_port)"
RUST_LOG=warn taskset -c 0 "$ours" reflect --listen "127.0.0.1:$port" --cert "$work/pki/server.pem" \
  --key "$work/pki/server.key" --groups "$group" --policy classical-allowed >/dev/null 2>&1 &
pid=$!
wait_port "$port"
for i in 1 2 3 4; do
  taskset -c 1 "$openssl" s_time -connect "127.0.0.1:$port" -new -time $((secs + 2)) >/dev/null 2>&1 &
done
sleep 1
perf record -q -F 1000 --call-graph dwarf,16384 -p "$pid" -o "$work/perf.data" -- sleep "$secs" 2>/dev/null
echo "Share of server CPU (inclusive) in frames that matter, $group, the clients' suite:"
perf report -i "$work/perf.data" --stdio -g none --children --sort symbol 2>/dev/null |
  grep -E '^ +[0-9]' |
  grep -E 'PqAcceptor::accept|HkdfExpander|SHA384_Final|x25519_scalar_mult|X25519_keypair|ECDSA_sign|MlKem|mlkem|ml_kem|do_writev|__x64_sys_close|__sys_accept|hyper::proto::h1::dispatch|tokio_rustls::server::Accept' |
  sed -E 's/^ +([0-9.]+%) +[0-9.]+% +\[[.k]\] /\1  /' | cut -c1-110 | sed -E "s/ +$//" | awk "NR <= 20"
echo
echo "Hottest symbols (self):"
perf report -i "$work/perf.data" --stdio -g none --no-children --sort dso,symbol 2>/dev/null |
  grep -E '^ +[0-9]' | sed -E 's/ +\[[.k]\] / /' | cut -c1-110 | sed -E "s/ +$//" | awk "NR <= 15"
