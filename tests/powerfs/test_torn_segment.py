"""A node restarted on a raft segment whose last append was torn by a
power loss recovers by itself (docs/operations.md, "Power loss").

raft 0.22.1 appends a batch with one O_DIRECT write and RWF_DSYNC; a power
loss during that write leaves the batch's first bytes (a page boundary, as
tools/powerfs tears) after the last complete batch, never acknowledged.
The test makes that shape by hand in a killed one-node cluster's open
segment (part of a batch; a whole batch whose data fails its checksum),
restarts it, and checks it serves every message it acknowledged, drops the
torn tail and takes new publishes. No root or FUSE needed.

    QRAFT_BIN=$PWD/build/bin python3 tests/powerfs/test_torn_segment.py
"""

import struct
import sys
import unittest
from pathlib import Path

sys.dont_write_bytecode = True
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))
from qraft_harness import http_call, start_dev_node  # noqa: E402

SEGMENT_HEADER = 8  # the format version


def batches(data):
    """(start, end) of each complete batch of a raft 0.22.1 segment: a
    preamble (2 checksums, u64 entry count), 16 bytes per entry header
    (term, type, size at +12), then each entry's data padded to 8."""
    off, out = SEGMENT_HEADER, []
    while off + 16 <= len(data):
        n = struct.unpack_from("<Q", data, off + 8)[0]
        if n == 0 or off + 16 + 16 * n > len(data):
            break
        size = 0
        for i in range(n):
            entry = struct.unpack_from("<I", data, off + 16 + 16 * i + 12)[0]
            size += (entry + 7) // 8 * 8
        end = off + 16 + 16 * n + size
        if end > len(data):
            break
        out.append((off, end))
        off = end
    return out


class TornSegment(unittest.TestCase):
    def publish(self, node, body):
        status, _, reply = http_call(
            node.http_addr, "POST", "/v2/publish/http://127.0.0.1:9/x",
            body=body, token=node.token, headers={"Upstash-Delay": "1h"})
        self.assertEqual(status, 201 if status == 201 else 200, reply)
        return reply["messageId"]

    def tear_and_restart(self, tear):
        node = start_dev_node(self)
        ids = [self.publish(node, f"m{i}") for i in range(20)]
        node.kill9()
        raft = node.data_dir / "raft"
        segs = [p for p in raft.glob("open-*") if batches(p.read_bytes())]
        self.assertEqual(len(segs), 1, f"open segments with data: {segs}")
        seg = segs[0]
        data = bytearray(seg.read_bytes())
        start, end = batches(bytes(data))[-1]
        torn = tear(bytes(data[start:end]))
        data[end:end + len(torn)] = torn
        seg.write_bytes(bytes(data))

        node.start()  # waits until it serves
        for mid in ids:
            status, _, msg = http_call(node.http_addr, "GET",
                                       f"/v2/messages/{mid}",
                                       token=node.token)
            self.assertEqual(status, 200, f"{mid}: {msg}")
        after = self.publish(node, "after the tear")
        status, _, _ = http_call(node.http_addr, "GET",
                                 f"/v2/messages/{after}", token=node.token)
        self.assertEqual(status, 200)
        # The torn bytes are not in the log any more: the segment holding
        # the acknowledged entries ends where the last whole batch ended.
        closed = [p for p in raft.iterdir() if p.name[0].isdigit()
                  and p.stat().st_size == end]
        self.assertTrue(closed, f"no closed segment of {end} bytes in "
                                f"{sorted(p.name for p in raft.iterdir())}")

    def test_a_partial_last_batch_is_dropped(self):
        self.tear_and_restart(lambda batch: batch[:len(batch) // 2])

    def test_a_last_batch_failing_its_checksum_is_dropped(self):
        def corrupt(batch):
            b = bytearray(batch)
            b[-9] ^= 0xFF
            return bytes(b)
        self.tear_and_restart(corrupt)


if __name__ == "__main__":
    unittest.main()
