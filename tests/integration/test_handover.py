"""Planned moves send nothing twice: every step an operator takes on
purpose (the first spread of shards, a node joining, a SIGTERM of a
follower or of the leader, `qraft cluster transfer`) hands a shard over
only once what its old owner had running has finished and its result is
committed. Measured under a steady publish load to a destination that
answers in 0.4 s, so that deliveries are always in flight: every
acknowledged message arrives, and none arrives twice."""

import unittest

import qraft_harness as qh
from http_sink import quiet_disconnects, start_sink
from steady_load import SteadyLoad


class HandoverTest(unittest.TestCase):
    def test_planned_steps_send_nothing_twice(self):
        sink = start_sink(self)
        quiet_disconnects(sink)  # the nodes killed at cleanup hang up
        cluster = qh.Cluster(n=3)
        self.addCleanup(cluster.cleanup)
        cluster.start()
        cluster.leader()
        load = SteadyLoad(cluster, sink, delay_s=0.4)
        self.addCleanup(load.stop)

        with load.step("first spread of the shards"):
            load.start()
            cluster.wait_shards_spread([1, 2, 3], "the shards to spread")
            load.wait_for_acks(50)

        with load.step("node 4 joins (rebalance)"):
            cluster.join(4)
            cluster.wait_shards_spread([1, 2, 3, 4], "node 4 to get shards")
            load.wait_for_acks(50)

        def stop_and_start(node, name):
            with load.step(name):
                node.terminate()
                others = [n.id for n in cluster.nodes if n is not node]
                cluster.wait_shards_spread(others, "its shards to move")
                load.wait_for_acks(50)
                node.start()
                cluster.wait_shards_spread([1, 2, 3, 4],
                                           "it to get shards again")
                load.wait_for_acks(50)

        leader = cluster.leader()
        follower = next(n for n in cluster.nodes if n is not leader)
        stop_and_start(follower, f"SIGTERM follower {follower.id}, restart")
        stop_and_start(leader, f"SIGTERM leader {leader.id}, restart")

        target = next(n for n in cluster.nodes if n is not cluster.leader())
        with load.step(f"cluster transfer to {target.id}"):
            def moved():
                rc, _, err = cluster.cli("cluster", "transfer",
                                         str(target.id), check=False)
                self.assertIn(rc, (0, 4), err)
                return cluster.leader().id == target.id
            qh.wait_until(moved, 60, f"leadership to move to {target.id}")
            load.wait_for_acks(100)

        load.stop()
        report = load.settle()
        print(f"\nacked {report['acked']}, delivered {report['delivered']}, "
              f"publish failures {dict(load.failures)}\n{load.table()}")
        cluster.check_not_crashed()
        self.assertEqual(report["lost"], [])
        self.assertEqual(report["duplicates"], {})


if __name__ == "__main__":
    unittest.main()
