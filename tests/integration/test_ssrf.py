"""The SSRF guard (docs/api.md 4.1, docs/operations.md 2): a node delivers
to public addresses, to loopback where one machine runs it all, and to what
--allow-destinations opens; it checks the address curl connects to, after
DNS, and refuses a literal refused address at publish time.

No test connects anywhere but loopback. Loopback aliases (127.0.0.2) stand
for "another network"; names come from /etc/hosts (localhost) or from
tests/lib/fake_resolver.c, a getaddrinfo preloaded into qraftd that
answers chosen names with chosen addresses (metadata.qraft.test ->
169.254.169.254), so a name that resolves to an internal address is
refused before any socket exists: the guard runs where curl opens the
socket, after resolution.
"""

import json
import os
import unittest
from pathlib import Path

import qraft_harness as qh
from http_sink import Reply, start_sink

FAKE_RESOLVER = "libqraft_fake_resolver.so"


def fake_resolver():
    path = Path(qh.bin_dir()).parent / "lib" / FAKE_RESOLVER
    if not path.exists():
        raise unittest.SkipTest(f"{path} not built")
    return path


class Guarded:
    """What the tests share: REST calls and waits on a node."""

    def call(self, method, target, body=None, headers=None):
        return qh.http_call(self.node.http_addr, method, target, body,
                            headers, token=self.node.token)

    def publish(self, url, headers=None):
        return self.call("POST", "/v2/publish/" + url, body=b"x",
                         headers=headers)

    def assert_refused(self, url, why, headers=None):
        status, _, body = self.publish(url, headers)
        self.assertEqual(status, 400, (url, body))
        self.assertIn(why, body["error"], url)
        self.assertIn("--allow-destinations", body["error"], url)

    def get_json(self, message_id):
        _, out, _ = self.node.cli("get", message_id, "--json")
        return json.loads(out)

    def wait_dead(self, message_id):
        def dead():
            return self.get_json(message_id)["state"] == "dead_lettered"
        qh.wait_until(dead, 30, f"{message_id} dead-lettered")
        return self.get_json(message_id)

    def assert_refused_at_delivery(self, url, why):
        """Publishing url (a name) is taken; its delivery is refused at
        once, for good, with why in the DLQ (REST and CLI) and the log."""
        status, _, body = self.call(
            "POST", "/v2/publish/" + url, body=b"x",
            headers={"Upstash-Retries": "5", "Upstash-Retry-Delay": "100"})
        self.assertEqual(status, 200, body)
        mid = body["messageId"]
        msg = self.wait_dead(mid)
        self.assertEqual(msg["attempts"], 1, "a refusal is not retried")
        self.assertEqual(msg["last_error"]["category"], "destination_refused")
        self.assertIn(why, msg["last_error"]["message"])
        self.assertIn("--allow-destinations", msg["dlq_hint"])

        status, _, body = self.call("GET", f"/v2/dlq?dlqIds={mid}")
        self.assertEqual(status, 200, body)
        (entry,) = body["messages"]
        self.assertTrue(entry["error"].startswith("destination_refused: "),
                        entry)
        self.assertIn(why, entry["error"])
        _, out, _ = self.node.cli("dlq", "ls")
        line = next(ln for ln in out.splitlines() if mid in ln)
        self.assertTrue(line.endswith(" destination_refused"), line)
        status, _, body = self.call("GET", f"/v2/events?messageId={mid}")
        self.assertEqual(status, 200, body)
        self.assertTrue(any(why in e.get("error", "") for e in body["events"]),
                        body)
        qh.wait_until(lambda: f"{mid} not delivered" in self.stderr(), 10,
                      "the WARN line")
        warn = next(ln for ln in self.stderr().splitlines()
                    if f"{mid} not delivered" in ln)
        self.assertIn("WARN", warn)
        self.assertIn(why, warn)
        return mid

    def stderr(self):
        return Path(self.node.stderr_path).read_text(errors="replace")


class LoopbackDefaultTest(Guarded, unittest.TestCase):
    """A node whose listeners are all on loopback, without --dev (as the
    benchmark harness runs them): loopback is open, nothing else is."""

    def setUp(self):
        self.sink = start_sink(self)
        self.cluster = qh.start_cluster(self, n=1)
        self.node = self.cluster.node(1)

    def test_delivers_to_loopback_and_says_why(self):
        self.sink.script("/ok", Reply(200))
        status, _, body = self.publish(self.sink.url("/ok"))
        self.assertEqual(status, 200, body)
        self.sink.wait_for(1, path="/ok", timeout=30)
        self.assertIn(
            "deliveries go to public and loopback addresses: every listener "
            "is on loopback", self.stderr())

    def test_literal_internal_addresses_refused_at_publish(self):
        cases = [
            ("http://169.254.169.254/latest/meta-data/", "link-local"),
            ("http://2852039166/", "169.254.169.254 is link-local"),
            ("http://0xa9.0xfe.0xa9.0xfe/", "169.254.169.254 is link-local"),
            ("http://0251.0376.0251.0376/", "169.254.169.254 is link-local"),
            ("http://[::ffff:169.254.169.254]/", "link-local"),
            ("http://[fe80::1]/", "link-local"),
            ("http://10.0.0.1/", "10.0.0.1 is private"),
            ("http://172.16.5.4:8080/x", "private"),
            ("http://192.168.1.1/", "private"),
            ("http://100.100.100.200/", "private"),
            ("http://[fd00::1]/", "private"),
            ("http://[::ffff:10.0.0.1]/", "10.0.0.1 is private"),
            ("http://224.0.0.1/", "multicast"),
            ("http://[ff02::1]/", "multicast"),
            ("http://0.0.0.0:9/", "unspecified"),
            ("http://0/", "unspecified"),
            ("http://[::]/", "unspecified"),
            ("http://u:p@10.9.9.9/", "private"),
        ]
        for url, why in cases:
            with self.subTest(url=url):
                self.assert_refused(url, why)
        # Every field that names a destination.
        ok = self.sink.url("/never")
        for header in ("Upstash-Callback", "Upstash-Failure-Callback",
                       "Upstash-Callback-Failure-Callback"):
            with self.subTest(header=header):
                hdrs = {header: "http://169.254.169.254/"}
                if header == "Upstash-Callback-Failure-Callback":
                    hdrs["Upstash-Callback"] = self.sink.url("/cb")
                self.assert_refused(ok, "link-local", hdrs)
        batch = [{"destination": ok},
                 {"destination": "http://[::ffff:a9fe:a9fe]/"}]
        status, _, body = self.call("POST", "/v2/batch", body=batch)
        self.assertEqual(status, 400, body)
        self.assertIn("batch element 2 of 2", body["error"])
        self.assertIn("link-local", body["error"])
        status, _, body = self.call(
            "POST", "/v2/topics/g/endpoints",
            body={"endpoints": [{"url": ok}, {"url": "http://10.1.2.3/"}]})
        self.assertEqual(status, 400, body)
        self.assertIn("endpoint 2 url", body["error"])
        # The RPC face (the CLI) says it too, and nothing was stored.
        rc, _, err = self.node.cli("publish", "http://169.254.169.254/",
                                   check=False)
        self.assertNotEqual(rc, 0)
        self.assertIn("link-local", err)
        _, out, _ = self.node.cli("ls", "--json")
        self.assertEqual(json.loads(out)["messages"], [])
        self.assertEqual(self.sink.requests(), [])

    def test_workflow_destinations_refused_at_publish(self):
        run = "wfr_ssrf"
        status, _, body = self.publish(
            self.sink.url("/wf"),
            {"Upstash-Workflow-RunId": run, "Upstash-Workflow-Init": "true",
             "Upstash-Workflow-Url": "http://10.0.0.1/wf"})
        self.assertEqual(status, 400, body)
        self.assertIn("Upstash-Workflow-Url", body["error"])
        self.assertIn("10.0.0.1 is private", body["error"])
        for field, url, timeout_url in (
                ("url '", "http://169.254.169.254/", self.sink.url("/t")),
                ("timeoutUrl '", self.sink.url("/wf"),
                 "http://[::ffff:10.0.0.1]/")):
            wait = {
                "url": url, "timeout": "1h", "timeoutUrl": timeout_url,
                "timeoutHeaders": {"Upstash-Workflow-Runid": [run]},
                "step": {"stepId": 1, "stepType": "Wait", "stepName": "w",
                         "concurrent": 1},
            }
            status, _, body = self.call(
                "POST", "/v2/wait/ev", body=wait,
                headers={"Upstash-Workflow-RunId": run,
                         "Content-Type": "application/json"})
            self.assertEqual(status, 400, body)
            self.assertIn(field, body["error"])
            self.assertIn("--allow-destinations", body["error"])
        self.assertEqual(self.sink.requests(), [])

    def test_redirects_are_not_followed(self):
        self.sink.script("/moved", Reply(302, {"Location": self.sink.url("/to")}))
        status, _, body = self.publish(self.sink.url("/moved"))
        self.assertEqual(status, 200, body)
        msg = self.wait_dead(body["messageId"])
        self.assertEqual(msg["last_error"]["category"], "client_error")
        self.assertEqual(len(self.sink.requests(path="/moved")), 1)
        self.assertEqual(self.sink.requests(path="/to"), [])


class NothingOpenTest(Guarded, unittest.TestCase):
    """--allow-destinations none: loopback is refused too, even under
    --dev, in every spelling and through a name."""

    def setUp(self):
        self.sink = start_sink(self)
        self.node = qh.start_dev_node(
            self, extra_args=["--allow-destinations", "none"])

    def test_loopback_refused_in_every_spelling(self):
        port = self.sink.port
        self.assertIn("deliveries go to public addresses only "
                      "(--allow-destinations none)", self.stderr())
        for host in ("127.0.0.1", "127.0.0.2", "2130706433", "0x7f.1",
                     "0177.0.0.1", "127.1", "[::1]", "[::ffff:127.0.0.1]",
                     "[::ffff:7f00:1]", "[::127.0.0.1]"):
            with self.subTest(host=host):
                self.assert_refused(f"http://{host}:{port}/x", "is loopback")

    def test_name_that_resolves_to_loopback_refused_at_connect(self):
        url = f"http://localhost:{self.sink.port}/x"
        self.assert_refused_at_delivery(url, "localhost resolves to")
        self.assertEqual(self.sink.requests(), [], "nothing reached the sink")


class AllowListTest(Guarded, unittest.TestCase):
    """--allow-destinations opens exactly its networks: 127.0.0.2 (a
    loopback alias standing for another network) but not 127.0.0.1."""

    def setUp(self):
        self.open_sink = start_sink(self, host="127.0.0.2")
        self.closed_sink = start_sink(self)
        self.node = qh.start_dev_node(
            self, extra_args=["--allow-destinations", "127.0.0.2/32"])

    def test_only_the_listed_network(self):
        self.open_sink.script("/in", Reply(200))
        status, _, body = self.publish(self.open_sink.url("/in"))
        self.assertEqual(status, 200, body)
        self.open_sink.wait_for(1, path="/in", timeout=30)
        self.assert_refused(self.closed_sink.url("/out"), "is loopback")
        self.assert_refused_at_delivery(
            f"http://localhost:{self.closed_sink.port}/out",
            "localhost resolves to")
        self.assertEqual(self.closed_sink.requests(), [])
        self.assertIn("deliveries go to public addresses and to "
                      "127.0.0.2/32 (--allow-destinations)", self.stderr())


class FakeResolverTest(Guarded, unittest.TestCase):
    """Names that resolve to internal addresses, through a test resolver:
    accepted at publish (a name is not judged there), refused where curl
    connects. The control name resolves to the sink and is delivered, so a
    refusal is the guard's, not a failed lookup's."""

    def setUp(self):
        self.sink = start_sink(self)
        node = qh.DevNode()
        self.addCleanup(node.cleanup)
        node.extra_env = {
            "LD_PRELOAD": str(fake_resolver()),
            "ASAN_OPTIONS": "verify_asan_link_order=0:"
                            + os.environ.get("ASAN_OPTIONS", ""),
            "QRAFT_TEST_FAKE_HOSTS":
                "metadata.qraft.test=169.254.169.254,"
                "intranet.qraft.test=10.0.0.7,"
                "v6.qraft.test=fd00::7,"
                "sink.qraft.test=127.0.0.1",
        }
        node.start()
        self.node = node

    def test_names_resolving_to_internal_addresses(self):
        self.sink.script("/ok", Reply(200))
        status, _, body = self.publish(
            f"http://sink.qraft.test:{self.sink.port}/ok")
        self.assertEqual(status, 200, body)
        self.sink.wait_for(1, path="/ok", timeout=30)

        self.assert_refused_at_delivery(
            "http://metadata.qraft.test/latest/meta-data/",
            "metadata.qraft.test resolves to 169.254.169.254, which is "
            "link-local")
        self.assert_refused_at_delivery(
            "http://intranet.qraft.test:8080/",
            "intranet.qraft.test resolves to 10.0.0.7, which is private")
        self.assert_refused_at_delivery(
            "http://v6.qraft.test/",
            "v6.qraft.test resolves to fd00::7, which is private")

    def test_callback_to_an_internal_name_is_refused(self):
        """A callback is a message like any other: its delivery meets the
        same guard."""
        self.sink.script("/src", Reply(200))
        callback = "http://metadata.qraft.test/cb"
        status, _, body = self.publish(self.sink.url("/src"),
                                       {"Upstash-Callback": callback})
        self.assertEqual(status, 200, body)
        self.sink.wait_for(1, path="/src", timeout=30)

        def refused_callback():
            _, out, _ = self.node.cli("dlq", "ls", "--json")
            return [m for m in json.loads(out)["messages"]
                    if m["url"] == callback]
        qh.wait_until(refused_callback, 30, "the callback dead-lettered")
        (cb,) = refused_callback()
        self.assertEqual(cb["last_error"]["category"], "destination_refused")
        self.assertIn("169.254.169.254, which is link-local",
                      cb["last_error"]["message"])


if __name__ == "__main__":
    unittest.main()
