#!/usr/bin/env bash
# Bytes on the wire per group: our probe's ClientHello and the server's first flight (up to its
# Finished, record headers included) against `mcp-pqtls reflect` offering every catalogue group,
# with an ECDSA P-256 and an ML-DSA-65 certificate. Sizes, not times: one run is exact.
#   benches/load/wire.sh        (WIRE_BIN picks the binary; default: a release build)
set -euo pipefail
cd "$(dirname "$0")/../.."
source benches/load/lib.sh
bin="$(binary "${WIRE_BIN:-}")"
scratch
all=X25519MLKEM768,SecP256r1MLKEM768,SecP384r1MLKEM1024,MLKEM768,MLKEM1024,X25519,secp256r1,secp384r1

for alg in ecdsa-p256 ml-dsa-65; do
  "$bin" certs init "$work/$alg" --key-alg "$alg" >/dev/null
  port="$(free_port)"
  RUST_LOG=warn "$bin" reflect --listen "127.0.0.1:$port" --cert "$work/$alg/server.pem" \
    --key "$work/$alg/server.key" --groups "$all" --policy classical-allowed >/dev/null 2>&1 &
  pid=$!
  wait_port "$port"
  "$bin" probe "127.0.0.1:$port" --sni localhost --ca "$work/$alg/ca.pem" --format json \
    >"$work/$alg.json" || true
  kill "$pid"
  wait "$pid" 2>/dev/null || true
done

python3 - "$work" <<'PY'
import json, sys
work = sys.argv[1]
reports = {alg: json.load(open(f"{work}/{alg}.json")) for alg in ["ecdsa-p256", "ml-dsa-65"]}
print("| group | ClientHello (B) | server flight, ECDSA P-256 chain (B) | server flight, ML-DSA-65 chain (B) |")
print("|---|---|---|---|")
rows = {alg: {g["name"]: g for g in r["groups"]} for alg, r in reports.items()}
for g in reports["ecdsa-p256"]["groups"]:
    e, m = rows["ecdsa-p256"][g["name"]], rows["ml-dsa-65"][g["name"]]
    assert e["accepted"] and m["accepted"], (e, m)
    print(f"| {g['name']} | {e['client_hello_bytes']} | {e['server_flight_bytes']} | {m['server_flight_bytes']} |")
PY
