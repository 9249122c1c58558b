"""`qraftd --dev` as a developer uses it: the printed environment, health,
publishes that survive kill -9 and SIGTERM, and token checks."""

import re
import socket
import subprocess
import unittest
from concurrent.futures import ThreadPoolExecutor

import qraft_harness as qh

# Nothing here is ever delivered: every message waits an hour.
DEST = "http://127.0.0.1:9/never"
N_MESSAGES = 300
CLI_PARALLELISM = 8


class DevNodeTest(unittest.TestCase):
    def setUp(self):
        self.node = qh.start_dev_node(self)

    def publish(self, n, delay="1h"):
        """Publishes n messages in parallel through the CLI; returns their
        ids in order."""

        def one(i):
            _, out, _ = self.node.cli(
                "publish", DEST, "--body", f"message {i}", "--delay", delay
            )
            return out.strip()

        with ThreadPoolExecutor(CLI_PARALLELISM) as pool:
            ids = list(pool.map(one, range(n)))
        for mid in ids:
            self.assertRegex(mid, r"^msg_\S+$", "publish prints the id alone")
        self.assertEqual(len(set(ids)), n, "every publish got its own id")
        return ids

    def assert_pending(self, ids):
        def state(mid):
            rc, out, err = self.node.cli("get", mid, check=False)
            return mid, rc, out, err

        with ThreadPoolExecutor(CLI_PARALLELISM) as pool:
            results = list(pool.map(state, ids))
        not_pending = [
            (mid, rc, out.strip()[:200], err.strip()[:200])
            for mid, rc, out, err in results
            if rc != 0 or not re.search(r"\bpending\b", out)
        ]
        self.assertEqual(not_pending, [], "messages not shown pending")

    def assert_same_ids(self, listed, expected, what):
        missing = sorted(set(expected) - set(listed))
        extra = sorted(set(listed) - set(expected))
        self.assertEqual(
            (len(missing), len(extra)),
            (0, 0),
            f"{what}: {len(listed)} listed, {len(expected)} expected; "
            f"missing {missing[:3]}..., unexpected {extra[:3]}...",
        )
        self.assertEqual(len(listed), len(set(listed)), f"{what}: duplicates")

    def listed_pending(self):
        return qh.list_all_ids(self.node, "ls", "--state", "pending")

    def test_prints_environment_and_serves_healthz(self):
        env = self.node.read_env()
        lines = [
            line.partition("=")[0]
            for line in self.node.stdout_lines()
            if "=" in line
        ]
        self.assertEqual(lines, list(qh.ENV_KEYS), "the five lines, in order")
        self.assertEqual(env["QSTASH_URL"], f"http://{self.node.http_addr}")
        self.assertEqual(env["QSTASH_TOKEN"], self.node.token)
        self.assertEqual(env["QRAFT_ENDPOINTS"], self.node.rpc_addr)
        current = env["QSTASH_CURRENT_SIGNING_KEY"]
        nxt = env["QSTASH_NEXT_SIGNING_KEY"]
        self.assertRegex(current, r"^sig_\S{16,}$")
        self.assertRegex(nxt, r"^sig_\S{16,}$")
        self.assertNotEqual(current, nxt)
        self.assertEqual(self.node.healthz(), 200)

        # The keys are generated once and persisted with the cluster.
        self.node.restart()
        self.assertEqual(self.node.read_env()["QSTASH_CURRENT_SIGNING_KEY"], current)
        self.assertEqual(self.node.read_env()["QSTASH_NEXT_SIGNING_KEY"], nxt)
        self.node.restart(kill=True)
        self.assertEqual(self.node.read_env()["QSTASH_CURRENT_SIGNING_KEY"], current)
        self.assertEqual(self.node.read_env()["QSTASH_NEXT_SIGNING_KEY"], nxt)
        self.assertEqual(self.node.healthz(), 200)

    def test_published_messages_survive_kill9(self):
        ids = self.publish(N_MESSAGES)
        self.assert_same_ids(self.listed_pending(), ids, "before kill -9")

        self.node.kill9()
        self.node.start()

        self.assert_pending(ids)
        self.assert_same_ids(self.listed_pending(), ids, "after restart")

    def test_wrong_token_is_unauthorized(self):
        for args in (("status",), ("publish", DEST, "--delay", "1h"), ("ls",)):
            rc, out, err = self.node.cli(*args, token="not-the-token", check=False)
            self.assertNotEqual(rc, 0, f"qraft {args[0]} with a wrong token")
            self.assertIn("unauthorized", (out + err).lower(), args[0])

        # Straight to the RPC port: the status code, and nothing stored.
        with qh.RawRpc(self.node.rpc_addr) as rpc:
            resp = rpc.call(qh.request(1, "not-the-token", 17))
            self.assertEqual(resp["status_name"], "UNAUTHORIZED", resp)
            self.assertEqual(resp["id"], 1)
            resp = rpc.call(
                qh.request(2, "", 10, qh.publish_request(DEST, b"x"))
            )
            self.assertEqual(resp["status_name"], "UNAUTHORIZED", resp)
        _, out, _ = self.node.cli("ls", "--json")
        self.assertEqual(qh.message_ids(out), [])

    def test_sigterm_exits_zero_and_keeps_data(self):
        ids = self.publish(20)
        self.node.terminate()  # fails unless the exit code is 0
        self.node.start()
        self.assert_pending(ids)
        self.assert_same_ids(self.listed_pending(), ids, "after SIGTERM")


class TakenPortTest(unittest.TestCase):
    """A port another process holds stops qraftd at start, and its last
    words name the listener, the address and the cause."""

    def assert_refuses_taken(self, which):
        node = qh.DevNode()
        self.addCleanup(node.cleanup)
        port = getattr(node, f"{which}_port")
        holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.addCleanup(holder.close)
        holder.bind(("127.0.0.1", port))
        holder.listen(1)
        node.start(wait=False)
        try:
            rc = node.proc.wait(qh.START_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.fail(f"qraftd kept running with its {which} port taken")
        self.assertNotEqual(rc, 0)
        last = node.stderr_tail(1)
        self.assertIn(which, last)
        self.assertIn(f"127.0.0.1:{port}", last)
        self.assertIn("address already in use", last.lower())

    def test_taken_raft_port(self):
        self.assert_refuses_taken("raft")

    def test_taken_rpc_port(self):
        self.assert_refuses_taken("rpc")

    def test_taken_http_port(self):
        self.assert_refuses_taken("http")


if __name__ == "__main__":
    unittest.main()
