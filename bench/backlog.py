#!/usr/bin/env python3
"""A large backlog on a fresh 3-node cluster: what it costs and what it
slows.

1. `qraft-bench backlog`: the publish rate before and after filling the
   cluster with N pending messages (1 h delay), through the leader.
2. Every node's view (`qraft status --local`): the longest stall of its
   loop since it started and how many, its resident memory, its store,
   and its data dir on disk (raft log, snapshots, store).
3. Restart: a clean stop (SIGTERM) of a follower that is caught up, then
   kill -9 of it: each time start it again and time until it has applied
   what the leader had committed (after a clean stop it keeps its store;
   after kill -9 it restores its own last snapshot and re-applies the log
   after it).
4. Snapshot install: kill -9 of the other follower, then enough one-entry
   publishes that the leader snapshots and drops the entries it missed;
   start it and time until it has caught up (it is sent the leader's
   snapshot, an image of a store holding the backlog).

    QRAFT_BIN=$PWD/build/bin PYTHONPATH=tests/lib python3 bench/backlog.py \\
        [-n 1000000] [-m 50000] [-c 1024] [-s 1024] [--no-restarts] \\
        [-- QRAFTD_ARGS...]
"""

import argparse
import re
import subprocess
import sys
import time

import qraft_harness as qh

BENCH_TIMEOUT = 3600
SETTLE = 600.0
MIB = 1024 * 1024


def du_bytes(path):
    out = subprocess.run(["du", "-sb", str(path)], capture_output=True,
                         text=True, check=True).stdout
    return int(out.split()[0])


def node_line(node):
    s = node.status()
    entries = qh.metric(node, "qraft_raft_entries_proposed_total", 0)
    batching = (f"; {qh.metric(node, 'qraft_raft_commands_proposed_total', 0) / entries:.1f} "
                f"commands per entry proposed" if entries else "")
    return (f"node {node.id} ({s['state']}): loop stalls {s['loop_stalls']}, "
            f"longest {s['loop_stall_max_ms']} ms; rss "
            f"{s['rss_bytes'] / MIB:.0f} MiB; store "
            f"{s['store_used_bytes'] / MIB:.0f} MiB used, file "
            f"{s['store_file_bytes'] / MIB:.0f} MiB; data dir "
            f"{du_bytes(node.data_dir) / MIB:.0f} MiB; "
            f"{qh.metric(node, 'qraft_snapshots_total')} snapshots, the last "
            f"{qh.metric(node, 'qraft_snapshot_last_bytes') / MIB:.0f} MiB"
            f"{batching}")


def timed_catch_up(cluster, node):
    """Starts node and returns the seconds until it has applied what the
    leader had committed at the start."""
    target = cluster.leader().status()["commit_index"]
    t0 = time.monotonic()
    node.start(wait=False)

    def caught_up():
        cluster.check_not_crashed()
        s = node.try_status()
        return s is not None and s["applied_index"] >= target

    qh.wait_until(caught_up, SETTLE, f"{node.name} to apply {target}",
                  interval=0.05)
    return time.monotonic() - t0


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=1000000, help="backlog")
    ap.add_argument("-m", type=int, default=50000, help="measured runs")
    ap.add_argument("-c", type=int, default=1024, help="in flight")
    ap.add_argument("-s", type=int, default=1024, help="body bytes")
    ap.add_argument("--no-restarts", action="store_true",
                    help="skip the restart and the snapshot install")
    ap.add_argument("qraftd_args", nargs="*")
    args = ap.parse_args()

    cluster = qh.Cluster(n=3, extra_args=args.qraftd_args)
    try:
        cluster.start()
        leader = cluster.leader()
        cluster.wait_ready()
        _, out, _ = leader.tool(
            "qraft-bench", "backlog", "-n", args.n, "-m", args.m, "-c",
            args.c, "-s", args.s, "--endpoints", leader.rpc_addr, "--token",
            cluster.token, timeout=BENCH_TIMEOUT)
        print(out, end="", flush=True)
        for n in cluster.nodes:
            print(node_line(n), flush=True)

        if args.no_restarts:
            return 0
        restarted, installed = cluster.followers()
        # A clean stop keeps the store; kill -9 restores the last snapshot
        # and re-applies the log after it.
        for how in ("SIGTERM", "kill -9"):
            if how == "SIGTERM":
                restarted.terminate()
            else:
                restarted.kill9()
            secs = timed_catch_up(cluster, restarted)
            log = restarted.stderr_path.read_text(errors="replace")
            kept = "fsm: kept the store" in log
            print(f"restart of node {restarted.id} ({how}, start, caught "
                  f"up): {secs:.1f} s; "
                  f"{'kept the store' if kept else 'restored its snapshot'}",
                  flush=True)

        installed.kill9()
        # One entry per publish: past the snapshot threshold and the
        # entries kept behind a snapshot (8192 each by default).
        qh.run([qh.binary("qraft-bench"), "publish", "-n", 20000, "-c", 1,
                "-s", 64, "--endpoints", cluster.leader().rpc_addr,
                "--token", cluster.token], timeout=BENCH_TIMEOUT)
        secs = timed_catch_up(cluster, installed)
        log = installed.stderr_path.read_text(errors="replace")
        m = re.search(r"restored a snapshot \((\w+)\) of (\d+) bytes", log)
        how = (f"restored a snapshot ({m.group(1)}) of "
               f"{int(m.group(2)) / MIB:.0f} MiB" if m else
               "caught up from the log (no snapshot was needed)")
        print(f"snapshot install on node {installed.id} (kill -9, 20000 "
              f"entries, start, caught up): {secs:.1f} s; {how}", flush=True)
        for n in cluster.nodes:
            print(node_line(n), flush=True)
    finally:
        cluster.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
