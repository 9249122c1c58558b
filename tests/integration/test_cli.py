"""The qraft CLI's commands beyond messages and the DLQ, run as an operator
runs them against a real dev node: queues, schedules, logs, cancel by
filter, and --json on writes. Each command: the happy path (what a user
reads, the exit code) and one error."""

import json
import unittest

import qraft_harness as qh

# Nothing here is ever delivered: messages wait an hour, and schedules
# are paused or deleted before they tick.
DEST = "http://127.0.0.1:9/never"

EXIT_USAGE = 2
EXIT_NOTFOUND = 3


class CliTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.node = qh.start_dev_node()

    @classmethod
    def tearDownClass(cls):
        cls.node.cleanup()

    def cli(self, *args, check=True):
        return self.node.cli(*args, check=check)

    def cli_json(self, *args):
        _, out, _ = self.cli(*args, "--json")
        return json.loads(out)

    def assert_fails(self, rc_want, args, stderr_has):
        rc, out, err = self.cli(*args, check=False)
        self.assertEqual(rc, rc_want, f"qraft {' '.join(args)}: {err}")
        self.assertIn(stderr_has, err)
        return out, err

    # Queues.
    def test_queue_lifecycle(self):
        _, out, _ = self.cli("queue", "set", "orders", "--parallelism", "2")
        self.assertRegex(out, r"parallelism:\s+2 at a time")
        _, out, _ = self.cli("queue", "ls")
        self.assertRegex(out, r"(?m)^orders\s+2\s+no\s+0\s+0$")
        self.cli("publish", DEST, "--queue", "orders", "--delay", "1h")
        self.assertEqual(self.cli_json("queue", "get", "orders")["name"], "orders")

        self.assertEqual(
            self.cli_json("queue", "pause", "orders"),
            {"queue": "orders", "done": "paused"},
        )
        self.assertTrue(self.cli_json("queue", "get", "orders")["paused"])
        _, out, _ = self.cli("queue", "resume", "orders")
        self.assertEqual(out, "queue orders resumed\n")
        self.assertFalse(self.cli_json("queue", "get", "orders")["paused"])

        _, out, _ = self.cli("queue", "rm", "orders")
        self.assertEqual(out, "queue orders deleted\n")
        self.assert_fails(EXIT_NOTFOUND, ("queue", "get", "orders"),
                          "not found")

    def test_queue_errors(self):
        self.assert_fails(EXIT_NOTFOUND, ("queue", "pause", "no-such"),
                          "not found")
        self.assert_fails(EXIT_USAGE, ("queue", "frobnicate"),
                          "unknown subcommand 'frobnicate'")
        self.assert_fails(EXIT_USAGE,
                          ("queue", "set", "q", "--parallelism", "0"),
                          "--parallelism '0'")

    # Schedules.
    def test_schedule_lifecycle(self):
        _, out, _ = self.cli("schedule", "create", DEST, "--cron",
                             "0 0 1 1 *", "--body", "tick", "--retries", "0")
        sid = out.strip()
        self.assertRegex(sid, r"^scd_\S+$", "create prints the id alone")
        _, out, _ = self.cli("schedule", "ls")
        self.assertRegex(out, rf"(?m)^{sid}\s+0 0 1 1 \*\s+no\s+\S+\s+{DEST}$")
        got = self.cli_json("schedule", "get", sid)
        self.assertEqual((got["url"], got["body_bytes"], got["paused"]),
                         (DEST, 4, False))

        self.cli("schedule", "pause", sid)
        _, out, _ = self.cli("schedule", "get", sid)
        self.assertRegex(out, r"paused:\s+yes")
        self.assertRegex(out, r"next tick:\s+- \(paused\)")
        self.cli("schedule", "resume", sid)
        self.assertFalse(self.cli_json("schedule", "get", sid)["paused"])

        # --id names the schedule (and replaces it); --json on the write.
        got = self.cli_json("schedule", "create", DEST, "--cron",
                            "0 0 1 1 *", "--id", "nightly")
        self.assertEqual(got, {"id": "nightly"})
        for s in (sid, "nightly"):
            _, out, _ = self.cli("schedule", "delete", s)  # an alias of rm
            self.assertEqual(out, f"schedule {s} deleted\n")
        self.assert_fails(EXIT_NOTFOUND, ("schedule", "get", sid), "not found")

    def test_schedule_errors(self):
        self.assert_fails(EXIT_USAGE, ("schedule", "create", DEST),
                          "needs --cron")
        _, err = self.assert_fails(1, ("schedule", "create", DEST, "--cron",
                                       "not a cron"), "cron")
        self.assert_fails(EXIT_NOTFOUND, ("schedule", "rm", "scd_nope"),
                          "not found")

    # --json on writes.
    def test_publish_json(self):
        got = self.cli_json("publish", DEST, "--delay", "1h")
        self.assertRegex(got["id"], r"^msg_")
        self.assertFalse(got["deduplicated"])
        again = self.cli_json("publish", DEST, "--delay", "1h", "--dedup-id",
                              got["id"])
        self.assertFalse(again["deduplicated"])
        third = self.cli_json("publish", DEST, "--delay", "1h", "--dedup-id",
                              got["id"])
        self.assertEqual((third["id"], third["deduplicated"]),
                         (again["id"], True))


if __name__ == "__main__":
    unittest.main()
