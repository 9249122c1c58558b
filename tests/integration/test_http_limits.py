"""The HTTP server under hostile clients: requests that trickle in
(slowloris), bodies that never finish, more idle connections than the cap.
Each ends in a closed connection or an error answer, never a crash, and the
node keeps serving everyone else."""

import socket
import time
import unittest

import qraft_harness as qh

REQUEST_TIMEOUT_MS = 1000
MAX_CONNECTIONS = 32


def connect(addr, timeout=10.0):
    host, _, port = addr.rpartition(":")
    return socket.create_connection((host, int(port)), timeout=timeout)


def closed_within(sock, seconds):
    """True once the server closed sock (EOF or reset) within seconds;
    whatever it sent first (a 408) is read and ignored."""
    sock.settimeout(0.2)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if sock.recv(4096) == b"":
                return True
        except socket.timeout:
            continue
        except ConnectionError:
            return True
    return False


class HttpLimitsTest(unittest.TestCase):
    def setUp(self):
        self.node = qh.start_dev_node(self, extra_args=[
            "--http-request-timeout-ms", str(REQUEST_TIMEOUT_MS),
            "--max-connections", str(MAX_CONNECTIONS),
        ])
        self.target = "/v2/publish/http://127.0.0.1:9/hook"

    def healthz(self):
        return qh.http_status(f"http://{self.node.http_addr}/healthz")

    def open(self):
        sock = connect(self.node.http_addr)
        self.addCleanup(sock.close)
        return sock

    def test_headers_that_never_finish_are_cut_off(self):
        sock = self.open()
        sock.sendall(f"POST {self.target} HTTP/1.1\r\nHost: x\r\n"
                     "Authorization: Bearer ".encode())
        for _ in range(3):  # a byte now and then does not keep it alive
            time.sleep(REQUEST_TIMEOUT_MS / 4000)
            try:
                sock.sendall(b"x")
            except ConnectionError:
                break
        self.assertTrue(closed_within(sock, 10),
                        "a request whose headers never end must be closed")
        self.assertEqual(self.healthz(), 200)

    def test_body_that_never_finishes_is_cut_off_and_stores_nothing(self):
        sock = self.open()
        sock.sendall((f"POST {self.target} HTTP/1.1\r\nHost: x\r\n"
                      f"Authorization: Bearer {self.node.token}\r\n"
                      "Content-Length: 1000\r\n\r\n").encode() + b"y" * 10)
        self.assertTrue(closed_within(sock, 10),
                        "a body that never arrives must be closed")
        self.assertEqual(self.healthz(), 200)
        _, out, _ = self.node.cli("ls", "--json")
        self.assertNotIn("msg_", out, "a cut-off publish stored a message")

    def test_more_idle_connections_than_the_cap(self):
        # Ten times the cap: the node accepts up to the cap, leaves the
        # rest waiting in the kernel, closes idle ones after the request
        # timeout, and so serves a real request again within a few
        # seconds. It never crashes.
        idle = [self.open() for _ in range(10 * MAX_CONNECTIONS)]
        qh.wait_until(lambda: self.healthz() == 200, 30,
                      "the node to serve again past idle connections")
        for sock in idle:
            sock.close()
        self.assertTrue(self.node.running(), "the node died")
        self.assertEqual(self.healthz(), 200)


if __name__ == "__main__":
    unittest.main()
