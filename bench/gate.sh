#!/usr/bin/env bash
# Whole-system benchmark: tally in the request path vs nginx, with wrk, on loopback.
#
#   bench/gate.sh
#
# In one run, against the same nginx upstream (`return 200 "ok"`):
#   nginx-204     nginx `return 204` (the floor for an auth_request decision)
#   tally-check   tally `GET /v1/check` with a valid token (registry hit, already seen)
#   nginx-proxy   nginx `proxy_pass` to the upstream (keepalive), no authentication
#   tally-proxy   tally's `[gate]` reverse proxy, route `/` to the upstream, token checked
#                 on every request (registry hit)
# and prints Requests/sec, p50/p99 latency, the CPU each process used, and the ratios
# tally-check / nginx-204 and tally-proxy / nginx-proxy (goal: both >= 1.0).
#
# One nginx process (master + `worker_processes 1`) serves the three nginx server blocks;
# tally runs with its default tokio runtime (one worker thread per core: 2 here) plus its
# own background threads. wrk, nginx and tally share the machine's cores.
#
# Knobs (environment): CARGO_TARGET_DIR (default ./target), BENCH_PORT (first of five
# loopback ports, default 28600), WRK_THREADS (1), WRK_CONNS (64), WRK_SECS (10),
# WRK_WARMUP_SECS (2, discarded), SKIP_BUILD=1 to use an existing binary.
# Needs: wrk (Debian: apt-get install wrk), nginx, curl, jq.
set -euo pipefail

cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
port0="${BENCH_PORT:-28600}"
threads="${WRK_THREADS:-1}"
conns="${WRK_CONNS:-64}"
secs="${WRK_SECS:-10}"
warmup="${WRK_WARMUP_SECS:-2}"

for tool in wrk nginx curl jq; do
    command -v "$tool" >/dev/null 2>&1 || { echo "gate.sh: $tool not found" >&2; exit 1; }
done

if [ "${SKIP_BUILD:-0}" != 1 ]; then
    cargo build --release -p tally >&2
fi
tally="$CARGO_TARGET_DIR/release/tally"

p_up=$port0             # nginx upstream: return 200 "ok"
p_204=$((port0 + 1))    # nginx return 204
p_proxy=$((port0 + 2))  # nginx proxy_pass -> upstream
p_tally=$((port0 + 3))  # tally serve (/v1/check, /v1/login)
p_gate=$((port0 + 4))   # tally [gate] -> upstream

tmp=$(mktemp -d "${TMPDIR:-/tmp}/tally-gate-bench.XXXXXX")
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

mkdir -p "$tmp/nginx"
cat >"$tmp/nginx/nginx.conf" <<EOF
daemon off;
master_process on;
worker_processes 1;
pid $tmp/nginx/nginx.pid;
error_log /dev/null crit;
events { worker_connections 1024; }
http {
    access_log off;
    server_tokens off;
    client_body_temp_path $tmp/nginx/body;
    proxy_temp_path $tmp/nginx/proxy;
    fastcgi_temp_path $tmp/nginx/fastcgi;
    uwsgi_temp_path $tmp/nginx/uwsgi;
    scgi_temp_path $tmp/nginx/scgi;
    keepalive_requests 1000000;
    upstream app {
        server 127.0.0.1:$p_up;
        keepalive 64;
    }
    server {
        listen 127.0.0.1:$p_up;
        location / { return 200 "ok"; }
    }
    server {
        listen 127.0.0.1:$p_204;
        location / { return 204; }
    }
    server {
        listen 127.0.0.1:$p_proxy;
        location / {
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
EOF
nginx -p "$tmp/nginx" -c "$tmp/nginx/nginx.conf" &
pids+=($!)
nginx_master=$!

cat >"$tmp/tally.toml" <<EOF
version = 1

[gate]
listen = "127.0.0.1:$p_gate"

[[gate.routes]]
prefix = "/"
upstream = "http://127.0.0.1:$p_up"
EOF
"$tally" init --data "$tmp/data" --config "$tmp/tally.toml" --listen "127.0.0.1:$p_tally" >/dev/null
echo bench-passphrase | "$tally" users add bench --password-stdin --data "$tmp/data" --config "$tmp/tally.toml" >/dev/null
TALLY_LOG=warn "$tally" serve --data "$tmp/data" --listen "127.0.0.1:$p_tally" \
    --config "$tmp/tally.toml" >"$tmp/tally.log" 2>&1 &
pids+=($!)
tally_pid=$!

wait_for() {
    for _ in $(seq 1 100); do
        curl -s -o /dev/null "http://127.0.0.1:$1/" && return 0
        sleep 0.1
    done
    echo "gate.sh: nothing answers on port $1" >&2
    cat "$tmp/tally.log" >&2
    exit 1
}
for p in $p_up $p_204 $p_proxy $p_tally $p_gate; do wait_for "$p"; done

token=$(curl -sf -XPOST "http://127.0.0.1:$p_tally/v1/login" -H 'content-type: application/json' \
    -d '{"username":"bench","password":"bench-passphrase"}' | jq -r .access_token)
[ -n "$token" ] && [ "$token" != null ] || { echo "gate.sh: login failed" >&2; exit 1; }
auth="Authorization: Bearer $token"

# Every target must answer as expected before it is timed.
expect() { # url expected-status [header...]
    local url=$1 want=$2 got
    shift 2
    got=$(curl -s -o /dev/null -w '%{http_code}' "${@/#/-H}" "$url")
    [ "$got" = "$want" ] || { echo "gate.sh: $url answered $got, expected $want" >&2; exit 1; }
}
expect "http://127.0.0.1:$p_204/" 204
expect "http://127.0.0.1:$p_proxy/" 200
expect "http://127.0.0.1:$p_tally/v1/check" 200 "$auth" "X-Original-URI: /api/x"
expect "http://127.0.0.1:$p_gate/" 200 "$auth"
expect "http://127.0.0.1:$p_gate/" 401   # the gate does refuse without a token

nginx_worker=$(pgrep -P "$nginx_master" | head -1)

# utime+stime of a process, in clock ticks.
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)

echo "== machine"
echo "date:    $(date -u +%Y-%m-%dT%H:%M:%SZ)"
echo "nproc:   $(nproc)"
echo "cpu:     $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"
echo "kernel:  $(uname -sr)"
echo "nginx:   $(nginx -v 2>&1 | cut -d/ -f2), worker_processes 1"
echo "wrk:     $(wrk -v 2>&1 | head -1 | cut -d' ' -f2), -t$threads -c$conns -d${secs}s (after a ${warmup}s warm-up)"
echo "tally:   $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet HEAD -- crates 2>/dev/null || echo ' (crates/ changed)'), tokio multi-thread runtime, default workers ($(nproc))"
echo "load:    $(cut -d' ' -f1-3 /proc/loadavg) (1/5/15 min)"
echo

# to_ms 1.23ms | 456.00us | 1.02s
to_ms() {
    awk -v v="$1" 'BEGIN {
        if (v ~ /us$/) { sub(/us$/, "", v); printf "%.3f", v / 1000 }
        else if (v ~ /ms$/) { sub(/ms$/, "", v); printf "%.3f", v }
        else if (v ~ /s$/) { sub(/s$/, "", v); printf "%.3f", v * 1000 }
        else print v }'
}

declare -A rps
printf '%-12s %11s %9s %9s %8s %11s %11s %11s\n' target req/s p50_ms p99_ms errors "wrk_cpu%" "nginx_cpu%" "tally_cpu%"
run() { # name url [header...]
    local name=$1 url=$2 hdrs=() out n0 t0 n1 t1 wt
    shift 2
    for h in "$@"; do hdrs+=(-H "$h"); done
    wrk -t"$threads" -c"$conns" -d"${warmup}s" "${hdrs[@]}" "$url" >/dev/null
    n0=$(ticks "$nginx_worker"); t0=$(ticks "$tally_pid")
    out=$( { TIMEFORMAT='%U %S'; time wrk -t"$threads" -c"$conns" -d"${secs}s" --latency "${hdrs[@]}" "$url"; } 2>&1 )
    n1=$(ticks "$nginx_worker"); t1=$(ticks "$tally_pid")
    echo "$out" >"$tmp/wrk-$name.txt"
    wt=$(echo "$out" | tail -1)
    local r p50 p99 bad sock
    r=$(echo "$out" | awk '/^Requests\/sec:/ {print $2}')
    p50=$(to_ms "$(echo "$out" | awk '$1 == "50%" {print $2}')")
    p99=$(to_ms "$(echo "$out" | awk '$1 == "99%" {print $2}')")
    bad=$(echo "$out" | awk '/Non-2xx or 3xx/ {print $NF}')
    sock=$(echo "$out" | awk '/Socket errors/ {s = $4 + $6 + $8 + $10; gsub(",", "", s); print s}')
    rps[$name]=$r
    printf '%-12s %11s %9s %9s %8s %11s %11s %11s\n' "$name" "$r" "$p50" "$p99" "$(( ${bad:-0} + ${sock:-0} ))" \
        "$(echo "$wt" | awk -v s="$secs" '{printf "%.0f", ($1 + $2) / s * 100}')" \
        "$(awk -v a="$n0" -v b="$n1" -v hz="$hz" -v s="$secs" 'BEGIN {printf "%.0f", (b - a) / hz / s * 100}')" \
        "$(awk -v a="$t0" -v b="$t1" -v hz="$hz" -v s="$secs" 'BEGIN {printf "%.0f", (b - a) / hz / s * 100}')"
}

run nginx-204 "http://127.0.0.1:$p_204/"
run tally-check "http://127.0.0.1:$p_tally/v1/check" "$auth" "X-Original-URI: /api/x" "X-Original-Method: GET"
run nginx-proxy "http://127.0.0.1:$p_proxy/"
run tally-proxy "http://127.0.0.1:$p_gate/" "$auth"

echo
awk -v a="${rps[tally-check]}" -v b="${rps[nginx-204]}" -v c="${rps[tally-proxy]}" -v d="${rps[nginx-proxy]}" 'BEGIN {
    printf "ratio tally-check / nginx-204:   %.2f (goal >= 1.0: %s)\n", a / b, (a / b >= 1 ? "met" : "not met")
    printf "ratio tally-proxy / nginx-proxy: %.2f (goal >= 1.0: %s)\n", c / d, (c / d >= 1 ? "met" : "not met")
}'
echo "(cpu% = CPU time during the timed run / wall time; 100% = one core. nginx_cpu% is the one"
echo " nginx worker, which also serves the upstream; tally_cpu% is every tally thread.)"
