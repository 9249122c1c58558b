// Upstash Workflow on a real `qraftd --dev` (issue #12, docs/workflow-design.md
// stage 1): an app written with the official @upstash/workflow 1.3.3 runs
// unchanged. Its framework-agnostic `serve` sits in a plain node:http server
// (WorkflowApp, below) with signatures verified by the SDK's Receiver and the
// node's keys. Runs are started with the workflow Client's trigger or with a
// plain qstash publishJSON; each case checks what the app saw: every
// context.run body ran once, sleep was not early, Promise.all kept its order,
// a history past the inline limit came through the lazy fetch
// (GET /v2/workflows/runs/{id}), a duplicate trigger ran once, and a cancel
// stopped a sleeping run; then waitForEvent/notify, call, failureFunction,
// invoke (the child's result, isFailed, isCanceled), Client.logs, the
// workflow DLQ (resume after a fix) and webhooks (the node's token is base64
// JSON {"UserID"}, as createWebhook needs). A second suite always runs on a
// 3-node cluster through a follower and kills its leader mid-run.
//
// QRAFT_BIN names the build's bin directory (it holds qraftd).
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { once } from "node:events";
import http from "node:http";
import { after, before, describe, test } from "node:test";

import { FollowerNode, Waiters, WAIT_TIMEOUT, waitFor, withDevNode }
  from "./harness.mjs";

const { Client: QStashClient, Receiver } = await import("@upstash/qstash");
const { Client: WorkflowClient, serve } = await import("@upstash/workflow");

/* A run's deliveries may each wait for a step publish and an answer: give a
 * whole run more than one wait. */
const RUN_TIMEOUT = 2 * WAIT_TIMEOUT;

/* What the SDK asked qraft (its HTTP requests), for checks and for the
 * story a failed wait tells. Wraps qstashClient.http.request in place. */
function recordCalls(qstashClient, calls, waiters) {
  const httpClient = qstashClient.http;
  const request = httpClient.request.bind(httpClient);
  httpClient.request = async (req) => {
    const call = {
      at: Date.now(),
      method: req.method ?? "GET",
      path: req.path.join("/"),
      entries: null,
    };
    if (call.path === "v2/batch" && typeof req.body === "string") {
      // [{destination, headers (lower-case names), body}], body a string.
      call.entries = JSON.parse(req.body).map((e) => ({
        ...e,
        step: parseJson(e.body),
      }));
    }
    calls.push(call);
    try {
      call.answer = await request(req);
      return call.answer;
    } catch (err) {
      call.error = err;
      throw err;
    } finally {
      call.doneAt = Date.now();
      waiters.notify();
    }
  };
}

function parseJson(text) {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

/* An answer of the SDK's handler, short: a thrown error's name and
 * message (not its stack), else the JSON as it is. */
function summary(answer) {
  const json = parseJson(answer ?? "");
  if (json?.error) {
    return `${json.error}: ${json.message}`;
  }
  return String(answer ?? "").slice(0, 300);
}

/* The history a delivery carried: its steps' names ("init" first), or null
 * for an empty body (the SDK then fetches it). */
function historyNames(body) {
  if (body === "") {
    return null;
  }
  const raw = parseJson(body);
  if (!Array.isArray(raw)) {
    return undefined;
  }
  return raw.map((e, i) => {
    if (i === 0) {
      return "init";
    }
    const step = parseJson(Buffer.from(e.body, "base64").toString("utf8"));
    return step?.targetStep ? `plan:${step.targetStep}`
      : `${step?.stepName}(${e.callType})`;
  });
}

/*
 * A workflow app on 127.0.0.1: serve() handlers on paths (workflow(path,
 * fn)), reached through a node:http server that turns each IncomingMessage
 * into a WHATWG Request and writes the handler's Response back. It records
 * per run (by workflowRunId) how often each context.run body ran and when
 * (ran()), what the route returned after its last step (finish()), every
 * delivery it got (deliveries) and every request the SDK made to qraft
 * (calls). connect(env) is given the node's QSTASH_* values once the node
 * runs (withDevNode's ready hook).
 */
class WorkflowApp {
  runs = new Map();
  deliveries = [];
  calls = [];
  plainRequests = [];
  #routes = new Map();
  #endpoints = new Map();
  #handlers = new Map();
  #waiters = new Waiters();
  logHint = null; // () => the node's log tail, for a failed wait
  #server = http.createServer((req, res) => {
    this.#serveHttp(req, res).catch((err) => {
      res.writeHead(599);
      res.end(String(err?.stack ?? err));
    });
  });

  /* A workflow on path; options go to serve() (e.g. failureFunction). */
  workflow(path, routeFunction, options = {}) {
    this.#routes.set(path, { routeFunction, options });
  }

  /* A plain endpoint on path (what context.call calls): answer(body, n)
   * gives {status, body} for the n-th request (from 0). Its requests are
   * in plainRequests. */
  endpoint(path, answer) {
    this.#endpoints.set(path, answer);
  }

  async start() {
    this.#server.listen(0, "127.0.0.1");
    await once(this.#server, "listening");
    this.port = this.#server.address().port;
  }

  url(pathAndQuery) {
    return `http://127.0.0.1:${this.port}${pathAndQuery}`;
  }

  connect(env) {
    this.env = env;
    this.qstash = new QStashClient({ baseUrl: env.QSTASH_URL,
      token: env.QSTASH_TOKEN });
    recordCalls(this.qstash, this.calls, this.#waiters);
    const receiver = new Receiver({
      currentSigningKey: env.QSTASH_CURRENT_SIGNING_KEY,
      nextSigningKey: env.QSTASH_NEXT_SIGNING_KEY,
      devMode: false,
    });
    for (const [path, { routeFunction, options }] of this.#routes) {
      // env: {} keeps the process's QSTASH_*/UPSTASH_WORKFLOW_URL out.
      const { handler } = serve(routeFunction, { qstashClient: this.qstash,
        receiver, env: {}, ...options });
      this.#handlers.set(path, handler);
    }
  }

  /* A workflow Client (trigger, cancel) whose requests are recorded too. */
  workflowClient() {
    const client = new WorkflowClient({ baseUrl: this.env.QSTASH_URL,
      token: this.env.QSTASH_TOKEN });
    recordCalls(client.client, this.calls, this.#waiters);
    return client;
  }

  async #serveHttp(req, res) {
    const chunks = [];
    for await (const c of req) {
      chunks.push(c);
    }
    const body = Buffer.concat(chunks).toString("utf8");
    const path = req.url.split("?")[0];
    const endpoint = this.#endpoints.get(path);
    if (endpoint) {
      const n = this.plainRequests.filter((r) => r.path === path).length;
      const { status, body: answer } = endpoint(body, n);
      this.plainRequests.push({ at: Date.now(), path, headers: req.headers,
        body, status });
      res.writeHead(status, { "Content-Type": "application/json" });
      res.end(answer);
      this.#waiters.notify();
      return;
    }
    const delivery = {
      at: Date.now(),
      path,
      runId: req.headers["upstash-workflow-runid"],
      headers: req.headers,
      body,
      history: historyNames(body),
    };
    const handler = this.#handlers.get(path);
    if (!handler) {
      delivery.status = 404;
      this.#record(delivery);
      res.writeHead(404);
      res.end();
      return;
    }
    const headers = new Headers();
    for (const [name, value] of Object.entries(req.headers)) {
      for (const v of Array.isArray(value) ? value : [value]) {
        headers.append(name, v);
      }
    }
    const request = new Request(this.url(req.url), {
      method: req.method,
      headers,
      body: req.method === "GET" || req.method === "HEAD" ? undefined : body,
    });
    const response = await handler(request);
    const answer = await response.text();
    delivery.status = response.status;
    delivery.answer = answer;
    // A first invocation (no run id yet) names its new run in the answer.
    delivery.runId ??= parseJson(answer)?.workflowRunId;
    this.#record(delivery);
    res.writeHead(response.status, Object.fromEntries(response.headers));
    res.end(answer);
  }

  #record(delivery) {
    this.deliveries.push(delivery);
    this.#waiters.notify();
  }

  run(runId) {
    let run = this.runs.get(runId);
    if (!run) {
      run = { id: runId, counts: {}, times: {}, values: {}, finished: [] };
      this.runs.set(runId, run);
    }
    return run;
  }

  /* Called inside a context.run body: counts the run of step name. */
  ran(context, name, value) {
    const run = this.run(context.workflowRunId);
    run.path = new URL(context.url).pathname;
    run.counts[name] = (run.counts[name] ?? 0) + 1;
    (run.times[name] ??= []).push(Date.now());
    if (value !== undefined) {
      run.values[name] = value;
    }
    this.#waiters.notify();
  }

  /* Called by a route after its last step, with what it returns. */
  finish(context, result) {
    this.run(context.workflowRunId).finished.push(result);
    this.#waiters.notify();
  }

  /* Called by a failureFunction with what it was given. */
  failed(context, what) {
    (this.run(context.workflowRunId).failures ??= []).push(what);
    this.#waiters.notify();
  }

  /* The SDK's request on path (e.g. "v2/wait/<event>") once qraft
   * answered it 2xx. */
  answered(path) {
    return this.calls.find((c) => c.path === path && c.doneAt && !c.error);
  }

  /* The runs whose steps ran on path. */
  runsOn(path) {
    return [...this.runs.values()].filter((r) => r.path === path);
  }

  /* The message ids qraft answered for runId's publishes (trigger and
   * steps). */
  messageIds(runId) {
    const ids = new Set();
    for (const call of this.calls) {
      call.entries?.forEach((e, i) => {
        const id = Array.isArray(call.answer) && call.answer[i]?.messageId;
        if (id && e.headers["upstash-workflow-runid"] === runId) {
          ids.add(id);
        }
      });
    }
    return ids;
  }

  /* runId's deliveries: by their run id header, or, should that be
   * missing, by the message id of one of the run's publishes. */
  deliveriesOf(runId) {
    const ids = this.messageIds(runId);
    return this.deliveries.filter((d) => d.runId === runId ||
      ids.has(d.headers["upstash-message-id"]));
  }

  /* The step publish (a batch entry) of stepName in runId, once qraft
   * answered it: {at (when it was sent), entry, messageId}. */
  published(runId, stepName) {
    for (const call of this.calls) {
      const i = call.entries?.findIndex((e) =>
        e.headers["upstash-workflow-runid"] === runId &&
        e.step?.stepName === stepName) ?? -1;
      if (i >= 0 && !call.error && call.doneAt) {
        return { at: call.at, entry: call.entries[i],
          messageId: call.answer?.[i]?.messageId };
      }
    }
    return null;
  }

  /* The SDK's finish of runId (DELETE .../runs/{id}?cancel=false), once
   * qraft answered it 2xx. */
  finishCall(runId) {
    return this.calls.find((c) => c.method === "DELETE" &&
      c.path === `v2/workflows/runs/${runId}?cancel=false` &&
      c.doneAt && !c.error);
  }

  until(check, what, timeoutMs = WAIT_TIMEOUT) {
    return this.#waiters.until(check, timeoutMs, what);
  }

  /* As until(), but fails at once when a delivery of runId (since that
   * time, ms) was answered other than 200: no route here throws unless a
   * case makes it, so the SDK refused what qraft sent (the answer says
   * why). */
  untilRun(runId, check, what, timeoutMs = WAIT_TIMEOUT, since = 0) {
    return this.until(() => {
      const bad = this.deliveriesOf(runId).find((d) => d.at >= since &&
        d.status !== 200);
      if (bad) {
        throw new Error(`a delivery of run ${runId} was answered ` +
          `${bad.status}${this.explain(runId)}`);
      }
      const counts = this.runs.get(runId)?.counts ?? {};
      const twice = Object.keys(counts).find((name) => counts[name] > 1);
      if (twice) {
        throw new Error(`step ${twice} of run ${runId} ran ` +
          `${counts[twice]} times${this.explain(runId)}`);
      }
      return check();
    }, () => `${typeof what === "function" ? what() : what}` +
      this.explain(runId), timeoutMs);
  }

  /* Resolves to runId's record once its route finished and the SDK's
   * DELETE ?cancel=false was answered (deliveries before since may have
   * failed). */
  ended(runId, timeoutMs = RUN_TIMEOUT, since = 0) {
    return this.untilRun(runId, () => {
      const run = this.runs.get(runId);
      return run?.finished.length > 0 && this.finishCall(runId) && run;
    }, `run ${runId} to finish`, timeoutMs, since);
  }

  /* What the app saw of runId, for a failed wait's message. */
  explain(runId) {
    const items = [];
    for (const d of this.deliveriesOf(runId)) {
      const h = d.headers;
      items.push({ at: d.at, text: `qraft -> app ${d.path} ` +
        `msg=${h["upstash-message-id"]} retried=${h["upstash-retried"]} ` +
        `runid=${h["upstash-workflow-runid"]} ` +
        `sdk-version=${h["upstash-workflow-sdk-version"]} ` +
        `history=${JSON.stringify(d.history)} -> ${d.status} ` +
        `${summary(d.answer)}` });
    }
    for (const c of this.calls) {
      const mine = c.path.includes(runId) || c.entries?.some((e) =>
        e.headers["upstash-workflow-runid"] === runId);
      if (mine) {
        const what = c.entries
          ? JSON.stringify(c.entries.map((e) => e.step?.stepName ??
            (e.headers["upstash-workflow-init"] === "true" ? "trigger"
              : "?")))
          : "";
        const out = c.error
          ? `error ${c.error.status ?? ""} ${c.error.message}`
          : JSON.stringify(c.answer)?.slice(0, 200);
        items.push({ at: c.at, text: `SDK -> qraft ${c.method} /${c.path} ` +
          `${what} -> ${out}` });
      }
    }
    items.sort((x, y) => x.at - y.at);
    const t0 = items[0]?.at ?? 0;
    return [`\n--- app: run ${runId} ---`,
      `steps ran: ${JSON.stringify(this.runs.get(runId)?.counts ?? {})}`,
      ...items.map((i) => `+${i.at - t0} ms ${i.text}`)].join("\n") +
      (this.logHint?.() ?? "");
  }

  async close() {
    if (!this.#server.listening) {
      return;
    }
    this.#server.closeAllConnections();
    this.#server.close();
    await once(this.#server, "close");
  }
}

const SLEEP_S = 3;
const CANCEL_SLEEP_S = 4;
const BIG_BYTES = 2_000_000;
// A step's message is at most --max-body-bytes, and qraft sends a history
// inline up to the same size (docs/workflow-design.md 2): 2.5 MiB lets the
// ~2 MB step be published while its history, base64 (~2.67 MB), is too
// big to send, so the SDK must fetch it.
const MAX_BODY_BYTES = 2_621_440;

function bigValue() {
  return "0123456789abcdef".repeat(BIG_BYTES / 16);
}

/* What invoke needs of the invoked workflow: what the SDK's createWorkflow
 * returns once serveMany named it (its workflowId; invoke publishes to the
 * invoker's URL with the last path segment replaced by it). */
function invokable(workflowId) {
  return { workflowId, routeFunction: undefined, options: {} };
}

// The API token createWebhook can read: base64 of JSON {"UserID"}
// (docs/workflow.md); qraft itself compares it as an opaque secret.
const HOOK_USER = "sdk-user";
const TOKEN = Buffer.from(JSON.stringify({ UserID: HOOK_USER }))
  .toString("base64");

function sha256(text) {
  return createHash("sha256").update(text).digest("hex");
}

describe("Upstash Workflow 1.3.3 runs unchanged on qraft", () => {
  const app = new WorkflowApp();

  async function chain(context) {
    const a = await context.run("one", () => {
      app.ran(context, "one");
      return context.requestPayload.start + 1;
    });
    const b = await context.run("two", () => {
      app.ran(context, "two");
      return a * 10;
    });
    const c = await context.run("three", () => {
      app.ran(context, "three");
      return `${b}!`;
    });
    const result = { a, b, c };
    app.finish(context, result);
    return result;
  }
  app.workflow("/chain", chain);
  app.workflow("/published", chain);
  app.workflow("/dup", chain);

  app.workflow("/sleep", async (context) => {
    await context.run("before", () => app.ran(context, "before"));
    await context.sleep("nap", SLEEP_S);
    await context.run("after", () => app.ran(context, "after"));
    app.finish(context, "slept");
  });

  app.workflow("/cancel", async (context) => {
    await context.run("before", () => app.ran(context, "before"));
    await context.sleep("nap", CANCEL_SLEEP_S);
    await context.run("after", () => app.ran(context, "after"));
    app.finish(context, "not cancelled");
  });

  app.workflow("/parallel", async (context) => {
    // Each branch works for a different time (the app's own work, not a
    // wait), so their results reach qraft last branch first.
    const branch = (name, ms, value) => context.run(name, async () => {
      await new Promise((r) => setTimeout(r, ms));
      app.ran(context, name);
      return value;
    });
    const results = await Promise.all([branch("p1", 400, "first"),
      branch("p2", 200, { second: 2 }), branch("p3", 0, [3])]);
    app.finish(context, results);
    return results;
  });

  app.workflow("/big", async (context) => {
    const big = await context.run("big", () => {
      const value = bigValue();
      app.ran(context, "big");
      return value;
    });
    const seen = await context.run("check", () => {
      const value = { length: big.length, sha256: sha256(big) };
      app.ran(context, "check", value);
      return value;
    });
    app.finish(context, seen);
    return seen;
  });

  app.workflow("/wait", async (context) => {
    const { eventId, timeout } = context.requestPayload;
    const waited = await context.waitForEvent("w", eventId, { timeout });
    await context.run("after", () => app.ran(context, "after"));
    app.finish(context, waited);
  });

  app.endpoint("/api", (body) => ({ status: 200,
    body: JSON.stringify({ got: JSON.parse(body) }) }));
  app.workflow("/caller", async (context) => {
    const res = await context.call("c", { url: app.url("/api"),
      method: "POST", body: JSON.stringify({ x: 1 }),
      headers: { "X-Test": "yes" } });
    await context.run("after", () => app.ran(context, "after"));
    app.finish(context, { status: res.status, body: res.body });
  });

  app.workflow("/boom", async (context) => {
    await context.run("boom", () => {
      app.ran(context, "boom");
      throw new Error("boom!");
    });
    app.finish(context, "not failed");
  }, {
    failureFunction: ({ context, failStatus, failResponse }) => {
      app.failed(context, { failStatus, failResponse,
        payload: context.requestPayload });
    },
  });

  // Stage 5: invoke. Each child sits where the SDK sends it: the
  // invoker's URL (/inv/parent) with its last segment replaced by the
  // child's workflowId.
  app.workflow("/inv/parent", async (context) => {
    const { child } = context.requestPayload;
    const got = await context.invoke("invoke", { workflow: invokable(child),
      body: { n: 21 }, retries: 0 });
    await context.run("after", () => app.ran(context, "after"));
    app.finish(context, got);
    return got;
  });
  app.workflow("/inv/child", async (context) => {
    const doubled = await context.run("double", () => {
      app.ran(context, "double");
      return context.requestPayload.n * 2;
    });
    app.finish(context, { doubled });
    return { doubled };
  });
  app.workflow("/inv/child-fails", async (context) => {
    await context.run("throw", () => {
      app.ran(context, "throw");
      throw new Error("child failed");
    });
    app.finish(context, "not failed");
  });
  app.workflow("/inv/child-cancels", async (context) => {
    await context.run("first", () => app.ran(context, "first"));
    await context.cancel();
    app.finish(context, "not cancelled");
  });

  // The workflow DLQ: "flaky" throws until the app is "fixed".
  let fixed = false;
  app.workflow("/flaky", async (context) => {
    await context.run("before", () => app.ran(context, "before"));
    const value = await context.run("flaky", () => {
      if (!fixed) {
        const run = app.run(context.workflowRunId);
        run.failedTries = (run.failedTries ?? 0) + 1;
        throw new Error("not fixed yet");
      }
      app.ran(context, "flaky");
      return "fixed";
    });
    await context.run("after", () => app.ran(context, "after"));
    app.finish(context, value);
    return value;
  });

  // A webhook: its URL is told (as a step's value) to whoever will call it.
  app.workflow("/hook", async (context) => {
    const webhook = await context.createWebhook("create");
    await context.run("tell", () => app.ran(context, "tell", webhook));
    const { request, timeout } = await context.waitForWebhook("wait",
      webhook, "30s");
    const seen = await context.run("read", async () => {
      const value = { method: request?.method, body: await request?.text(),
        header: request?.headers.get("x-hook") };
      app.ran(context, "read", value);
      return value;
    });
    app.finish(context, { timeout, ...seen });
  });

  let wf; // the workflow Client, once the node runs
  const dev = withDevNode({
    app,
    token: TOKEN,
    nodeArgs: ["--max-body-bytes", String(MAX_BODY_BYTES)],
    ready: ({ node }) => {
      app.connect(node.env);
      app.logHint = () => node.logHint();
      wf = app.workflowClient();
    },
  });

  /* GET /v2/workflows/runs/{id}: the answer's status. */
  async function runStatus(runId) {
    const res = await fetch(
      `${dev.node.env.QSTASH_URL}/v2/workflows/runs/${runId}`,
      { headers: { Authorization: `Bearer ${dev.node.env.QSTASH_TOKEN}` } });
    await res.arrayBuffer();
    return res.status;
  }

  /* Resolves once qraft answers 404 for runId (the run ended). */
  function gone(runId) {
    return waitFor(async () => (await runStatus(runId)) === 404,
      () => `GET /v2/workflows/runs/${runId} to answer 404` +
        app.explain(runId) + dev.node.logHint());
  }

  test("a chain of three context.run, started with Client.trigger",
    async () => {
      const { workflowRunId: id } = await wf.trigger({
        url: app.url("/chain"), body: { start: 1 } });
      assert.match(id, /^wfr_/);
      const run = await app.ended(id);
      assert.deepEqual(run.counts, { one: 1, two: 1, three: 1 },
        app.explain(id));
      assert.deepEqual(run.finished, [{ a: 2, b: 20, c: "20!" }]);
      await gone(id);

      // Every delivery of the run carried the run's headers (1.3).
      const deliveries = app.deliveriesOf(id);
      assert.ok(deliveries.length >= 4, app.explain(id));
      for (const d of deliveries) {
        assert.equal(d.headers["upstash-workflow-sdk-version"], "1");
        assert.equal(d.headers["upstash-workflow-url"], app.url("/chain"));
        assert.match(d.headers["upstash-workflow-createdat"] ?? "",
          /^\d{13}$/);
        assert.ok(d.headers["upstash-message-id"]);
        assert.equal(d.status, 200, app.explain(id));
      }
      // The first carried only the initial payload; each later one the
      // history up to its own step.
      assert.deepEqual(deliveries[0].history, ["init"]);
      assert.deepEqual(deliveries.at(-1).history,
        ["init", "one(step)", "two(step)", "three(step)"]);
    });

  test("a run started with a plain qstash publishJSON", async () => {
    const { messageId } = await dev.client.publishJSON({
      url: app.url("/published"), body: { start: 5 } });
    assert.ok(messageId);
    // The SDK's first-invocation path triggers the run itself, with a run
    // id of its own that its answer names.
    const first = await app.until(() => app.deliveries.find((d) =>
      d.path === "/published"), "a delivery on /published");
    assert.equal(first.headers["upstash-workflow-sdk-version"], undefined);
    assert.equal(first.status, 200, first.answer);
    const id = first.runId;
    assert.match(id, /^wfr_/);
    const run = await app.ended(id);
    assert.deepEqual(run.counts, { one: 1, two: 1, three: 1 },
      app.explain(id));
    assert.deepEqual(run.finished, [{ a: 6, b: 60, c: "60!" }]);
    await gone(id);
    assert.equal(app.runsOn("/published").length, 1);
  });

  test(`context.sleep("nap", ${SLEEP_S}) is not early`, async () => {
    const { workflowRunId: id } = await wf.trigger({
      url: app.url("/sleep"), body: {} });
    const run = await app.ended(id);
    assert.deepEqual(run.counts, { before: 1, after: 1 }, app.explain(id));
    const nap = app.published(id, "nap");
    assert.ok(nap, app.explain(id));
    assert.equal(nap.entry.headers["upstash-delay"], `${SLEEP_S}s`);
    const waited = run.times.after[0] - nap.at;
    assert.ok(waited >= SLEEP_S * 1000,
      `the step after the sleep ran ${waited} ms after the sleep was ` +
      `published${app.explain(id)}`);
    await gone(id);
  });

  test("a step message carries the trigger's retries and failure URL",
    async () => {
      // WF_TriggerOnConfig: the SDK sends them with the trigger only. The
      // sleep keeps the step's message pending, so it can be read.
      const failureUrl = app.url("/failed");
      const { workflowRunId: id } = await wf.trigger({
        url: app.url("/sleep"), body: {}, retries: 2, failureUrl });
      const nap = await app.untilRun(id, () => app.published(id, "nap"),
        "the sleep step to be published");
      assert.ok(nap.messageId, app.explain(id));
      const m = await dev.client.messages.get(nap.messageId);
      assert.equal(m.maxRetries, 2, JSON.stringify(m));
      assert.equal(m.failureCallback, failureUrl, JSON.stringify(m));
      const run = await app.ended(id);
      assert.deepEqual(run.counts, { before: 1, after: 1 }, app.explain(id));
    });

  test("Promise.all of three context.run: each once, results in order",
    async () => {
      const { workflowRunId: id } = await wf.trigger({
        url: app.url("/parallel"), body: {} });
      const run = await app.ended(id);
      assert.deepEqual(run.counts, { p1: 1, p2: 1, p3: 1 }, app.explain(id));
      assert.deepEqual(run.finished, [["first", { second: 2 }, [3]]]);
      await gone(id);
    });

  test("a 2 MB step result: the history comes through the lazy fetch",
    async () => {
      const { workflowRunId: id } = await wf.trigger({
        url: app.url("/big"), body: {} });
      const run = await app.ended(id, 2 * RUN_TIMEOUT);
      assert.deepEqual(run.counts, { big: 1, check: 1 }, app.explain(id));
      const want = { length: BIG_BYTES, sha256: sha256(bigValue()) };
      assert.deepEqual(run.values.check, want);
      assert.deepEqual(run.finished, [want]);
      // qraft sent the history past its inline limit as an empty body,
      // and the SDK fetched it.
      assert.ok(app.deliveriesOf(id).some((d) => d.history === null),
        `no delivery with an empty body${app.explain(id)}`);
      assert.ok(app.calls.some((c) => c.method === "GET" &&
        c.path === `v2/workflows/runs/${id}` && !c.error),
      `no lazy fetch answered${app.explain(id)}`);
      await gone(id);
    });

  test("a duplicate trigger with the same workflowRunId runs once",
    async () => {
      const params = { url: app.url("/dup"), body: { start: 7 },
        workflowRunId: `dup-${process.pid}` };
      const first = await wf.trigger(params);
      // 1.3.3's trigger resolves the same way for a run that exists; what
      // tells is qraft's batch answer, `deduplicated: true`.
      const second = await wf.trigger(params);
      const id = first.workflowRunId;
      assert.equal(id, `wfr_dup-${process.pid}`);
      assert.deepEqual(second, first);
      const triggers = app.calls.filter((c) => c.entries?.some((e) =>
        e.headers["upstash-workflow-runid"] === id &&
        e.headers["upstash-workflow-init"] === "true"));
      assert.equal(triggers.length, 2);
      assert.notEqual(triggers[0].answer?.[0]?.deduplicated, true,
        app.explain(id));
      assert.equal(triggers[1].answer?.[0]?.deduplicated, true,
        app.explain(id));

      const run = await app.ended(id);
      assert.deepEqual(run.counts, { one: 1, two: 1, three: 1 },
        app.explain(id));
      assert.deepEqual(run.finished, [{ a: 8, b: 80, c: "80!" }]);
      const starts = app.deliveriesOf(id).filter((d) =>
        JSON.stringify(d.history) === '["init"]');
      assert.equal(starts.length, 1, app.explain(id));
      await gone(id);
    });

  test("Client.cancel while a run sleeps: the step after never runs",
    async (t) => {
      const { workflowRunId: id } = await wf.trigger({
        url: app.url("/cancel"), body: {} });
      const nap = await app.untilRun(id, () => app.published(id, "nap"),
        "the sleep step to be published");
      const answer = await wf.cancel({ ids: id });
      assert.deepEqual(answer, { cancelled: 1 });
      await gone(id);

      // Past the sleep's due time, with room for a delivery to arrive
      // and run the step: still not run.
      const due = nap.at + CANCEL_SLEEP_S * 1000 + 3000;
      await waitFor(() => {
        const run = app.runs.get(id);
        assert.equal(run?.counts.after, undefined,
          `the step after the sleep ran${app.explain(id)}`);
        return Date.now() >= due;
      }, "the sleep's due time to pass", due - Date.now() + WAIT_TIMEOUT);
      const run = app.runs.get(id);
      assert.deepEqual(run.counts, { before: 1 });
      assert.deepEqual(run.finished, []);
      const late = app.deliveriesOf(id).filter((d) => d.at > nap.at);
      if (late.length > 0) {
        t.diagnostic(`qraft still delivered ${late.length} message(s) of ` +
          `the cancelled run${app.explain(id)}`);
      }
    });

  // Stages 2 to 4 of docs/workflow-design.md.

  test("waitForEvent, then Client.notify: the data reaches the run",
    async () => {
      const eventId = `ev-${process.pid}-notify`;
      const { workflowRunId: id } = await wf.trigger({
        url: app.url("/wait"), body: { eventId, timeout: "30s" } });
      await app.untilRun(id, () => app.answered(`v2/wait/${eventId}`),
        `the wait for ${eventId} to be registered`);
      const waiters = await wf.getWaiters({ eventId });
      assert.equal(waiters.length, 1, JSON.stringify(waiters));
      const notified = await wf.notify({ eventId,
        eventData: { ok: 1, text: "h\u00e9" } });
      assert.equal(notified.length, 1, JSON.stringify(notified));
      const run = await app.ended(id);
      assert.deepEqual(run.finished,
        [{ eventData: { ok: 1, text: "h\u00e9" }, timeout: false }]);
      assert.deepEqual(run.counts, { after: 1 });
      assert.deepEqual(await wf.notify({ eventId, eventData: 2 }), []);
      await gone(id);
    });

  test("waitForEvent times out, not early", async () => {
    const eventId = `ev-${process.pid}-timeout`;
    const { workflowRunId: id } = await wf.trigger({
      url: app.url("/wait"), body: { eventId, timeout: "2s" } });
    const wait = await app.untilRun(id,
      () => app.answered(`v2/wait/${eventId}`),
      `the wait for ${eventId} to be registered`);
    const run = await app.ended(id);
    assert.deepEqual(run.finished, [{ eventData: undefined, timeout: true }]);
    const waited = run.times.after[0] - wait.at;
    assert.ok(waited >= 2000, `the timeout came after ${waited} ms` +
      app.explain(id));
    await gone(id);
  });

  test("context.call: a local endpoint's answer reaches the run",
    async () => {
      const { workflowRunId: id } = await wf.trigger({
        url: app.url("/caller"), body: {} });
      const run = await app.ended(id);
      assert.deepEqual(run.finished,
        [{ status: 200, body: { got: { x: 1 } } }], app.explain(id));
      assert.deepEqual(run.counts, { after: 1 });
      const calls = app.plainRequests.filter((r) => r.path === "/api");
      assert.equal(calls.length, 1);
      assert.equal(calls[0].headers["x-test"], "yes");
      await gone(id);
    });

  test("a step that always throws: retried, then the failureFunction",
    async () => {
      const { workflowRunId: id } = await wf.trigger({
        url: app.url("/boom"), body: { start: 9 }, retries: 1,
        retryDelay: "200" });
      // The step's deliveries are answered 500 here, so no untilRun.
      const run = await app.until(() => app.runs.get(id)?.failures,
        () => `the failure function of ${id}${app.explain(id)}`);
      assert.deepEqual(run, [{ failStatus: 500, failResponse: "boom!",
        payload: { start: 9 } }], app.explain(id));
      assert.equal(app.runs.get(id).counts.boom, 2, app.explain(id));
      assert.deepEqual(app.runs.get(id).finished, []);
    });

  // Stage 5: invoke, logs, the workflow DLQ; and webhooks.

  test("context.invoke: the invoker gets the child's result", async () => {
    const { workflowRunId: id } = await wf.trigger({
      url: app.url("/inv/parent"), body: { child: "child" } });
    const run = await app.ended(id);
    assert.deepEqual(run.finished.length, 1, app.explain(id));
    const got = run.finished[0];
    assert.deepEqual(got.body, { doubled: 42 }, app.explain(id));
    assert.ok(!got.isFailed && !got.isCanceled, JSON.stringify(got));
    assert.deepEqual(run.counts, { after: 1 });
    const [child] = app.runsOn("/inv/child");
    assert.ok(child, "the child never ran");
    assert.deepEqual(child.counts, { double: 1 }, app.explain(child.id));
    assert.deepEqual(child.finished, [{ doubled: 42 }]);
    await gone(id);
    await gone(child.id);
  });

  test("context.invoke of a child that fails: isFailed", async () => {
    const { workflowRunId: id } = await wf.trigger({
      url: app.url("/inv/parent"), body: { child: "child-fails" } });
    const run = await app.ended(id);
    const got = run.finished[0];
    assert.equal(got.isFailed, true, JSON.stringify(got) + app.explain(id));
    assert.ok(!got.isCanceled, JSON.stringify(got));
    const [child] = app.runsOn("/inv/child-fails");
    assert.deepEqual(child?.counts, { throw: 1 });
    assert.deepEqual(child.finished, []);
  });

  test("context.invoke of a child that cancels itself: isCanceled",
    async () => {
      const { workflowRunId: id } = await wf.trigger({
        url: app.url("/inv/parent"), body: { child: "child-cancels" } });
      const run = await app.ended(id);
      const got = run.finished[0];
      assert.equal(got.isCanceled, true,
        JSON.stringify(got) + app.explain(id));
      assert.ok(!got.isFailed, JSON.stringify(got));
      const [child] = app.runsOn("/inv/child-cancels");
      assert.deepEqual(child?.counts, { first: 1 });
      assert.deepEqual(child.finished, []);
    });

  /* Client.logs of one run: its only WorkflowRunLog. */
  async function runLog(id) {
    const { runs } = await wf.logs({ workflowRunId: id });
    assert.equal(runs?.length, 1, JSON.stringify(runs));
    assert.equal(runs[0].workflowRunId, id);
    return runs[0];
  }

  test("Client.logs: a finished run's steps in order, RUN_SUCCESS",
    async () => {
      const { workflowRunId: id } = await wf.trigger({
        url: app.url("/chain"), body: { start: 2 } });
      await app.ended(id);
      assert.equal((await runLog(id)).workflowState, "RUN_SUCCESS");
      // The finish (DELETE ?cancel=false) is stored before the app answers
      // the delivery that ran it, so for a moment that delivery still
      // shows as a last "next" group, in progress; then it is delivered.
      const log = await waitFor(async () => {
        const l = await runLog(id);
        return l.steps.at(-1)?.type !== "next" && l;
      }, () => `the finishing delivery of ${id} to be delivered`);
      assert.equal(log.workflowState, "RUN_SUCCESS", JSON.stringify(log));
      assert.equal(log.workflowUrl, app.url("/chain"));
      assert.deepEqual(JSON.parse(log.workflowRunResponse),
        { a: 3, b: 30, c: "30!" });
      assert.ok(log.workflowRunCompletedAt >= log.workflowRunCreatedAt,
        JSON.stringify(log));
      const steps = log.steps.flatMap((g) => g.steps);
      assert.deepEqual(log.steps.map((g) => g.type),
        ["sequential", "sequential", "sequential", "sequential"],
        JSON.stringify(log.steps));
      assert.deepEqual(steps.map((s) => s.stepName),
        ["init", "one", "two", "three"]);
      assert.deepEqual(steps.map((s) => s.stepId), [0, 1, 2, 3]);
      assert.ok(steps.every((s) => s.state === "STEP_SUCCESS"),
        JSON.stringify(steps));
      assert.deepEqual(steps.slice(1).map((s) => JSON.parse(s.out)),
        [3, 30, "30!"]);
    });

  test("trigger, cancel, then Client.logs shows RUN_CANCELED", async () => {
    const { workflowRunId: id } = await wf.trigger({
      url: app.url("/cancel"), body: {} });
    await app.untilRun(id, () => app.published(id, "nap"),
      "the sleep step to be published");
    assert.equal((await runLog(id)).workflowState, "RUN_STARTED");
    assert.deepEqual(await wf.cancel({ ids: id }), { cancelled: 1 });
    const log = await runLog(id);
    assert.equal(log.workflowState, "RUN_CANCELED", JSON.stringify(log));
    assert.deepEqual(log.steps.flatMap((g) => g.steps)
      .filter((s) => s.state === "STEP_SUCCESS").map((s) => s.stepName),
    ["init", "before", "nap"], JSON.stringify(log.steps));
  });

  test("a step fails with retries: 0 -> workflow DLQ; fixed, dlq.resume " +
    "runs it to the end", async () => {
    fixed = false;
    const { workflowRunId: id } = await wf.trigger({
      url: app.url("/flaky"), body: { n: 1 }, retries: 0 });
    const entry = await waitFor(async () => {
      const page = await wf.dlq.list({ filter: { workflowRunId: id } });
      return page.messages?.find((m) => m.workflowRunId === id);
    }, () => `run ${id} in the workflow DLQ${app.explain(id)}`,
    RUN_TIMEOUT);
    assert.equal(entry.workflowUrl, app.url("/flaky"), JSON.stringify(entry));
    assert.equal(entry.responseStatus, 500, JSON.stringify(entry));
    assert.match(entry.responseBody ?? "", /not fixed yet/);
    const run = app.runs.get(id);
    assert.equal(run.failedTries, 1, app.explain(id));
    assert.deepEqual(run.counts, { before: 1 });
    assert.equal((await runLog(id)).workflowState, "RUN_FAILED");

    fixed = true;
    const resumedAt = Date.now();
    const resumed = await wf.dlq.resume({ dlqId: entry.dlqId });
    assert.equal(resumed.workflowRunId, id, JSON.stringify(resumed));
    const ended = await app.ended(id, RUN_TIMEOUT, resumedAt);
    assert.deepEqual(ended.counts, { before: 1, flaky: 1, after: 1 },
      app.explain(id));
    assert.deepEqual(ended.finished, ["fixed"]);
    assert.equal(ended.failedTries, 1);
    const page = await wf.dlq.list({ filter: { workflowRunId: id } });
    assert.ok(!page.messages?.some((m) => m.dlqId === entry.dlqId),
      JSON.stringify(page));
    await gone(id);
  });

  test("workflow DLQ: dlq.restart reruns a dead run from its first step, " +
    "dlq.delete drops another", async () => {
    fixed = false;
    const ids = [];
    for (const n of [2, 3]) {
      const { workflowRunId } = await wf.trigger({
        url: app.url("/flaky"), body: { n }, retries: 0 });
      ids.push(workflowRunId);
    }
    const [keep, drop] = await waitFor(async () => {
      const { messages } = await wf.dlq.list();
      const found = ids.map((id) =>
        messages?.find((m) => m.workflowRunId === id));
      return found.every(Boolean) && found;
    }, () => `both runs in the workflow DLQ${app.explain(ids[0])}` +
      app.explain(ids[1]), RUN_TIMEOUT);

    assert.equal((await wf.dlq.delete(drop.dlqId)).deleted, 1);
    fixed = true;
    const restartedAt = Date.now();
    const restarted = await wf.dlq.restart({ dlqId: keep.dlqId });
    assert.equal(restarted.workflowRunId, ids[0], JSON.stringify(restarted));
    // The history is cut back to the initial payload: "before" runs again
    // (so no untilRun, which fails on a step run twice).
    const id = ids[0];
    const run = await app.until(() => {
      const r = app.runs.get(id);
      return r?.finished.length > 0 && app.finishCall(id) && r;
    }, () => `run ${id} to finish after the restart${app.explain(id)}`,
    RUN_TIMEOUT);
    assert.deepEqual(run.counts, { before: 2, flaky: 1, after: 1 },
      app.explain(id));
    assert.ok(run.times.before[1] >= restartedAt, app.explain(id));
    assert.deepEqual(run.finished, ["fixed"]);
    assert.equal(app.deliveriesOf(id).filter((d) => d.at >= restartedAt &&
      d.status !== 200).length, 0, app.explain(id));
    const log = await runLog(id);
    assert.deepEqual(log.steps.flatMap((g) => g.steps)
      .map((s) => s.stepName).filter((n) => n !== undefined),
    ["init", "before", "flaky", "after"], JSON.stringify(log.steps));

    // The deleted one stays dead: out of the DLQ, its step never fixed.
    const { messages } = await wf.dlq.list();
    assert.ok(!messages?.some((m) => m.dlqId === drop.dlqId ||
      m.dlqId === keep.dlqId), JSON.stringify(messages));
    assert.deepEqual(app.runs.get(ids[1]).counts, { before: 1 });
  });

  test("createWebhook + waitForWebhook: a plain fetch resumes the run " +
    "with its body", async () => {
    const { workflowRunId: id } = await wf.trigger({
      url: app.url("/hook"), body: {} });
    const webhook = await app.untilRun(id,
      () => app.runs.get(id)?.values.tell, "the webhook's URL");
    assert.ok(webhook.webhookUrl.startsWith(`${dev.node.env.QSTASH_URL}` +
      `/v2/workflows/hooks/${HOOK_USER}/${id}/`), webhook.webhookUrl);
    // No lookback: the hook reaches the run once its wait is registered.
    await app.untilRun(id, () => app.answered(`v2/wait/${webhook.eventId}`),
      "the webhook's wait to be registered");
    const res = await fetch(webhook.webhookUrl, { method: "POST",
      headers: { "Content-Type": "application/json", "X-Hook": "yes" },
      body: JSON.stringify({ order: 7 }) });
    const answer = await res.text();
    assert.ok(res.ok, `the webhook answered ${res.status} ${answer}`);
    const run = await app.ended(id);
    assert.deepEqual(run.finished, [{ timeout: false, method: "POST",
      body: JSON.stringify({ order: 7 }), header: "yes" }], app.explain(id));
    assert.deepEqual(run.counts, { tell: 1, read: 1 });
    await gone(id);
  });
});

// The same app through a follower of a 3-node cluster whose leader is
// killed mid-run (stage 6), whatever QRAFT_SDK_VIA says: every run
// finishes, and no step body runs again once its result was stored.
describe("Upstash Workflow through a follower, the leader killed mid-run",
  () => {
    const RUNS = 10;
    const STEPS = 5;
    const STEP_MS = 200; // each step's work, so runs are mid-way at the kill
    // The implicit ack (docs/workflow.md) marks a step's delivery done in
    // the same commit as the step's result, so no later re-send runs the
    // step again. The one window left: a re-send that the message's new
    // owner dispatched (after the kill) just before the result committed,
    // or before it applied it, may reach the app just after the result was
    // stored. As tests/lib/workflow_app.py's RERUN_GRACE_S, a body that
    // starts more than this after its result was acknowledged is a fault.
    const RERUN_GRACE_MS = 2000;
    // What QRAFT_SDK_VIA=follower runs every suite on: a 3-node cluster,
    // the app's QSTASH_URL one of its followers.
    const via = new FollowerNode();
    const { cluster } = via;
    const app = new WorkflowApp();
    let wf;
    let follower;

    app.workflow("/steady", async (context) => {
      for (let k = 1; k <= STEPS; k++) {
        await context.run(`s${k}`, async () => {
          app.ran(context, `s${k}`);
          await new Promise((r) => setTimeout(r, STEP_MS));
          return k;
        });
      }
      app.finish(context, "done");
      return "done";
    });

    before(async () => {
      await app.start();
      await via.start(); // and waits for the cluster's feature level
      follower = via.node;
      app.connect(via.env);
      app.logHint = () => via.logHint();
      wf = app.workflowClient();
    });

    after(async () => {
      try {
        await cluster.stop();
      } finally {
        try {
          await app.close();
        } finally {
          cluster.removeDirs();
        }
      }
    });

    /* By when runId's step name was stored, as the app can tell: when the
     * SDK's publish of it was first answered 2xx, or, if earlier (a publish
     * whose answer was lost in the kill, "may or may not have been
     * applied", was), when a delivery first carried it in its history. */
    function storedAt(runId, name) {
      const times = [];
      const acked = app.calls.find((call) => call.doneAt && !call.error &&
        call.entries?.some((e) =>
          e.headers["upstash-workflow-runid"] === runId &&
          e.step?.stepName === name));
      if (acked) {
        times.push(acked.doneAt);
      }
      const seen = app.deliveriesOf(runId).find((d) =>
        d.history?.includes(`${name}(step)`));
      if (seen) {
        times.push(seen.at);
      }
      return times.length > 0 ? Math.min(...times) : null;
    }

    function stepsRan() {
      return [...app.runs.values()].reduce((sum, run) =>
        sum + Object.values(run.counts).reduce((a, b) => a + b, 0), 0);
    }

    test(`${RUNS} runs of ${STEPS} steps, the leader killed after a ` +
      "quarter of the steps: every run finishes, no stored step re-runs",
    async (t) => {
      const ids = [];
      for (let i = 0; i < RUNS; i++) {
        // Retries enough to outlast the election: a step's publish through
        // the follower answers 503 until there is a leader (or 504 when the
        // forward to the dying leader failed: applied or not), the SDK
        // answers its delivery 500, and qraft retries it: the step runs
        // again if its result was not stored (at least once).
        const { workflowRunId } = await wf.trigger({
          url: app.url("/steady"), body: { i }, retries: 30,
          retryDelay: "500" });
        ids.push(workflowRunId);
      }
      await app.until(() => stepsRan() >= RUNS * STEPS / 4,
        () => `a quarter of the steps to run (${stepsRan()} ran)`);
      let victim = await cluster.leader();
      if (victim === follower) {
        victim = cluster.nodes.find((n) => n !== follower);
      }
      const ranBefore = stepsRan();
      await victim.kill9();
      t.diagnostic(`killed node ${victim.id} after ${ranBefore} of ` +
        `${RUNS * STEPS} steps ran`);

      const unfinished = () => ids.filter((id) =>
        !(app.runs.get(id)?.finished.length > 0 && app.finishCall(id)));
      await app.until(() => unfinished().length === 0, () => {
        const left = unfinished();
        return `every run to finish (${left.length} left)` +
          app.explain(left[0]);
      }, 90_000);

      const reruns = [];
      let unstored = 0; // ran again before its result was known stored
      let inGrace = 0; // ran again within RERUN_GRACE_MS after
      for (const id of ids) {
        const run = app.runs.get(id);
        for (let k = 1; k <= STEPS; k++) {
          const name = `s${k}`;
          const times = run.times[name] ?? [];
          assert.ok(times.length >= 1, `step ${name} of ${id} never ran` +
            app.explain(id));
          const stored = storedAt(id, name);
          assert.ok(stored, `no stored result for ${name} of ${id}` +
            app.explain(id));
          for (const at of times.slice(1)) {
            if (at > stored + RERUN_GRACE_MS) {
              reruns.push(`${id} ${name} ran ${at - stored} ms after its ` +
                "result was stored");
            } else if (at > stored) {
              inGrace++;
            } else {
              unstored++;
            }
          }
        }
        assert.deepEqual(run.finished.slice(0, 1), ["done"]);
      }
      assert.deepEqual(reruns, [], reruns.length > 0
        ? app.explain(reruns[0].split(" ")[0]) : "");
      // A step publish answered deduplicated: its result had been stored by
      // an earlier publish whose answer the SDK did not get (the kill).
      const dedup = app.calls.filter((c) => c.entries?.[0]?.step?.stepName &&
        Array.isArray(c.answer) && c.answer[0]?.deduplicated).length;
      t.diagnostic(`step bodies run again: ${unstored} before their ` +
        `result was known stored, ${inGrace} within ${RERUN_GRACE_MS} ms ` +
        `after (at least once); ${dedup} step publish(es) deduplicated; ` +
        `${app.calls.filter((c) => c.error).length} SDK request(s) failed`);
    });
  });
