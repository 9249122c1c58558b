"""Observability of a real qraftd --dev: /metrics parses as Prometheus text
and moves with what the node does; the logs, DLQ and bulk-cancel filters
answer 400 to bad values and never ignore a filter they cannot apply. The
SDK's view of the same routes is in tests/sdk/observe.test.mjs."""

import json
import signal
import time
import unittest

import prom_text
import qraft_harness as qh
from http_sink import Reply, start_sink

WAIT = 20

def parse_prometheus(text):
    """{(name, labels-tuple): value}, every line checked (tests/lib)."""
    return prom_text.parse(text)


class ObserveTest(unittest.TestCase):
    def setUp(self):
        self.sink = start_sink(self)
        self.node = qh.start_dev_node(self)

    def call(self, method, target, body=None, auth=True):
        status, hdrs, data = qh.http_call(
            self.node.http_addr, method, target, body,
            token=self.node.token if auth else None, parse=None)
        ctype = hdrs.get("Content-Type", "")
        if ctype.startswith("application/json"):
            return status, ctype, json.loads(data)
        return status, ctype, data.decode()

    def metrics(self):
        status, ctype, text = self.call("GET", "/metrics", auth=False)
        self.assertEqual(status, 200)
        self.assertTrue(ctype.startswith("text/plain; version=0.0.4"), ctype)
        return parse_prometheus(text)

    def publish(self, path, **headers):
        status, _, body = self.call_headers(
            "POST", f"/v2/publish/{self.sink.url(path)}", headers
        )
        self.assertIn(status, (200, 201), body)
        return body["messageId"]

    def call_headers(self, method, target, headers):
        status, _, body = qh.http_call(self.node.http_addr, method, target,
                                       b"x", headers, token=self.node.token,
                                       parse="json")
        return status, None, body

    def test_metrics_parse_and_move(self):
        before = self.metrics()
        for name in (
            "qraft_publishes_total",
            "qraft_retries_total",
            "qraft_dlq_messages",
            "qraft_raft_term",
            "qraft_raft_commit_index",
            "qraft_raft_applied_index",
            "qraft_leader",
            "qraft_shards_owned",
        ):
            self.assertIn((name, ()), before, name)
        for outcome in ("delivered", "retry", "dead"):
            self.assertIn(
                ("qraft_deliveries_total", (("outcome", outcome),)), before
            )
        self.assertEqual(before[("qraft_leader", ())], 1)
        self.assertEqual(before[("qraft_shards_owned", ())], 256)
        self.assertEqual(before[("qraft_dlq_messages", ())], 0)

        self.sink.script("/ok", Reply(status=200))
        self.sink.script("/gone", Reply(status=404))
        self.publish("/ok")
        self.sink.wait_for(1, path="/ok", timeout=WAIT)
        qh.wait_until(
            lambda: self.metrics()[
                ("qraft_deliveries_total", (("outcome", "delivered"),))
            ]
            == 1,
            WAIT,
            "the delivery to be counted",
        )
        after = self.metrics()
        self.assertEqual(after[("qraft_publishes_total", ())],
                         before[("qraft_publishes_total", ())] + 1)
        self.assertGreater(
            prom_text.total(after, "qraft_http_requests_total"),
            prom_text.total(before, "qraft_http_requests_total"))
        self.assertGreater(after[("qraft_raft_applied_index", ())],
                           before[("qraft_raft_applied_index", ())])

        # A 404 dead-letters at once (a permanent failure).
        self.publish("/gone")
        got = qh.wait_until(
            lambda: (lambda m: m if m[("qraft_dlq_messages", ())] == 1 else
                     None)(self.metrics()),
            WAIT,
            "qraft_dlq_messages to reach 1",
        )
        self.assertEqual(
            got[("qraft_messages", (("state", "dead_lettered"),))], 1)
        self.assertEqual(
            got[("qraft_deliveries_total", (("outcome", "dead"),))], 1)

    def test_loop_stall_is_counted_shown_and_logged(self):
        """A node whose loop is kept from running (here: the process is
        stopped for 0.4 s, as a paused VM or a long callback would) counts
        the stall, keeps the longest, shows it in /metrics and `qraft
        status`, and logs it."""
        before = self.metrics()
        self.assertGreater(before[("process_resident_memory_bytes", ())], 0)
        stalls = before[("qraft_loop_stalls_total", ())]
        self.node.proc.send_signal(signal.SIGSTOP)
        try:
            time.sleep(0.4)  # the fault itself, not a wait for a condition
        finally:
            self.node.proc.send_signal(signal.SIGCONT)
        got = qh.wait_until(
            lambda: (lambda m: m if m[("qraft_loop_stalls_total", ())]
                     > stalls else None)(self.metrics()),
            WAIT, "the stall to be counted")
        self.assertGreaterEqual(got[("qraft_loop_stall_max_seconds", ())], 0.3)
        _, out, _ = self.node.cli("status", "--local", "--json")
        st = json.loads(out)
        self.assertGreaterEqual(st["loop_stalls"], 1)
        self.assertGreaterEqual(st["loop_stall_max_ms"], 300)
        self.assertGreater(st["rss_bytes"], 0)
        self.assertGreater(st["store_file_bytes"], 0)
        _, out, _ = self.node.cli("status", "--local")
        self.assertRegex(out, r"loop stalls:\s+[1-9][0-9]* over 50 ms")
        qh.wait_until(
            lambda: "the loop stalled" in self.node.stderr_tail(200),
            WAIT, "the stall to be logged")

    def test_bad_filter_values_are_400(self):
        cases = [
            ("GET", "/v2/events?fromDate=yesterday", "fromDate"),
            ("GET", "/v2/logs?toDate=-5", "toDate"),
            ("GET", "/v2/events?count=0", "count"),
            ("GET", "/v2/events?count=1001", "count"),
            ("GET", "/v2/events?state=WAITING", "unknown state"),
            ("GET", "/v2/events?order=sideways", "order"),
            ("GET", "/v2/events?cursor=abc", "cursor"),
            ("GET", "/v2/dlq?count=101", "count"),
            ("GET", "/v2/dlq?responseStatus=abc", "responseStatus"),
            ("GET", "/v2/dlq?fromDate=5&toDate=4", "fromDate"),
            ("DELETE", "/v2/messages?count=0", "count"),
            ("DELETE", "/v2/messages?count=501", "count"),
            ("DELETE", "/v2/dlq?nosuch=1", "unknown parameter"),
            ("POST", "/v2/dlq/retry?url=", "url"),
            ("DELETE", "/v2/messages?messageIds=a&url=http://x/", "not both"),
        ]
        for method, target, word in cases:
            with self.subTest(target=target):
                status, _, body = self.call(method, target)
                self.assertEqual(status, 400, body)
                self.assertIn(word, body["error"])

    def test_unknown_filters_are_refused_not_ignored(self):
        """A parameter a route does not know would otherwise select
        everything: refused on every route."""
        self.sink.script("/later", Reply(status=200))
        self.publish("/later", **{"Upstash-Delay": "1h"})
        for name in ("nosuch", "urlGroup"):
            for method, route in (("GET", "/v2/dlq"), ("DELETE", "/v2/dlq"),
                                  ("POST", "/v2/dlq/retry"),
                                  ("DELETE", "/v2/messages"),
                                  ("GET", "/v2/events")):
                with self.subTest(name=name, route=route):
                    status, _, body = self.call(method, f"{route}?{name}=x")
                    self.assertEqual(status, 400, body)
                    self.assertIn(f"unknown parameter '{name}'",
                                  body["error"])
        # Nothing was cancelled by the refused bulk cancels.
        status, _, body = self.call("DELETE", "/v2/messages?count=10")
        self.assertEqual((status, body), (200, {"cancelled": 1}))

    def test_filters_select(self):
        self.sink.script("/a", Reply(status=500))
        self.sink.script("/b", Reply(status=404))
        a = self.publish("/a", **{"Upstash-Retries": "0"})
        b = self.publish("/b")
        qh.wait_until(
            lambda: len(self.call("GET", "/v2/dlq")[2]["messages"]) == 2,
            WAIT, "two dead letters")
        status, _, body = self.call("GET", "/v2/dlq?responseStatus=404,418")
        self.assertEqual([m["dlqId"] for m in body["messages"]], [b])
        status, _, body = self.call(
            "GET", f"/v2/dlq?path=/a&host=127.0.0.1&messageId={a}")
        self.assertEqual([m["dlqId"] for m in body["messages"]], [a])
        status, _, body = self.call("GET", "/v2/dlq?path=/a&path=/b&count=1")
        self.assertEqual(len(body["messages"]), 1)
        self.assertIn("cursor", body)
        status, _, body = self.call(
            "GET", f"/v2/dlq?path=/a&path=/b&cursor={body['cursor']}")
        self.assertEqual(len(body["messages"]), 1)
        self.assertNotIn("cursor", body)
        # Logs of one message, oldest first: its states in order.
        status, _, body = self.call(
            "GET", f"/v2/logs?messageId={b}&order=earliestFirst")
        self.assertEqual(status, 200, body)
        self.assertEqual([e["state"] for e in body["logs"]],
                         ["CREATED", "ACTIVE", "FAILED"])
        self.assertEqual(body["logs"][2]["responseStatus"], 404)
        # The same one entry per page, oldest first: the cursor resumes
        # inside an event (ACTIVE and FAILED come from one).
        states, cursor = [], None
        for _ in range(10):
            target = f"/v2/logs?messageId={b}&order=earliestFirst&count=1"
            if cursor:
                target += f"&cursor={cursor}"
            status, _, page = self.call("GET", target)
            self.assertEqual(status, 200, page)
            states += [e["state"] for e in page["logs"]]
            cursor = page.get("cursor")
            if cursor is None:
                break
        self.assertEqual(states, ["CREATED", "ACTIVE", "FAILED"])
        # A bare time as the cursor: entries at or before it.
        status, _, page = self.call(
            "GET", f"/v2/logs?messageId={b}&cursor=1")
        self.assertEqual((status, page), (200, {"logs": []}))
        status, _, body = self.call("GET", "/v2/events?state=FAILED")
        self.assertEqual(sorted(e["messageId"] for e in body["events"]),
                         sorted([a, b]))
        # Delete by filter answers how many, with no cursor at the end.
        status, _, body = self.call("DELETE", "/v2/dlq?responseStatus=500")
        self.assertEqual((status, body), (200, {"deleted": 1}))

    def test_paged_dlq_delete_and_retry(self):
        """count pages a bulk DLQ operation; the cursor leads on and is
        omitted on the last page, also when the retried messages fail and
        come back at once (the pages end at the first page's time)."""
        self.sink.script("/dead", Reply(status=404))
        for _ in range(3):
            self.publish("/dead")
        qh.wait_until(
            lambda: len(self.call("GET", "/v2/dlq")[2]["messages"]) == 3,
            WAIT, "three dead letters")
        replayed = 0
        cursor = None
        for _ in range(10):
            target = "/v2/dlq/retry?count=2" + (
                f"&cursor={cursor}" if cursor else "")
            status, _, body = self.call("POST", target)
            self.assertEqual(status, 201, body)
            replayed += len(body["responses"])
            cursor = body.get("cursor")
            if cursor is None:
                break
        self.assertEqual(replayed, 3)
        qh.wait_until(
            lambda: len(self.call("GET", "/v2/dlq")[2]["messages"]) == 3,
            WAIT, "the three back in the DLQ")
        status, _, body = self.call("DELETE", "/v2/dlq?count=2")
        self.assertEqual(status, 200, body)
        self.assertEqual(body["deleted"], 2)
        self.assertIn("cursor", body)
        status, _, body = self.call(
            "DELETE", f"/v2/dlq?count=2&cursor={body['cursor']}")
        self.assertEqual((status, body), (200, {"deleted": 1}))
        status, _, body = self.call("DELETE", "/v2/dlq?cursor=garbage")
        self.assertEqual(status, 400, body)


class ObserveClusterTest(unittest.TestCase):
    """Through a follower: bulk cancel is forwarded to the leader, the logs
    and /metrics are the follower's own."""

    def setUp(self):
        self.cluster = qh.start_cluster(self, n=3)

    def call(self, node, method, target, body=None):
        status, hdrs, data = qh.http_call(
            node.http_addr, method, target, body, {"Upstash-Delay": "1h"},
            token=self.cluster.token, parse=None)
        if hdrs.get("Content-Type", "").startswith("application/json"):
            return status, json.loads(data)
        return status, data.decode()

    def test_follower_forwards_bulk_cancel_and_reads_its_logs(self):
        leader = self.cluster.leader()
        follower = self.cluster.followers()[0]
        ids = []
        for i in range(3):
            status, body = self.call(
                follower, "POST", f"/v2/publish/http://127.0.0.1:9/w{i}", b"x")
            self.assertEqual(status, 200, body)
            ids.append(body["messageId"])
        status, body = self.call(
            follower, "DELETE", "/v2/messages?path=/w0,/w1&count=5")
        self.assertEqual((status, body), (200, {"cancelled": 2}))
        status, body = self.call(follower, "DELETE", "/v2/messages")
        self.assertEqual((status, body), (200, {"cancelled": 1}))

        def logs_on_follower():
            status, body = self.call(
                follower, "GET", "/v2/events?state=CANCELLED&count=10")
            return status == 200 and len(body["events"]) == 3 and body
        body = qh.wait_until(logs_on_follower, WAIT,
                             "the follower to apply the cancels")
        self.assertEqual(sorted(e["messageId"] for e in body["events"]),
                         sorted(ids))
        self.assertNotIn("cursor", body)

        metrics = {}
        for node in (leader, follower):
            status, text = self.call(node, "GET", "/metrics")
            self.assertEqual(status, 200)
            metrics[node.id] = parse_prometheus(text)
        self.assertEqual(metrics[leader.id][("qraft_leader", ())], 1)
        self.assertEqual(metrics[follower.id][("qraft_leader", ())], 0)
        # Publishes count where they were proposed: on the leader.
        self.assertEqual(metrics[leader.id][("qraft_publishes_total", ())], 3)
        self.assertEqual(
            metrics[follower.id][("qraft_publishes_total", ())], 0)
        self.assertEqual(
            metrics[follower.id][
                ("qraft_messages", (("state", "cancelled"),))], 3)


if __name__ == "__main__":
    unittest.main()
