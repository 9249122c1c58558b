"""Upstash Workflow runs on a real qraftd --dev, from raw HTTP: what the
@upstash/workflow SDK sends (a trigger and steps as /v2/batch elements with
Upstash-Workflow-* headers) and what it reads back (each delivery's history
body and headers, the lazy fetch, the end of a run). The SDK itself runs in
tests/sdk/workflow.test.mjs; the protocol is in docs/workflow.md."""

import base64
import json
import time
import unittest

import qraft_harness as qh
from http_sink import Reply, start_sink

MAX_BODY = 64 * 1024
RUN = "wfr_test-run-1"


class WorkflowTest(unittest.TestCase):
    def setUp(self):
        self.sink = start_sink(self)
        self.node = qh.start_dev_node(
            self, extra_args=["--max-body-bytes", str(MAX_BODY)])
        self.url = self.sink.url("/wf")

    def call(self, method, target, body=None, headers=None):
        return qh.http_call(self.node.http_addr, method, target, body, headers,
                            token=self.node.token)

    def batch(self, headers, body, url=None):
        """One batch element, as the SDK sends a trigger or a step."""
        el = {"destination": url or self.url, "headers": headers,
              "body": body}
        return self.call("POST", "/v2/batch", json.dumps([el]).encode(),
                         {"Content-Type": "application/json"})

    def trigger(self, run=RUN, body="initial", extra=None):
        headers = {
            "Upstash-Workflow-Init": "true",
            "Upstash-Workflow-RunId": run,
            "Upstash-Workflow-Url": self.url,
            "Upstash-Feature-Set":
                "LazyFetch,InitialBody,WF_DetectTrigger,WF_TriggerOnConfig",
            "Upstash-Workflow-Sdk-Version": "1",
            "Upstash-Forward-Upstash-Workflow-Sdk-Version": "1",
            "Upstash-Forward-X-User": "alice",
            "Upstash-Retries": "2",
            "Content-Type": "text/plain",
        }
        headers.update(extra or {})
        return self.batch(headers, body)

    def step(self, step_id, out, run=RUN, extra=None):
        headers = {
            "Upstash-Workflow-Init": "false",
            "Upstash-Workflow-RunId": run,
            "Upstash-Workflow-Url": self.url,
            "Upstash-Workflow-Sdk-Version": "1",
            "Upstash-Forward-Upstash-Workflow-Sdk-Version": "1",
            "Content-Type": "application/json",
        }
        headers.update(extra or {})
        body = json.dumps({"stepId": step_id, "stepName": f"s{step_id}",
                           "stepType": "Run", "out": json.dumps(out),
                           "concurrent": 1})
        return self.batch(headers, body)

    @staticmethod
    def history(req):
        """A delivery's body as the SDK reads it: [(callType, body)]."""
        return [(e["callType"], base64.b64decode(e["body"]).decode())
                for e in json.loads(req.body)]

    def test_trigger_and_steps_deliver_the_history_prefix(self):
        status, _, body = self.trigger()
        self.assertEqual(status, 200, body)
        first_id = body[0]["messageId"]
        got = self.sink.wait_for(1, path="/wf", timeout=20)[0]
        self.assertEqual(got.header("Upstash-Workflow-RunId"), RUN)
        self.assertEqual(got.header("Upstash-Workflow-Sdk-Version"), "1")
        self.assertEqual(got.header("Upstash-Workflow-Url"), self.url)
        self.assertTrue(got.header("Upstash-Workflow-CreatedAt").isdigit())
        self.assertEqual(got.header("X-User"), "alice")
        self.assertEqual(got.header("Upstash-Message-Id"), first_id)
        self.assertEqual(self.history(got), [("step", "initial")])
        self.assertEqual(json.loads(got.body)[0]["messageId"], first_id)

        for i in (1, 2):
            status, _, body = self.step(i, f"result {i}")
            self.assertEqual(status, 200, body)
        reqs = self.sink.wait_for(3, path="/wf", timeout=20)
        # Each delivery carries the history up to its own entry, and the
        # trigger's forwarded headers again (the SDK sends them only once).
        lengths = sorted(len(self.history(r)) for r in reqs)
        self.assertEqual(lengths, [1, 2, 3])
        last = max(reqs, key=lambda r: len(self.history(r)))
        steps = [json.loads(b) for t, b in self.history(last)[1:]]
        self.assertEqual([s["stepId"] for s in steps], [1, 2])
        self.assertEqual(last.header("X-User"), "alice")
        self.assertEqual(last.header("Content-Type"), "application/json")

        status, _, body = self.call("GET", f"/v2/workflows/runs/{RUN}")
        self.assertEqual(status, 200, body)
        self.assertEqual([e["callType"] for e in body], ["step"] * 3)
        self.assertEqual(body[0]["messageId"], first_id)

    def test_repeated_trigger_is_deduplicated(self):
        status, _, body = self.trigger()
        self.assertEqual(status, 200, body)
        first = body[0]["messageId"]
        status, _, body = self.trigger(body="another")
        self.assertEqual(status, 200, body)
        self.assertEqual(body[0]["messageId"], first)
        self.assertTrue(body[0]["deduplicated"])
        self.sink.wait_for(1, path="/wf", timeout=20)
        status, _, hist = self.call("GET", f"/v2/workflows/runs/{RUN}")
        self.assertEqual(len(hist), 1)

    def test_steps_inherit_the_trigger_settings(self):
        """WF_TriggerOnConfig: a step's message takes the trigger's retries
        (and the rest) when its own publish does not set them."""
        status, _, body = self.trigger(extra={"Upstash-Retries": "0"})
        self.assertEqual(status, 200, body)
        # Delayed, so that it is still there to be read.
        status, _, body = self.step(1, "x", extra={"Upstash-Delay": "1h"})
        self.assertEqual(status, 200, body)
        step_id = body[0]["messageId"]
        status, _, msg = self.call("GET", f"/v2/messages/{step_id}")
        self.assertEqual(status, 200, msg)
        self.assertEqual(msg["maxRetries"], 0)
        status, _, body = self.step(2, "y", extra={"Upstash-Delay": "1h",
                                                   "Upstash-Retries": "5"})
        status, _, msg = self.call("GET",
                                   f"/v2/messages/{body[0]['messageId']}")
        self.assertEqual(msg["maxRetries"], 5)

    def test_cancel_by_url(self):
        """The SDK's cancel({urlStartingWith}), ({workflowUrl, exact}) and
        ({all}): running runs only."""
        other = self.sink.url("/other")
        for run, url in (("wfr_a", self.url), ("wfr_b", self.url + "/x"),
                         ("wfr_c", other)):
            self.url, saved = url, self.url
            self.assertEqual(self.trigger(run=run)[0], 200)
            self.url = saved
        from urllib.parse import quote
        status, _, body = self.call(
            "DELETE", f"/v2/workflows/runs?workflowUrl={quote(self.url)}"
            "&workflowUrlExactMatch=true")
        self.assertEqual(body, {"cancelled": 1})
        status, _, body = self.call(
            "DELETE", f"/v2/workflows/runs?workflowUrl={quote(self.url)}")
        self.assertEqual(body, {"cancelled": 1})  # wfr_b; wfr_a is over
        status, _, body = self.call("DELETE", "/v2/workflows/runs?count=10")
        self.assertEqual(body, {"cancelled": 1})  # wfr_c
        for run in ("wfr_a", "wfr_b", "wfr_c"):
            status, _, _ = self.call("GET", f"/v2/workflows/runs/{run}")
            self.assertEqual(status, 404)

    def test_finished_run_refuses_steps_and_is_not_fetched(self):
        self.trigger()
        self.sink.wait_for(1, path="/wf", timeout=20)
        status, _, body = self.call(
            "DELETE", f"/v2/workflows/runs/{RUN}?cancel=false", b'"done"')
        self.assertEqual(status, 200, body)
        # The SDK reads 404 as "workflow-already-ended", 400 on a step as
        # "the run is over" (and stops quietly).
        status, _, body = self.call("GET", f"/v2/workflows/runs/{RUN}")
        self.assertEqual(status, 404, body)
        status, _, body = self.step(1, "late")
        self.assertEqual(status, 400, body)
        self.assertIn("finished", body["error"])
        # Finishing again answers the same (a retried DELETE).
        status, _, body = self.call(
            "DELETE", f"/v2/workflows/runs/{RUN}?cancel=false", b'"done"')
        self.assertEqual(status, 200, body)

    def test_cancel_stops_pending_steps(self):
        self.trigger()
        self.sink.wait_for(1, path="/wf", timeout=20)
        status, _, body = self.step(1, "sleeps", extra={"Upstash-Delay": "1h"})
        self.assertEqual(status, 200, body)
        sleeping = body[0]["messageId"]
        status, _, body = self.call(
            "DELETE", f"/v2/workflows/runs?workflowRunIds={RUN}"
            "&workflowRunIds=wfr_nosuch")
        self.assertEqual(status, 200, body)
        self.assertEqual(body, {"cancelled": 1})
        # Cancelled: no longer a live message.
        status, _, msg = self.call("GET", f"/v2/messages/{sleeping}")
        self.assertEqual(status, 404, msg)
        status, _, body = self.step(2, "late")
        self.assertEqual(status, 400, body)
        self.assertIn("cancelled", body["error"])

    def test_history_over_the_body_limit_is_fetched_lazily(self):
        """A history past --max-body-bytes is never truncated: the delivery
        has an empty body, and the SDK fetches it all."""
        self.trigger()
        self.sink.wait_for(1, path="/wf", timeout=20)
        big = "x" * (MAX_BODY // 2)
        for i in (1, 2):
            status, _, body = self.step(i, big)
            self.assertEqual(status, 200, body)
        reqs = self.sink.wait_for(3, path="/wf", timeout=20)
        sizes = sorted(len(r.body) for r in reqs)
        self.assertEqual(sizes[0], 0, sizes)
        self.assertLessEqual(sizes[-1], MAX_BODY, sizes)
        status, _, hist = self.call("GET", f"/v2/workflows/runs/{RUN}")
        self.assertEqual(status, 200)
        self.assertEqual(len(hist), 3)
        out = json.loads(base64.b64decode(hist[2]["body"]))["out"]
        self.assertEqual(json.loads(out), big)

    def test_failed_step_fails_the_run_and_calls_the_failure_function(self):
        """A step dead-lettered: the run fails, its other steps are
        cancelled, and the failure callback carries what the SDK's
        failureFunction reads (the run id, the initial payload, the failing
        answer) with the headers its template set."""
        self.sink.script("/wf", Reply(500, {"Content-Type": "application/json"},
                                      b'{"error":"Error","message":"boom"}'))
        # The failure function fails too: its message stays, retrying.
        self.sink.script("/fail", Reply(500))
        fail_url = self.sink.url("/fail")
        status, _, body = self.trigger(extra={
            "Upstash-Retries": "0",
            "Upstash-Failure-Callback": fail_url,
            "Upstash-Failure-Callback-Forward-Upstash-Workflow-Is-Failure":
                "true",
            "Upstash-Failure-Callback-Forward-Upstash-Workflow-Failure-Callback":
                "true",
            "Upstash-Failure-Callback-Workflow-Runid": RUN,
            "Upstash-Failure-Callback-Workflow-Calltype": "failureCall",
            "Upstash-Failure-Callback-Forward-X-User": "alice",
            "Upstash-Failure-Callback-Forward-Upstash-Signature": "forged",
            "Upstash-Failure-Callback-Retries": "4",
        })
        self.assertEqual(status, 200, body)
        got = self.sink.wait_for(1, path="/fail", timeout=20)[0]
        self.assertEqual(got.header("Upstash-Workflow-Is-Failure"), "true")
        self.assertEqual(got.header("Upstash-Workflow-Failure-Callback"),
                         "true")
        self.assertEqual(got.header("Upstash-Workflow-Runid"), RUN)
        self.assertEqual(got.header("Upstash-Workflow-Calltype"),
                         "failureCall")
        self.assertEqual(got.header("X-User"), "alice")
        self.assertNotEqual(got.header("Upstash-Signature"), "forged")
        self.assertIsNone(got.header("Upstash-Workflow-Sdk-Version"))
        cb = json.loads(got.body)
        self.assertEqual(cb["workflowRunId"], RUN)
        self.assertTrue(cb["workflowCreatedAt"] > 0)
        self.assertEqual(base64.b64decode(cb["sourceBody"]), b"initial")
        self.assertEqual(cb["status"], 500)
        self.assertEqual(json.loads(base64.b64decode(cb["body"]))["message"],
                         "boom")
        self.assertEqual(cb["url"], self.url)
        # It retries as its template says, not as the failed step did.
        status, _, msg = self.call(
            "GET", f"/v2/messages/{got.header('Upstash-Message-Id')}")
        self.assertEqual(status, 200, msg)
        self.assertEqual(msg["maxRetries"], 4)
        status, _, body = self.call("GET", f"/v2/workflows/runs/{RUN}")
        self.assertEqual(status, 404, body)
        status, _, body = self.step(1, "late")
        self.assertEqual(status, 400, body)
        self.assertIn("failed", body["error"])

    def call_step(self, path, retries, step_id=1):
        """A context.call as the SDK publishes it: a message to another URL
        whose callback (with its Upstash-Callback-* settings) comes back to
        the workflow."""
        headers = {
            "Upstash-Workflow-Init": "false",
            "Upstash-Workflow-RunId": RUN,
            "Upstash-Workflow-Url": self.url,
            "Upstash-Workflow-Sdk-Version": "1",
            "Upstash-Workflow-CallType": "toCallback",
            "Upstash-Retries": str(retries),
            "Upstash-Retry-Delay": "200",
            "Upstash-Forward-X-Api-Key": "k1",
            "Upstash-Callback": self.url,
            "Upstash-Callback-Workflow-RunId": RUN,
            "Upstash-Callback-Workflow-CallType": "fromCallback",
            "Upstash-Callback-Workflow-Init": "false",
            "Upstash-Callback-Workflow-Url": self.url,
            "Upstash-Callback-Forward-Upstash-Workflow-Callback": "true",
            "Upstash-Callback-Forward-Upstash-Workflow-StepId": str(step_id),
            "Upstash-Callback-Retries": "5",
            "Content-Type": "application/json",
        }
        return self.batch(headers, '{"q":1}', url=self.sink.url(path))

    def test_call_reports_each_attempt_and_the_whole_answer(self):
        self.trigger()
        self.sink.wait_for(1, path="/wf", timeout=20)
        answer = json.dumps({"text": "y" * 10000}).encode()
        self.sink.script("/api", Reply(500), Reply(500),
                         Reply(200, {"Content-Type": "application/json"},
                               answer))
        status, _, body = self.call_step("/api", retries=2)
        self.assertEqual(status, 200, body)
        calls = self.sink.wait_for(3, path="/api", timeout=20)
        self.assertEqual(calls[0].header("X-Api-Key"), "k1")
        self.assertEqual(calls[0].body, b'{"q":1}')
        self.assertIsNone(calls[0].header("Upstash-Workflow-RunId"))
        # A callback per attempt, to the workflow, as the SDK reads it: the
        # callback's own headers, no Sdk-Version (its body is no history).
        cbs = self.sink.wait_for(4, path="/wf", timeout=20)[1:]
        for cb in cbs:
            self.assertEqual(cb.header("Upstash-Workflow-Callback"), "true")
            self.assertEqual(cb.header("Upstash-Workflow-RunId"), RUN)
            self.assertEqual(cb.header("Upstash-Workflow-StepId"), "1")
            self.assertIsNone(cb.header("Upstash-Workflow-Sdk-Version"))
        last = max((json.loads(cb.body) for cb in cbs),
                   key=lambda b: b["retried"])
        self.assertEqual((last["status"], last["retried"], last["maxRetries"]),
                         (200, 2, 2))
        self.assertEqual(base64.b64decode(last["body"]), answer)
        status, _, hist = self.call("GET", f"/v2/workflows/runs/{RUN}")
        self.assertEqual(status, 200, hist)
        self.assertEqual([e["callType"] for e in hist],
                         ["step", "toCallback"] + ["fromCallback"] * 3)

    def test_call_that_fails_for_good_reports_its_last_attempt(self):
        """The SDK waits for retried == maxRetries: a call refused at once
        (a 4xx is final) still says so, and the run goes on."""
        self.trigger()
        self.sink.wait_for(1, path="/wf", timeout=20)
        self.sink.script("/api", Reply(404))
        status, _, body = self.call_step("/api", retries=3)
        self.assertEqual(status, 200, body)
        cb = json.loads(self.sink.wait_for(2, path="/wf", timeout=20)[1].body)
        self.assertEqual((cb["status"], cb["retried"], cb["maxRetries"]),
                         (404, 3, 3))
        status, _, hist = self.call("GET", f"/v2/workflows/runs/{RUN}")
        self.assertEqual(status, 200, hist)

    def wait(self, event, timeout, step_id=1):
        """context.waitForEvent as the SDK sends it."""
        body = {
            "url": self.url, "timeout": timeout, "timeoutUrl": self.url,
            "timeoutHeaders": {"Upstash-Workflow-Runid": [RUN],
                               "Upstash-Workflow-Init": ["false"]},
            "step": {"stepId": step_id, "stepType": "Wait",
                     "stepName": f"wait {event}", "concurrent": 1},
        }
        return self.call("POST", f"/v2/wait/{event}",
                         json.dumps(body).encode(),
                         {"Upstash-Workflow-RunId": RUN,
                          "Upstash-Workflow-Init": "false",
                          "Content-Type": "application/json"})

    def last_step(self, req):
        return json.loads(self.history(req)[-1][1])

    def test_wait_then_notify_delivers_the_event(self):
        self.trigger()
        self.sink.wait_for(1, path="/wf", timeout=20)
        status, _, body = self.wait("order-1", "1h")
        self.assertEqual(status, 200, body)
        status, _, waiters = self.call("GET", "/v2/waiters/order-1")
        self.assertEqual(status, 200, waiters)
        self.assertEqual(len(waiters), 1)
        self.assertEqual(waiters[0]["url"], self.url)
        self.assertEqual(waiters[0]["timeoutHeaders"]["Upstash-Workflow-Runid"],
                         [RUN])
        status, _, notified = self.call("POST", "/v2/notify/order-1",
                                        b'{"paid":true}')
        self.assertEqual(status, 200, notified)
        self.assertEqual(len(notified), 1)
        got = self.sink.wait_for(2, path="/wf", timeout=20)[1]
        self.assertEqual(got.header("Upstash-Message-Id"),
                         notified[0]["messageId"])
        # Each workflow header once (the SDK refuses "1, 1").
        for name in ("Upstash-Workflow-Sdk-Version", "Upstash-Workflow-RunId"):
            self.assertEqual(
                [v for k, v in got.headers if k.lower() == name.lower()],
                ["1" if "Sdk" in name else RUN])
        step = self.last_step(got)
        self.assertEqual(step["stepType"], "Wait")
        self.assertEqual(step["stepId"], 1)
        self.assertFalse(step["waitTimeout"])
        self.assertEqual(base64.b64decode(step["out"]), b'{"paid":true}')
        # Notified once: nobody waits any more.
        status, _, notified = self.call("POST", f"/v2/notify/{RUN}/order-1",
                                        b"again")
        self.assertEqual((status, notified), (200, []))
        status, _, waiters = self.call("GET", "/v2/waiters/order-1")
        self.assertEqual(waiters, [])

    def test_wait_times_out_not_early(self):
        self.trigger()
        self.sink.wait_for(1, path="/wf", timeout=20)
        start = time.time()
        status, _, body = self.wait("never", "2s")
        self.assertEqual(status, 200, body)
        got = self.sink.wait_for(2, path="/wf", timeout=20)[1]
        self.assertGreaterEqual(got.time - start, 1.9)
        step = self.last_step(got)
        self.assertTrue(step["waitTimeout"])
        self.assertNotIn("out", step)
        status, _, notified = self.call("POST", "/v2/notify/never", b"late")
        self.assertEqual((status, notified), (200, []))

    def test_cancel_drops_the_waiters(self):
        self.trigger()
        self.sink.wait_for(1, path="/wf", timeout=20)
        self.assertEqual(self.wait("ev", "1h")[0], 200)
        status, _, body = self.call("DELETE", f"/v2/workflows/runs/{RUN}")
        self.assertEqual(status, 200, body)
        status, _, waiters = self.call("GET", "/v2/waiters/ev")
        self.assertEqual((status, waiters), (200, []))
        status, _, body = self.wait("ev2", "1h")
        self.assertEqual(status, 400, body)

    def test_bad_waits_are_refused(self):
        self.trigger()
        self.sink.wait_for(1, path="/wf", timeout=20)
        self.assertEqual(self.wait("ev", "forever")[0], 400)
        self.assertEqual(self.wait("ev", "400d")[0], 400)
        status, _, body = self.call("POST", "/v2/wait/ev", b"[]")
        self.assertEqual(status, 400, body)
        status, _, body = self.call("POST", "/v2/notify/nobody", b"x")
        self.assertEqual((status, body), (200, []))
        status, _, body = self.call("POST", "/v2/notify/wfr_nosuch/ev", b"x")
        self.assertEqual((status, body), (200, []))

    def test_stored_step_result_acks_the_delivery_that_asked(self):
        """Implicit ack: once the SDK has stored step 1's result, the
        delivery that asked for it is done, even if its own answer is lost
        (here: a 500 after the result was stored). It is not sent again,
        so step 1 does not run twice."""
        self.sink.script("/wf", Reply(500, delay_s=1.0), Reply(200))
        status, _, body = self.trigger(extra={"Upstash-Retry-Delay": "100"})
        self.assertEqual(status, 200, body)
        first = body[0]["messageId"]
        self.sink.wait_for(1, path="/wf", timeout=20)
        status, _, body = self.step(1, "one")  # while the delivery hangs
        self.assertEqual(status, 200, body)
        # The step's own delivery, then nothing more for the trigger.
        self.sink.wait_for(2, path="/wf", timeout=20)
        status, _, events = self.call("GET", f"/v2/events?messageId={first}")
        self.assertEqual(status, 200, events)
        self.assertEqual(events["events"][0]["state"], "DELIVERED")
        deadline = time.time() + 3  # a retry would come within ~1.2 s
        while time.time() < deadline:
            sent = [r for r in self.sink.requests("/wf")
                    if r.header("Upstash-Message-Id") == first]
            self.assertEqual(len(sent), 1, "the trigger was sent again")
            time.sleep(0.1)
        # The late 500 changed nothing: no retry, no error in its history.
        status, _, events = self.call("GET", f"/v2/events?messageId={first}")
        self.assertEqual([e["state"] for e in events["events"]],
                         ["DELIVERED", "ACTIVE", "CREATED"])

    def test_finish_acks_the_delivery_that_finished_the_run(self):
        """The SDK finishes a run, then answers the delivery: that answer
        lost (a 500 after the finish), the delivery is not sent again."""
        self.sink.script("/wf", Reply(500, delay_s=1.0), Reply(200))
        status, _, body = self.trigger(extra={"Upstash-Retry-Delay": "100"})
        first = body[0]["messageId"]
        self.sink.wait_for(1, path="/wf", timeout=20)
        status, _, body = self.call(
            "DELETE", f"/v2/workflows/runs/{RUN}?cancel=false", b'"done"')
        self.assertEqual(status, 200, body)
        status, _, events = self.call("GET", f"/v2/events?messageId={first}")
        self.assertEqual(events["events"][0]["state"], "DELIVERED")
        deadline = time.time() + 3  # a retry would come within ~1.2 s
        while time.time() < deadline:
            self.assertEqual(len(self.sink.requests("/wf")), 1,
                             "the finishing delivery was sent again")
            time.sleep(0.1)

    def test_repeated_step_publish_is_deduplicated(self):
        """The SDK retries a publish whose answer it lost: the step is
        stored once, delivered once."""
        self.trigger()
        self.sink.wait_for(1, path="/wf", timeout=20)
        status, _, first = self.step(1, "one")
        self.assertEqual(status, 200, first)
        status, _, again = self.step(1, "one")
        self.assertEqual(status, 200, again)
        self.assertTrue(again[0]["deduplicated"])
        self.assertEqual(again[0]["messageId"], first[0]["messageId"])
        status, _, hist = self.call("GET", f"/v2/workflows/runs/{RUN}")
        self.assertEqual(len(hist), 2)

    def test_invoke_returns_the_child_outcome(self):
        """context.invoke: a trigger whose body wraps the child's payload;
        the child's end comes back to the invoking run as an Invoke
        step."""
        self.trigger()
        self.sink.wait_for(1, path="/wf", timeout=20)
        child_url = self.sink.url("/child")
        wrapper = {"body": "child payload", "headers": {},
                   "workflowRunId": RUN, "workflowRunCreatedAt": 1,
                   "workflowUrl": self.url,
                   "step": {"stepId": 1, "stepName": "invoke child",
                            "stepType": "Invoke", "concurrent": 1}}
        status, _, body = self.call(
            "POST", f"/v2/publish/{child_url}", json.dumps(wrapper).encode(),
            {"Upstash-Workflow-Init": "true",
             "Upstash-Workflow-RunId": "wfr_child",
             "Upstash-Workflow-Url": child_url,
             "Upstash-Workflow-Invoke": "true",
             "Content-Type": "application/json"})
        self.assertEqual(status, 200, body)
        got = self.sink.wait_for(1, path="/child", timeout=20)[0]
        self.assertEqual(self.history(got), [("step", "child payload")])
        status, _, body = self.call(
            "DELETE", "/v2/workflows/runs/wfr_child?cancel=false",
            b'"child result"')
        self.assertEqual(status, 200, body)
        got = self.sink.wait_for(2, path="/wf", timeout=20)[1]
        step = self.last_step(got)
        self.assertEqual((step["stepId"], step["stepType"]), (1, "Invoke"))
        self.assertEqual(json.loads(step["out"]),
                         {"body": '"child result"', "isFailed": False,
                          "isCanceled": False})
        # A bad wrapper is refused.
        status, _, body = self.call(
            "POST", f"/v2/publish/{child_url}", b"not json",
            {"Upstash-Workflow-Init": "true",
             "Upstash-Workflow-RunId": "wfr_child2",
             "Upstash-Workflow-Invoke": "true"})
        self.assertEqual(status, 400, body)

    def fail_at_step_2(self):
        """A run whose step-2 delivery fails for good; returns its dead
        letter's id."""
        self.sink.script("/wf", Reply(200), Reply(200), Reply(500))
        self.trigger(extra={"Upstash-Retries": "0"})
        self.sink.wait_for(1, path="/wf", timeout=20)
        self.step(1, "one")
        self.sink.wait_for(2, path="/wf", timeout=20)
        status, _, body = self.step(2, "two")
        self.assertEqual(status, 200, body)
        self.sink.wait_for(3, path="/wf", timeout=20)

        def dead():
            status, _, page = self.call(
                "GET", f"/v2/dlq?source=workflow&workflowRunId={RUN}")
            return page["messages"] if page["messages"] else None
        msgs = qh.wait_until(dead, 20, "the failed step in the DLQ")
        self.assertEqual(msgs[0]["workflowRunId"], RUN)
        self.assertEqual(msgs[0]["messageId"], body[0]["messageId"])
        status, _, page = self.call("GET", "/v2/dlq?source=message")
        self.assertEqual(page["messages"], [])
        return msgs[0]["dlqId"]

    def test_dlq_resume_continues_the_failed_run(self):
        dlq_id = self.fail_at_step_2()
        self.sink.script("/wf", Reply(200))
        status, _, body = self.call(
            "POST", f"/v2/workflows/dlq/resume?dlqIds={dlq_id}")
        self.assertEqual(status, 200, body)
        self.assertEqual(body["workflowRuns"][0]["workflowRunId"], RUN)
        self.assertTrue(body["workflowRuns"][0]["workflowCreatedAt"] > 0)
        got = self.sink.wait_for(4, path="/wf", timeout=20)[3]
        self.assertEqual(got.header("Upstash-Message-Id"), dlq_id)
        self.assertEqual(len(self.history(got)), 3)  # where it failed
        status, _, body = self.step(3, "three")  # the run goes on
        self.assertEqual(status, 200, body)

    def test_dlq_restart_reruns_from_the_start(self):
        dlq_id = self.fail_at_step_2()
        self.sink.script("/wf", Reply(200))
        status, _, body = self.call(
            "POST", f"/v2/workflows/dlq/restart?dlqIds={dlq_id}")
        self.assertEqual(status, 200, body)
        got = self.sink.wait_for(4, path="/wf", timeout=20)[3]
        self.assertEqual(self.history(got), [("step", "initial")])
        status, _, hist = self.call("GET", f"/v2/workflows/runs/{RUN}")
        self.assertEqual(len(hist), 1)
        status, _, body = self.call("GET", f"/v2/dlq/{dlq_id}")
        self.assertEqual(status, 404, body)
        # Resuming what is no workflow dead letter is refused.
        status, _, body = self.call(
            "POST", f"/v2/workflows/dlq/resume?dlqIds={dlq_id}")
        self.assertEqual(status, 404, body)
        status, _, body = self.call(
            "POST", "/v2/workflows/dlq/resume?fromDate=1")
        self.assertEqual(status, 400, body)
        status, _, body = self.call("DELETE", "/v2/workflows/dlq")
        self.assertEqual(status, 400, body)

    def test_dlq_failure_callback_runs_again(self):
        """dlq.retryFailureFunction: the failure callback once more, with
        what the failure function reads."""
        self.sink.script("/wf", Reply(500))
        status, _, body = self.trigger(extra={
            "Upstash-Retries": "0",
            "Upstash-Failure-Callback": self.sink.url("/fail"),
            "Upstash-Failure-Callback-Workflow-Runid": RUN})
        self.assertEqual(status, 200, body)
        first = self.sink.wait_for(1, path="/fail", timeout=20)[0]
        dlq_id = json.loads(first.body)["dlqId"]
        status, _, body = self.call("POST",
                                    f"/v2/workflows/dlq/callback/{dlq_id}")
        self.assertEqual(status, 200, body)
        self.assertEqual(body["workflowRunId"], RUN)
        again = self.sink.wait_for(2, path="/fail", timeout=20)[1]
        cb = json.loads(again.body)
        self.assertEqual((cb["workflowRunId"], cb["status"]), (RUN, 500))
        self.assertEqual(base64.b64decode(cb["sourceBody"]), b"initial")
        self.assertEqual(again.header("Upstash-Workflow-Runid"), RUN)
        status, _, body = self.call("POST",
                                    "/v2/workflows/dlq/callback/msg_nosuch")
        self.assertEqual(status, 404, body)

    def test_dlq_delete(self):
        dlq_id = self.fail_at_step_2()
        status, _, body = self.call("DELETE",
                                    f"/v2/workflows/dlq?dlqIds={dlq_id}")
        self.assertEqual(status, 200, body)
        self.assertEqual(body["deleted"], 1)
        status, _, body = self.call("GET", f"/v2/dlq/{dlq_id}")
        self.assertEqual(status, 404, body)

    def test_webhook_notifies_its_wait_without_a_token(self):
        """createWebhook + waitForWebhook: any method on the hook URL, no
        token, gives the waiting run the request."""
        self.trigger()
        self.sink.wait_for(1, path="/wf", timeout=20)
        self.assertEqual(self.wait("hook-1", "1h")[0], 200)
        status, _, body = qh.http_call(
            self.node.http_addr, "PUT",
            f"/v2/workflows/hooks/user1/{RUN}/hook-1?x=1", b"hello",
            {"X-Signed": "abc"}, token=None)
        self.assertEqual(status, 200, body)
        self.assertEqual(len(body), 1)
        got = self.sink.wait_for(2, path="/wf", timeout=20)[1]
        req = json.loads(base64.b64decode(self.last_step(got)["out"]))
        self.assertEqual(req["method"], "PUT")
        self.assertEqual(base64.b64decode(req["body"]), b"hello")
        self.assertEqual(req["header"]["X-Signed"], ["abc"])
        self.assertEqual(req["url"], f"/v2/workflows/hooks/user1/{RUN}/hook-1?x=1")
        # Another route without a token is still refused; a hook nobody
        # waits for reaches nobody.
        status, _, body = qh.http_call(self.node.http_addr, "GET",
                                       "/v2/waiters/hook-1", token=None)
        self.assertEqual(status, 401, body)
        status, _, body = qh.http_call(
            self.node.http_addr, "POST",
            f"/v2/workflows/hooks/user1/{RUN}/hook-1", b"again", token=None)
        self.assertEqual((status, body), (200, []))

    def test_bad_workflow_input_is_refused(self):
        status, _, body = self.step(1, "x", run="wfr_nosuch")
        self.assertEqual(status, 400, body)
        self.assertIn("does not exist", body["error"])
        self.assertEqual(self.trigger(run="wfr_ok")[0], 200)
        for bad in ("not json", "[1]", '{"stepName": "no id"}'):
            status, _, body = self.batch(
                {"Upstash-Workflow-RunId": "wfr_ok",
                 "Upstash-Workflow-Init": "false"}, bad)
            self.assertEqual(status, 400, body)
            self.assertIn("stepId", body["error"])
        status, _, hist = self.call("GET", "/v2/workflows/runs/wfr_ok")
        self.assertEqual(len(hist), 1)  # the run is unharmed
        status, _, body = self.trigger(run="bad id!")
        self.assertEqual(status, 400, body)
        self.assertIn("Upstash-Workflow-RunId", body["error"])
        status, _, body = self.trigger(
            extra={"Upstash-Workflow-Init": "maybe"})
        self.assertEqual(status, 400, body)
        status, _, body = self.trigger(
            extra={"Upstash-Failure-Callback-Retries": "many"})
        self.assertEqual(status, 400, body)
        self.assertIn("Upstash-Failure-Callback-Retries", body["error"])
        status, _, body = self.call("GET", "/v2/workflows/runs/wfr_nosuch")
        self.assertEqual(status, 404, body)
        status, _, body = self.call("DELETE", "/v2/workflows/runs/wfr_nosuch")
        self.assertEqual(status, 404, body)
        status, _, body = self.call("DELETE",
                                    "/v2/workflows/runs?fromDate=1")
        self.assertEqual(status, 400, body)
        self.assertIn("not supported", body["error"])
        status, _, body = self.call("DELETE", "/v2/workflows/runs")
        self.assertEqual(status, 400, body)


    def test_runs_survive_a_restart(self):
        self.trigger()
        self.sink.wait_for(1, path="/wf", timeout=20)
        self.step(1, "kept")
        self.sink.wait_for(2, path="/wf", timeout=20)
        self.node.restart(kill=True)
        status, _, hist = self.call("GET", f"/v2/workflows/runs/{RUN}")
        self.assertEqual(status, 200, hist)
        self.assertEqual(len(hist), 2)
        status, _, body = self.step(2, "after")
        self.assertEqual(status, 200, body)


if __name__ == "__main__":
    unittest.main()


class WorkflowHistoryLimitTest(unittest.TestCase):
    def test_a_step_past_the_history_limit_is_413(self):
        """The SDK reads a run's history whole (lazy fetch): a step that
        would take it past --max-run-history-bytes is refused, naming the
        limit, and the run is unharmed."""
        sink = start_sink(self)
        node = qh.start_dev_node(
            self, extra_args=["--max-run-history-bytes", "20000"])
        t = WorkflowTest("run")
        t.sink, t.node, t.url = sink, node, sink.url("/wf")
        self.assertEqual(t.trigger()[0], 200)
        self.assertEqual(t.step(1, "x" * 9000)[0], 200)
        status, _, body = t.step(2, "y" * 12000)
        self.assertEqual(status, 413, body)
        self.assertIn("--max-run-history-bytes", body["error"])
        status, _, hist = t.call("GET", f"/v2/workflows/runs/{RUN}")
        self.assertEqual((status, len(hist)), (200, 2))
        self.assertEqual(t.step(2, "small")[0], 200)


class WorkflowLevelTest(unittest.TestCase):
    def test_cluster_below_the_workflow_level_refuses_runs(self):
        """A node of an older version would take a workflow publish for a
        plain message: until every node runs one that has workflows
        (feature level 4), runs are refused, saying why."""
        sink = start_sink(self)
        node = qh.start_dev_node(self,
                                 extra_args=["--max-feature-level", "3"])
        t = WorkflowTest("run")
        t.sink, t.node, t.url = sink, node, sink.url("/wf")
        status, _, body = t.trigger()
        self.assertEqual(status, 503, body)
        self.assertIn("feature level 4", body["error"])
        status, _, body = t.wait("ev", "1h")
        self.assertEqual(status, 503, body)
        self.assertEqual(sink.requests(), [])


class WorkflowRetentionTest(unittest.TestCase):
    """Ended runs go with the retention of their kind: finished and
    cancelled ones with --done-retention, failed ones with
    --dlq-retention."""

    def test_ended_runs_are_pruned_running_ones_kept(self):
        sink = start_sink(self)
        node = qh.start_dev_node(
            self, extra_args=["--done-retention", "2s", "--dlq-retention",
                              "1h"])
        t = WorkflowTest("run")
        t.sink, t.node, t.url = sink, node, sink.url("/wf")
        sink.script("/fail", Reply(500))
        for run in ("wfr_done", "wfr_running", "wfr_failed"):
            extra = {}
            if run == "wfr_failed":
                extra = {"Upstash-Retries": "0"}
            t.url = sink.url("/fail" if run == "wfr_failed" else "/wf")
            status, _, body = t.trigger(run=run, extra=extra)
            self.assertEqual(status, 200, body)
        t.url = sink.url("/wf")
        sink.wait_for(2, path="/wf", timeout=20)
        sink.wait_for(1, path="/fail", timeout=20)
        status, _, body = t.call("DELETE",
                                 "/v2/workflows/runs/wfr_done?cancel=false")
        self.assertEqual(status, 200, body)

        def done_gone():
            # A finished run answers 404 either way; a step into it says
            # why until it is pruned, then that it does not exist.
            status, _, body = t.step(1, "x", run="wfr_done")
            return status == 400 and "does not exist" in body["error"]
        qh.wait_until(done_gone, 30, "the finished run to be pruned")
        status, _, body = t.step(1, "x", run="wfr_failed")
        self.assertIn("failed", body["error"])
        status, _, hist = t.call("GET", "/v2/workflows/runs/wfr_running")
        self.assertEqual((status, len(hist)), (200, 1))
