"""A node that cannot commit stops starting deliveries (docs/architecture.md,
"The lease rule"): real qraftd processes, a real HTTP sink, real kill -9.

Three nodes deliver 2,000 messages to a sink that answers slowly (so
deliveries stay in flight); two of them are killed -9 while deliveries flow
(the leader and a follower; or both followers). The survivor can commit
nothing (no majority): it must stop starting deliveries, so what reaches the
sink after the kill is bounded by what the survivor had running then (at
most the delivery engine's per-destination cap,
QR_DELIVERY_DEFAULT_MAX_PER_HOST), not by how much is due. Then the two come
back and every message arrives at least once; the duplicates are reported
(docs/chaos.md records the figures).
"""

import subprocess
import sys
import time
import unittest

import qraft_harness as qh
from http_sink import HttpSink, Reply, quiet_disconnects

N_MESSAGES = 2000
# node/delivery.h QR_DELIVERY_DEFAULT_MAX_PER_HOST: transfers one node runs
# at once to one destination (the sink is one).
MAX_PER_HOST = 32
# node/shards.c LEASE_MS: the longest a lease runs without renewal.
LEASE_S = 3.0
SINK_DELAY_S = 0.25


def report(text):
    print(f"\n  test_lease: {text}", file=sys.stderr, flush=True)


class LeaseTest(unittest.TestCase):
    def setUp(self):
        self.cluster = qh.start_cluster(self)
        self.sink = quiet_disconnects(HttpSink()).start()
        self.addCleanup(self.sink.stop)
        self.sink.script("/d", Reply(200, delay_s=SINK_DELAY_S))

    def wait_shards_spread(self):
        """Every node owns shards, so the survivor is delivering too."""
        def spread():
            nodes = self.cluster.leader().status().get("nodes", [])
            return (len(nodes) == 3
                    and all(n.get("shards", 0) > 0 for n in nodes))
        qh.wait_until(spread, 30, "the leader to assign shards to all nodes")

    def kill_two_and_count(self, survivor, victims, stop_line, bound, why):
        """Publishes N_MESSAGES, kills victims together once deliveries
        flow, waits until survivor logs stop_line and the sink has been
        quiet for 1 s, asserts at most bound requests arrived after the
        kill; then restarts the victims and checks every message arrives.
        Returns (after the kill, duplicates)."""
        ids_file = self.cluster.nodes[0].dir / "acked.txt"
        qh.run([qh.binary("qraft-bench"), "publish", "-n", N_MESSAGES - 1,
                "-c", 64, "-s", 64, "--delay", "0s",
                "--url", self.sink.url("/d"),
                "--endpoints", self.cluster.endpoints,
                "--token", self.cluster.token, "--ids-out", ids_file],
               timeout=120)
        acked = ids_file.read_text().split()
        self.assertEqual(len(acked), N_MESSAGES)

        # Deliveries flow (far from done: 3 nodes x 32 at a time, each
        # answered slowly), then two nodes die together.
        self.sink.wait_for(300, path="/d", timeout=30)
        for node in victims:
            node.kill9()
        killed_at = time.time()
        arrived_at_kill = len(self.sink.requests(path="/d"))

        # The survivor's lease ends (at once when its reports fail, at the
        # latest when it lapses); then nothing new may reach the sink.
        qh.wait_until(
            lambda: stop_line in survivor.stderr_path.read_text(
                errors="replace"),
            LEASE_S + 2, f"{survivor.name} to log {stop_line!r}")

        def quiet_for(seconds):
            reqs = self.sink.requests(path="/d")
            return not reqs or time.time() - reqs[-1].time >= seconds
        qh.wait_until(lambda: quiet_for(1.0), LEASE_S + 5,
                      "the sink to hear nothing for 1 s")
        after = [r for r in self.sink.requests(path="/d")
                 if r.time > killed_at]
        report(f"{len(after)} deliveries reached the sink after the kill "
               f"({arrived_at_kill} before it, of {N_MESSAGES})")
        self.assertLessEqual(len(after), bound, why)
        self.assertLess(arrived_at_kill, N_MESSAGES - bound,
                        "the kill came too late to test anything")

        # Back to a majority: every message arrives, none is lost.
        self.cluster.start(victims)

        def missing():
            got = {r.header("Upstash-Message-Id")
                   for r in self.sink.requests(path="/d")}
            return set(acked) - got
        qh.wait_until(lambda: not missing(), 60,
                      lambda: f"every message at the sink "
                      f"({len(missing())} missing)"
                      f"{self.cluster._log_hint()}")

        def all_delivered():
            counts = self.cluster.leader().status()["messages"]
            return counts.get("delivered") == len(acked)
        qh.wait_until(all_delivered, 30, "every result committed")
        sent = [r.header("Upstash-Message-Id")
                for r in self.sink.requests(path="/d")]
        dups = len(sent) - len(set(sent))
        report(f"{len(sent)} requests for {len(acked)} messages: {dups} "
               "duplicates")
        return len(after), dups

    def test_follower_without_majority_stops_starting_deliveries(self):
        """The leader and a follower die: the survivor, a follower, learns
        at once (its connection to the leader drops) and starts nothing
        more; what arrives later is what it had running at the kill."""
        self.wait_shards_spread()
        leader = self.cluster.leader()
        follower, survivor = self.cluster.followers()
        self.kill_two_and_count(
            survivor, [leader, follower], "stopped dispatching",
            MAX_PER_HOST,
            "a follower that cannot commit went on starting deliveries")

    def test_leader_without_majority_stops_starting_deliveries(self):
        """Both followers die: the survivor, the leader, cannot commit. It
        learns when its results stop committing (node/shards.c
        RESULT_STALL_MS, 0.3 s), before raft deposes it (1 to 2 election
        timeouts). The sink answers after 0.4 s, so within that time each
        of the (at most 32) transfers running at the kill frees its slot
        at most once: at most one request per slot arrives after the kill
        (the one running then, or the one that took its slot)."""
        self.sink.script("/d", Reply(200, delay_s=0.4))
        self.wait_shards_spread()
        survivor = self.cluster.leader()
        victims = self.cluster.followers()
        self.kill_two_and_count(
            survivor, victims, "stopped dispatching", MAX_PER_HOST,
            "a leader that cannot commit went on starting deliveries")

if __name__ == "__main__":
    unittest.main()
