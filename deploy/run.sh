#!/usr/bin/env bash
# Installs dependencies, builds qraft and runs it in the foreground.
#
#   deploy/run.sh [QRAFTD_ARGS...]   one --dev node: data in ./qraft-data,
#                                    RPC 127.0.0.1:7100, HTTP 127.0.0.1:8080
#                                    (extra arguments go to qraftd)
#   deploy/run.sh --nodes 3          a local 3-node cluster (not yet supported)
#   deploy/run.sh down               stop that cluster (not yet supported)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

not_yet() {
    echo "deploy/run.sh: $1 is not yet supported; run deploy/run.sh without" \
        "arguments for a one-node --dev cluster" >&2
    exit 2
}

for arg in "$@"; do
    case "$arg" in
    --nodes | --nodes=*) not_yet "a local cluster (--nodes)" ;;
    esac
done
if [ "${1:-}" = "down" ]; then
    not_yet "'down'"
fi
if [ "${1:-}" = "-h" ] || [ "${1:-}" = "--help" ]; then
    sed -n '2,/^set/s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"
    exit 0
fi

deploy/install-deps.sh
cmake -S . -B build
cmake --build build -j"$(nproc)"

exec build/bin/qraftd --dev "$@"
