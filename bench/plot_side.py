#!/usr/bin/python3
"""Reads a results file of ../shared/peers/side-by-side.sh and prints, per
repetition, the figures issue 14 compares (qraft against JetStream R3 and
etcd R3 measured minutes apart) as markdown rows; with --png, also plots
publish throughput against the in-flight window W for the three systems
(one line per repetition), and with --latency-png qraft's end-to-end
delivery latency percentiles (publish sent to the request's arrival at the
sink) at 64 and 256 in flight. Plots need Debian's python3-matplotlib, so
run it with /usr/bin/python3.

    /usr/bin/python3 bench/plot_side.py RESULTS.txt [--png OUT.png] \
        [--latency-png LAT.png]
"""

import argparse
import re
from collections import defaultdict


PERCENTILES = ("p50", "p90", "p99", "max")


def parse(path):
    """{rep: {key: value}} of the figures this script reports."""
    reps = defaultdict(dict)
    for line in open(path):
        m = re.match(r"rep=(\d+) .*RESULT (.*)", line)
        if not m:
            continue
        rep, rest = int(m.group(1)), m.group(2)
        f = dict(re.findall(r"(\w+)=(\S+)", rest))
        r = reps[rep]
        if rest.startswith("pub w="):
            r[f"nats_w{f['w']}"] = float(f["msgs_per_s"])
        elif rest.startswith("sub "):
            r["nats_sub"] = float(f["msgs_per_s"])
        elif rest.startswith("wrk etcd_put_w"):
            r[f"etcd_w{f['c']}"] = float(f["rps"])
        elif rest.startswith("disk_append"):
            r["fsync_p50_us"] = float(f["p50_us"])
        elif rest.startswith("qraft pub w="):
            w = re.match(r"qraft pub w=(\d+)", rest).group(1)
            r[f"qraft_w{w}"] = float(f["msgs_per_s"])
            r[f"qraft_w{w}_p50_ms"] = float(f["p50_ms"])
        elif rest.startswith("qraft rest64"):
            r["qraft_rest64"] = float(f["rps"])
        elif rest.startswith("qraft deliver c="):
            c = re.match(r"qraft deliver c=(\d+)", rest).group(1)
            r[f"qraft_deliver{c}"] = float(f["delivered_per_s"])
            for q in PERCENTILES:
                r[f"qraft_deliver{c}_{q}_ms"] = float(f[f"{q}_ms"])
        elif rest.startswith("qraft failover"):
            r["qraft_failover_ms"] = float(f["ms"])
    return reps


def ratio(r, a, b):
    return f"{r[a] / r[b]:.2f}x" if a in r and b in r and r[b] else "?"


def rows(reps):
    print("| rep | W=1 qraft / NATS | W=64 | W=1024 | W=1 p50 / fsync p50 "
          "| REST64 / RPC W=64 | deliver c=256 / NATS pull+ack "
          "| failover |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for rep, r in sorted(reps.items()):
        p50 = (f"{r['qraft_w1_p50_ms'] * 1000 / r['fsync_p50_us']:.1f}x"
               if "qraft_w1_p50_ms" in r and r.get("fsync_p50_us") else "?")
        print(f"| {rep} | {ratio(r, 'qraft_w1', 'nats_w1')} "
              f"| {ratio(r, 'qraft_w64', 'nats_w64')} "
              f"| {ratio(r, 'qraft_w1024', 'nats_w1024')} | {p50} "
              f"| {ratio(r, 'qraft_rest64', 'qraft_w64')} "
              f"| {ratio(r, 'qraft_deliver256', 'nats_sub')} "
              f"| {r.get('qraft_failover_ms', '?'):.0f} ms |")


def plot(reps, out):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ws = [1, 64, 1024]
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, key, style in (("qraft (3 nodes, quorum fsync)", "qraft", "o-"),
                             ("NATS JetStream R3 (no fsync)", "nats", "s--"),
                             ("etcd R3", "etcd", "^:")):
        for rep, r in sorted(reps.items()):
            ys = [r.get(f"{key}_w{w}") for w in ws]
            if None in ys:
                continue
            ax.plot(ws, ys, style, label=f"{name}, rep {rep}")
    ax.set_xscale("log")
    ax.set_xlabel("publishes in flight (W)")
    ax.set_ylabel("acknowledged publishes / s (1 KiB)")
    ax.legend(fontsize=7)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=100)


def plot_latency(reps, out):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = [(rep, c) for rep in sorted(reps) for c in (64, 256)
              if f"qraft_deliver{c}_p50_ms" in reps[rep]]
    fig, ax = plt.subplots(figsize=(6, 4))
    width = 0.8 / max(len(groups), 1)
    for i, (rep, c) in enumerate(groups):
        r = reps[rep]
        ys = [r[f"qraft_deliver{c}_{q}_ms"] for q in PERCENTILES]
        xs = [j + (i - (len(groups) - 1) / 2) * width
              for j in range(len(PERCENTILES))]
        ax.bar(xs, ys, width,
               label=f"{c} in flight, rep {rep} "
                     f"({r[f'qraft_deliver{c}']:,.0f} delivered/s)")
    ax.set_xticks(range(len(PERCENTILES)))
    ax.set_xticklabels(PERCENTILES)
    ax.set_ylabel("publish sent to arrival at the sink (ms)")
    ax.set_title("qraft, 3 nodes: end-to-end delivery latency (1 KiB)",
                 fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=100)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results")
    ap.add_argument("--png")
    ap.add_argument("--latency-png")
    args = ap.parse_args()
    reps = parse(args.results)
    rows(reps)
    if args.png:
        plot(reps, args.png)
    if args.latency_png:
        plot_latency(reps, args.latency_png)


if __name__ == "__main__":
    main()
