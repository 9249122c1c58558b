"""Bad input never kills the node and never stores anything: garbage and
oversized frames on the RPC port, and publishes that break a limit, whether
they come through the CLI or straight from the wire."""

import os
import random
import socket
import struct
import subprocess
import unittest

import qraft_harness as qh

DEST = "http://127.0.0.1:9/never"
MAX_BODY_BYTES = 1048576  # qraftd's default --max-body-bytes
PUBLISH = 10  # Request.publish
STATUS = 17  # Request.status


class BadInputTest(unittest.TestCase):
    def setUp(self):
        self.node = qh.start_dev_node(self)

    # Helpers.
    def stored(self):
        return sorted(qh.list_all_ids(self.node, "ls"))

    def assert_alive(self):
        """The node still runs and answers `qraft status` and /healthz."""
        try:
            self.node.cli("status")
            self.assertEqual(self.node.healthz(), 200)
        except Exception:
            try:
                self.node.proc.wait(2)  # did it die, or is it only unwell?
            except subprocess.TimeoutExpired:
                raise
            rc = self.node.proc.returncode
            self.fail(
                f"qraftd died: exit status {rc}"
                + (" (SIGPIPE: is it ignored?)" if rc == -13 else "")
                + "\n"
                + self.node.stderr_tail()
            )

    def assert_refused(self, *publish_args, mentions=None):
        """qraft publish ... exits non-zero with a message, stores nothing."""
        before = self.stored()
        rc, out, err = self.node.cli("publish", *publish_args, check=False)
        self.assertNotEqual(rc, 0, f"accepted: publish {publish_args!r:.200}")
        self.assertTrue(err.strip(), "a refusal says why on stderr")
        if mentions is not None:
            self.assertIn(mentions, out + err)
        self.assertEqual(self.stored(), before, "a refused publish stored something")

    def assert_wire_refused(self, publish, statuses=("BAD_REQUEST", "TOO_LARGE")):
        """A PublishRequest sent straight to the RPC port is answered with an
        error status and a message, and the connection still works."""
        with qh.RawRpc(self.node.rpc_addr) as rpc:
            resp = rpc.call(qh.request(7, self.node.token, PUBLISH, publish))
            self.assertIsNotNone(resp, "the node closed instead of answering")
            self.assertIn(resp["status_name"], statuses, resp)
            self.assertEqual(resp["id"], 7)
            self.assertTrue(resp["error"], "an error status carries a message")
            ok = rpc.call(qh.request(8, self.node.token, STATUS))
            self.assertEqual(ok["status_name"], "OK", ok)
        return resp

    def assert_control_publish_works(self):
        """After the refusals, a valid publish is stored, alone."""
        _, out, _ = self.node.cli("publish", DEST, "--body", "ok", "--delay", "1h")
        self.assertEqual(self.stored(), [out.strip()])

    # Frames.
    def test_garbage_on_rpc_port_does_not_kill_the_node(self):
        seed = int.from_bytes(os.urandom(4), "big")
        rnd = random.Random(seed)
        for size in (1, 3, 4, 5, 100, 4096, 65536, 1 << 20):
            with qh.RawRpc(self.node.rpc_addr) as rpc:
                try:
                    rpc.send(rnd.randbytes(size))
                    rpc.closed_by_peer(0.2)
                except ConnectionError:
                    pass  # closed on us while we sent: fine
        self.assert_alive()

        # A frame whose protobuf payload is garbage.
        for _ in range(20):
            payload = rnd.randbytes(rnd.randrange(1, 512))
            with qh.RawRpc(self.node.rpc_addr) as rpc:
                try:
                    rpc.send(qh.frame(payload))
                    rpc.closed_by_peer(0.2)
                except ConnectionError:
                    pass
        self.assert_alive()
        self.assertEqual(self.stored(), [], f"random seed {seed}")

    def test_oversized_frames_are_refused_and_closed(self):
        for length in (0xFFFFFFFF, 64 << 20):
            with qh.RawRpc(self.node.rpc_addr) as rpc:
                rpc.send(struct.pack(">I", length) + b"\x08\x01")
                self.assertTrue(
                    rpc.closed_by_peer(10.0),
                    f"a frame announcing {length} bytes must close the connection",
                )
        self.assert_alive()

    def test_truncated_frames_do_not_kill_the_node(self):
        for sent in (b"\x00", b"\x00\x00\x00", struct.pack(">I", 100) + b"\x08" * 10):
            with qh.RawRpc(self.node.rpc_addr) as rpc:
                rpc.send(sent)  # and hang up mid-frame
        # Idle, unfinished frames must not block others either.
        stuck = qh.RawRpc(self.node.rpc_addr)
        self.addCleanup(stuck.close)
        stuck.send(struct.pack(">I", 1000) + b"\x08")
        self.assert_alive()

    def test_clients_resetting_mid_response_do_not_kill_the_node(self):
        # Writing to a reset connection raises SIGPIPE unless it is ignored.
        status = qh.frame(qh.request(1, self.node.token, STATUS))
        healthz = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
        for port, burst in (
            (self.node.rpc_port, status * 2000),
            (self.node.http_port, healthz * 2000),
        ):
            for _ in range(20):
                try:
                    sock = socket.create_connection(("127.0.0.1", port))
                    sock.sendall(burst)
                except ConnectionError:
                    break  # assert_alive says why
                # Close with RST (linger 0) while answers are on their way.
                sock.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                )
                sock.close()
            self.assert_alive()

    def test_unknown_command_is_an_error_not_a_crash(self):
        with qh.RawRpc(self.node.rpc_addr) as rpc:
            for req_id, body_field in ((1, None), (2, 99)):
                resp = rpc.call(qh.request(req_id, self.node.token, body_field))
                self.assertIsNotNone(resp, "the node closed instead of answering")
                self.assertNotEqual(resp["status_name"], "OK", resp)
                self.assertTrue(resp["error"], resp)
        self.assert_alive()

    # Publish limits.
    def test_body_over_the_limit_is_refused_with_the_limit(self):
        big = self.node.dir / "big.bin"
        big.write_bytes(b"x" * (2 * 1024 * 1024))
        self.assert_refused(DEST, "--body", f"@{big}", mentions=str(MAX_BODY_BYTES))
        resp = self.assert_wire_refused(
            qh.publish_request(DEST, b"x" * (2 * 1024 * 1024)), statuses=("TOO_LARGE",)
        )
        self.assertIn(str(MAX_BODY_BYTES), resp["error"])
        self.assert_alive()
        self.assert_control_publish_works()

    def test_url_must_be_http_and_short(self):
        long_url = "http://127.0.0.1:9/" + "a" * 10240
        for url in ("ftp://127.0.0.1/x", "file:///etc/passwd", "not a url", long_url):
            with self.subTest(url=url[:40]):
                self.assert_refused(url, "--delay", "1h")
                self.assert_wire_refused(qh.publish_request(url))
        self.assert_wire_refused(qh.publish_request(""))
        self.assert_alive()
        self.assert_control_publish_works()

    def test_too_many_headers_are_refused(self):
        args = []
        for i in range(200):
            args += ["--header", f"X-Test-{i}: {i}"]
        self.assert_refused(DEST, "--delay", "1h", *args)
        headers = [(f"X-Test-{i}", str(i)) for i in range(200)]
        self.assert_wire_refused(qh.publish_request(DEST, headers=headers))
        huge = [("X-Huge", "v" * (64 * 1024))]
        self.assert_wire_refused(qh.publish_request(DEST, headers=huge))
        self.assert_alive()
        self.assert_control_publish_works()

    def test_retries_out_of_range_are_refused(self):
        self.assert_refused(DEST, "--retries", "1000", "--delay", "1h")
        self.assert_wire_refused(qh.publish_request(DEST, retries=1000))
        self.assert_alive()
        self.assert_control_publish_works()

    def test_bad_delay_is_refused_by_the_cli(self):
        for delay in ("-5s", "banana", "5x", "", "1e99h"):
            with self.subTest(delay=delay):
                self.assert_refused(DEST, "--delay", delay)
        self.assert_control_publish_works()


if __name__ == "__main__":
    unittest.main()
