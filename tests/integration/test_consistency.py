"""Any node answers like one: on a 3-node cluster, a client that writes
through a follower reads its write back through the same follower at once
(the follower answers a forwarded write only after it applied it), with no
retry loop around the read. Every read below is asked exactly once."""

import unittest

import qraft_harness as qh
from http_sink import start_sink

ITERATIONS = 50


def http_call(addr, token, method, target, body=None, headers=None):
    return qh.http_call(addr, method, target, body, headers, token=token,
                        timeout=30)


def wait_for_level_2(node):
    """Group commands need feature level 2 (the leader raises it at a tick
    once it has seen every node's level)."""
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
        wait_for_level_2(self.leader)
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


if __name__ == "__main__":
    unittest.main()
