"""The operator console's serving (node/api/console.c): the files built into
qraftd are answered without a token, with their content type, an ETag that
a revalidation matches (304), no-cache and a self-only
Content-Security-Policy; `/` redirects to it. And GET /v2/qraft/cluster, the
cluster view the console's overview reads, through a follower of a 3-node
cluster. The console itself, in a browser, is tests/ui/console.test.mjs."""

import time
import unittest

import qraft_harness as qh

WAIT = 20


class ConsoleServingTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.node = qh.start_dev_node()

    @classmethod
    def tearDownClass(cls):
        cls.node.cleanup()

    def get(self, target, headers=None, method="GET"):
        return qh.http_call(self.node.http_addr, method, target,
                            headers=headers, parse=None)

    def test_root_redirects_to_the_console(self):
        status, hdrs, _ = self.get("/")
        self.assertEqual(status, 302)
        self.assertEqual(hdrs["Location"], "/console/")

    def test_index_is_served_without_a_token(self):
        for target in ("/console", "/console/", "/console/index.html"):
            status, hdrs, body = self.get(target)
            self.assertEqual(status, 200, target)
            self.assertEqual(hdrs["Content-Type"], "text/html; charset=utf-8")
            self.assertIn(b"<title>qraft console</title>", body)
            self.assertEqual(hdrs["Cache-Control"], "no-cache")
            csp = hdrs["Content-Security-Policy"]
            self.assertIn("default-src 'none'", csp)
            self.assertIn("script-src 'self'", csp)
            self.assertIn("connect-src 'self'", csp)
            self.assertEqual(hdrs["X-Content-Type-Options"], "nosniff")

    def test_assets_have_their_content_types(self):
        for target, ctype in (
                ("/console/js/main.js", "text/javascript; charset=utf-8"),
                ("/console/js/pages/dlq.js", "text/javascript; charset=utf-8"),
                ("/console/app.css", "text/css; charset=utf-8"),
                ("/console/favicon.svg", "image/svg+xml")):
            status, hdrs, body = self.get(target)
            self.assertEqual(status, 200, target)
            self.assertEqual(hdrs["Content-Type"], ctype, target)
            self.assertEqual(int(hdrs["Content-Length"]), len(body))
            self.assertGreater(len(body), 0)

    def test_etag_revalidates(self):
        status, hdrs, _ = self.get("/console/app.css")
        etag = hdrs["ETag"]
        self.assertRegex(etag, r'^"[0-9a-f]{16}"$')
        status, hdrs, body = self.get("/console/app.css",
                                      {"If-None-Match": etag})
        self.assertEqual(status, 304)
        self.assertEqual(body, b"")
        status, _, _ = self.get("/console/app.css",
                                {"If-None-Match": '"0000000000000000"'})
        self.assertEqual(status, 200)

    def test_unknown_files_and_methods(self):
        for target in ("/console/nope.js", "/console/js/", "/consolex",
                       "/console/../v2/dlq"):
            status, _, _ = self.get(target)
            self.assertIn(status, (404, 401), target)
        status, _, _ = self.get("/console/nope.js")
        self.assertEqual(status, 404)
        status, hdrs, _ = self.get("/console/", method="POST")
        self.assertEqual(status, 405)
        self.assertIn("GET", hdrs["Allow"])

    def test_odd_paths_never_fail_the_node(self):
        for target in ("/console/%FF", "/console/%00", "/console/" + "a" * 4000,
                       "/console/js/../js/main.js", "/console//index.html",
                       "/console/%C3%A9", "/console/?x=%FF",
                       "/console/index.html?v=1"):
            status, _, _ = self.get(target)
            self.assertIn(status, (200, 404), target)
        status, _, _ = self.get("/console/js/../js/main.js")
        self.assertEqual(status, 200)
        status, _, _ = qh.http_call(self.node.http_addr, "GET", "/healthz",
                                       parse=None)
        self.assertEqual(status, 200)

    def test_head(self):
        status, hdrs, body = self.get("/console/", method="HEAD")
        self.assertEqual(status, 200)
        self.assertEqual(body, b"")


class CronPreviewTest(unittest.TestCase):
    def test_next_fire_times_from_the_nodes_parser(self):
        node = qh.start_dev_node(self)

        def call(query, token=node.token):
            return qh.http_call(node.http_addr, "GET",
                                f"/v2/qraft/cron?{query}", token=token)

        status, _, body = call("cron=0+*+*+*+*")
        self.assertEqual(status, 200, body)
        times = body["next"]
        self.assertEqual(len(times), 5)
        now_ms = time.time() * 1000
        self.assertGreater(times[0], now_ms)
        self.assertLessEqual(times[0], now_ms + 3600_000)
        self.assertEqual([t % 3600_000 for t in times], [0] * 5)
        self.assertEqual([b - a for a, b in zip(times, times[1:])],
                         [3600_000] * 4)
        # A time zone: 09:00 in Tokyo is 00:00 UTC.
        status, _, body = call("cron=CRON_TZ%3DAsia/Tokyo+0+9+*+*+*&count=2")
        self.assertEqual(status, 200, body)
        self.assertEqual([t % 86400_000 for t in body["next"]], [0, 0])
        for query, why in [("cron=61+*+*+*+*", "minute"),
                           ("", "cron is required"),
                           ("cron=*+*+*+*+*&count=21", "count must be"),
                           ("cron=*+*+*+*+*&count=0", "count must be")]:
            status, _, body = call(query)
            self.assertEqual(status, 400, query)
            self.assertIn(why, body["error"], query)
        status, _, _ = call("cron=*+*+*+*+*", token="wrong")
        self.assertEqual(status, 401)


class ClusterRouteTest(unittest.TestCase):
    def test_cluster_view_through_a_follower(self):
        cluster = qh.start_cluster(self)
        leader = cluster.leader()
        follower = next(n for n in cluster.nodes if n is not leader)

        status, _, body = qh.http_call(follower.http_addr, "GET",
                                       "/v2/qraft/cluster")
        self.assertEqual(status, 401)

        deadline = time.monotonic() + WAIT
        while True:
            status, _, view = qh.http_call(leader.http_addr, "GET",
                                           "/v2/qraft/cluster",
                                           token=cluster.token)
            self.assertEqual(status, 200, view)
            # Liveness comes with heartbeats, the addresses with each node's
            # advertised info: wait for both.
            if all(n["alive"] and "http" in n for n in view["nodes"]):
                break
            self.assertLess(time.monotonic(), deadline,
                            f"every node alive and known on the leader: {view}")
            time.sleep(0.1)
        self.assertEqual(view["state"], "leader")
        self.assertEqual(view["leaderId"], int(leader.id))
        self.assertEqual(sorted(n["id"] for n in view["nodes"]),
                         sorted(int(n.id) for n in cluster.nodes))
        for n in view["nodes"]:
            self.assertEqual(n["role"], "voter")
            self.assertTrue(n["http"])
            self.assertGreaterEqual(n["featureLevel"], 1)
        self.assertEqual(set(view["messages"]), {
            "pending", "delivering", "retrying", "delivered",
            "deadLettered", "cancelled", "queued"})

        # A follower hands the question to the leader, which alone knows
        # every node's liveness: the console works on any node.
        status, _, view = qh.http_call(follower.http_addr, "GET",
                                       "/v2/qraft/cluster",
                                       token=cluster.token)
        self.assertEqual(status, 200, view)
        self.assertEqual(view["state"], "leader")
        self.assertEqual(view["nodeId"], int(leader.id))
        self.assertTrue(all(n["alive"] for n in view["nodes"]), view)

        # ?local=true: the follower's own view.
        status, _, view = qh.http_call(follower.http_addr, "GET",
                                       "/v2/qraft/cluster?local=true",
                                       token=cluster.token)
        self.assertEqual(status, 200, view)
        self.assertEqual(view["state"], "follower")
        self.assertEqual(view["nodeId"], int(follower.id))
        self.assertEqual(view["leaderId"], int(leader.id))
        self.assertEqual(len(view["nodes"]), 3)

        status, _, body = qh.http_call(follower.http_addr, "GET",
                                       "/v2/qraft/cluster?local=maybe",
                                       token=cluster.token)
        self.assertEqual(status, 400, body)


if __name__ == "__main__":
    unittest.main()
