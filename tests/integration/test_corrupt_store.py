"""Corrupt records are never served as sound (issue 10, finding 5).

Every stored value carries a CRC-32C checked on read (node/store.h). These
tests change one byte of a stored URL in a real data.mdb, as a bad sector
or a stray write would, and check what a user sees: the message is not
listed or fetched with the wrong URL, the error names it and the
procedure that fixes it, /readyz and /metrics show it, and nothing is
ever delivered to the changed URL. They also open a data dir written by
the binary before checksums (tests/data/format1-datadir.tar.gz, made by
tests/data/make-format1-datadir.sh with qraftd e528cea): its store gets
its checksums and its raft snapshot (format 1) restores.
"""

import os
import re
import tarfile
import unittest
from pathlib import Path

import qraft_harness as qh
from http_sink import start_sink

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

    def test_read_names_the_record_and_it_is_never_delivered(self):
        # --done-retention 0: no prune walks the messages in apply, so only
        # reads meet the corrupt record and the node keeps serving the rest.
        sink = start_sink(self)
        node = qh.start_dev_node(self, extra_args=["--done-retention", "0"])
        ids, bad_id, changed_path = self.publish_and_corrupt(node, sink)

        node.start()
        # A read names the record and what to do; the URL is not served.
        status, _, body = qh.http_call(node.http_addr, "GET",
                                       f"/v2/messages/{bad_id}",
                                       token=node.token)
        self.assertEqual(status, 500, body)
        self.assertIn(f'corrupt record in msgs at key "{bad_id}"',
                      body["error"])
        self.assertIn("rebuild-from-peers", body["error"])
        self.assertNotIn("Corrupt-probe", str(body))
        rc, out, err = node.cli("ls", check=False)
        self.assertNotEqual(rc, 0)
        self.assertIn(bad_id, err)
        self.assertNotIn("Corrupt-probe", out)
        _, out, _ = node.cli("get", ids[0])
        self.assertIn(f"{PROBE}0000", out)

        # The node says so: not ready, naming the record; the counter rose.
        status, why = readyz(node)
        self.assertEqual(status, 503)
        self.assertIn(bad_id, why)
        self.assertGreaterEqual(
            metric(node, "qraft_store_corrupt_records_total"), 1)
        self.assertEqual(node.healthz(), 200)

        # Delivery goes on for the other shards; the corrupt message is
        # never sent, to either URL.
        others = {ids[i] for i in range(N_MESSAGES)
                  if shard_of(ids[i]) != shard_of(bad_id)}
        qh.wait_until(
            lambda: {r.header("Upstash-Message-Id")
                     for r in sink.requests()} >= others,
            60, "the messages of the other shards to be delivered")
        self.assert_never_sent(sink, bad_id, changed_path)
        self.assertTrue(node.running())
        self.assertIn(f'corrupt record in msgs at key "{bad_id}"',
                      node.stderr_tail(200))

    def test_apply_that_meets_it_stops_the_node_naming_it(self):
        # With the default retention the leader's prune walks every message
        # in apply: a write that meets the record stops the replica rather
        # than let it diverge, and it stops again at every start, until it
        # is rebuilt from its peers.
        sink = start_sink(self)
        node = qh.start_dev_node(self)
        _, bad_id, changed_path = self.publish_and_corrupt(node, sink)
        for start in range(2):
            node.start(wait=False)
            qh.wait_until(lambda: not node.running(), 30,
                          f"start {start + 1} to stop")
            self.assertNotEqual(node.proc.returncode, 0)
            log = node.stderr_tail(50)
            self.assertIn(f'corrupt record in msgs at key "{bad_id}"', log)
            self.assertIn("rebuild-from-peers", log)
        self.assert_never_sent(sink, bad_id, changed_path)


class Format1DataDirTest(unittest.TestCase):
    def test_data_dir_of_the_previous_binary_opens(self):
        node = qh.DevNode(token="format1-token")
        self.addCleanup(node.cleanup)
        with tarfile.open(FORMAT1_TARBALL) as tar:
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
