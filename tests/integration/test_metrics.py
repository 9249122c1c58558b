"""/metrics of a real 3-node cluster follows the Prometheus conventions and
moves with the work: every node's text passes `promtool check metrics`
(Debian package prometheus: missing, the test fails), publishes through the
leader and a follower, deliveries and a dead letter show in the histograms,
the labelled counters and the DLQ size; and the shipped dashboard
(deploy/grafana/qraft.json) and alert rules (deploy/prometheus/
qraft-alerts.yml, checked with `promtool check rules` and unit-tested with
`promtool test rules` on synthetic series) name only metrics a node really
serves. One cluster serves every test (about 12 s in all);
each test compares what it changed, not absolute counts."""

import json
import re
import shutil
import subprocess
import unittest
from pathlib import Path

import prom_text
import qraft_harness as qh
from http_sink import Reply, start_sink

WAIT = 20
ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "qraft.json"
RULES = ROOT / "deploy" / "prometheus" / "qraft-alerts.yml"
RULE_TESTS = ROOT / "tests" / "data" / "prometheus" / "qraft-alerts.test.yml"
# A metric name in a PromQL expression: qraft_* and process_* families (a
# label name or a function never starts so).
METRIC_NAME = re.compile(r"\b((?:qraft|process)_[a-zA-Z0-9_]+)")


def promtool():
    path = shutil.which("promtool")
    if path is None:
        raise AssertionError(
            "promtool is missing: apt-get install prometheus "
            "(deploy/install-deps.sh --test)")
    return path


class MetricsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.sink = start_sink(None)
        cls.cluster = qh.start_cluster(None, n=3)
        cls.leader = cls.cluster.leader()
        cls.follower = cls.cluster.followers()[0]

    @classmethod
    def tearDownClass(cls):
        cls.cluster.cleanup()
        cls.sink.stop()

    def scrape(self, node):
        """The node's /metrics text, checked by promtool, and parsed."""
        status, hdrs, data = qh.http_call(node.http_addr, "GET", "/metrics",
                                          parse=None)
        self.assertEqual(status, 200)
        self.assertTrue(hdrs.get("Content-Type", "").startswith(
            "text/plain; version=0.0.4"))
        check = subprocess.run([promtool(), "check", "metrics"], input=data,
                               capture_output=True, timeout=30)
        self.assertEqual(
            check.returncode, 0,
            f"promtool check metrics on node {node.id}: "
            f"{check.stdout.decode()}{check.stderr.decode()}")
        types = {}
        samples = prom_text.parse(data.decode(), types)
        return samples, types

    def publish(self, node, path):
        status, _, body = qh.http_call(
            node.http_addr, "POST", f"/v2/publish/{self.sink.url(path)}",
            b"x", token=self.cluster.token, parse="json")
        self.assertEqual(status, 200, body)
        return body["messageId"]

    def check_histogram(self, samples, name):
        """Buckets cumulative and ending at +Inf == _count."""
        buckets = sorted(
            ((float(dict(ls)["le"]), v) for (n, ls), v in samples.items()
             if n == name + "_bucket"),
            key=lambda b: b[0])
        self.assertGreater(len(buckets), 1, name)
        counts = [v for _, v in buckets]
        self.assertEqual(counts, sorted(counts), name)
        self.assertEqual(buckets[-1][0], float("inf"))
        self.assertEqual(buckets[-1][1], samples[(name + "_count", ())])

    def test_metrics_follow_conventions_and_move(self):
        nodes = self.cluster.nodes
        before = {n.id: self.scrape(n)[0] for n in nodes}

        self.sink.script("/ok", Reply(status=200))
        self.sink.script("/gone", Reply(status=404))
        for _ in range(3):
            self.publish(self.leader, "/ok")
        self.publish(self.follower, "/ok")  # forwarded to the leader
        self.publish(self.leader, "/gone")  # a permanent failure: DLQ
        self.sink.wait_for(4, path="/ok", timeout=WAIT)

        def settled():
            got = {n.id: self.scrape(n)[0] for n in nodes}
            delivered = sum(
                prom_text.total(m, "qraft_deliveries_total",
                                outcome="delivered") for m in got.values())
            dead = [m[("qraft_messages", (("state", "dead_lettered"),))]
                    for m in got.values()]
            # Every replica applied every result (none pending).
            due = [prom_text.total(m, "qraft_messages", state=s)
                   for m in got.values() for s in ("pending", "retrying")]
            return (delivered >= 4 and dead == [1, 1, 1]
                    and due == [0] * 6 and got)
        after = qh.wait_until(
            settled, WAIT,
            "4 deliveries and 1 dead letter applied on every node")

        lead, fol = after[self.leader.id], after[self.follower.id]
        for node_id, m in after.items():
            info = [ls for (n, ls), v in m.items()
                    if n == "qraft_build_info" and v == 1]
            self.assertEqual(len(info), 1, node_id)
            labels = dict(info[0])
            self.assertTrue(labels["version"])
            self.assertTrue(labels["commit"])
            self.assertGreaterEqual(int(labels["feature_level"]), 1)
            self.assertEqual(m[("qraft_dlq_messages", ())], 1)
            self.assertEqual(m[("qraft_raft_has_leader", ())], 1)
            self.assertGreaterEqual(
                m[("qraft_raft_leader_changes_total", ())], 1)
            self.assertGreater(
                m[("qraft_apply_duration_seconds_count", ())],
                before[node_id][("qraft_apply_duration_seconds_count", ())])
            for h in ("qraft_publish_duration_seconds",
                      "qraft_apply_duration_seconds",
                      "qraft_delivery_attempt_duration_seconds",
                      "qraft_delivery_start_lag_seconds"):
                self.check_histogram(m, h)
        self.assertEqual(
            sum(m[("qraft_leader", ())] for m in after.values()), 1)

        # Publish latency on the node that took each publish.
        name = "qraft_publish_duration_seconds_count"
        self.assertGreaterEqual(
            lead[(name, ())] - before[self.leader.id][(name, ())], 4)
        self.assertGreaterEqual(
            fol[(name, ())] - before[self.follower.id][(name, ())], 1)
        self.assertGreater(lead[("qraft_publish_duration_seconds_sum", ())],
                           0)
        # REST requests by route pattern and code, never the raw path.
        route = "/v2/publish/{*}"
        self.assertGreaterEqual(
            prom_text.total(lead, "qraft_http_requests_total", route=route,
                            code="200"), 4)
        self.assertEqual(
            prom_text.total(fol, "qraft_http_requests_total", route=route,
                            code="200")
            - prom_text.total(before[self.follower.id],
                              "qraft_http_requests_total", route=route,
                              code="200"), 1)
        paths = {dict(ls)["route"] for (n, ls) in lead
                 if n == "qraft_http_requests_total"}
        self.assertFalse([p for p in paths if "127.0.0.1" in p], paths)
        # The follower's publish reached the leader over RPC; heartbeats too.
        self.assertGreaterEqual(
            prom_text.total(lead, "qraft_rpc_requests_total", kind="publish",
                            code="OK"), 1)
        self.assertGreater(
            prom_text.total(lead, "qraft_rpc_requests_total",
                            kind="heartbeat", code="OK"), 0)

        # Deliveries over the nodes: attempts, their outcomes and hosts.
        def total(name, **labels):
            return sum(prom_text.total(m, name, **labels)
                       for m in after.values())

        def total_before(name, **labels):
            return sum(prom_text.total(m, name, **labels)
                       for m in before.values())
        self.assertGreaterEqual(
            total("qraft_deliveries_total", outcome="delivered")
            - total_before("qraft_deliveries_total", outcome="delivered"), 4)
        self.assertEqual(
            total("qraft_deliveries_total", outcome="dead")
            - total_before("qraft_deliveries_total", outcome="dead"), 1)
        for h in ("qraft_delivery_attempt_duration_seconds_count",
                  "qraft_delivery_start_lag_seconds_count"):
            self.assertGreaterEqual(total(h) - total_before(h), 5, h)
        host = self.sink.url("/").split("/")[2]
        self.assertEqual(
            total("qraft_host_delivery_failures_total", host=host)
            - total_before("qraft_host_delivery_failures_total", host=host),
            1)
        self.assertEqual(
            total("qraft_host_deliveries_in_flight", host=host), 0)
        for m in after.values():
            self.assertEqual(m[("qraft_oldest_pending_age_seconds", ())], 0)

    def test_in_flight_and_overdue_show_while_a_host_is_slow(self):
        """An attempt the destination holds shows in flight (per node and
        per host) and makes its message overdue; both go back to 0 once it
        is answered."""
        self.sink.script("/slow", Reply(status=200, delay_s=3.0))
        self.publish(self.leader, "/slow")
        host = self.sink.url("/").split("/")[2]

        def holding():
            got = [self.scrape(n)[0] for n in self.cluster.nodes]
            in_flight = sum(prom_text.total(m, "qraft_deliveries_in_flight")
                            for m in got)
            on_host = sum(prom_text.total(
                m, "qraft_host_deliveries_in_flight", host=host) for m in got)
            overdue = max(m[("qraft_oldest_pending_age_seconds", ())]
                          for m in got)
            return in_flight >= 1 and on_host == 1 and overdue >= 1 and got
        qh.wait_until(holding, WAIT, "the held attempt to show")
        self.sink.wait_for(1, path="/slow", timeout=WAIT)

        def answered():
            got = [self.scrape(n)[0] for n in self.cluster.nodes]
            return all(
                m[("qraft_oldest_pending_age_seconds", ())] == 0
                and prom_text.total(m, "qraft_host_deliveries_in_flight",
                                    host=host) == 0 for m in got)
        qh.wait_until(answered, WAIT, "the answered attempt to clear")

    def test_dashboard_and_alerts_name_served_metrics(self):
        check = subprocess.run([promtool(), "check", "rules", str(RULES)],
                               capture_output=True, timeout=60)
        self.assertEqual(check.returncode, 0,
                         check.stdout.decode() + check.stderr.decode())
        self.assertIn("SUCCESS", check.stdout.decode())
        # The alerts fire when their condition held long enough, not before.
        check = subprocess.run([promtool(), "test", "rules", str(RULE_TESTS)],
                               capture_output=True, timeout=60)
        self.assertEqual(check.returncode, 0,
                         check.stdout.decode() + check.stderr.decode())

        samples, types = self.scrape(self.leader)
        served = set(types) | {n for (n, _) in samples}
        for family, kind in types.items():
            if kind == "histogram":
                served |= {family + s for s in prom_text.HIST_SUFFIXES}

        dashboard = json.loads(DASHBOARD.read_text())
        exprs = [t["expr"] for p in dashboard["panels"]
                 for t in p.get("targets", [])]
        exprs += [v.get("query", "") if isinstance(v.get("query"), str)
                  else v["query"].get("query", "")
                  for v in dashboard.get("templating", {}).get("list", [])]
        self.assertGreater(len(exprs), 10)
        rules_text = RULES.read_text()
        names = set()
        for e in exprs:
            names |= set(METRIC_NAME.findall(e))
        rule_names = set(METRIC_NAME.findall(rules_text))
        self.assertGreater(len(rule_names), 5)
        missing = sorted((names | rule_names) - served)
        self.assertEqual(missing, [],
                         "named by the dashboard or the rules but not "
                         "served by qraftd")
        # Each panel the dashboard promises is there.
        titles = " ".join(p["title"].lower() for p in dashboard["panels"])
        for want in ("publish", "deliver", "p99", "backlog", "oldest",
                     "dead", "leader", "term", "lag"):
            self.assertIn(want, titles)


class NodeTrafficTest(unittest.TestCase):
    """What one node sends another, seen in /metrics: client requests are
    not taken for a node's, and a follower's delivery results travel to
    the leader in batches."""

    @classmethod
    def setUpClass(cls):
        cls.cluster = qh.start_cluster(None, n=3)
        cls.leader = cls.cluster.leader()
        cls.follower = cls.cluster.followers()[0]

    @classmethod
    def tearDownClass(cls):
        cls.cluster.cleanup()

    def test_a_client_with_the_peer_token_is_a_client(self):
        """The peer token is the API token here (--token alone, the
        default). A client using it is still a client: its publishes are
        timed where it sent them, and each costs one raft entry (a node's
        answer also pushes the commit index with an extra entry; clients
        once got that too, a second entry and fsync per write). A write
        forwarded by a follower is timed by that follower only."""
        n = 20
        # qraft-bench's connection first makes one publish to find the
        # leader, then the n it times.
        sent = n + 1
        hist = "qraft_publish_duration_seconds_count"
        before = {nd.id: qh.metric(nd, hist)
                  for nd in (self.leader, self.follower)}
        index_before = self.leader.status()["commit_index"]
        self.leader.tool("qraft-bench", "publish", "-n", n, "-c", 1,
                         "--endpoints", self.leader.rpc_addr, "--token",
                         self.cluster.token)
        entries = self.leader.status()["commit_index"] - index_before
        self.assertGreaterEqual(entries, sent)
        # A few for the cluster's own bookkeeping meanwhile, never one per
        # publish.
        self.assertLess(entries, sent + n // 2,
                        f"{sent} publishes made {entries} raft entries")
        self.assertEqual(qh.metric(self.leader, hist),
                         before[self.leader.id] + sent)

        status, _, body = qh.http_call(
            self.follower.http_addr, "POST",
            "/v2/publish/http://127.0.0.1:9/through-a-follower", b"x",
            headers={"Upstash-Delay": "1h"}, token=self.cluster.token,
            parse="json")
        self.assertEqual(status, 200, body)
        self.assertEqual(qh.metric(self.follower, hist),
                         before[self.follower.id] + 1)
        self.assertEqual(qh.metric(self.leader, hist),
                         before[self.leader.id] + sent)

    def test_a_followers_results_travel_in_batches(self):
        """While one ResultsRequest is out, a follower's next results wait
        and go together (one frame per result before). Every message is
        still delivered once."""
        def totals():
            got = {}
            for nd in self.cluster.nodes:
                got[nd.id] = qh.metric(
                    nd, 'qraft_deliveries_total{outcome="delivered"}', 0)
            requests = qh.metric(
                self.leader, 'qraft_rpc_requests_total{kind="results",'
                'code="OK"}', 0)
            return got, requests

        self.cluster.wait_shards_spread(
            [nd.id for nd in self.cluster.nodes],
            "the leader to give every node shards")
        before, requests_before = totals()
        n = 2000
        _, out, _ = self.leader.tool(
            "qraft-bench", "deliver", "-n", n, "-c", 256, "--endpoints",
            self.leader.rpc_addr, "--token", self.cluster.token)
        self.assertIn("missing=0 duplicates=0", out)
        after, requests_after = totals()
        from_followers = sum(after[nd.id] - before[nd.id]
                             for nd in self.cluster.followers())
        requests = requests_after - requests_before
        self.assertGreaterEqual(from_followers, 100,
                                f"the followers delivered {from_followers} "
                                f"of {n}: too few to tell")
        self.assertLessEqual(requests * 2, from_followers,
                             f"{from_followers} results from the followers "
                             f"in {requests} requests")


if __name__ == "__main__":
    unittest.main()
