"""A full disk is an error, not a signal (issue 10, findings 3 and 7): a
`qraftd --dev` whose data dir is a 64 MiB tmpfs is filled by publishes
until it refuses them. Refusals are HTTP 507 with a sentence that says what
is full and by how much (not a dropped connection); the node keeps
serving; every publish that got 200 is readable; cancels and DLQ deletes
still work; once space is freed, publishing works again. And a disk that
another process fills past the reserve stops the node with an error and a
log line, never a signal, and loses nothing.

Needs root (it mounts a tmpfs); skipped otherwise."""

import os
import re
import subprocess
import unittest

import qraft_harness as qh

WAIT = 20
TMPFS_SIZE = "64m"
# More than raft's segments (8 MiB each, prepared ahead) may take meanwhile.
BALLAST_BYTES = 16 * 1024 * 1024
BODY = b"x" * (64 * 1024)
# A 64 MiB disk holds far fewer 64 KiB messages than this.
MAX_PUBLISHES = 1000
DEAD_URL = "http://127.0.0.1:9/dead"  # nothing listens: refused at once


def mount_tmpfs(path):
    path.mkdir(parents=True, exist_ok=True)
    return subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={TMPFS_SIZE}", "tmpfs",
         str(path)],
        capture_output=True, text=True, check=False)


@unittest.skipUnless(hasattr(os, "geteuid") and os.geteuid() == 0,
                     "mounting a tmpfs needs root")
class DiskFullTest(unittest.TestCase):
    def setUp(self):
        self.node = qh.DevNode()
        self.addCleanup(self.node.cleanup)  # runs last: removes the dir
        mounted = mount_tmpfs(self.node.data_dir)
        if mounted.returncode != 0:
            self.skipTest(f"cannot mount a tmpfs: {mounted.stderr.strip()}")
        self.addCleanup(self.unmount)  # runs first: stops the node, unmounts
        # Room an operator can give back later: a file on the same disk.
        self.ballast = self.node.data_dir / "ballast"
        with open(self.ballast, "wb") as f:
            f.write(b"\0" * BALLAST_BYTES)
        self.node.start()

    def unmount(self):
        self.node.kill9()
        subprocess.run(["umount", str(self.node.data_dir)], check=False)

    def call(self, method, target, body=None, headers=None):
        return qh.http_call(self.node.http_addr, method, target, body=body,
                            headers=headers, token=self.node.token)

    def publish(self, url="http://127.0.0.1:9/later", **headers):
        hdrs = {"Upstash-Delay": "1h"}
        hdrs.update(headers)
        return self.call("POST", f"/v2/publish/{url}", body=BODY,
                         headers=hdrs)

    def metric(self, name):
        status, _, text = qh.http_call(self.node.http_addr, "GET",
                                       "/metrics", parse=None)
        self.assertEqual(status, 200)
        m = re.search(rf"^{name} (\d+)$", text.decode(), re.M)
        self.assertIsNotNone(m, f"{name} in /metrics")
        return int(m.group(1))

    def test_full_disk_refuses_writes_and_keeps_serving(self):
        # Two dead letters, for the DLQ delete once the disk is full.
        dead = []
        for _ in range(2):
            status, _, body = self.call(
                "POST", f"/v2/publish/{DEAD_URL}", body=b"dead",
                headers={"Upstash-Retries": "0"})
            self.assertEqual(status, 200, body)
            dead.append(body["messageId"])
        qh.wait_until(
            lambda: len(self.call("GET", "/v2/dlq")[2]["messages"]) == 2,
            WAIT, "two dead letters")
        self.assertGreater(self.metric("qraft_disk_free_bytes"), 0)
        self.assertGreater(self.metric("qraft_store_limit_bytes"),
                           self.metric("qraft_store_used_bytes"))

        # Fill until refused.
        accepted, refusal = [], None
        for _ in range(MAX_PUBLISHES):
            status, _, body = self.publish()
            if status == 200:
                accepted.append(body["messageId"])
                continue
            refusal = (status, body)
            break
        self.assertIsNotNone(refusal, "no publish was refused")
        status, body = refusal
        self.assertEqual(status, 507, body)
        self.assertGreater(len(accepted), 10)
        why = body["error"]
        self.assertIn("insufficient storage", why)
        self.assertIn(str(self.node.data_dir), why)
        self.assertRegex(why, r"short by \d+\.\d MiB")
        self.assertIn("Reads, cancels and deletes still work", why)

        # Refused again, every time, on a connection that stays usable; the
        # other writes that add data too; the node lives.
        for _ in range(3):
            status, _, body = self.publish()
            self.assertEqual(status, 507, body)
        for method, target, payload, hdrs in (
                ("POST", "/v2/queues", {"queueName": "q", "parallelism": 1},
                 {"Content-Type": "application/json"}),
                ("POST", "/v2/batch",
                 [{"destination": "http://127.0.0.1:9/b", "body": "b"}],
                 {"Content-Type": "application/json"}),
                ("POST", "/v2/enqueue/q/http://127.0.0.1:9/e", b"e", {}),
                ("POST", "/v2/schedules/http://127.0.0.1:9/s", b"{}",
                 {"Upstash-Cron": "* * * * *"})):
            with self.subTest(target=target):
                status, _, body = self.call(method, target, body=payload,
                                            headers=hdrs)
                self.assertEqual(status, 507, body)
                self.assertIn("insufficient storage", body["error"])
        # The RPC face and the CLI say the same.
        rc, out, err = self.node.cli("publish", "http://127.0.0.1:9/cli",
                                     "--delay", "1h", check=False)
        self.assertEqual(rc, 1, (out, err))
        self.assertIn("insufficient storage: the disk of", err)
        self.assertTrue(self.node.running(), self.node.stderr_tail())
        self.assertEqual(self.node.healthz(), 200)
        self.assertGreaterEqual(self.metric("qraft_writes_refused_total"), 9)
        self.assertIn("WARN  admit: refusing writes", self.node.stderr_tail(400))
        qh.wait_until(
            lambda: "% or more of the" in self.node.stderr_tail(400), WAIT,
            "the WARN at 80% of the limit")
        self.assertGreaterEqual(self.metric("qraft_store_used_bytes") * 100,
                                self.metric("qraft_store_limit_bytes") * 80)

        # Every acknowledged publish is readable.
        for mid in accepted:
            status, _, body = self.call("GET", f"/v2/messages/{mid}")
            self.assertEqual(status, 200, (mid, body))
            self.assertEqual(body["messageId"], mid)

        # Cancels and DLQ deletes still work.
        status, _, body = self.call("DELETE", f"/v2/messages/{accepted[0]}")
        self.assertIn(status, (200, 202), body)
        status, _, body = self.call(
            "GET", f"/v2/logs?messageId={accepted[0]}&order=earliestFirst")
        self.assertEqual(status, 200, body)
        self.assertEqual(body["logs"][-1]["state"], "CANCELLED", body)
        status, _, body = self.call("DELETE", f"/v2/dlq/{dead[0]}")
        self.assertEqual(status, 200, body)
        status, _, body = self.call("GET", "/v2/dlq")
        self.assertEqual([m["dlqId"] for m in body["messages"]], [dead[1]])

        # Space given back: publishing works again.
        self.ballast.unlink()
        last = []

        def accepted_again():
            last[:] = [self.publish()]
            return last[0] if last[0][0] == 200 else None

        status, _, body = qh.wait_until(
            accepted_again, WAIT,
            lambda: f"a publish to be accepted again (last: {last[0][2]})")
        mid = body["messageId"]
        status, _, body = self.call("GET", f"/v2/messages/{mid}")
        self.assertEqual(status, 200, body)
        self.assertTrue(self.node.running(), self.node.stderr_tail())
        self.assertNotIn("ERROR", self.node.stderr_tail(400))

    def test_disk_filled_by_another_process_is_an_error_not_a_signal(self):
        """Something else fills the disk past the reserve: the next commit
        meets ENOSPC. The node says so and stops (it used to die of SIGBUS
        with no log line); nothing acknowledged is lost; it starts again
        once space is freed."""
        accepted = []
        for _ in range(20):
            status, _, body = self.publish()
            self.assertEqual(status, 200, body)
            accepted.append(body["messageId"])
        fill = self.node.data_dir / "fill"
        with open(fill, "wb", buffering=0) as f:  # unbuffered: no late flush
            try:
                while True:
                    f.write(b"\0" * (64 * 1024))
            except OSError:
                pass  # the disk is full
        # Publishes are refused (unless a background commit, housekeeping or
        # a lease, already met the full disk and the node is stopping).
        try:
            status, _, body = self.publish()
            self.assertEqual(status, 507, body)
        except OSError:
            pass
        # Cancels are admitted, and need pages: the first commit that must
        # grow the store's file fails. The answers may be lost with the node.
        for mid in accepted[:10]:
            if not self.node.running():
                break
            try:
                self.call("DELETE", f"/v2/messages/{mid}")
            except OSError:
                break
        # Either every cancel fitted in pages the store already had (no
        # error to see: the node serves), or the node stops.
        qh.wait_until(
            lambda: not self.node.running() or self.node.healthz() == 200,
            WAIT, "the node to serve or to stop")
        if not self.node.running():
            rc = self.node.proc.wait(qh.STOP_TIMEOUT)
            self.assertEqual(rc, 1, f"exit {rc} (negative: a signal)"
                             f"{self.node._log_hint()}")
            self.assertIn("No space left on device",
                          self.node.stderr_tail(400))
        fill.unlink()
        if not self.node.running():
            self.node.start()
        # Every acknowledged message is there: waiting, or cancelled (the
        # messages route shows waiting ones only; the logs show the rest).
        for mid in accepted:
            status, _, body = self.call("GET", f"/v2/messages/{mid}")
            if status == 404:
                status, _, body = self.call(
                    "GET", f"/v2/logs?messageId={mid}&order=earliestFirst")
                self.assertEqual(status, 200, body)
                states = [e["state"] for e in body["logs"]]
                self.assertEqual((states[0], states[-1]),
                                 ("CREATED", "CANCELLED"), (mid, states))
            else:
                self.assertEqual(status, 200, (mid, body))
        status, _, body = self.publish()
        self.assertEqual(status, 200, body)


@unittest.skipUnless(hasattr(os, "geteuid") and os.geteuid() == 0,
                     "mounting a tmpfs needs root")
class ReplicaDiskFullTest(unittest.TestCase):
    """Every replica applies every write: a follower short of space makes
    the leader refuse writes too (the follower says so in its heartbeats),
    and the refusal names that node."""

    def setUp(self):
        self.cluster = qh.Cluster(3)
        self.addCleanup(self.cluster.cleanup)
        for node in self.cluster.nodes:
            mounted = mount_tmpfs(node.data_dir)
            if mounted.returncode != 0:
                self.skipTest(f"cannot mount a tmpfs: {mounted.stderr}")
            self.addCleanup(self.unmount, node)
        self.cluster.start()

    def unmount(self, node):
        node.kill9()
        subprocess.run(["umount", str(node.data_dir)], check=False)

    def publish(self, node):
        return qh.http_call(node.http_addr, "POST",
                            "/v2/publish/http://127.0.0.1:9/later", body=BODY,
                            headers={"Upstash-Delay": "1h"},
                            token=self.cluster.token)

    def test_follower_short_of_space_refuses_writes_cluster_wide(self):
        leader = self.cluster.leader()
        followers = [n for n in self.cluster.nodes if n is not leader]
        short, other = followers
        status, _, body = self.publish(leader)
        self.assertEqual(status, 200, body)
        mid = body["messageId"]

        # Leave the follower 8 MiB: below its 16 MiB reserve.
        st = os.statvfs(short.data_dir)
        ballast = short.data_dir / "ballast"
        with open(ballast, "wb") as f:
            f.write(b"\0" * (st.f_bavail * st.f_frsize - 8 * 1024 * 1024))

        def refused(node):
            status, _, body = self.publish(node)
            self.assertIn(status, (200, 507), body)
            return body if status == 507 else None

        body = qh.wait_until(lambda: refused(leader), WAIT,
                             "the leader to refuse a publish")
        self.assertIn(f"node {short.id} (a replica) insufficient storage",
                      body["error"])
        # Through the other follower (forwarded to the leader) too.
        body = qh.wait_until(lambda: refused(other), WAIT,
                             "a forwarded publish to be refused")
        self.assertIn(f"node {short.id}", body["error"])
        # Reads still work everywhere; nobody died.
        for node in self.cluster.nodes:
            status, _, body = qh.http_call(
                node.http_addr, "GET", f"/v2/messages/{mid}",
                token=self.cluster.token)
            self.assertEqual(status, 200, body)
        self.cluster.check_not_crashed()
        self.assertIn(f"node {short.id} is short of space",
                      leader.stderr_tail(400))

        ballast.unlink()
        qh.wait_until(lambda: self.publish(leader)[0] == 200, WAIT,
                      "publishes to be accepted again")
        self.cluster.check_not_crashed()


if __name__ == "__main__":
    unittest.main()
