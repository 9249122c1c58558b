#!/usr/bin/env python3
"""Read latency and reads/s on a 3-node cluster, leader and follower, with
wrk: GET /v2/messages/{id} of one stored message (keep-alive, the token in
a header). Prints one markdown row per (node, query, connections).

    QRAFT_BIN=build/bin PYTHONPATH=tests/lib python3 bench/reads.py \\
        [--duration 10] [--query '' --query '?consistency=stale']

Needs wrk (Debian's `wrk` package)."""

import argparse
import re
import subprocess
import sys

import qraft_harness as qh


def wrk(url, token, connections, duration):
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency",
         "-H", f"Authorization: Bearer {token}", url],
        capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))

    def pct(p):
        m = re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        v, unit = float(m.group(1)), m.group(2)
        return v / 1000 if unit == "us" else v * 1000 if unit == "s" else v
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return rps, pct(50), pct(90), pct(99), int(non2xx.group(1)) if non2xx \
        else 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--query", action="append")
    ap.add_argument("--connections", type=int, action="append")
    args = ap.parse_args()
    queries = args.query or [""]
    conns = args.connections or [1, 64]
    cluster = qh.start_cluster(None)
    try:
        leader = cluster.leader()
        follower = [n for n in cluster.nodes if n is not leader][0]
        status, _, body = qh.http_call(
            leader.http_addr, "POST", "/v2/publish/http://127.0.0.1:9/x",
            b"x" * 1024, {"Upstash-Delay": "1h"}, token=cluster.token)
        assert status == 200, body
        mid = body["messageId"]
        cluster.wait_caught_up(follower)
        print("| node | query | connections | reads/s | p50 ms | p90 ms "
              "| p99 ms | non-2xx |")
        print("| --- | --- | --- | --- | --- | --- | --- | --- |")
        for name, node in (("leader", leader), ("follower", follower)):
            for q in queries:
                for c in conns:
                    url = f"http://{node.http_addr}/v2/messages/{mid}{q}"
                    rps, p50, p90, p99, bad = wrk(url, cluster.token, c,
                                                  args.duration)
                    print(f"| {name} | `{q or '(default)'}` | {c} | "
                          f"{rps:,.0f} | {p50:.2f} | {p90:.2f} | {p99:.2f} "
                          f"| {bad} |", flush=True)
    finally:
        cluster.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
