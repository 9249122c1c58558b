#!/usr/bin/env bash
# Installs the test dependencies, builds qraft and runs every test with ctest.
#
#   tests/run.sh                 all labels (unit, cluster, integration, sdk, ui,
#                                chaos: a 30 s smoke run when root; package:
#                                the .deb installed and purged, when root;
#                                upgrade: from the previous release)
#   tests/run.sh --label unit    one label
#   tests/run.sh --asan          build in build-asan/ with ASan+UBSan instead,
#                                without what tests something else than
#                                this build's memory use: the labels
#                                `upgrade` (builds and runs the previous
#                                release's daemon) and `package` (builds
#                                and installs a .deb), the chaos suite's
#                                proofs that its checker catches a broken
#                                build (chaos/catches-*: their daemons are
#                                broken on purpose), and `sdk` (the
#                                official SDK's compatibility; the REST
#                                code it drives runs under ASan in the
#                                integration tests)
#
# Exits non-zero when a step or a test fails.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

usage() {
    sed -n '2,/^set/s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"
}

label=""
asan=0
while [ $# -gt 0 ]; do
    case "$1" in
    --label)
        [ $# -ge 2 ] || {
            echo "tests/run.sh: --label needs a value" >&2
            exit 2
        }
        label="$2"
        shift 2
        ;;
    --label=*)
        label="${1#--label=}"
        shift
        ;;
    --asan)
        asan=1
        shift
        ;;
    -h | --help)
        usage
        exit 0
        ;;
    *)
        echo "tests/run.sh: unknown argument '$1'" >&2
        usage >&2
        exit 2
        ;;
    esac
done

deploy/install-deps.sh --test

build_dir=build
cmake_args=(-DQRAFT_WERROR=ON)
if [ "$asan" -eq 1 ]; then
    build_dir=build-asan
    cmake_args+=("-DQRAFT_SANITIZE=address,undefined")
    # Fail the test on the first report, leaks included.
    export ASAN_OPTIONS="${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=1}"
    export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
fi

cmake -S . -B "$build_dir" "${cmake_args[@]}"
cmake --build "$build_dir" -j"$(nproc)"

ctest_args=(--test-dir "$build_dir" --output-on-failure -j1 --no-tests=error)
if [ -n "$label" ]; then
    ctest_args+=(-L "^${label}\$")
fi
if [ "$asan" -eq 1 ]; then
    ctest_args+=(-LE '^(upgrade|package|sdk)$' -E '^chaos/catches-')
fi
ctest "${ctest_args[@]}"
