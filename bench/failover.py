#!/usr/bin/env python3
"""Failover under load: how long is a 3-node cluster without acknowledged
publishes when its leader is killed?

Each trial: `qraft-bench publish` keeps IN_FLIGHT publishes going to the
leader; once they flow, the leader gets kill -9; probes then publish
through the two survivors (`POST /v2/publish`, one at a time, each with a
short timeout, alternating nodes) until one is acknowledged. The figure is
the time from the kill to that acknowledgement. The killed node is then
restarted and caught up before the next trial, so every trial kills a
leader of a full cluster (--probe cli: `qraft publish` through every
endpoint instead, 20 ms apart, as ../shared/peers/qraft.sh does, so the
client library's retries count too). Prints each trial, then p50 and max, and the
longest loop stall each node reported (qraft status: loop_stall_max_ms;
/metrics: qraft_loop_stall_max_seconds).

    QRAFT_BIN=$PWD/build/bin PYTHONPATH=tests/lib python3 bench/failover.py \\
        [--trials 10] [--in-flight 64] [--probe rest|cli] [-- QRAFTD_ARGS...]

Arguments after `--` go to every qraftd (e.g. --election-timeout-ms 500).
"""

import argparse
import http.client
import statistics
import subprocess
import sys
import time

import qraft_harness as qh

PROBE_TIMEOUT = 0.25  # one probe publish; a dead or leaderless node
PROBE_PAUSE = 0.005  # after a refusal (503), before the next probe
LOAD_START = 10.0  # the load must flow within this many seconds
SETTLE = 60.0  # restart and catch-up of the killed node


def probe(cluster, nodes):
    """Publishes through nodes in turn until one is acknowledged; returns
    the monotonic time of the acknowledgement."""
    k = 0
    while True:
        node = nodes[k % len(nodes)]
        k += 1
        try:
            status, _, _ = qh.http_call(
                node.http_addr, "POST",
                "/v2/publish/http://127.0.0.1:9/failover", b"x",
                {"Upstash-Delay": "1h"}, token=cluster.token,
                timeout=PROBE_TIMEOUT, parse=None)
        except (OSError, http.client.HTTPException):
            continue
        if status in (200, 201):
            return time.monotonic()
        time.sleep(PROBE_PAUSE)  # answered, no leader yet: ask again soon


def probe_cli(cluster):
    """The way ../shared/peers/qraft.sh probes: `qraft publish` through
    every endpoint (the dead one too), 20 ms apart, until one succeeds;
    the client library's own retries and backoff are part of the time."""
    while True:
        rc, _, _ = cluster.cli("publish", "http://127.0.0.1:9/failover",
                               "--body", "x", "--delay", "1h", check=False)
        if rc == 0:
            return time.monotonic()
        time.sleep(0.02)


def start_load(leader, token, in_flight):
    return subprocess.Popen(
        [str(qh.binary("qraft-bench")), "publish", "-n", "100000000", "-c",
         str(in_flight), "--endpoints", leader.rpc_addr, "--token", token],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def trial(cluster, in_flight, how):
    leader = cluster.leader()
    start_index = leader.status()["commit_index"]
    load = start_load(leader, cluster.token, in_flight)
    try:
        qh.wait_until(
            lambda: leader.status()["commit_index"] > start_index + 200,
            LOAD_START, "the load to flow")
        survivors = [n for n in cluster.live_nodes() if n is not leader]
        t0 = time.monotonic()
        leader.kill9()
        t1 = probe(cluster, survivors) if how == "rest" else probe_cli(cluster)
    finally:
        load.kill()
        load.wait()
    new_leader = cluster.leader()
    ms = (t1 - t0) * 1000
    cluster.restart(leader, timeout=SETTLE)
    cluster.wait_caught_up(leader, timeout=SETTLE)
    cluster.wait_ready(timeout=SETTLE)
    return ms, leader.id, new_leader.id


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=10)
    ap.add_argument("--in-flight", type=int, default=64)
    ap.add_argument("--probe", choices=("rest", "cli"), default="rest")
    ap.add_argument("qraftd_args", nargs="*")
    args = ap.parse_args()

    cluster = qh.Cluster(n=3, extra_args=args.qraftd_args)
    try:
        cluster.start()
        cluster.leader()
        cluster.wait_ready()
        times = []
        for i in range(args.trials):
            ms, killed, elected = trial(cluster, args.in_flight, args.probe)
            times.append(ms)
            print(f"trial {i + 1}: killed leader {killed}, node {elected} "
                  f"leads; first acked publish after {ms:.0f} ms",
                  flush=True)
        stalls = {n.id: n.status().get("loop_stall_max_ms")
                  for n in cluster.live_nodes()}
        print(f"failover ms: p50 {statistics.median(times):.0f}  "
              f"max {max(times):.0f}  min {min(times):.0f}  "
              f"({args.trials} trials, {args.in_flight} in flight, probe "
              f"{args.probe}, "
              f"qraftd args {' '.join(args.qraftd_args) or '(defaults)'})")
        print(f"longest loop stall per node since its last start (ms): "
              f"{stalls}")
    finally:
        cluster.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
