"""Redaction (Upstash-Redact-Fields): a real qraftd --dev delivering to the
loopback sink. The destination gets the real body and headers; every view
(GET /v2/messages, /v2/events and /v2/logs, the DLQ, a failure callback's
source fields, schedules, the CLI) shows each redacted value as
"REDACTED:<sha256 hex of the value>", as QStash documents ("Redact Private
Data"), and never the value itself.
"""

import base64
import hashlib
import json
import unittest

import qraft_harness as qh
from http_sink import Reply, start_sink

SECRET_BODY = b'{"password":"body-secret-1234"}'
SECRET_HEADER = "header-secret-5678"
PUBLIC_HEADER = "visible-value"


def placeholder(value):
    if isinstance(value, str):
        value = value.encode()
    return "REDACTED:" + hashlib.sha256(value).hexdigest()


def feature_level(node):
    _, out, _ = node.cli("status", "--local", "--json")
    return json.loads(out)["feature_level"]


class RedactTest(unittest.TestCase):
    def setUp(self):
        self.sink = start_sink(self)
        self.node = qh.start_dev_node(self)
        # A new cluster reaches level 6 at its first tick after it serves.
        qh.wait_until(lambda: feature_level(self.node) >= 6, 30,
                      "feature level 6")

    def call(self, method, target, **kwargs):
        return qh.http_call(self.node.http_addr, method, target,
                            token=self.node.token, **kwargs)

    def publish(self, path, redact, extra=None, body=SECRET_BODY):
        headers = {"Upstash-Forward-X-Secret": SECRET_HEADER,
                   "Upstash-Forward-X-Public": PUBLIC_HEADER,
                   "Content-Type": "application/json",
                   "Upstash-Redact-Fields": redact}
        headers.update(extra or {})
        status, _, answer = self.call(
            "POST", f"/v2/publish/{self.sink.url(path)}", body=body,
            headers=headers)
        self.assertEqual(status, 200, answer)
        return answer["messageId"]

    def assert_hidden(self, raw):
        """Neither secret appears anywhere in raw (bytes or str)."""
        if isinstance(raw, (dict, list)):
            raw = json.dumps(raw)
        if isinstance(raw, bytes):
            raw = raw.decode(errors="replace")
        self.assertNotIn("body-secret-1234", raw)
        self.assertNotIn(SECRET_HEADER, raw)
        # base64 of the body, as a callback's sourceBody would carry it
        self.assertNotIn(base64.b64encode(SECRET_BODY).decode(), raw)

    def assert_redacted_view(self, view, body=True):
        header = view["header"]
        self.assertEqual(header["X-Secret"], [placeholder(SECRET_HEADER)])
        self.assertEqual(header["X-Public"], [PUBLIC_HEADER])
        if body:
            # Logs carry the body in base64 (as QStash's do), the rest as text.
            shown = view["body"]
            if shown != placeholder(SECRET_BODY):
                shown = base64.b64decode(shown).decode()
            self.assertEqual(shown, placeholder(SECRET_BODY))

    def delivered_request(self, path):
        (req,) = self.sink.wait_for(1, path=path, timeout=30)
        self.assertEqual(req.body, SECRET_BODY)
        self.assertEqual(req.header("X-Secret"), SECRET_HEADER)
        self.assertEqual(req.header("X-Public"), PUBLIC_HEADER)
        return req

    def test_dead_letter_is_delivered_real_and_shown_redacted(self):
        """A message that fails for good: the attempt carries the originals;
        GET /v2/messages, the events, the DLQ (list and one), the failure
        callback's sourceHeader/sourceBody and the CLI show placeholders;
        a DLQ replay still delivers the originals."""
        self.sink.script("/fail", Reply(500), Reply(200))
        self.sink.script("/failure-cb", Reply(200))
        mid = self.publish("/fail", "body, header[x-secret]", {
            "Upstash-Retries": "0",
            "Upstash-Failure-Callback": self.sink.url("/failure-cb")})
        self.delivered_request("/fail")

        (cb,) = self.sink.wait_for(1, path="/failure-cb", timeout=30)
        payload = json.loads(cb.body)
        self.assertEqual(payload["sourceHeader"]["X-Secret"],
                         [placeholder(SECRET_HEADER)])
        self.assertEqual(payload["sourceHeader"]["X-Public"], [PUBLIC_HEADER])
        self.assertEqual(base64.b64decode(payload["sourceBody"]).decode(),
                         placeholder(SECRET_BODY))
        self.assert_hidden(cb.body)

        def in_dlq():
            status, _, dlq = self.call("GET", "/v2/dlq")
            return status == 200 and any(
                m["messageId"] == mid for m in dlq["messages"])
        qh.wait_until(in_dlq, 30, "the message in the DLQ")

        status, _, dlq = self.call("GET", "/v2/dlq")
        (entry,) = [m for m in dlq["messages"] if m["messageId"] == mid]
        self.assert_redacted_view(entry)
        self.assert_hidden(dlq)
        status, _, one = self.call("GET", f"/v2/dlq/{mid}")
        self.assertEqual(status, 200, one)
        self.assert_redacted_view(one)
        self.assert_hidden(one)

        for route in ("/v2/events", "/v2/logs"):
            status, _, raw = self.call("GET", f"{route}?messageId={mid}",
                                       parse=None)
            self.assertEqual(status, 200, raw)
            self.assert_hidden(raw)
            logs = json.loads(raw)
            entries = logs.get("events", logs.get("logs"))
            self.assertTrue(entries, logs)
            for e in entries:
                self.assert_redacted_view(e)

        _, out, _ = self.node.cli("get", mid, "--json")
        self.assert_hidden(out)
        self.assertIn(placeholder(SECRET_HEADER), out)
        _, out, _ = self.node.cli("get", mid)
        self.assert_hidden(out)
        _, out, _ = self.node.cli("dlq", "ls", "--json")
        self.assert_hidden(out)

        # Nor in the node's own log.
        for path in (self.node.stdout_path, self.node.stderr_path):
            if path is not None:
                self.assert_hidden(path.read_bytes())

        # Replay: the destination gets the originals again.
        status, _, answer = self.call("POST", f"/v2/dlq/retry/{mid}")
        self.assertIn(status, (200, 201), answer)
        reqs = self.sink.wait_for(2, path="/fail", timeout=30)
        self.assertEqual(reqs[1].body, SECRET_BODY)
        self.assertEqual(reqs[1].header("X-Secret"), SECRET_HEADER)

        def delivered():
            _, out, _ = self.node.cli("get", mid, "--json")
            return json.loads(out)["state"] == "delivered"
        qh.wait_until(delivered, 30, f"{mid} delivered")
        # Its record now holds the placeholders: the same view.
        _, out, _ = self.node.cli("get", mid, "--json")
        self.assert_hidden(out)
        self.assertIn(placeholder(SECRET_HEADER), out)
        status, _, raw = self.call("GET", f"/v2/events?messageId={mid}",
                                   parse=None)
        self.assert_hidden(raw)

    def test_all_headers_and_batch(self):
        """`header` redacts every forwarded header (Content-Type too); a
        batch element takes the header like a publish."""
        self.sink.script("/all", Reply(200))
        mid = self.publish("/all", "header", {"Upstash-Delay": "1s"})
        status, _, msg = self.call("GET", f"/v2/messages/{mid}")
        self.assertEqual(status, 200, msg)
        for name, values in msg["header"].items():
            self.assertTrue(all(v.startswith("REDACTED:") for v in values),
                            (name, values))
        self.assertEqual(msg["header"]["X-Public"],
                         [placeholder(PUBLIC_HEADER)])
        self.assertEqual(msg["body"], SECRET_BODY.decode())  # not asked
        self.delivered_request("/all")

        batch = [{"destination": self.sink.url("/b1"),
                  "body": SECRET_BODY.decode(),
                  "headers": {"Upstash-Forward-X-Secret": SECRET_HEADER,
                              "Upstash-Forward-X-Public": PUBLIC_HEADER,
                              "Upstash-Delay": "1s",
                              "Upstash-Redact-Fields": "headers[X-Secret],body"}}]
        status, _, answer = self.call("POST", "/v2/batch", body=batch)
        self.assertEqual(status, 200, answer)
        bid = answer[0]["messageId"]
        status, _, msg = self.call("GET", f"/v2/messages/{bid}")
        self.assert_redacted_view(msg)
        self.assert_hidden(msg)
        self.delivered_request("/b1")

    def test_cli_publish_redact(self):
        """qraft publish --redact takes the same spec over the RPC."""
        self.sink.script("/cli", Reply(200))
        _, out, _ = self.node.cli(
            "publish", self.sink.url("/cli"), "--body", SECRET_BODY.decode(),
            "--header", f"X-Secret: {SECRET_HEADER}",
            "--header", f"X-Public: {PUBLIC_HEADER}",
            "--redact", "body, header[x-secret]", "--delay", "1s")
        mid = out.strip()
        _, out, _ = self.node.cli("get", mid, "--json")
        self.assert_hidden(out)
        self.assertIn(placeholder(SECRET_HEADER), out)
        self.assertIn(PUBLIC_HEADER, out)
        self.delivered_request("/cli")
        status, _, _ = self.node.cli(
            "publish", self.sink.url("/cli"), "--redact", "nonsense",
            check=False)
        self.assertNotEqual(status, 0)

    def test_schedule_template_is_shown_redacted(self):
        status, _, answer = self.call(
            "POST", f"/v2/schedules/{self.sink.url('/sched')}",
            body=SECRET_BODY,
            headers={"Upstash-Cron": "0 0 1 1 *",
                     "Upstash-Forward-X-Secret": SECRET_HEADER,
                     "Upstash-Forward-X-Public": PUBLIC_HEADER,
                     "Upstash-Redact-Fields": "body,header[X-Secret]"})
        self.assertEqual(status, 200, answer)
        sid = answer["scheduleId"]
        status, _, raw = self.call("GET", f"/v2/schedules/{sid}", parse=None)
        self.assertEqual(status, 200, raw)
        self.assert_hidden(raw)
        status, _, raw = self.call("GET", "/v2/schedules", parse=None)
        self.assert_hidden(raw)

    def test_bad_specs_are_400(self):
        for spec in ("bogus", "header[]", "header[X", "header[a b]",
                     "headers[x],nope", ",", "body;header",
                     ",".join(f"header[h{i}]" for i in range(65))):
            status, _, answer = self.call(
                "POST", f"/v2/publish/{self.sink.url('/never')}", body="x",
                headers={"Upstash-Redact-Fields": spec})
            self.assertEqual(status, 400, (spec, answer))
            self.assertIn("Redact", answer["error"], spec)
        self.assertEqual(self.sink.requests(path="/never"), [])


class RedactLevelTest(unittest.TestCase):
    def test_refused_below_feature_level_6(self):
        """A node at feature level 5 would store and show the redacted
        parts: the publish is refused (503 naming the level), not taken
        unredacted."""
        sink = start_sink(self)
        node = qh.start_dev_node(self, extra_args=["--max-feature-level", "5"])
        qh.wait_until(lambda: feature_level(node) == 5, 30, "feature level 5")
        status, _, answer = qh.http_call(
            node.http_addr, "POST", f"/v2/publish/{sink.url('/x')}",
            body="x", token=node.token,
            headers={"Upstash-Redact-Fields": "body"})
        self.assertEqual(status, 503, answer)
        self.assertIn("level 6", answer["error"])
        status, _, answer = qh.http_call(
            node.http_addr, "POST", f"/v2/publish/{sink.url('/x')}",
            body="x", token=node.token)
        self.assertEqual(status, 200, answer)


if __name__ == "__main__":
    unittest.main()
