#!/usr/bin/env bash
# Whole-system benchmark: legitimate `/v1/check` traffic while a flood of forged tokens
# hits the same tally, with wrk, on loopback.
#
#   bench/flood.sh
#
# Two simulated clients behind a load balancer: tally is configured with
# `trusted_proxies = ["127.0.0.1/32"]`, so it takes the client address from `X-Forwarded-For`,
# and the two wrk processes send different ones:
#   legit   198.51.100.7   `GET /v1/check` with one valid token (registry hit, already seen)
#   flood   203.0.113.5    `GET /v1/check` with a new forged token on every request: a
#                          syntactically valid JWT whose header names the real kid and alg of
#                          tally's signing key (from /.well-known/jwks.json), a random jti
#                          (96 bits) and a random 64-byte signature. Each one is a registry
#                          miss, so without the limiter each costs one signature verification
#                          (`bad_signature`). The signature's S half is kept below 2^252 (< the
#                          group order L): a non-canonical S is refused before any curve
#                          arithmetic, and 15 of 16 uniformly random signatures would be, making
#                          the flood much cheaper for tally.
# Scenarios, each on a fresh tally (own data directory, one user, one token from /v1/login):
#   limiter on   miss_rate_per_sec = MISS_RATE_PER_SEC, miss_burst = MISS_BURST
#   limiter off  miss_rate_per_sec = miss_burst = 1e9 (every miss is verified)
# and in each: legit alone, flood alone, both at once (two wrk processes in parallel, each
# with its own threads and connections, same duration). With CONTROL=1, also, with the
# limiter on: legit plus a second legit client (another address, another valid token, the
# flood's threads and connections): the same load made only of registry hits, the cheapest
# request tally answers, for comparison with the refused flood.
#
# Prints, per phase: legit req/s and p50/p99, flood req/s and p99, the ratio
# legit-during-flood / legit-alone (same limiter setting), CPU used by tally, by each wrk and
# by everything else on the machine, the flood's answers by `X-Tally-Verdict` (counted in
# wrk's Lua `response` callback) and tally's /metrics deltas (decisions by verdict, access
# events written and dropped).
#
# Knobs (environment): CARGO_TARGET_DIR (default ./target), BENCH_PORT (first of two
# loopback ports, default 28700), WRK_SECS (10), WRK_WARMUP_SECS (2, discarded),
# LEGIT_THREADS (1), LEGIT_CONNS (32), FLOOD_THREADS (1), FLOOD_CONNS (32),
# MISS_RATE_PER_SEC (50), MISS_BURST (200), UNLIMITED (1: also run with the limiter off),
# CONTROL (1: also run the two-legit-clients control), SKIP_BUILD=1 to use an existing binary.
# Needs: wrk (installed with apt-get when missing and run as root), curl, jq.
set -euo pipefail

cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
port0="${BENCH_PORT:-28700}"
secs="${WRK_SECS:-10}"
warmup="${WRK_WARMUP_SECS:-2}"
lt="${LEGIT_THREADS:-1}"
lc="${LEGIT_CONNS:-32}"
ft="${FLOOD_THREADS:-1}"
fc="${FLOOD_CONNS:-32}"
miss_rate="${MISS_RATE_PER_SEC:-50}"
miss_burst="${MISS_BURST:-200}"
legit_ip=198.51.100.7
flood_ip=203.0.113.5
legit2_ip=192.0.2.44

if ! command -v wrk >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        apt-get install -y wrk >&2 || { apt-get update >&2 && apt-get install -y wrk >&2; }
    fi
fi
for tool in wrk curl jq; do
    command -v "$tool" >/dev/null 2>&1 || { echo "flood.sh: $tool not found" >&2; exit 1; }
done

if [ "${SKIP_BUILD:-0}" != 1 ]; then
    cargo build --release -p tally >&2
fi
tally="$CARGO_TARGET_DIR/release/tally"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/tally-flood-bench.XXXXXX")
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

b64url() { base64 -w0 | tr '+/' '-_' | tr -d '='; }
unb64url() { # the JSON in one base64url segment
    local s
    s=$(tr -- '-_' '+/')
    while [ $(( ${#s} % 4 )) != 0 ]; do s+='='; done
    echo "$s" | base64 -d
}

# The flood: a new forged token per request. Arguments after `--`: the token header
# (base64url), iss, aud, the X-Forwarded-For address, a seed.
cat >"$tmp/flood.lua" <<'EOF'
local bit = require("bit")
local alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
local char, rnd, concat = string.char, math.random, table.concat

-- Unpadded base64url of string s (used at start and once a second, not per request).
local function b64url(s)
    local out = {}
    for i = 1, #s, 3 do
        local a, b, c = s:byte(i, i + 2)
        local v = bit.bor(bit.lshift(a, 16), bit.lshift(b or 0, 8), c or 0)
        for j = 1, (c and 4) or (b and 3) or 2 do
            local k = bit.band(bit.rshift(v, 24 - 6 * j), 63) + 1
            out[#out + 1] = alphabet:sub(k, k)
        end
    end
    return concat(out)
end

local threads = {}
function setup(thread)
    thread:set("id", #threads + 1)
    table.insert(threads, thread)
end

local header, iss, aud, xff, path, suffix
local quads, codes = {}, {}
local sec, prefix = -1, nil
counts = {}

function init(args)
    header, iss, aud, xff = args[1], args[2], args[3], args[4]
    math.randomseed((tonumber(args[5]) or os.time()) * 64 + id)
    path = wrk.path
    for i = 0, 63 do codes[i] = alphabet:byte(i + 1) end
    -- 4096 three-character pieces of jti, each already base64url-encoded (4 characters):
    -- a jti is 8 of them (24 characters, 96 random bits).
    for i = 1, 4096 do
        quads[i] = b64url(char(codes[rnd(0, 63)], codes[rnd(0, 63)], codes[rnd(0, 63)]))
    end
    suffix = b64url('","client_id":"tally"}')
end

local sig = {}
function request()
    local now = os.time()
    if now ~= sec then
        -- the claims before the jti, padded to a multiple of 3 bytes so that its
        -- encoding and the jti's can be concatenated
        local p = '{"iss":"' .. iss .. '","aud":"' .. aud .. '","exp":' .. (now + 900)
            .. ',"iat":' .. now .. ',"sub":"mallory'
        p = p .. string.rep("x", (3 - (#p + 9) % 3) % 3) .. '","jti":"'
        sec, prefix = now, b64url(p)
    end
    local jti = concat({ quads[rnd(4096)], quads[rnd(4096)], quads[rnd(4096)], quads[rnd(4096)],
        quads[rnd(4096)], quads[rnd(4096)], quads[rnd(4096)], quads[rnd(4096)] })
    -- 64 random signature bytes, written directly as 86 base64url characters. Ed25519's
    -- signature is R || S with S little-endian: the last byte (characters 85 and 86) is kept
    -- below 16, so S < 2^252 < L is canonical and the verifier does the full curve
    -- arithmetic before refusing it.
    for i = 1, 84 do sig[i] = codes[rnd(0, 63)] end
    sig[85], sig[86] = codes[rnd(0, 3)], codes[rnd(0, 3) * 16]
    local token = header .. "." .. prefix .. jti .. suffix .. "." .. char(unpack(sig, 1, 86))
    return wrk.format("GET", path, {
        ["Authorization"] = "Bearer " .. token,
        ["X-Forwarded-For"] = xff,
        ["X-Original-URI"] = "/api/x",
        ["X-Original-Method"] = "GET",
    })
end

function response(status, headers, body)
    local v = headers["x-tally-verdict"] or headers["X-Tally-Verdict"] or ("http_" .. status)
    counts[v] = (counts[v] or 0) + 1
end

function done(summary, latency, requests)
    local total = {}
    for _, t in ipairs(threads) do
        for k, v in pairs(t:get("counts")) do total[k] = (total[k] or 0) + v end
    end
    for k, v in pairs(total) do io.write(string.format("verdict %s %d\n", k, v)) end
end
EOF

wait_for() {
    for _ in $(seq 1 100); do
        curl -s -o /dev/null "http://127.0.0.1:$1/" && return 0
        sleep 0.1
    done
    echo "flood.sh: nothing answers on port $1" >&2
    cat "$tmp"/tally-*.log >&2
    exit 1
}

# start_tally NAME PORT RATE BURST: a fresh tally; sets tally_pid, url, token, token2, fhdr, iss.
start_tally() {
    local name=$1 port=$2 rate=$3 burst=$4 dir="$tmp/$1" jwks kid alg
    mkdir -p "$dir"
    cat >"$dir/tally.toml" <<EOF
version = 1
token_ttl_secs = 3600
trusted_proxies = ["127.0.0.1/32"]
miss_rate_per_sec = $rate
miss_burst = $burst
EOF
    "$tally" init --data "$dir/data" --config "$dir/tally.toml" --listen "127.0.0.1:$port" >/dev/null
    echo bench-passphrase | "$tally" users add bench --password-stdin --data "$dir/data" --config "$dir/tally.toml" >/dev/null
    TALLY_LOG=warn "$tally" serve --data "$dir/data" --listen "127.0.0.1:$port" \
        --config "$dir/tally.toml" >"$tmp/tally-$name.log" 2>&1 &
    pids+=($!)
    tally_pid=$!
    wait_for "$port"
    url="http://127.0.0.1:$port/v1/check"
    login() {
        curl -sf -XPOST "http://127.0.0.1:$port/v1/login" -H 'content-type: application/json' \
            -d '{"username":"bench","password":"bench-passphrase"}' | jq -r .access_token
    }
    token=$(login)
    token2=$(login)
    for t in "$token" "$token2"; do
        [ -n "$t" ] && [ "$t" != null ] || { echo "flood.sh: login failed" >&2; exit 1; }
    done
    # The forged tokens' header: the real kid and alg of the key that signed the token.
    jwks=$(curl -sf "http://127.0.0.1:$port/.well-known/jwks.json")
    kid=$(echo "$token" | cut -d. -f1 | unb64url | jq -r .kid)
    echo "$jwks" | jq -e --arg k "$kid" '.keys[] | select(.kid == $k)' >/dev/null ||
        { echo "flood.sh: kid $kid of the issued token is not in jwks.json" >&2; exit 1; }
    alg=$(echo "$jwks" | jq -r --arg k "$kid" '.keys[] | select(.kid == $k) | .alg')
    fhdr=$(jq -cn --arg a "$alg" --arg k "$kid" '{alg: $a, kid: $k, typ: "at+jwt"}' | tr -d '\n' | b64url)
    iss=$(echo "$token" | cut -d. -f2 | unb64url | jq -r .iss)
    echo "tally ($name): port $port, miss_rate_per_sec = $rate, miss_burst = $burst, key $kid ($alg)"
}

# verdict_of TOKEN XFF: "status verdict" of one /v1/check.
verdict_of() {
    curl -s -o /dev/null -D - -H "Authorization: Bearer $1" -H "X-Forwarded-For: $2" "$url" |
        awk 'NR == 1 {s = $2} tolower($1) == "x-tally-verdict:" {v = $2} END {gsub("\r", "", v); print s, v}'
}
# One forged token made the same way as the Lua script does (S < 2^252), for the checks.
forged() {
    local now claims sig
    now=$(date +%s)
    claims=$(printf '{"iss":"%s","sub":"mallory","aud":"tally","exp":%d,"iat":%d,"jti":"check-%s","client_id":"tally"}' \
        "$iss" $((now + 900)) "$now" "$RANDOM$RANDOM" | b64url)
    sig=$( { head -c 63 /dev/urandom; printf "\\$(printf %03o $((RANDOM % 16)))"; } | b64url)
    echo "$fhdr.$claims.$sig"
}
expect() { # what got want
    [ "$2" = "$3" ] || { echo "flood.sh: $1 answered '$2', expected '$3'" >&2; exit 1; }
}

ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# user+nice+system+irq+softirq (busy) and steal, all CPUs, in clock ticks.
machine() { awk '/^cpu / {print $2 + $3 + $4 + $7 + $8, $9}' /proc/stat; }
hz=$(getconf CLK_TCK)
pct() { awk -v a="$1" -v b="$2" -v hz="$hz" -v s="$secs" 'BEGIN {printf "%.0f", (b - a) / hz / s * 100}'; }
to_ms() {
    awk -v v="$1" 'BEGIN {
        if (v ~ /us$/) { sub(/us$/, "", v); printf "%.2f", v / 1000 }
        else if (v ~ /ms$/) { sub(/ms$/, "", v); printf "%.2f", v }
        else if (v ~ /s$/) { sub(/s$/, "", v); printf "%.2f", v * 1000 }
        else print v }'
}
metrics() {
    curl -sf "${url%/v1/check}/metrics" | awk '
        /^tally_gate_decisions_total/ { split($1, a, "\""); print a[2], $2 }
        /^tally_access_events_(written|dropped)_total/ { sub(/^tally_access_events_/, "", $1); sub(/_total$/, "", $1); print "events_" $1, $2 }'
}

wrk_legit() { # secs xff token
    wrk -t"$lt" -c"$lc" -d"$1s" --latency -H "Authorization: Bearer $3" -H "X-Forwarded-For: $2" \
        -H "X-Original-URI: /api/x" -H "X-Original-Method: GET" "$url"
}
wrk_second() { # secs: the control, a second legit client with the flood's threads/connections
    wrk -t"$ft" -c"$fc" -d"$1s" --latency -H "Authorization: Bearer $token2" -H "X-Forwarded-For: $legit2_ip" \
        -H "X-Original-URI: /api/x" -H "X-Original-Method: GET" "$url"
}
wrk_flood() { # secs
    wrk -t"$ft" -c"$fc" -d"$1s" --latency -s "$tmp/flood.lua" "$url" -- \
        "$fhdr" "$iss" tally "$flood_ip" "$((RANDOM * 32768 + RANDOM))"
}
timed() { # outfile command...: the command's stdout to outfile, its user and system seconds to outfile.time
    local out=$1
    shift
    { TIMEFORMAT='%U %S'; time "$@" >"$out"; } 2>"$out.time"
}
wrk_cpu() { [ -s "$1.time" ] && tail -1 "$1.time" | awk -v s="$secs" '{printf "%.0f", ($1 + $2) / s * 100}' || echo -; }
field() { # wrkfile what
    case $2 in
        rps) awk '/^Requests\/sec:/ {printf "%.0f", $2}' "$1" ;;
        p50) to_ms "$(awk '$1 == "50%" {print $2}' "$1")" ;;
        p99) to_ms "$(awk '$1 == "99%" {print $2}' "$1")" ;;
        non2xx) awk '/Non-2xx or 3xx/ {n = $NF} END {print n + 0}' "$1" ;;
        sockerr) awk '/Socket errors/ {gsub(",", ""); s = $4 + $6 + $8 + $10} END {print s + 0}' "$1" ;;
    esac
}

declare -A legit_alone
rows=()
details=()
# phase LABEL LIMITER LEGIT(0/1) OTHER(none|flood|second)
phase() {
    local label=$1 lim=$2 legit=$3 other=$4 ps=() fl="$tmp/legit.out" fo="$tmp/other.out"
    rm -f "$fl" "$fl.time" "$fo" "$fo.time"
    # warm-up (discarded), the same commands
    [ "$legit" = 1 ] && { wrk_legit "$warmup" "$legit_ip" "$token" >/dev/null & ps+=($!); }
    case $other in
        flood) wrk_flood "$warmup" >/dev/null & ps+=($!) ;;
        second) wrk_second "$warmup" >/dev/null & ps+=($!) ;;
    esac
    wait "${ps[@]}"
    ps=()
    local t0 t1 b0 b1 s0 s1 l0
    metrics >"$tmp/m0"
    l0=$(cut -d' ' -f1 /proc/loadavg)
    t0=$(ticks "$tally_pid")
    read -r b0 s0 < <(machine)
    [ "$legit" = 1 ] && { timed "$fl" wrk_legit "$secs" "$legit_ip" "$token" & ps+=($!); }
    case $other in
        flood) timed "$fo" wrk_flood "$secs" & ps+=($!) ;;
        second) timed "$fo" wrk_second "$secs" & ps+=($!) ;;
    esac
    wait "${ps[@]}"
    t1=$(ticks "$tally_pid")
    read -r b1 s1 < <(machine)
    metrics >"$tmp/m1"
    local lr=- l50=- l99=- lerr=- orr=- o99=- oerr=- ratio=- ct cm cl co rest steal us
    if [ "$legit" = 1 ]; then
        lr=$(field "$fl" rps); l50=$(field "$fl" p50); l99=$(field "$fl" p99)
        lerr=$(( $(field "$fl" non2xx) + $(field "$fl" sockerr) ))
        if [ "$other" = none ]; then
            legit_alone[$lim]=$lr
        elif [ -n "${legit_alone[$lim]:-}" ]; then
            ratio=$(awk -v a="$lr" -v b="${legit_alone[$lim]}" 'BEGIN {printf "%.2f", a / b}')
        fi
    fi
    if [ "$other" != none ]; then
        orr=$(field "$fo" rps); o99=$(field "$fo" p99)
        oerr=$(field "$fo" sockerr)
        [ "$other" = second ] && oerr=$((oerr + $(field "$fo" non2xx)))
    fi
    ct=$(pct "$t0" "$t1")
    cm=$(pct "$b0" "$b1")
    steal=$(pct "$s0" "$s1")
    cl=$( [ "$legit" = 1 ] && wrk_cpu "$fl" || echo 0)
    co=$( [ "$other" != none ] && wrk_cpu "$fo" || echo 0)
    us=$(awk -v t="$ct" -v a="${lr/-/0}" -v b="${orr/-/0}" 'BEGIN {printf "%.0f", t / 100 / (a + b) * 1e6}')
    rest=$(awk -v m="$cm" -v t="$ct" -v a="${cl/-/0}" -v b="${co/-/0}" 'BEGIN {printf "%.0f", m - t - a - b}')
    local line
    line=$(printf '%-27s %-3s %9s %6s %6s %6s %9s %7s %5s %5s %6s %6s %5s %5s %5s %5s %5s %5s' \
        "$label" "$lim" "$lr" "$l50" "$l99" "$lerr" "$orr" "$o99" "$oerr" "$ratio" \
        "$ct" "$us" "$cl" "$co" "$rest" "$cm" "$steal" "$l0")
    rows+=("$line")
    echo "$line"
    local v
    v="$label, limiter $lim:"
    if [ "$other" = flood ]; then
        local odd
        odd=$(awk -v lim="$lim" '/^verdict / && !($2 == "bad_signature" || ($2 == "unavailable" && lim == "on")) {printf " %s=%s", $2, $3}' "$fo")
        [ -z "$odd" ] || echo "flood.sh: warning: $label, limiter $lim: unexpected flood answers:$odd" >&2
        v+=" flood answers by X-Tally-Verdict (wrk):"
        v+=$(awk '/^verdict / {printf " %s=%s", $2, $3}' "$fo")
        v+=";"
    fi
    v+=" tally /metrics deltas:"
    v+=$(awk 'NR == FNR {a[$1] = $2; next} $2 - a[$1] > 0 || $1 ~ /^events_/ {printf " %s=%d", $1, $2 - a[$1]}' "$tmp/m0" "$tmp/m1")
    details+=("$v")
}

echo "== machine"
echo "date:    $(date -u +%Y-%m-%dT%H:%M:%SZ)"
echo "nproc:   $(nproc)"
echo "cpu:     $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"
echo "kernel:  $(uname -sr)"
echo "wrk:     $(wrk -v 2>&1 | head -1 | cut -d' ' -f2), legit -t$lt -c$lc, flood -t$ft -c$fc, -d${secs}s each (after a ${warmup}s warm-up)"
echo "tally:   $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet HEAD -- crates 2>/dev/null || echo ' (crates/ changed)'), tokio multi-thread runtime, default workers ($(nproc))"
echo "load:    $(cut -d' ' -f1-3 /proc/loadavg) (1/5/15 min)"
echo

header=$(printf '%-27s %-3s %9s %6s %6s %6s %9s %7s %5s %5s %6s %6s %5s %5s %5s %5s %5s %5s' \
    scenario lim legit_r/s p50_ms p99_ms errors flood_r/s f_p99ms f_err ratio \
    tally% us/req wrkL% wrkF% rest% busy% steal load1)
echo "$header"

configs=("on 0 $miss_rate $miss_burst")
[ "${UNLIMITED:-1}" = 1 ] && configs+=("off 1 1000000000.0 1000000000.0")
for c in "${configs[@]}"; do
    read -r lim off rate burst <<<"$c"
    start_tally "limiter-$lim" $((port0 + off)) "$rate" "$burst" >"$tmp/start-$lim.txt"
    # Every client must be answered as expected before it is timed.
    expect "legit token" "$(verdict_of "$token" "$legit_ip")" "200 ok"
    expect "second legit token" "$(verdict_of "$token2" "$legit2_ip")" "200 ok"
    expect "forged token" "$(verdict_of "$(forged)" 192.0.2.200)" "401 bad_signature"
    phase "legit alone" "$lim" 1 none
    phase "flood alone" "$lim" 0 flood
    phase "legit + flood" "$lim" 1 flood
    [ "$lim" = on ] && [ "${CONTROL:-1}" = 1 ] && phase "legit + 2nd legit (control)" "$lim" 1 second
    expect "legit token after the flood" "$(verdict_of "$token" "$flood_ip")" "200 ok"
    kill "$tally_pid"
    wait "$tally_pid" 2>/dev/null || true
done

echo
for c in "${configs[@]}"; do cat "$tmp/start-${c%% *}.txt"; done
echo
echo "$header"
printf '%s\n' "${rows[@]}"
echo
printf '%s\n' "${details[@]}"
echo
echo "(legit = wrk with one valid token from $legit_ip; flood = wrk sending a new forged token per"
echo " request from $flood_ip; errors = legit non-2xx + socket errors; f_err = flood socket errors"
echo " (its answers are all refusals by design); ratio = legit r/s in this phase / legit alone, same"
echo " limiter setting. CPU in % of one core over the timed phase: tally = every tally thread"
echo " (/proc/PID/stat); us/req = tally's CPU time / all requests answered; wrkL/wrkF = each wrk"
echo " (bash time); busy = the whole machine (/proc/stat, of $(( $(nproc) * 100 ))); rest = busy - tally - wrks"
echo " (other jobs, kernel work charged to no process); steal = time the hypervisor gave to other"
echo " guests; load1 = 1-min load average at the phase's start.)"
