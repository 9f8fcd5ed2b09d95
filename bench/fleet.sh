#!/usr/bin/env bash
# Fleet benchmark: tally serve nodes on loopback sharing one PostgreSQL.
#
#   bench/fleet.sh
#
# 1. check throughput: wrk on GET /v1/check (a valid token, registry hit) against one
#    node, then against three nodes at once (one wrk per node), summed;
# 2. issued on node A, accepted on node B: N logins on A, each followed at once by a
#    check of the new token on B (B has usually not followed it yet, so this is the
#    registry miss that asks PostgreSQL); p50/p99/max of the time from A's answer to B's;
# 3. sequencer fail-over: SIGKILL the node that sequences, issue a token on another, and
#    time until a surviving node reports itself sequencer and its checkpoint covers the
#    new record.
# Ledger appends through the fleet store (one node vs three) are measured by
# `cargo bench -p tally-store --bench fleet`.
#
# Knobs: CARGO_TARGET_DIR, PG_URL (postgres://postgres@127.0.0.1:5432/test), BENCH_PORT
# (28700), WRK_CONNS (64), WRK_SECS (10), SAMPLES (200), SKIP_BUILD=1.
# Needs: wrk, curl, jq, python3. Uses its own schema, dropped at the end.
set -euo pipefail

cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
pg="${PG_URL:-postgres://postgres@127.0.0.1:5432/test}"
port0="${BENCH_PORT:-28700}"
conns="${WRK_CONNS:-64}"
secs="${WRK_SECS:-10}"
samples="${SAMPLES:-200}"
schema="bench_fleet_$$"

for tool in wrk curl jq python3 psql; do
    command -v "$tool" >/dev/null 2>&1 || { echo "fleet.sh: $tool not found" >&2; exit 1; }
done
if [ "${SKIP_BUILD:-0}" != 1 ]; then
    cargo build --release -p tally >&2
fi
tally="$CARGO_TARGET_DIR/release/tally"
work="$(mktemp -d)"
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
    psql "$pg" -qc "DROP SCHEMA IF EXISTS $schema CASCADE" >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

master="$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"
start_node() { # name port
    local name="$1" port="$2"
    mkdir -p "$work/$name"
    printf '%s\n' "$master" > "$work/$name/master.key"
    chmod 600 "$work/$name/master.key"
    cat > "$work/$name.toml" <<EOF
listen = "127.0.0.1:$port"
issuer = "http://tally.bench"
[storage]
url = "$pg"
schema = "$schema"
node = "$name"
EOF
    TALLY_LOG=warn "$tally" serve --data "$work/$name" --config "$work/$name.toml" \
        2> "$work/$name.log" &
    pids+=($!)
    disown
    for _ in $(seq 1 200); do
        curl -fs "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    echo "node $name did not start:" >&2; cat "$work/$name.log" >&2; exit 1
}
login() { # port
    curl -fs "http://127.0.0.1:$1/v1/login" -H 'content-type: application/json' \
        -d '{"username":"bench","password":"bench-password-1"}' | jq -r .access_token
}
wrk_rps() { # port token
    wrk -t1 -c"$conns" -d"${secs}s" -H "Authorization: Bearer $2" \
        "http://127.0.0.1:$1/v1/check" | awk '/Requests\/sec/ {print $2}'
}

pa=$port0; pb=$((port0 + 1)); pc=$((port0 + 2))
start_node a "$pa"
echo "bench-password-1" | TALLY_LOG=warn "$tally" users add bench --password-stdin \
    --data "$work/a" --config "$work/a.toml" >/dev/null
token="$(login "$pa")"
one="$(wrk_rps "$pa" "$token")"
start_node b "$pb"
start_node c "$pc"
wrks=()
for p in "$pa" "$pb" "$pc"; do wrk_rps "$p" "$token" > "$work/rps.$p" & wrks+=($!); done
wait "${wrks[@]}"
three="$(cat "$work/rps.$pa" "$work/rps.$pb" "$work/rps.$pc" | awk '{s+=$1} END {print s}')"
printf 'check throughput (wrk -c%s, %ss, registry hit)\n' "$conns" "$secs"
printf '  one node      %10.0f requests/s\n' "$one"
printf '  three nodes   %10.0f requests/s (sum of three; every process shares %s cores)\n' \
    "$three" "$(nproc)"

python3 - "$pa" "$pb" "$samples" <<'EOF'
import json, sys, time, urllib.request
pa, pb, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
def login():
    req = urllib.request.Request(f"http://127.0.0.1:{pa}/v1/login",
        data=json.dumps({"username": "bench", "password": "bench-password-1"}).encode(),
        headers={"content-type": "application/json"})
    return json.load(urllib.request.urlopen(req))["access_token"]
lat, misses = [], 0
for _ in range(n):
    tok = login()
    t0 = time.perf_counter()
    req = urllib.request.Request(f"http://127.0.0.1:{pb}/v1/check",
        headers={"authorization": f"Bearer {tok}"})
    r = urllib.request.urlopen(req)
    lat.append(time.perf_counter() - t0)
    assert r.headers["x-tally-verdict"] == "ok"
lat.sort()
p = lambda q: lat[min(len(lat) - 1, round((len(lat) - 1) * q))] * 1000
print(f"issued on A, accepted on B ({n} tokens): p50 {p(0.5):.2f} ms  p99 {p(0.99):.2f} ms  max {p(1):.2f} ms")
EOF

leader=""
for p in "$pa" "$pb" "$pc"; do
    if [ "$(curl -fs "http://127.0.0.1:$p/readyz" | jq -r .sequencer)" = true ]; then leader=$p; fi
done
[ -n "$leader" ] || { echo "no node sequences" >&2; exit 1; }
idx=$((leader - port0))
others=()
for p in "$pa" "$pb" "$pc"; do [ "$p" = "$leader" ] || others+=("$p"); done
size() { curl -fs "http://127.0.0.1:$1/v1/ledger/checkpoint" | sed -n 2p; }
before="$(size "${others[0]}")"
t0="$(date +%s.%N)"
kill -9 "${pids[$idx]}"
login "${others[0]}" >/dev/null
while :; do
    s="$(size "${others[1]}" || echo 0)"
    seq_now=false
    for p in "${others[@]}"; do
        [ "$(curl -fs "http://127.0.0.1:$p/readyz" | jq -r .sequencer)" = true ] && seq_now=true
    done
    if [ "$seq_now" = true ] && [ "$s" -gt "$before" ]; then break; fi
    sleep 0.01
done
t1="$(date +%s.%N)"
python3 -c "print(f'sequencer fail-over (SIGKILL → new record in a checkpoint on another node): {($t1 - $t0) * 1000:.0f} ms')"
