#!/usr/bin/env bash
# Whole-system benchmark: a flood of maximal hostile requests against one tally, beside a
# legitimate client, on loopback with wrk. Measures what the flood costs in memory and disk,
# and whether every decision is still in the access log.
#
#   bench/hostile.sh [SECONDS]          # default 60
#
# tally runs embedded (fresh data directory) with `trusted_proxies = ["127.0.0.1/32"]`, so the
# two wrk processes can name their client addresses in X-Forwarded-For:
#   hostile  HOSTILE_THREADS x HOSTILE_CONNS: `GET /v1/check` where every request carries a
#            60 KB X-Original-URI, a 12 KB X-Device-Id, a 4 KB garbage bearer token and a
#            random client address from 10.0.0.0/8 (a new actor nearly every time): about the
#            most header bytes wrk sends (its parser stops at 80 KB per request), and the
#            most distinct actors.
#   legit    1 thread, LEGIT_CONNS connections: `GET /v1/check` with one valid token from
#            198.51.100.7 (a registry hit).
# Reported:
#   * tally's RSS (VmRSS) before the flood, its peak during it (sampled every 200 ms) and after;
#     growth = peak - before;
#   * the access log: bytes written per second of flood (access.db and its WAL), rows written;
#   * decisions: what tally counted (/metrics, tally_gate_decisions_total) against what the
#     access log holds (rows, plus the counts of aggregate rows, read back with
#     `tally access tail`): "unaccounted" is the difference, and must be 0; the legitimate
#     requests answered 200 by wrk against the `ok` rows of the log.
#
# With SPREAD=0 the hostile requests all come from one address (203.0.113.5) instead.
# Knobs (environment): TALLY_BIN (a tally binary to measure instead of building this tree's,
# e.g. an older build for a before/after), CARGO_TARGET_DIR, BENCH_PORT (28750),
# HOSTILE_THREADS (2), HOSTILE_CONNS (64), LEGIT_CONNS (2), FIELD_BYTES (60000: the URI;
# the device id is a fifth of it).
# Needs: wrk (installed with apt-get when missing and run as root), curl, python3, awk.
set -euo pipefail

cd "$(dirname "$0")/.."
secs="${1:-60}"
port="${BENCH_PORT:-28750}"
ht="${HOSTILE_THREADS:-2}"
hc="${HOSTILE_CONNS:-64}"
lc="${LEGIT_CONNS:-2}"
spread="${SPREAD:-1}"
field="${FIELD_BYTES:-60000}"

if ! command -v wrk >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get install -y wrk >&2 || { apt-get update >&2 && apt-get install -y wrk >&2; }
fi
for tool in wrk curl python3; do
    command -v "$tool" >/dev/null 2>&1 || { echo "hostile.sh: $tool not found" >&2; exit 1; }
done

if [ -n "${TALLY_BIN:-}" ]; then
    tally="$TALLY_BIN"
else
    export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
    cargo build --release -p tally >&2
    tally="$CARGO_TARGET_DIR/release/tally"
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/tally-hostile.XXXXXX")
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

cat >"$tmp/tally.toml" <<EOF
version = 1
token_ttl_secs = 7200
trusted_proxies = ["127.0.0.1/32"]
EOF
TALLY_LOG=warn "$tally" init --data "$tmp/data" --config "$tmp/tally.toml" >/dev/null
echo bench-passphrase | "$tally" users add bench --password-stdin --data "$tmp/data" --config "$tmp/tally.toml" >/dev/null
TALLY_LOG=warn "$tally" serve --data "$tmp/data" --listen "127.0.0.1:$port" \
    --config "$tmp/tally.toml" >"$tmp/tally.log" 2>&1 &
pid=$!
pids+=("$pid")
for _ in $(seq 1 200); do
    curl -sf -o /dev/null "http://127.0.0.1:$port/healthz" && break
    sleep 0.1
done
token=$(curl -sf -XPOST "http://127.0.0.1:$port/v1/login" -H 'content-type: application/json' \
    -d '{"username":"bench","password":"bench-passphrase"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')

cat >"$tmp/hostile.lua" <<'EOF'
local field, device, junk
local spread = true
function init(args)
    local n = tonumber(args[1])
    math.randomseed(os.time() * 1000 + math.random(1000))
    local t = {}
    for i = 1, n do t[i] = string.char(97 + (i * 7) % 26) end
    field = table.concat(t)
    device = string.sub(field, 1, math.floor(n / 5))
    junk = string.sub(field, 1, 4096)
    spread = args[2] ~= "0"
end
function request()
    local xff = "203.0.113.5"
    if spread then
        xff = string.format("10.%d.%d.%d", math.random(0, 255), math.random(0, 255), math.random(1, 254))
    end
    return wrk.format("GET", "/v1/check", {
        ["X-Original-URI"] = "/" .. field .. math.random(1e9),
        ["X-Original-Method"] = "GET",
        ["X-Device-Id"] = device .. math.random(1e9),
        ["Authorization"] = "Bearer " .. junk .. "." .. math.random(1e9) .. ".x",
        ["X-Forwarded-For"] = xff,
    })
end
local ok = 0
function response(status) if status == 200 then ok = ok + 1 end end
EOF
cat >"$tmp/legit.lua" <<'EOF'
local token
function init(args) token = args[1] end
function request()
    return wrk.format("GET", "/v1/check", {
        ["Authorization"] = "Bearer " .. token,
        ["X-Forwarded-For"] = "198.51.100.7",
        ["X-Original-URI"] = "/api/orders",
        ["X-Original-Method"] = "GET",
    })
end
local threads = {}
function setup(thread) table.insert(threads, thread) end
ok = 0
function response(status) if status == 200 then ok = ok + 1 end end
function done()
    local n = 0
    for _, t in ipairs(threads) do n = n + t:get("ok") end
    io.write(string.format("legit_ok %d\n", n))
end
EOF

rss() { awk '/^VmRSS/ {print $2}' "/proc/$pid/status"; }
disk() { du -sb "$tmp/data" | cut -f1; }
metrics() { curl -sf "http://127.0.0.1:$port/metrics"; }
decisions() {
    metrics | awk '/^tally_gate_decisions_total\{/ {s += $2} END {printf "%d\n", s}'
}

sleep 1
rss_before=$(rss)
disk_before=$(disk)
(
    peak=0
    while kill -0 "$pid" 2>/dev/null && [ ! -e "$tmp/stop" ]; do
        r=$(rss || echo 0)
        [ "$r" -gt "$peak" ] && peak=$r
        echo "$peak" >"$tmp/peak"
        sleep 0.2
    done
) &
pids+=("$!")

wrk -t1 -c"$lc" -d"${secs}s" -s "$tmp/legit.lua" "http://127.0.0.1:$port" -- "$token" \
    >"$tmp/legit.out" 2>&1 &
legit_pid=$!
wrk -t"$ht" -c"$hc" -d"${secs}s" -s "$tmp/hostile.lua" "http://127.0.0.1:$port" -- "$field" "$spread" \
    >"$tmp/hostile.out" 2>&1 || true
wait "$legit_pid" || true
touch "$tmp/stop"
rss_peak=$(cat "$tmp/peak")

# The log catches up: wait until the decision count stops moving and the log has them.
decided=$(decisions)
for _ in $(seq 1 120); do
    sleep 0.5
    now=$(decisions)
    logged=$(metrics | awk '/^tally_access_decisions_logged_total / {print $2}')
    if [ "$now" = "$decided" ] && [ "${logged:-x}" = "$now" ]; then break; fi
    decided=$now
done
sleep 2
rss_after=$(rss)
disk_after=$(disk)

"$tally" access tail --limit 100000000 --data "$tmp/data" --config "$tmp/tally.toml" >"$tmp/rows.jsonl"
read -r rows in_log ok_rows < <(python3 - "$tmp/rows.jsonl" <<'PY'
import json, sys
rows = in_log = ok = 0
for line in open(sys.argv[1]):
    try:
        e = json.loads(line)
    except ValueError:
        continue
    rows += 1
    in_log += e.get("count") or 1
    if e.get("verdict") == "ok":
        ok += 1
print(rows, in_log, ok)
PY
)
decided=$(decisions)
legit_ok=$(awk '/^legit_ok/ {print $2}' "$tmp/legit.out")
if ! grep -q "requests in" "$tmp/hostile.out"; then
    echo "hostile.sh: the hostile wrk did not run:" >&2
    cat "$tmp/hostile.out" >&2
    exit 1
fi
hostile_reqs=$(awk '/requests in/ {print $1}' "$tmp/hostile.out")
legit_reqs=$(awk '/requests in/ {print $1}' "$tmp/legit.out")

echo "== machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo), $(uname -sr); tally: $("$tally" --version 2>/dev/null || echo "$tally")"
echo "== hostile flood, ${secs} s: ${ht} threads x ${hc} connections, ${field}-byte URIs, $([ "$spread" = 0 ] && echo "one address" || echo "a new address nearly every request")"
printf "requests          hostile %s, legit %s\n" "$hostile_reqs" "$legit_reqs"
awk -v b="$rss_before" -v p="$rss_peak" -v a="$rss_after" 'BEGIN {
    printf "rss (MB)          before %.1f, peak %.1f, after %.1f, growth %.1f\n", b/1024, p/1024, a/1024, (p-b)/1024 }'
awk -v d0="$disk_before" -v d1="$disk_after" -v s="$secs" -v r="$rows" 'BEGIN {
    printf "access log        %.2f MB/s written (%d rows, %.1f MB in all)\n", (d1-d0)/1048576/s, r, (d1-d0)/1048576 }'
printf "decisions         counted %s, in the log %s, unaccounted %s\n" "$decided" "$in_log" "$((decided - in_log))"
# wrk stops counting at the deadline: a request answered after it is in the
# log but not in wrk's count, so the log may hold a few more, never fewer.
missing=$((legit_ok - ok_rows))
[ "$missing" -lt 0 ] && missing=0
printf "legitimate        answered 200: %s, ok rows in the log: %s, missing %s\n" "$legit_ok" "$ok_rows" "$missing"
