#!/usr/bin/env bash
# Installs the pinned playwright-core (npm ci, from package-lock.json; it
# downloads no browser) and runs every tests/ui/*.test.mjs with `node --test`
# in Debian's chromium.
#
#   QRAFT_BIN=build/bin tests/ui/run.sh
#
# QRAFT_BIN names the build's bin directory (qraftd); QRAFT_UI_ARTIFACTS
# where the screenshots go (default: a temp directory). Exits 77 (skipped)
# when there is no /usr/bin/chromium (deploy/install-deps.sh --test installs
# it), non-zero when the install or a test fails.
set -euo pipefail

: "${QRAFT_BIN:?QRAFT_BIN must name the build bin directory (e.g. build/bin)}"
QRAFT_BIN="$(cd "$QRAFT_BIN" && pwd)"
export QRAFT_BIN

chromium="${QRAFT_CHROMIUM:-/usr/bin/chromium}"
if [ ! -x "$chromium" ]; then
    echo "ui tests skipped: $chromium not found (deploy/install-deps.sh --test)" >&2
    exit 77
fi

cd "$(dirname "${BASH_SOURCE[0]}")"
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1
npm ci --no-audit --no-fund --prefer-offline --loglevel=error
exec node --test ./*.test.mjs
