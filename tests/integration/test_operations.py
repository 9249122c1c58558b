"""Operator tasks on a real node: signing-key rotation, replaying the DLQ by
filter, and the DLQ's retention."""

import base64
import hashlib
import hmac
import json
import unittest

import qraft_harness as qh
from http_sink import HttpSink, Reply, start_sink


def verifies(token, key):
    head, payload, sig = token.split(".")
    want = hmac.new(key.encode(), f"{head}.{payload}".encode(),
                    hashlib.sha256).digest()
    return hmac.compare_digest(
        base64.urlsafe_b64decode(sig + "=" * (-len(sig) % 4)), want)


class OperationsTest(unittest.TestCase):
    def start(self, *extra_args):
        self.sink = start_sink(self)
        self.node = qh.start_dev_node(self, extra_args=extra_args)

    def publish(self, path, *args):
        _, out, _ = self.node.cli("publish", self.sink.url(path), *args)
        return out.strip()

    def state(self, message_id):
        _, out, _ = self.node.cli("get", message_id, "--json")
        return json.loads(out)["state"]

    def wait_state(self, message_id, state, timeout=30):
        qh.wait_until(lambda: self.state(message_id) == state, timeout,
                      f"{message_id} {state}")

    def dlq_ids(self):
        return set(qh.list_all_ids(self.node, "dlq", "ls"))

    def test_key_rotation_keeps_receivers_verifying(self):
        self.start()
        env = self.node.read_env()
        _, out, _ = self.node.cli("keys", "--json")
        keys = json.loads(out)
        self.assertEqual(keys["current"], env["QSTASH_CURRENT_SIGNING_KEY"])
        self.assertEqual(keys["next"], env["QSTASH_NEXT_SIGNING_KEY"])

        _, out, _ = self.node.cli("keys", "--rotate", "--json")
        rotated = json.loads(out)
        self.assertEqual(rotated["current"], keys["next"])
        self.assertNotEqual(rotated["next"], keys["next"])
        self.assertRegex(rotated["next"], r"^sig_\w{28}$")

        # Signed with the new current key: a receiver that knew the old
        # next key verifies without redeploying.
        self.publish("/after-rotation", "--body", "x")
        req = self.sink.wait_for(1, path="/after-rotation", timeout=30)[0]
        token = req.header("Upstash-Signature")
        self.assertTrue(verifies(token, keys["next"]))
        self.assertFalse(verifies(token, keys["current"]))

    def test_dlq_replay_by_filter(self):
        self.start()
        self.sink.script("/a", Reply(404), Reply(404), Reply(200))
        self.sink.script("/b", Reply(404))
        a1 = self.publish("/a")
        a2 = self.publish("/a")
        b1 = self.publish("/b")
        for message_id in (a1, a2, b1):
            self.wait_state(message_id, "dead_lettered")

        rc, out, _ = self.node.cli("dlq", "replay", "--url",
                                   self.sink.url("/a"), "--yes")
        self.assertEqual(sorted(out.split()), sorted([a1, a2]))
        for message_id in (a1, a2):
            self.wait_state(message_id, "delivered")
        self.assertEqual(self.dlq_ids(), {b1})

        # Nothing matches: nothing is replayed, and that is not an error.
        _, out, _ = self.node.cli("dlq", "replay", "--category",
                                  "server_error", "--yes")
        self.assertEqual(out.strip(), "")
        # Ids and a filter together are refused.
        rc, _, err = self.node.cli("dlq", "replay", b1, "--all", check=False)
        self.assertEqual(rc, 2)
        self.assertIn("not both", err)

        self.sink.script("/b", Reply(200))
        _, out, _ = self.node.cli("dlq", "replay", "--all", "--yes")
        self.assertEqual(out.split(), [b1])
        self.wait_state(b1, "delivered")

    def test_dead_letters_expire_after_the_retention(self):
        self.start("--dlq-retention", "1s")
        self.sink.script("/gone", Reply(404))
        message_id = self.publish("/gone")
        self.wait_state(message_id, "dead_lettered")
        # The leader prunes every few seconds.
        qh.wait_until(lambda: message_id not in self.dlq_ids(), 40,
                      "the dead letter to expire")
        rc, _, _ = self.node.cli("get", message_id, check=False)
        self.assertEqual(rc, 3, "an expired dead letter is gone")


class FinishedMessagesTest(unittest.TestCase):
    def test_finished_messages_expire_after_the_retention(self):
        """Delivered and cancelled messages leave the state after
        --done-retention; a pending one stays."""
        sink = HttpSink()
        sink.start()
        self.addCleanup(sink.stop)
        node = qh.start_dev_node(self, extra_args=["--done-retention", "1s"])
        _, out, _ = node.cli("publish", sink.url("/done"))
        delivered = out.strip()
        _, out, _ = node.cli("publish", sink.url("/later"), "--delay", "1h")
        cancelled = out.strip()
        node.cli("cancel", cancelled)
        _, out, _ = node.cli("publish", sink.url("/later"), "--delay", "1h")
        pending = out.strip()
        sink.wait_for(1, path="/done", timeout=30)

        def gone(message_id):
            rc, _, _ = node.cli("get", message_id, check=False)
            return rc == 3
        # The leader prunes every few seconds.
        qh.wait_until(lambda: gone(delivered) and gone(cancelled), 40,
                      "the finished messages to expire")
        self.assertFalse(gone(pending))


if __name__ == "__main__":
    unittest.main()
