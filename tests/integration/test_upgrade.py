"""Rolling upgrades and feature levels: the cluster's feature level is the
lowest level its members advertise, so a command kind that an older member
would not understand is never proposed while such a member is in the
cluster. A node pinned with --max-feature-level stands in for a node that
still runs the older version."""

import json
import unittest

import qraft_harness as qh


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


if __name__ == "__main__":
    unittest.main()
