"""The qraft CLI's commands beyond messages and the DLQ, run as an operator
runs them against a real dev node: queues, schedules, logs, cancel by
filter, and --json on writes. Each command: the happy path (what a user
reads, the exit code) and one error."""

import json
import os
import pty
import shutil
import signal
import subprocess
import tempfile
import threading
import unittest
import uuid

import qraft_harness as qh
from http_sink import Reply, start_sink

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
        self.assert_fails(1, ("schedule", "create", DEST, "--cron",
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

    # Logs and cancel by filter.
    def publish(self, url, n=1):
        ids = []
        for _ in range(n):
            _, out, _ = self.cli("publish", url, "--delay", "1h")
            ids.append(out.strip())
        return ids

    def test_logs_filters(self):
        url = f"http://127.0.0.1:9/logs-{uuid.uuid4().hex}"
        ids = self.publish(url, 2)
        got = self.cli_json("logs", "--url", url, "--since", "10m")
        self.assertEqual(
            sorted((e["message_id"], e["state"]) for e in got["entries"]),
            sorted((i, "CREATED") for i in ids),
        )
        _, out, _ = self.cli("logs", "--url", url, "--limit", "1")
        self.assertRegex(out, rf"(?m)^\S+Z\s+CREATED\s+{ids[1]}\s+0\s+{url}")
        self.assertNotIn(ids[0], out, "newest first, one entry")
        _, out, _ = self.cli("logs", "--url", url, "--state", "CANCELLED")
        self.assertEqual(out.count("\n"), 1, "only the header: none cancelled")

    def test_logs_errors(self):
        self.assert_fails(EXIT_USAGE, ("logs", "--state", "LOST"),
                          "--state 'LOST': expected CREATED")
        self.assert_fails(EXIT_USAGE, ("logs", "--since", "yesterday"),
                          "--since 'yesterday': expected unix seconds or a "
                          "duration")
        self.assert_fails(EXIT_USAGE, ("logs", "--colour", "red"),
                          "bad option '--colour'")

    def test_logs_follow(self):
        url = f"http://127.0.0.1:9/follow-{uuid.uuid4().hex}"
        n = self.node
        proc = subprocess.Popen(
            [qh.binary("qraft"), "--endpoints", n.endpoints, "--token",
             n.token, "logs", "--follow", "--json", "--url", url],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.addCleanup(proc.kill)
        lines = []
        reader = threading.Thread(
            target=lambda: lines.extend(iter(proc.stdout.readline, "")),
            daemon=True)
        reader.start()
        ids = []

        def followed():
            # Publish until the follower shows one (it may start after the
            # first publish, which it then prints from its first page).
            if not ids:
                ids.extend(self.publish(url))
            return any(ids[0] in line for line in list(lines))

        qh.wait_until(followed, 10, "logs --follow prints a new publish")
        ids.extend(self.publish(url))
        qh.wait_until(lambda: any(ids[1] in l for l in list(lines)), 10,
                      "logs --follow prints the next publish")
        proc.send_signal(signal.SIGINT)
        self.assertEqual(proc.wait(10), 0, "interrupted: exit 0")
        reader.join(5)
        proc.stdout.close()
        proc.stderr.close()
        entries = [json.loads(l) for l in lines]
        self.assertEqual([e["message_id"] for e in entries], ids,
                         "each entry once, oldest first")

    def test_cancel_by_filter(self):
        url = f"http://127.0.0.1:9/cancel-{uuid.uuid4().hex}"
        ids = self.publish(url, 3)
        keep = self.publish(url + "-other")[0]
        # Not a terminal: refuses without --yes, and cancels nothing.
        self.assert_fails(EXIT_USAGE, ("cancel", "--url", url), "add --yes")
        # --dry-run counts what the cancel would take (not the other URL),
        # needs no --yes, and cancels nothing.
        _, out, err = self.cli("cancel", "--url", url, "--dry-run")
        self.assertEqual(out, "3\n")
        self.assertIn("dry run: would cancel 3 messages", err)
        self.assertEqual(self.cli_json("cancel", "--url", url, "--dry-run"),
                         {"count": 3, "dry_run": True})
        self.assert_fails(EXIT_USAGE, ("cancel", keep, "--dry-run"),
                          "nothing to count")
        _, out, err = self.cli("cancel", "--url", url, "--yes")
        self.assertEqual(sorted(out.split()), sorted(ids))
        self.assertIn("cancelled 3 messages", err)
        for mid in ids:
            self.assertEqual(self.cli_json("get", mid)["state"], "cancelled")
        self.assertNotEqual(self.cli_json("get", keep)["state"], "cancelled")
        got = self.cli_json("cancel", "--url", url, "--yes")
        self.assertEqual((got["count"], got["cancelled"]), (0, []))
        self.assertEqual(self.cli("cancel", "--url", url, "--dry-run")[1],
                         "0\n")
        # One id, --json.
        self.assertEqual(self.cli_json("cancel", keep),
                         {"id": keep, "done": "cancelled"})
        self.assert_fails(EXIT_USAGE, ("cancel", keep, "--url", url),
                          "not both")

    # The DLQ: filters, columns, dry runs, confirmation, counts.
    def dead_letters(self, path, n):
        """n messages to the sink's path, answered 404: dead letters."""
        sink = getattr(self, "sink", None) or start_sink(self)
        self.sink = sink
        sink.script(path, *[Reply(404)] * n)
        ids = [self.cli("publish", sink.url(path), "--retries", "0")[1].strip()
               for _ in range(n)]
        qh.wait_until(lambda: all(self.cli_json("get", i)["state"] ==
                                  "dead_lettered" for i in ids), 30,
                      "the messages to be dead-lettered")
        return ids

    def test_dlq_filters_and_bulk(self):
        path = f"/dlq-{uuid.uuid4().hex}"
        ids = self.dead_letters(path, 2)
        url = self.sink.url(path)
        _, out, _ = self.cli("dlq", "ls", "--url", url, "--since", "5m")
        self.assertEqual(out.splitlines()[0].split(),
                         ["ID", "DEAD", "LETTERED", "(UTC)", "ATTEMPTS",
                          "STATUS", "URL", "REASON"])
        rows = sorted(line.split() for line in out.splitlines()[1:])
        self.assertEqual([(r[0], r[2], r[3], r[4], r[5]) for r in rows],
                         sorted((i, "1", "404", url, "client_error")
                                for i in ids))
        _, out, _ = self.cli("dlq", "ls", "--url", url, "--until", "1h")
        self.assertEqual(len(out.splitlines()), 1, "none dead an hour ago")

        # A dry run counts and does nothing; without --yes and a terminal,
        # nothing either.
        _, out, _ = self.cli("dlq", "replay", "--url", url, "--dry-run")
        self.assertEqual(out, "2\n")
        self.assert_fails(EXIT_USAGE, ("dlq", "rm", "--url", url), "add --yes")
        self.assert_fails(EXIT_USAGE, ("dlq", "rm", *ids), "add --yes")
        self.assert_fails(EXIT_USAGE, ("dlq", "rm", "--category", "oops"),
                          "--category 'oops': expected client_error")
        self.assertEqual(len(qh.message_ids(
            self.cli("dlq", "ls", "--url", url, "--json")[1])), 2)

        _, out, err = self.cli("dlq", "rm", "--url", url, "--yes")
        self.assertEqual(sorted(out.split()), sorted(ids))
        self.assertIn("deleted 2 dead letters", err)
        got = self.cli_json("dlq", "remove", "--url", url, "--yes")
        self.assertEqual((got["count"], got["deleted"]), (0, []))

    def test_get_of_finished_messages(self):
        path = f"/get-{uuid.uuid4().hex}"
        (dead,) = self.dead_letters(path, 1)
        _, out, _ = self.cli("get", dead)
        self.assertRegex(out, r"next attempt:\s+- \(finished\)")
        self.assertRegex(out, r"(?m)^last error:\s+client_error, HTTP 404$")
        self.assertNotIn("HTTP 404: HTTP 404", out)

        self.sink.script(path + "-ok", Reply(200))
        _, out, _ = self.cli("publish", self.sink.url(path + "-ok"),
                             "--body", "hello", "--retry-delay", "1000")
        mid = out.strip()
        qh.wait_until(lambda: self.cli_json("get", mid)["state"] ==
                      "delivered", 30, "the delivery")
        _, out, _ = self.cli("get", mid)
        self.assertRegex(out, r"body:\s+released after delivery")
        self.assertRegex(out, r"retry delay:\s+1000 ms")
        self.assertRegex(out, r"next attempt:\s+- \(finished\)")

    def test_cluster_transfer_says_why(self):
        _, out, _ = self.cli("cluster", "transfer", "1")
        self.assertEqual(out, "node 1 is already the leader\n")
        self.assertEqual(self.cli_json("cluster", "transfer", "1"),
                         {"node": 1, "done": "already the leader"})
        self.assert_fails(1, ("cluster", "transfer", "9"),
                          "there is no node 9 in the cluster (its nodes: 1)")
        self.assert_fails(1, ("cluster", "transfer"),
                          "node 1 is the only voter")

    # Flow control keys.
    def test_flow_keys(self):
        key = f"k{uuid.uuid4().hex[:12]}"
        status, _, body = qh.http_call(
            self.node.http_addr, "POST", f"/v2/publish/{DEST}", body="x",
            token=self.node.token,
            headers={"Upstash-Flow-Control-Key": key,
                     "Upstash-Flow-Control-Value": "parallelism=2, rate=5, "
                                                   "period=10",
                     "Upstash-Delay": "1h"})
        self.assertEqual(status, 200, body)
        _, out, _ = self.cli("flow", "ls")
        self.assertRegex(out, rf"(?m)^{key}\s+no\s+0/2\s+0/5 \(10 s\)\s+1$")
        self.assertNotIn("pinned", out)

        _, out, _ = self.cli("flow", "pause", key)
        self.assertEqual(out, f"key {key} paused\n")
        self.cli("flow", "pin", key, "--parallelism", "1", "--rate", "3",
                 "--period", "1m")
        got = self.cli_json("flow", "get", key)
        self.assertEqual(
            (got["paused"], got["parallelism_max"], got["rate_max"],
             got["rate_period_s"], got["pinned_parallelism"]),
            (True, 1, 3, 60, True))
        _, out, _ = self.cli("flow", "get", key)
        self.assertRegex(out, rf"(?m)^{key}\s+yes\s+0/1\*\s+0/3 \(60 s\)\*")
        self.assertIn("(* pinned by an operator)", out)
        self.assertEqual(self.cli_json("flow", "unpin", key, "--rate"),
                         {"key": key, "done": "unpinned"})
        self.cli("flow", "resume", key)
        self.assertFalse(self.cli_json("flow", "get", key)["paused"])

    def test_flow_errors(self):
        self.assert_fails(EXIT_NOTFOUND, ("flow", "get", "no-such-key"),
                          "flow control key no-such-key not found")
        self.assert_fails(EXIT_USAGE, ("flow", "pin", "k"),
                          "needs --parallelism N and/or --rate N")
        self.assert_fails(EXIT_USAGE, ("flow", "rm", "k"),
                          "unknown subcommand 'rm'")

    # Workflow runs, driven by raw protocol as tests/integration/
    # test_workflow_logs.py does.
    def trigger(self, run, url, extra=None):
        headers = {
            "Upstash-Workflow-Init": "true",
            "Upstash-Workflow-RunId": run,
            "Upstash-Workflow-Url": url,
            "Upstash-Feature-Set":
                "LazyFetch,InitialBody,WF_DetectTrigger,WF_TriggerOnConfig",
            "Upstash-Workflow-Sdk-Version": "1",
            "Content-Type": "text/plain",
        }
        headers.update(extra or {})
        el = {"destination": url, "headers": headers, "body": f"of {run}"}
        status, _, out = qh.http_call(
            self.node.http_addr, "POST", "/v2/batch", json.dumps([el]),
            {"Content-Type": "application/json"}, token=self.node.token)
        self.assertEqual(status, 200, out)
        return out[0]["messageId"]

    def test_workflow_runs(self):
        sink = start_sink(self)
        tag = uuid.uuid4().hex[:10]
        waiting, failing = f"wfr_wait_{tag}", f"wfr_fail_{tag}"
        first = self.trigger(waiting, sink.url(f"/wait-{tag}"),
                             {"Upstash-Delay": "1h"})
        sink.script(f"/fail-{tag}", Reply(500, {}, b"boom"))
        dead = self.trigger(failing, sink.url(f"/fail-{tag}"),
                            {"Upstash-Retries": "0"})
        qh.wait_until(
            lambda: self.cli_json("workflow", "get", failing)["state"] ==
            "failed", 30, "the run to fail")

        _, out, _ = self.cli("workflow", "ls", "--state", "running",
                             "--since", "10m")
        self.assertRegex(out, rf"(?m)^{waiting}\s+running\s+\S+Z\s+1\s+"
                              rf"{sink.url(f'/wait-{tag}')}$")
        self.assertNotIn(failing, out)
        _, out, _ = self.cli("workflow", "get", waiting)
        self.assertRegex(out, r"state:\s+running")
        self.assertRegex(out, rf"(?m)^  0\s+step\s+0\s+{first}\s+pending\s")
        got = self.cli_json("workflow", "get", failing)
        self.assertEqual(got["failed_message_id"], dead)

        # Restart the failed run from its dead letter; cancel the other.
        sink.script(f"/fail-{tag}", Reply(200))
        _, out, err = self.cli("workflow", "dlq", "restart", dead)
        self.assertIn("restarted 1 workflow run", err)
        self.assertEqual(self.cli_json("workflow", "cancel", waiting),
                         {"count": 1, "cancelled": [waiting], "failed": []})
        self.assertEqual(self.cli_json("workflow", "get", waiting)["state"],
                         "canceled")

    def test_workflow_errors(self):
        self.assert_fails(EXIT_NOTFOUND, ("workflow", "get", "wfr_nope"),
                          "workflow run wfr_nope not found")
        self.assert_fails(EXIT_USAGE, ("workflow", "ls", "--state", "done"),
                          "--state 'done': expected running")
        self.assert_fails(EXIT_USAGE, ("workflow", "dlq", "retry", "m"),
                          "expected resume or restart")
        self.assert_fails(EXIT_USAGE, ("workflow", "cancel", "a", "b"),
                          "add --yes")
        self.assert_fails(3, ("workflow", "cancel", "wfr_nope"), "wfr_nope")

    # Publishing to a URL group.
    def test_publish_to_group(self):
        group = f"g{uuid.uuid4().hex[:10]}"
        self.assertEqual(
            self.cli_json("group", "add", group, "a=http://127.0.0.1:9/ga",
                          "http://127.0.0.1:9/gb"),
            {"group": group, "done": "added"})
        _, out, _ = self.cli("publish", "--group", group, "--delay", "1h",
                             "--body", "hi")
        lines = [line.split() for line in out.splitlines()]
        self.assertEqual([u for _, u in lines],
                         ["http://127.0.0.1:9/ga", "http://127.0.0.1:9/gb"])
        for mid, url in lines:
            self.assertEqual(self.cli_json("get", mid)["url"], url)
        got = self.cli_json("publish", "--group", group, "--delay", "1h")
        self.assertEqual(got["group"], group)
        self.assertEqual([m["endpoint"] for m in got["messages"]], ["a", ""])

    def test_publish_to_group_errors(self):
        self.assert_fails(EXIT_NOTFOUND, ("publish", "--group", "no-such-group"),
                          "url group 'no-such-group' not found")
        self.assert_fails(EXIT_USAGE,
                          ("publish", "--group", "g", "http://127.0.0.1:9/x"),
                          "--group takes the place of the URL")

    # Contexts and completion.
    def qraft_env(self, config_home):
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("QRAFT_")}
        env["XDG_CONFIG_HOME"] = config_home
        return env

    def run_qraft(self, env, *args):
        p = subprocess.run([qh.binary("qraft"), *args], env=env,
                           capture_output=True, text=True, timeout=60)
        return p.returncode, p.stdout, p.stderr

    def test_contexts(self):
        home = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, home, True)
        os.makedirs(f"{home}/qraft")
        with open(f"{home}/token", "w") as f:
            f.write(self.node.token + "\n")
        with open(f"{home}/qraft/contexts.yaml", "w") as f:
            f.write(f"# two clusters\ndev:\n  endpoints: [{self.node.endpoints}]"
                    f"\n  token_file: {home}/token\n\nempty:\n")
        env = self.qraft_env(home)
        rc, out, _ = self.run_qraft(env, "context", "ls")
        self.assertEqual((rc, out), (0, "  dev\n  empty\n"))
        rc, out, _ = self.run_qraft(env, "--context", "dev", "queue", "ls")
        self.assertEqual(rc, 0)
        self.assertTrue(out.startswith("NAME"))
        rc, out, _ = self.run_qraft(env, "context", "use", "dev")
        self.assertEqual((rc, out), (0, "current context: dev\n"))
        rc, out, _ = self.run_qraft(env, "context", "ls")
        self.assertEqual(out, "* dev\n  empty\n")
        rc, out, _ = self.run_qraft(env, "status", "--json")
        self.assertEqual(rc, 0, "the current context's endpoints and token")
        self.assertEqual(json.loads(out)["state"], "leader")
        # A flag wins over the context: a wrong token is refused.
        rc, _, err = self.run_qraft(env, "--token", "wrong", "queue", "ls")
        self.assertEqual(rc, 5, err)

    def test_context_errors(self):
        home = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, home, True)
        os.makedirs(f"{home}/qraft")
        with open(f"{home}/qraft/contexts.yaml", "w") as f:
            f.write("dev:\n  endpoint: 127.0.0.1:1\n")
        env = self.qraft_env(home)
        rc, _, err = self.run_qraft(env, "--context", "dev", "ls")
        self.assertEqual(rc, EXIT_USAGE)
        self.assertIn("contexts.yaml:2: unknown setting 'endpoint'", err)
        with open(f"{home}/qraft/contexts.yaml", "w") as f:
            f.write("dev: [127.0.0.1:1]\n")
        rc, _, err = self.run_qraft(env, "context", "ls")
        self.assertEqual(rc, EXIT_USAGE)
        self.assertIn("contexts.yaml:1: expected the context's settings", err)
        with open(f"{home}/qraft/contexts.yaml", "w") as f:
            f.write("dev:\n  endpoints: 127.0.0.1:1\n")
        rc, _, err = self.run_qraft(env, "context", "use", "prod")
        self.assertEqual(rc, EXIT_USAGE)
        self.assertIn("no context 'prod'", err)

    def test_completion(self):
        if shutil.which("bash") is None:
            self.skipTest("no bash")
        bin_dir = os.path.dirname(qh.binary("qraft"))

        def complete(*words):
            script = (
                "source <(qraft completion bash)\n"
                f"COMP_WORDS=({' '.join(words)}); "
                f"COMP_CWORD={len(words) - 1}\n"
                "_qraft; echo \"${COMPREPLY[@]}\"\n")
            env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}")
            p = subprocess.run(["bash", "-c", script], env=env,
                               capture_output=True, text=True, timeout=30)
            self.assertEqual(p.returncode, 0, p.stderr)
            return p.stdout.split()

        self.assertEqual(complete("qraft", "qu"), ["queue"])
        self.assertEqual(complete("qraft", "--token", "t", "sched"),
                         ["schedule"])
        self.assertEqual(complete("qraft", "dlq", "re"), ["replay"])
        self.assertIn("--follow", complete("qraft", "logs", "--fo"))
        rc, out, _ = self.node.cli("completion", "zsh")
        self.assertIn("bashcompinit", out)
        self.assert_fails(EXIT_USAGE, ("completion", "fish"),
                          "expected bash or zsh")

    def test_every_command_has_help_with_an_example(self):
        commands = [
            "publish", "get", "cancel", "logs", "ls", "status", "keys",
            "completion", "dlq", "dlq ls", "dlq replay", "dlq rm", "group",
            "group add", "group rm", "group delete", "group get", "group ls",
            "queue", "queue ls", "queue get", "queue set", "queue pause",
            "queue resume", "queue rm", "schedule", "schedule ls",
            "schedule get", "schedule create", "schedule pause",
            "schedule resume", "schedule rm", "flow", "flow ls", "flow get",
            "flow pause", "flow resume", "flow pin", "flow unpin",
            "flow reset", "workflow", "workflow ls", "workflow get",
            "workflow cancel", "workflow dlq", "workflow dlq resume",
            "workflow dlq restart", "cluster", "cluster add",
            "cluster remove", "cluster transfer", "context", "context ls",
            "context use", "context show"]
        for command in commands:
            p = subprocess.run([qh.binary("qraft"), *command.split(),
                                "--help"], capture_output=True, text=True,
                               timeout=30)
            self.assertEqual(p.returncode, 0, f"{command}: {p.stderr}")
            self.assertIn("\nexample:\n  qraft ", p.stdout, command)

    def on_terminal(self, answer, *args):
        """Runs qraft with stdin and stderr on a pseudo-terminal, answering
        its question; returns (rc, stdout, what the terminal showed)."""
        master, slave = pty.openpty()
        proc = subprocess.Popen(
            [qh.binary("qraft"), "--endpoints", self.node.endpoints,
             "--token", self.node.token, *args],
            stdin=slave, stderr=slave, stdout=subprocess.PIPE, text=True)
        os.close(slave)
        os.write(master, answer.encode() + b"\n")
        out, _ = proc.communicate(timeout=60)
        shown = b""
        while True:
            try:
                data = os.read(master, 4096)
            except OSError:  # EIO: the terminal's other end is closed
                break
            if not data:
                break
            shown += data
        os.close(master)
        return proc.returncode, out, shown.decode()

    def test_bulk_confirmation_on_a_terminal(self):
        path = f"/tty-{uuid.uuid4().hex}"
        ids = self.dead_letters(path, 2)
        url = self.sink.url(path)
        rc, out, shown = self.on_terminal("n", "dlq", "rm", "--url", url)
        self.assertEqual((rc, out), (1, ""))
        self.assertIn("delete 2 dead letters (those that match now)? [y/N]",
                      shown)
        self.assertIn("not confirmed; nothing done", shown)
        # cancel asks with the count too.
        waiting = self.publish(DEST + path, 2)
        rc, out, shown = self.on_terminal("n", "cancel", "--url", DEST + path)
        self.assertEqual((rc, out), (1, ""))
        self.assertIn("cancel 2 messages (those that match now)? [y/N]", shown)
        self.assertEqual(self.cli_json("get", waiting[0])["state"], "pending")
        rc, out, shown = self.on_terminal("y", "dlq", "rm", "--url", url)
        self.assertEqual(rc, 0, shown)
        self.assertEqual(sorted(out.split()), sorted(ids))
        self.assertIn("deleted 2 of 2...", shown)
        self.assertIn("deleted 2 dead letters", shown)


if __name__ == "__main__":
    unittest.main()
