"""Corrupt records are never served as sound (issue 10, finding 5).

Every stored value carries a CRC-32C checked on read (node/store.h). These
tests change one byte of a stored URL in a real data.mdb, as a bad sector
or a stray write would, and check what a user sees: the message is never
fetched with the wrong URL, the error names it and the procedure that
fixes it, the replica stops (after a read: once the read is answered; in
apply: at once, and at every start after), nothing is ever delivered to
the changed URL, the replicas whose copy is sound deliver it to the right
one, and the rebuild-from-peers procedure brings a sound replica back.
They also open a data dir written by
the binary before checksums (tests/data/format1-datadir.tar.gz, made by
tests/data/make-format1-datadir.sh with qraftd e528cea): its store gets
its checksums and its raft snapshot (format 1) restores.
"""

import json
import os
import re
import tarfile
import unittest
from pathlib import Path

import qraft_harness as qh
from http_sink import start_sink
from test_membership import JoiningNode

N_MESSAGES = 24
CORRUPT = 7  # the message whose URL gets a changed byte
# Long and distinctive, so its bytes are found in data.mdb and nowhere else.
PROBE = "/corrupt-probe-" + "q7f3a9c2e-" * 6
DELAY = "6s"  # long enough to stop the node before anything is due
FORMAT1_TARBALL = (Path(__file__).resolve().parent.parent / "data"
                   / "format1-datadir.tar.gz")


def shard_of(message_id):
    """node/fsm.c qr_fsm_shard_of: FNV-1a 32 of the id, mod 256."""
    h = 2166136261
    for b in message_id.encode():
        h ^= b
        h = (h * 16777619) & 0xFFFFFFFF
    return h % 256


def data_extents(fd):
    """(start, end) of each stretch of a sparse file that holds data: the
    LMDB map file is as large as the map (8 GiB), mostly holes."""
    size = os.fstat(fd).st_size
    pos = 0
    while pos < size:
        try:
            start = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError:  # ENXIO: no data after pos
            return
        end = os.lseek(fd, start, os.SEEK_HOLE)
        yield start, end
        pos = end


def flip_in_file(path, needle, at):
    """Changes the byte at offset `at` of every occurrence of needle in the
    file (xor 0x20: a letter changes case), in place, as a bad sector or a
    stray write would; returns how many it changed."""
    hits = 0
    fd = os.open(path, os.O_RDWR)
    try:
        for start, end in list(data_extents(fd)):
            data = os.pread(fd, end - start, start)
            found = data.find(needle)
            while found >= 0:
                os.pwrite(fd, bytes([data[found + at] ^ 0x20]),
                          start + found + at)
                hits += 1
                found = data.find(needle, found + 1)
    finally:
        os.close(fd)
    return hits


def metric(node, name):
    status, _, body = qh.http_call(node.http_addr, "GET", "/metrics",
                                   parse=None)
    assert status == 200, status
    m = re.search(rb"^" + re.escape(name.encode()) + rb" (\d+)$", body,
                  re.MULTILINE)
    return int(m.group(1)) if m else None


def readyz(node):
    status, _, body = qh.http_call(node.http_addr, "GET", "/readyz",
                                   parse=None)
    return status, body.decode(errors="replace")


class CorruptRecordTest(unittest.TestCase):
    def publish_and_corrupt(self, node, sink):
        """Publishes N_MESSAGES to the sink (due in DELAY), stops the node
        and changes one byte of message CORRUPT's URL in data.mdb, inside
        the probe, so the changed URL still points at the sink (a delivery
        to it would be seen there). Returns (ids, bad_id, changed_path)."""
        ids = []
        for i in range(N_MESSAGES):
            _, out, _ = node.cli("publish", sink.url(f"{PROBE}{i:04d}"),
                                 "--delay", DELAY)
            ids.append(out.strip())
        node.terminate()
        needle = f"{PROBE}{CORRUPT:04d}".encode()
        data_mdb = node.data_dir / "state" / "data.mdb"
        self.assertGreaterEqual(flip_in_file(data_mdb, needle, 1), 1)
        changed_path = "/C" + f"{PROBE}{CORRUPT:04d}"[2:]
        return ids, ids[CORRUPT], changed_path

    def assert_never_sent(self, sink, bad_id, changed_path):
        self.assertEqual(
            [r.path for r in sink.requests()
             if r.header("Upstash-Message-Id") == bad_id
             or r.path == changed_path], [])

    def test_read_names_the_record_then_the_node_stops(self):
        # --done-retention 0: no prune deletes (and so reads) a message in
        # apply, so a read is the first to meet the corrupt record.
        sink = start_sink(self)
        node = qh.start_dev_node(self, extra_args=["--done-retention", "0"])
        ids, bad_id, changed_path = self.publish_and_corrupt(node, sink)

        node.start()
        # Sound messages read.
        _, out, _ = node.cli("get", ids[0])
        self.assertIn(f"{PROBE}0000", out)
        # The corrupt one: the read names the record and what to do; the
        # changed URL is not served.
        status, _, body = qh.http_call(node.http_addr, "GET",
                                       f"/v2/messages/{bad_id}",
                                       token=node.token)
        self.assertEqual(status, 500, body)
        self.assertIn(f'corrupt record in msgs at key "{bad_id}"',
                      body["error"])
        self.assertIn("rebuild-from-peers", body["error"])
        self.assertNotIn("Corrupt-probe", str(body))
        # While it stops, /readyz says why (if it still answers).
        try:
            status, why = readyz(node)
            self.assertEqual(status, 503)
            self.assertIn(bad_id, why)
        except OSError:
            pass

        # Then the node stops: its copy is not to be trusted.
        qh.wait_until(lambda: not node.running(), 30, "the node to stop")
        self.assertEqual(node.proc.returncode, 1)
        log = node.stderr_tail(50)
        self.assertIn(
            f'server: stopping: store: corrupt record in msgs at key '
            f'"{bad_id}"', log)
        self.assert_never_sent(sink, bad_id, changed_path)

    def test_apply_that_meets_it_stops_the_node_naming_it(self):
        # With the default retention the leader's prune walks every message
        # in apply: a write that meets the record stops the replica rather
        # than let it diverge. That stop leaves the store untrusted (no
        # clean-stop mark), so the next start rebuilds it from raft: from
        # the last snapshot, or here, with none yet, from the whole log
        # into an empty store. The message comes back as it was published.
        sink = start_sink(self)
        node = qh.start_dev_node(self)
        ids, bad_id, changed_path = self.publish_and_corrupt(node, sink)
        node.start(wait=False)
        qh.wait_until(lambda: not node.running(), 30, "the start to stop")
        self.assertNotEqual(node.proc.returncode, 0)
        log = node.stderr_tail(50)
        self.assertIn(f'corrupt record in msgs at key "{bad_id}"', log)
        self.assertIn("rebuild-from-peers", log)
        self.assertFalse((node.data_dir / "state" / "clean-stop").exists())

        node.start()
        self.assertIn("raft has no snapshot: emptied it", node.stderr_tail(50))
        _, out, _ = node.cli("get", bad_id, "--json")
        self.assertEqual(json.loads(out)["url"],
                         sink.url(f"{PROBE}{CORRUPT:04d}"))
        self.assertEqual(sorted(qh.list_all_ids(node, "ls")), sorted(ids))
        # Due meanwhile, it may be delivered: to its real URL only.
        self.assertNotIn(changed_path, [r.path for r in sink.requests()])

    def test_corrupt_snapshot_is_refused_naming_the_key(self):
        # A raft snapshot holds the stored values as they are, checksums
        # included: restore checks them before it touches the store.
        node = qh.start_dev_node(self,
                                 extra_args=["--snapshot-threshold", "16"])
        ids = []
        for i in range(40):
            url = f"http://127.0.0.1:9{PROBE}{i:04d}"
            _, out, _ = node.cli("publish", url, "--delay", "1d")
            ids.append(out.strip())
        node.terminate()
        # As after a crash: the start restores the snapshot (after a clean
        # stop it would keep the store, and not read the snapshot).
        (node.data_dir / "state" / "clean-stop").unlink()
        snapshots = [p for p in (node.data_dir / "raft").glob("snapshot-*")
                     if p.suffix != ".meta"]
        needle = f"{PROBE}{CORRUPT:04d}".encode()
        self.assertGreaterEqual(
            sum(flip_in_file(p, needle, 1) for p in snapshots), 1)
        node.start(wait=False)
        qh.wait_until(lambda: not node.running(), 30, "the node to stop")
        self.assertNotEqual(node.proc.returncode, 0)
        self.assertIn(
            "store: restore: corrupt record in msgs at key "
            f'"{ids[CORRUPT]}": checksum mismatch', node.stderr_tail(50))

class CorruptReplicaTest(unittest.TestCase):
    def test_the_others_deliver_and_the_replica_is_rebuilt(self):
        # No prune walk in apply: the read below is the first to meet it.
        sink = start_sink(self)
        cluster = qh.start_cluster(self, n=3,
                                   extra_args=["--done-retention", "0"])
        ids = []
        for i in range(N_MESSAGES):
            _, out, _ = cluster.cli("publish", sink.url(f"{PROBE}{i:04d}"),
                                    "--delay", "20s")
            ids.append(out.strip())
        bad_id = ids[CORRUPT]
        victim = cluster.followers()[0]
        cluster.wait_caught_up(victim)
        victim.terminate()
        needle = f"{PROBE}{CORRUPT:04d}".encode()
        self.assertGreaterEqual(
            flip_in_file(victim.data_dir / "state" / "data.mdb", needle, 1), 1)
        changed_path = "/C" + f"{PROBE}{CORRUPT:04d}"[2:]

        victim.start()
        status, _, body = qh.http_call(victim.http_addr, "GET",
                                       f"/v2/messages/{bad_id}",
                                       token=cluster.token)
        self.assertEqual(status, 500, body)
        self.assertIn(f'corrupt record in msgs at key "{bad_id}"',
                      body["error"])
        qh.wait_until(lambda: not victim.running(), 30, "the replica to stop")
        victim.stopped_on_purpose = True
        self.assertEqual(victim.proc.returncode, 1)

        # The replicas whose copy is sound deliver every message, the
        # corrupt one's to its own URL, never to the changed one.
        qh.wait_until(
            lambda: {r.header("Upstash-Message-Id")
                     for r in sink.requests()} >= set(ids),
            90, "every message to be delivered")
        sent = [r.path for r in sink.requests()
                if r.header("Upstash-Message-Id") == bad_id]
        self.assertEqual(set(sent), {f"{PROBE}{CORRUPT:04d}"})
        self.assertEqual(
            [r for r in sink.requests() if r.path == changed_path], [])

        # Rebuild from peers (docs/operations.md 8): remove it, start it
        # empty with --join under the same id and addresses, add it back.
        def removed():
            rc, out, err = cluster.cli("status", "--json", check=False)
            if rc != 0:
                return False
            if any(n["id"] == victim.id for n in json.loads(out)["nodes"]):
                cluster.cli("cluster", "remove", str(victim.id), check=False)
                return False
            return True
        qh.wait_until(removed, 60, f"node {victim.id} to be removed")
        cluster.nodes.remove(victim)
        again = JoiningNode(victim.id, cluster, cluster.token,
                            extra_args=["--done-retention", "0"])
        again.raft_port = victim.raft_port
        again.rpc_port = victim.rpc_port
        again.http_port = victim.http_port
        self.addCleanup(again.cleanup)
        again.start(wait=False)
        cluster.cli("cluster", "add", str(victim.id), again.raft_addr,
                    "--rpc", again.rpc_addr)
        cluster.nodes.append(again)
        again.wait_serving()
        cluster.wait_caught_up(again)
        # Its copy is sound again (asked of it alone: qraft get reads the
        # local store of the node it reaches; REST answers 404 for a
        # delivered message).
        _, out, _ = again.cli("get", bad_id, "--json")
        got = json.loads(out)
        self.assertEqual(got["url"], sink.url(f"{PROBE}{CORRUPT:04d}"))
        self.assertEqual(got["state"], "delivered")
        # Ready once it has also announced itself (its next tick, 100 ms).
        qh.wait_until(lambda: readyz(again)[0] == 200, 10,
                      lambda: f"{again.name} ready: {readyz(again)}")


class Format1DataDirTest(unittest.TestCase):
    def test_data_dir_of_the_previous_binary_opens(self):
        node = qh.DevNode(token="format1-token")
        self.addCleanup(node.cleanup)
        with tarfile.open(FORMAT1_TARBALL) as tar:
            if hasattr(tarfile, "data_filter"):  # Python >= 3.11.4
                tar.extractall(node.dir, filter="data")
            else:
                tar.extractall(node.dir)
        self.assertTrue(node.data_dir.is_dir())
        node.start()
        log = node.stderr_tail(200)
        self.assertRegex(log, r"store: format 2: \d+ values checksummed")
        # Its raft snapshot was written by the old binary too.
        self.assertIn("fsm: restored a snapshot", log)

        urls = [f"http://127.0.0.1:9/format1-probe-{i:02d}" for i in range(40)]
        _, out, _ = node.cli("ls", "--json")
        for url in urls:
            self.assertIn(url, out)
        _, out, _ = node.cli("group", "ls")
        self.assertIn("http://127.0.0.1:9/format1-group-endpoint", out)
        status, _, body = qh.http_call(node.http_addr, "GET", "/v2/schedules",
                                       token=node.token)
        self.assertEqual(status, 200)
        self.assertEqual([s["destination"] for s in body],
                         ["http://127.0.0.1:9/format1-schedule"])
        qh.wait_until(lambda: readyz(node)[0] == 200, 20, "the node ready")
        self.assertEqual(metric(node, "qraft_store_corrupt_records_total"), 0)

        # Migrated once: the next start has nothing to convert.
        node.restart()
        self.assertNotIn("values checksummed", node.stderr_tail(200))
        _, out, _ = node.cli("ls", "--json")
        for url in urls:
            self.assertIn(url, out)


if __name__ == "__main__":
    unittest.main()
