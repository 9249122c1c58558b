// The QStash REST API of a real `qraftd --dev`, driven by the official
// @upstash/qstash SDK the way an app calls it: publishJSON and verify the
// delivery with Receiver, publish options (delay, notBefore, retries, dedup),
// batch, messages get/cancel, the DLQ (list, retry, delete), keys, and a
// wrong token.
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
  dir = mkdtempSync(path.join(os.tmpdir(), "qraft-sdk-api-"));
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

describe("QStash REST API with the official SDK", () => {
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

  test("publishJSON is delivered and verifies with Receiver", async () => {
    const url = `${app.base}/hook?order=7`;
    const res = await client.publishJSON({
      url, body: { hello: "world" }, headers: { "X-App": "one" },
    });
    assert.match(res.messageId, /^msg_/);
    assert.equal(res.url, url);
    const got = await waitFor(() => app.find("/hook?order=7"), "delivery");
    assert.equal(got.headers["x-app"], "one");
    assert.equal(got.headers["content-type"], "application/json");
    assert.equal(got.headers["upstash-message-id"], res.messageId);
    const receiver = new Receiver({
      currentSigningKey: node.env.QSTASH_CURRENT_SIGNING_KEY,
      nextSigningKey: node.env.QSTASH_NEXT_SIGNING_KEY,
    });
    assert.equal(await receiver.verify({
      signature: got.headers["upstash-signature"], body: got.body, url,
    }), true);
    assert.deepEqual(JSON.parse(got.body), { hello: "world" });
  });

  test("delay, retries and messages.get show the options", async () => {
    const res = await client.publish({
      url: `${app.base}/later`, body: "later", delay: 600, retries: 2,
      retryDelay: "1000 * (1 + retried)", headers: { "X-Kind": "k" },
      callback: `${app.base}/cb`,
    });
    const m = await client.messages.get(res.messageId);
    assert.equal(m.messageId, res.messageId);
    assert.equal(m.url, `${app.base}/later`);
    assert.equal(m.method, "POST");
    assert.equal(m.body, "later");
    assert.equal(m.maxRetries, 2);
    assert.equal(m.retryDelayExpression, "1000 * (1 + retried)");
    assert.equal(m.callback, `${app.base}/cb`);
    assert.deepEqual(m.header["X-Kind"], ["k"]);
    assert.ok(m.notBefore - m.createdAt >= 599_000,
      `notBefore ${m.notBefore} is 10 minutes after createdAt ${m.createdAt}`);
    assert.equal(m.failureCallback, undefined);
    assert.equal(m.queueName, undefined);
  });

  test("notBefore in seconds becomes ms", async () => {
    const at = Math.floor(Date.now() / 1000) + 3600;
    const res = await client.publish({
      url: `${app.base}/nb`, body: "x", notBefore: at,
    });
    const m = await client.messages.get(res.messageId);
    assert.equal(m.notBefore, at * 1000);
  });

  test("a second publish with the same deduplicationId is deduplicated",
    async () => {
      const opts = {
        url: `${app.base}/dedup`, body: "once", deduplicationId: "dd-1",
        delay: 600,
      };
      const first = await client.publish(opts);
      const second = await client.publish(opts);
      assert.equal(second.messageId, first.messageId);
      assert.equal(second.deduplicated, true);
      assert.equal(first.deduplicated, undefined);
    });

  test("messages.cancel and delete cancel; the message is then gone",
    async () => {
      const a = await client.publish({ url: `${app.base}/c1`, body: "a",
        delay: 600 });
      const b = await client.publish({ url: `${app.base}/c2`, body: "b",
        delay: 600 });
      await client.messages.cancel(a.messageId);
      await client.messages.delete(b.messageId);
      for (const id of [a.messageId, b.messageId]) {
        await assert.rejects(client.messages.get(id),
          (err) => err instanceof QstashError && err.status === 404);
      }
      await assert.rejects(client.messages.get("msg_unknown"),
        (err) => err instanceof QstashError && err.status === 404);
    });

  test("batchJSON answers in request order", async () => {
    const res = await client.batchJSON([
      { url: `${app.base}/b1`, body: { n: 1 } },
      { url: `${app.base}/b2`, body: { n: 2 }, delay: 600 },
    ]);
    assert.equal(res.length, 2);
    assert.equal(res[0].url, `${app.base}/b1`);
    assert.equal(res[1].url, `${app.base}/b2`);
    const got = await waitFor(() => app.find("/b1"), "batch delivery");
    assert.deepEqual(JSON.parse(got.body), { n: 1 });
    assert.equal((await client.messages.get(res[1].messageId)).body,
      JSON.stringify({ n: 2 }));
  });

  test("a 404 dead-letters; dlq list, retry and delete", async () => {
    const res = await client.publish({ url: `${app.base}/missing`,
      body: "lost", retries: 0 });
    const entry = await waitFor(async () => {
      const page = await client.dlq.listMessages();
      return page.messages.find((m) => m.messageId === res.messageId);
    }, "the message in the DLQ");
    assert.equal(entry.dlqId, res.messageId);
    assert.equal(entry.url, `${app.base}/missing`);
    assert.equal(entry.responseStatus, 404);
    assert.equal(entry.responseBody, "no such page");
    assert.deepEqual(entry.responseHeader["Content-Type"], ["text/plain"]);
    assert.equal(entry.body, "lost");

    const retried = await client.dlq.retry({ dlqIds: [entry.dlqId] });
    assert.equal(retried.responses.length, 1);
    await waitFor(() => app.requests.filter((r) => r.url === "/missing")
      .length >= 2, "the retried delivery");
    await waitFor(async () => {
      const page = await client.dlq.listMessages();
      return page.messages.some((m) => m.dlqId === entry.dlqId);
    }, "the message back in the DLQ");

    await client.dlq.delete(entry.dlqId);
    const page = await client.dlq.listMessages();
    assert.ok(!page.messages.some((m) => m.dlqId === entry.dlqId));
    assert.equal(page.cursor, undefined);
    await assert.rejects(client.dlq.delete(entry.dlqId),
      (err) => err instanceof QstashError && err.status === 404);
  });

  test("keys: GET /v2/keys answers the printed pair", async () => {
    const res = await fetch(`${node.env.QSTASH_URL}/v2/keys`, {
      headers: { Authorization: `Bearer ${node.env.QSTASH_TOKEN}` },
    });
    assert.equal(res.status, 200);
    assert.deepEqual(await res.json(), {
      current: node.env.QSTASH_CURRENT_SIGNING_KEY,
      next: node.env.QSTASH_NEXT_SIGNING_KEY,
    });
  });

  test("a wrong token is refused with 401", async () => {
    const bad = new Client({ baseUrl: node.env.QSTASH_URL, token: "wrong",
      retry: false });
    await assert.rejects(
      bad.publishJSON({ url: `${app.base}/never`, body: {} }),
      (err) => err instanceof QstashError && err.status === 401 &&
        JSON.parse(err.message).error.length > 0);
  });
});
