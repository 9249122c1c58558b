"""A workflow endpoint that speaks the @upstash/workflow protocol the way the
SDK does, in the Python standard library: the tests and the workflow bench
drive qraft with it where running the real SDK (tests/sdk/workflow.test.mjs)
is not the point. docs/workflow.md describes the protocol.

Each run is a chain of `steps` steps. On a delivery the app reads the history
(the body, or GET /v2/workflows/runs/{id} when the body is empty, cut at the
delivery's message id as the SDK does), runs the next step (counting each
execution), publishes its result as a 1-element /v2/batch with
Upstash-Workflow-Init: false, and answers 200; after the last step it
finishes the run (DELETE /v2/workflows/runs/{id}?cancel=false). A publish
that fails is retried on the next node, for a while, as qstash-js retries;
when it cannot be stored the delivery is answered 500 (qraft sends it
again).

What a checker reads:
- executions[(run, k)]: how often step k ran;
- stored_at[(run, k)]: when its result was first acknowledged;
- reruns: (run, k) executed again more than RERUN_GRACE_S after its result
  was acknowledged, which qraft's implicit ack rules out (a re-send that
  the new owner of a message dispatched while its result was being
  committed may arrive just after: at least once);
- finished: runs whose finish was acknowledged;
- a run whose id ends in DEAD_SUFFIX fails at its step dead_step() (the
  app answers 489 with Upstash-NonRetryable-Error, as the SDK does for a
  WorkflowNonRetryableError): qraft dead-letters it and fails the run;
- with record=True (jepsen/run's workflow client), also
  deliveries: one dict per delivery, {"run", "message_id", "time",
  "entries": [[history entry's messageId, stepId], ...] of the steps in the
  history it carried (None when the run was over), "ran": the step it
  executed or None}, and results: one dict per acknowledged step publish,
  {"run", "step", "message_id", "deduplicated", "time"}.
"""

import base64
import http.client
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PUBLISH_DEADLINE_S = 20.0
# How long after a step's result was acknowledged a re-send may still be
# one dispatched before the owner applied it: apply lag on a follower.
RERUN_GRACE_S = 2.0
DEAD_SUFFIX = "-dead"


def dead_step(steps):
    """The step at which a run named ...DEAD_SUFFIX fails."""
    return (steps + 1) // 2


class _Server(ThreadingHTTPServer):
    # Each node sends up to 32 deliveries at once to one host: a listen
    # backlog of 5 (socketserver's default) drops connections, and the
    # kernel's SYN retries then hold a delivery for 1, 3, 7... up to 31 s.
    request_queue_size = 1024


class WorkflowApp:
    def __init__(self, http_addrs, token, steps=5, path="/wf",
                 step_seconds=0.0, host="127.0.0.1", port=0, record=False):
        self.http_addrs = list(http_addrs)  # "host:port" of every node
        self.token = token
        self.steps = steps
        self.path = path
        self.step_seconds = step_seconds  # each step's "work"
        self.out_bytes = 0  # each step's result: a string this long
        self.lock = threading.Lock()
        self.executions = {}
        self.stored_at = {}
        self.reruns = []
        self.finished = set()
        self.errors = []
        self.record = record
        self.deliveries = []
        self.results = []
        self._next = 0
        self.server = _Server((host, port), self._handler())
        self.server.daemon_threads = True
        # A delivery cut off (a node killed, a timeout) is qraft's business.
        self.server.handle_error = lambda request, client_address: None
        self.thread = threading.Thread(target=self.server.serve_forever,
                                       daemon=True)

    # Life cycle.
    def start(self):
        self.thread.start()
        return self

    def stop(self):
        self.server.shutdown()
        self.server.server_close()

    @property
    def url(self):
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}{self.path}"

    # Calls to qraft, any node (each answers like the leader, #19).
    def call(self, method, target, body=None, headers=None, addr=None,
             timeout=10.0):
        """One request to addr (default: the next node in turn); returns
        (status, parsed JSON or None). Raises OSError on a transport
        failure (http.client's errors are OSError or ValueError)."""
        if addr is None:
            with self.lock:
                addr = self.http_addrs[self._next % len(self.http_addrs)]
                self._next += 1
        conn = http.client.HTTPConnection(addr, timeout=timeout)
        try:
            h = {"Authorization": f"Bearer {self.token}"}
            h.update(headers or {})
            conn.request(method, target, body=body, headers=h)
            resp = conn.getresponse()
            data = resp.read()
            try:
                parsed = json.loads(data) if data else None
            except ValueError:
                parsed = None
            return resp.status, parsed
        finally:
            conn.close()

    def call_retrying(self, method, target, body=None, headers=None,
                      ok=(200, 202)):
        """call() on one node after another until one answers ok (or a 400:
        the run is over) or the deadline passes; returns the last (status,
        parsed answer)."""
        deadline = time.time() + PUBLISH_DEADLINE_S
        status, parsed = None, None
        while time.time() < deadline:
            try:
                status, parsed = self.call(method, target, body, headers)
            except (OSError, ValueError):
                status, parsed = None, None
            if status in ok or status == 400:
                break
            time.sleep(0.1)
        return status, parsed

    def trigger_batch(self, run_id, payload="start"):
        """The /v2/batch body that triggers run_id, as Client.trigger
        sends it."""
        el = {"destination": self.url, "body": payload, "headers": {
            "Upstash-Workflow-Init": "true",
            "Upstash-Workflow-RunId": run_id,
            "Upstash-Workflow-Url": self.url,
            "Upstash-Workflow-Sdk-Version": "1",
            "Upstash-Forward-Upstash-Workflow-Sdk-Version": "1",
            "Upstash-Retry-Delay": "200",
            "Content-Type": "text/plain",
        }}
        return json.dumps([el])

    def trigger(self, run_id, payload="start"):
        status, _ = self.call_retrying("POST", "/v2/batch",
                                       self.trigger_batch(run_id, payload),
                                       {"Content-Type": "application/json"})
        return status

    # The endpoint.
    def _history(self, run_id, message_id, body):
        if body:
            entries = json.loads(body)
        else:  # lazy fetch: the whole history, cut at this delivery
            status, entries = self.call("GET", f"/v2/workflows/runs/{run_id}")
            if status != 200:
                return None
            for i, e in enumerate(entries):
                if e["messageId"] == message_id:
                    entries = entries[:i + 1]
                    break
        return [dict(json.loads(base64.b64decode(e["body"])),
                     messageId=e["messageId"])
                for e in entries[1:] if e["callType"] == "step"]

    def _deliver(self, headers, body):
        run_id = headers.get("Upstash-Workflow-RunId")
        if not run_id:
            return 500
        rec = {"run": run_id, "message_id": headers.get("Upstash-Message-Id"),
               "time": time.time(), "entries": None, "ran": None}
        if self.record:
            with self.lock:
                self.deliveries.append(rec)
        steps = self._history(run_id, rec["message_id"], body)
        if steps is None:
            return 200  # the run is over
        rec["entries"] = [[s["messageId"], s["stepId"]] for s in steps]
        # A publish retried after a lost answer stores a step twice; the
        # SDK keeps the first of each id, and so does this app.
        done = []
        for s in steps:
            if s["stepId"] not in done:
                done.append(s["stepId"])
        if done != list(range(1, len(done) + 1)):
            with self.lock:
                self.errors.append(f"{run_id}: steps out of order: {done}")
        k = (max(done) if done else 0) + 1
        if k > self.steps:
            status, _ = self.call_retrying(
                "DELETE", f"/v2/workflows/runs/{run_id}?cancel=false",
                json.dumps("done"))
            if status == 200:
                with self.lock:
                    self.finished.add(run_id)
                return 200
            return 500
        key = (run_id, k)
        rec["ran"] = k
        with self.lock:
            self.executions[key] = self.executions.get(key, 0) + 1
            if time.time() - self.stored_at.get(key, 1e18) > RERUN_GRACE_S:
                self.reruns.append(key)
        if run_id.endswith(DEAD_SUFFIX) and k == dead_step(self.steps):
            return 489
        if self.step_seconds:
            time.sleep(self.step_seconds)
        out = f"result {k}".ljust(self.out_bytes, ".")
        step = {"stepId": k, "stepName": f"step {k}", "stepType": "Run",
                "out": json.dumps(out), "concurrent": 1}
        el = {"destination": self.url, "body": json.dumps(step), "headers": {
            "Upstash-Workflow-Init": "false",
            "Upstash-Workflow-RunId": run_id,
            "Upstash-Workflow-Url": self.url,
            "Upstash-Workflow-Sdk-Version": "1",
            "Upstash-Forward-Upstash-Workflow-Sdk-Version": "1",
            "Content-Type": "application/json",
        }}
        status, answer = self.call_retrying(
            "POST", "/v2/batch", json.dumps([el]),
            {"Content-Type": "application/json"})
        if status in (200, 202):  # 202: stored already (a lost answer)
            with self.lock:
                self.stored_at.setdefault(key, time.time())
                if self.record:
                    first = answer[0] if isinstance(answer, list) and \
                        answer and isinstance(answer[0], dict) else {}
                    self.results.append({
                        "run": run_id, "step": k,
                        "message_id": first.get("messageId"),
                        "deduplicated": bool(first.get("deduplicated")),
                        "time": time.time()})
            return 200
        return 200 if status == 400 else 500

    def _handler(self):
        app = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else b""
                try:
                    status = app._deliver(self.headers, body)
                except Exception as e:  # noqa: BLE001 (a test's app)
                    with app.lock:
                        app.errors.append(repr(e))
                    status = 500
                self.send_response(status)
                if status == 489:
                    self.send_header("Upstash-NonRetryable-Error", "true")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, fmt, *args):
                pass

        return Handler
