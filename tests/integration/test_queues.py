"""Queues (/v2/queues, /v2/enqueue) over raw HTTP. On a qraftd --dev: bad
input answers 400/404/405/412 with a JSON error and changes nothing;
deleting a queue cancels what waits in it; a parallelism-1 queue keeps its
order across a kill -9 and restart of the node; a queue stuck on a failing
head holds only itself. On 3 nodes, through a follower: the order survives
a kill -9 of the leader. The official SDK's
view is in tests/sdk/queues.test.mjs."""

import json
import unittest

import qraft_harness as qh
from http_sink import Reply, start_sink


class QueuesBase(unittest.TestCase):
    """HTTP calls to self.node, and waiting for the queues' feature level."""

    def call(self, method, target, body=None, headers=None):
        """Returns (status, parsed JSON body)."""
        hdrs = dict(headers or {})
        if isinstance(body, (dict, list)):
            hdrs["Content-Type"] = "application/json"
        status, _, parsed = qh.http_call(self.node.http_addr, method, target,
                                         body, hdrs, token=self.node.token,
                                         parse="json")
        return status, parsed

    def wait_queues_ready(self):
        """Queues work once the leader raised the cluster's feature level,
        right after it starts serving: until then writes answer 503."""
        probe = {"queueName": "probe"}
        qh.wait_until(
            lambda: self.call("POST", "/v2/queues", probe)[0] != 503,
            20,
            "the queues' feature level",
        )
        self.assertEqual(self.call("DELETE", "/v2/queues/probe")[0], 200)

    def sent_order(self, prefix):
        """The message numbers of the sink's requests under prefix, in
        arrival order."""
        return [
            int(r.path.rsplit("/", 1)[1])
            for r in self.sink.requests()
            if r.path.startswith(prefix)
        ]


class QueuesTest(QueuesBase):
    def setUp(self):
        self.sink = start_sink(self)
        self.node = qh.start_dev_node(self, extra_args=["--max-queues", "3"])
        self.wait_queues_ready()

    def enqueue(self, queue, path, body=b"x"):
        status, got = self.call(
            "POST", f"/v2/enqueue/{queue}/{self.sink.url(path)}", body=body
        )
        self.assertEqual(status, 200, got)
        return got["messageId"]

    def queues(self):
        status, got = self.call("GET", "/v2/queues")
        self.assertEqual(status, 200, got)
        return {q["name"]: q for q in got}

    def expect_error(self, status, method, target, body=None):
        got_status, got = self.call(method, target, body=body)
        self.assertEqual(got_status, status, (method, target, body, got))
        self.assertIsInstance(got, dict)
        self.assertIsInstance(got.get("error"), str)
        return got["error"]

    def test_bad_input(self):
        bad_bodies = [
            b"{not json",
            b"[]",
            b'"q"',
            {"queueName": "q", "parallelism": 1, "paused": False, "x": 1},
            {"queueName": "q", "parallelism": "2"},
            {"queueName": "q", "parallelism": 1.5},
            {"queueName": "q", "parallelism": 0},
            {"queueName": "q", "parallelism": -1},
            {"queueName": "q", "paused": "yes"},
            {"queueName": "bad name!"},
            {"queueName": ""},
            {"queueName": 7},
            {"parallelism": 1},
        ]
        for body in bad_bodies:
            with self.subTest(body=body):
                self.expect_error(400, "POST", "/v2/queues", body)
        self.assertIn(
            "parallelism",
            self.expect_error(
                412, "POST", "/v2/queues", {"queueName": "q", "parallelism": 101}
            ),
        )
        self.expect_error(404, "GET", "/v2/queues/nope")
        self.expect_error(404, "DELETE", "/v2/queues/nope")
        self.expect_error(404, "POST", "/v2/queues/nope/pause")
        self.expect_error(404, "POST", "/v2/queues/nope/resume")
        self.expect_error(404, "POST", "/v2/queues/nope/other")
        self.expect_error(400, "GET", "/v2/queues/bad%20name")
        self.expect_error(400, "POST", "/v2/enqueue/bad%20name/http://x/")
        self.expect_error(405, "PUT", "/v2/queues")
        self.expect_error(405, "GET", "/v2/queues/q/pause")
        self.expect_error(405, "PATCH", "/v2/queues/q")
        # Nothing was created by any of it.
        self.assertEqual(self.queues(), {})

        # --max-queues 3: a fourth is refused, by upsert and by enqueue.
        for name in ("a", "b"):
            status, _ = self.call("POST", "/v2/queues", {"queueName": name})
            self.assertEqual(status, 200)
        self.enqueue("c", "/c")
        self.expect_error(412, "POST", "/v2/queues", {"queueName": "d"})
        self.expect_error(
            412, "POST", f"/v2/enqueue/d/{self.sink.url('/d')}", b"x"
        )
        self.assertEqual(sorted(self.queues()), ["a", "b", "c"])
        self.assertEqual(self.node.healthz(), 200)

    def test_queue_json_and_delete_cancels_waiting(self):
        status, _ = self.call(
            "POST", "/v2/queues", {"queueName": "w", "parallelism": 2, "paused": True}
        )
        self.assertEqual(status, 200)
        ids = [self.enqueue("w", f"/w/{i}") for i in range(3)]
        status, q = self.call("GET", "/v2/queues/w")
        self.assertEqual(status, 200)
        self.assertEqual(
            {k: q[k] for k in ("name", "parallelism", "paused", "lag")},
            {"name": "w", "parallelism": 2, "paused": True, "lag": 3},
        )
        self.assertGreaterEqual(q["updatedAt"], q["createdAt"])
        status, m = self.call("GET", f"/v2/messages/{ids[0]}")
        self.assertEqual(status, 200, m)
        self.assertEqual(m["queueName"], "w")
        # The CLI knows the state: ls --state queued, status counts it.
        self.assertEqual(
            sorted(qh.list_all_ids(self.node, "ls", "--state", "queued")),
            sorted(ids),
        )
        _, out, _ = self.node.cli("status", "--json")
        self.assertEqual(json.loads(out)["messages"]["queued"], 3)

        status, _ = self.call("DELETE", "/v2/queues/w")
        self.assertEqual(status, 200)
        self.expect_error(404, "GET", "/v2/queues/w")
        for mid in ids:
            # Cancelled: no longer a live message.
            self.expect_error(404, "GET", f"/v2/messages/{mid}")
        self.assertEqual(self.sink.requests(), [])

    def test_order_survives_kill9(self):
        status, _ = self.call(
            "POST", "/v2/queues", {"queueName": "o", "parallelism": 1}
        )
        self.assertEqual(status, 200)
        # The first message is in flight (slow) when the node is killed.
        self.sink.script("/o/0", Reply(delay_s=3), Reply())
        for i in range(5):
            self.enqueue("o", f"/o/{i}")
        self.sink.wait_for(1, path="/o/0", timeout=20)
        self.node.kill9()
        self.node.start()
        for i in range(5, 8):
            self.enqueue("o", f"/o/{i}")
        for i in range(8):
            self.sink.wait_for(1, path=f"/o/{i}", timeout=30)
        qh.wait_until(
            lambda: self.call("GET", "/v2/queues/o")[1]["lag"] == 0,
            20,
            "the queue to drain",
        )
        order = self.sent_order("/o/")
        self.assertEqual(order, sorted(order), f"out of order: {order}")
        self.assertEqual(sorted(set(order)), list(range(8)))
        # /o/0 was sent again after the restart; the others once each.
        self.assertGreaterEqual(order.count(0), 2)

    def test_stuck_queue_holds_only_itself(self):
        """A parallelism-1 queue whose head fails forever (500, retried)
        keeps its own messages waiting, and only those: another queue's are
        all delivered, in order, meanwhile."""
        for name in ("stuck", "free"):
            status, _ = self.call(
                "POST", "/v2/queues", {"queueName": name, "parallelism": 1}
            )
            self.assertEqual(status, 200)
        self.sink.script("/stuck/0", Reply(500))
        retry = {"Upstash-Retries": "100", "Upstash-Retry-Delay": "200"}
        for i in range(3):
            status, got = self.call(
                "POST",
                f"/v2/enqueue/stuck/{self.sink.url(f'/stuck/{i}')}",
                body=b"x",
                headers=retry,
            )
            self.assertEqual(status, 200, got)
        self.sink.wait_for(1, path="/stuck/0", timeout=20)
        for i in range(10):
            self.enqueue("free", f"/free/{i}")
        for i in range(10):
            self.sink.wait_for(1, path=f"/free/{i}", timeout=30)
        order = self.sent_order("/free/")
        self.assertEqual(order, list(range(10)), "each once, in order")
        qh.wait_until(
            lambda: self.call("GET", "/v2/queues/free")[1]["lag"] == 0,
            20,
            "the free queue to drain",
        )
        # The stuck head was retried meanwhile and still holds its queue.
        self.sink.wait_for(3, path="/stuck/0", timeout=20)
        self.assertEqual(self.sink.requests("/stuck/1"), [])
        self.assertEqual(self.sink.requests("/stuck/2"), [])
        status, q = self.call("GET", "/v2/queues/stuck")
        self.assertEqual(status, 200, q)
        self.assertEqual(q["lag"], 2)


class ClusterQueuesTest(QueuesBase):
    def setUp(self):
        self.sink = start_sink(self)
        self.cluster = qh.start_cluster(self)
        self.cluster.wait_ready()
        self.node = self.cluster.followers()[0]
        self.wait_queues_ready()

    def test_order_survives_leader_kill9(self):
        """Through a follower (writes forwarded): the first message is in
        flight when the leader is killed; the new leader's cluster keeps the
        queue's order, for the messages from before and after."""
        status, _ = self.call(
            "POST", "/v2/queues", {"queueName": "c", "parallelism": 1}
        )
        self.assertEqual(status, 200)
        self.sink.script("/c/0", Reply(delay_s=3), Reply())
        for i in range(4):
            status, got = self.call(
                "POST", f"/v2/enqueue/c/{self.sink.url(f'/c/{i}')}", body=b"x"
            )
            self.assertEqual(status, 200, got)
        self.sink.wait_for(1, path="/c/0", timeout=20)
        killed = self.cluster.kill_leader()
        self.cluster.leader()
        if self.node is killed:
            self.node = self.cluster.followers()[0]

        def enqueue(i):
            status, _ = self.call(
                "POST", f"/v2/enqueue/c/{self.sink.url(f'/c/{i}')}", body=b"x"
            )
            return status == 200

        for i in range(4, 7):
            qh.wait_until(lambda: enqueue(i), 20, f"enqueue {i} after failover")
        for i in range(7):
            self.sink.wait_for(1, path=f"/c/{i}", timeout=30)
        order = self.sent_order("/c/")
        self.assertEqual(order, sorted(order), f"out of order: {order}")
        self.assertEqual(sorted(set(order)), list(range(7)))


if __name__ == "__main__":
    unittest.main()
