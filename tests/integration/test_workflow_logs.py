"""The workflow logs (GET /v2/workflows/events?groupBy=workflowRunId, which
the SDK's Client.logs calls, and its alias GET /v2/workflows/logs) on a real
qraftd --dev: runs driven by raw protocol (tests/integration/
test_workflow.py does the same), then read back as a user reads them:
states, steps in order, the filters, paging. docs/workflow.md, "Logs"."""

import json
import time
import unittest

import qraft_harness as qh
from http_sink import Reply, start_sink


class WorkflowLogsTest(unittest.TestCase):
    def setUp(self):
        self.sink = start_sink(self)
        self.node = qh.start_dev_node(self)

    def call(self, method, target, body=None, headers=None):
        return qh.http_call(self.node.http_addr, method, target, body, headers,
                            token=self.node.token)

    def batch(self, url, headers, body):
        el = {"destination": url, "headers": headers, "body": body}
        status, _, out = self.call("POST", "/v2/batch",
                                   json.dumps([el]).encode(),
                                   {"Content-Type": "application/json"})
        self.assertEqual(status, 200, out)
        return out[0]["messageId"]

    def trigger(self, run, path, extra=None):
        headers = {
            "Upstash-Workflow-Init": "true",
            "Upstash-Workflow-RunId": run,
            "Upstash-Workflow-Url": self.sink.url(path),
            "Upstash-Feature-Set":
                "LazyFetch,InitialBody,WF_DetectTrigger,WF_TriggerOnConfig",
            "Upstash-Workflow-Sdk-Version": "1",
            "Content-Type": "text/plain",
        }
        headers.update(extra or {})
        return self.batch(self.sink.url(path), headers, f"payload of {run}")

    def step(self, run, path, step, extra=None):
        headers = {
            "Upstash-Workflow-Init": "false",
            "Upstash-Workflow-RunId": run,
            "Upstash-Workflow-Url": self.sink.url(path),
            "Upstash-Workflow-Sdk-Version": "1",
            "Content-Type": "application/json",
        }
        headers.update(extra or {})
        return self.batch(self.sink.url(path), headers, json.dumps(step))

    def logs(self, query="", route="events"):
        status, _, body = self.call(
            "GET", f"/v2/workflows/{route}?groupBy=workflowRunId{query}")
        self.assertEqual(status, 200, body)
        return body

    def run_log(self, run):
        runs = self.logs(f"&workflowRunId={run}")["runs"]
        self.assertEqual(len(runs), 1, runs)
        return runs[0]

    def wait_state(self, run, state):
        return qh.wait_until(
            lambda: (lambda r: r if r["workflowState"] == state else None)(
                self.run_log(run)),
            20, f"{run} in {state}")

    @staticmethod
    def flat(log):
        """[(group type, stepName, stepId, out, state)] in order."""
        return [(g["type"], s.get("stepName"), s.get("stepId"), s.get("out"),
                 s["state"]) for g in log["steps"] for s in g["steps"]]

    def test_runs_show_their_states_and_steps(self):
        self.sink.script("/fail", Reply(500, {}, b"boom"))
        ok_first = self.trigger("wfr_ok", "/ok",
                                {"Upstash-Label": "alpha"})
        self.sink.wait_for(1, path="/ok", timeout=20)
        for i in (1, 2):
            self.step("wfr_ok", "/ok", {
                "stepId": i, "stepName": f"s{i}", "stepType": "Run",
                "out": json.dumps(f"result {i}"), "concurrent": 1})
        self.sink.wait_for(3, path="/ok", timeout=20)
        status, _, body = self.call(
            "DELETE", "/v2/workflows/runs/wfr_ok?cancel=false", b'"done"')
        self.assertEqual(status, 200, body)
        # A run whose first delivery waits, cancelled meanwhile.
        self.trigger("wfr_cancel", "/cancel", {"Upstash-Delay": "1h"})
        status, _, body = self.call("DELETE", "/v2/workflows/runs/wfr_cancel")
        self.assertEqual(status, 200, body)
        # A run whose endpoint fails with no retries left.
        # A run whose endpoint fails with no retries left, and whose
        # failure function answers.
        failed_first = self.trigger("wfr_fail", "/fail", {
            "Upstash-Retries": "0",
            "Upstash-Failure-Callback": self.sink.url("/failcb")})

        ok = self.run_log("wfr_ok")
        self.assertEqual(ok["workflowState"], "RUN_SUCCESS")
        self.assertEqual(ok["workflowUrl"], self.sink.url("/ok"))
        self.assertEqual(ok["workflowRunResponse"], '"done"')
        self.assertGreaterEqual(ok["workflowRunCompletedAt"],
                                ok["workflowRunCreatedAt"])
        self.assertEqual(ok["label"], "alpha")
        self.assertEqual(self.flat(ok), [
            ("sequential", "init", 0, "payload of wfr_ok", "STEP_SUCCESS"),
            ("sequential", "s1", 1, json.dumps("result 1"), "STEP_SUCCESS"),
            ("sequential", "s2", 2, json.dumps("result 2"), "STEP_SUCCESS"),
        ])
        init = ok["steps"][0]["steps"][0]
        self.assertEqual(init["messageId"], ok_first)
        self.assertEqual(init["stepType"], "Initial")
        self.assertEqual(init["callType"], "step")
        self.assertEqual(init["concurrent"], 1)

        cancelled = self.run_log("wfr_cancel")
        self.assertEqual(cancelled["workflowState"], "RUN_CANCELED")
        self.assertEqual([g["type"] for g in cancelled["steps"]],
                         ["sequential", "next"])
        self.assertEqual(cancelled["steps"][1]["steps"][0]["state"],
                         "STEP_CANCELED")

        failed = self.wait_state("wfr_fail", "RUN_FAILED")
        self.assertEqual(failed["dlqId"], failed_first)
        nxt = failed["steps"][-1]
        self.assertEqual(nxt["type"], "next")
        self.assertEqual(nxt["steps"][0]["messageId"], failed_first)
        self.assertEqual(nxt["steps"][0]["state"], "STEP_FAILED")
        self.assertEqual(nxt["steps"][0]["errors"][0]["status"], 500)
        self.assertEqual(nxt["steps"][0]["errors"][0]["body"], "boom")
        cb = self.sink.wait_for(1, path="/failcb", timeout=20)[0]
        ff = qh.wait_until(
            lambda: (lambda f: f if f["state"] == "CALLBACK_SUCCESS" else None)(
                self.run_log("wfr_fail")["failureFunction"]),
            20, "the failure function delivered")
        self.assertEqual(ff["messageId"], cb.header("Upstash-Message-Id"))
        self.assertEqual(ff["url"], self.sink.url("/failcb"))
        self.assertEqual((ff["failStatus"], ff["failResponse"]), (500, "boom"))
        self.assertEqual(ff["dlqId"], failed_first)
        self.assertNotIn("failureFunction", ok)

        # Filters.
        def ids(query):
            return [r["workflowRunId"] for r in self.logs(query)["runs"]]

        self.assertEqual(ids(""), ["wfr_cancel", "wfr_fail", "wfr_ok"])
        self.assertEqual(ids("&state=RUN_FAILED"), ["wfr_fail"])
        self.assertEqual(ids("&state=RUN_STARTED"), [])
        self.assertEqual(ids(f"&workflowUrl={self.sink.url('/cancel')}"),
                         ["wfr_cancel"])
        self.assertEqual(ids("&label=alpha"), ["wfr_ok"])
        self.assertEqual(ids("&label=beta&label=alpha"), ["wfr_ok"])
        self.assertEqual(ids(f"&messageId={ok_first}"), ["wfr_ok"])
        self.assertIn("wfr_ok",
                      ids(f"&workflowCreatedAt={ok['workflowRunCreatedAt']}"))
        self.assertEqual(
            ids(f"&workflowCreatedAt={ok['workflowRunCreatedAt'] - 1}"
                "&workflowRunId=wfr_ok"), [])
        later = int(time.time() * 1000) + 3600_000
        self.assertEqual(ids(f"&fromDate={later}"), [])
        self.assertEqual(len(ids(f"&toDate={later}")), 3)
        self.assertEqual(ids("&workflowRunId=wfr_nosuch"), [])
        # The alias answers the same.
        self.assertEqual(self.logs("&workflowRunId=wfr_ok", route="logs"),
                         self.logs("&workflowRunId=wfr_ok"))

    def test_parallel_steps_are_one_group(self):
        self.trigger("wfr_par", "/par")
        self.sink.wait_for(1, path="/par", timeout=20)
        # The plan of a Promise.all of two steps, the second held back.
        for target, delay in ((1, None), (2, "1h")):
            self.step("wfr_par", "/par", {
                "stepId": 0, "stepName": f"p{target}", "stepType": "Run",
                "concurrent": 2, "targetStep": target},
                {"Upstash-Delay": delay} if delay else None)
        # Branch 1's result; its delivery (which goes on with the run)
        # held back too, so it is the next step, in progress.
        self.step("wfr_par", "/par", {
            "stepId": 1, "stepName": "p1", "stepType": "Run",
            "out": '"one"', "concurrent": 2}, {"Upstash-Delay": "1h"})
        log = self.run_log("wfr_par")
        self.assertEqual([g["type"] for g in log["steps"]],
                         ["sequential", "parallel", "next"])
        par = log["steps"][1]["steps"]
        self.assertEqual([(s["stepName"], s["stepId"], s["state"])
                          for s in par],
                         [("p1", 1, "STEP_SUCCESS"),
                          ("p2", 2, "STEP_PROGRESS")])
        self.assertEqual(par[0]["out"], '"one"')
        self.assertNotIn("out", par[1])
        self.assertEqual([s["concurrent"] for s in par], [2, 2])
        self.assertEqual(log["steps"][2]["steps"][0]["state"], "STEP_PROGRESS")

    def test_call_shows_the_call_and_its_answer(self):
        """context.call: the call to the other URL and the callback that
        brought its answer back, each a step of type Call."""
        self.trigger("wfr_call", "/wf")
        self.sink.wait_for(1, path="/wf", timeout=20)
        self.sink.script("/api", Reply(201, {"X-Answer": "a"}, b"answer"))
        wf = self.sink.url("/wf")
        self.batch(self.sink.url("/api"), {
            "Upstash-Workflow-Init": "false",
            "Upstash-Workflow-RunId": "wfr_call",
            "Upstash-Workflow-Url": wf,
            "Upstash-Workflow-CallType": "toCallback",
            "Upstash-Method": "PUT",
            "Upstash-Forward-X-Api-Key": "k1",
            "Upstash-Callback": wf,
            "Upstash-Callback-Workflow-RunId": "wfr_call",
            "Upstash-Callback-Workflow-CallType": "fromCallback",
            "Upstash-Callback-Workflow-Init": "false",
            "Upstash-Callback-Workflow-Url": wf,
            "Upstash-Callback-Forward-Upstash-Workflow-Callback": "true",
            "Upstash-Callback-Forward-Upstash-Workflow-StepId": "1",
            "Upstash-Callback-Forward-Upstash-Workflow-StepName": "fetch",
            "Upstash-Callback-Forward-Upstash-Workflow-StepType": "Call",
            "Content-Type": "application/json",
        }, '{"q":1}')
        self.sink.wait_for(2, path="/wf", timeout=20)
        log = self.run_log("wfr_call")
        steps = [g["steps"][0] for g in log["steps"]
                 if g["type"] == "sequential"]
        self.assertEqual([(s["callType"], s["stepId"], s["stepName"],
                           s["stepType"]) for s in steps],
                         [("step", 0, "init", "Initial"),
                          ("toCallback", 1, "fetch", "Call"),
                          ("fromCallback", 1, "fetch", "Call")])
        call, answer = steps[1], steps[2]
        self.assertEqual((call["callUrl"], call["callMethod"],
                          call["callBody"]),
                         (self.sink.url("/api"), "PUT", '{"q":1}'))
        self.assertEqual(call["callHeaders"]["X-Api-Key"], ["k1"])
        self.assertEqual((answer["callResponseStatus"],
                          answer["callResponseBody"]), (201, "answer"))
        self.assertEqual(answer["callResponseHeaders"]["X-Answer"], ["a"])

    def test_invoked_run_names_its_invoker(self):
        self.trigger("wfr_parent", "/wf")
        self.sink.wait_for(1, path="/wf", timeout=20)
        child = self.sink.url("/child")
        wrapper = {"body": "child payload", "headers": {},
                   "workflowRunId": "wfr_parent", "workflowRunCreatedAt": 1,
                   "workflowUrl": self.sink.url("/wf"),
                   "step": {"stepId": 1, "stepName": "invoke child",
                            "stepType": "Invoke", "concurrent": 1}}
        status, _, body = self.call(
            "POST", f"/v2/publish/{child}", json.dumps(wrapper).encode(),
            {"Upstash-Workflow-Init": "true",
             "Upstash-Workflow-RunId": "wfr_child",
             "Upstash-Workflow-Url": child,
             "Upstash-Workflow-Invoke": "true",
             "Content-Type": "application/json"})
        self.assertEqual(status, 200, body)
        parent = self.run_log("wfr_parent")
        self.assertNotIn("invoker", parent)
        self.assertEqual(self.run_log("wfr_child")["invoker"], {
            "workflowRunId": "wfr_parent",
            "workflowUrl": self.sink.url("/wf"),
            "workflowRunCreatedAt": parent["workflowRunCreatedAt"]})

    def test_count_and_cursor_page_through_the_runs(self):
        for i in range(5):
            self.trigger(f"wfr_page{i}", "/page", {"Upstash-Delay": "1h"})
        body = self.logs("&count=2")
        self.assertEqual([r["workflowRunId"] for r in body["runs"]],
                         ["wfr_page0", "wfr_page1"])
        seen = [r["workflowRunId"] for r in body["runs"]]
        while body.get("cursor"):
            body = self.logs(f"&count=2&cursor={body['cursor']}")
            seen += [r["workflowRunId"] for r in body["runs"]]
        self.assertEqual(seen, [f"wfr_page{i}" for i in range(5)])
        self.assertEqual(len(self.logs()["runs"]), 5)  # default count 10
        self.assertEqual(self.logs("&count=5").get("cursor"), None)

    def test_bad_parameters_are_refused(self):
        for query in ("&nosuch=1", "&count=0", "&count=101", "&state=DONE",
                      "&fromDate=yesterday", "&cursor=bad%20id",
                      "&workflowCreatedAt=-1"):
            status, _, body = self.call(
                "GET", f"/v2/workflows/events?groupBy=workflowRunId{query}")
            self.assertEqual(status, 400, (query, body))
        status, _, body = self.call("GET", "/v2/workflows/events?groupBy=url")
        self.assertEqual(status, 400, body)
        # Without groupBy: the same logs.
        status, _, body = self.call("GET", "/v2/workflows/logs")
        self.assertEqual((status, body), (200, {"runs": []}))


if __name__ == "__main__":
    unittest.main()
