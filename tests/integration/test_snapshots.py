"""Raft snapshots on a real 3-node cluster: a follower so far behind that
the leader no longer has the entries it misses is sent a snapshot. At
feature level 3 (image snapshots) the snapshot is a page image of the
store, restored by swapping the store's file; below it (a member that
advertises less) the leader keeps the pairs format that every version
restores, so no image reaches a node that could not restore it."""

import os
import re
import unittest
from unittest import mock

import qraft_harness as qh

BENCH_TIMEOUT = 300.0
IMAGE_LEVEL = 3  # QR_FEATURE_LEVEL_IMAGE_SNAPSHOTS in node/command.h
# Messages of 1 KiB for a snapshot of ~300 MB: its install outlasts many
# heartbeats.
N_LARGE = 100000


def cluster_level(node):
    return node.status()["feature_level"]


class SnapshotFormatTest(unittest.TestCase):
    def catch_up_by_snapshot(self, cluster, level):
        qh.wait_until(
            lambda: all(cluster_level(n) == level for n in cluster.nodes),
            30, f"every node to apply feature level {level}")
        leader = cluster.leader()
        follower = cluster.followers()[0]
        follower.kill9()
        ids_file = follower.dir / "acked.txt"
        # One publish in flight: one raft entry each, far more than the
        # snapshot threshold and trailing entries (64 each).
        qh.run([qh.binary("qraft-bench"), "publish", "-n", 600, "-c", 1,
                "-s", 256, "--endpoints", cluster.endpoints,
                "--token", cluster.token, "--delay", "1h",
                "--ids-out", ids_file], timeout=BENCH_TIMEOUT)
        acked = ids_file.read_text().split()
        self.assertEqual(len(acked), 600 + 1)

        cluster.restart(follower)
        status = cluster.wait_caught_up(follower)
        self.assertGreaterEqual(status["applied_index"], 600)
        stored = qh.list_all_ids(follower, "ls", "--state", "pending")
        self.assertEqual(sorted(stored), sorted(acked))
        # The swap leaves nothing behind.
        self.assertFalse((follower.data_dir / "state" / "restore").exists())
        return (leader.stderr_path.read_text(errors="replace"),
                follower.stderr_path.read_text(errors="replace"), follower)

    def test_lagging_follower_catches_up_by_image(self):
        # Under tests/run.sh --asan, libraft 0.22.1 keeps the buffers it
        # received an image snapshot's InstallSnapshot payload into (2 x the
        # snapshot, allocated and held inside the library, never handed to
        # qraft) until exit, and LeakSanitizer fails the node. That is left
        # to find in raft; leak checking is off for this test's nodes only,
        # and every other report (memory errors, UB) still fails it.
        asan = os.environ.get("ASAN_OPTIONS")
        if asan is not None:
            self.enterContext(mock.patch.dict(
                os.environ, {"ASAN_OPTIONS": asan + ":detect_leaks=0"}))
        cluster = qh.start_cluster(
            self, extra_args=("--snapshot-threshold", "64"))
        self.assertGreaterEqual(qh.FEATURE_LEVEL, IMAGE_LEVEL)
        leader_log, follower_log, follower = self.catch_up_by_snapshot(
            cluster, qh.FEATURE_LEVEL)
        self.assertIn("(image)", leader_log)
        self.assertNotIn("(pairs)", leader_log)
        self.assertIn("fsm: restored a snapshot (image)", follower_log)

        # The restored store goes on: a write lands on it, and it survives
        # a restart (which restores the node's own last snapshot again).
        _, out, _ = cluster.cli("publish", "http://127.0.0.1:9/after",
                                "--delay", "1h")
        new_id = out.strip()
        qh.wait_until(
            lambda: new_id in qh.list_all_ids(follower, "ls", "--state",
                                              "pending"),
            30, "the follower to apply a publish after the restore")
        cluster.restart(follower)
        cluster.wait_caught_up(follower)
        self.assertIn(new_id,
                      qh.list_all_ids(follower, "ls", "--state", "pending"))

    def test_below_the_image_level_snapshots_keep_the_pairs_format(self):
        # Every node advertises level 2, as nodes of an older version would.
        cluster = qh.start_cluster(
            self, extra_args=("--snapshot-threshold", "64",
                              "--max-feature-level", "2"))
        leader_log, follower_log, _ = self.catch_up_by_snapshot(cluster, 2)
        self.assertIn("(pairs)", leader_log)
        self.assertNotIn("(image)", leader_log)
        self.assertIn("fsm: restored a snapshot (pairs)", follower_log)


    def test_a_large_install_is_sent_once_with_one_copy_in_memory(self):
        """A follower that needs a snapshot of a hundred MB or more gets one
        copy. libraft 0.22.1 starts an install over at each heartbeat the
        follower rejects while still installing, and loads another copy of
        the snapshot into the leader's memory each time: with a few GB of
        state the leader ran out of memory (node/repl/snapsend.h)."""
        asan = os.environ.get("ASAN_OPTIONS")
        if asan is not None:  # libraft's own leak: see the image test
            self.enterContext(mock.patch.dict(
                os.environ, {"ASAN_OPTIONS": asan + ":detect_leaks=0"}))
        # Snapshots every 1024 entries, and as many kept behind each: the
        # follower misses more than that, and nothing in the quiet cluster
        # makes it miss entries again during its install.
        # Entries only: the guard is tested with a snapshot that holds the
        # whole backlog (past 64 MiB a snapshot waits for log as well).
        cluster = qh.start_cluster(
            self, extra_args=("--snapshot-threshold", "1024",
                              "--snapshot-log-share", "0"))
        qh.wait_until(
            lambda: all(cluster_level(n) == qh.FEATURE_LEVEL
                        for n in cluster.nodes),
            30, "every node to apply the newest feature level")
        leader = cluster.leader()
        follower = cluster.followers()[0]
        follower.kill9()
        qh.run([qh.binary("qraft-bench"), "publish", "-n", N_LARGE, "-c",
                256, "-s", 1024, "--endpoints", leader.rpc_addr, "--token",
                cluster.token], timeout=BENCH_TIMEOUT)
        # One entry each: past the threshold and the trailing entries, so
        # the leader no longer has what the follower misses.
        qh.run([qh.binary("qraft-bench"), "publish", "-n", 2500, "-c", 1,
                "-s", 64, "--endpoints", leader.rpc_addr, "--token",
                cluster.token], timeout=BENCH_TIMEOUT)
        st = leader.status()
        target = st["commit_index"]
        base_rss = peak_rss = st["rss_bytes"]
        follower.start(wait=False)

        def caught_up():
            nonlocal peak_rss
            cluster.check_not_crashed()
            peak_rss = max(peak_rss, leader.status()["rss_bytes"])
            s = follower.try_status()
            return s is not None and s["applied_index"] >= target

        qh.wait_until(caught_up, BENCH_TIMEOUT, "the follower to catch up")
        # Once, or twice when the leader took a newer snapshot while the
        # first was on its way and the follower missed entries again.
        restored = re.findall(
            r"fsm: restored a snapshot \(image\) of (\d+) bytes",
            follower.stderr_path.read_text(errors="replace"))
        self.assertIn(len(restored), (1, 2), restored)
        size = max(int(n) for n in restored)
        self.assertGreater(size, 50 * 1024 * 1024)
        # Without the guard: 2.1-2.6 GB for a 270 MB snapshot here.
        self.assertLess(peak_rss - base_rss, 2 * size,
                        f"leader rss grew from {base_rss} to {peak_rss}")
        sends = re.findall(r"sent a snapshot of (\d+) bytes",
                           leader.stderr_path.read_text(errors="replace"))
        # One per install, and one more if an install outlived its hold on
        # a slow machine; without the guard, one per heartbeat of it.
        self.assertIn(len(sends), range(len(restored), len(restored) + 2),
                      sends)
        pending = follower.status()["messages"]["pending"]
        self.assertGreaterEqual(pending, N_LARGE + 2500)


class SnapshotPacingTest(unittest.TestCase):
    def test_a_large_store_is_not_written_every_threshold_entries(self):
        """An image snapshot writes the whole store. Past 64 MiB of store a
        snapshot also waits until the log since the last one holds half
        the store's size (--snapshot-log-share 50), so a large store is
        not written again every --snapshot-threshold entries."""
        node = qh.start_dev_node(
            self, extra_args=("--snapshot-threshold", "16"))
        # 1 KiB messages, a few per entry: well past 64 MiB of store.
        node.tool("qraft-bench", "publish", "-n", 50000, "-c", 8, "-s", 1024,
                  "--delay", "1h", "--endpoints", node.rpc_addr, "--token",
                  node.token, timeout=BENCH_TIMEOUT)
        self.assertGreater(qh.metric(node, "qraft_store_file_bytes"),
                           100 * 1024**2)
        # (raft index, image bytes, bytes of log waited for), in order.
        snaps = [tuple(map(int, m)) for m in re.findall(
            r"snapshot at index (\d+) \(image\): (\d+) bytes in \d+ "
            r"buffers, \d+ ms; (\d+) bytes of log since the last",
            node.stderr_path.read_text())]
        self.assertEqual(len(snaps), qh.metric(node, "qraft_snapshots_total"))
        # Every 16 entries while the store is small; past 64 MiB only once
        # the log since the last one holds half the store beyond 64 MiB.
        large = [(i, size, log) for i, size, log in snaps
                 if size > 65 * 1024**2]
        self.assertTrue(large, snaps[-3:])
        for i, size, log in large:
            self.assertGreaterEqual(log, (size - 64 * 1024**2) // 2 * 0.9,
                                    (i, size, log))
        applied = qh.metric(node, "qraft_raft_applied_index")
        entries_after = applied - large[0][0]
        self.assertGreater(entries_after, 16 * 20)
        self.assertLess(len(large), entries_after / 16 / 4,
                        (entries_after, large))

class RestartTest(unittest.TestCase):
    def test_a_clean_stop_keeps_the_store_and_a_crash_restores(self):
        """A node restarts from its last snapshot and the log after it. After
        a clean stop (SIGTERM: the store synced and marked) it keeps its
        store instead, which holds that state already, and raft's replay
        skips what the store has; after kill -9 it restores the snapshot
        as before (a power loss could have left the unsynced store
        damaged)."""
        node = qh.start_dev_node(
            self, extra_args=("--snapshot-threshold", "16"))
        ids_file = node.dir / "acked.txt"
        # One publish in flight: one raft entry each, many snapshots.
        node.tool("qraft-bench", "publish", "-n", 200, "-c", 1, "-s", 64,
                  "--delay", "1h", "--endpoints", node.rpc_addr, "--token",
                  node.token, "--ids-out", ids_file, timeout=BENCH_TIMEOUT)
        acked = sorted(ids_file.read_text().split())
        self.assertGreater(qh.metric(node, "qraft_snapshots_total"), 0)
        mark = node.data_dir / "state" / "clean-stop"

        for how, kept in (("clean", True), ("kill -9", False),
                          ("clean", True)):
            _, out, _ = node.cli("publish", "http://127.0.0.1:9/restart",
                                 "--delay", "1h")
            acked = sorted(acked + [out.strip()])
            node.restart(kill=how == "kill -9")
            log = node.stderr_path.read_text(errors="replace")
            self.assertEqual("fsm: kept the store at index" in log, kept,
                             f"after a {how} stop:\n{log[-2000:]}")
            self.assertEqual("fsm: restored a snapshot" in log, not kept,
                             f"after a {how} stop:\n{log[-2000:]}")
            self.assertFalse(mark.exists(), "the mark outlived the start")
            self.assertEqual(
                sorted(qh.list_all_ids(node, "ls", "--state", "pending")),
                acked, f"after a {how} stop")

    def test_without_a_snapshot_a_crash_replays_the_whole_log(self):
        """With no snapshot to restore, a store that was not closed cleanly
        is emptied and raft replays its log from the first entry (the store
        is written without fsync: after a power loss it may be damaged)."""
        node = qh.start_dev_node(self)
        emptied = "fsm: the store was not closed cleanly and raft has no " \
                  "snapshot: emptied it"
        acked = []
        for how in ("kill -9", "clean", "kill -9"):
            for _ in range(5):
                _, out, _ = node.cli("publish", "http://127.0.0.1:9/bare",
                                     "--delay", "1h")
                acked.append(out.strip())
            node.restart(kill=how == "kill -9")
            log = node.stderr_path.read_text(errors="replace")
            self.assertEqual(emptied in log, how == "kill -9",
                             f"after a {how} stop:\n{log[-2000:]}")
            self.assertNotIn("restored a snapshot", log)
            self.assertEqual(
                sorted(qh.list_all_ids(node, "ls", "--state", "pending")),
                sorted(acked), f"after a {how} stop")


if __name__ == "__main__":
    unittest.main()
