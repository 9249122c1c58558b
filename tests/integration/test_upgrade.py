"""Rolling upgrades and feature levels: the cluster's feature level is the
lowest level its members advertise, so a command kind that an older member
would not understand is never proposed while such a member is in the
cluster. A node pinned with --max-feature-level stands in for a node that
still runs the older version."""

import json
import unittest

import qraft_harness as qh
from http_sink import Reply, start_sink


def cluster_level(node):
    return node.status()["feature_level"]


class UpgradeTest(unittest.TestCase):
    def test_level_rises_only_when_every_node_has_it(self):
        cluster = qh.Cluster(n=3)
        self.addCleanup(cluster.cleanup)
        old = cluster.nodes[2]
        old.extra_args = ["--max-feature-level", "1"]
        cluster.start()
        leader = cluster.leader()

        # The leader sees every node advertise; one is still at level 1.
        def advertised():
            nodes = leader.status()["nodes"]
            return len(nodes) == 3 and all(n["version"] for n in nodes)

        qh.wait_until(advertised, 20, "every node to advertise its version")
        levels = {n["id"]: n["feature_level"]
                  for n in leader.status()["nodes"]}
        self.assertEqual(levels[old.id], 1)
        self.assertEqual(cluster_level(leader), 1)

        # "Upgrade" the last node: restart it without the pin. The leader
        # raises the level, and every replica applies it.
        old.terminate()
        old.extra_args = []
        old.start()
        qh.wait_until(
            lambda: all(cluster_level(n) == qh.FEATURE_LEVEL
                        for n in cluster.nodes),
            30, f"every node to apply feature level {qh.FEATURE_LEVEL}")

        # The level never goes back: pinning a node lower again does not
        # lower it (an operator rolls back only before the level rose).
        old.terminate()
        old.extra_args = ["--max-feature-level", "1"]
        old.start()
        leader = cluster.leader()
        qh.wait_until(
            lambda: any(n["id"] == old.id and n["feature_level"] == 1
                        for n in leader.status()["nodes"]),
            20, "the pinned node to advertise level 1 again")
        self.assertEqual(cluster_level(leader), qh.FEATURE_LEVEL)
        self.assertEqual(json.loads(
            cluster.cli("status", "--json")[1])["feature_level"],
            qh.FEATURE_LEVEL)

    def test_add_refuses_a_node_below_the_cluster_level(self):
        """`qraft cluster add` probes the new node first: one whose binary
        applies less than the cluster's feature level (an older version)
        would stop at the first entry it cannot apply, so it is refused,
        naming both levels, and nothing changes."""
        cluster = qh.start_cluster(self, n=3)
        leader = cluster.leader()
        qh.wait_until(lambda: cluster_level(leader) == qh.FEATURE_LEVEL, 30,
                      f"the cluster to reach feature level {qh.FEATURE_LEVEL}")
        joiner = qh.JoiningNode(4, cluster, cluster.token,
                             extra_args=["--max-feature-level", "1"])
        self.addCleanup(joiner.cleanup)
        joiner.start(wait=False)
        qh.wait_until(lambda: joiner.healthz() is not None, 15,
                      "the joining node to listen")
        rc, _, err = cluster.cli("cluster", "add", "4", joiner.raft_addr,
                                 "--rpc", joiner.rpc_addr, check=False)
        self.assertNotEqual(rc, 0)
        self.assertIn("feature level 1 at most", err)
        self.assertIn(f"the cluster is at {qh.FEATURE_LEVEL}", err)
        self.assertIn("nothing was changed", err)
        _, out, _ = cluster.cli("status", "--json")
        self.assertEqual(sorted(n["id"] for n in json.loads(out)["nodes"]),
                         [1, 2, 3])

    def test_flow_control_waits_for_level_5(self):
        """Below feature level 5 a flow-controlled message is placed as an
        older node places it (sent without limits) and the flow control
        API's writes answer 503 naming the level; once every node runs
        level 5, a key's messages wait for its parallelism."""
        cluster = qh.Cluster(n=3)
        self.addCleanup(cluster.cleanup)
        old = cluster.nodes[2]
        old.extra_args = ["--max-feature-level", "4"]
        cluster.start()
        leader = cluster.leader()
        qh.wait_until(lambda: cluster_level(leader) == 4, 30,
                      "the cluster to reach feature level 4")
        sink = start_sink(self)
        sink.script("/slow", Reply(delay_s=0.3))

        def publish(node, n):
            for _ in range(n):
                status, _, body = qh.http_call(
                    node.http_addr, "POST",
                    f"/v2/publish/{sink.url('/slow')}", body=b"x",
                    token=cluster.token,
                    headers={"Upstash-Flow-Control-Key": "k",
                             "Upstash-Flow-Control-Value": "parallelism=1"})
                self.assertEqual(status, 200, body)

        publish(leader, 3)
        status, _, body = qh.http_call(
            leader.http_addr, "POST", "/v2/flowControl/k/pause",
            token=cluster.token)
        self.assertEqual(status, 503, body)
        self.assertIn("level 5", body["error"])
        sink.wait_for(3, "/slow", timeout=30)
        status, _, _ = qh.http_call(leader.http_addr, "GET",
                                    "/v2/flowControl/k", token=cluster.token)
        self.assertEqual(status, 404)  # no waitlist below level 5

        old.terminate()
        old.extra_args = []
        old.start()
        qh.wait_until(
            lambda: all(cluster_level(n) == qh.FEATURE_LEVEL
                        for n in cluster.nodes),
            30, f"every node to apply feature level {qh.FEATURE_LEVEL}")
        sink.clear()
        leader = cluster.leader()
        publish(leader, 5)
        got = sink.wait_for(5, "/slow", timeout=60)
        starts = sorted(r.time for r in got)
        gaps = [b - a for a, b in zip(starts, starts[1:])]
        # One at a time: each starts once the one before was answered.
        self.assertTrue(all(g >= 0.25 for g in gaps), gaps)
        qh.wait_until(
            lambda: qh.http_call(leader.http_addr, "GET", "/v2/flowControl/k",
                                 token=cluster.token)[0] == 404,
            30, "the key's record to go with its last message")


if __name__ == "__main__":
    unittest.main()
