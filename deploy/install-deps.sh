#!/usr/bin/env bash
# Installs every Debian package qraft needs to build, run and test.
# Idempotent: safe to run again; it only adds what is missing.
#
# libraft-dev must be 0.22.1 from bookworm-backports: bookworm main's 0.15.0
# has a Raft safety bug (see docs/architecture.md, "The raft library").
set -euo pipefail

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi

BUILD_PKGS=(
    build-essential cmake pkg-config clang-format
    libuv1-dev liblmdb-dev libcurl4-openssl-dev
    libprotobuf-c-dev protobuf-c-compiler libssl-dev
    libh2o-dev libjansson-dev libcmocka-dev
    # qraftd --config FILE: the YAML config file (node/config_file.c)
    libyaml-dev
    tzdata
)
TEST_PKGS=(
    lmdb-utils curl python3 iproute2 iptables faketime
    # test CAs and certificates (tests/lib/qraft_harness.py make_certs,
    # tests/integration/test_tls_*.py, tests/sdk)
    openssl
    python3-matplotlib
    # libFuzzer targets (tests/fuzz/run.sh): clang and its fuzzer runtime
    clang libclang-rt-14-dev
    # promtool: /metrics and the alert rules are checked with it
    # (tests/integration/test_metrics.py); python3-yaml: the container and
    # Kubernetes files are parsed (tests/package/test_deploy_files.py)
    prometheus python3-yaml
    # the .deb's test (tests/package/test_deb.sh): its postinst needs
    # adduser, and systemd-analyze checks its unit
    adduser systemd
    # the console's browser tests (tests/ui): playwright-core drives this
    # chromium headless; it downloads no browser of its own
    chromium
    # the powerloss nemesis's filesystem (tools/powerfs, jepsen/run
    # --nemesis powerloss): libfuse3 to build it, fuse3 for fusermount3
    libfuse3-dev fuse3
)
RAFT_MIN_VERSION="0.22.1"

want=("${BUILD_PKGS[@]}")
if [ "${1:-}" = "--test" ]; then
    want+=("${TEST_PKGS[@]}")
    # A machine may already carry Node.js from another source; Debian's npm
    # package conflicts with such an install, so only add it when missing.
    if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
        want+=(nodejs npm)
    fi
fi

# Add the bookworm-backports suite from the mirror already configured.
add_backports() {
    if grep -rqs "bookworm-backports" /etc/apt/sources.list /etc/apt/sources.list.d/; then
        return 0
    fi
    local uri="http://deb.debian.org/debian"
    local found
    found=$(grep -rhs '^URIs:.*debian$' /etc/apt/sources.list.d/*.sources | head -1 | awk '{print $2}' || true)
    if [ -z "$found" ]; then
        found=$(grep -hs '^deb .*debian ' /etc/apt/sources.list | head -1 | awk '{print $2}' || true)
    fi
    [ -n "$found" ] && uri="$found"
    echo "install-deps: adding bookworm-backports from $uri"
    printf 'deb %s bookworm-backports main\n' "$uri" |
        $SUDO tee /etc/apt/sources.list.d/qraft-backports.list >/dev/null
    NEED_UPDATE=1
}

raft_ok() {
    local v
    v=$(dpkg-query -W -f='${Version}' libraft-dev 2>/dev/null || true)
    [ -n "$v" ] && dpkg --compare-versions "$v" ge "$RAFT_MIN_VERSION"
}

missing=()
for p in "${want[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed"; then
        missing+=("$p")
    fi
done

if [ ${#missing[@]} -eq 0 ] && raft_ok; then
    exit 0
fi

NEED_UPDATE=1
add_backports
export DEBIAN_FRONTEND=noninteractive
if [ -n "${NEED_UPDATE:-}" ]; then
    $SUDO apt-get update -qq
fi
if [ ${#missing[@]} -gt 0 ]; then
    $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
if ! raft_ok; then
    $SUDO apt-get install -y -qq --no-install-recommends \
        -t bookworm-backports libraft-dev
fi
raft_ok || {
    echo "install-deps: libraft-dev >= $RAFT_MIN_VERSION is not installed" >&2
    exit 1
}
