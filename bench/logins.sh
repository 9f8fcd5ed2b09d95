#!/usr/bin/env bash
# Resident memory of `tally serve` after many logins (argon2id password checks).
#
#   bench/logins.sh                 # 10,000 logins, 8 clients at a time
#   LOGINS=3000 CLIENTS=16 bench/logins.sh
#
# Builds the release binary (SKIP_BUILD=1, or TALLY_BIN=PATH, uses an existing
# one), starts `tally serve` on a fresh temporary data directory (embedded
# storage, loopback, an ephemeral port), adds one user, and runs LOGINS logins
# (`POST /v1/login` with JSON) from CLIENTS Python threads, each on its own
# keep-alive connection. Prints VmRSS and VmHWM of the server from
# /proc/PID/status before and after, the answers by status, and the rate.
# Needs: python3.
set -euo pipefail

cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
logins="${LOGINS:-10000}"
clients="${CLIENTS:-8}"

bin="${TALLY_BIN:-}"
built=""
if [ -z "$bin" ]; then
    if [ "${SKIP_BUILD:-0}" != 1 ]; then
        cargo build --release -p tally --bin tally >&2
        built=1
    fi
    bin="$CARGO_TARGET_DIR/release/tally"
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/tally-logins.XXXXXX")"
pid=""
cleanup() {
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

echo "== machine"
echo "date:    $(date -u +%Y-%m-%dT%H:%M:%SZ)"
echo "nproc:   $(nproc)"
echo "cpu:     $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"
echo "memory:  $(awk '/MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo)"
echo "binary:  $bin"
if [ -n "$built" ] && git rev-parse --git-dir >/dev/null 2>&1; then
    echo "commit:  $(git rev-parse --short HEAD)"
fi
echo "malloc:  MALLOC_ARENA_MAX=${MALLOC_ARENA_MAX:-unset} MALLOC_MMAP_THRESHOLD_=${MALLOC_MMAP_THRESHOLD_:-unset}"
echo

TALLY_LOG=warn "$bin" init --data "$work/data" >/dev/null
printf 'pw-bench-logins\n' | TALLY_LOG=warn "$bin" users add bench --password-stdin --data "$work/data" >/dev/null
TALLY_LOG=warn "$bin" serve --data "$work/data" --listen 127.0.0.1:0 2>"$work/serve.log" &
pid=$!
addr=""
for _ in $(seq 1 600); do
    addr="$(sed -n 's/^tally listening on http:\/\/\([^ ]*\).*/\1/p' "$work/serve.log" | head -n1)"
    [ -n "$addr" ] && break
    kill -0 "$pid" 2>/dev/null || { cat "$work/serve.log" >&2; exit 1; }
    sleep 0.1
done
[ -n "$addr" ] || { echo "tally did not start" >&2; cat "$work/serve.log" >&2; exit 1; }

mem() {
    awk '/^VmRSS:/ {rss = $2} /^VmHWM:/ {hwm = $2} END {printf "VmRSS %7.1f MB   VmHWM %7.1f MB", rss / 1024, hwm / 1024}' "/proc/$pid/status"
}

echo "== $logins logins, $clients at a time, against $addr"
echo "before:  $(mem)"
python3 - "$addr" "$logins" "$clients" <<'PY'
import collections, http.client, json, sys, threading, time

addr, total, clients = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
host, port = addr.rsplit(":", 1)
body = json.dumps({"username": "bench", "password": "pw-bench-logins"})
lock = threading.Lock()
counts = collections.Counter()
next_index = [0]

def worker():
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    while True:
        with lock:
            if next_index[0] >= total:
                break
            next_index[0] += 1
        try:
            conn.request("POST", "/v1/login", body, {"content-type": "application/json"})
            resp = conn.getresponse()
            resp.read()
            status = resp.status
        except Exception:
            conn.close()
            conn = http.client.HTTPConnection(host, int(port), timeout=60)
            status = "error"
        with lock:
            counts[status] += 1
    conn.close()

start = time.monotonic()
threads = [threading.Thread(target=worker) for _ in range(clients)]
for t in threads:
    t.start()
for t in threads:
    t.join()
took = time.monotonic() - start
answers = ", ".join(f"{k}: {v}" for k, v in sorted(counts.items(), key=str))
print(f"answers: {answers}")
print(f"rate:    {total / took:.0f} logins/s ({took:.1f} s)")
PY
echo "after:   $(mem)"
