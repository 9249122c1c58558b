#!/usr/bin/env python3
"""Head-of-line isolation: does a bad destination slow the deliveries to a
healthy one on the same node? Each scenario runs on a fresh `qraftd --dev`
node (or a fresh 3-node cluster with --nodes 3):

- alone:  N messages to a healthy sink (127.0.0.1, answers 200 at once);
- hang:   first BAD messages to a second sink on another host (127.0.0.2,
          so a different host to curl) that never answers (each attempt
          ends at the message's Upstash-Timeout), then, once the bad host
          holds its first requests, the same N healthy messages;
- 503:    the same with a bad sink that answers 503 to everything.

Bad messages carry Upstash-Retries and a short Upstash-Retry-Delay so the
bad host stays busy for the whole measurement. Prints one markdown row per
scenario: the healthy messages delivered before the deadline, the time
from the first healthy publish to the last healthy arrival, deliveries/s,
and what the bad host received meanwhile.

    QRAFT_BIN=build/bin PYTHONPATH=tests/lib python3 bench/isolation.py \\
        [-n 5000] [--bad 3000] [--timeout 10s] [--deadline 120] \\
        [--nodes 1|3] [--scenario alone --scenario hang --scenario 503]

The sinks are Python (one thread per connection) and share the machine's
CPUs with the node(s): the "alone" row is the baseline to compare with,
not an absolute figure (qraft-bench deliver has that)."""

import argparse
import json
import sys
import threading
import time

import qraft_harness as qh
from http_sink import HttpSink, Reply, quiet_disconnects

BATCH = 1000  # /v2/batch takes at most 1000 elements


def publish(nodes, token, url, n, headers, tag):
    """Publishes n messages to url through /v2/batch, spread over nodes,
    a few batches at once. Returns the message ids."""
    ids = []
    errors = []
    lock = threading.Lock()

    def one(k, start, count):
        body = [{"destination": url, "headers": headers,
                 "body": f"{tag}-{start + i}"} for i in range(count)]
        addr = nodes[k % len(nodes)]
        status, _, got = qh.http_call(
            addr, "POST", "/v2/batch", json.dumps(body),
            {"Content-Type": "application/json"}, token=token, timeout=60,
            parse="json")
        with lock:
            if status != 200:
                errors.append((status, got))
                return
            for item in got:
                if "messageId" in item:
                    ids.append(item["messageId"])
                else:
                    errors.append(item)

    threads = []
    for k, start in enumerate(range(0, n, BATCH)):
        t = threading.Thread(target=one,
                             args=(k, start, min(BATCH, n - start)))
        t.start()
        threads.append(t)
        if len(threads) >= 4:
            threads.pop(0).join()
    for t in threads:
        t.join()
    if errors:
        raise RuntimeError(f"publish {tag}: {len(errors)} errors, "
                           f"first {errors[0]}")
    return ids


def distinct(sink, path):
    return {r.header("Upstash-Message-Id") for r in sink.requests(path)}


class Target:
    """The node or cluster one scenario runs on."""

    def __init__(self, n_nodes):
        self.cluster = None
        self.node = None
        if n_nodes == 1:
            self.node = qh.DevNode()
            self.node.start()
            self.token = self.node.token
            self.addrs = [self.node.http_addr]
        else:
            self.cluster = qh.Cluster(n=n_nodes)
            self.cluster.start()
            self.cluster.wait_ready()
            self.token = self.cluster.token
            self.addrs = [n.http_addr for n in self.cluster.nodes]

    def cleanup(self):
        if self.cluster is not None:
            self.cluster.cleanup()
        if self.node is not None:
            self.node.cleanup()


def run_scenario(args, scenario):
    good = quiet_disconnects(HttpSink("127.0.0.1")).start()
    bad = quiet_disconnects(HttpSink("127.0.0.2")).start()
    if scenario == "hang":
        bad.script("/bad", Reply(hang=True))
    else:
        bad.script("/bad", Reply(503))
    target = Target(args.nodes)
    try:
        bad_at_start = 0
        if scenario != "alone":
            publish(target.addrs, target.token, bad.url("/bad"), args.bad,
                    {"Upstash-Timeout": args.timeout,
                     "Upstash-Retries": str(args.retries),
                     "Upstash-Retry-Delay": str(args.retry_delay_ms)},
                    "bad")
            # The bad host holds its share before the healthy load starts.
            bad.wait_for(min(32 * args.nodes, args.bad), path="/bad",
                         timeout=60)
            bad_at_start = len(bad.requests("/bad"))
        start = time.time()
        publish(target.addrs, target.token, good.url("/ok"), args.n, {},
                "ok")
        published_s = time.time() - start
        deadline = time.monotonic() + args.deadline
        while (len(distinct(good, "/ok")) < args.n and
               time.monotonic() < deadline):
            time.sleep(0.2)  # a bench: polls its own sink until a deadline
        reqs = good.requests("/ok")
        got = len({r.header("Upstash-Message-Id") for r in reqs})
        last = max((r.time for r in reqs), default=start)
        elapsed = (last if got == args.n else time.time()) - start
        by_10s = len({r.header("Upstash-Message-Id") for r in reqs
                      if r.time - start <= 10})
        bad_during = len(bad.requests("/bad")) - bad_at_start
        return {"got": got, "s": elapsed, "rate": got / elapsed,
                "published_s": published_s, "by_10s": by_10s,
                "bad_during": bad_during}
    finally:
        target.cleanup()
        good.stop()
        bad.stop()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=5000, help="healthy messages")
    ap.add_argument("--bad", type=int, default=3000, help="bad messages")
    ap.add_argument("--timeout", default="10s", help="bad Upstash-Timeout")
    ap.add_argument("--retries", type=int, default=3)
    ap.add_argument("--retry-delay-ms", type=int, default=1000)
    ap.add_argument("--deadline", type=float, default=120.0,
                    help="seconds to wait for the healthy messages")
    ap.add_argument("--nodes", type=int, default=1, choices=(1, 3))
    ap.add_argument("--scenario", action="append",
                    choices=("alone", "hang", "503"))
    args = ap.parse_args()
    print(f"| nodes | bad host | healthy delivered | s | deliveries/s "
          f"| by 10 s | publish s | bad-host requests meanwhile |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for scenario in args.scenario or ["alone", "hang", "503"]:
        r = run_scenario(args, scenario)
        bad = "—" if scenario == "alone" else (
            f"{args.bad} msgs, hangs ({args.timeout})" if scenario == "hang"
            else f"{args.bad} msgs, 503")
        print(f"| {args.nodes} | {bad} | {r['got']:,} of {args.n:,} "
              f"| {r['s']:.1f} | {r['rate']:,.0f} | {r['by_10s']:,} "
              f"| {r['published_s']:.1f} | "
              f"{'—' if scenario == 'alone' else r['bad_during']} |",
              flush=True)


if __name__ == "__main__":
    sys.exit(main())
