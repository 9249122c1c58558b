#!/usr/bin/env bash
# Installs the pinned @upstash/qstash and @upstash/workflow SDKs (npm ci, from
# package-lock.json) and runs every tests/sdk/*.test.mjs with `node --test`.
#
#   QRAFT_BIN=build/bin tests/sdk/run.sh
#
# QRAFT_BIN names the build's bin directory (qraft-sign-tool, qraftd). Exits
# non-zero when the install or a test fails.
set -euo pipefail

: "${QRAFT_BIN:?QRAFT_BIN must name the build bin directory (e.g. build/bin)}"
QRAFT_BIN="$(cd "$QRAFT_BIN" && pwd)"
export QRAFT_BIN

cd "$(dirname "${BASH_SOURCE[0]}")"

# Would switch the SDK's Receiver to its dev-server or region keys.
unset QSTASH_DEV QSTASH_REGION

npm ci --no-audit --no-fund --prefer-offline --loglevel=error
# Two files at a time (node's default here is one fewer than the cores: one
# on a 2-core machine): most of a file's time is waiting (a cron tick is up
# to a minute away, flow control holds a rate for seconds), and each file
# runs its own nodes on ports of its own.
exec node --test --test-concurrency=2 ./*.test.mjs
