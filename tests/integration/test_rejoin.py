"""A node rebuilt under its old id (docs/operations.md 8): removed, started
again with an empty data dir and --join, added back. The log it copies
still holds its earlier incarnation in the bootstrap configuration and that
incarnation's removal; it must not take the removal for its own and stop.
(It did, 50 to 200 ms after starting, when the cluster was under load: the
add then failed with "no connection to remote server available" and left
the node a spare. Found by the chaos suite's membership nemesis,
docs/chaos.md "Bugs found"; without the fix this test fails the same way.)"""

import json
import unittest

import qraft_harness as qh
from test_membership import JoiningNode, Load


def roles(cluster):
    _, out, _ = cluster.cli("status", "--json")
    return {n["id"]: n["role"] for n in json.loads(out)["nodes"]}


class RejoinTest(unittest.TestCase):
    def test_a_removed_node_comes_back_under_its_old_id(self):
        cluster = qh.start_cluster(self, n=3)
        # Some history before the removal (one entry per publish: one in
        # flight), for the new node to copy.
        cluster.node(1).tool("qraft-bench", "publish", "-n", "1500", "-c",
                             "1", "-s", "1024", "--endpoints",
                             cluster.endpoints, "--token", cluster.token)
        victim = cluster.followers()[0]

        # Right after an election raft may refuse a configuration change
        # for a moment; an operator retries, and so does the test.
        def removed():
            rc, _, err = cluster.cli("cluster", "remove", str(victim.id),
                                     check=False)
            self.assertIn(rc, (0, 1, 4), err)
            return victim.id not in roles(cluster)
        qh.wait_until(removed, 60, f"node {victim.id} to leave")
        self.assertEqual(victim.proc.wait(30), 0, "a removed node exits 0")
        victim.stopped_on_purpose = True
        cluster.nodes.remove(victim)

        # The same id and addresses again, an empty data dir, --join, then
        # add (docs/operations.md 8).
        again = JoiningNode(victim.id, cluster, cluster.token)
        again.raft_port = victim.raft_port
        again.rpc_port = victim.rpc_port
        again.http_port = victim.http_port
        self.addCleanup(again.cleanup)
        # Under load, as the chaos suite found it: the leader keeps
        # appending while the new node copies the log.
        load = Load(cluster)
        self.addCleanup(load.stop)
        load.start()
        load.wait_for_acks(200)
        again.start(wait=False)
        cluster.cli("cluster", "add", str(victim.id), again.raft_addr,
                    "--rpc", again.rpc_addr)
        cluster.nodes.append(again)
        again.wait_serving()
        self.assertEqual(roles(cluster)[victim.id], "voter")
        cluster.wait_caught_up(again)
        again.check_not_crashed()
        self.assertNotIn("was removed from the cluster",
                         again.stderr_tail(200))

        # A restart replays that same history from its own log.
        cluster.restart(again, kill=True)
        cluster.wait_caught_up(again)
        again.check_not_crashed()
        self.assertEqual(roles(cluster)[victim.id], "voter")

        # And a removal of this incarnation still stops it.
        qh.wait_until(removed, 60, f"node {victim.id} to leave again")
        self.assertEqual(again.proc.wait(30), 0, "a removed node exits 0")
        again.stopped_on_purpose = True


if __name__ == "__main__":
    unittest.main()
