"""A real rolling upgrade from the previous release, under load.

tests/upgrade/previous-release names the release and its commit. This test
builds that commit's qraftd from git (into $QRAFT_PREV_DIR,
reused when already built), starts a 3-node cluster of them under a steady
publish + deliver load (tests/lib/steady_load.py), replaces one node at a
time with this build's qraftd (SIGTERM, start the new binary on the same
data dir, wait until every node is ready and owns shards), then rolls one
node back to the old binary and forward again. The new nodes run pinned at
the old cluster's feature level (--max-feature-level), as the upgrade
procedure says (docs/operations.md), so the rollback stays allowed.

Asserted: no acknowledged message lost; no publish answered with a
client error (a request kind an older leader does not know must come back
retriable, not as a bad request); no duplicate in a step that stopped a
node of this build (it drains, see docs/architecture.md "Stopping"). A
stop of an old node cancels what it had running (the old stop did not
drain): those duplicates are printed, as is the longest publish gap of
each step (docs/chaos.md has the measured table); neither is asserted.

Run by ctest (label `upgrade`, not under ASan) or directly; exits 77
(skipped) when the checkout does not have the commit (a shallow clone)."""

import os
import shutil
import subprocess
import sys
import unittest
from pathlib import Path

import qraft_harness as qh
from http_sink import quiet_disconnects, start_sink
from steady_load import SteadyLoad

HERE = Path(__file__).resolve().parent
RELEASE, COMMIT = (HERE / "previous-release").read_text().split()[:2]
PREV_DIR = Path(os.environ.get("QRAFT_PREV_DIR",
                               qh.REPO / "build" / "previous-release"))


def have_commit():
    return subprocess.run(
        ["git", "-C", str(qh.REPO), "cat-file", "-e", f"{COMMIT}^{{commit}}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0


def build_previous():
    """The previous release's bin dir, built once per commit: its source
    from `git archive`, configured without tests, the daemon only (the
    CLI is this build's: clients meet older nodes in an upgrade too)."""
    root = PREV_DIR / COMMIT
    bin_dir = root / "build" / "bin"
    if (bin_dir / "qraftd").is_file():
        return bin_dir
    shutil.rmtree(root, ignore_errors=True)
    (root / "src").mkdir(parents=True)
    archive = subprocess.Popen(["git", "-C", str(qh.REPO), "archive", COMMIT],
                               stdout=subprocess.PIPE)
    subprocess.run(["tar", "x", "-C", str(root / "src")], stdin=archive.stdout,
                   check=True)
    if archive.wait() != 0:
        raise qh.HarnessError(f"git archive {COMMIT} failed")
    log = root / "build.log"
    with open(log, "wb") as out:
        for argv in (["cmake", "-S", root / "src", "-B", root / "build",
                      "-DBUILD_TESTING=OFF", "-DQRAFT_TEST_BUILDS=OFF",
                      "-DCMAKE_BUILD_TYPE=RelWithDebInfo"],
                     ["nice", "cmake", "--build", root / "build", "-j2",
                      "--target", "qraftd"]):
            if subprocess.run([str(a) for a in argv], stdout=out,
                              stderr=subprocess.STDOUT).returncode != 0:
                raise qh.HarnessError(
                    f"building {RELEASE} ({COMMIT}) failed: see {log}")
    return bin_dir


class VersionedNode(qh.ClusterNode):
    """A cluster node whose qraftd comes from bin_dir (None: this build's),
    with extra arguments for the new binary only."""

    bin_dir = None
    new_args = ()

    def command(self):
        argv = super().command()
        if self.bin_dir is not None:
            argv[0] = self.bin_dir / "qraftd"
            return argv
        return argv + list(self.new_args)


class RollingUpgradeTest(unittest.TestCase):
    def test_rolling_upgrade_and_back(self):
        old_bin = build_previous()
        sink = start_sink(self)
        quiet_disconnects(sink)  # the nodes killed at cleanup hang up
        cluster = qh.Cluster(n=3)
        self.addCleanup(cluster.cleanup)
        for n in cluster.nodes:
            n.__class__ = VersionedNode
            n.bin_dir = old_bin
        cluster.start()
        leader = cluster.leader()

        def settled():
            st = leader.status()
            nodes = st["nodes"]
            return (len(nodes) == 3 and all(n["version"] for n in nodes) and
                    st["feature_level"] == min(n["feature_level"]
                                               for n in nodes) and st)

        st = qh.wait_until(settled, 30, "the old cluster's feature level")
        old_level, old_version = st["feature_level"], st["nodes"][0]["version"]

        load = SteadyLoad(cluster, sink)
        self.addCleanup(load.stop)
        load.start()

        ids = [n.id for n in cluster.nodes]
        cluster.wait_shards_spread(ids, "the shards to spread over the old nodes")
        load.wait_for_acks(50)

        new_stops = []  # the steps that stopped a node of this build

        def replace(node, to_old, name):
            if node.bin_dir is None:
                new_stops.append(name)
            with load.step(name):
                node.terminate()
                node.bin_dir = old_bin if to_old else None
                node.new_args = ["--max-feature-level", str(old_level)]
                node.start()
                cluster.wait_ready()
                cluster.wait_shards_spread(ids, f"{node.name} to own shards")
                load.wait_for_acks(50)

        # Followers first, the leader last: one leader change.
        order = [n for n in cluster.nodes if n is not leader] + [leader]
        for n in order:
            role = "leader" if n is leader else "follower"
            replace(n, False, f"{n.name} ({role}) {RELEASE} -> new")
        back = order[0]
        replace(back, True, f"{back.name} rolled back new -> {RELEASE}")
        replace(back, False, f"{back.name} forward again {RELEASE} -> new")

        load.stop()
        report = load.settle()
        print(f"\nfrom {RELEASE} ({old_version}, {COMMIT[:12]}), feature level "
              f"{old_level}: acked {report['acked']}, delivered "
              f"{report['delivered']}, publish failures "
              f"{dict(load.failures)}\n{load.table()}")
        cluster.check_not_crashed()
        self.assertEqual(report["lost"], [])
        client_errors = {k: v for k, v in load.failures.items()
                         if k.startswith("4")}
        self.assertEqual(client_errors, {})
        for st in load.steps:
            if st["name"] in new_stops:
                self.assertEqual(st["duplicates"], 0, st)


if __name__ == "__main__":
    if not have_commit():
        print(f"skipped: this checkout has no commit {COMMIT} ({RELEASE}, "
              f"tests/upgrade/previous-release); a shallow clone? fetch "
              f"the history to run the upgrade test")
        sys.exit(77)
    unittest.main(verbosity=2)
