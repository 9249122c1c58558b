#!/usr/bin/env python3
"""CPU time per message on a fresh 3-node cluster: publishing alone
against publishing and delivering.

A rate on this shared 2-core machine moves with whatever else runs; the
CPU time the three qraftd processes spend per message moves much less, so
an A/B of a hot path is read from it. Each repetition runs, through the
leader:

1. `qraft-bench publish -n N -c C -s S` (1 h delay: nothing is delivered),
2. `qraft-bench deliver -n N -c C -s S` (delay 0, to the bench's own sink
   on loopback; done when every result is committed),

and prints the rate, then user + system CPU time of every qraftd over the
run divided by N: all nodes, the leader, and each follower; and how many
raft entries the leader proposed (a follower pays per entry: a log write
and an LMDB commit).

    QRAFT_BIN=$PWD/build/bin PYTHONPATH=tests/lib python3 bench/cpu.py \\
        [-n 40000] [-c 256] [-s 1024] [--reps 2] [--only publish|deliver] \\
        [-- QRAFTD_ARGS...]
"""

import argparse
import os
import sys

import qraft_harness as qh

BENCH_TIMEOUT = 1800
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    """user + system time of a live process, from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # After the ")": state is field 0, utime 11, stime 12.
    return (int(fields[11]) + int(fields[12])) / TICK


def run(cluster, mode, args):
    leader = cluster.leader()
    entries = qh.metric(leader, "qraft_raft_entries_proposed_total")
    before = {n.id: cpu_seconds(n.proc.pid) for n in cluster.nodes}
    _, out, _ = leader.tool("qraft-bench", mode, "-n", args.n, "-c", args.c,
                            "-s", args.s, "--endpoints", leader.rpc_addr,
                            "--token", cluster.token, timeout=BENCH_TIMEOUT)
    used = {n.id: cpu_seconds(n.proc.pid) - before[n.id]
            for n in cluster.nodes}
    per = {k: v * 1e6 / args.n for k, v in used.items()}
    entries = qh.metric(leader, "qraft_raft_entries_proposed_total") - entries
    followers = " ".join(f"{per[n.id]:.1f}" for n in cluster.followers())
    lines = [ln for ln in out.splitlines()
             if "msgs/s" in ln or "delivered" in ln]
    print(f"{mode}: " + " | ".join(ln.strip() for ln in lines), flush=True)
    print(f"{mode}: CPU per message {sum(per.values()):.1f} us all nodes; "
          f"leader {per[leader.id]:.1f}, followers {followers}; "
          f"{entries} raft entries", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=40000)
    ap.add_argument("-c", type=int, default=256, help="in flight")
    ap.add_argument("-s", type=int, default=1024, help="body bytes")
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--only", choices=("publish", "deliver"))
    ap.add_argument("qraftd_args", nargs="*")
    args = ap.parse_args()

    cluster = qh.Cluster(n=3, extra_args=args.qraftd_args)
    try:
        cluster.start()
        cluster.leader()
        cluster.wait_ready()
        # Every node delivers its share, as in a cluster that has run a
        # while (the first map gives the leader every shard).
        cluster.wait_shards_spread([n.id for n in cluster.nodes],
                                   "the leader to give every node shards")
        modes = [args.only] if args.only else ["publish", "deliver"]
        for rep in range(1, args.reps + 1):
            for mode in modes:
                print(f"rep {rep} ", end="")
                run(cluster, mode, args)
        cluster.check_not_crashed()
    finally:
        cluster.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
