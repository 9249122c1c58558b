"""Mutual TLS between nodes on the raft port (issue 15, point 2): a 3-node
cluster with per-node certificates (bound to their ids by the
subjectAltName URI qraft:node:<id>) elects, replicates and delivers over
it; rogue qraftd processes started with the cluster's peers (a certificate
from another CA, plaintext, node 2's certificate claiming id 3) cannot
vote or append: the cluster's term does not move and they never learn
the log; garbage, plaintext and half-open connections to the raft port
are dropped without a crash or a descriptor leak (a member's certificate
without a raft preamble too, and a certificate of ~200 KB, on the raft and
the RPC port); a node-to-node request on the RPC port needs
a node certificate, and a heartbeat must name the certificate's node."""

import os
import struct
import time
import unittest

import qraft_harness as qh
from http_sink import Reply, start_sink

HANDSHAKE_MS = 1000
PROBE_FIELD = 33  # Request.member_probe: a node-to-node kind
HEARTBEAT_FIELD = 30  # Request.heartbeat


open_fds = qh.open_fds
closed_by_server = qh.closed_by_server
connect = qh.connect_tcp


class Rogue(qh.ClusterNode):
    """A real qraftd started with the cluster's peers, but with its own id,
    raft address and TLS flags (tls_flags: [] for plaintext)."""

    def __init__(self, node_id, cluster, tls_flags, cacert):
        super().__init__(node_id, cluster, cluster.token)
        self.name = f"rogue{node_id}"
        self.tls_flags = [str(a) for a in tls_flags]
        self.cacert = str(cacert) if cacert else None
        self.tls = None  # its HTTP API is not looked at

    def command(self):
        others = [n for n in self.cluster.nodes if n.id != self.id]
        peers = ",".join([f"{n.id}@{n.raft_addr}" for n in others] +
                         [f"{self.id}@{self.raft_addr}"])
        return [qh.binary("qraftd"), "--id", self.id, "--peers", peers,
                "--data", self.data_dir, "--raft", self.raft_addr,
                "--rpc", self.rpc_addr, "--http", self.http_addr,
                "--token", self.token, *self.tls_flags]


class TlsRaftTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.sink = start_sink()
        try:
            cls.cluster = qh.start_cluster(
                tls=True,
                extra_args=["--tls-handshake-timeout-ms", str(HANDSHAKE_MS)])
        except BaseException:
            cls.sink.stop()
            raise

    @classmethod
    def tearDownClass(cls):
        cls.cluster.cleanup()
        cls.sink.stop()

    def setUp(self):
        self.cluster.check_not_crashed()

    def logs(self, node):
        return node.stderr_path.read_text()

    def test_cluster_replicates_and_delivers_over_mutual_tls(self):
        cluster = self.cluster
        leader = cluster.leader()
        self.sink.script("/mtls", Reply(200))
        ids = [cluster.cli("publish", self.sink.url(f"/mtls?n={i}"))[1].strip()
               for i in range(4)]
        self.sink.wait_for(4, path="/mtls", timeout=30)
        # Every replica applied the publishes (raft over TLS).
        target = leader.status()["applied_index"]
        for n in cluster.nodes:
            qh.wait_until(lambda n=n: n.status()["applied_index"] >= target,
                          20, f"{n.name} to apply index {target}")
        self.assertEqual(len(ids), 4)
        for n in cluster.nodes:
            self.assertIn("mutual TLS between nodes", self.logs(n))
        text = qh.http_call(leader.http_addr, "GET", "/metrics",
                            cafile=leader.tls_ca, parse=None)[2].decode()
        line = [ln for ln in text.splitlines()
                if ln.startswith("qraft_tls_cert_expiry_seconds ")]
        self.assertEqual(len(line), 1, text)
        expiry = int(line[0].split()[1])
        self.assertGreater(expiry, time.time())
        self.assertLess(expiry, time.time() + 3 * 86400)
        # The test certificates live 2 days: the node warned at start.
        self.assertIn("expires in", self.logs(leader))

    def test_rogues_cannot_join_vote_or_append(self):
        cluster = self.cluster
        certs = cluster.certs
        leader = cluster.leader()
        term = leader.status()["term"]
        d = certs.dir
        # A certificate for id 4 from another CA.
        qh._openssl_key(d / "rogue4.key")
        certs.sign(d / "rogue4.key", d / "rogue4.pem", node_id=4,
                   ca=certs.other_ca, ca_key=certs.other_ca_key)
        # Node 2's own certificate and key, used by a process claiming id 3.
        cert2, key2 = certs.node(2)
        rogues = [
            Rogue(4, cluster, ["--tls-cert", d / "rogue4.pem", "--tls-key",
                               d / "rogue4.key", "--tls-ca",
                               certs.other_ca], certs.other_ca),
            Rogue(5, cluster, [], None),
            Rogue(3, cluster, ["--tls-cert", cert2, "--tls-key", key2,
                               "--tls-ca", certs.ca], certs.ca),
        ]
        for r in rogues:
            self.addCleanup(r.cleanup)
            r.start(wait=False)

        def refused(text):
            return lambda: any(text in self.logs(n) for n in cluster.nodes)

        qh.wait_until(
            lambda: "certificate verify failed" in self.logs(rogues[0]), 20,
            "the other CA's rogue to fail verifying the cluster")
        qh.wait_until(refused("claims to be node 3 with the certificate of "
                              "node 2"), 20,
                      "the cluster to refuse node 2's certificate as node 3")
        qh.wait_until(refused("refusing the raft connection from"), 20,
                      "the cluster to refuse the plaintext rogue")
        # Let the rogues campaign a few election timeouts more.
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            for r in rogues:
                r.check_not_crashed()
            time.sleep(0.2)
        cluster.check_not_crashed()
        if os.environ.get("QRAFT_TEST_SHOW_LOGS"):
            for n in cluster.nodes + rogues:
                print(n.name, [ln for ln in self.logs(n).splitlines()
                               if "raft" in ln and "WARN" in ln][:4])
        # The cluster's term did not move, nor its leader.
        self.assertEqual(cluster.leader().id, leader.id)
        self.assertEqual(leader.status()["term"], term)
        applied = leader.status()["applied_index"]
        for r in rogues:
            st = r.try_status()
            if st is not None:  # it never learnt the log, nor a leader
                self.assertLess(st["applied_index"], applied, r.name)
                self.assertIn(st.get("leader_id") or 0, (0, r.id), r.name)
            # Nothing was replicated into its data dir beyond its own
            # bootstrap: no snapshot and a small raft log.
            raft = r.data_dir / "raft"
            self.assertFalse(any(p.name.startswith("snapshot")
                                 for p in raft.iterdir()), r.name)

    def test_garbage_on_the_raft_port_is_dropped_without_a_leak(self):
        node = self.cluster.followers()[0]
        before = open_fds(node)
        garbage = connect(node.raft_addr)
        garbage.sendall(b"\x00\x01garbage that is not TLS\r\n" * 8)
        # The stock transport's plaintext preamble: protocol 1, id 9.
        plain = connect(node.raft_addr)
        addr = b"127.0.0.1:1\0\0\0\0\0"
        plain.sendall(struct.pack("<QQQ", 1, 9, len(addr)) + addr)
        idle = [connect(node.raft_addr) for _ in range(3)]
        # A member's certificate, a finished handshake, then no preamble.
        ctx = qh.tls_client_context(self.cluster.certs.ca)
        ctx.load_cert_chain(*map(str, self.cluster.certs.node(1)))
        silent = ctx.wrap_socket(connect(node.raft_addr),
                                 server_hostname="127.0.0.1")
        self.assertTrue(closed_by_server(garbage, HANDSHAKE_MS / 500))
        self.assertTrue(closed_by_server(plain, HANDSHAKE_MS / 500))
        for s in idle:
            self.assertTrue(closed_by_server(s, 10 * HANDSHAKE_MS / 1000))
        self.assertTrue(closed_by_server(silent, 10 * HANDSHAKE_MS / 1000))
        for s in idle + [garbage, plain, silent]:
            s.close()
        qh.wait_until(lambda: open_fds(node) <= before, 10,
                      "the node's descriptors back to where they were")
        node.check_not_crashed()
        self.assertIn("refusing the raft connection from", self.logs(node))
        self.assertIn("no raft preamble within", self.logs(node))
        # Still a working member.
        self.cluster.cli("publish", self.sink.url("/after-garbage"))
        self.assertEqual(node.status()["node_id"], node.id)

    def test_oversized_certificates_are_refused_without_a_leak(self):
        # A certificate of ~200 KB (thousands of names), signed by the
        # cluster CA and naming node 1: over what a node takes from a
        # peer, on the raft port and on the RPC port (which asks clients
        # for one). The handshake fails at once; the node stays whole.
        certs = self.cluster.certs
        cert = certs.dir / "huge.pem"
        key = certs.dir / "huge.key"
        if not cert.exists():
            qh._openssl_key(key)
            certs.sign(key, cert, node_id=1, extra_names=(
                f"n{i:05d}.oversized.example" for i in range(6000)))
        self.assertGreater(cert.stat().st_size, 150_000)
        node = self.cluster.followers()[0]
        before = open_fds(node)
        for addr in (node.raft_addr, node.rpc_addr):
            ctx = qh.tls_client_context(certs.ca)
            ctx.load_cert_chain(str(cert), str(key))
            start = time.monotonic()
            with self.assertRaises(OSError, msg=addr):
                s = ctx.wrap_socket(connect(addr),
                                    server_hostname="127.0.0.1")
                try:
                    # TLS 1.3: the server reads the client's certificate
                    # after the client's handshake ended; its refusal
                    # comes with the first read.
                    s.settimeout(5)
                    if s.recv(1) == b"":
                        raise ConnectionResetError("closed by the node")
                finally:
                    s.close()
            self.assertLess(time.monotonic() - start, 5, addr)
        qh.wait_until(lambda: open_fds(node) <= before, 10,
                      "the node's descriptors back to where they were")
        node.check_not_crashed()
        self.assertEqual(node.status()["node_id"], node.id)
        # OpenSSL's limit on a peer's certificate list (100 KiB) said it.
        self.assertGreaterEqual(
            self.logs(node).count("excessive message size"), 2)

    def peer_call(self, node, body_field, body, cert=None):
        """One request with the peer token (the API token here) on node's
        RPC port over TLS, presenting cert (a (cert, key) pair) or none;
        returns the encoded answer."""
        ctx = qh.tls_client_context(self.cluster.certs.ca)
        if cert is not None:
            ctx.load_cert_chain(*map(str, cert))
        s = ctx.wrap_socket(connect(node.rpc_addr),
                            server_hostname="127.0.0.1")
        try:
            req = qh.request(7, self.cluster.token, body_field, body)
            s.sendall(struct.pack(">I", len(req)) + req)
            (n,) = struct.unpack(">I", _read_exact(s, 4))
            return _read_exact(s, n)
        finally:
            s.close()

    def test_peer_requests_need_a_node_certificate(self):
        # The CLI presents no client certificate: client kinds work.
        leader = self.cluster.leader()
        rc, _, err = leader.cli("status", "--local", check=False)
        self.assertEqual(rc, 0, err)
        # A node-to-node kind (the membership probe) with the peer token
        # but no certificate is refused.
        answer = self.peer_call(leader, PROBE_FIELD, b"")
        self.assertIn(b"client certificate from the cluster CA", answer)
        # With node 3's certificate a heartbeat for node 2 is refused.
        heartbeat = qh.pb_bytes(1, qh.pb_uint(1, 2))  # info.id
        answer = self.peer_call(leader, HEARTBEAT_FIELD, heartbeat,
                                self.cluster.certs.node(3))
        self.assertIn(b"a request for node 2 with the certificate of node 3",
                      answer)
        qh.wait_until(
            lambda: "refused a node-to-node request" in self.logs(leader),
            10, "the leader to log the refusal")
        leader.check_not_crashed()


def _read_exact(sock, n):
    buf = b""
    sock.settimeout(10)
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise AssertionError("connection closed")
        buf += chunk
    return buf


if __name__ == "__main__":
    unittest.main()
