#!/usr/bin/env bash
# Builds the libFuzzer targets (tests/fuzz/) with clang in build-fuzz/ and
# runs each for a bounded time, from its seed corpus and dictionary.
#
#   tests/fuzz/run.sh                 every target, 20 s each
#   tests/fuzz/run.sh --time 600      longer runs (seconds per target)
#   tests/fuzz/run.sh --only fuzz_cron [--only fuzz_frame ...]
#   tests/fuzz/run.sh --strict        known open findings are crashes too
#                                     (default: reported as TOLERATED, see
#                                     QRAFT_FUZZ_TOLERATE_KNOWN in
#                                     docs/fuzzing.md)
#   tests/fuzz/run.sh --replay        no fuzzing: run every input kept in
#                                     tests/fuzz/crashes-found/ strictly
#                                     and say which still crash
#   tests/fuzz/run.sh --regen         rewrite tests/fuzz/corpus/ (seeds) and
#                                     crashes-found/fuzz_apply-known-*
#
# New corpus entries go to build-fuzz/fuzz-corpus/<target>/ (never into the
# repo), crash inputs to build-fuzz/fuzz-artifacts/. Exits 77 when clang is
# missing, 1 when a target crashed, 0 otherwise.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."

usage() {
    sed -n '2,/^set/s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"
}

all=(fuzz_frame fuzz_apply fuzz_retry_expr fuzz_cron fuzz_filter
    fuzz_json_bodies fuzz_snapshot_restore)
seconds=20
strict=0
replay=0
regen=0
only=()
while [ $# -gt 0 ]; do
    case "$1" in
    --time)
        seconds="$2"
        shift 2
        ;;
    --only)
        only+=("$2")
        shift 2
        ;;
    --strict)
        strict=1
        shift
        ;;
    --replay)
        replay=1
        shift
        ;;
    --regen)
        regen=1
        shift
        ;;
    -h | --help)
        usage
        exit 0
        ;;
    *)
        echo "tests/fuzz/run.sh: unknown argument '$1'" >&2
        usage >&2
        exit 2
        ;;
    esac
done
[ ${#only[@]} -gt 0 ] && targets=("${only[@]}") || targets=("${all[@]}")

if ! command -v clang >/dev/null 2>&1; then
    echo "tests/fuzz/run.sh: clang not found: fuzzing skipped" >&2
    exit 77
fi

build=build-fuzz
CC=clang cmake -S . -B "$build" -DQRAFT_FUZZ=ON -DBUILD_TESTING=OFF \
    -DQRAFT_TEST_BUILDS=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$build" -j"$(nproc)" --target fuzz

export ASAN_OPTIONS="${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"

if [ "$regen" -eq 1 ]; then
    rm -rf tests/fuzz/corpus
    "$build/bin/fuzz_gen_corpus" tests/fuzz/corpus tests/fuzz/crashes-found
    echo "tests/fuzz/corpus and crashes-found/fuzz_apply-known-* rewritten"
    exit 0
fi

# The stores of fuzz_apply and fuzz_snapshot_restore; a crashed target
# leaves its directory behind, so one base per run, removed at the end.
shm=/dev/shm
[ -w "$shm" ] || shm="${TMPDIR:-/tmp}"
QRAFT_FUZZ_STORE_BASE=$(mktemp -d "$shm/qraft-fuzz-run.XXXXXX")
export QRAFT_FUZZ_STORE_BASE
trap 'rm -rf "$QRAFT_FUZZ_STORE_BASE"' EXIT

if [ "$replay" -eq 1 ]; then
    still=0
    for f in tests/fuzz/crashes-found/fuzz_*; do
        [ -e "$f" ] || continue
        case "$f" in *.txt) continue ;; esac
        t=$(basename "$f")
        t=${t%%-*}
        if QRAFT_FUZZ_APPLY_FRESH=1 "$build/bin/$t" "$f" >"$build/replay.log" 2>&1; then
            echo "fixed:       $f"
        else
            echo "still fails: $f"
            grep -E '^fuzz|apply stopped|SUMMARY' "$build/replay.log" | head -3 | sed 's/^/    /'
            still=1
        fi
    done
    exit "$still"
fi

if [ "$strict" -eq 0 ]; then
    export QRAFT_FUZZ_TOLERATE_KNOWN=1
fi

mkdir -p "$build/fuzz-artifacts"
failed=()
printf '%-24s %12s %8s %10s %s\n' target execs seconds tolerated result
for t in "${targets[@]}"; do
    work="$build/fuzz-corpus/$t"
    mkdir -p "$work"
    dict=()
    [ -f "tests/fuzz/$t.dict" ] && dict=("-dict=tests/fuzz/$t.dict")
    log="$build/fuzz-artifacts/$t.log"
    rc=0
    "$build/bin/$t" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 "${dict[@]}" \
        -artifact_prefix="$build/fuzz-artifacts/$t-" \
        "$work" "tests/fuzz/corpus/$t" >"$log" 2>&1 || rc=$?
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    tolerated=$(grep -c 'TOLERATED' "$log" || true)
    if [ "$rc" -eq 0 ]; then
        result=ok
    else
        result="CRASH (rc $rc, see $log)"
        failed+=("$t")
    fi
    printf '%-24s %12s %8s %10s %s\n' "$t" "${execs:-?}" "$seconds" \
        "$tolerated" "$result"
    if [ "$rc" -ne 0 ]; then
        grep -E '^fuzz|apply stopped|ERROR: |SUMMARY|runtime error' "$log" |
            head -5 | sed 's/^/    /'
    fi
done
if [ ${#failed[@]} -gt 0 ]; then
    echo "tests/fuzz/run.sh: crashes in: ${failed[*]}" >&2
    exit 1
fi
