"""A steady publish + deliver workload for tests of planned steps (shard
hand-overs, drains, rolling upgrades). Python 3 standard library only.

One thread publishes a small message every `interval_s` to a sink path that
answers after `delay_s` (so deliveries are in flight when a step strikes),
over REST to the nodes in turn: a node that refuses or is down is skipped,
as a client with every endpoint would. It records each acknowledged message
id and when it was acknowledged; the sink counts deliveries per
Upstash-Message-Id. Then:

    load = SteadyLoad(cluster, sink)
    load.start()
    with load.step("SIGTERM node 2"):
        ...                                  # the step
    load.stop()
    report = load.settle(timeout=60)         # waits for every acked id
    report["lost"], report["duplicates"], load.steps  # per step: gap, dups

A duplicate is counted against the step in whose window its second arrival
fell (a step's window runs until the next step starts, or the end)."""

import collections
import http.client
import threading
import time

import qraft_harness as qh
from http_sink import Reply

PATH = "/steady"


class SteadyLoad:
    def __init__(self, cluster, sink, interval_s=0.02, delay_s=0.2):
        self.cluster = cluster
        self.sink = sink
        self.interval_s = interval_s
        sink.script(PATH, Reply(delay_s=delay_s))
        self.acked = {}  # id -> time.time() of the acknowledgement
        self.ack_times = []  # time.monotonic() of each acknowledgement
        self.failures = collections.Counter()  # why a publish was not acked
        self.steps = []  # dicts: name, start, end, gap_s, duplicates
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._next = 0

    def start(self):
        self._thread.start()

    def stop(self):
        self._stop.set()
        self._thread.join(60)

    def _publish_once(self):
        nodes = self.cluster.live_nodes()
        if not nodes:
            return False
        node = nodes[self._next % len(nodes)]
        self._next += 1
        try:
            status, _, body = qh.http_call(
                node.http_addr, "POST",
                f"/v2/publish/{self.sink.url(PATH)}", body=b"steady",
                token=self.cluster.token)
        except (OSError, http.client.HTTPException) as e:
            self.failures[type(e).__name__] += 1
            return False
        if status != 200 or not isinstance(body, dict):
            self.failures[str(status)] += 1
            return False
        with self._lock:
            self.acked[body["messageId"]] = time.time()
            self.ack_times.append(time.monotonic())
        return True

    def _run(self):
        while not self._stop.is_set():
            self._publish_once()
            self._stop.wait(self.interval_s)

    def n_acked(self):
        with self._lock:
            return len(self.acked)

    def wait_for_acks(self, n, timeout=60):
        target = self.n_acked() + n
        qh.wait_until(lambda: self.n_acked() >= target, timeout,
                      lambda: f"{n} more acknowledged publishes (failures: "
                      f"{dict(self.failures)})")

    def step(self, name):
        """A context manager around one planned step: its window starts
        now; the longest publish gap is measured from the last ack before
        it to the first after its end (see settle)."""
        load = self

        class _Step:
            def __enter__(self):
                load.steps.append({"name": name, "start": time.monotonic(),
                                   "end": None})
                return self

            def __exit__(self, *exc):
                load.steps[-1]["end"] = time.monotonic()
                return False

        return _Step()

    def settle(self, timeout=90):
        """After stop(): waits until every acknowledged id was delivered;
        returns {acked, lost, duplicates, delivered} and fills each step's
        gap_s and duplicates."""
        with self._lock:
            acked = dict(self.acked)
            ack_times = list(self.ack_times)

        def delivered():
            return {r.header("Upstash-Message-Id")
                    for r in self.sink.requests(PATH)}

        try:
            qh.wait_until(lambda: set(acked) <= delivered(), timeout,
                          "every acknowledged message to be delivered")
        except qh.HarnessError:
            pass  # reported as lost below
        seen = collections.defaultdict(list)
        for r in self.sink.requests(PATH):
            seen[r.header("Upstash-Message-Id")].append(r.time)
        lost = sorted(set(acked) - set(seen))
        dups = {i: sorted(t) for i, t in seen.items() if len(t) > 1}
        t0_wall, t0_mono = time.time(), time.monotonic()
        for n, st in enumerate(self.steps):
            later = self.steps[n + 1]["start"] if n + 1 < len(self.steps) \
                else float("inf")
            before = [t for t in ack_times if t < st["start"]]
            after = [t for t in ack_times if t >= st["start"]]
            inside = [t for t in after if t <= st["end"]]
            first_after = [t for t in after if t > st["end"]]
            marks = before[-1:] + inside + first_after[:1]
            gaps = [b - a for a, b in zip(marks, marks[1:])]
            st["gap_s"] = max(gaps) if gaps else None
            # A duplicate's second arrival, on the monotonic clock.
            st["duplicates"] = sum(
                1 for ts in dups.values()
                if st["start"] <= ts[1] - t0_wall + t0_mono < later)
        return {"acked": len(acked), "lost": lost, "duplicates": dups,
                "delivered": len(seen)}

    def table(self):
        """The steps as printable lines."""
        lines = [f"{'step':44} {'longest publish gap':>20} {'duplicates':>10}"]
        for st in self.steps:
            gap = "-" if st.get("gap_s") is None else f"{st['gap_s']:.2f} s"
            lines.append(f"{st['name']:44} {gap:>20} "
                         f"{st.get('duplicates', '-'):>10}")
        return "\n".join(lines)
