"""Schedules (/v2/schedules) on real qraftd processes, from raw HTTP:
refusals that say what is wrong (cron, id, destination), replace by id and
dedup of the create, a publish that tries to forge Upstash-Schedule-Id, and
a 3-node cluster whose leader is killed right at a slot: that slot fires
exactly once. The SDK's view is in tests/sdk/schedules.test.mjs.

A tick's message id is derived from (schedule, slot): msg_<slot ms, 12
hex><0000><8 hex sequence>, the sequence starting at a hash of the
schedule id. Had a slot fired twice, its second message would carry the
next sequence number; the cluster test asks every replica for that id."""

import http.client
import json
import time
import unittest

import qraft_harness as qh
from http_sink import HttpSink, quiet_disconnects, start_sink

TICK_TIMEOUT = 75.0  # the next minute, plus delivery
MINUTE_MS = 60000


def call(addr, token, method, target, body=None, headers=None):
    """(status, parsed JSON body) of one request, target kept as is."""
    status, _, parsed = qh.http_call(addr, method, target, body, headers,
                                     token=token, parse="json")
    return status, parsed


def slot_of(message_id):
    """The slot (unix ms) a tick's message id was derived from."""
    return int(message_id[4:16], 16)


def next_seq_id(message_id):
    """The id a second message of the same slot would have had."""
    seq = (int(message_id[20:28], 16) + 1) & 0xFFFFFFFF
    return f"{message_id[:20]}{seq:08x}"


class ScheduleRestTest(unittest.TestCase):
    def setUp(self):
        self.sink = start_sink(self)
        self.node = qh.start_dev_node(self)

    def call(self, method, target, body=None, headers=None):
        return call(self.node.http_addr, self.node.token, method, target,
                    body, headers)

    def create(self, cron, dest=None, **headers):
        hdrs = {"Upstash-Cron": cron} if cron is not None else {}
        hdrs.update(headers)
        return self.call("POST",
                         f"/v2/schedules/{dest or self.sink.url('/hook')}",
                         body=b"{}", headers=hdrs)

    def test_labels_and_flow_control_are_shown(self):
        """A schedule carries Upstash-Label and flow control as a message
        does (each tick's messages take them), and shows them as the SDK
        reads a schedule (its schedules.test.ts checks them)."""
        status, body = self.create(
            "0 0 1 1 *", **{"Upstash-Label": "daily, billing",
                            "Upstash-Flow-Control-Key": "ai-provider",
                            "Upstash-Flow-Control-Value":
                                "parallelism=2, rate=5, period=10s"})
        self.assertEqual(status, 200, body)
        status, sc = self.call("GET", f"/v2/schedules/{body['scheduleId']}")
        self.assertEqual(status, 200, sc)
        self.assertEqual((sc["label"], sc["labels"]),
                         ("daily", ["daily", "billing"]))
        self.assertEqual(
            (sc["flowControlKey"], sc["parallelism"], sc["rate"],
             sc["period"]), ("ai-provider", 2, 5, 10))
        status, sc = self.call("GET", "/v2/schedules")
        self.assertEqual(sc[0]["labels"], ["daily", "billing"])

    def test_bad_input_is_refused_with_a_reason(self):
        cases = [
            ("61 * * * *", "minute field: 61 is out of range 0-59"),
            ("* * * *", "has 4 fields; want 5"),
            ("*/0 * * * *", "step '0'"),
            ("5-1 * * * *", "range 5-1 is backwards"),
            ("* * * JANUARY *", "month field"),
            ("0 0 30 2 *", "never fires"),
            ("CRON_TZ=Mars/Olympus 0 4 * * *", "not a known IANA time zone"),
            ("", "cron expression is empty"),
        ]
        for cron, why in cases:
            with self.subTest(cron=cron):
                status, body = self.create(cron)
                self.assertEqual(status, 400, body)
                self.assertIn("invalid cron", body["error"])
                self.assertIn(why, body["error"])
        status, body = self.create(None)
        self.assertEqual(status, 400)
        self.assertIn("Upstash-Cron header is missing", body["error"])
        for bad_id in ["a b", "x/y", "é", "a" * 300]:
            with self.subTest(schedule_id=bad_id):
                conn = http.client.HTTPConnection(self.node.http_addr,
                                                  timeout=10)
                conn.putrequest("POST",
                                f"/v2/schedules/{self.sink.url('/hook')}")
                conn.putheader("Authorization", f"Bearer {self.node.token}")
                conn.putheader("Upstash-Cron", "* * * * *")
                conn.putheader("Upstash-Schedule-Id", bad_id.encode())
                conn.putheader("Content-Length", "0")
                conn.endheaders()
                resp = conn.getresponse()
                body = json.loads(resp.read())
                conn.close()
                self.assertEqual(resp.status, 400, body)
                self.assertIn("invalid Upstash-Schedule-Id", body["error"])
        status, body = self.create("* * * * *", **{"Upstash-Retries": "x"})
        self.assertEqual(status, 400)
        self.assertIn("Upstash-Retries", body["error"])
        status, body = self.create("* * * * *",
                                   **{"Upstash-Not-Before": "1700000000"})
        self.assertEqual(status, 400)
        self.assertIn("does not apply to schedules", body["error"])
        status, body = self.create("* * * * *", dest="my-group")
        self.assertEqual(status, 404)
        self.assertIn("url group 'my-group' not found", body["error"])
        status, body = self.create("* * * * *", dest="ftp://x/y")
        self.assertEqual(status, 400)
        # Nothing was created by any of these.
        status, body = self.call("GET", "/v2/schedules")
        self.assertEqual((status, body), (200, []))
        status, body = self.call("GET", "/v2/schedules/nope")
        self.assertEqual(status, 404)
        self.assertIn("not found", body["error"])
        for method, target in [("DELETE", "/v2/schedules/nope"),
                               ("PATCH", "/v2/schedules/nope/pause"),
                               ("POST", "/v2/schedules/nope/resume")]:
            status, body = self.call(method, target)
            self.assertEqual(status, 404, (method, target, body))
        status, _ = self.call("PUT", "/v2/schedules/nope")
        self.assertEqual(status, 405)
        status, _ = self.call("GET", "/v2/schedules/nope/stop")
        self.assertEqual(status, 404)

    def test_replace_by_id_and_dedup_of_the_create(self):
        status, body = self.create(
            " 0 4 * * * ", **{"Upstash-Schedule-Id": "nightly",
                              "Upstash-Delay": "2m",
                              "Upstash-Forward-X-A": "1",
                              "Upstash-Queue-Name": "reports"})
        self.assertEqual((status, body), (200, {"scheduleId": "nightly"}))
        status, first = self.call("GET", "/v2/schedules/nightly")
        self.assertEqual(status, 200)
        self.assertEqual(first["cron"], "0 4 * * *")
        self.assertEqual(first["delay"], 120)
        self.assertEqual(first["header"]["X-A"], ["1"])
        self.assertEqual(first["queueName"], "reports")
        self.assertFalse(first["isPaused"])
        self.assertEqual(first["nextScheduleTime"] % MINUTE_MS, 0)

        self.call("PATCH", "/v2/schedules/nightly/pause")
        status, body = self.create(
            "CRON_TZ=America/New_York 30 2 * * *",
            dest=self.sink.url("/other"),
            **{"Upstash-Schedule-Id": "nightly"})
        self.assertEqual((status, body), (200, {"scheduleId": "nightly"}))
        status, second = self.call("GET", "/v2/schedules/nightly")
        self.assertEqual(second["cron"], "CRON_TZ=America/New_York 30 2 * * *")
        self.assertEqual(second["destination"], self.sink.url("/other"))
        self.assertFalse(second["isPaused"], "replaced wholesale")
        for gone in ["delay", "queueName"]:
            self.assertNotIn(gone, second)
        self.assertNotIn("X-A", second["header"])
        self.assertEqual(second["createdAt"], first["createdAt"])
        status, listed = self.call("GET", "/v2/schedules")
        self.assertEqual([s["scheduleId"] for s in listed], ["nightly"])

        # A create with a dedup id seen before creates nothing and answers
        # the schedule the first one created.
        status, body = self.create("* * * * *", **{
            "Upstash-Schedule-Id": "d1", "Upstash-Deduplication-Id": "once"})
        self.assertEqual((status, body), (200, {"scheduleId": "d1"}))
        status, body = self.create("* * * * *", **{
            "Upstash-Schedule-Id": "d2", "Upstash-Deduplication-Id": "once"})
        self.assertEqual((status, body), (200, {"scheduleId": "d1"}))
        status, _ = self.call("GET", "/v2/schedules/d2")
        self.assertEqual(status, 404)
        # A publish with the same dedup id is another namespace.
        status, body = self.call(
            "POST", f"/v2/publish/{self.sink.url('/p')}", body=b"x",
            headers={"Upstash-Deduplication-Id": "once"})
        self.assertEqual(status, 200, body)
        self.assertNotIn("deduplicated", body)

    def test_a_publish_cannot_forge_the_schedule_header(self):
        """Forwarded, it is dropped (SDKs forward what they received), so
        the delivery carries no schedule id."""
        status, body = self.call(
            "POST", f"/v2/publish/{self.sink.url('/forged')}", body=b"x",
            headers={"Upstash-Forward-Upstash-Schedule-Id": "evil"})
        self.assertEqual(status, 200, body)
        (got,) = self.sink.wait_for(1, path="/forged", timeout=20)
        self.assertIsNone(got.header("Upstash-Schedule-Id"))


class ScheduleClusterTest(unittest.TestCase):
    """A 3-node cluster; the schedule is created through a follower (the
    write is forwarded), the leader is killed just after a slot begins
    (its fire may be in flight), and the next leader fires that slot: once,
    on every replica."""

    def setUp(self):
        self.sink = quiet_disconnects(HttpSink())
        self.sink.start()
        self.addCleanup(self.sink.stop)
        self.cluster = qh.start_cluster(self)

    def schedule_on(self, node, sid):
        status, body = call(node.http_addr, self.cluster.token, "GET",
                            f"/v2/schedules/{sid}")
        self.assertEqual(status, 200, body)
        return body

    def ticks(self):
        """{message id: [requests]} of the deliveries so far."""
        out = {}
        for r in self.sink.requests("/tick"):
            out.setdefault(r.header("Upstash-Message-Id"), []).append(r)
        return out

    def test_leader_kill_at_a_slot_fires_it_once(self):
        # Schedule commands need the feature level every node advertises.
        qh.wait_until(
            lambda: all(n.status()["feature_level"] == qh.FEATURE_LEVEL
                        for n in self.cluster.nodes),
            30, f"every node to apply feature level {qh.FEATURE_LEVEL}")
        leader = self.cluster.leader()
        follower = next(n for n in self.cluster.nodes if n is not leader)
        status, body = call(follower.http_addr, self.cluster.token, "POST",
                            f"/v2/schedules/{self.sink.url('/tick')}",
                            body=b"tick", headers={"Upstash-Cron": "* * * * *"})
        self.assertEqual(status, 200, body)
        sid = body["scheduleId"]
        # The first slot, as the replicated schedule has it: waiting for
        # it, not for a first tick and the slot after, keeps this test
        # under a minute.
        slot = self.schedule_on(follower, sid)["nextScheduleTime"]

        # Kill the leader 50 ms into the slot: its timer has fired and its
        # proposal may or may not commit.
        qh.wait_until(lambda: time.time() * 1000 >= slot + 50,
                      (slot - time.time() * 1000) / 1000 + 5,
                      "the slot", interval=0.01)
        self.cluster.kill9(self.cluster.leader())
        self.cluster.leader()

        def slot_everywhere():
            views = [self.schedule_on(n, sid)
                     for n in self.cluster.live_nodes()]
            return views if all(v.get("lastScheduleTime") == slot
                                for v in views) else None
        views = qh.wait_until(slot_everywhere, TICK_TIMEOUT,
                              "the slot applied on the live nodes")
        fired = [list(v["lastScheduleStates"]) for v in views]
        self.assertTrue(all(f == fired[0] and len(f) == 1 for f in fired),
                        fired)
        tick = fired[0][0]
        self.assertEqual(slot_of(tick), slot)
        got = qh.wait_until(lambda: self.ticks().get(tick), 30,
                            f"the delivery of {tick}")
        self.assertEqual(got[0].header("Upstash-Schedule-Id"), sid)

        # The logs filter on the schedule: its ticks only, each carrying it.
        status, body = call(self.cluster.live_nodes()[0].http_addr,
                            self.cluster.token, "GET",
                            f"/v2/events?scheduleId={sid}&count=1000")
        self.assertEqual(status, 200, body)
        logged = {e["messageId"] for e in body["events"]}
        self.assertIn(tick, logged)
        self.assertTrue(all(e.get("scheduleId") == sid
                            for e in body["events"]), body["events"][:3])

        # No replica holds a second message for the slot, and every
        # delivery so far belongs to one message per slot.
        for node in self.cluster.live_nodes():
            rc, out, err = node.cli("get", next_seq_id(tick), check=False,
                                    endpoints=node.rpc_addr)
            self.assertEqual(rc, 3, f"node {node.id}: {out}{err}")
        slots = {}
        for mid in self.ticks():
            slots.setdefault(slot_of(mid), set()).add(mid)
        self.assertTrue(all(len(ids) == 1 for ids in slots.values()), slots)
        self.cluster.check_not_crashed()


if __name__ == "__main__":
    unittest.main()
