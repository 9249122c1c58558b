"""Jepsen-style graphs of a chaos run: latency.png and rate.png.

series() is pure (plain data in, plain data out) so jepsen/test_schedule.py
tests it without matplotlib; render() draws with python3-matplotlib (Agg,
no display). jepsen/run calls render() after the checker and logs, never
raises, when drawing fails: a graph is never a reason for a run to be
invalid.

    latency.png  every publish: completion latency (log scale) against the
                 time it was invoked, by outcome (ok, info, fail)
    rate.png     publishes completed per second, by outcome
Both shade the nemesis windows, one colour per nemesis.
"""

OUTCOMES = ("ok", "info", "fail")
COLORS = {"ok": "#3a7bd5", "info": "#f0a202", "fail": "#d62246"}
NEMESIS_COLORS = {
    "kill": "#e41a1c", "partition": "#377eb8", "pause": "#4daf4a",
    "clock": "#984ea3", "transfer": "#ff7f00", "membership": "#a65628",
    "powerloss": "#f781bf", "restart": "#17becf",
    "heal": "#999999",
}


def nemesis_windows(events, t_end=None):
    """[(f, start, end)] from history nemesis records (phase start/end),
    in start order. A start without an end lasts until t_end (or its own
    time when t_end is None)."""
    open_ = {}
    out = []
    for e in sorted(events, key=lambda e: e["time"]):
        f, phase = e.get("f"), e.get("phase")
        if phase == "start":
            open_.setdefault(f, []).append(e["time"])
        elif phase == "end" and open_.get(f):
            out.append((f, open_[f].pop(0), e["time"]))
    for f, starts in open_.items():
        for s in starts:
            out.append((f, s, t_end if t_end is not None else s))
    return sorted(out, key=lambda w: (w[1], w[0]))


def series(ops, events, bucket_s=1.0):
    """The data behind both graphs, times in seconds from the first op (or
    event): {"t0", "points": {outcome: [(t, latency_ms)]}, "rate":
    {outcome: [(bucket start, ops per second)]}, "windows": [(f, s, e)]}.
    Rate buckets run from 0 to the last completion, empty ones included,
    so a stall shows as a dip to 0."""
    times = [op["t_invoke"] for op in ops] + [e["time"] for e in events]
    t0 = min(times) if times else 0.0
    points = {k: [] for k in OUTCOMES}
    counts = {k: {} for k in OUTCOMES}
    t_last = 0.0
    for op in ops:
        kind = op.get("type")
        if kind not in points:
            continue
        t = op["t_invoke"] - t0
        points[kind].append((round(t, 3), op.get("latency_ms", 0.0)))
        done = op.get("t_complete", op["t_invoke"]) - t0
        t_last = max(t_last, done)
        b = int(done // bucket_s)
        counts[kind][b] = counts[kind].get(b, 0) + 1
    n_buckets = int(t_last // bucket_s) + 1 if ops else 0
    rate = {
        k: [(round(b * bucket_s, 3), counts[k].get(b, 0) / bucket_s)
            for b in range(n_buckets)]
        for k in OUTCOMES
    }
    t_end = max(times) if times else None
    windows = [(f, round(s - t0, 3), round(e - t0, 3))
               for f, s, e in nemesis_windows(events, t_end)]
    return {"t0": t0, "points": points, "rate": rate, "windows": windows}


def _shade(ax, windows):
    seen = set()
    for f, s, e in windows:
        label = None if f in seen else f
        seen.add(f)
        ax.axvspan(s, max(e, s + 0.05), color=NEMESIS_COLORS.get(f, "#cccccc"),
                   alpha=0.18, lw=0, label=label)


def render(out_dir, ops, events, title=""):
    """Writes out_dir/latency.png and out_dir/rate.png. Raises whatever
    matplotlib raises (ImportError when it is not installed)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = series(ops, events)
    paths = []

    fig, ax = plt.subplots(figsize=(12, 5))
    _shade(ax, data["windows"])
    for kind in OUTCOMES:
        pts = data["points"][kind]
        if pts:
            ax.scatter([p[0] for p in pts], [max(p[1], 0.1) for p in pts],
                       s=4, color=COLORS[kind], label=f"{kind} ({len(pts)})",
                       alpha=0.7, lw=0)
    ax.set_yscale("log")
    ax.set_xlabel("time (s)")
    ax.set_ylabel("publish latency (ms)")
    ax.set_title(f"{title} latency".strip())
    ax.legend(loc="upper right", fontsize="small", markerscale=3)
    ax.grid(True, which="major", alpha=0.3)
    fig.tight_layout()
    path = f"{out_dir}/latency.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    paths.append(path)

    fig, ax = plt.subplots(figsize=(12, 5))
    _shade(ax, data["windows"])
    for kind in OUTCOMES:
        pts = data["rate"][kind]
        if any(v for _, v in pts):
            ax.plot([p[0] for p in pts], [p[1] for p in pts],
                    color=COLORS[kind], label=kind, lw=1.2)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("publishes completed per second")
    ax.set_title(f"{title} throughput".strip())
    ax.set_ylim(bottom=0)
    ax.legend(loc="upper right", fontsize="small")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    path = f"{out_dir}/rate.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    paths.append(path)
    return paths
