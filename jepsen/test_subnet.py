"""jepsen/run's subnet claim (issue 18.5): two runs on one host never pick
the same 10.77.N.0/24, and a run with none free is skipped. No root: the
locks live in a temporary dir and nothing is added to the host."""

import fcntl
import importlib.machinery
import importlib.util
import sys
import tempfile
import unittest
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.dont_write_bytecode = True


def load_run():
    loader = importlib.machinery.SourceFileLoader("jepsen_run",
                                                  str(HERE / "run"))
    spec = importlib.util.spec_from_loader("jepsen_run", loader)
    mod = importlib.util.module_from_spec(spec)
    loader.exec_module(mod)
    return mod


class ClaimSubnet(unittest.TestCase):
    def setUp(self):
        self.run = load_run()
        self.tmp = tempfile.TemporaryDirectory()
        self.run.SUBNET_LOCK_DIR = Path(self.tmp.name)
        # Far from what a real run on this host would hold.
        self.run.SUBNET_RANGE = range(200, 203)
        self.held = []

    def tearDown(self):
        for f in self.held:
            f.close()
        self.tmp.cleanup()

    def hold(self, n):
        """Another run's lock on 10.77.n (flock: per open file, so this
        process's own claim conflicts with it too)."""
        f = open(Path(self.tmp.name) / f"qraft-jepsen-10.77.{n}.lock", "w")
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self.held.append(f)

    def test_two_claims_get_two_subnets(self):
        a = self.run.claim_subnet()
        first = self.run.SUBNET
        b = self.run.claim_subnet()
        self.held += [a, b]
        self.assertEqual(first, "10.77.200")
        self.assertEqual(self.run.SUBNET, "10.77.201")
        self.assertEqual(self.run.HOST_IP, "10.77.201.254")

    def test_a_held_subnet_is_skipped(self):
        self.hold(200)
        self.held.append(self.run.claim_subnet())
        self.assertEqual(self.run.SUBNET, "10.77.201")

    def test_none_free_is_none(self):
        for n in self.run.SUBNET_RANGE:
            self.hold(n)
        self.assertIsNone(self.run.claim_subnet())

    def test_a_lock_dies_with_its_holder(self):
        self.hold(200)
        self.held.pop().close()
        self.held.append(self.run.claim_subnet())
        self.assertEqual(self.run.SUBNET, "10.77.200")


if __name__ == "__main__":
    unittest.main()
