#!/usr/bin/env bash
# Runs every tally benchmark in release mode and prints the results (see BENCHMARKS.md).
#
#   bench/run.sh            # all: gate, registry_memory, append
#   bench/run.sh gate       # one or more of: gate registry_memory append
#
# Honours CARGO_TARGET_DIR (default: ./target). Criterion's data goes to
# $CARGO_TARGET_DIR/criterion; the gate summary reads the medians from there
# (needs jq or python3). The ledger bench writes to TALLY_BENCH_DIR (default:
# the system temp dir); its knobs are TALLY_BENCH_RECORDS, TALLY_BENCH_THREADS,
# TALLY_BENCH_SERIAL.
set -euo pipefail

cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
export CRITERION_HOME="$CARGO_TARGET_DIR/criterion"

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(gate registry_memory append)
fi

machine() {
    echo "== machine"
    echo "date:    $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "nproc:   $(nproc)"
    echo "cpu:     $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"
    echo "memory:  $(awk '/MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo)"
    echo "kernel:  $(uname -sr)"
    echo "rustc:   $(rustc --version)"
    if git rev-parse --git-dir >/dev/null 2>&1; then
        echo "commit:  $(git rev-parse --short HEAD)"
        local changed
        changed=$(git diff --name-only HEAD -- crates Cargo.toml Cargo.lock | tr '\n' ' ')
        [ -z "$changed" ] || echo "changed: $changed(uncommitted)"
    fi
    echo "load:    $(cut -d' ' -f1-3 /proc/loadavg) (1/5/15 min)"
    echo
}

# Median (ns) of a criterion benchmark, from its estimates.json.
median_ns() {
    local f="$CRITERION_HOME/$1/new/estimates.json"
    if command -v jq >/dev/null 2>&1; then
        jq '.median.point_estimate' "$f"
    else
        python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["median"]["point_estimate"])' "$f"
    fi
}

gate_summary() {
    local hit base mhit mbase first miss ed es
    hit=$(median_ns gate/hit_seen)
    base=$(median_ns gate/baseline_sha256_lookup)
    mhit=$(median_ns gate_many/hit_seen)
    mbase=$(median_ns gate_many/baseline_sha256_lookup)
    first=$(median_ns gate/first_sight_hit_verify)
    miss=$(median_ns gate/first_sight_miss_verify)
    ed=$(median_ns verify/ed25519)
    es=$(median_ns verify/es256)
    awk -v hit="$hit" -v base="$base" -v mhit="$mhit" -v mbase="$mbase" -v first="$first" -v miss="$miss" -v ed="$ed" -v es="$es" 'BEGIN {
        ratio = hit / base
        printf "== gate summary (criterion medians)\n"
        printf "| benchmark                                   |     median |\n"
        printf "| ------------------------------------------- | ---------- |\n"
        printf "| gate.check, registry hit, seen (timed path) | %7.0f ns |\n", hit
        printf "| baseline: SHA-256 + registry lookup         | %7.0f ns |\n", base
        printf "| same, cycling 50k seen tokens (cache-cold)  | %7.0f ns |\n", mhit
        printf "| baseline, cycling the same 50k tokens       | %7.0f ns |\n", mbase
        printf "| gate.check, registry hit, first sight       | %7.1f us |\n", first / 1000
        printf "| gate.check, registry miss -> verify         | %7.1f us |\n", miss / 1000
        printf "| jose::verify EdDSA (Ed25519)                | %7.1f us |\n", ed / 1000
        printf "| jose::verify ES256 (P-256)                  | %7.1f us |\n", es / 1000
        printf "\n"
        printf "hit / baseline = %.2fx (goal <= 1.5x: %s)\n", ratio, (ratio <= 1.5 ? "met" : "NOT met")
        printf "hit median     = %.0f ns (goal <= 1000 ns: %s)\n", hit, (hit <= 1000 ? "met" : "NOT met")
        printf "cache-cold:    hit / baseline = %.2fx, hit median = %.0f ns (context, not the goal bench)\n", mhit / mbase, mhit
        printf "\n"
    }'
}

machine
for t in "${targets[@]}"; do
    case "$t" in
        gate)
            echo "== cargo bench -p tally-core --bench gate"
            cargo bench -q -p tally-core --bench gate
            echo
            gate_summary
            ;;
        registry_memory)
            echo "== cargo bench -p tally-core --bench registry_memory"
            cargo bench -q -p tally-core --bench registry_memory
            echo
            ;;
        append)
            echo "== cargo bench -p tally-store --bench append"
            echo "(ledger dir file system: $(df -T "${TALLY_BENCH_DIR:-${TMPDIR:-/tmp}}" | awk 'NR == 2 {print $1, $2}'))"
            cargo bench -q -p tally-store --bench append
            echo
            ;;
        *)
            echo "unknown benchmark '$t' (expected: gate registry_memory append)" >&2
            exit 2
            ;;
    esac
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
