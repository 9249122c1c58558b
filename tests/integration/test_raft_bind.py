"""--raft-bind: a node listens for raft where it is told and is reached at
its --raft address (a container behind a stable service address:
deploy/k8s/). A 3-node cluster whose nodes listen on 0.0.0.0 and are named
by 127.0.0.1 elects a leader and replicates a publish; a bind address with
another port, or a name, is refused at start."""

import unittest

import qraft_harness as qh


def listening(port):
    """The local addresses ("0100007F" style hex, as /proc/net/tcp writes
    them) of the IPv4 sockets listening on port."""
    out = set()
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            fields = line.split()
            addr, state = fields[1], fields[3]
            ip, p = addr.split(":")
            if state == "0A" and int(p, 16) == port:  # 0A: LISTEN
                out.add(ip)
    return out


class RaftBindTest(unittest.TestCase):
    def test_cluster_listens_on_bind_address(self):
        cluster = qh.Cluster(n=3)
        self.addCleanup(cluster.cleanup)
        for n in cluster.nodes:
            n.extra_args += ["--raft-bind", f"0.0.0.0:{n.raft_port}"]
        cluster.start()
        cluster.leader()
        cluster.wait_ready()
        for n in cluster.nodes:
            self.assertEqual(listening(n.raft_port), {"00000000"}, n.id)
        _, out, _ = cluster.cli("publish", "http://127.0.0.1:9/x")
        self.assertIn("msg_", out)
        target = cluster.leader().status()["commit_index"]
        for n in cluster.nodes:
            qh.wait_until(lambda n=n: n.status()["applied_index"] >= target,
                          20, f"node {n.id} to apply the publish")

    def test_bad_bind_address_is_refused(self):
        for bind, why in (("0.0.0.0:1", "its port must be --raft's"),
                          ("localhost:7200", "is not IPV4:PORT")):
            rc, _, err = qh.run([qh.binary("qraftd"), "--id", "1",
                                 "--raft", "127.0.0.1:7200", "--raft-bind",
                                 bind, "--token", "t"], check=False)
            self.assertNotEqual(rc, 0)
            self.assertIn(why, err)


if __name__ == "__main__":
    unittest.main()
