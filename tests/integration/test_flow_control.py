"""Flow control holds (docs/api.md 5.12, issue #13): real qraftd processes
and a sink that sees, per flow-control key, how many requests it holds at
once and when each started.

A message with Upstash-Flow-Control-Key is sharded by its key
(node/repl/apply_flow.c: FNV-1a 32 of the key mod 256), so one node, the
owner of that shard, sends all of a key's messages and holds its
parallelism (deliveries awaiting a response) and rate (starts per period)
in memory; its waitlist is in the store.

On one dev node: bad limits are 400s that say why; a backlog of 100,000
messages for one key costs the node little memory and no scan time, and is
read back at once; a key that cannot move (paused, or its one delivery
hanging) holds no other key.

On three nodes: the owner of a key is killed -9 mid-way, later the leader
(or, if the first victim leads by then, the owner), and each comes back.
Throughout, the sink never holds more than the key's parallelism at once,
never sees more than the rate start within a period (less RATE_SLACK_S for
the few ms each request takes to arrive), and every message arrives. The
timeline of owner changes is printed. A shard that moves from a live owner
(to a node that comes back) does not hand over cleanly yet: that test is
an expected failure until it does.

The sink counts a request from the moment it has read it to the end of
its answer, also when the node that sent it died or cancelled it meanwhile
(its connection closed): that is what the destination lives through. Which
node sent a request is read from /proc (the qraftd process holding the
connection's socket), since `qraft status` gives each node's number of
shards but not which ones.
"""

import json
import os
import select
import socket
import sys
import threading
import time
import unittest
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import qraft_harness as qh

# The peak the jepsen checker counts a key's requests with (one count for
# both).
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "..", "..", "jepsen"))
from checker import peak_concurrency  # noqa: E402

# node/repl/fsm.h QR_FSM_N_SHARDS.
N_SHARDS = 256
# Limits of a message's flow control (docs/api.md 1.3).
MAX_KEY_BYTES = 256


def report(text):
    print(f"\n  test_flow_control: {text}", file=sys.stderr, flush=True)


def fnv1a32(text):
    """node/lib/hash.c qr_hash_fnv1a32."""
    h = 2166136261
    for byte in text.encode():
        h ^= byte
        h = (h * 16777619) & 0xFFFFFFFF
    return h


def shard_of(key):
    """node/repl/apply_flow.c qr_fsm_flow_shard_of."""
    return fnv1a32(key) % N_SHARDS


def memory_kib(pid):
    """(VmRSS, RssAnon) of a process, in KiB, from /proc/<pid>/status."""
    got = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            name, _, value = line.partition(":")
            if name in ("VmRSS", "RssAnon"):
                got[name] = int(value.split()[0])
    return got["VmRSS"], got["RssAnon"]


def cpu_seconds(pid):
    """User + system CPU time a process used so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------------------
# The sink.


class Hit:
    """One request the sink received: to /k/<key>, its body the message's
    tag. Times are time.monotonic(); closed is when the sender closed the
    connection before the answer (it died, or cancelled), else None."""

    def __init__(self, key, tag, start, port):
        self.key = key
        self.tag = tag
        self.start = start
        self.port = port
        self.node = None  # id of the qraftd that sent it, when known
        self.end = None
        self.closed = None

    @property
    def answered(self):
        """The sender read a whole answer (as far as the sink can tell)."""
        return self.end is not None and self.closed is None


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256

    def handle_error(self, request, client_address):
        # A killed node's connections drop mid-answer: expected here.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class FlowSink:
    """Answers POST /k/<key> with 200 after hold_s (a key in `hang`: once
    the sink stops), recording a Hit per request. pids() gives {node id:
    pid} of the nodes running now, to tell which one sent a request."""

    def __init__(self, hold_s, pids=dict):
        self.hold_s = hold_s
        self.pids = pids
        self.hang = set()
        self.lock = threading.Condition()
        self.hits = []
        self.stopping = threading.Event()
        self.server = _Server(("127.0.0.1", 0), _handler(self))
        self.thread = threading.Thread(
            target=self.server.serve_forever, name="flow-sink", daemon=True)

    def start(self):
        self.thread.start()
        return self

    def stop(self):
        self.stopping.set()
        self.server.shutdown()
        self.thread.join()
        self.server.server_close()

    @property
    def port(self):
        return self.server.server_address[1]

    def url(self, key):
        return f"http://127.0.0.1:{self.port}/k/{key}"

    def of(self, key):
        with self.lock:
            return [h for h in self.hits if h.key == key]

    def answered_tags(self, key):
        return {h.tag for h in self.of(key) if h.answered}

    def node_of(self, port):
        """Id of the node whose process holds the connection from
        127.0.0.1:port to the sink, or None."""
        inode = None
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            try:
                with open(table) as f:
                    lines = f.readlines()[1:]
            except OSError:
                continue
            for line in lines:
                fields = line.split()
                local, remote = fields[1], fields[2]
                if (int(local.rsplit(":", 1)[1], 16) == port
                        and int(remote.rsplit(":", 1)[1], 16) == self.port):
                    inode = fields[9]
        if inode is None:
            return None
        target = f"socket:[{inode}]"
        for node_id, pid in self.pids().items():
            try:
                for fd in os.listdir(f"/proc/{pid}/fd"):
                    if os.readlink(f"/proc/{pid}/fd/{fd}") == target:
                        return node_id
            except OSError:
                continue
        return None


def _hold(sink, conn, hit, seconds):
    """Waits seconds (None: until the sink stops), noting in hit when the
    peer closes the connection meanwhile."""
    deadline = None if seconds is None else time.monotonic() + seconds
    while not sink.stopping.is_set():
        left = 0.1 if deadline is None else deadline - time.monotonic()
        if left <= 0:
            return
        if hit.closed is not None:
            sink.stopping.wait(min(left, 0.1))
            continue
        readable, _, _ = select.select([conn], [], [], min(left, 0.1))
        if not readable:
            continue
        try:
            data = conn.recv(1, socket.MSG_PEEK)
        except OSError:
            data = b""
        if data:
            # The peer sent more while waiting (it would not); just wait.
            sink.stopping.wait(left if deadline is not None else None)
            return
        hit.closed = time.monotonic()


def _handler(sink):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self):
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            path = self.path.split("?", 1)[0]
            key = path[len("/k/"):] if path.startswith("/k/") else path
            hit = Hit(key, body.decode(errors="replace"), time.monotonic(),
                      self.client_address[1])
            hit.node = sink.node_of(hit.port)
            with sink.lock:
                sink.hits.append(hit)
                sink.lock.notify_all()
            _hold(sink, self.connection, hit,
                  None if key in sink.hang else sink.hold_s)
            try:
                if not sink.stopping.is_set():
                    # The request's end: its sender cannot start another
                    # before it reads this answer (a stamp after the write
                    # could come after that start).
                    hit.end = time.monotonic()
                    self.send_response(200)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    self.wfile.flush()
                else:
                    self.close_connection = True
            except OSError:
                self.close_connection = True
                if hit.closed is None:
                    hit.closed = time.monotonic()
            finally:
                if hit.end is None:
                    hit.end = time.monotonic()
                with sink.lock:
                    sink.lock.notify_all()

        def log_message(self, fmt, *args):
            pass

    return Handler


def busiest_window(starts, period_s):
    """(most starts in [s, s + period_s) for a start s, that s)."""
    starts = sorted(starts)
    best, anchor, j = 0, None, 0
    for i, s in enumerate(starts):
        j = max(j, i)
        while j < len(starts) and starts[j] < s + period_s:
            j += 1
        if j - i > best:
            best, anchor = j - i, s
    return best, anchor


# ---------------------------------------------------------------------------
# Publishing.


def flow_batch(url, key, value, tags):
    return [{"destination": url, "body": tag,
             "headers": {"Upstash-Flow-Control-Key": key,
                         "Upstash-Flow-Control-Value": value}}
            for tag in tags]


def post_batch(addr, token, elements):
    status, _, body = qh.http_call(
        addr, "POST", "/v2/batch", body=elements, token=token,
        headers={"Content-Type": "application/json"}, timeout=60)
    if status != 200:
        raise qh.HarnessError(f"batch: {status} {body!r}")
    return body


def flow_info(addr, token, key):
    status, _, body = qh.http_call(addr, "GET", f"/v2/flowControl/{key}",
                                   token=token)
    return status, body


# ---------------------------------------------------------------------------
# One dev node.


class FlowControlDevTest(unittest.TestCase):
    def setUp(self):
        self.node = qh.start_dev_node(self)

    def call(self, method, target, body=None, headers=None):
        return qh.http_call(self.node.http_addr, method, target, body=body,
                            headers=headers, token=self.node.token)

    def start_sink(self, hold_s):
        node = self.node
        sink = FlowSink(hold_s, pids=lambda: (
            {node.id: node.proc.pid} if node.running() else {})).start()
        self.addCleanup(sink.stop)
        return sink

    def test_bad_limits_are_400s_that_say_why(self):
        url = "/v2/publish/http://127.0.0.1:9/x"
        cases = [
            ({"Upstash-Flow-Control-Key": "k",
              "Upstash-Flow-Control-Value": "parallelism=-1"},
             ["Upstash-Flow-Control-Value", "parallelism", "'-1'", ">= 1"]),
            ({"Upstash-Flow-Control-Key": "k",
              "Upstash-Flow-Control-Value": "rate=abc"},
             ["Upstash-Flow-Control-Value", "rate", "'abc'", ">= 1"]),
            ({"Upstash-Flow-Control-Key": "k",
              "Upstash-Flow-Control-Value": "foo=1"},
             ["Upstash-Flow-Control-Value", "unknown name 'foo'",
              "parallelism, rate and period"]),
            ({"Upstash-Flow-Control-Key": "k",
              "Upstash-Flow-Control-Value": "rate=1, period=0s"},
             ["period '0s'", "1s to 7d"]),
            ({"Upstash-Flow-Control-Key": "k",
              "Upstash-Flow-Control-Value": "period=5s"},
             ["Upstash-Flow-Control-Value"]),
            ({"Upstash-Flow-Control-Key": "k" * (MAX_KEY_BYTES + 1),
              "Upstash-Flow-Control-Value": "rate=1"},
             ["flow control key", f"over {MAX_KEY_BYTES} bytes"]),
            ({"Upstash-Flow-Control-Value": "rate=1"},
             ["without a flow control key"]),
            ({"Upstash-Flow-Control-Key": "k"},
             ["'k'", "needs a parallelism or a rate"]),
        ]
        for headers, words in cases:
            with self.subTest(headers=headers):
                status, _, body = self.call("POST", url, b"x", headers)
                self.assertEqual(status, 400, body)
                for word in words:
                    self.assertIn(word, body["error"])
        # A key of exactly the limit is fine.
        status, _, body = self.call(
            "POST", url, b"x",
            {"Upstash-Flow-Control-Key": "k" * MAX_KEY_BYTES,
             "Upstash-Flow-Control-Value": "rate=1", "Upstash-Delay": "1h"})
        self.assertEqual(status, 200, body)

        for target, words in [
                ("/v2/flowControl/k/pin?rate=abc", ["rate", ">= 1"]),
                ("/v2/flowControl/k/pin?parallelism=0", ["parallelism",
                                                         ">= 1"]),
                ("/v2/flowControl/k/pin?period=0", ["period", "1 s"]),
                ("/v2/flowControl/k/pin?burst=3", ["unknown parameter",
                                                   "'burst'"]),
                ("/v2/flowControl/k/pin", ["pin needs"]),
                ("/v2/flowControl/k/unpin", ["unpin needs",
                                             "parallelism=true",
                                             "rate=true"]),
                ("/v2/flowControl/k/unpin?rate=maybe", ["rate", "true or "
                                                        "false"]),
                (f"/v2/flowControl/{'k' * (MAX_KEY_BYTES + 1)}/pause",
                 ["flow control key", f"over {MAX_KEY_BYTES} bytes"])]:
            with self.subTest(target=target[:60]):
                status, _, body = self.call("POST", target)
                self.assertEqual(status, 400, body)
                for word in words:
                    self.assertIn(word, body["error"])
        status, _, body = self.call("GET", "/v2/flowControl/nokey")
        self.assertEqual(status, 404, body)
        self.assertIn("nokey", body["error"])
        self.assertTrue(self.node.running(), self.node.stderr_tail())

    def test_a_backlog_costs_no_memory_and_reads_at_once(self):
        n_messages = 100000
        per_batch = 500
        key = "backlog"
        sink = self.start_sink(0.1)
        sink.hang.add(key)
        pid = self.node.proc.pid
        # A first message, so the node has published, delivered and
        # answered a flow read once before the baseline.
        post_batch(self.node.http_addr, self.node.token,
                   flow_batch(sink.url("warm"), "warm", "parallelism=1",
                              ["w"]))
        qh.wait_until(lambda: sink.answered_tags("warm"), 30,
                      "the warm-up message to arrive")
        flow_info(self.node.http_addr, self.node.token, "warm")
        base_rss, base_anon = memory_kib(pid)

        t0 = time.monotonic()
        for first in range(0, n_messages, per_batch):
            tags = [str(i) for i in range(first, first + per_batch)]
            post_batch(self.node.http_addr, self.node.token,
                       flow_batch(sink.url(key), key, "parallelism=1", tags))
        publish_s = time.monotonic() - t0
        qh.wait_until(lambda: sink.of(key), 30, "the first delivery")

        info = {}

        def stored():
            status, body = flow_info(self.node.http_addr, self.node.token,
                                     key)
            info.update(status=status, body=body)
            return status == 200 and body["waitListSize"] == n_messages - 1
        qh.wait_until(stored, 30, lambda: f"the backlog in the waitlist "
                                          f"({info})")
        t1 = time.monotonic()
        status, body = flow_info(self.node.http_addr, self.node.token, key)
        read_s = time.monotonic() - t1
        self.assertEqual(status, 200, body)
        self.assertEqual(body["waitListSize"], n_messages - 1, body)
        self.assertEqual(body["parallelismCount"], 1, body)
        self.assertEqual(body["parallelismMax"], 1, body)
        rss, anon = memory_kib(pid)
        self.assertEqual(len(sink.of(key)), 1, "more than one in flight")
        report(f"backlog of {n_messages}: published in {publish_s:.1f} s; "
               f"GET /v2/flowControl/{key} in {read_s * 1000:.1f} ms "
               f"(waitListSize {body['waitListSize']}, parallelismCount "
               f"{body['parallelismCount']}); VmRSS {base_rss // 1024} -> "
               f"{rss // 1024} MiB, RssAnon {base_anon // 1024} -> "
               f"{anon // 1024} MiB")
        self.assertLess(read_s, 1.0)
        # The backlog costs the owner no scan time: another key's messages
        # go at once, and the node is nearly idle meanwhile.
        other = [f"o{i}" for i in range(20)]
        cpu0, t2 = cpu_seconds(pid), time.monotonic()
        post_batch(self.node.http_addr, self.node.token,
                   flow_batch(sink.url("other"), "other", "parallelism=1",
                              other))
        qh.wait_until(lambda: sink.answered_tags("other") == set(other), 30,
                      "another key's messages beside the backlog")
        wall = time.monotonic() - t2
        cpu = cpu_seconds(pid) - cpu0
        report(f"20 messages of another key (0.1 s each, one at a time) "
               f"beside the backlog: {wall:.1f} s, the node used {cpu:.2f} "
               f"CPU s")
        self.assertLess(cpu, wall / 2)
        if os.environ.get("ASAN_OPTIONS") is not None:
            return  # ASan's shadow and quarantine: no bound to hold here
        self.assertLess(rss - base_rss, 64 * 1024,
                        f"VmRSS grew from {base_rss} to {rss} KiB")
        self.assertLess(anon - base_anon, 64 * 1024,
                        f"RssAnon grew from {base_anon} to {anon} KiB")

    def test_a_key_that_cannot_move_holds_no_other(self):
        sink = self.start_sink(0.05)
        addr, token = self.node.http_addr, self.node.token
        sink.hang.add("stuck")
        status, _, body = self.call("POST", "/v2/flowControl/held/pause")
        self.assertEqual(status, 200, body)
        post_batch(addr, token, flow_batch(sink.url("stuck"), "stuck",
                                           "parallelism=1",
                                           [f"s{i}" for i in range(5)]))
        post_batch(addr, token, flow_batch(sink.url("held"), "held",
                                           "parallelism=3",
                                           [f"h{i}" for i in range(5)]))
        qh.wait_until(lambda: sink.of("stuck"), 30,
                      "the stuck key's first delivery")
        free = [f"f{i}" for i in range(30)]
        post_batch(addr, token, flow_batch(sink.url("free"), "free",
                                           "parallelism=1", free))
        qh.wait_until(lambda: sink.answered_tags("free") == set(free), 30,
                      lambda: f"the free key's messages "
                              f"({len(sink.answered_tags('free'))} of 30)")
        peak, _ = peak_concurrency([(h.start, h.end)
                                    for h in sink.of("free")])
        self.assertEqual(peak, 1)
        self.assertEqual(len(sink.of("stuck")), 1)
        self.assertEqual(sink.of("held"), [])
        status, body = flow_info(addr, token, "held")
        self.assertEqual(status, 200, body)
        self.assertTrue(body["isPaused"], body)
        self.assertEqual(body["waitListSize"], 5, body)
        status, body = flow_info(addr, token, "stuck")
        self.assertEqual((body["parallelismCount"], body["waitListSize"]),
                         (1, 4), body)
        # Resumed, the paused key goes, three at a time.
        status, _, body = self.call("POST", "/v2/flowControl/held/resume")
        self.assertEqual(status, 200, body)
        qh.wait_until(lambda: len(sink.answered_tags("held")) == 5, 30,
                      "the resumed key's messages")
        peak, _ = peak_concurrency([(h.start, h.end)
                                    for h in sink.of("held")])
        self.assertLessEqual(peak, 3)
        self.assertEqual(len(sink.of("stuck")), 1)


# ---------------------------------------------------------------------------
# Three nodes.

HOLD_S = 0.2
# Keys of low shards (0 and 1): when a node comes back, the leader moves a
# live owner's highest shards to it and never these (qr_shards_balance), so
# each owner change below is one a kill causes. A live owner's shard moving
# is test_a_moved_shard_hands_over.
PAR_KEY, PARALLELISM, N_PAR = "fc-parallel-1", 2, 100
RATE_KEY, RATE, PERIOD_S, N_RATE = "fc-rate-67", 5, 1, 60
# Shard 255: the first to move back to a node that returns.
MOVING_KEY = "fc-moves-108"
# A period's starts reach the sink a few ms after the owner makes them, and
# not all equally late: the rate is checked over windows this much shorter
# than the period (the busiest full-period window is reported).
RATE_SLACK_S = 0.1
FINISH_TIMEOUT = 120.0


def segments(hits, t0):
    """The senders of hits in start order, as [(node, count, first start,
    last end)] relative to t0, one per run of the same node without a
    pause of a second or more."""
    out = []
    for h in sorted(hits, key=lambda h: h.start):
        end = (h.end or h.start) - t0
        if (out and out[-1][0] == h.node
                and h.start - t0 < out[-1][3] + 1.0):
            node, n, first, last = out[-1]
            out[-1] = (node, n + 1, first, max(last, end))
        else:
            out.append((h.node, 1, h.start - t0, end))
    return out


def show_segments(segs):
    return "; ".join(f"node {node}: {n} from {first:.2f} s to {last:.2f} s"
                     for node, n, first, last in segs)


class FlowControlClusterTest(unittest.TestCase):
    def wait_spread(self, cluster):
        """Every node is live and owns shards on the leader's map."""
        def spread():
            nodes = cluster.leader().status().get("nodes", [])
            return (len(nodes) == len(cluster.nodes)
                    and all(n.get("alive") and n.get("shards", 0) > 0
                            for n in nodes))
        qh.wait_until(spread, 60, "the leader to give every node shards")

    def owner(self, cluster, sink, key):
        """The node that sent key's latest request the sink could place."""
        placed = [h for h in sink.of(key) if h.node is not None]
        if not placed:
            raise qh.HarnessError(f"no request of {key} placed on a node")
        return cluster.node(max(placed, key=lambda h: h.start).node)

    def start(self):
        cluster = qh.start_cluster(self)
        qh.wait_until(
            lambda: all(n.status()["feature_level"] == qh.FEATURE_LEVEL
                        for n in cluster.nodes),
            30, f"every node to apply feature level {qh.FEATURE_LEVEL}")
        self.wait_spread(cluster)
        return cluster

    # The shard moves from a live owner in two steps (shards.h): to nobody
    # for 5 s, while that owner's deliveries finish, then to the node that
    # came back. Before that, the old owner cancelled its deliveries as it
    # applied the new map while the destination went on serving them, and
    # the new owner started 60 to 130 ms later (in some runs 100 ms BEFORE:
    # both sent the same two messages at once): 4 requests of a key whose
    # parallelism is 2.
    def test_a_moved_shard_hands_over(self):
        """The owner of a key's shard is killed -9 and comes back; the
        leader then gives the shard back to it from the live node that
        took it over meanwhile. The new owner must not start before the
        old one's requests are over: the sink holds each of the interim
        owner's for 3 s, longer than the rejoin takes."""
        self.assertEqual(shard_of(MOVING_KEY), N_SHARDS - 1)
        cluster = self.start()
        parallelism, n = 2, 30
        sink = FlowSink(0.3, pids=lambda: {
            n.id: n.proc.pid for n in cluster.nodes if n.running()}).start()
        self.addCleanup(sink.stop)
        t0 = time.monotonic()
        post_batch(cluster.leader().http_addr, cluster.token, flow_batch(
            sink.url(MOVING_KEY), MOVING_KEY, f"parallelism={parallelism}",
            [f"m{i}" for i in range(n)]))
        qh.wait_until(lambda: len(sink.answered_tags(MOVING_KEY)) >= 2, 60,
                      "the first answers")
        first = self.owner(cluster, sink, MOVING_KEY)
        cluster.kill9(first)
        t_kill = time.monotonic() - t0
        qh.wait_until(lambda: [h for h in sink.of(MOVING_KEY)
                               if h.node not in (None, first.id)
                               and h.answered], 60,
                      "another node to take the key over")
        sink.hold_s = 3.0
        t_long = time.monotonic()
        qh.wait_until(lambda: [h for h in sink.of(MOVING_KEY)
                               if h.start > t_long], 60,
                      "a request held 3 s")
        cluster.restart(first)
        t_back = time.monotonic() - t0
        self.wait_spread(cluster)
        t_spread = time.monotonic() - t0
        qh.wait_until(lambda: [h for h in sink.of(MOVING_KEY)
                               if h.node == first.id
                               and h.start - t0 > t_back], 60,
                      f"node {first.id} to send the key again")
        sink.hold_s = 0.3
        qh.wait_until(
            lambda: len(sink.answered_tags(MOVING_KEY)) == n, FINISH_TIMEOUT,
            lambda: f"every message answered "
                    f"({len(sink.answered_tags(MOVING_KEY))} of {n})")
        hits = sink.of(MOVING_KEY)
        peak, at = peak_concurrency([(h.start, h.end) for h in hits])
        peak_open, _ = peak_concurrency(
            [(h.start, h.closed or h.end) for h in hits])
        detail = "\n    ".join(
            [f"node {first.id} killed at {t_kill:.2f} s, restarted at "
             f"{t_back:.2f} s, every node owned shards at {t_spread:.2f} s",
             show_segments(segments(hits, t0))]
            + [f"{h.tag} node {h.node}: {h.start - t0:.3f} s to "
               f"{h.end - t0:.3f} s"
               + ("" if h.closed is None else
                  f" (connection closed at {h.closed - t0:.3f} s)")
               for h in sorted(hits, key=lambda h: h.start)
               if h.start - t0 > t_back - 1])
        report(f"{MOVING_KEY}: peak {peak} at once (start to answer"
               f"{'' if at is None else f', at {at - t0:.2f} s'}), "
               f"{peak_open} while the senders' connections were open\n"
               f"    {detail}")
        self.assertLessEqual(peak, parallelism, detail)

    def test_limits_hold_across_owner_and_leader_kills(self):
        cluster = self.start()
        token = cluster.token
        sink = FlowSink(HOLD_S, pids=lambda: {
            n.id: n.proc.pid for n in cluster.nodes if n.running()}).start()
        self.addCleanup(sink.stop)
        t0 = time.monotonic()
        events = []

        def mark(text):
            events.append((time.monotonic() - t0, text))

        leader = cluster.leader()
        post_batch(leader.http_addr, token, flow_batch(
            sink.url(PAR_KEY), PAR_KEY, f"parallelism={PARALLELISM}",
            [f"p{i}" for i in range(N_PAR)]))
        post_batch(leader.http_addr, token, flow_batch(
            sink.url(RATE_KEY), RATE_KEY, f"rate={RATE}, period={PERIOD_S}s",
            [f"r{i}" for i in range(N_RATE)]))
        mark(f"published {N_PAR} to {PAR_KEY} (shard {shard_of(PAR_KEY)}), "
             f"{N_RATE} to {RATE_KEY} (shard {shard_of(RATE_KEY)}); leader "
             f"node {leader.id}")

        def answered(key, n):
            def enough():
                cluster.check_not_crashed()
                return len(sink.answered_tags(key)) >= n
            qh.wait_until(enough, FINISH_TIMEOUT, lambda: (
                f"{n} messages of {key} answered "
                f"({len(sink.answered_tags(key))})"))

        def taken_over(key, since, old):
            def moved():
                cluster.check_not_crashed()
                return [h for h in sink.of(key)
                        if h.start > since and h.node is not None
                        and h.answered
                        and (old is None or h.node != old.id)]
            return qh.wait_until(moved, FINISH_TIMEOUT,
                                 f"{key} sent again after the kill")[0]

        # The key's owner dies mid-way; another node takes its shard once
        # the lease lapses.
        answered(PAR_KEY, N_PAR // 4)
        owner1 = self.owner(cluster, sink, PAR_KEY)
        mark(f"node {cluster.leader().id} leads")
        t_kill = time.monotonic()
        cluster.kill9(owner1)
        mark(f"kill -9 node {owner1.id}, the owner of {PAR_KEY}")
        first = taken_over(PAR_KEY, t_kill, owner1)
        mark(f"node {first.node} started {PAR_KEY} ({first.tag}) at "
             f"{first.start - t0:.2f} s")
        cluster.restart(owner1)
        mark(f"node {owner1.id} restarted")
        self.wait_spread(cluster)
        mark("every node owns shards again")

        # Then the leader (or, if the first victim leads now, the key's
        # owner again).
        answered(PAR_KEY, N_PAR * 3 // 5)
        leader = cluster.leader()
        victim = (leader if leader is not owner1
                  else self.owner(cluster, sink, PAR_KEY))
        was_owner = self.owner(cluster, sink, PAR_KEY)
        t_kill = time.monotonic()
        cluster.kill9(victim)
        mark(f"kill -9 node {victim.id} ("
             f"{'the leader' if victim is leader else 'the owner'}; "
             f"{PAR_KEY}'s owner was node {was_owner.id})")
        first = taken_over(PAR_KEY, t_kill, None)
        mark(f"node {first.node} started {PAR_KEY} ({first.tag}) at "
             f"{first.start - t0:.2f} s")
        cluster.restart(victim)
        mark(f"node {victim.id} restarted")

        answered(PAR_KEY, N_PAR)
        answered(RATE_KEY, N_RATE)
        mark("every message answered")
        cluster.check_not_crashed()
        # And recorded: the keys' waitlists empty out on every node.
        for node in cluster.nodes:
            for key in (PAR_KEY, RATE_KEY):
                def drained():
                    status, body = flow_info(node.http_addr, token, key)
                    return status == 404 or (
                        status == 200 and body["waitListSize"] == 0
                        and body["parallelismCount"] == 0)
                qh.wait_until(drained, 30, f"{key}'s waitlist to empty on "
                                           f"node {node.id}")
        # Delivered, not dead-lettered.
        status, _, body = qh.http_call(cluster.leader().http_addr, "GET",
                                       "/v2/dlq", token=token)
        self.assertEqual(status, 200, body)
        self.assertEqual(body["messages"], [])

        par = sink.of(PAR_KEY)
        rate = sink.of(RATE_KEY)
        dump = os.environ.get("QRAFT_FLOW_DUMP")
        if dump:
            with open(dump, "w") as f:
                json.dump({"events": events, "hits": [
                    {"key": h.key, "tag": h.tag, "node": h.node,
                     "start": h.start - t0, "end": h.end - t0,
                     "closed": h.closed and h.closed - t0}
                    for h in par + rate]}, f, indent=1)
        peak, at = peak_concurrency([(h.start, h.end) for h in par])
        peak_open, at_open = peak_concurrency(
            [(h.start, h.closed or h.end) for h in par])
        most, anchor = busiest_window([h.start for h in rate], PERIOD_S)
        most_in, anchor_in = busiest_window([h.start for h in rate],
                                            PERIOD_S - RATE_SLACK_S)
        cut = [h for h in par + rate if h.closed is not None]
        unplaced = [h for h in par + rate if h.node is None]
        repeats = (len(par) - len({h.tag for h in par})
                   + len(rate) - len({h.tag for h in rate}))
        timeline = "\n    ".join(
            [f"{t:7.2f} s  {text}" for t, text in events]
            + [f"{PAR_KEY}: {show_segments(segments(par, t0))}",
               f"{RATE_KEY}: {show_segments(segments(rate, t0))}",
               "closed by the sender before the answer: " + ", ".join(
                   f"{h.key}/{h.tag} by node {h.node} ({h.start - t0:.2f} "
                   f"to {h.closed - t0:.2f} s)" for h in cut)])
        report(f"{PAR_KEY}: peak {peak} at once (start to answer"
               f"{'' if at is None else f', at {at - t0:.2f} s'}), "
               f"{peak_open} counting only while the sender's connection "
               f"was open; {RATE_KEY}: at most {most} starts in a "
               f"{PERIOD_S} s window (from {anchor - t0:.2f} s), {most_in} "
               f"in {PERIOD_S - RATE_SLACK_S:g} s (from "
               f"{anchor_in - t0:.2f} s); "
               f"{repeats} messages sent again, {len(unplaced)} requests "
               f"not placed on a node\n    {timeline}")
        self.assertLessEqual(peak, PARALLELISM, timeline)
        self.assertLessEqual(most_in, RATE, timeline)
        self.assertEqual({h.tag for h in par if h.answered},
                         {f"p{i}" for i in range(N_PAR)})
        self.assertEqual({h.tag for h in rate if h.answered},
                         {f"r{i}" for i in range(N_RATE)})


if __name__ == "__main__":
    unittest.main()
