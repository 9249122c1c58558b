#!/usr/bin/env bash
# Makes tests/data/format1-datadir.tar.gz: the data dir of a --dev node run
# by a qraftd from before stored values had checksums (store format 1, e.g.
# e528cea), for tests/integration/test_corrupt_store.py. It holds 40
# messages pending for a day to http://127.0.0.1:9/format1-probe-NN, a URL
# group and a schedule, and (--snapshot-threshold 16) raft snapshots, so a
# node opening it both migrates the store and restores a format 1 snapshot.
#
#   tests/data/make-format1-datadir.sh OLD_QRAFTD NEW_BUILD_BIN
#
# NEW_BUILD_BIN holds the qraft CLI (any version speaks to the old node).
set -euo pipefail
old=$1
bin=$2
out=$(cd "$(dirname "$0")" && pwd)/format1-datadir.tar.gz
work=$(mktemp -d)
trap 'kill $pid 2>/dev/null || true; rm -rf "$work"' EXIT
tok=format1-token
rpc=127.0.0.1:47911
http=127.0.0.1:47912
mkdir "$work/data"
"$old" --dev --data "$work/data" --rpc $rpc --http $http \
    --raft 127.0.0.1:47913 --token $tok --snapshot-threshold 16 \
    >"$work/out.log" 2>&1 &
pid=$!
for _ in $(seq 100); do
    curl -sf "http://$http/readyz" >/dev/null && break
    sleep 0.1
done
for i in $(seq -w 0 39); do
    "$bin/qraft" --endpoints $rpc --token $tok publish \
        "http://127.0.0.1:9/format1-probe-$i" --delay 1d >>"$work/ids"
done
"$bin/qraft" --endpoints $rpc --token $tok group add format1-group \
    http://127.0.0.1:9/format1-group-endpoint
curl -sf -X POST -H "Authorization: Bearer $tok" -H "Upstash-Cron: 0 0 1 1 *" \
    "http://$http/v2/schedules/http://127.0.0.1:9/format1-schedule" >/dev/null
kill -TERM $pid
wait $pid
# The map is a sparse 8 GiB file: keep only the pages in use.
mkdir "$work/compact"
mdb_copy -c "$work/data/state" "$work/compact"
mv "$work/compact/data.mdb" "$work/data/state/data.mdb"
rm -f "$work/data/state/lock.mdb"
tar -C "$work" -czf "$out" --owner=0 --group=0 --numeric-owner data
tar -tvzf "$out"
