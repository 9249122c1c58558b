"""A node cut off by a real partition fails fast. A follower: within
about the election timeout its writes and linearizable reads answer 503
(504 for a write already forwarded when the leader went out of reach:
outcome unknown), instead of hanging until the partition heals; stale
reads (?consistency=stale) still answer from its store; once healed, a
linearizable read through it sees what was written meanwhile. A leader:
its linearizable reads answer 503 once it steps down (it cannot commit the
read's barrier without a majority), its stale reads answer.

The partition is real packet loss: each node runs in its own cgroup (v2),
and iptables drops everything the isolated node sends (but its HTTP
answers to the test) and everything sent to its raft and RPC ports. Needs
root, iptables with the cgroup match and a cgroup2 hierarchy: skipped
otherwise."""

import os
import shutil
import subprocess
import sys
import time
import unittest

import qraft_harness as qh

CGROUP2 = "/sys/fs/cgroup/unified"
ELECTION_TIMEOUT_S = 0.4  # qraftd's default
# Raft draws each election timeout from [T, 2T]; then the next loop
# iteration answers. Generous for a loaded 2-core machine.
FAIL_FAST_S = 2 * ELECTION_TIMEOUT_S + 2.0


def cgroup2_root():
    for root in (CGROUP2, "/sys/fs/cgroup"):
        if os.path.exists(os.path.join(root, "cgroup.procs")) and \
                os.path.exists(os.path.join(root, "cgroup.controllers")):
            return root
    return None


def iptables(*args):
    subprocess.run(["iptables", "-w", *args], check=True,
                   capture_output=True)


def partition_supported():
    if os.geteuid() != 0 or shutil.which("iptables") is None:
        return "needs root and iptables"
    root = cgroup2_root()
    if root is None:
        return "needs a cgroup2 hierarchy"
    probe = os.path.join(root, f"qraft-probe-{os.getpid()}")
    try:
        os.makedirs(probe, exist_ok=True)
        rule = ["OUTPUT", "-m", "cgroup", "--path",
                os.path.basename(probe), "-j", "DROP"]
        iptables("-I", *rule)
        iptables("-D", *rule)
    except (OSError, subprocess.CalledProcessError) as exc:
        return f"iptables cgroup match unavailable: {exc}"
    finally:
        try:
            os.rmdir(probe)
        except OSError:
            pass
    return None


SKIP = partition_supported()


def http_call(node, token, method, target, body=None, headers=None,
              timeout=30):
    start = time.monotonic()
    status, _, got = qh.http_call(node.http_addr, method, target, body,
                                  headers, token=token, timeout=timeout)
    return status, got, time.monotonic() - start


def report(text):
    print(f"\n  test_partition: {text}", file=sys.stderr, flush=True)


@unittest.skipIf(SKIP, SKIP)
class PartitionTest(unittest.TestCase):
    def setUp(self):
        self.root = cgroup2_root()
        self.rules = []
        self.cluster = qh.Cluster(n=3)
        self.cgroups = {}
        for n in self.cluster.nodes:
            name = f"qraft-{os.getpid()}-{id(self)}-{n.id}"
            os.makedirs(os.path.join(self.root, name))
            self.cgroups[n.id] = name
            self.addCleanup(self.remove_cgroup, name)
            command = n.command
            procs = os.path.join(self.root, name, "cgroup.procs")

            def wrapped(command=command, procs=procs):
                # Into its cgroup before exec: every socket it opens, and
                # every one its listeners accept, is matched by the rule.
                return ["sh", "-c", f'echo $$ > {procs} && exec "$@"', "sh",
                        *command()]
            n.command = wrapped
        self.addCleanup(self.cluster.cleanup)
        self.addCleanup(self.heal)  # runs first: no rule outlives the test
        self.cluster.start()
        self.cluster.leader()
        self.cluster.wait_ready()

    def remove_cgroup(self, name):
        path = os.path.join(self.root, name)
        deadline = time.monotonic() + 10
        while os.path.exists(path):
            try:
                os.rmdir(path)
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)  # its process is still exiting

    def isolate(self, node):
        cg = self.cgroups[node.id]
        rules = [
            ["OUTPUT", "-m", "cgroup", "--path", cg, "-j", "DROP"],
            # Its HTTP answers still reach the test (inserted last: first).
            ["OUTPUT", "-m", "cgroup", "--path", cg, "-p", "tcp",
             "--sport", str(node.http_port), "-j", "ACCEPT"],
            ["INPUT", "-p", "tcp", "--dport", str(node.raft_port), "-j",
             "DROP"],
            ["INPUT", "-p", "tcp", "--dport", str(node.rpc_port), "-j",
             "DROP"],
        ]
        for rule in rules:
            iptables("-I", *rule)
            self.rules.append(rule)

    def heal(self):
        while self.rules:
            iptables("-D", *self.rules.pop())

    def call(self, node, method, target, body=None, headers=None):
        return http_call(node, self.cluster.token, method, target, body,
                         headers)

    def test_isolated_follower_fails_fast_and_stale_reads_answer(self):
        leader = self.cluster.leader()
        follower = [n for n in self.cluster.nodes if n is not leader][0]
        status, got, _ = self.call(follower, "POST",
                                   "/v2/publish/http://127.0.0.1:9/before",
                                   b"x", {"Upstash-Delay": "1h"})
        self.assertEqual(status, 200, got)
        before = got["messageId"]

        self.isolate(follower)

        # A write sent at once: forwarded to a leader out of reach, then
        # answered when this node forgets it (504: may or may not apply),
        # or refused (503) if it forgot already.
        status, got, took = self.call(follower, "POST",
                                      "/v2/publish/http://127.0.0.1:9/a",
                                      b"x", {"Upstash-Delay": "1h"})
        self.assertIn(status, (503, 504), got)
        self.assertLess(took, FAIL_FAST_S, got)
        report(f"first write through the isolated follower: {status} after "
               f"{took:.2f} s ({got['error']})")

        # Then writes and linearizable reads: 503 within the bound.
        status, got, took = self.call(follower, "POST",
                                      "/v2/publish/http://127.0.0.1:9/b",
                                      b"x", {"Upstash-Delay": "1h"})
        self.assertEqual(status, 503, got)
        self.assertIn("nothing was applied", got["error"])
        self.assertLess(took, FAIL_FAST_S, got)
        for target in (f"/v2/messages/{before}", "/v2/queues", "/v2/dlq",
                       "/v2/schedules", "/v2/topics", "/v2/keys"):
            status, got, took = self.call(follower, "GET", target)
            self.assertEqual(status, 503, f"{target}: {got}")
            self.assertLess(took, FAIL_FAST_S, f"{target}: {got}")

        # Stale reads answer from its store.
        status, got, _ = self.call(
            follower, "GET", f"/v2/messages/{before}?consistency=stale")
        self.assertEqual(status, 200, got)
        self.assertEqual(got["messageId"], before)
        status, got, _ = self.call(follower, "GET",
                                   "/v2/queues?consistency=stale")
        self.assertEqual(status, 200, got)

        # The majority goes on; a write there...
        others = [n for n in self.cluster.nodes if n is not follower]
        written = None
        deadline = time.monotonic() + 30
        while written is None and time.monotonic() < deadline:
            status, got, _ = self.call(others[0], "POST",
                                       "/v2/publish/http://127.0.0.1:9/c",
                                       b"x", {"Upstash-Delay": "1h"})
            if status == 200:
                written = got["messageId"]
        self.assertIsNotNone(written, "the majority side took no write")

        # ...is seen through the healed follower by its first answered
        # linearizable read (503 until it hears the leader again).
        self.heal()
        seen = {}

        def answered():
            status, got, _ = self.call(follower, "GET",
                                       f"/v2/messages/{written}")
            seen["last"] = (status, got)
            return status != 503
        qh.wait_until(answered, 30, lambda: f"an answer: {seen}")
        self.assertEqual(seen["last"][0], 200, seen)

    def test_isolated_leader_refuses_linearizable_reads(self):
        leader = self.cluster.leader()
        status, got, _ = self.call(leader, "POST",
                                   "/v2/publish/http://127.0.0.1:9/before",
                                   b"x", {"Upstash-Delay": "1h"})
        self.assertEqual(status, 200, got)
        before = got["messageId"]

        self.isolate(leader)

        # Its read barrier cannot commit; it steps down once it has heard
        # from no majority for an election timeout, and the read answers.
        status, got, took = self.call(leader, "GET",
                                      f"/v2/messages/{before}")
        self.assertEqual(status, 503, got)
        self.assertLess(took, FAIL_FAST_S, got)
        report(f"a read on the isolated leader: {status} after {took:.2f} s "
               f"({got['error']})")
        status, got, _ = self.call(
            leader, "GET", f"/v2/messages/{before}?consistency=stale")
        self.assertEqual(status, 200, got)


if __name__ == "__main__":
    unittest.main()
