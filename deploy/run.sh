#!/usr/bin/env bash
# Installs dependencies, builds qraft and runs it.
#
#   deploy/run.sh [QRAFTD_ARGS...]   one --dev node in the foreground: data
#                                    in ./qraft-data, RPC 127.0.0.1:7100,
#                                    HTTP 127.0.0.1:8080 (extra arguments
#                                    go to qraftd)
#   deploy/run.sh --nodes N [QRAFTD_ARGS...]
#                                    a local N-node cluster (1..9) in the
#                                    background, on loopback: node i has
#                                    raft 127.0.0.1:720i, RPC 127.0.0.1:710i,
#                                    HTTP 127.0.0.1:808i, data in
#                                    ./.qraft-local/node<i>, log in
#                                    ./.qraft-local/node<i>.log; one token
#                                    kept in ./.qraft-local/token. Waits for
#                                    a leader, then prints the QRAFT_* and
#                                    QSTASH_* lines for clients.
#   deploy/run.sh down               stops that cluster (SIGTERM; SIGKILL
#                                    after 30 s); its data stays, and the
#                                    next --nodes with the same N resumes it
#                                    (rm -rf .qraft-local to start afresh)
#
# QRAFT_BUILD_DIR (default: build) is where qraft is built.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

BUILD_DIR="${QRAFT_BUILD_DIR:-build}"
LOCAL=.qraft-local
PIDS="$LOCAL/pids"
START_DEADLINE_S=30
STOP_DEADLINE_S=30

die() {
    echo "deploy/run.sh: $*" >&2
    exit 1
}

build() {
    deploy/install-deps.sh
    cmake -S . -B "$BUILD_DIR"
    cmake --build "$BUILD_DIR" -j"$(nproc)"
}

# Prints "ID PID" for each line of the pids file whose process is still a
# qraftd on that node's data dir (a recycled pid is not ours).
live_nodes() {
    [ -f "$PIDS" ] || return 0
    local id pid
    while read -r id pid; do
        [ -n "$pid" ] || continue
        if tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline" |
            grep -q -- "qraftd .*--data $LOCAL/node$id "; then
            echo "$id $pid"
        fi
    done <"$PIDS"
}

# SIGTERM to every live node, then SIGKILL to those still running at the
# deadline.
stop_nodes() {
    local nodes id pid left deadline
    nodes=$(live_nodes)
    if [ -z "$nodes" ]; then
        rm -f "$PIDS"
        return 1
    fi
    while read -r id pid; do
        kill -TERM "$pid" 2>/dev/null || true
    done <<<"$nodes"
    deadline=$((SECONDS + STOP_DEADLINE_S))
    while :; do
        left=$(live_nodes)
        [ -z "$left" ] && break
        if [ "$SECONDS" -ge "$deadline" ]; then
            while read -r id pid; do
                echo "node $id (pid $pid) still running ${STOP_DEADLINE_S}s" \
                    "after SIGTERM: SIGKILL"
                kill -KILL "$pid" 2>/dev/null || true
            done <<<"$left"
            break
        fi
        sleep 0.1
    done
    while read -r id pid; do
        echo "stopped node $id (pid $pid)"
    done <<<"$nodes"
    rm -f "$PIDS"
    return 0
}

down() {
    if stop_nodes; then
        echo "local cluster stopped; data kept in $LOCAL/"
    else
        echo "no local cluster is running"
    fi
}

# The field "name": value of a one-line-per-field JSON document on stdin.
json_field() {
    sed -n "s/^ *\"$1\": *\"\{0,1\}\([^\",]*\)\"\{0,1\},\{0,1\}$/\1/p" | head -1
}

# Waits until every node names the same live leader; prints its id.
wait_leader() {
    local n=$1 deadline=$((SECONDS + START_DEADLINE_S)) i ids leader
    while :; do
        for i in $(seq 1 "$n"); do
            if ! grep -q "^$i " <(live_nodes); then
                echo "deploy/run.sh: node $i exited; the end of" \
                    "$LOCAL/node$i.log:" >&2
                tail -n 20 "$LOCAL/node$i.log" >&2 || true
                return 1
            fi
        done
        ids=""
        for i in $(seq 1 "$n"); do
            leader=$(QRAFT_TOKEN=$TOKEN "$BUILD_DIR/bin/qraft" 2>/dev/null \
                --endpoints "127.0.0.1:$((7100 + i))" status --json |
                json_field leader_id || true)
            ids="$ids ${leader:-0}"
        done
        leader=$(tr ' ' '\n' <<<"$ids" | sed '/^$/d' | sort -u)
        if [ "$(wc -l <<<"$leader")" -eq 1 ] && [ "$leader" != 0 ]; then
            echo "$leader"
            return 0
        fi
        if [ "$SECONDS" -ge "$deadline" ]; then
            echo "deploy/run.sh: no leader agreed on within" \
                "${START_DEADLINE_S}s (leader ids seen:$ids); logs in" \
                "$LOCAL/node*.log" >&2
            return 1
        fi
        sleep 0.2
    done
}

# Waits until the signing keys are applied; prints `qraft keys --json`.
wait_keys() {
    local deadline=$((SECONDS + START_DEADLINE_S)) out
    while :; do
        if out=$(QRAFT_TOKEN=$TOKEN "$BUILD_DIR/bin/qraft" \
            --endpoints "$ENDPOINTS" keys --json 2>/dev/null) &&
            [ -n "$(json_field current <<<"$out")" ]; then
            echo "$out"
            return 0
        fi
        if [ "$SECONDS" -ge "$deadline" ]; then
            echo "deploy/run.sh: no signing keys within" \
                "${START_DEADLINE_S}s" >&2
            return 1
        fi
        sleep 0.2
    done
}

start_cluster() {
    local n=$1
    shift
    case "$n" in
    [1-9]) ;;
    *) die "--nodes takes a number of nodes in 1..9, not '$n'" ;;
    esac
    local running id pid desc=""
    running=$(live_nodes)
    if [ -n "$running" ]; then
        while read -r id pid; do
            desc="$desc${desc:+, }node $id pid $pid"
        done <<<"$running"
        die "a local cluster is already running ($desc); stop it first" \
            "with: deploy/run.sh down"
    fi
    mkdir -p "$LOCAL"
    if [ -f "$LOCAL/nodes" ] && [ "$(cat "$LOCAL/nodes")" != "$n" ]; then
        die "$LOCAL/ holds a cluster of $(cat "$LOCAL/nodes") nodes, not" \
            "$n: run --nodes $(cat "$LOCAL/nodes"), or remove $LOCAL/ to" \
            "start afresh"
    fi

    build

    local secret
    for secret in token peer-token; do
        if [ ! -s "$LOCAL/$secret" ]; then
            (umask 077 && od -An -tx1 -N24 /dev/urandom | tr -d ' \n' \
                >"$LOCAL/$secret")
        fi
    done
    TOKEN=$(cat "$LOCAL/token")
    echo "$n" >"$LOCAL/nodes"

    local i peers="" eps=""
    for i in $(seq 1 "$n"); do
        peers="$peers${peers:+,}$i@127.0.0.1:$((7200 + i))"
        eps="$eps${eps:+,}127.0.0.1:$((7100 + i))"
    done
    ENDPOINTS=$eps

    : >"$PIDS"
    for i in $(seq 1 "$n"); do
        # Its own session: a Ctrl-C in this terminal does not reach it.
        # Secrets go in the environment, never on a command line (ps).
        QRAFT_TOKEN=$TOKEN QRAFT_PEER_TOKEN=$(cat "$LOCAL/peer-token") \
            setsid "$BUILD_DIR/bin/qraftd" --id "$i" --peers "$peers" \
            --data "$LOCAL/node$i" \
            --raft "127.0.0.1:$((7200 + i))" \
            --rpc "127.0.0.1:$((7100 + i))" \
            --http "127.0.0.1:$((8080 + i))" "$@" \
            </dev/null >>"$LOCAL/node$i.log" 2>&1 &
        echo "$i $!" >>"$PIDS"
    done

    local leader keys
    if ! leader=$(wait_leader "$n") || ! keys=$(wait_keys); then
        stop_nodes >/dev/null || true
        die "the cluster did not start; nodes stopped"
    fi

    echo
    echo "local cluster of $n node(s) is up; leader: node $leader"
    for i in $(seq 1 "$n"); do
        echo "  node $i: raft 127.0.0.1:$((7200 + i))" \
            "rpc 127.0.0.1:$((7100 + i)) http 127.0.0.1:$((8080 + i))" \
            "data $LOCAL/node$i log $LOCAL/node$i.log" \
            "pid $(sed -n "s/^$i //p" "$PIDS")"
    done
    echo "stop it with: deploy/run.sh down"
    echo
    echo "QRAFT_ENDPOINTS=$ENDPOINTS"
    echo "QRAFT_TOKEN=$TOKEN"
    echo "QSTASH_URL=http://127.0.0.1:8081"
    echo "QSTASH_TOKEN=$TOKEN"
    echo "QSTASH_CURRENT_SIGNING_KEY=$(json_field current <<<"$keys")"
    echo "QSTASH_NEXT_SIGNING_KEY=$(json_field next <<<"$keys")"
}

case "${1:-}" in
-h | --help)
    sed -n '2,/^set/s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"
    exit 0
    ;;
down)
    [ $# -eq 1 ] || die "'down' takes no arguments"
    down
    exit 0
    ;;
--nodes)
    [ $# -ge 2 ] || die "--nodes needs a number of nodes (1..9)"
    n=$2
    shift 2
    start_cluster "$n" "$@"
    exit 0
    ;;
--nodes=*)
    n=${1#--nodes=}
    shift
    start_cluster "$n" "$@"
    exit 0
    ;;
esac

for arg in "$@"; do
    case "$arg" in
    --nodes | --nodes=*)
        die "--nodes must come first: deploy/run.sh --nodes N [QRAFTD_ARGS...]"
        ;;
    esac
done

build
exec "$BUILD_DIR/bin/qraftd" --dev "$@"
