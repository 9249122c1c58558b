"""TLS on the client RPC port (issue 15, points 1 and 3): a 3-node cluster
whose RPC ports serve TLS with certificates made at test time, and whose
nodes speak TLS to each other's RPC ports (heartbeats, leases, delivery
results, forwarded writes). The CLI works over TLS with --cacert; a wrong
CA, or a plaintext client, is a clear error at once, not a hang; a
connection that never finishes its handshake, or sends garbage, is closed
after the deadline while others are served, and leaves no descriptor
behind."""

import json
import os
import signal
import time
import unittest

import qraft_harness as qh
from http_sink import Reply, start_sink

HANDSHAKE_MS = 1000
MAX_CONNECTIONS = 8


open_fds = qh.open_fds
closed_by_server = qh.closed_by_server
connect = qh.connect_tcp


class TlsRpcTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.sink = start_sink()
        cls.cluster = qh.Cluster(
            tls=True,
            extra_args=[
                "--tls-handshake-timeout-ms", str(HANDSHAKE_MS),
                "--max-connections", str(MAX_CONNECTIONS),
            ],
        )
        try:
            cls.cluster.start()
            cls.cluster.leader()
            cls.cluster.wait_ready()
        except BaseException:
            cls.cluster.cleanup()
            cls.sink.stop()
            raise

    @classmethod
    def tearDownClass(cls):
        cls.cluster.cleanup()
        cls.sink.stop()

    def setUp(self):
        self.cluster.check_not_crashed()

    def plain_cli(self, *args, endpoints=None, timeout=qh.CLI_TIMEOUT):
        """`qraft` without --cacert."""
        argv = [qh.binary("qraft"), "--endpoints",
                endpoints or self.cluster.endpoints,
                "--token", self.cluster.token, *args]
        return qh.run(argv, check=False, timeout=timeout)

    def test_cli_over_tls_and_peer_calls(self):
        cluster = self.cluster
        leader = cluster.leader()

        # Heartbeats reach the leader over TLS: every node holds a lease
        # and owns shards.
        def every_node_owns_shards():
            nodes = leader.status()["nodes"]
            return len(nodes) == 3 and all(n["shards"] > 0 for n in nodes)

        qh.wait_until(every_node_owns_shards, 30,
                      "every node to hold a lease and own shards over TLS")

        # Publishes through a follower (forwarded to the leader over TLS)
        # and the leader; every message is delivered and its result
        # reported (results from followers' shards go over TLS too).
        self.sink.script("/tls", Reply(200))
        follower = cluster.followers()[0]
        ids = []
        for i in range(12):
            node = follower if i % 2 else leader
            _, out, _ = node.cli("publish", self.sink.url(f"/tls?n={i}"),
                                 "--body", f"m{i}",
                                 endpoints=node.rpc_addr)
            ids.append(out.strip())
        self.assertEqual(len(ids), 12)
        self.sink.wait_for(12, path="/tls", timeout=30)

        def all_delivered():
            for mid in ids:
                _, out, _ = cluster.cli("get", mid, "--json")
                if json.loads(out)["state"] != "delivered":
                    return False
            return True

        qh.wait_until(all_delivered, 30, "every message marked delivered")
        _, out, _ = cluster.cli("status", "--json")
        self.assertEqual(json.loads(out)["leader_id"], leader.id)

        # Through a follower the status is the leader's view (forwarded
        # over the nodes' TLS links): every node alive, not just the one
        # asked.
        follower = next(n for n in cluster.nodes if n is not leader)

        def leader_view():
            _, out, _ = cluster.cli("status", "--json",
                                    endpoints=follower.rpc_addr)
            view = json.loads(out)
            return (view["state"] == "leader" and
                    all(n["alive"] for n in view["nodes"]))

        qh.wait_until(leader_view, 20, "the leader's view through a follower")

    def test_wrong_ca_is_a_clear_error(self):
        start = time.monotonic()
        rc, _, err = self.plain_cli(
            "--cacert", str(self.cluster.certs.other_ca), "status")
        self.assertEqual(rc, 1, err)
        self.assertIn("TLS handshake with", err)
        self.assertIn("certificate", err)
        self.assertLess(time.monotonic() - start, 5, "a hang, not an error")

    def test_missing_ca_file_is_a_clear_error(self):
        rc, _, err = self.plain_cli("--cacert", "/nonexistent/ca.pem", "status")
        self.assertEqual(rc, 1, err)
        self.assertIn("--cacert /nonexistent/ca.pem", err)

    def test_plaintext_client_is_a_clear_error(self):
        start = time.monotonic()
        rc, _, err = self.plain_cli("status")
        self.assertEqual(rc, 1, err)
        self.assertIn("speaks TLS", err)
        self.assertLess(time.monotonic() - start, 5, "a hang, not an error")

    def test_half_open_and_garbage_connections_are_closed(self):
        # A follower: only clients connect to its RPC port.
        node = self.cluster.followers()[0]
        node.status()  # the CLI's own connection comes and goes
        before = open_fds(node)

        idle = [connect(node.rpc_addr) for _ in range(3)]
        garbage = connect(node.rpc_addr)
        garbage.sendall(b"\x00\x00\x00\x05hello" * 4)
        plain = connect(node.rpc_addr)
        plain.sendall(qh.request(1, self.cluster.token, 17))
        # A TLS record header, then junk: the handshake fails.
        bad_hello = connect(node.rpc_addr)
        bad_hello.sendall(b"\x16\x03\x01\x00\x08" + b"\xffjunk!!!")

        # Garbage and a plaintext request end at once (a TLS alert, then
        # the close), not at the deadline.
        self.assertTrue(closed_by_server(garbage, HANDSHAKE_MS / 2000))
        self.assertTrue(closed_by_server(plain, HANDSHAKE_MS / 2000))
        self.assertTrue(closed_by_server(bad_hello, HANDSHAKE_MS / 2000))
        # Meanwhile others are served.
        self.assertEqual(node.status()["node_id"], node.id)
        # The half-open ones are closed once the deadline passed.
        start = time.monotonic()
        for s in idle:
            self.assertTrue(closed_by_server(s, 10 * HANDSHAKE_MS / 1000))
        self.assertLess(time.monotonic() - start, 5 * HANDSHAKE_MS / 1000)
        for s in idle + [garbage, plain, bad_hello]:
            s.close()
        qh.wait_until(lambda: open_fds(node) <= before, 10,
                      "the node's descriptors back to where they were")
        node.check_not_crashed()
        # The node says why, naming OpenSSL's reason or the deadline.
        log = node.stderr_path.read_text()
        self.assertIn("not TLS", log)
        self.assertIn("TLS handshake failed", log)
        self.assertIn(f"did not finish within {HANDSHAKE_MS} ms", log)

    def test_connection_cap_holds_for_handshakes(self):
        node = self.cluster.followers()[-1]
        held = [connect(node.rpc_addr) for _ in range(MAX_CONNECTIONS)]
        try:
            # Over the cap: refused at once, before any handshake.
            extra = connect(node.rpc_addr)
            self.assertTrue(closed_by_server(extra, 2))
            extra.close()
            # The held ones are closed at the deadline; then the node
            # serves again.
            for s in held:
                self.assertTrue(closed_by_server(s, 10 * HANDSHAKE_MS / 1000))
            qh.wait_until(lambda: node.try_status() is not None, 10,
                          "the node to serve again after the cap")
        finally:
            for s in held:
                s.close()


class PeerVerificationTest(unittest.TestCase):
    def test_a_node_that_cannot_verify_the_others_gets_no_shards(self):
        # Node 3 trusts another CA: it cannot verify the others (nor they
        # its connections: mutual TLS on raft, test_tls_raft), so it never
        # holds a lease, and says why.
        cluster = qh.Cluster(tls=True)
        self.addCleanup(cluster.cleanup)
        node3 = cluster.node(3)
        node3.extra_args += ["--tls-ca", str(cluster.certs.other_ca)]
        cluster.start(nodes=cluster.nodes[:2])
        node3.start(wait=False)

        def leader_of_two():
            for n in cluster.nodes[:2]:
                st = n.try_status()
                if st is not None and st.get("leader_id") == n.id:
                    return n
            return None

        leader = qh.wait_until(leader_of_two, 20, "node 1 or 2 to lead")

        def node3_refused():
            log = node3.stderr_path.read_text()
            return "certificate verify failed" in log

        qh.wait_until(node3_refused, 20,
                      "node 3 to log that the others' certificates fail")

        def others_own_every_shard():
            nodes = {n["id"]: n for n in leader.status()["nodes"]}
            return (nodes.get(3, {"shards": 0})["shards"] == 0 and
                    all(nodes[i]["shards"] > 0 for i in (1, 2)))

        qh.wait_until(others_own_every_shard, 20,
                      "nodes 1 and 2 to own the shards, node 3 none")


class TlsReloadTest(unittest.TestCase):
    def test_sighup_reloads_the_certificates(self):
        # A CA rotation: every node trusts the old and the new CA, then
        # gets a certificate of the new one, and SIGHUP.
        cluster = qh.start_cluster(self, tls=True)
        certs = cluster.certs
        d = certs.dir

        # Each node's certificate, same key and id, signed by the new CA.
        new_certs = {}
        for n in cluster.nodes:
            cert, key = certs.node(n.id)
            new_certs[cert] = certs.sign(key, d / f"new-{n.id}.pem",
                                         node_id=n.id, ca=certs.other_ca,
                                         ca_key=certs.other_ca_key)
        (d / "bundle.pem").write_text(
            certs.ca.read_text() + certs.other_ca.read_text())
        os.replace(d / "bundle.pem", certs.ca)
        for cert, new in new_certs.items():
            os.replace(new, cert)
        # Before SIGHUP the nodes still present the old certificate.
        rc, _, err = cluster.cli("status", "--local", check=False,
                                 endpoints=cluster.nodes[0].rpc_addr)
        self.assertEqual(rc, 0, err)
        for n in cluster.nodes:
            n.proc.send_signal(signal.SIGHUP)
        for n in cluster.nodes:
            qh.wait_until(
                lambda n=n: "SIGHUP: TLS certificate reloaded"
                in n.stderr_path.read_text(),
                10, f"{n.name} to reload its certificates")
        # New connections get the new certificate: a client that trusts
        # only the new CA gets through.
        rc, _, err = cluster.cli("--cacert", str(certs.other_ca), "status",
                                 check=False)
        self.assertEqual(rc, 0, err)
        # A file that does not load keeps the old ones.
        certs.node(1)[1].write_text("not a key\n")
        cluster.nodes[0].proc.send_signal(signal.SIGHUP)
        qh.wait_until(
            lambda: "TLS certificate not reloaded"
            in cluster.nodes[0].stderr_path.read_text(),
            10, "node 1 to refuse the broken key")
        rc, _, err = cluster.cli("--cacert", str(certs.other_ca), "status",
                                 "--local", check=False,
                                 endpoints=cluster.nodes[0].rpc_addr)
        self.assertEqual(rc, 0, err)
        cluster.check_not_crashed()


class JoiningNode(qh.ClusterNode):
    """A node started with --join (as in test_membership)."""

    def command(self):
        argv = super().command()
        i = argv.index("--peers")
        return argv[:i] + ["--join"] + argv[i + 2:]


class TlsMembershipTest(unittest.TestCase):
    def test_cluster_add_probes_the_new_node_over_tls(self):
        cluster = qh.start_cluster(self, tls=True)
        joiner = JoiningNode(4, cluster, cluster.token)
        self.addCleanup(joiner.cleanup)
        joiner.start(wait=False)
        # The leader probes the joiner's RPC port (TLS) before adding it.
        cluster.cli("cluster", "add", "4", joiner.raft_addr,
                    "--rpc", joiner.rpc_addr)
        cluster.nodes.append(joiner)
        joiner.wait_serving()
        leader = cluster.leader()

        def joiner_owns_shards():
            nodes = {n["id"]: n for n in leader.status()["nodes"]}
            return 4 in nodes and nodes[4]["shards"] > 0

        qh.wait_until(joiner_owns_shards, 30,
                      "the new node to hold a lease over TLS")


if __name__ == "__main__":
    unittest.main()
