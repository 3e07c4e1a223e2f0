#!/usr/bin/env bash
# Runs every fuzz target and prints how many inputs each executed. Exits non-zero when any target
# found a crash (a panic, an abort, a sanitizer report, a timeout or running out of memory); the
# input that did it is saved under fuzz/artifacts/<target>/ (replay: cargo +nightly fuzz run
# <target> fuzz/artifacts/<target>/<file>).
#
#   fuzz/run.sh time SECONDS        each target for SECONDS, one after another (CI: 60)
#   fuzz/run.sh runs COUNT          each target for COUNT executions, all targets at once (the
#                                   long run: COUNT=10000000)
#
# The committed seeds (fuzz/corpus/<target>) are read, never written: new inputs go to
# fuzz/found/<target>, which later runs start from too.
set -euo pipefail
cd "$(dirname "$0")/.."

mode="${1:-}"
amount="${2:-}"
case "$mode" in
    time) limit="-max_total_time=$amount" ;;
    runs) limit="-runs=$amount" ;;
    *)
        echo "usage: fuzz/run.sh time SECONDS | fuzz/run.sh runs COUNT" >&2
        exit 2
        ;;
esac

if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi

targets=(gguf_reader safetensors_reader config gguf_model)
declare -A dict=([gguf_reader]=fuzz/gguf.dict [gguf_model]=fuzz/gguf.dict [config]=fuzz/config.dict)

cargo +nightly fuzz build

logs=fuzz/found/logs
# Each fuzzing process writes its inputs to a scratch directory (fuzz/src/lib.rs), left behind
# because libFuzzer exits without running destructors.
trap 'rm -rf /dev/shm/fasttx-fuzz-* "${TMPDIR:-/tmp}"/fasttx-fuzz-*' EXIT
mkdir -p "$logs"

run_target() {
    local t="$1"
    mkdir -p "fuzz/found/$t"
    # -detect_leaks=0: every model built by a target owns a rayon pool whose threads exit
    # asynchronously after the pool is dropped; LeakSanitizer, checking at that moment, reports
    # their thread-local scratch buffers (attention scores) as leaks. Real growth still trips
    # -rss_limit_mb.
    local args=("$limit" -timeout=10 -rss_limit_mb=2048 -detect_leaks=0 -print_final_stats=1)
    [[ -n "${dict[$t]:-}" ]] && args+=("-dict=${dict[$t]}")
    cargo +nightly fuzz run "$t" "fuzz/found/$t" "fuzz/corpus/$t" -- "${args[@]}" >"$logs/$t.log" 2>&1
}

declare -A status
if [[ "$mode" == time ]]; then
    for t in "${targets[@]}"; do
        if run_target "$t"; then status[$t]=0; else status[$t]=$?; fi
    done
else
    declare -A pids
    for t in "${targets[@]}"; do
        run_target "$t" &
        pids[$t]=$!
    done
    for t in "${targets[@]}"; do
        if wait "${pids[$t]}"; then status[$t]=0; else status[$t]=$?; fi
    done
fi

failed=0
for t in "${targets[@]}"; do
    # The final stats when the run ended normally; else the last progress line ("#1234 ...").
    runs="$(grep -o 'stat::number_of_executed_units: [0-9]*' "$logs/$t.log" | tail -1 | grep -o '[0-9]*$' || true)"
    [[ -n "$runs" ]] || runs="$(grep -o '^#[0-9]*' "$logs/$t.log" | tail -1 | tr -d '#' || true)"
    if [[ "${status[$t]}" == 0 ]]; then
        echo "fuzz $t: ${runs:-?} executions, no crash"
    else
        failed=1
        echo "fuzz $t: CRASH after ${runs:-?} executions (exit ${status[$t]}); log $logs/$t.log, input in fuzz/artifacts/$t/:"
        grep -E -m 20 "panicked at|ERROR: libFuzzer|ERROR: AddressSanitizer|SUMMARY|Test unit written" "$logs/$t.log" || true
    fi
done
exit "$failed"
