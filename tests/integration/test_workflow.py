"""Upstash Workflow runs on a real qraftd --dev, from raw HTTP: what the
@upstash/workflow SDK sends (a trigger and steps as /v2/batch elements with
Upstash-Workflow-* headers) and what it reads back (each delivery's history
body and headers, the lazy fetch, the end of a run). The SDK itself runs in
tests/sdk/workflow.test.mjs; the protocol is in docs/workflow.md."""

import base64
import json
import unittest

import qraft_harness as qh
from http_sink import start_sink

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

    def test_bad_workflow_input_is_refused(self):
        status, _, body = self.step(1, "x", run="wfr_nosuch")
        self.assertEqual(status, 400, body)
        self.assertIn("does not exist", body["error"])
        status, _, body = self.trigger(run="bad id!")
        self.assertEqual(status, 400, body)
        self.assertIn("Upstash-Workflow-RunId", body["error"])
        status, _, body = self.trigger(
            extra={"Upstash-Workflow-Init": "maybe"})
        self.assertEqual(status, 400, body)
        status, _, body = self.call("GET", "/v2/workflows/runs/wfr_nosuch")
        self.assertEqual(status, 404, body)
        status, _, body = self.call("DELETE", "/v2/workflows/runs/wfr_nosuch")
        self.assertEqual(status, 404, body)
        status, _, body = self.call("DELETE",
                                    "/v2/workflows/runs?workflowUrl=http://x")
        self.assertEqual(status, 400, body)
        self.assertIn("not supported", body["error"])
        # Nothing was written by any of them.
        status, _, body = self.call("GET", "/v2/events")
        self.assertEqual(status, 200, body)
        self.assertEqual(body["events"], [])

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
