"""A clean stop's mark does not outlive the next start, so a power loss
after it cannot make a node trust a store it wrote without syncs
(docs/architecture.md, "Storage": a clean stop keeps the store).

One --dev node with its data dir on tools/powerfs, where raft 0.22 keeps
no snapshot (no O_TMPFILE: the node warns): publishes, a clean stop, a
start that keeps the store, more publishes, then a power loss (SIGKILL,
and the disk drops what was not synced). The next start must not trust
the store: with no snapshot to restore it empties it and replays the
whole log, and serves every message it acknowledged. Needs root and
/dev/fuse: exits 77 (skipped) otherwise.

    QRAFT_BIN=$PWD/build/bin python3 tests/powerfs/test_clean_stop.py
"""

import os
import sys
import tempfile
import unittest
from pathlib import Path

sys.dont_write_bytecode = True
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))
import qraft_harness as qh  # noqa: E402
from powerfs import PowerFS, main  # noqa: E402

BIN = Path(os.environ.get("QRAFT_BIN", "build/bin")) / "qraft-powerfs"
EMPTIED = "fsm: the store was not closed cleanly and raft has no snapshot"


class CleanStopThenPowerLoss(unittest.TestCase):
    def setUp(self):
        tmp = tempfile.TemporaryDirectory(prefix="clean-stop-")
        self.addCleanup(tmp.cleanup)
        root = Path(tmp.name)
        # Seed 0 keeps none of the unsynced changes at power off: an
        # unlink of the mark without a directory fsync would come back.
        self.fs = PowerFS(BIN, root / "backing", root / "mnt",
                          log=root / "powerfs.log", seed=0)
        self.fs.mount()
        self.addCleanup(lambda: self.fs.running and self.fs.unmount())
        self.node = qh.DevNode()
        self.addCleanup(self.node.cleanup)  # runs before the unmount

        self.node.data_dir = self.fs.mount_point / "data"

    def publish(self, n):
        ids = []
        for _ in range(n):
            _, out, _ = self.node.cli("publish", "http://127.0.0.1:9/x",
                                      "--delay", "1h")
            ids.append(out.strip())
        return ids

    def log(self):
        return self.node.stderr_path.read_text(errors="replace")

    def test_power_loss_after_a_kept_store_empties_it(self):
        node = self.node
        node.start()
        self.assertIn("has no O_TMPFILE", self.log())
        acked = self.publish(20)
        node.terminate()
        node.start()
        self.assertNotIn(EMPTIED, self.log())  # kept: stopped cleanly
        acked += self.publish(20)  # in the raft log; the store unsynced

        node.kill9()
        self.fs.power_off()
        self.fs.mount()
        node.start()
        self.assertIn(EMPTIED, self.log())
        self.assertEqual(
            sorted(qh.list_all_ids(node, "ls", "--state", "pending")),
            sorted(acked))


if __name__ == "__main__":
    main(BIN)
