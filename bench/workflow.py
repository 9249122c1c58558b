#!/usr/bin/env python3
"""Workflow runs/s and steps/s on a 3-node cluster: RUNS runs of STEPS
sequential steps, triggered at once through every node, against an
endpoint that speaks the workflow SDK's protocol (tests/lib/workflow_app.py:
it reads each delivery's history, stores the next step through the nodes in
turn, and finishes the run). Prints one markdown row per (runs, steps,
body).

    QRAFT_BIN=build/bin PYTHONPATH=tests/lib python3 bench/workflow.py \\
        [--runs 200] [--steps 10] [--out-bytes 100]

A step's round trip is: the delivery (signed, its history as the body),
the endpoint's publish of the result (one raft entry, group-committed with
the others), the next delivery. The endpoint is Python (one thread per
delivery) and shares the machine's 2 CPUs with the three nodes: it is part
of what is measured."""

import argparse
import json
import sys
import threading
import time

import qraft_harness as qh
from workflow_app import WorkflowApp


def run_once(cluster, runs, steps, out_bytes):
    app = WorkflowApp([n.http_addr for n in cluster.nodes], cluster.token,
                      steps=steps, path=f"/wf{runs}-{steps}-{out_bytes}")
    app.out_bytes = out_bytes
    app.start()
    try:
        ids = [f"wfr_bench-{runs}-{steps}-{out_bytes}-{i}"
               for i in range(runs)]
        start = time.time()
        threads = [threading.Thread(target=app.trigger, args=(i,))
                   for i in ids]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

        def done():
            with app.lock:
                return len(app.finished) == runs
        qh.wait_until(done, 600, lambda: f"{len(app.finished)} of {runs} "
                                         f"runs finished; {app.errors[:2]}")
        elapsed = time.time() - start
        if app.errors:
            print(f"errors: {app.errors[:3]}", file=sys.stderr)
        return elapsed
    finally:
        app.stop()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, action="append")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--out-bytes", type=int, default=100)
    args = ap.parse_args()
    cluster = qh.Cluster(n=3)
    try:
        cluster.start()
        cluster.wait_ready()
        print("| runs at once | steps | step out | s | runs/s | steps/s |")
        print("| --- | --- | --- | --- | --- | --- |")
        for runs in args.runs or [50, 200]:
            s = run_once(cluster, runs, args.steps, args.out_bytes)
            print(f"| {runs} | {args.steps} | {args.out_bytes} B | {s:.1f} "
                  f"| {runs / s:.1f} | {runs * args.steps / s:.0f} |",
                  flush=True)
    finally:
        cluster.cleanup()


if __name__ == "__main__":
    main()
