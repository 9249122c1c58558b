"""The benchmark smoke: every qraft-bench mode runs against a real qraftd
--dev, finishes without an error and says so in its summary line. Speed is
not checked here (docs/benchmarks.md holds the figures); a benchmark that
breaks is."""

import re
import unittest

import qraft_harness as qh

TIMEOUT = 120


def summary(out):
    """The key=value pairs of the last `summary:` line."""
    lines = [ln for ln in out.splitlines() if ln.startswith("summary: ")]
    if not lines:
        raise AssertionError(f"no summary line in:\n{out}")
    return dict(re.findall(r"(\w+)=(\S+)", lines[-1]))


class BenchSmokeTest(unittest.TestCase):
    def setUp(self):
        self.node = qh.start_dev_node(self)

    def bench(self, *args):
        _, out, _ = self.node.tool(
            "qraft-bench", *args, "--endpoints", self.node.rpc_addr,
            "--token", self.node.token, timeout=TIMEOUT)
        return summary(out)

    def test_publish(self):
        got = self.bench("publish", "-n", "2000", "-c", "64")
        self.assertEqual((got["ok"], got["failed"]), ("2000", "0"))

    def test_deliver(self):
        got = self.bench("deliver", "-n", "2000", "-c", "64")
        self.assertEqual(
            (got["ok"], got["failed"], got["missing"], got["duplicates"]),
            ("2000", "0", "0", "0"))

    def test_backlog(self):
        """Fills a backlog and reports the leader's view of it: every
        message pending, and the loop, memory and store figures."""
        got = self.bench("backlog", "-n", "3000", "-m", "500", "-c", "64")
        # The fill, both measured runs, and each run's first (untimed)
        # publish of its connection.
        self.assertGreaterEqual(int(got["pending"]), 4000)
        self.assertGreater(float(got["before_msgs_per_s"]), 0)
        self.assertGreater(float(got["after_msgs_per_s"]), 0)
        self.assertGreater(int(got["rss_bytes"]), 0)
        self.assertGreater(int(got["store_used_bytes"]), 0)
        self.assertIn("loop_stall_max_ms", got)

    def test_bad_arguments_are_refused(self):
        for args in (("backlog", "-m", "0"), ("publish", "-m", "5"),
                     ("nosuch",)):
            with self.subTest(args=args):
                rc, _, err = self.node.tool("qraft-bench", *args, check=False)
                self.assertEqual(rc, 2, err)


if __name__ == "__main__":
    unittest.main()
