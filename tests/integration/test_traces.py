"""Traces (issue 16, point 7; docs/operations.md "Traces"): with
--otlp-endpoint a node exports a `publish` span for each publish it takes
and a `delivery attempt` span, its child, for each attempt, as OTLP/HTTP
JSON; every delivery carries a traceparent naming its attempt span. The
collector here is an HTTP sink on loopback that records what is posted."""

import json
import re
import unittest

import http_sink
import qraft_harness as qh

WAIT = 20
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE}-{CALLER_SPAN}-01"
HEADER = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}$")


def spans(collector):
    """Every span the collector got: (span, service.instance.id)."""
    out = []
    for req in collector.requests("/v1/traces"):
        doc = json.loads(req.body)
        for rs in doc["resourceSpans"]:
            attrs = {a["key"]: a["value"] for a in rs["resource"]["attributes"]}
            node = attrs["service.instance.id"]["stringValue"]
            for ss in rs["scopeSpans"]:
                for s in ss["spans"]:
                    out.append((s, node))
    return out


def attrs_of(span):
    return {a["key"]: next(iter(a["value"].values()))
            for a in span["attributes"]}


def wait_spans(collector, pred, what):
    return qh.wait_until(
        lambda: [s for s, _ in spans(collector) if pred(s)] or None,
        WAIT, what)


class TracesTest(unittest.TestCase):
    def setUp(self):
        self.collector = http_sink.start_sink(self)
        self.sink = http_sink.start_sink(self)
        self.endpoint = self.collector.url("/v1/traces")

    def publish(self, node, path, headers):
        status, _, body = qh.http_call(
            node.http_addr, "POST", f"/v2/publish/{self.sink.url(path)}",
            body=b"hi", token=node.token, headers=headers)
        self.assertEqual(status, 200, body)
        return body["messageId"]

    def test_publish_and_attempts_join_the_callers_trace(self):
        node = qh.start_dev_node(
            self, extra_args=["--otlp-endpoint", self.endpoint,
                              "--otlp-service-name", "qraft-test"])
        self.sink.script("/retry", http_sink.Reply(status=500),
                         http_sink.Reply(status=200))
        mid = self.publish(node, "/retry", {
            "traceparent": TRACEPARENT, "Upstash-Retries": "2",
            "Upstash-Retry-Delay": "100"})
        got = self.sink.wait_for(2, "/retry", timeout=WAIT)
        parents = []
        for req in got:
            m = HEADER.match(req.header("traceparent", ""))
            self.assertIsNotNone(m, req.headers)
            self.assertEqual(m.group(1), TRACE)
            parents.append(m.group(2))
        self.assertNotEqual(parents[0], parents[1])

        attempts = qh.wait_until(
            lambda: (lambda a: a if len(a) >= 2 else None)(
                [s for s, _ in spans(self.collector)
                 if s["name"] == "delivery attempt"]),
            WAIT, "two attempt spans")
        publish = wait_spans(self.collector, lambda s: s["name"] == "publish",
                             "a publish span")[0]
        self.assertEqual(publish["traceId"], TRACE)
        self.assertEqual(publish["parentSpanId"], CALLER_SPAN)
        self.assertEqual(publish["kind"], 2)
        self.assertEqual(attrs_of(publish)["messaging.message.id"], mid)
        self.assertEqual(publish["status"]["code"], 1)
        self.assertGreaterEqual(int(publish["endTimeUnixNano"]),
                                int(publish["startTimeUnixNano"]))
        # Each attempt: the publish span's child, named by the header the
        # destination got.
        self.assertEqual(sorted(s["spanId"] for s in attempts),
                         sorted(parents))
        by_retried = {attrs_of(s)["qraft.retried"]: s for s in attempts}
        self.assertEqual(set(by_retried), {"0", "1"})
        for s in attempts:
            self.assertEqual(s["traceId"], TRACE)
            self.assertEqual(s["parentSpanId"], publish["spanId"])
            self.assertEqual(s["kind"], 3)
            a = attrs_of(s)
            self.assertEqual(a["messaging.message.id"], mid)
            self.assertEqual(a["server.address"],
                             f"127.0.0.1:{self.sink.port}")
        first, second = by_retried["0"], by_retried["1"]
        self.assertEqual(attrs_of(first)["http.response.status_code"], "500")
        self.assertEqual(attrs_of(first)["qraft.outcome"], "retry")
        self.assertEqual(first["status"]["code"], 2)
        self.assertEqual(attrs_of(second)["http.response.status_code"], "200")
        self.assertEqual(attrs_of(second)["qraft.outcome"], "delivered")
        self.assertEqual(second["status"]["code"], 1)
        # The resource names the service.
        doc = json.loads(self.collector.requests("/v1/traces")[0].body)
        res = {a["key"]: a["value"]["stringValue"]
               for a in doc["resourceSpans"][0]["resource"]["attributes"]}
        self.assertEqual(res["service.name"], "qraft-test")
        qh.wait_until(
            lambda: qh.metric(node, "qraft_trace_spans_exported_total", 0) >= 3,
            WAIT, "qraft_trace_spans_exported_total >= 3")

        # No traceparent, or a bad one: a new trace. One the message
        # forwards explicitly goes as it is, alone.
        self.publish(node, "/new", {"traceparent": "00-" + "0" * 32 + "-" +
                                    CALLER_SPAN + "-01"})
        m = HEADER.match(self.sink.wait_for(1, "/new", WAIT)[0]
                         .header("traceparent", ""))
        self.assertIsNotNone(m)
        self.assertNotEqual(m.group(1), "0" * 32)
        # A batch's traceparent: each message in that trace.
        status, _, body = qh.http_call(
            node.http_addr, "POST", "/v2/batch", token=node.token,
            headers={"traceparent": TRACEPARENT,
                     "Content-Type": "application/json"},
            body=[{"destination": self.sink.url("/batch")}] * 2)
        self.assertEqual(status, 200, body)
        for req in self.sink.wait_for(2, "/batch", WAIT):
            m = HEADER.match(req.header("traceparent", ""))
            self.assertEqual(m.group(1) if m else None, TRACE, req.headers)
        self.publish(node, "/own", {"Upstash-Forward-Traceparent": TRACEPARENT})
        req = self.sink.wait_for(1, "/own", WAIT)[0]
        self.assertEqual([v for k, v in req.headers
                          if k.lower() == "traceparent"], [TRACEPARENT])

    def test_off_by_default_and_a_dead_collector_changes_nothing(self):
        off = qh.start_dev_node(self)
        self.publish(off, "/off", {"traceparent": TRACEPARENT})
        req = self.sink.wait_for(1, "/off", WAIT)[0]
        self.assertIsNone(req.header("traceparent"), req.headers)
        self.assertEqual(qh.metric(off, "qraft_trace_spans_exported_total"), 0)
        off.terminate()

        dead = f"http://127.0.0.1:{qh.free_port()}/v1/traces"  # no one there
        node = qh.start_dev_node(self, extra_args=["--otlp-endpoint", dead])
        for i in range(3):
            self.publish(node, "/dead", {})
        got = self.sink.wait_for(3, "/dead", WAIT)
        self.assertTrue(all(r.header("traceparent") for r in got))
        qh.wait_until(
            lambda: qh.metric(node, "qraft_trace_spans_dropped_total", 0) >= 6,
            WAIT, "the spans counted as dropped")
        self.assertEqual(self.collector.requests(), [])
        self.assertIn("spans not exported", node.stderr_tail(200))

    def test_cluster_attempts_on_other_nodes_join_the_trace(self):
        cluster = qh.start_cluster(
            self, n=3, extra_args=["--otlp-endpoint", self.endpoint])
        follower = cluster.followers()[0]
        n = 12
        mids = [self.publish(follower, f"/c{i}", {"traceparent": TRACEPARENT})
                for i in range(n)]
        self.sink.wait_for(n, timeout=WAIT)

        def chains():
            got = spans(self.collector)
            pubs = {attrs_of(s).get("messaging.message.id"): (s, node)
                    for s, node in got if s["name"] == "publish"}
            atts = {attrs_of(s)["messaging.message.id"]: (s, node)
                    for s, node in got if s["name"] == "delivery attempt"}
            return (pubs, atts) if all(m in pubs and m in atts
                                       for m in mids) else None

        pubs, atts = qh.wait_until(chains, WAIT, "a publish and attempt span "
                                   "for every message")
        senders = set()
        for mid in mids:
            pub, pub_node = pubs[mid]
            att, att_node = atts[mid]
            self.assertEqual(pub_node, str(follower.id))
            self.assertEqual(pub["traceId"], TRACE)
            self.assertEqual(att["traceId"], TRACE)
            self.assertEqual(att["parentSpanId"], pub["spanId"])
            senders.add(att_node)
        self.assertGreater(len(senders - {str(follower.id)}), 0,
                           "no attempt was made by another node")


if __name__ == "__main__":
    unittest.main()
