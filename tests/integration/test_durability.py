"""An acknowledged publish is never lost: real qraftd, real LMDB and raft
files, real kill -9.

Publishes go through libqraft (qraft-bench, which writes every acknowledged
id to a file); after the node is killed and restarted, every acknowledged
id must be stored exactly once.
"""

import subprocess
import unittest

import qraft_harness as qh

N_MESSAGES = 10_000


class DurabilityTest(unittest.TestCase):
    def setUp(self):
        self.node = qh.start_dev_node(self)
        self.ids_file = self.node.dir / "acked-ids.txt"

    def bench_argv(self, n):
        return [
            qh.binary("qraft-bench"), "publish",
            "-n", n, "-c", 64, "-s", 256,
            "--endpoints", self.node.endpoints,
            "--token", self.node.token,
            "--delay", "1h",
            "--ids-out", self.ids_file,
        ]

    def acked_ids(self):
        ids = self.ids_file.read_text().split()
        self.assertEqual(len(ids), len(set(ids)), "an id was acked twice")
        return ids

    def assert_all_stored_once(self, acked, what):
        stored = qh.list_all_ids(self.node, "ls", "--state", "pending")
        self.assertEqual(len(stored), len(set(stored)),
                         f"{what}: a message is listed twice")
        missing = sorted(set(acked) - set(stored))
        self.assertEqual(
            missing, [],
            f"{what}: {len(missing)} acknowledged messages are missing, "
            f"e.g. {missing[:3]}")
        return stored

    def test_ten_thousand_publishes_survive_kill9(self):
        qh.run(self.bench_argv(N_MESSAGES), timeout=300)
        acked = self.acked_ids()
        # The bench's first publish finds the leader; it is not timed but
        # it is acknowledged, so it is listed too.
        self.assertEqual(len(acked), N_MESSAGES + 1)

        self.node.restart(kill=True)
        stored = self.assert_all_stored_once(acked, "after kill -9")
        self.assertEqual(len(stored), len(acked), "nothing extra was stored")
        for message_id in acked[:: N_MESSAGES // 5]:
            _, out, _ = self.node.cli("get", message_id)
            self.assertIn("pending", out)

    def test_kill9_under_load_loses_no_acknowledged_publish(self):
        """The node dies while publishes are in flight: every publish that
        was acknowledged before the kill is there after the restart (the
        ones in flight may or may not be: their outcome was never known)."""
        argv = [str(a) for a in self.bench_argv(10 * N_MESSAGES)]
        bench = subprocess.Popen(argv, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.PIPE, text=True)
        try:
            qh.wait_until(
                lambda: self.ids_file.exists()
                and self.ids_file.stat().st_size > 2000 * 30,
                60, "2000 acknowledged publishes")
            self.node.kill9()
            _, err = bench.communicate(timeout=120)
        finally:
            if bench.poll() is None:
                bench.kill()
                bench.wait()
        self.assertNotEqual(bench.returncode, 0,
                            "the bench saw no failure although the node died")
        acked = self.acked_ids()
        self.assertGreaterEqual(len(acked), 2000, err)

        self.node.start()
        self.assert_all_stored_once(acked, "after kill -9 under load")


if __name__ == "__main__":
    unittest.main()
