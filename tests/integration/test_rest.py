"""The QStash REST API (/v2/...) of a real qraftd --dev, from raw HTTP: the
raw request target as destination, auth, error answers and their statuses.
The official SDK's view is in tests/sdk/api.test.mjs."""

import http.client
import json
import unittest
import urllib.error
import urllib.request

import qraft_harness as qh
from http_sink import start_sink

MAX_BODY = 4096


class RestTest(unittest.TestCase):
    def setUp(self):
        self.sink = start_sink(self)
        self.node = qh.start_dev_node(
            self, extra_args=["--max-body-bytes", str(MAX_BODY)]
        )
        self.base = f"http://{self.node.http_addr}"

    def call(self, method, target, body=None, headers=None, auth=True):
        """Sends target (kept byte for byte) and returns (status, headers,
        parsed JSON body)."""
        return qh.http_call(self.node.http_addr, method, target, body, headers,
                            token=self.node.token if auth else None)

    def test_dlq_filters_are_applied_or_refused(self):
        """A filter is applied, or refused with 400 when qraft does not know
        it: never ignored (an unfiltered retry of the whole DLQ would do
        more than was asked). tests/integration/test_observe.py covers the
        filters in depth."""
        status, _, body = self.call("POST",
                                    "/v2/dlq/retry?nosuch=x&count=3")
        self.assertEqual(status, 400)
        self.assertIn("unknown parameter", body["error"])
        status, _, body = self.call("POST",
                                    "/v2/dlq/retry?label=x&count=3")
        self.assertEqual(status, 201, body)
        self.assertEqual(body["responses"], [])
        status, _, body = self.call("GET", "/v2/dlq?responseStatus=500")
        self.assertEqual(status, 200, body)
        self.assertEqual(body["messages"], [])
        status, _, body = self.call("GET", "/v2/dlq?count=5")
        self.assertEqual(status, 200)

    def test_raw_target_keeps_double_slash_and_query(self):
        # Not a leading "//": Python's http.server (the sink) collapses that.
        dest = self.sink.url("/a//hook%2Fb") + "?x=1&y=a%20b"
        status, _, body = self.call(
            "POST",
            f"/v2/publish/{dest}&qstash_token=ignored&upstash-retries=2",
            body=b"payload",
            headers={"Content-Type": "text/plain", "Upstash-Forward-X-Trace": "t1"},
        )
        self.assertEqual(status, 200, body)
        self.assertEqual(body["url"], dest)
        got = self.sink.wait_for(1, timeout=20)[0]
        self.assertEqual(got.path, "/a//hook%2Fb?x=1&y=a%20b")
        self.assertEqual(got.body, b"payload")
        self.assertEqual(got.header("X-Trace"), "t1")
        self.assertEqual(got.header("Content-Type"), "text/plain")
        self.assertIsNone(got.header("Authorization"))

    def test_token_in_query_is_accepted(self):
        status, _, body = self.call(
            "GET", f"/v2/keys?qstash_token={self.node.token}", auth=False
        )
        self.assertEqual(status, 200, body)
        self.assertTrue(body["current"].startswith("sig_"))

    def test_missing_or_wrong_auth_is_401(self):
        for headers in ({}, {"Authorization": "Bearer nope"},
                        {"Authorization": self.node.token}):
            status, _, body = self.call("GET", "/v2/keys", headers=headers,
                                        auth=False)
            self.assertEqual(status, 401)
            self.assertIn("error", body)

    def test_chunked_body_is_taken_whole(self):
        conn = http.client.HTTPConnection(self.node.http_addr, timeout=10)
        self.addCleanup(conn.close)
        conn.request(
            "POST", "/v2/publish/" + self.sink.url("/chunked"),
            body=iter([b"part1-", b"part2"]),
            headers={"Authorization": f"Bearer {self.node.token}"},
            encode_chunked=True,
        )
        resp = conn.getresponse()
        self.assertEqual(resp.status, 200, resp.read())
        resp.read()
        (got,) = self.sink.wait_for(1, path="/chunked", timeout=20)
        self.assertEqual(got.body, b"part1-part2")

    def test_malformed_batch_is_400(self):
        for body in (b"[{", b"{}", b"[]", b'"x"'):
            status, _, answer = self.call("POST", "/v2/batch", body=body)
            self.assertEqual(status, 400, body)
            self.assertIn("error", answer)

    def test_batch_answers_each_element_in_order(self):
        batch = [
            {"destination": self.sink.url("/b1"), "body": "one",
             "headers": {"upstash-forward-x-n": "1"}},
            {"destination": self.sink.url("/b2"), "body": "two"},
            {"destination": self.sink.url("/b3"), "headers": {"upstash-delay": "1s"}},
        ]
        status, _, answer = self.call("POST", "/v2/batch",
                                      body=json.dumps(batch).encode())
        self.assertEqual(status, 200, answer)
        self.assertEqual(len(answer), 3)
        ids = [a["messageId"] for a in answer]
        self.assertTrue(all(i.startswith("msg_") for i in ids), answer)
        for i, path in enumerate(("/b1", "/b2", "/b3")):
            (got,) = self.sink.wait_for(1, path=path, timeout=20)
            self.assertEqual(got.header("Upstash-Message-Id"), ids[i])
        self.assertEqual(self.sink.requests(path="/b1")[0].header("X-N"), "1")

    def test_batch_with_an_invalid_element_publishes_nothing(self):
        """All or nothing: the SDKs ignore a per-element error, so a 200
        naming one would lose that message silently."""
        good = {"destination": self.sink.url("/never"), "body": "x",
                "headers": {"upstash-delay": "1h"}}
        for bad, says in (
            ({"destination": "not a url"}, "batch element 2 of 3"),
            ({"destination": self.sink.url("/b"),
              "headers": {"upstash-delay": "7x"}}, "Upstash-Delay"),
            ({"destination": self.sink.url("/b"),
              "headers": {"upstash-retries": "100000"}}, "batch element 2"),
            ({"destination": "http://"}, "batch element 2"),
            ({"destination": self.sink.url("/b"),
              "headers": {"X-A": ["ok", 5]}}, "header 'X-A' is not a string"),
        ):
            with self.subTest(bad=bad):
                status, _, answer = self.call(
                    "POST", "/v2/batch",
                    body=json.dumps([good, bad, good]).encode())
                self.assertEqual(status, 400, answer)
                self.assertIn(says, answer["error"])
                self.assertIn("nothing was published", answer["error"])
        self.assertEqual(qh.list_all_ids(self.node, "ls"), [])

    def test_forwarded_delivery_headers_are_dropped_not_refused(self):
        """The workflow SDK copies its incoming request's headers into
        Upstash-Forward-*: the ones qraft sets on delivery are dropped (a
        copy would forge them or frame the request wrong), the rest go."""
        headers = {
            "Upstash-Forward-Content-Length": "999",
            "Upstash-Forward-Host": "evil.example",
            "Upstash-Forward-Upstash-Message-Id": "msg_forged",
            "Upstash-Forward-Upstash-Signature": "forged",
            "Upstash-Forward-Upstash-Retried": "7",
            "Upstash-Forward-User-Agent": "forged-agent",
            "Upstash-Forward-Connection": "close",
            "Upstash-Forward-X-Keep": "kept",
        }
        for target in ("/v2/publish/" + self.sink.url("/fwd"), "/v2/batch"):
            with self.subTest(target=target):
                if target == "/v2/batch":
                    body = json.dumps([{"destination": self.sink.url("/fwd"),
                                        "body": "hello",
                                        "headers": headers}]).encode()
                    status, _, answer = self.call("POST", target, body=body)
                    answer = answer[0] if status == 200 else answer
                else:
                    status, _, answer = self.call("POST", target,
                                                  body=b"hello",
                                                  headers=headers)
                self.assertEqual(status, 200, answer)
                (got,) = self.sink.wait_for(1, path="/fwd", timeout=20)
                self.sink.clear()
                self.assertEqual(got.body, b"hello")
                self.assertEqual(got.header("X-Keep"), "kept")
                self.assertEqual(got.header("Upstash-Message-Id"),
                                 answer["messageId"])
                self.assertEqual(got.header("Upstash-Retried"), "0")
                self.assertNotEqual(got.header("Upstash-Signature"), "forged")
                self.assertNotEqual(got.header("Host"), "evil.example")
                self.assertNotEqual(got.header("User-Agent"), "forged-agent")
                self.assertEqual(got.header("Content-Length"), "5")

    def test_oversized_body_is_413(self):
        status, _, _ = self.call("POST", "/v2/publish/" + self.sink.url("/big"),
                                 body=b"x" * (MAX_BODY + 1))
        self.assertEqual(status, 413)
        self.assertEqual(self.sink.requests(), [])

    def test_unknown_message_is_404(self):
        for method in ("GET", "DELETE"):
            status, _, body = self.call(method, "/v2/messages/msg_nosuch")
            self.assertEqual(status, 404)
            self.assertIn("error", body)
        status, _, _ = self.call("DELETE", "/v2/dlq/msg_nosuch")
        self.assertEqual(status, 404)

    def test_bad_headers_are_400(self):
        for name, value in (("Upstash-Delay", "10"), ("Upstash-Delay", "1x"),
                            ("Upstash-Timeout", "s"), ("Upstash-Retries", "-1"),
                            ("Upstash-Not-Before", "soon"),
                            ("Upstash-Method", "FETCH")):
            status, _, body = self.call(
                "POST", "/v2/publish/" + self.sink.url("/bad"),
                body=b"x", headers={name: value})
            self.assertEqual(status, 400, (name, value, body))
            self.assertIn("error", body)
        self.assertEqual(self.sink.requests(), [])

    def test_destinations_and_routes(self):
        status, _, body = self.call("POST", "/v2/publish/my-group")
        self.assertEqual(status, 404, body)
        status, _, body = self.call("POST", "/v2/publish/ftp:x")
        self.assertEqual(status, 400, body)
        status, _, body = self.call("POST", "/v2/enqueue/bad!name/" +
                                    self.sink.url("/q"))
        self.assertEqual(status, 400, body)
        status, headers, body = self.call("GET", "/v2/publish/" +
                                          self.sink.url("/x"))
        self.assertEqual(status, 405, body)
        self.assertEqual(headers["Allow"], "POST")
        status, _, body = self.call("GET", "/v2/nothing-here")
        self.assertEqual(status, 404, body)

    def test_enqueue_sets_the_queue(self):
        status, _, body = self.call(
            "POST", "/v2/enqueue/jobs.v1/" + self.sink.url("/q"), body=b"x",
            headers={"Upstash-Delay": "1h"})
        self.assertEqual(status, 200, body)
        status, _, msg = self.call("GET", f"/v2/messages/{body['messageId']}")
        self.assertEqual(status, 200, msg)
        self.assertEqual(msg["queueName"], "jobs.v1")
        self.assertEqual(msg["notBefore"] - msg["createdAt"], 3600 * 1000)

    def test_key_rotation(self):
        _, _, before = self.call("GET", "/v2/keys")
        status, _, rotated = self.call("POST", "/v2/keys/rotate")
        self.assertEqual(status, 200, rotated)
        self.assertEqual(rotated["current"], before["next"])
        status, _, again = self.call("POST", "/v2/rotate")
        self.assertEqual(status, 200, again)
        self.assertEqual(again["current"], rotated["next"])


if __name__ == "__main__":
    unittest.main()
