#!/usr/bin/env bash
# Runs every cargo-fuzz target (or the ones named) for a chosen time and
# prints one table: runs, executions per second, coverage, corpus size, and
# what went wrong (crashes, hangs, out-of-memory).
#
#   bench/fuzz.sh                     # every target, 60 s each
#   FUZZ_SECONDS=600 bench/fuzz.sh jws dpop
#
# Targets and their input formats: crates/tally-fuzz/src/*.rs. Seeds are
# read from fuzz/seeds/<target> (never written); what the fuzzer finds is
# kept in fuzz/corpus/<target> (not in the repository) so that later runs
# start from it; FUZZ_FRESH=1 starts each run from the seeds alone.
# A crash, hang (FUZZ_TIMEOUT seconds for one input, default 5) or
# out-of-memory (FUZZ_RSS_MB, default 2048) is written to
# fuzz/artifacts/<target>/ and shown in hex; the script then exits 1.
# To keep it as a regression test, copy it to fuzz/regressions/<target>/
# (`cargo test -p tally-fuzz` replays every file there).
# Needs: the nightly toolchain and cargo-fuzz (installed when missing).
set -euo pipefail

cd "$(dirname "$0")/.."
seconds="${FUZZ_SECONDS:-60}"
timeout="${FUZZ_TIMEOUT:-5}"
rss="${FUZZ_RSS_MB:-2048}"
all=(jws record note target dpop config tiles)
if [ "$#" -gt 0 ]; then targets=("$@"); else targets=("${all[@]}"); fi
for t in "${targets[@]}"; do
    if [ ! -f "fuzz/fuzz_targets/$t.rs" ]; then
        echo "bench/fuzz.sh: no fuzz target named $t (targets: ${all[*]})" >&2
        exit 2
    fi
    if [ ! -d "fuzz/seeds/$t" ]; then
        echo "bench/fuzz.sh: fuzz/seeds/$t is missing (python3 fuzz/seeds/generate.py writes it)" >&2
        exit 2
    fi
done

if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "cargo-fuzz is missing: installing it (cargo install cargo-fuzz --locked)" >&2
    cargo install cargo-fuzz --locked >&2
fi
echo "building the fuzz targets (nightly, address sanitizer)..." >&2
cargo +nightly fuzz build >&2

logs="$(mktemp -d "${TMPDIR:-/tmp}/tally-fuzz.XXXXXX")"
trap 'rm -rf "$logs"' EXIT
failed=0
rows=()
for t in "${targets[@]}"; do
    corpus="fuzz/corpus/$t"
    if [ "${FUZZ_FRESH:-0}" = 1 ]; then corpus="$logs/corpus-$t"; fi
    artifacts="fuzz/artifacts/$t"
    mkdir -p "$corpus" "$artifacts"
    dict=()
    case "$t" in
        jws | dpop) dict=(-dict=fuzz/dicts/json.dict) ;;
        target) dict=(-dict=fuzz/dicts/target.dict) ;;
        note) dict=(-dict=fuzz/dicts/note.dict) ;;
        config) dict=(-dict=fuzz/dicts/config.dict) ;;
    esac
    find "$artifacts" -type f | sort >"$logs/$t.before"
    printf 'fuzzing %-7s for %s s...\n' "$t" "$seconds" >&2
    set +e
    cargo +nightly fuzz run "$t" "$corpus" "fuzz/seeds/$t" -- \
        -max_total_time="$seconds" -timeout="$timeout" -rss_limit_mb="$rss" \
        -artifact_prefix="$artifacts/" -print_final_stats=1 "${dict[@]}" \
        >"$logs/$t.log" 2>&1
    status=$?
    set -e
    # libFuzzer's final statistics: stat::number_of_executed_units etc.
    stat() { awk -v k="$1" '$1 == k":" { v = $2 } END { print v + 0 }' "$logs/$t.log"; }
    runs="$(stat stat::number_of_executed_units)"
    rate="$(stat stat::average_exec_per_sec)"
    cov="$(grep -oE 'cov: [0-9]+' "$logs/$t.log" | tail -1 | awk '{print $2}' || true)"
    units="$(find "$corpus" -type f | wc -l)"
    find "$artifacts" -type f | sort >"$logs/$t.after"
    new=()
    while IFS= read -r f; do new+=("$f"); done < <(comm -13 "$logs/$t.before" "$logs/$t.after")
    crashes=0 hangs=0 ooms=0
    for f in "${new[@]}"; do
        case "$(basename "$f")" in
            crash-* | leak-*) crashes=$((crashes + 1)) ;;
            timeout-*) hangs=$((hangs + 1)) ;;
            oom-*) ooms=$((ooms + 1)) ;;
        esac
    done
    if [ "$status" != 0 ] && [ "$((crashes + hangs + ooms))" = 0 ]; then
        # libFuzzer stopped for a reason that left no artifact.
        crashes=$((crashes + 1))
    fi
    rows+=("$(printf '%-7s %12s %8s %7s %7s %8s %6s %5s' "$t" "$runs" "$rate" "${cov:-0}" "$units" "$crashes" "$hangs" "$ooms")")
    if [ "$((crashes + hangs + ooms))" != 0 ]; then
        failed=1
        echo "== $t: libFuzzer exited $status; what it said:" >&2
        # From the first report (a panic, a sanitizer error, a timeout) on.
        grep -vE '^#[0-9]+' "$logs/$t.log" |
            awk '/panicked at|ERROR: libFuzzer|ERROR: AddressSanitizer|ALARM:/ { on = 1 } on' |
            head -40 >"$logs/$t.report" || true
        if [ ! -s "$logs/$t.report" ]; then grep -vE '^#[0-9]+' "$logs/$t.log" | tail -20 >"$logs/$t.report" || true; fi
        cat "$logs/$t.report" >&2
        for f in "${new[@]}"; do
            echo "== $f ($(wc -c <"$f") bytes; first 1 KiB in hex):" >&2
            head -c 1024 "$f" | od -An -tx1 -v >&2
        done
    fi
done

printf '\n%-7s %12s %8s %7s %7s %8s %6s %5s\n' target runs exec/s cov corpus crashes hangs ooms
printf '%s\n' "${rows[@]}"
printf '\n%s s per target; seeds in fuzz/seeds, findings in fuzz/artifacts\n' "$seconds"
exit "$failed"
