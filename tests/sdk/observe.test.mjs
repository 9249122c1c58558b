// The logs, the DLQ's filters and bulk forms, and bulk cancel of a real
// `qraftd --dev`, driven by the official @upstash/qstash SDK: client.logs()
// and events() show a delivered message's states in order and end their
// paging without a cursor; dlq.listMessages/retry/delete take filters, ids
// and {all: true}; messages.cancel takes ids and {all: true}.
//
// QRAFT_BIN names the build's bin directory (it holds qraftd).
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { once } from "node:events";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import http from "node:http";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";

// QSTASH_DEV would make the SDK ignore baseUrl, token and keys.
for (const name of Object.keys(process.env)) {
  if (name === "QSTASH_DEV" || name === "QSTASH_REGION" ||
      name.endsWith("QSTASH_CURRENT_SIGNING_KEY") ||
      name.endsWith("QSTASH_NEXT_SIGNING_KEY") || name === "QSTASH_URL" ||
      name === "QSTASH_TOKEN") {
    delete process.env[name];
  }
}
const { Client, QstashError, Receiver } = await import("@upstash/qstash");

const bin = process.env.QRAFT_BIN;
assert.ok(bin, "QRAFT_BIN must name the build's bin directory");
const qraftd = path.resolve(bin, "qraftd");
assert.ok(existsSync(qraftd), `${qraftd} not found: build qraft first`);

const START_TIMEOUT = 30_000;
const STOP_TIMEOUT = 10_000;
const WAIT_TIMEOUT = 20_000;

const childEnv = Object.fromEntries(Object.entries(process.env).filter(
  ([k]) => !k.startsWith("QRAFT_") && !k.includes("QSTASH_")));

async function freePort() {
  const srv = net.createServer();
  srv.listen(0, "127.0.0.1");
  await once(srv, "listening");
  const { port } = srv.address();
  srv.close();
  await once(srv, "close");
  return port;
}

/* Polls check() (async allowed) until it returns something truthy. */
async function waitFor(check, what, timeoutMs = WAIT_TIMEOUT) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value) {
      return value;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}

class DevNode {
  dir = mkdtempSync(path.join(os.tmpdir(), "qraft-sdk-observe-"));
  env = {};
  proc = null;
  exited = false;
  #stdout = "";
  #stderr = "";

  async start() {
    const [rpc, httpPort, raft] =
      [await freePort(), await freePort(), await freePort()];
    this.proc = spawn(qraftd, [
      "--dev", "--data", path.join(this.dir, "data"),
      "--rpc", `127.0.0.1:${rpc}`, "--http", `127.0.0.1:${httpPort}`,
      "--raft", `127.0.0.1:${raft}`,
    ], { cwd: this.dir, env: childEnv, stdio: ["ignore", "pipe", "pipe"] });
    this.proc.stdout.setEncoding("utf8");
    this.proc.stderr.setEncoding("utf8");
    this.proc.stdout.on("data", (c) => { this.#stdout += c; });
    this.proc.stderr.on("data", (c) => {
      this.#stderr = (this.#stderr + c).slice(-8192);
    });
    this.proc.on("exit", () => { this.exited = true; });
    await waitFor(() => {
      if (this.exited) {
        throw new Error(`qraftd exited while starting${this.logHint()}`);
      }
      return /^QRAFT_ENDPOINTS=.+$/m.test(this.#stdout);
    }, "qraftd to print its settings", START_TIMEOUT);
    for (const line of this.#stdout.split("\n")) {
      const m = /^([A-Z_]+)=(.*)$/.exec(line);
      if (m) {
        this.env[m[1]] = m[2];
      }
    }
  }

  async stop() {
    if (!this.proc || this.exited) {
      return;
    }
    const gone = once(this.proc, "exit");
    this.proc.kill("SIGTERM");
    const timer = setTimeout(() => this.proc.kill("SIGKILL"), STOP_TIMEOUT);
    await gone;
    clearTimeout(timer);
  }

  logHint() {
    return this.#stderr ? `\n--- qraftd stderr (tail) ---\n${this.#stderr}` : "";
  }
}

/* An app that records each request and answers 404 on /missing, else 200. */
class App {
  requests = [];
  #server = http.createServer((req, res) => {
    const chunks = [];
    req.on("data", (c) => chunks.push(c));
    req.on("end", () => {
      const status = req.url.startsWith("/missing") ? 404 : 200;
      res.writeHead(status, { "Content-Type": "text/plain" });
      res.end(status === 200 ? "ok" : "no such page");
      this.requests.push({
        method: req.method, url: req.url, headers: req.headers,
        body: Buffer.concat(chunks).toString("utf8"),
      });
    });
  });

  async start() {
    this.#server.listen(0, "127.0.0.1");
    await once(this.#server, "listening");
    this.base = `http://127.0.0.1:${this.#server.address().port}`;
  }

  stop() {
    this.#server.closeAllConnections?.();
    this.#server.close();
  }

  find(url) {
    return this.requests.find((r) => r.url === url);
  }
}

describe("logs, DLQ filters and bulk operations with the official SDK", () => {
  const node = new DevNode();
  const app = new App();
  let client;

  before(async () => {
    await node.start();
    await app.start();
    client = new Client({
      baseUrl: node.env.QSTASH_URL, token: node.env.QSTASH_TOKEN,
      retry: false,
    });
  });

  after(async () => {
    app.stop();
    await node.stop();
    rmSync(node.dir, { recursive: true, force: true });
  });

  test("logs() and events() show a delivered message's states", async () => {
    const res = await client.publish({ url: `${app.base}/logged`,
      body: "hello" });
    await waitFor(() => app.find("/logged"), "the delivery");
    const filter = { messageId: res.messageId };
    const logs = await waitFor(async () => {
      const page = await client.logs({ filter });
      return page.logs.some((l) => l.state === "DELIVERED") && page;
    }, "the DELIVERED log entry");
    // Newest first, so reversed: the states in the order they happened.
    assert.deepEqual(logs.logs.map((l) => l.state).reverse(),
      ["CREATED", "ACTIVE", "DELIVERED"]);
    assert.equal(logs.cursor, undefined);
    for (const l of logs.logs) {
      assert.equal(l.messageId, res.messageId);
      assert.equal(l.url, `${app.base}/logged`);
      assert.equal(typeof l.time, "number");
    }
    assert.equal(logs.logs[0].responseStatus, 200);
    // qraft drops a delivered message's body (docs/api.md): no "body".
    assert.equal(logs.logs[0].method, "POST");
    assert.ok(logs.logs[0].header);

    // One at a time: a cursor on every page but the last.
    const seen = [];
    let cursor;
    for (let i = 0; i < 10; i++) {
      const page = await client.events({ filter, count: 1, cursor });
      seen.push(...page.events.map((e) => e.state));
      cursor = page.cursor;
      if (cursor === undefined) {
        break;
      }
    }
    assert.equal(cursor, undefined);
    assert.deepEqual(seen.reverse(), ["CREATED", "ACTIVE", "DELIVERED"]);

    const delivered = await client.logs({
      filter: { messageId: res.messageId, state: "DELIVERED" } });
    assert.deepEqual(delivered.logs.map((l) => l.state), ["DELIVERED"]);
  });

  test("dlq: list and retry by filter, delete by ids and all", async () => {
    const a = await client.publish({ url: `${app.base}/missing/a`,
      body: "a", retries: 0 });
    const b = await client.publish({ url: `${app.base}/missing/b`,
      body: "b", retries: 0 });
    await waitFor(async () => {
      const page = await client.dlq.listMessages();
      const ids = page.messages.map((m) => m.dlqId);
      return ids.includes(a.messageId) && ids.includes(b.messageId);
    }, "both messages in the DLQ");

    const onlyA = await client.dlq.listMessages({
      filter: { url: `${app.base}/missing/a` } });
    assert.deepEqual(onlyA.messages.map((m) => m.dlqId), [a.messageId]);
    assert.equal(onlyA.cursor, undefined);
    const byStatus = await client.dlq.listMessages({
      filter: { responseStatus: 404 } });
    assert.equal(byStatus.messages.length, 2);

    const retried = await client.dlq.retry({
      filter: { url: `${app.base}/missing/a` } });
    assert.deepEqual(retried.responses.map((r) => r.messageId),
      [a.messageId]);
    assert.equal(retried.cursor, undefined);
    await waitFor(() => app.requests.filter((r) => r.url === "/missing/a")
      .length >= 2, "the retried delivery");
    await waitFor(async () => {
      const page = await client.dlq.listMessages({ dlqIds: [a.messageId] });
      return page.messages.length === 1;
    }, "the retried message back in the DLQ");

    const one = await client.dlq.delete({ dlqIds: [a.messageId] });
    assert.equal(one.deleted, 1);
    const rest = await client.dlq.delete({ all: true });
    assert.equal(rest.deleted, 1);
    assert.equal(rest.cursor, undefined);
    assert.equal((await client.dlq.listMessages()).messages.length, 0);
  });

  test("messages.cancel takes ids and {all: true}", async () => {
    const ids = [];
    for (let i = 0; i < 5; i++) {
      const res = await client.publish({ url: `${app.base}/later/${i}`,
        body: `m${i}`, delay: 600 });
      ids.push(res.messageId);
    }
    const two = await client.messages.cancel([ids[0], ids[1]]);
    assert.deepEqual(two, { cancelled: 2 });
    await assert.rejects(client.messages.get(ids[0]),
      (err) => err instanceof QstashError && err.status === 404);
    assert.equal((await client.messages.get(ids[2])).messageId, ids[2]);

    const all = await client.messages.cancel({ all: true });
    assert.deepEqual(all, { cancelled: 3 });
    for (const id of ids) {
      await assert.rejects(client.messages.get(id),
        (err) => err instanceof QstashError && err.status === 404);
    }
    const none = await client.messages.cancel({ all: true });
    assert.deepEqual(none, { cancelled: 0 });

    const cancelled = await client.logs({
      filter: { messageId: ids[4], state: "CANCELED" } });
    assert.deepEqual(cancelled.logs.map((l) => l.state), ["CANCELLED"]);
  });

  test("a filter qraft cannot apply yet is an error, not ignored",
    async () => {
      await assert.rejects(
        client.dlq.listMessages({ filter: { label: "x" } }),
        (err) => err instanceof QstashError && err.status === 400 &&
          /label is not supported yet/.test(err.message));
      await assert.rejects(
        client.messages.cancel({ filter: { urlGroup: "g" } }),
        (err) => err instanceof QstashError && err.status === 400 &&
          /topicName is not supported yet/.test(err.message));
    });
});
