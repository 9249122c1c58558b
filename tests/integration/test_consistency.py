"""Any node answers like one: on a 3-node cluster, a client that writes
through a follower reads its write back through the same follower at once
(the follower answers a forwarded write only after it applied it), and a
write acknowledged by any node is seen by a read through any other node
(reads are linearizable by default: the node asked confirms with the
leader first). No retry loop around any read: each is asked once."""

import json
import unittest

import qraft_harness as qh
from http_sink import Reply, start_sink

ITERATIONS = 50


def http_call(addr, token, method, target, body=None, headers=None):
    return qh.http_call(addr, method, target, body, headers, token=token,
                        timeout=30)


def wait_for_level_2(node):
    """Queue, schedule and group commands need feature level 2 (the leader
    raises it at a tick once it has seen every node's level)."""
    def at_level_2():
        return node.status()["feature_level"] >= 2
    qh.wait_until(at_level_2, 30, f"{node.name} to reach feature level 2")


class ReadYourWritesTest(unittest.TestCase):
    """Write through a follower, read through the same follower."""

    @classmethod
    def setUpClass(cls):
        cls.sink = start_sink(None)
        cls.cluster = qh.start_cluster(None)
        cls.leader = cls.cluster.leader()
        cls.follower = [n for n in cls.cluster.nodes
                        if n.id != cls.leader.id][0]
        wait_for_level_2(cls.leader)

    @classmethod
    def tearDownClass(cls):
        cls.cluster.cleanup()
        cls.sink.stop()

    def call(self, method, target, body=None, headers=None, node=None):
        node = node or self.follower
        return http_call(node.http_addr, self.cluster.token, method, target,
                         body, headers)

    def test_publish_then_get(self):
        for i in range(ITERATIONS):
            status, _, body = self.call(
                "POST", f"/v2/publish/{self.sink.url(f'/p/{i}')}",
                body=b"x", headers={"Upstash-Delay": "1h"})
            self.assertEqual(status, 200, body)
            mid = body["messageId"]
            status, _, got = self.call("GET", f"/v2/messages/{mid}")
            self.assertEqual(status, 200, f"iteration {i}: {got}")
            self.assertEqual(got["messageId"], mid)

    def test_queue_upsert_then_get(self):
        for i in range(ITERATIONS):
            name = f"q{i}"
            status, _, body = self.call("POST", "/v2/queues",
                                        {"queueName": name, "parallelism": 2})
            self.assertEqual(status, 200, body)
            status, _, got = self.call("GET", f"/v2/queues/{name}")
            self.assertEqual(status, 200, f"iteration {i}: {got}")
            self.assertEqual(got["parallelism"], 2)

    def test_schedule_create_then_get(self):
        for i in range(20):
            status, _, body = self.call(
                "POST", f"/v2/schedules/{self.sink.url(f'/s/{i}')}",
                body=b"{}", headers={"Upstash-Cron": "0 0 1 1 *"})
            self.assertEqual(status, 200, body)
            sid = body["scheduleId"]
            status, _, got = self.call("GET", f"/v2/schedules/{sid}")
            self.assertEqual(status, 200, f"iteration {i}: {got}")
            self.assertEqual(got["scheduleId"], sid)

    def test_group_add_then_publish(self):
        for i in range(20):
            name = f"g{i}"
            status, _, body = self.call(
                "POST", f"/v2/topics/{name}/endpoints",
                {"endpoints": [{"url": self.sink.url(f"/g/{i}")}]})
            self.assertEqual(status, 200, body)
            status, _, body = self.call(
                "POST", f"/v2/publish/{name}", body=b"x",
                headers={"Upstash-Delay": "1h"})
            self.assertEqual(status, 200, f"iteration {i}: {body}")
            self.assertEqual(len(body), 1)

    def test_pause_queue_then_enqueue(self):
        for i in range(20):
            name = f"p{i}"
            status, _, body = self.call("POST", "/v2/queues",
                                        {"queueName": name})
            self.assertEqual(status, 200, body)
            status, _, body = self.call("POST", f"/v2/queues/{name}/pause")
            self.assertEqual(status, 200, body)
            status, _, body = self.call(
                "POST", f"/v2/enqueue/{name}/{self.sink.url(f'/e/{i}')}",
                body=b"x")
            self.assertIn(status, (200, 201), f"iteration {i}: {body}")
            status, _, got = self.call("GET", f"/v2/queues/{name}")
            self.assertEqual(status, 200, got)
            self.assertTrue(got["paused"], f"iteration {i}: {got}")
            self.assertEqual(got["lag"], 1, f"iteration {i}: {got}")


class AnyNodeTest(unittest.TestCase):
    """Write through node A, read through B and C at once, A rotating."""

    @classmethod
    def setUpClass(cls):
        cls.sink = start_sink(None)
        cls.cluster = qh.start_cluster(None)
        wait_for_level_2(cls.cluster.leader())

    @classmethod
    def tearDownClass(cls):
        cls.cluster.cleanup()
        cls.sink.stop()

    def call(self, node, method, target, body=None, headers=None):
        return http_call(node.http_addr, self.cluster.token, method, target,
                         body, headers)

    def rotations(self, n):
        """n triples (writer, reader, reader) with the writer rotating over
        every node."""
        nodes = self.cluster.nodes
        for i in range(n):
            a = nodes[i % 3]
            yield i, a, [b for b in nodes if b is not a]

    def test_messages(self):
        for i, a, others in self.rotations(30):
            status, _, body = self.call(
                a, "POST", f"/v2/publish/{self.sink.url(f'/m/{i}')}",
                body=b"x", headers={"Upstash-Delay": "1h"})
            self.assertEqual(status, 200, body)
            mid = body["messageId"]
            for b in others:
                status, _, got = self.call(b, "GET", f"/v2/messages/{mid}")
                self.assertEqual(status, 200, f"{i} via {b.name}: {got}")
            status, _, body = self.call(a, "DELETE", f"/v2/messages/{mid}")
            self.assertEqual(status, 200, body)
            for b in others:
                status, _, got = self.call(b, "GET", f"/v2/messages/{mid}")
                self.assertEqual(status, 404, f"{i} via {b.name}: {got}")

    def test_queues(self):
        for i, a, others in self.rotations(30):
            status, _, body = self.call(a, "POST", "/v2/queues",
                                        {"queueName": f"x{i}",
                                         "parallelism": 3})
            self.assertEqual(status, 200, body)
            for b in others:
                status, _, got = self.call(b, "GET", f"/v2/queues/x{i}")
                self.assertEqual(status, 200, f"{i} via {b.name}: {got}")
            status, _, body = self.call(a, "DELETE", f"/v2/queues/x{i}")
            self.assertEqual(status, 200, body)
            for b in others:
                status, _, got = self.call(b, "GET", "/v2/queues")
                self.assertNotIn(f"x{i}", [q["name"] for q in got],
                                 f"{i} via {b.name}")

    def test_schedules(self):
        for i, a, others in self.rotations(15):
            status, _, body = self.call(
                a, "POST", f"/v2/schedules/{self.sink.url(f'/s/{i}')}",
                body=b"{}", headers={"Upstash-Cron": "0 0 1 1 *"})
            self.assertEqual(status, 200, body)
            sid = body["scheduleId"]
            for b in others:
                status, _, got = self.call(b, "GET", f"/v2/schedules/{sid}")
                self.assertEqual(status, 200, f"{i} via {b.name}: {got}")
            status, _, body = self.call(a, "DELETE", f"/v2/schedules/{sid}")
            self.assertEqual(status, 200, body)
            for b in others:
                status, _, got = self.call(b, "GET", f"/v2/schedules/{sid}")
                self.assertEqual(status, 404, f"{i} via {b.name}: {got}")

    def test_url_groups(self):
        for i, a, others in self.rotations(15):
            status, _, body = self.call(
                a, "POST", f"/v2/topics/t{i}/endpoints",
                {"endpoints": [{"url": self.sink.url(f"/t/{i}")}]})
            self.assertEqual(status, 200, body)
            for b in others:
                status, _, got = self.call(b, "GET", f"/v2/topics/t{i}")
                self.assertEqual(status, 200, f"{i} via {b.name}: {got}")
                status, _, got = self.call(b, "GET", "/v2/topics")
                self.assertIn(f"t{i}", [g["name"] for g in got])

    def test_keys_after_rotate(self):
        for i, a, others in self.rotations(6):
            status, _, body = self.call(a, "POST", "/v2/keys/rotate")
            self.assertEqual(status, 200, body)
            for b in others:
                status, _, got = self.call(b, "GET", "/v2/keys")
                self.assertEqual(status, 200, got)
                self.assertEqual(got, body, f"{i} via {b.name}")

    def test_cli_reads(self):
        """qraft get/ls/status read linearizably by default; --stale and
        QRAFT_STALE=1 are accepted."""
        for i, a, others in self.rotations(6):
            _, out, _ = a.cli("publish", self.sink.url(f"/cli/{i}"),
                              "--delay", "1h", endpoints=a.rpc_addr)
            mid = out.strip()
            for b in others:
                _, out, _ = b.cli("get", mid, "--json", endpoints=b.rpc_addr)
                self.assertEqual(json.loads(out)["id"], mid)
                _, out, _ = b.cli("ls", "--json", endpoints=b.rpc_addr)
                self.assertIn(mid, out)
            a.cli("cancel", mid, endpoints=a.rpc_addr)
            for b in others:
                _, out, _ = b.cli("get", mid, "--json", endpoints=b.rpc_addr)
                self.assertEqual(json.loads(out)["state"], "cancelled",
                                 f"{i} via {b.name}")
        node = self.cluster.nodes[0]
        _, out, _ = node.cli("--stale", "status", "--json",
                             endpoints=node.rpc_addr)
        self.assertIn("state", json.loads(out))
        _, out, _ = node.cli("ls", "--stale", endpoints=node.rpc_addr)

    def test_stale_parameter(self):
        node = self.cluster.nodes[1]
        status, _, got = self.call(node, "GET", "/v2/queues?consistency=stale")
        self.assertEqual(status, 200, got)
        status, _, got = self.call(node, "GET",
                                   "/v2/queues?consistency=linearizable")
        self.assertEqual(status, 200, got)
        status, _, got = self.call(node, "GET", "/v2/queues?consistency=weak")
        self.assertEqual(status, 400, got)
        self.assertIn("consistency must be", got["error"])

    def dead_letter(self, a, i):
        """Publishes through a to a destination that refuses for good (then,
        sent again, takes it) and waits (through a) until it is
        dead-lettered; returns its DLQ id."""
        self.sink.script(f"/dead/{i}",
                         Reply(489, {"Upstash-NonRetryable-Error": "true"}),
                         Reply(200))
        status, _, body = self.call(
            a, "POST", f"/v2/publish/{self.sink.url(f'/dead/{i}')}",
            body=b"x", headers={"Upstash-Retries": "0"})
        self.assertEqual(status, 200, body)
        mid = body["messageId"]

        def in_dlq():
            _, _, got = self.call(a, "GET", "/v2/dlq")
            return mid in [m["messageId"] for m in got["messages"]]
        qh.wait_until(in_dlq, 30, f"{mid} in the DLQ")
        return mid

    def dlq_ids(self, b):
        status, _, got = self.call(b, "GET", "/v2/dlq")
        self.assertEqual(status, 200, got)
        return [m["dlqId"] for m in got["messages"]]

    def test_dlq(self):
        for i, a, others in self.rotations(6):
            mid = self.dead_letter(a, i)
            for b in others:
                self.assertIn(mid, self.dlq_ids(b), f"{i} via {b.name}")
            if i % 2 == 0:
                status, _, body = self.call(a, "POST",
                                            f"/v2/dlq/retry/{mid}")
            else:
                status, _, body = self.call(a, "DELETE", f"/v2/dlq/{mid}")
            self.assertIn(status, (200, 201), body)
            for b in others:
                self.assertNotIn(mid, self.dlq_ids(b), f"{i} via {b.name}")


if __name__ == "__main__":
    unittest.main()
