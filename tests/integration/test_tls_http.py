"""TLS on the HTTP API (docs/operations.md, "TLS"; issue 15, point 1).

Certificates are made at test time with the `openssl` CLI: a CA, node
certificates it signs for IP:127.0.0.1 (with chosen serials, so that a
client can tell which one it was served), an expired one, and a second CA
that signed nothing the node serves. Clients are Python's ssl module,
verifying the server and its name as any https client does.

An expired certificate is served (the node starts with it; it may be about
to be replaced by SIGHUP) and refused by clients: verification fails with
"certificate has expired"."""

import os
import signal
import socket
import ssl
import struct
import subprocess
import tempfile
import time
import unittest
from pathlib import Path

import qraft_harness as qh
from http_sink import start_sink

REQUEST_TIMEOUT_MS = 2500
MAX_CONNECTIONS = 4
# The first bytes of a TLS ClientHello: a handshake record header and the
# start of its message, then nothing.
PARTIAL_CLIENT_HELLO = b"\x16\x03\x01\x00\xc8\x01\x00\x00\xc4\x03\x03"


def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True,
                   capture_output=True, timeout=qh.CLI_TIMEOUT)


class Certs:
    """A directory of PEM files made with the openssl CLI."""

    def __init__(self, testcase):
        self.dir = Path(tempfile.mkdtemp(prefix="qraft-tls-"))
        testcase.addCleanup(qh.shutil.rmtree, self.dir, True)

    def path(self, name):
        return self.dir / name

    def ca(self, name):
        """Makes name.key and name.pem, a self-signed CA; returns the
        certificate's path."""
        openssl("req", "-x509", "-newkey", "ec", "-pkeyopt",
                "ec_paramgen_curve:P-256", "-nodes", "-keyout", f"{name}.key",
                "-out", f"{name}.pem", "-days", "2", "-subj", f"/CN={name}",
                cwd=self.dir)
        return self.path(f"{name}.pem")

    def node(self, name, ca, serial, days=2):
        """Makes name.key and name.pem: a certificate for IP:127.0.0.1
        signed by ca (a name given to ca()), with serial; days -1 makes one
        that has already expired. Returns (cert, key) paths."""
        openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
                "-subj", f"/CN={name}", cwd=self.dir)
        self.path(f"{name}.ext").write_text(
            "subjectAltName=IP:127.0.0.1\n"
            "extendedKeyUsage=serverAuth\n")
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem",
                "-CAkey", f"{ca}.key", "-set_serial", str(serial), "-days",
                str(days), "-extfile", f"{name}.ext", "-out", f"{name}.pem",
                cwd=self.dir)
        return self.path(f"{name}.pem"), self.path(f"{name}.key")


def served_serial(node, cafile):
    """The serial of the certificate a new connection to node is served,
    verified against cafile."""
    ctx = qh.tls_client_context(cafile)
    with socket.create_connection(("127.0.0.1", node.http_port),
                                  timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            return int(tls.getpeercert()["serialNumber"], 16)


def read_until_closed(sock, timeout):
    """Reads until the peer closes; returns (bytes, seconds it took), or
    raises socket.timeout when it is still open after timeout."""
    start = time.monotonic()
    sock.settimeout(timeout)
    data = b""
    while True:
        try:
            chunk = sock.recv(4096)
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            return data, time.monotonic() - start
        data += chunk


def n_fds(node):
    return len(os.listdir(f"/proc/{node.proc.pid}/fd"))


class TlsHttpTest(unittest.TestCase):
    def setUp(self):
        self.certs = Certs(self)
        self.ca = self.certs.ca("ca")
        self.cert, self.key = self.certs.node("node", "ca", serial=1)

    def start(self, cert=None, key=None, extra_args=(), wait=True):
        node = qh.DevNode(
            tls=(cert or self.cert, key or self.key, self.ca),
            extra_args=["--http-request-timeout-ms", str(REQUEST_TIMEOUT_MS),
                        *extra_args])
        self.addCleanup(node.cleanup)
        node.start(wait=wait)
        return node

    def log(self, node):
        return node.stderr_path.read_text(errors="replace")

    def wait_log(self, node, text, count=1):
        qh.wait_until(lambda: self.log(node).count(text) >= count, 10,
                      f"'{text}' in {node.name}'s log")

    def https(self, node, method, target, **kwargs):
        return qh.http_call(node.http_addr, method, target, cafile=self.ca,
                            **kwargs)

    def test_publish_over_https_is_delivered(self):
        node = self.start()
        sink = start_sink(self)
        status, _, body = self.https(
            node, "POST", f"/v2/publish/{sink.url('/tls')}", body="over tls",
            token=node.token)
        self.assertEqual(status, 200, body)
        (req,) = sink.wait_for(1, path="/tls", timeout=30)
        self.assertEqual(req.body, b"over tls")
        # The node's own routes are on the TLS port too.
        for path in ("/healthz", "/readyz", "/metrics"):
            status, _, _ = self.https(node, "GET", path)
            self.assertEqual(status, 200, path)
        self.assertIn("the HTTP API on", self.log(node))
        self.assertNotIn("is plaintext and not on loopback", self.log(node))

    def test_wrong_ca_fails_verification(self):
        node = self.start()
        other = self.certs.ca("other-ca")
        with self.assertRaises(ssl.SSLCertVerificationError) as cm:
            qh.http_call(node.http_addr, "GET", "/healthz", cafile=other)
        self.assertIn("unable to get local issuer certificate",
                      cm.exception.verify_message)
        self.assertEqual(self.https(node, "GET", "/healthz")[0], 200)

    def test_expired_certificate_is_refused_by_clients(self):
        cert, key = self.certs.node("expired", "ca", serial=9, days=-1)
        node = self.start(cert=cert, key=key, wait=False)
        self.wait_log(node, "serving:")
        with self.assertRaises(ssl.SSLCertVerificationError) as cm:
            self.https(node, "GET", "/healthz")
        self.assertIn("certificate has expired", cm.exception.verify_message)
        self.assertTrue(node.running())

    def test_plaintext_to_tls_port_is_closed_promptly(self):
        node = self.start()
        with socket.create_connection(("127.0.0.1", node.http_port),
                                      timeout=5) as s:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            data, took = read_until_closed(s, REQUEST_TIMEOUT_MS / 1000 / 2)
        self.assertNotIn(b"HTTP/1.1", data)
        self.assertLess(took, REQUEST_TIMEOUT_MS / 1000 / 2)
        with socket.create_connection(("127.0.0.1", node.http_port),
                                      timeout=5) as s:
            s.sendall(os.urandom(4096))
            read_until_closed(s, REQUEST_TIMEOUT_MS / 1000 / 2)
        self.assertEqual(self.https(node, "GET", "/healthz")[0], 200)
        self.assertTrue(node.running())

    def test_half_open_handshakes_time_out_and_cap_holds(self):
        node = self.start(extra_args=["--max-connections",
                                      str(MAX_CONNECTIONS)])
        qh.wait_until(lambda: self.https(node, "GET", "/healthz")[0] == 200,
                      10, "a first request")
        base = n_fds(node)
        timeout_s = REQUEST_TIMEOUT_MS / 1000

        # Two connect and send nothing, one sends part of a ClientHello:
        # the node still serves others meanwhile.
        half = [socket.create_connection(("127.0.0.1", node.http_port))
                for _ in range(3)]
        half[2].sendall(PARTIAL_CLIENT_HELLO)
        opened = time.monotonic()
        self.assertEqual(self.https(node, "GET", "/healthz")[0], 200)
        for s in half:
            data, _ = read_until_closed(s, timeout_s + 5)
            self.assertEqual(data[:1] in (b"", b"\x15"), True, data)
            s.close()
        self.assertGreater(time.monotonic() - opened, timeout_s * 0.8)

        # At the cap, half-open handshakes hold every slot: a real client
        # waits in the backlog until the timeout frees one, then is served.
        # Counted from the node's descriptors once the first ones are gone
        # (base may have held a connection the node was still closing).
        qh.wait_until(lambda: n_fds(node) <= base, 10,
                      lambda: f"fds back to {base} (now {n_fds(node)})")
        idle = n_fds(node)
        half = [socket.create_connection(("127.0.0.1", node.http_port))
                for _ in range(MAX_CONNECTIONS)]
        opened = time.monotonic()
        qh.wait_until(lambda: n_fds(node) >= idle + MAX_CONNECTIONS, 10,
                      lambda: f"the node to hold every connection ({idle} "
                              f"descriptors idle, {n_fds(node)} now)")
        status, _, _ = self.https(node, "GET", "/healthz",
                                  timeout=timeout_s + 10)
        self.assertEqual(status, 200)
        self.assertGreater(time.monotonic() - opened, timeout_s * 0.8)
        for s in half:
            read_until_closed(s, timeout_s + 5)
            s.close()
        self.wait_log(node, f"{MAX_CONNECTIONS} connections: accepting again")
        # No descriptor left behind.
        qh.wait_until(lambda: n_fds(node) <= base, 10,
                      lambda: f"fds back to {base} (now {n_fds(node)})")
        self.assertTrue(node.running())

    def test_reset_connections_leave_no_fd(self):
        # A client that resets (RST) its connection after the handshake, or
        # after sending a request: the node's close_notify then cannot be
        # written, and the connection must be freed all the same.
        node = self.start(extra_args=["--max-connections",
                                      str(MAX_CONNECTIONS)])
        base = n_fds(node)
        ctx = qh.tls_client_context(self.ca)
        for i in range(3 * MAX_CONNECTIONS):
            raw = socket.create_connection(("127.0.0.1", node.http_port),
                                           timeout=5)
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                           struct.pack("ii", 1, 0))
            tls = ctx.wrap_socket(raw, server_hostname="127.0.0.1")
            if i % 2:
                tls.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            tls.close()
        qh.wait_until(lambda: n_fds(node) <= base, 10,
                      lambda: f"fds back to {base} (now {n_fds(node)})")
        self.assertEqual(self.https(node, "GET", "/healthz")[0], 200)
        self.assertEqual(node.terminate(), 0)

    def test_sighup_rotates_certificate_and_keeps_it_on_a_bad_file(self):
        # The node reads copies, so the test can replace them.
        cert = self.certs.path("live.pem")
        key = self.certs.path("live.key")
        cert.write_bytes(self.cert.read_bytes())
        key.write_bytes(self.key.read_bytes())
        node = self.start(cert=cert, key=key)
        self.assertEqual(served_serial(node, self.ca), 1)

        new_cert, new_key = self.certs.node("node2", "ca", serial=2)
        cert.write_bytes(new_cert.read_bytes())
        key.write_bytes(new_key.read_bytes())
        node.proc.send_signal(signal.SIGHUP)
        self.wait_log(node, "SIGHUP: TLS certificate reloaded")
        self.assertEqual(served_serial(node, self.ca), 2)

        # A certificate file that does not parse: the old context stays, and
        # the ERROR names the file.
        cert.write_text("not a certificate\n")
        node.proc.send_signal(signal.SIGHUP)
        self.wait_log(node, "TLS certificate not reloaded")
        line = [ln for ln in self.log(node).splitlines()
                if "TLS certificate not reloaded" in ln][-1]
        self.assertIn("ERROR", line)
        self.assertIn(str(cert), line)
        self.assertEqual(served_serial(node, self.ca), 2)

        # A key that is not the certificate's: kept too.
        cert.write_bytes(new_cert.read_bytes())
        key.write_bytes(self.key.read_bytes())
        node.proc.send_signal(signal.SIGHUP)
        self.wait_log(node, "TLS certificate not reloaded", count=2)
        self.assertEqual(served_serial(node, self.ca), 2)
        self.assertEqual(node.terminate(), 0)
        self.assertNotIn("Sanitizer", self.log(node))

    def test_plaintext_off_loopback_warns_once(self):
        port = qh.free_port()
        node = qh.DevNode(extra_args=["--http", f"0.0.0.0:{port}"])
        node.http_port = port
        self.addCleanup(node.cleanup)
        node.start()
        warns = [ln for ln in self.log(node).splitlines()
                 if "is plaintext and not on loopback" in ln]
        self.assertEqual(len(warns), 1, warns)
        self.assertIn("WARN", warns[0])

        # Plaintext on loopback: no warning.
        quiet = qh.start_dev_node(self)
        self.assertNotIn("is plaintext and not on loopback", self.log(quiet))


if __name__ == "__main__":
    unittest.main()
