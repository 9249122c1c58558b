"""URL groups (QStash "topics") and message metadata on a real qraftd --dev,
from raw HTTP: bad input answers 400/404/405 with {"error"} and changes
nothing; a group publish fans out; DLQ entries and callbacks of a group
member carry topicName/endpointName, and the DLQ and logs filter on them;
Upstash-Flow-Control-Value is parsed;
upstash-* query parameters are config. On a 3-node cluster, group changes
and group publishes sent to a follower are forwarded and replicated. The
SDK's view is in tests/sdk/urlgroups.test.mjs."""

import base64
import json
import unittest

import qraft_harness as qh
from http_sink import Reply, start_sink


def http_call(addr, token, method, target, body=None, headers=None):
    """qh.http_call as token's caller (30 s timeout): (status, headers,
    parsed JSON or raw bytes)."""
    return qh.http_call(addr, method, target, body, headers, token=token,
                        timeout=30)


def wait_for_level_2(node):
    """Group commands are feature level 2, which the leader reaches at its
    first tick after it has seen every node's level: wait for it."""
    def at_level_2():
        _, out, _ = node.cli("status", "--local", "--json")
        return json.loads(out)["feature_level"] >= 2
    qh.wait_until(at_level_2, 30, f"{node.name} to reach feature level 2")


class TopicsTest(unittest.TestCase):
    def setUp(self):
        self.sink = start_sink(self)
        self.node = qh.start_dev_node(self)
        wait_for_level_2(self.node)

    def call(self, method, target, body=None, headers=None):
        return http_call(self.node.http_addr, self.node.token, method, target,
                         body, headers)

    def add(self, group, *endpoints):
        status, _, body = self.call("POST", f"/v2/topics/{group}/endpoints",
                                    body={"endpoints": list(endpoints)})
        self.assertEqual(status, 200, body)

    def group(self, group):
        status, _, body = self.call("GET", f"/v2/topics/{group}")
        return body if status == 200 else status

    def assert_error(self, status, body, want_status, *words):
        self.assertEqual(status, want_status, body)
        self.assertIsInstance(body, dict, body)
        for word in words:
            self.assertIn(word, body["error"])

    def test_bad_group_names(self):
        ep = {"endpoints": [{"url": self.sink.url("/x")}]}
        for name in ("bad!name", "a%20b", "caf%C3%A9", "x" * 300):
            status, _, body = self.call("POST", f"/v2/topics/{name}/endpoints",
                                        body=ep)
            self.assert_error(status, body, 400, "[A-Za-z0-9._-]+")
            status, _, body = self.call("GET", f"/v2/topics/{name}")
            self.assert_error(status, body, 400)
        status, _, body = self.call("POST", "/v2/topics//endpoints", body=ep)
        self.assertIn(status, (400, 404), body)
        # Endpoint names follow the same rule.
        status, _, body = self.call(
            "POST", "/v2/topics/g/endpoints",
            body={"endpoints": [{"name": "no spaces", "url": self.sink.url("/")}]})
        self.assert_error(status, body, 400, "endpoint name")
        status, _, body = self.call("GET", "/v2/topics")
        self.assertEqual((status, body), (200, []))

    def test_bad_endpoint_urls(self):
        for url in ("ftp://example.com/x", "example.com/x", "http://", "",
                    "http://a b/"):
            status, _, body = self.call(
                "POST", "/v2/topics/g/endpoints",
                body={"endpoints": [{"url": self.sink.url("/ok")},
                                    {"url": url}]})
            self.assert_error(status, body, 400, "endpoint 2 url")
        # Nothing of a refused request was written.
        self.assertEqual(self.group("g"), 404)

    def test_malformed_json(self):
        for body in (b"", b"{", b"[]", b'{"endpoints": []}',
                     b'{"endpoints": {}}', b'{"endpoints": ["http://x"]}',
                     b'{"endpoints": [{"url": 5}]}',
                     b'{"endpoints": [{"url": "http://x/", "weight": 1}]}',
                     b'{"endpoints": [{"url": "http://x/"}], "extra": 1}'):
            for method in ("POST", "DELETE"):
                status, _, answer = self.call(
                    method, "/v2/topics/g/endpoints", body=body)
                self.assert_error(status, answer, 400)
        self.assertEqual(self.group("g"), 404)

    def test_methods_and_unknown_groups(self):
        status, headers, body = self.call("PUT", "/v2/topics/g")
        self.assert_error(status, body, 405)
        self.assertEqual(headers["Allow"], "GET, DELETE")
        status, headers, body = self.call("GET", "/v2/topics/g/endpoints")
        self.assert_error(status, body, 405)
        status, _, body = self.call("POST", "/v2/topics")
        self.assert_error(status, body, 405)
        for method, target in (("GET", "/v2/topics/nope"),
                               ("DELETE", "/v2/topics/nope")):
            status, _, body = self.call(method, target)
            self.assert_error(status, body, 404, "not found")

    def test_removing_unknown_endpoints(self):
        self.add("g", {"name": "a", "url": self.sink.url("/a")},
                 {"url": self.sink.url("/b")})
        before = self.group("g")
        for ep in ({"name": "zzz"}, {"url": self.sink.url("/zzz")}):
            # With a known one in the same request: nothing is removed.
            status, _, body = self.call(
                "DELETE", "/v2/topics/g/endpoints",
                body={"endpoints": [{"name": "a"}, ep]})
            self.assert_error(status, body, 404, "no endpoint")
        status, _, body = self.call("DELETE", "/v2/topics/g/endpoints",
                                    body={"endpoints": [{}]})
        self.assert_error(status, body, 400, "neither a name nor a url")
        status, _, body = self.call(
            "DELETE", "/v2/topics/nope/endpoints",
            body={"endpoints": [{"name": "a"}]})
        self.assert_error(status, body, 404, "not found")
        self.assertEqual(self.group("g"), before)

    def test_endpoint_names_unique_and_limit(self):
        self.add("g", {"name": "a", "url": self.sink.url("/a")})
        status, _, body = self.call(
            "POST", "/v2/topics/g/endpoints",
            body={"endpoints": [{"name": "a", "url": self.sink.url("/other")}]})
        self.assert_error(status, body, 400, "taken")
        many = [{"url": self.sink.url(f"/e{i}")} for i in range(101)]
        status, _, body = self.call("POST", "/v2/topics/big/endpoints",
                                    body={"endpoints": many})
        self.assert_error(status, body, 413, "at most 100")
        self.add("g", *many[:99])
        status, _, body = self.call("POST", "/v2/topics/g/endpoints",
                                    body={"endpoints": many[99:100]})
        self.assert_error(status, body, 400, "limit is 100")
        self.assertEqual(len(self.group("g")["endpoints"]), 100)
        # 100 copies of 400 KiB are over half the propose queue (32 MiB):
        # refused before anything is proposed.
        status, _, body = self.call("POST", "/v2/publish/g",
                                    body=b"x" * (400 * 1024))
        self.assert_error(status, body, 413, "100 endpoints")
        self.assertEqual(self.sink.requests(), [])

    def test_unknown_group_publish_is_404(self):
        for target in ("/v2/publish/nope", "/v2/enqueue/q1/nope"):
            status, _, body = self.call("POST", target, body=b"x")
            self.assert_error(status, body, 404, "url group 'nope' not found")
        # A batch answers the refused element's status, naming it (the
        # SDKs ignore a per-element error in a 200).
        status, _, body = self.call("POST", "/v2/batch",
                                    body=[{"destination": "nope"}])
        self.assert_error(status, body, 404,
                          "batch element 1 of 1: url group 'nope' not found; "
                          "nothing was published")
        self.assertEqual(self.sink.requests(), [])

    def test_flow_control_value_malformed(self):
        for value in ("", "parallelism=0", "rate=x", "rate=1, rate=2",
                      "burst=3", "period=10s", "rate=1, period=8d",
                      "rate=1;period=1s"):
            status, _, body = self.call(
                "POST", "/v2/publish/" + self.sink.url("/fc"), body=b"x",
                headers={"Upstash-Flow-Control-Key": "k",
                         "Upstash-Flow-Control-Value": value})
            self.assert_error(status, body, 400, "Flow-Control-Value")
        status, _, body = self.call(
            "POST", "/v2/publish/" + self.sink.url("/fc"), body=b"x",
            headers={"Upstash-Flow-Control-Value": "rate=1"})
        self.assert_error(status, body, 400, "flow control key")
        status, _, body = self.call(
            "POST", "/v2/publish/" + self.sink.url("/fc"), body=b"x",
            headers={"Upstash-Flow-Control-Key": "k"})
        self.assert_error(status, body, 400, "parallelism or a rate")
        self.assertEqual(self.sink.requests(), [])

    def test_topic_headers_cannot_be_forged(self):
        """Forwarded, they are dropped (SDKs forward what they received):
        the delivery carries qraft's values, or none."""
        for i, name in enumerate(("Upstash-Forward-Upstash-Topic-Name",
                                  "Upstash-Forward-Upstash-Caller-Ip")):
            path = f"/f{i}"
            status, _, body = self.call(
                "POST", "/v2/publish/" + self.sink.url(path), body=b"x",
                headers={name: "evil"})
            self.assertEqual(status, 200, body)
            (got,) = self.sink.wait_for(1, path=path, timeout=20)
            forged = name[len("Upstash-Forward-"):]
            self.assertNotEqual(got.header(forged), "evil")

    def test_query_config_and_group_fanout(self):
        self.add("fan", {"name": "one", "url": self.sink.url("/one")},
                 {"url": self.sink.url("/two?keep=1")})
        status, _, body = self.call(
            "POST", "/v2/publish/fan?upstash-delay=1h&upstash-retries=2",
            body=b"payload", headers={"Upstash-Label": "x , y,,"})
        self.assertEqual(status, 200, body)
        self.assertEqual([m["url"] for m in body],
                         [self.sink.url("/one"), self.sink.url("/two?keep=1")])
        for item, name in zip(body, ("one", None)):
            status, _, msg = self.call("GET", f"/v2/messages/{item['messageId']}")
            self.assertEqual(status, 200, msg)
            self.assertEqual(msg["topicName"], "fan")
            self.assertEqual(msg.get("endpointName"), name)
            self.assertEqual(msg["maxRetries"], 2)
            self.assertEqual(msg["notBefore"] - msg["createdAt"], 3600 * 1000)
            self.assertEqual(msg["labels"], ["x", "y"])
            self.assertEqual(msg["callerIP"], "127.0.0.1")
        # The same dedup id twice: each endpoint answers its own message.
        hdrs = {"Upstash-Deduplication-Id": "d1", "Upstash-Delay": "1h"}
        _, _, first = self.call("POST", "/v2/publish/fan", b"x", hdrs)
        status, _, second = self.call("POST", "/v2/publish/fan", b"x", hdrs)
        self.assertEqual(status, 202, second)
        self.assertEqual([m["messageId"] for m in second],
                         [m["messageId"] for m in first])
        self.assertTrue(all(m["deduplicated"] for m in second))
        # A URL publish's upstash-* query is config, not destination.
        status, _, body = self.call(
            "POST", "/v2/publish/" + self.sink.url("/q") +
            "?a=1&upstash-delay=10s&upstash-forward-x-k=v", b"x")
        self.assertEqual(status, 200, body)
        self.assertEqual(body["url"], self.sink.url("/q") + "?a=1")
        _, _, msg = self.call("GET", f"/v2/messages/{body['messageId']}")
        self.assertEqual(msg["notBefore"] - msg["createdAt"], 10 * 1000)
        self.assertEqual(msg["header"]["X-K"], ["v"])
        status, _, body = self.call(
            "POST", "/v2/publish/" + self.sink.url("/q") + "?upstash-delay=7x",
            b"x")
        self.assert_error(status, body, 400, "Upstash-Delay")

    def test_enqueue_to_a_group(self):
        """/v2/enqueue/{queue}/{group}: every endpoint's message joins the
        queue and is delivered in turn."""
        self.add("qg", {"name": "one", "url": self.sink.url("/q1")},
                 {"url": self.sink.url("/q2")})
        status, _, body = self.call("POST", "/v2/enqueue/gq/qg", b"x")
        self.assertEqual(status, 200, body)
        self.assertEqual(len(body), 2)
        for path in ("/q1", "/q2"):
            (got,) = self.sink.wait_for(1, path=path, timeout=20)
            self.assertEqual(got.header("Upstash-Topic-Name"), "qg")
        status, _, queue = self.call("GET", "/v2/queues/gq")
        self.assertEqual(status, 200, queue)

    def test_cli_manages_groups(self):
        """qraft group (libqraft over the RPC) sees and makes the same groups
        as the REST API."""
        q = "http://h/b?x=1&y=2"
        self.node.cli("group", "add", "cli", "one=http://h/a", q)
        self.assertEqual(self.group("cli")["endpoints"],
                         [{"name": "one", "url": "http://h/a"}, {"url": q}])
        _, out, _ = self.node.cli("group", "ls", "--json")
        self.assertEqual([g["name"] for g in json.loads(out)], ["cli"])
        _, out, _ = self.node.cli("group", "get", "cli")
        self.assertIn("one", out)
        self.assertIn(q, out)
        rc, _, err = self.node.cli("group", "add", "cli", "one=http://h/c",
                                   check=False)
        self.assertEqual(rc, 1, err)
        self.assertIn("taken", err)
        rc, _, err = self.node.cli("group", "rm", "cli", "nope", check=False)
        self.assertEqual(rc, 3, err)
        self.node.cli("group", "rm", "cli", "one", q)
        rc, _, _ = self.node.cli("group", "get", "cli", check=False)
        self.assertEqual(rc, 3)
        self.assertEqual(self.group("cli"), 404)
        rc, _, _ = self.node.cli("group", "delete", "cli", check=False)
        self.assertEqual(rc, 3)
        rc, _, _ = self.node.cli("group", "add", "cli", check=False)
        self.assertEqual(rc, 2)

    def test_dlq_and_callback_carry_the_group(self):
        self.sink.script("/dead", Reply(404))
        self.add("dl", {"name": "only", "url": self.sink.url("/dead")})
        status, _, body = self.call(
            "POST", "/v2/publish/dl", body=b"x",
            headers={"Upstash-Retries": "0",
                     "Upstash-Callback": self.sink.url("/cb"),
                     "Upstash-Label": "lab"})
        self.assertEqual(status, 200, body)
        (cb,) = self.sink.wait_for(1, path="/cb", timeout=20)
        payload = json.loads(cb.body)
        self.assertEqual(payload["topicName"], "dl")
        self.assertEqual(payload["endpointName"], "only")
        self.assertEqual(payload["callerIP"], "127.0.0.1")
        self.assertEqual(payload["sourceMessageId"], body[0]["messageId"])
        self.assertEqual(base64.b64decode(payload["sourceBody"]), b"x")

        def dead_letter():
            _, _, page = self.call("GET", "/v2/dlq")
            return next((m for m in page["messages"]
                         if m["messageId"] == body[0]["messageId"]), None)

        entry = qh.wait_until(dead_letter, 20, "the DLQ entry")
        self.assertEqual(entry["topicName"], "dl")
        self.assertEqual(entry["endpointName"], "only")
        self.assertEqual(entry["labels"], ["lab"])
        # The filters on the new fields select it, and only it.
        mid = body[0]["messageId"]
        for query, want in (("topicName=dl", [mid]), ("topicName=x,dl", [mid]),
                            ("topicName=other", []), ("label=lab", [mid]),
                            ("label=zz&topicName=dl", []),
                            ("callerIp=127.0.0.1", [mid]),
                            ("flowControlKey=k", [])):
            status, _, page = self.call("GET", f"/v2/dlq?{query}")
            self.assertEqual(status, 200, page)
            self.assertEqual([m["messageId"] for m in page["messages"]],
                             want, query)
        status, _, logs = self.call("GET", "/v2/events?topicName=dl")
        self.assertEqual(status, 200, logs)
        self.assertTrue(logs["events"])
        self.assertTrue(all(e["messageId"] == mid and e["topicName"] == "dl"
                            and e["endpointName"] == "only"
                            for e in logs["events"]), logs)
        (got,) = self.sink.wait_for(1, path="/dead", timeout=20)
        self.assertEqual(got.header("Upstash-Topic-Name"), "dl")


class TopicsClusterTest(unittest.TestCase):
    """Group changes and group publishes through a follower's REST API."""

    def setUp(self):
        self.sink = start_sink(self)
        self.cluster = qh.start_cluster(self)

    def test_follower_forwards_group_writes(self):
        leader = self.cluster.leader()
        wait_for_level_2(leader)
        followers = [n for n in self.cluster.nodes if n.id != leader.id]
        token = self.cluster.token
        via = followers[0].http_addr
        status, _, body = http_call(
            via, token, "POST", "/v2/topics/cg/endpoints",
            body={"endpoints": [{"name": "a", "url": self.sink.url("/a")},
                                {"url": self.sink.url("/b")}]})
        self.assertEqual(status, 200, body)
        want = [{"name": "a", "url": self.sink.url("/a")},
                {"url": self.sink.url("/b")}]

        # Every replica applies the same group (reads are local).
        for node in self.cluster.nodes:
            def has_group(addr=node.http_addr):
                st, _, g = http_call(addr, token, "GET", "/v2/topics/cg")
                return st == 200 and g["endpoints"] == want
            qh.wait_until(has_group, 20, f"the group on {node.name}")

        status, _, body = http_call(via, token, "POST", "/v2/publish/cg",
                                    body=b"fan")
        self.assertEqual(status, 200, body)
        self.assertEqual([m["url"] for m in body],
                         [self.sink.url("/a"), self.sink.url("/b")])
        for path in ("/a", "/b"):
            (got,) = self.sink.wait_for(1, path=path, timeout=30)
            self.assertEqual(got.header("Upstash-Topic-Name"), "cg")
            self.assertEqual(got.body, b"fan")

        status, _, body = http_call(followers[1].http_addr, token, "DELETE",
                                    "/v2/topics/cg")
        self.assertEqual(status, 200, body)
        status, _, body = http_call(followers[1].http_addr, token, "POST",
                                    "/v2/publish/cg", body=b"x")
        self.assertEqual(status, 404, body)


if __name__ == "__main__":
    unittest.main()
