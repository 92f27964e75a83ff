#!/usr/bin/env bash
# The sidecar under load, next to nginx, all on 127.0.0.1. Prints markdown sections:
#   1. keep-alive MCP requests (a ~1 KiB JSON-RPC tools/call POST, a ~16 KiB result) at fixed
#      concurrency: direct to the plain upstream, through `mcp-pqtls server`, through the full
#      tunnel (client + server sidecars) and through nginx (Debian's, TLS 1.3 reverse proxy
#      with the same certificate; X25519, since its OpenSSL has no ML-KEM). req/s, p50/p99,
#      and the proxies' CPU per request (from /proc). Interleaved rounds, medians.
#   2. SSE: upstream-to-client latency of each event, direct and through the full tunnel, at
#      1 and 1,000 concurrent streams.
#   3. memory: RSS of the server sidecar (and of nginx) per idle TLS connection at 1,000 and
#      10,000 connections.
#   4. scaling: handshake rate and latency of `reflect` from 1 to 32 concurrent clients.
#
#   benches/load/sidecar.sh [SECONDS_PER_RUN] [ROUNDS] [CONNECTIONS]   (default 5 3 16)
# Proxies are pinned to CPU 0 (SIDECAR_PROXY_CPU); the load generator (`mcp-pqtls bench`) and
# the upstream to CPU 1 (SIDECAR_LOAD_CPU). SIDECAR_BIN picks the binary (default: release
# build); SIDECAR_IDLE ("1000 10000") and SIDECAR_SSE_STREAMS ("1 1000") size sections 2-3,
# and SIDECAR_SECTIONS ("requests sse memory scaling") picks what runs (the smoke test runs
# small sizes with the debug binary).
set -euo pipefail
cd "$(dirname "$0")/../.."
secs="${1:-5}"
rounds="${2:-3}"
conns="${3:-16}"
proxy_cpu="${SIDECAR_PROXY_CPU:-0}"
load_cpu="${SIDECAR_LOAD_CPU:-1}"
[ "$(nproc)" -ge 2 ] || load_cpu=0
sections="${SIDECAR_SECTIONS:-requests sse memory scaling}"
idle_sizes="${SIDECAR_IDLE:-1000 10000}"
sse_streams="${SIDECAR_SSE_STREAMS:-1 1000}"

source benches/load/lib.sh
ours="$(binary "${SIDECAR_BIN:-}")"
nginx="$(bash benches/load/install-nginx.sh | tail -n 1)"
scratch
"$ours" certs init "$work/pki" >/dev/null
ticks="$(getconf CLK_TCK)"
export RUST_LOG=warn # no per-request log line (nginx: access_log off)

rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
field() { python3 -c 'import json,sys; d=json.loads(sys.stdin.readline()); print(eval("d"+sys.argv[1]))' "$1"; }
load() { taskset -c "$load_cpu" "$ours" bench "$@"; }

start_upstream() { # port
  taskset -c "$load_cpu" "$ours" bench upstream --listen "127.0.0.1:$1" --response-bytes 16384 &
  wait_port "$1"
}
start_server() { # port upstream-port [extra flags]
  local port="$1" up="$2"; shift 2
  taskset -c "$proxy_cpu" "$ours" server --listen "127.0.0.1:$port" --upstream "http://127.0.0.1:$up" \
    --cert "$work/pki/server.pem" --key "$work/pki/server.key" "$@" >/dev/null 2>"$work/server.log" &
  wait_port "$port"
}
start_client() { # port server-port [extra flags]
  local port="$1" srv="$2"; shift 2
  taskset -c "$proxy_cpu" "$ours" client --listen "127.0.0.1:$port" --upstream "https://127.0.0.1:$srv" \
    --ca "$work/pki/ca.pem" "$@" >/dev/null 2>"$work/client.log" &
  wait_port "$port"
}
start_nginx() { # port upstream-port
  mkdir -p "$work/nginx"
  cat >"$work/nginx/nginx.conf" <<CONF
daemon off;
master_process off;
worker_processes 1;
worker_rlimit_nofile 30000;
error_log $work/nginx/error.log warn;
pid $work/nginx/nginx.pid;
events { worker_connections 20000; }
http {
  access_log off;
  keepalive_requests 1000000; # as ours: no per-connection request limit
  client_body_temp_path $work/nginx; proxy_temp_path $work/nginx;
  fastcgi_temp_path $work/nginx; uwsgi_temp_path $work/nginx; scgi_temp_path $work/nginx;
  upstream mcp { server 127.0.0.1:$2; keepalive 64; }
  server {
    listen 127.0.0.1:$1 ssl;
    ssl_certificate $work/pki/server.pem;
    ssl_certificate_key $work/pki/server.key;
    ssl_protocols TLSv1.3;
    ssl_ecdh_curve X25519;
    location / {
      proxy_pass http://mcp;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      # What MCP needs of nginx: SSE events passed on as they come.
      proxy_buffering off;
    }
  }
}
CONF
  taskset -c "$proxy_cpu" "$nginx" -p "$work/nginx" -c "$work/nginx/nginx.conf" 2>>"$work/nginx/error.log" &
  wait_port "$1"
}
stop() { kill "$@" 2>/dev/null || true; wait "$@" 2>/dev/null || true; }

# The MCP gate with everything that reads a request: rules, a rate limit too high to refuse
# (so its bookkeeping is measured, not its refusals) and the audit log.
cat >"$work/gate.toml" <<CONF
mode = "server"
[[rules]]
name = "pq-for-tools"
method = "tools/call"
require-pq = true
[[rules]]
name = "no-shell"
tool = "shell_*"
deny = true
[rate-limit]
key = "address"
per-minute = 1000000000
burst = 1000000
[audit]
path = "$work/audit.jsonl"
CONF
# The same gate with [tools]: every tools/list answer (about 100 tools) judged against the pins
# (pinned on first use), every tools/call's arguments validated against echo's inputSchema.
{ cat "$work/gate.toml"; cat <<CONF
[tools]
pin-file = "$work/tools.pin.json"
trust-on-first-use = true
validate-arguments = true
CONF
} >"$work/tools.toml"
# The gate over mTLS, with and without a require-approval rule for a tool the load never
# calls: what calls that need no approval pay for the feature being configured.
approval_admin='admin = "127.0.0.1:0"
admin-tls = true'
{ echo 'mode = "server"'; echo "$approval_admin"; tail -n +2 "$work/gate.toml"; } >"$work/mtls.toml"
{ echo 'mode = "server"'; echo "$approval_admin"; cat <<CONF
[[rules]]
name = "approve-deletes"
tool = "delete_*"
require-approval = true
approvers = ["id:spiffe://*"]
CONF
  tail -n +2 "$work/gate.toml"; } >"$work/approval.toml"

# The same gate charging its rate limit in Redis ([fleet]): what a fleet's shared limits cost.
fleet_bin="$(bash interop/install-fleet.sh | tail -n 1)"
redis_port="$(free_port)"
{ cat "$work/gate.toml"; printf '[fleet]\nredis = "redis://127.0.0.1:%s"\n' "$redis_port"; } >"$work/fleet.toml"

# ---------------------------------------------------------------------------------------------
requests_section() {
  local up srv cli ngx pu ps pc pn
  up="$(free_port)"; srv="$(free_port)"; cli="$(free_port)"; ngx="$(free_port)"
  start_upstream "$up"; pu=$!
  start_server "$srv" "$up"; ps=$!
  local gsrv pg tsrv pt msrv pm asrv pa fsrv pf pr
  gsrv="$(free_port)"; tsrv="$(free_port)"; msrv="$(free_port)"; asrv="$(free_port)"; fsrv="$(free_port)"
  taskset -c "$load_cpu" "$fleet_bin/redis-server" --port "$redis_port" --bind 127.0.0.1 --save "" \
    --appendonly no >/dev/null 2>&1 &
  pr=$!
  wait_port "$redis_port"
  start_server "$fsrv" "$up" --config "$work/fleet.toml"; pf=$!
  start_server "$gsrv" "$up" --config "$work/gate.toml"; pg=$!
  start_server "$tsrv" "$up" --config "$work/tools.toml"; pt=$!
  start_server "$msrv" "$up" --config "$work/mtls.toml" --client-ca "$work/pki/ca.pem"; pm=$!
  start_server "$asrv" "$up" --config "$work/approval.toml" --client-ca "$work/pki/ca.pem"; pa=$!
  start_client "$cli" "$srv"; pc=$!
  start_nginx "$ngx" "$up"; pn=$!
  declare -A url=(
    [direct]="http://127.0.0.1:$up/mcp"
    [server]="https://127.0.0.1:$srv/mcp"
    [gate]="https://127.0.0.1:$gsrv/mcp"
    [list]="https://127.0.0.1:$srv/mcp"
    [tools_list]="https://127.0.0.1:$tsrv/mcp"
    [tools]="https://127.0.0.1:$tsrv/mcp"
    [gate_mtls]="https://127.0.0.1:$msrv/mcp"
    [approval]="https://127.0.0.1:$asrv/mcp"
    [fleet]="https://127.0.0.1:$fsrv/mcp"
    [tunnel]="http://127.0.0.1:$cli/mcp"
    [nginx]="https://127.0.0.1:$ngx/mcp"
  )
  declare -A pids=([direct]="" [server]="$ps" [gate]="$pg" [list]="$ps" [tools_list]="$pt"
    [tools]="$pt" [gate_mtls]="$pm" [approval]="$pa" [fleet]="$pf" [tunnel]="$ps $pc" [nginx]="$pn")
  local pq="--ca $work/pki/ca.pem --groups X25519MLKEM768"
  declare -A tls=([direct]="" [server]="$pq" [gate]="$pq" [list]="$pq --list"
    [tools_list]="$pq --list" [tools]="$pq"
    [gate_mtls]="$pq --client-cert $work/pki/client.pem --client-key $work/pki/client.key"
    [approval]="$pq --client-cert $work/pki/client.pem --client-key $work/pki/client.key"
    [fleet]="$pq"
    [tunnel]="" [nginx]="--ca $work/pki/ca.pem --groups X25519 --policy classical-allowed")
  # tools_list before tools: the first list pins echo, whose calls are then validated.
  # SIDECAR_ROWS picks rows (in that order; tools_list before tools, which it pins for).
  local order="${SIDECAR_ROWS:-direct server gate fleet list tools_list tools gate_mtls approval tunnel nginx}"
  for r in $(seq "$rounds"); do
    for how in $order; do
      local before=0 after=0 p json
      for p in ${pids[$how]}; do before=$((before + $(cpu_ticks "$p"))); done
      # shellcheck disable=SC2086
      json="$(load requests "${url[$how]}" -c "$conns" -d "${secs}s" --warmup 1s ${tls[$how]})"
      for p in ${pids[$how]}; do after=$((after + $(cpu_ticks "$p"))); done
      echo "requests: $how round $r: $json" >&2
      local n; n="$(echo "$json" | field '["completed"]')"
      # The proxies' CPU over warm-up + run, per request counted in the run (an upper bound).
      echo "$json" | field '["per_second"]' >>"$work/$how.rps"
      echo "$json" | field '["latency_us"]["p50"]' >>"$work/$how.p50"
      echo "$json" | field '["latency_us"]["p99"]' >>"$work/$how.p99"
      awk -v a="$before" -v b="$after" -v t="$ticks" -v n="$n" -v w="$secs" \
        'BEGIN { if (n > 0) printf "%.1f\n", (b - a) / t * 1e6 / (n * (w + 1) / w); else print "nan" }' \
        >>"$work/$how.cpu"
    done
  done
  stop "$pn" "$pc" "$pa" "$pm" "$pf" "$pr" "$pt" "$pg" "$ps" "$pu"
  echo "| path | req/s | p50 µs | p99 µs | proxy CPU µs per request |"
  echo "|---|---|---|---|---|"
  local name
  declare -A names=([direct]="direct to the upstream (no proxy)" [server]="mcp-pqtls server (X25519MLKEM768)"
    [gate]="mcp-pqtls server + MCP gate (rules, rate limit, audit)"
    [list]="mcp-pqtls server, tools/list (~100 tools)"
    [tools_list]="… + gate with [tools]: tools/list judged against the pins"
    [tools]="… + gate with [tools]: tools/call arguments validated"
    [gate_mtls]="mcp-pqtls server + MCP gate, mTLS clients, admin-tls"
    [approval]="… + a require-approval rule (delete_*; these calls need none)"
    [fleet]="mcp-pqtls server + MCP gate, rate limit charged in Redis ([fleet])"
    [tunnel]="full tunnel: mcp-pqtls client + server" [nginx]="nginx 1.22 (X25519)")
  for how in $order; do
    cpu="$(median <"$work/$how.cpu")"; [ "$how" = direct ] && cpu="–"
    printf '| %s | %.0f | %s | %s | %s |\n' "${names[$how]}" "$(median <"$work/$how.rps")" \
      "$(median <"$work/$how.p50")" "$(median <"$work/$how.p99")" "$cpu"
  done
  echo
  # A ratio line only when its rows ran.
  have() { local r; for r in "$@"; do [ -s "$work/$r.rps" ] || return 1; done; }
  have server nginx && awk -v s="$(median <"$work/server.rps")" -v n="$(median <"$work/nginx.rps")" \
    -v cs="$(median <"$work/server.cpu")" -v cn="$(median <"$work/nginx.cpu")" \
    -v ps="$(median <"$work/server.p99")" -v pn="$(median <"$work/nginx.p99")" \
    'BEGIN { printf "Ratios, mcp-pqtls server / nginx: req/s %.2f×, p99 %.2f×, CPU per request %.2f×.\n", s / n, ps / pn, cs / cn }'
  have server gate && awk -v s="$(median <"$work/server.rps")" -v g="$(median <"$work/gate.rps")" \
    -v cs="$(median <"$work/server.cpu")" -v cg="$(median <"$work/gate.cpu")" \
    'BEGIN { printf "The gate (reads and audits each request): req/s %.2f×, CPU per request %.2f× the ungated server.\n", g / s, cg / cs }'
  have gate tools list tools_list && awk -v g="$(median <"$work/gate.rps")" -v t="$(median <"$work/tools.rps")" \
    -v cg="$(median <"$work/gate.cpu")" -v ct="$(median <"$work/tools.cpu")" \
    -v l="$(median <"$work/list.rps")" -v tl="$(median <"$work/tools_list.rps")" \
    -v cl="$(median <"$work/list.cpu")" -v ctl="$(median <"$work/tools_list.cpu")" \
    'BEGIN { printf "[tools]: a validated tools/call: req/s %.2f×, CPU per request %.2f× the gate without [tools]; a judged tools/list: req/s %.2f×, CPU per request %.2f× the ungated server.\n", t / g, ct / cg, tl / l, ctl / cl }'
  have gate fleet && awk -v g="$(median <"$work/gate.rps")" -v f="$(median <"$work/fleet.rps")" \
    -v cg="$(median <"$work/gate.cpu")" -v cf="$(median <"$work/fleet.cpu")" \
    -v pg="$(median <"$work/gate.p99")" -v pf="$(median <"$work/fleet.p99")" \
    'BEGIN { printf "[fleet] (the rate limit in Redis, one round trip per charge): req/s %.2f×, p99 %.2f×, proxy CPU per request %.2f× the same gate with local limits.\n", f / g, pf / pg, cf / cg }'
  have gate_mtls approval && awk -v m="$(median <"$work/gate_mtls.rps")" -v a="$(median <"$work/approval.rps")" \
    -v cm="$(median <"$work/gate_mtls.cpu")" -v ca="$(median <"$work/approval.cpu")" \
    -v pm="$(median <"$work/gate_mtls.p99")" -v pa="$(median <"$work/approval.p99")" \
    'BEGIN { printf "Human approval configured, calls that need none: req/s %.2f×, p99 %.2f×, CPU per request %.2f× the same gate without the rule.\n", a / m, pa / pm, ca / cm }'
  if have gate; then
    [ "$(wc -l <"$work/audit.jsonl")" -gt 0 ] || { echo "sidecar.sh: the gate wrote no audit records" >&2; exit 1; }
  fi
  have tools_list || return 0
  python3 -c 'import json,sys; t=json.load(open(sys.argv[1]))["tools"]; sys.exit(0 if "echo" in t and len(t) > 50 else 1)' "$work/tools.pin.json" ||
    { echo "sidecar.sh: [tools] did not pin the listed tools" >&2; exit 1; }
}

# ---------------------------------------------------------------------------------------------
sse_section() {
  declare -A names=([direct]=direct [tunnel]="full tunnel (X25519MLKEM768)"
    [gated]="full tunnel + MCP gate on the server sidecar")
  echo "| path | streams | event interval | events received | lost | p50 µs | p99 µs | max µs |"
  echo "|---|---|---|---|---|---|---|---|"
  local streams how
  for streams in $sse_streams; do
    for how in direct tunnel gated; do
      # One event per stream every 20 ms at 1 stream; every 100 ms at many (10,000 events/s
      # at 1,000 streams, each crossing both sidecars on one core).
      local up srv cli ps pc url json events="${SIDECAR_SSE_EVENTS:-200}" interval=20ms
      [ "$streams" -gt 1 ] && events="${SIDECAR_SSE_EVENTS:-30}" && interval=100ms
      up="$(free_port)"
      if [ "$how" != direct ]; then
        srv="$(free_port)"; cli="$(free_port)"
        local gate=()
        [ "$how" = gated ] && gate=(--config "$work/gate.toml")
        # SIDECAR_SSE_SERVER_FLAGS: more server flags (e.g. --max-concurrent-streams 10000,
        # one tunnel connection for every stream, as before the default became 256).
        # shellcheck disable=SC2086
        start_server "$srv" "$up" --max-connections 20000 --max-upstream-requests-per-ip 20000 \
          ${SIDECAR_SSE_SERVER_FLAGS:-} "${gate[@]}"; ps=$!
        # Each stream is a connection of its own to the client sidecar.
        start_client "$cli" "$srv" --max-connections 20000; pc=$!
        url="http://127.0.0.1:$cli/mcp"
      else
        url="http://127.0.0.1:$up/mcp"
      fi
      json="$(load sse "$url" --upstream-listen "127.0.0.1:$up" --streams "$streams" \
        --events "$events" --interval "$interval")"
      echo "sse: $how $streams: $json" >&2
      [ "$how" != direct ] && stop "$pc" "$ps"
      printf '| %s | %s | %s | %s | %s | %s | %s | %s |\n' \
        "${names[$how]}" "$streams" "$interval" \
        "$(echo "$json" | field '["completed"]')" "$(echo "$json" | field '["errors"]')" \
        "$(echo "$json" | field '["latency_us"]["p50"]')" "$(echo "$json" | field '["latency_us"]["p99"]')" \
        "$(echo "$json" | field '["latency_us"]["max"]')"
    done
  done
}

# ---------------------------------------------------------------------------------------------
# Opens N idle connections to the process $2 at $1 (extra load flags after), prints
# "<rss before KiB> <rss after KiB> <opened>".
idle_rss() {
  local url="$1" pid="$2" n="$3"; shift 3
  local before fifo opened
  before="$(rss_kib "$pid")"
  fifo="$work/idle.$n"; mkfifo "$fifo"
  # Not through load(): $! must be the load generator itself, for stop to reach it.
  taskset -c "$load_cpu" "$ours" bench idle "$url" --connections "$n" --parallel 32 --hold 120s "$@" >"$fifo" &
  local lp=$!
  read -r line <"$fifo"
  opened="$(echo "$line" | field '["completed"]')"
  sleep 1 # let the server settle (buffers released after the handshakes)
  echo "$before $(rss_kib "$pid") $opened"
  stop "$lp"; rm -f "$fifo"
  sleep 1
}

memory_section() {
  echo "| server | idle TLS connections | RSS before (KiB) | RSS with them open (KiB) | bytes per connection |"
  echo "|---|---|---|---|---|"
  local up srv ngx ps pn n
  up="$(free_port)"; srv="$(free_port)"; ngx="$(free_port)"
  start_upstream "$up"; local pu=$!
  for n in $idle_sizes; do
    # One source holds them all, without a request: lift the per-source share and the
    # first-request timeout that would otherwise (rightly) close them.
    start_server "$srv" "$up" --max-connections 20000 --max-connections-per-ip 20000 \
      --first-request-timeout 10m --idle-timeout 10m; ps=$!
    read -r b a o < <(idle_rss "https://127.0.0.1:$srv/mcp" "$ps" "$n" --ca "$work/pki/ca.pem" --groups X25519MLKEM768)
    stop "$ps"
    awk -v b="$b" -v a="$a" -v o="$o" -v n="$n" 'BEGIN { printf "| mcp-pqtls server (X25519MLKEM768) | %d of %d | %d | %d | %.0f |\n", o, n, b, a, (a - b) * 1024 / (o > 0 ? o : 1) }'
    start_nginx "$ngx" "$up"; pn=$!
    read -r b a o < <(idle_rss "https://127.0.0.1:$ngx/mcp" "$pn" "$n" --ca "$work/pki/ca.pem" --groups X25519 --policy classical-allowed)
    stop "$pn"
    awk -v b="$b" -v a="$a" -v o="$o" -v n="$n" 'BEGIN { printf "| nginx 1.22 (X25519) | %d of %d | %d | %d | %.0f |\n", o, n, b, a, (a - b) * 1024 / (o > 0 ? o : 1) }'
  done
  stop "$pu"
}

# ---------------------------------------------------------------------------------------------
scaling_section() {
  echo "| concurrent clients | handshakes/s | p50 µs | p99 µs | server CPU µs per handshake |"
  echo "|---|---|---|---|---|"
  local port pr c json
  port="$(free_port)"
  taskset -c "$proxy_cpu" "$ours" reflect --listen "127.0.0.1:$port" --cert "$work/pki/server.pem" \
    --key "$work/pki/server.key" --groups X25519MLKEM768 >/dev/null 2>&1 &
  pr=$!
  wait_port "$port"
  for c in ${SIDECAR_SCALING:-1 2 4 8 16 32}; do
    local before after n
    before="$(cpu_ticks "$pr")"
    json="$(load handshakes "https://127.0.0.1:$port/" -c "$c" -d "${secs}s" --warmup 1s --ca "$work/pki/ca.pem" --groups X25519MLKEM768)"
    after="$(cpu_ticks "$pr")"
    echo "scaling: $c: $json" >&2
    n="$(echo "$json" | field '["completed"]')"
    printf '| %s | %.0f | %s | %s | %s |\n' "$c" "$(echo "$json" | field '["per_second"]')" \
      "$(echo "$json" | field '["latency_us"]["p50"]')" "$(echo "$json" | field '["latency_us"]["p99"]')" \
      "$(awk -v a="$before" -v b="$after" -v t="$ticks" -v n="$n" -v w="$secs" \
        'BEGIN { if (n > 0) printf "%.1f", (b - a) / t * 1e6 / (n * (w + 1) / w); else print "nan" }')"
  done
  stop "$pr"
}

for s in $sections; do
  case "$s" in
    requests) echo "### Requests through the sidecar vs nginx ($conns connections, ${secs} s per run, $rounds interleaved rounds, medians)"; echo; requests_section ;;
    sse) echo "### SSE delivery latency (upstream hands the event over → client has read it)"; echo; sse_section ;;
    memory) echo "### Memory per idle TLS connection"; echo; memory_section ;;
    scaling) echo "### Handshakes from 1 to 32 concurrent clients (reflect, X25519MLKEM768, our load generator)"; echo; scaling_section ;;
    *) echo "sidecar.sh: unknown section $s (requests, sse, memory, scaling)" >&2; exit 2 ;;
  esac
  echo
done
