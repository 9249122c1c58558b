"""A 3-node cluster of real qraftd processes on loopback: elections, clients
that find the leader, kill -9 of the leader under publish load and during
deliveries, a follower that falls behind and catches up (by log and by
snapshot), and a whole-cluster kill -9.

Acknowledged publishes come from qraft-bench --ids-out (one id per line,
written when the publish was acknowledged; `-n N` acknowledges N + 1: the
first, blocking publish finds the leader); the bench may exit non-zero
when its leader dies under it, which is expected: the ids file is what
counts. Reads (`qraft ls`, `get`, `status`) are served by the node asked,
so each node's copy is checked by asking it alone.
"""

import json
import signal
import subprocess
import sys
import time
import unittest

import qraft_harness as qh
from http_sink import HttpSink, Reply, quiet_disconnects

ID_LINE_BYTES = len("msg_") + 24 + 1  # an id and its newline
BENCH_TIMEOUT = 300.0


def report(text):
    """A figure worth seeing in the test log (ctest --output-on-failure
    shows it with -V)."""
    print(f"\n  test_cluster: {text}", file=sys.stderr, flush=True)


class ClusterTest(unittest.TestCase):
    def setUp(self):
        self.cluster = qh.start_cluster(self)

    # Helpers.
    def bench_argv(self, ids_file, n, in_flight, *extra):
        return [
            str(a)
            for a in (
                qh.binary("qraft-bench"), "publish",
                "-n", n, "-c", in_flight,
                "--endpoints", self.cluster.endpoints,
                "--token", self.cluster.token,
                "--ids-out", ids_file,
                *extra,
            )
        ]

    def start_bench(self, ids_file, n, in_flight, *extra):
        """qraft-bench publish in the background; its output goes to files
        next to ids_file."""
        out = open(f"{ids_file}.stdout", "w")
        err = open(f"{ids_file}.stderr", "w")
        self.addCleanup(out.close)
        self.addCleanup(err.close)
        proc = subprocess.Popen(
            self.bench_argv(ids_file, n, in_flight, *extra),
            stdin=subprocess.DEVNULL, stdout=out, stderr=err)

        def stop():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        self.addCleanup(stop)
        return proc

    def wait_bench(self, proc, ids_file):
        """Waits for the bench to exit; returns (exit code, its stderr)."""
        try:
            rc = proc.wait(BENCH_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            self.fail(f"qraft-bench did not finish within {BENCH_TIMEOUT:g}s"
                      f"{self.cluster._log_hint()}")
        with open(f"{ids_file}.stderr") as f:
            return rc, f.read()

    def wait_acks(self, ids_file, count, proc, timeout=60):
        """Waits until ids_file holds about count ids (the bench writes it
        through a stdio buffer: it lags by at most 4 KiB)."""
        def enough():
            if proc.poll() is not None:
                raise qh.HarnessError(
                    f"qraft-bench exited {proc.returncode} before {count} "
                    "acknowledgements")
            return (ids_file.exists()
                    and ids_file.stat().st_size >= count * ID_LINE_BYTES)
        qh.wait_until(enough, timeout, f"{count} acknowledged publishes")

    def acked_ids(self, *ids_files):
        ids = []
        for path in ids_files:
            ids.extend(path.read_text().split())
        self.assertEqual(len(ids), len(set(ids)), "an id was acked twice")
        return ids

    def stored_pending(self, node):
        """Every pending message id node itself lists; asserts none twice."""
        ids = qh.list_all_ids(node, "ls", "--state", "pending")
        self.assertEqual(len(ids), len(set(ids)),
                         f"{node.name} lists a message twice")
        return ids

    def assert_has_all(self, stored, acked, what):
        missing = sorted(set(acked) - set(stored))
        self.assertEqual(
            missing, [],
            f"{what}: {len(missing)} of {len(acked)} acknowledged messages "
            f"are missing, e.g. {missing[:3]}")

    def get_json(self, node, message_id):
        _, out, _ = node.cli("get", message_id, "--json")
        return json.loads(out)

    # a.
    def test_elects_one_leader_every_node_agrees(self):
        leader = self.cluster.leader()
        statuses = {n.id: n.status() for n in self.cluster.nodes}
        for node_id, s in statuses.items():
            with self.subTest(node=node_id):
                self.assertEqual(s["node_id"], node_id)
                self.assertEqual(s["leader_id"], leader.id)
                role = "leader" if node_id == leader.id else "follower"
                self.assertEqual(s["state"], role)
                voters = sorted((m["id"], m["raft"]) for m in s["nodes"]
                                if m["role"] == "voter")
                self.assertEqual(
                    voters,
                    [(n.id, n.raft_addr) for n in self.cluster.nodes],
                    "every node lists the 3 voters with their raft addresses")
                self.assertEqual(len(s["nodes"]), 3)
        self.assertEqual(len({s["term"] for s in statuses.values()}), 1,
                         f"one term: {statuses}")

    # b.
    def test_cli_finds_the_leader_behind_followers(self):
        leader = self.cluster.leader()
        followers = self.cluster.followers()
        orders = [
            [followers[0], leader, followers[1]],
            [followers[0], followers[1], leader],
        ]
        published = []
        for order in orders:
            endpoints = ",".join(n.rpc_addr for n in order)
            for _ in range(3):
                _, out, _ = self.cluster.cli(
                    "publish", "http://127.0.0.1:9/b", "--delay", "1h",
                    endpoints=endpoints)
                published.append(out.strip())
        self.assertEqual(len(set(published)), len(published))
        stored = self.stored_pending(leader)
        self.assertEqual(sorted(stored), sorted(published),
                         "each publish stored once")

    # c.
    def test_leader_kill9_under_load_loses_no_acknowledged_publish(self):
        old = self.cluster.leader()
        ids_file = self.cluster.nodes[0].dir / "acked.txt"
        bench = self.start_bench(ids_file, 20_000, 64, "--delay", "1h")
        self.wait_acks(ids_file, 2000, bench)
        old.kill9()
        new = self.cluster.leader()
        self.assertIsNot(new, old)
        self.cluster.restart(old)
        rc, err = self.wait_bench(bench, ids_file)
        acked = self.acked_ids(ids_file)
        report(f"leader kill -9 under load: bench exit {rc}, "
               f"{len(acked)} acknowledged")
        self.assertGreaterEqual(len(acked), 2000, err)

        stored = self.stored_pending(self.cluster.leader())
        self.assert_has_all(stored, acked, "on the new leader")
        extra = len(stored) - len(acked)
        report(f"stored but never acknowledged (in flight at the kill): "
               f"{extra}")
        self.assertLessEqual(
            extra, 64, "more unacknowledged messages stored than were ever "
            "in flight: a publish was stored twice")

        for node in self.cluster.nodes:
            with self.subTest(node=node.name):
                self.cluster.wait_caught_up(node)
                self.assertEqual(sorted(self.stored_pending(node)),
                                 sorted(stored),
                                 f"{node.name} holds the leader's messages")

    # d.
    def test_deliveries_continue_after_a_leader_kill9(self):
        """Half the messages are published and being delivered when the
        leader dies; the other half go through the new leader. Every one
        reaches the sink; only the first half may arrive twice."""
        sink = quiet_disconnects(HttpSink()).start()
        self.addCleanup(sink.stop)
        # Slow answers keep deliveries in flight when the leader dies.
        sink.script("/d", Reply(200, delay_s=0.2))
        url = sink.url("/d")
        base = self.cluster.nodes[0].dir
        ids_before = base / "acked-before.txt"
        ids_after = base / "acked-after.txt"

        qh.run(self.bench_argv(ids_before, 100, 8, "-s", 64, "--delay", "0s",
                               "--url", url), timeout=BENCH_TIMEOUT)
        before = self.acked_ids(ids_before)
        sink.wait_for(10, path="/d", timeout=30)
        old = self.cluster.kill_leader()
        arrived_at_kill = len(sink.requests(path="/d"))
        self.cluster.leader()
        qh.run(self.bench_argv(ids_after, 100, 8, "-s", 64, "--delay", "0s",
                               "--url", url), timeout=BENCH_TIMEOUT)
        self.cluster.restart(old)
        acked = self.acked_ids(ids_before, ids_after)
        self.assertEqual(len(acked), 2 * (100 + 1))

        def missing():
            got = {r.header("Upstash-Message-Id")
                   for r in sink.requests(path="/d")}
            return set(acked) - got
        qh.wait_until(
            lambda: not missing(), 120,
            lambda: f"every acknowledged message at the sink ("
            f"{len(missing())} missing){self.cluster._log_hint()}")

        def all_delivered():
            counts = self.cluster.leader().status()["messages"]
            return counts.get("delivered") == len(acked)
        qh.wait_until(all_delivered, 60, "every delivery's result committed")

        reqs = sink.requests(path="/d")
        sent = [r.header("Upstash-Message-Id") for r in reqs]
        dups = len(sent) - len(set(sent))
        dups_after = sum(sent.count(i) - 1 for i in set(sent) - set(before))
        report(f"deliveries across a leader kill -9: {len(reqs)} requests "
               f"for {len(acked)} messages, {dups} duplicates ({dups_after} "
               f"of messages published after the kill; {arrived_at_kill} "
               "requests had arrived at the kill)")
        self.assertLessEqual(
            dups, len(before),
            "only deliveries in flight at the kill may be sent twice")

    # e.
    def test_follower_killed_catches_up_by_log(self):
        follower = self.cluster.followers()[0]
        follower.kill9()
        ids_file = follower.dir / "acked.txt"
        qh.run(self.bench_argv(ids_file, 500, 16, "-s", 256,
                               "--delay", "1h"), timeout=BENCH_TIMEOUT)
        acked = self.acked_ids(ids_file)
        self.assertEqual(len(acked), 500 + 1)

        self.cluster.restart(follower)
        self.cluster.wait_caught_up(follower)
        self.assert_has_all(self.stored_pending(follower), acked,
                            f"{follower.name} after catching up")


class LeaderlessWritesTest(unittest.TestCase):
    def test_a_write_during_an_election_waits_for_the_new_leader(self):
        """The leader is paused (SIGSTOP: its connections stay open) and
        REST publishes go to one follower, one after another. The one the
        follower forwarded to the paused leader is answered once the
        follower gives that leader up (504: the outcome is unknown). The
        next waits on the follower through the election (no leader known,
        then the new leader's address not applied yet, then the new
        leader's first barrier) instead of a 503 that would send its
        client elsewhere, and is published by the new leader."""
        cluster = qh.start_cluster(self)
        leader = cluster.leader()
        follower = cluster.followers()[0]
        answers = []
        leader.proc.send_signal(signal.SIGSTOP)
        try:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                status, _, body = qh.http_call(
                    follower.http_addr, "POST",
                    "/v2/publish/http://127.0.0.1:9/x", body="b",
                    token=cluster.token, headers={"Upstash-Delay": "1h"},
                    timeout=10)
                answers.append((status, body))
                if status == 200:
                    break
        finally:
            leader.proc.send_signal(signal.SIGCONT)
        self.assertEqual(answers[-1][0], 200, answers[:4])
        self.assertLessEqual(len(answers), 2, answers[:4])
        for status, body in answers[:-1]:
            self.assertEqual(status, 504, answers[:4])
            self.assertIn("may or may not have been applied", body["error"])


class SnapshotCatchUpTest(unittest.TestCase):
    """A follower so far behind that the leader no longer has the entries
    it misses is sent a snapshot."""

    def setUp(self):
        self.cluster = qh.start_cluster(
            self, extra_args=("--snapshot-threshold", "64"))

    def test_follower_killed_catches_up_by_snapshot(self):
        follower = self.cluster.followers()[0]
        follower.kill9()
        ids_file = follower.dir / "acked.txt"
        # One publish in flight: one raft entry each, far more than the
        # snapshot threshold and trailing entries (64 each).
        qh.run([qh.binary("qraft-bench"), "publish", "-n", 600, "-c", 1,
                "-s", 64, "--endpoints", self.cluster.endpoints,
                "--token", self.cluster.token, "--delay", "1h",
                "--ids-out", ids_file], timeout=BENCH_TIMEOUT)
        acked = ids_file.read_text().split()
        self.assertEqual(len(acked), 600 + 1)

        self.cluster.restart(follower)
        status = self.cluster.wait_caught_up(follower)
        self.assertIn("restored a snapshot",
                      follower.stderr_path.read_text(errors="replace"),
                      "the follower was caught up by a snapshot")
        stored = qh.list_all_ids(follower, "ls", "--state", "pending")
        self.assertEqual(sorted(stored), sorted(acked))
        self.assertGreaterEqual(status["applied_index"], 600)


class WholeClusterRestartTest(unittest.TestCase):
    def setUp(self):
        self.sink = HttpSink().start()
        self.addCleanup(self.sink.stop)
        self.cluster = qh.start_cluster(self)

    # f.
    def test_kill9_of_every_node_during_delivery_sends_again(self):
        self.sink.script("/hang", Reply(hang=True), Reply(200))
        _, out, _ = self.cluster.cli("publish", self.sink.url("/hang"),
                                     "--timeout", "60s")
        message_id = out.strip()
        self.sink.wait_for(1, path="/hang", timeout=30)

        self.cluster.kill9_all()
        self.cluster.start()
        leader = self.cluster.leader()
        reqs = self.sink.wait_for(2, path="/hang", timeout=60)
        self.assertEqual(reqs[1].header("Upstash-Message-Id"), message_id)
        # The first attempt's result was never committed: the re-send is
        # attempt 0 again.
        self.assertEqual(reqs[1].header("Upstash-Retried"), "0")

        def delivered():
            return self.get_state(leader, message_id) == "delivered"
        qh.wait_until(delivered, 30, f"{message_id} delivered")
        for node in self.cluster.nodes:
            self.cluster.wait_caught_up(node)
            self.assertEqual(self.get_state(node, message_id), "delivered",
                             f"{node.name}'s copy")

    def get_state(self, node, message_id):
        _, out, _ = node.cli("get", message_id, "--json")
        return json.loads(out)["state"]


if __name__ == "__main__":
    unittest.main()
