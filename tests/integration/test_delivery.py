"""Delivery end to end: a real qraftd --dev delivering to a real HTTP sink on
loopback, with retries, the DLQ, replay, delays, Retry-After, signatures and
a kill -9 in the middle of a delivery.

Retry delays are shortened with --retry-delay expressions (milliseconds), so
the tests wait seconds, not the default backoff's minutes.
"""

import base64
import hashlib
import hmac
import json
import time
import unittest

import qraft_harness as qh
from http_sink import Reply, start_sink

FAST_RETRY = "200"  # ms between attempts


def b64url_decode(part):
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


class DeliveryTest(unittest.TestCase):
    def setUp(self):
        self.sink = start_sink(self)
        self.node = qh.start_dev_node(self)

    def publish(self, path, *args):
        _, out, _ = self.node.cli("publish", self.sink.url(path), *args)
        return out.strip()

    def get_json(self, message_id):
        _, out, _ = self.node.cli("get", message_id, "--json")
        return json.loads(out)

    def wait_state(self, message_id, state, timeout=30):
        def reached():
            return self.get_json(message_id)["state"] == state
        qh.wait_until(reached, timeout, f"{message_id} {state}")
        return self.get_json(message_id)

    def test_delivers_with_headers_and_body(self):
        self.sink.script("/ok", Reply(200))
        message_id = self.publish(
            "/ok?a=1&b=two", "--body", '{"hello":1}',
            "--header", "Content-Type: application/json",
            "--header", "X-Custom: yes", "--method", "PUT")
        req = self.sink.wait_for(1, path="/ok", timeout=30)[0]
        self.assertEqual(req.path, "/ok?a=1&b=two", "the query string as sent")
        self.assertEqual(req.method, "PUT")
        self.assertEqual(req.body, b'{"hello":1}')
        self.assertEqual(req.header("Content-Type"), "application/json")
        self.assertEqual(req.header("X-Custom"), "yes")
        self.assertEqual(req.header("Upstash-Message-Id"), message_id)
        self.assertEqual(req.header("Upstash-Retried"), "0")
        self.assertEqual(req.header("User-Agent"), "Upstash-QStash")
        self.wait_state(message_id, "delivered")

    def test_signature_verifies_with_the_current_key(self):
        key = self.node.read_env()["QSTASH_CURRENT_SIGNING_KEY"]
        url = self.sink.url("/signed?x=1")
        _, out, _ = self.node.cli("publish", url, "--body", "payload")
        req = self.sink.wait_for(1, path="/signed", timeout=30)[0]
        token = req.header("Upstash-Signature")
        self.assertIsNotNone(token)
        head, payload, sig = token.split(".")
        expected = hmac.new(key.encode(), f"{head}.{payload}".encode(),
                            hashlib.sha256).digest()
        self.assertTrue(hmac.compare_digest(b64url_decode(sig), expected))
        claims = json.loads(b64url_decode(payload))
        self.assertEqual(json.loads(b64url_decode(head))["alg"], "HS256")
        self.assertEqual(claims["iss"], "Upstash")
        self.assertEqual(claims["sub"], url)
        self.assertEqual(claims["exp"] - claims["iat"], 300)
        self.assertLessEqual(abs(claims["iat"] - time.time()), 60)
        body_hash = base64.urlsafe_b64encode(
            hashlib.sha256(b"payload").digest()).decode()
        self.assertEqual(claims["body"], body_hash)
        self.assertTrue(claims["jti"].startswith("jwt_"))

    def test_retries_count_up_then_deliver(self):
        self.sink.script("/flaky", Reply(500), Reply(503), Reply(200))
        message_id = self.publish("/flaky", "--retry-delay", FAST_RETRY,
                                  "--retries", "3")
        reqs = self.sink.wait_for(3, path="/flaky", timeout=30)
        self.assertEqual([r.header("Upstash-Retried") for r in reqs],
                         ["0", "1", "2"])
        self.assertEqual({r.header("Upstash-Message-Id") for r in reqs},
                         {message_id})
        msg = self.wait_state(message_id, "delivered")
        self.assertEqual(msg["attempts"], 3)

    def test_budget_exhausted_goes_to_the_dlq(self):
        self.sink.script("/down", Reply(500))
        message_id = self.publish("/down", "--retry-delay", FAST_RETRY,
                                  "--retries", "2")
        msg = self.wait_state(message_id, "dead_lettered")
        self.assertEqual(len(self.sink.requests(path="/down")), 3)
        self.assertEqual(msg["last_error"]["category"], "budget_exhausted")
        _, out, _ = self.node.cli("dlq", "ls", "--json")
        self.assertIn(message_id, qh.message_ids(out))

    def test_non_retryable_489_then_replay_delivers(self):
        self.sink.script(
            "/reject", Reply(489, {"Upstash-NonRetryable-Error": "true"}),
            Reply(200))
        message_id = self.publish("/reject", "--retries", "5",
                                  "--retry-delay", FAST_RETRY)
        msg = self.wait_state(message_id, "dead_lettered")
        self.assertEqual(msg["last_error"]["category"], "non_retryable")
        self.assertEqual(len(self.sink.requests(path="/reject")), 1)
        self.assertTrue(msg["dlq_hint"])

        self.node.cli("dlq", "replay", message_id)
        self.wait_state(message_id, "delivered")
        reqs = self.sink.wait_for(2, path="/reject", timeout=30)
        self.assertEqual(reqs[1].header("Upstash-Message-Id"), message_id)
        self.assertEqual(reqs[1].header("Upstash-Retried"), "0")
        _, out, _ = self.node.cli("dlq", "ls", "--json")
        self.assertNotIn(message_id, qh.message_ids(out))

    def test_callbacks_after_each_attempt_and_on_failure(self):
        self.sink.script("/dest", Reply(500, body=b"try later"), Reply(404))
        message_id = self.publish(
            "/dest", "--body", "source-body", "--retries", "3",
            "--retry-delay", FAST_RETRY,
            "--callback", self.sink.url("/cb"),
            "--failure-callback", self.sink.url("/fcb"))
        self.wait_state(message_id, "dead_lettered")

        # One callback per attempt (500, then 404), in order.
        cbs = self.sink.wait_for(2, path="/cb", timeout=30)
        bodies = [json.loads(r.body) for r in cbs]
        self.assertEqual([b["status"] for b in bodies], [500, 404])
        self.assertEqual([b["retried"] for b in bodies], [0, 1])
        first = bodies[0]
        self.assertEqual(first["sourceMessageId"], message_id)
        self.assertEqual(first["url"], self.sink.url("/dest"))
        self.assertEqual(first["method"], "POST")
        self.assertEqual(first["maxRetries"], 3)
        self.assertEqual(base64.b64decode(first["body"]), b"try later")
        self.assertEqual(base64.b64decode(first["sourceBody"]), b"source-body")
        self.assertNotIn("dlqId", first)
        for r in cbs:
            self.assertEqual(r.header("Content-Type"), "application/json")
            self.assertIsNotNone(r.header("Upstash-Signature"))
            self.assertNotEqual(r.header("Upstash-Message-Id"), message_id)

        # The failure callback fires once, with the DLQ id.
        fcb = self.sink.wait_for(1, path="/fcb", timeout=30)
        body = json.loads(fcb[0].body)
        self.assertEqual(body["dlqId"], message_id)
        self.assertEqual(body["status"], 404)
        self.assertEqual(len(self.sink.requests(path="/fcb")), 1)

        # The logs find the callback messages by their source: two
        # callbacks and the failure callback, each naming its source.
        def call(method, target):
            return qh.http_call(self.node.http_addr, method, target,
                                token=self.node.token)
        _, _, page = call("GET", f"/v2/logs?sourceMessageId={message_id}"
                          "&state=CREATED")
        kinds = sorted(e["callbackKind"] for e in page["logs"])
        self.assertEqual(kinds, ["callback", "callback", "failureCallback"])
        for e in page["logs"]:
            self.assertEqual(e["sourceMessageId"], message_id)
        # A write by source is refused (reads only).
        status, _, err = call("DELETE",
                              f"/v2/messages?sourceMessageId={message_id}")
        self.assertEqual(status, 400, err)

    def test_strict_mode_retries_client_errors(self):
        self.sink.script("/strict", Reply(404), Reply(404), Reply(200))
        message_id = self.publish("/strict", "--strict", "--retries", "3",
                                  "--retry-delay", FAST_RETRY)
        msg = self.wait_state(message_id, "delivered")
        self.assertEqual(msg["attempts"], 3)

    def test_max_retry_duration_ends_retries(self):
        self.sink.script("/slowfail", Reply(500))
        message_id = self.publish("/slowfail", "--retries", "100",
                                  "--retry-delay", "500",
                                  "--max-retry-duration", "2s")
        msg = self.wait_state(message_id, "dead_lettered")
        self.assertEqual(msg["last_error"]["category"], "budget_exhausted")
        attempts = len(self.sink.requests(path="/slowfail"))
        self.assertGreaterEqual(attempts, 2)
        self.assertLess(attempts, 10)

    def test_min_backoff_overrides_a_shorter_delay(self):
        self.sink.script("/backoff", Reply(500), Reply(200))
        self.publish("/backoff", "--retry-delay", "10", "--min-backoff", "2s")
        first, second = self.sink.wait_for(2, path="/backoff", timeout=30)
        self.assertGreaterEqual(second.time - first.time, 2.0)

    def test_client_error_is_permanent(self):
        self.sink.script("/missing", Reply(404))
        message_id = self.publish("/missing", "--retries", "3",
                                  "--retry-delay", FAST_RETRY)
        msg = self.wait_state(message_id, "dead_lettered")
        self.assertEqual(msg["last_error"]["category"], "client_error")
        self.assertEqual(msg["last_error"]["status"], 404)
        self.assertEqual(len(self.sink.requests(path="/missing")), 1)

    def test_delay_is_never_early(self):
        self.sink.script("/later", Reply(200))
        before = time.time()
        self.publish("/later", "--delay", "2s")
        req = self.sink.wait_for(1, path="/later", timeout=30)[0]
        self.assertGreaterEqual(req.time, before + 2.0)

    def test_retry_after_is_honoured(self):
        self.sink.script("/busy", Reply(429, {"Retry-After": "2"}),
                         Reply(200))
        message_id = self.publish("/busy", "--retry-delay", FAST_RETRY)
        first, second = self.sink.wait_for(2, path="/busy", timeout=30)
        self.assertGreaterEqual(second.time - first.time, 2.0)
        self.wait_state(message_id, "delivered")

    def test_kill9_during_delivery_sends_again(self):
        self.sink.script("/hang", Reply(hang=True), Reply(200))
        message_id = self.publish("/hang", "--timeout", "60s")
        self.sink.wait_for(1, path="/hang", timeout=30)
        self.node.kill9()
        self.node.start()
        reqs = self.sink.wait_for(2, path="/hang", timeout=30)
        self.assertEqual(reqs[1].header("Upstash-Message-Id"), message_id)
        # The first attempt's result was never committed: the re-send is
        # attempt 0 again.
        self.assertEqual(reqs[1].header("Upstash-Retried"), "0")
        self.wait_state(message_id, "delivered")

    def test_thousand_messages_each_delivered_once(self):
        n = 1000
        ids_file = self.node.dir / "ids.txt"
        qh.run([qh.binary("qraft-bench"), "publish", "-n", n, "-c", 64,
                "-s", 64, "--endpoints", self.node.endpoints,
                "--token", self.node.token, "--delay", "0s",
                "--url", self.sink.url("/bulk"), "--ids-out", ids_file],
               timeout=120)
        acked = ids_file.read_text().split()
        reqs = self.sink.wait_for(len(acked), path="/bulk", timeout=120)
        delivered = [r.header("Upstash-Message-Id") for r in reqs]
        self.assertEqual(sorted(delivered), sorted(acked),
                         "each acknowledged message delivered exactly once")

        def all_delivered():
            _, out, _ = self.node.cli("status", "--json")
            counts = json.loads(out)["messages"]
            return counts.get("delivered") == len(acked)
        qh.wait_until(all_delivered, 60, "every result committed")
        self.assertEqual(len(self.sink.requests(path="/bulk")), len(acked))


class HeadOfLineTest(unittest.TestCase):
    """A destination host that never answers holds its own messages only
    (bench/isolation.py measures the rates)."""

    def setUp(self):
        self.sink = start_sink(self)
        # Another address: another host to the delivery engine.
        self.stuck = start_sink(self, host="127.0.0.2")
        self.node = qh.start_dev_node(self)

    def batch(self, url, n, headers=None):
        for start in range(0, n, 1000):
            body = [{"destination": url, "headers": headers or {},
                     "body": str(i)}
                    for i in range(start, min(n, start + 1000))]
            status, _, got = qh.http_call(
                self.node.http_addr, "POST", "/v2/batch", body,
                {"Content-Type": "application/json"}, token=self.node.token,
                timeout=60, parse="json")
            self.assertEqual(status, 200, got)
            self.assertTrue(all("messageId" in m for m in got), got[:3])

    def test_hanging_host_does_not_hold_others(self):
        # More messages to the hanging host than the node keeps in flight
        # (1,024): were they all taken in, nothing else would be sent until
        # their 60 s timeouts.
        self.stuck.script("/hang", Reply(hang=True))
        self.batch(self.stuck.url("/hang"), 1100, {"Upstash-Timeout": "60s"})
        self.stuck.wait_for(32, path="/hang", timeout=30)
        self.batch(self.sink.url("/ok"), 300)
        reqs = self.sink.wait_for(300, path="/ok", timeout=20)
        self.assertEqual(len({r.header("Upstash-Message-Id") for r in reqs}),
                         300)
        # The hanging host still holds no more than its 32 connections.
        self.assertEqual(len(self.stuck.requests("/hang")), 32)


if __name__ == "__main__":
    unittest.main()
