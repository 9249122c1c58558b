// The QStash REST API of a real `qraftd --dev`, driven by the official
// @upstash/qstash SDK the way an app calls it: publishJSON and verify the
// delivery with Receiver, publish options (delay, notBefore, retries, dedup),
// batch, messages get/cancel, the DLQ (list, retry, delete), keys, and a
// wrong token.
//
// QRAFT_BIN names the build's bin directory (it holds qraftd).
import assert from "node:assert/strict";
import { describe, test } from "node:test";

import { Sink, waitFor, withDevNode } from "./harness.mjs";

const { Client, QstashError, Receiver } = await import("@upstash/qstash");

describe("QStash REST API with the official SDK", () => {
  // An app that answers 404 on /missing, else 200.
  const app = new Sink();
  app.script("/missing", () => ({ status: 404, body: "no such page" }));
  const dev = withDevNode({ app });
  const { node } = dev;

  test("publishJSON is delivered and verifies with Receiver", async () => {
    const url = `${app.base}/hook?order=7`;
    const res = await dev.client.publishJSON({
      url, body: { hello: "world" }, headers: { "X-App": "one" },
    });
    assert.match(res.messageId, /^msg_/);
    assert.equal(res.url, url);
    const [got] = await app.received("/hook");
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
    const res = await dev.client.publish({
      url: `${app.base}/later`, body: "later", delay: 600, retries: 2,
      retryDelay: "1000 * (1 + retried)", headers: { "X-Kind": "k" },
      callback: `${app.base}/cb`,
    });
    const m = await dev.client.messages.get(res.messageId);
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
    const res = await dev.client.publish({
      url: `${app.base}/nb`, body: "x", notBefore: at,
    });
    const m = await dev.client.messages.get(res.messageId);
    assert.equal(m.notBefore, at * 1000);
  });

  test("a second publish with the same deduplicationId is deduplicated",
    async () => {
      const opts = {
        url: `${app.base}/dedup`, body: "once", deduplicationId: "dd-1",
        delay: 600,
      };
      const first = await dev.client.publish(opts);
      const second = await dev.client.publish(opts);
      assert.equal(second.messageId, first.messageId);
      assert.equal(second.deduplicated, true);
      assert.equal(first.deduplicated, undefined);
    });

  test("messages.cancel and delete cancel; the message is then gone",
    async () => {
      const a = await dev.client.publish({ url: `${app.base}/c1`, body: "a",
        delay: 600 });
      const b = await dev.client.publish({ url: `${app.base}/c2`, body: "b",
        delay: 600 });
      await dev.client.messages.cancel(a.messageId);
      await dev.client.messages.delete(b.messageId);
      for (const id of [a.messageId, b.messageId]) {
        await assert.rejects(dev.client.messages.get(id),
          (err) => err instanceof QstashError && err.status === 404);
      }
      await assert.rejects(dev.client.messages.get("msg_unknown"),
        (err) => err instanceof QstashError && err.status === 404);
    });

  test("batchJSON answers in request order", async () => {
    const res = await dev.client.batchJSON([
      { url: `${app.base}/b1`, body: { n: 1 } },
      { url: `${app.base}/b2`, body: { n: 2 }, delay: 600 },
    ]);
    assert.equal(res.length, 2);
    assert.equal(res[0].url, `${app.base}/b1`);
    assert.equal(res[1].url, `${app.base}/b2`);
    const [got] = await app.received("/b1");
    assert.deepEqual(JSON.parse(got.body), { n: 1 });
    assert.equal((await dev.client.messages.get(res[1].messageId)).body,
      JSON.stringify({ n: 2 }));
  });

  test("a 404 dead-letters; dlq list, retry and delete", async () => {
    const res = await dev.client.publish({ url: `${app.base}/missing`,
      body: "lost", retries: 0 });
    const entry = await waitFor(async () => {
      const page = await dev.client.dlq.listMessages();
      return page.messages.find((m) => m.messageId === res.messageId);
    }, "the message in the DLQ");
    assert.equal(entry.dlqId, res.messageId);
    assert.equal(entry.url, `${app.base}/missing`);
    assert.equal(entry.responseStatus, 404);
    assert.equal(entry.responseBody, "no such page");
    assert.deepEqual(entry.responseHeader["Content-Type"], ["text/plain"]);
    assert.equal(entry.body, "lost");

    const retried = await dev.client.dlq.retry({ dlqIds: [entry.dlqId] });
    assert.equal(retried.responses.length, 1);
    await waitFor(() => app.requests.filter((r) => r.url === "/missing")
      .length >= 2, "the retried delivery");
    await waitFor(async () => {
      const page = await dev.client.dlq.listMessages();
      return page.messages.some((m) => m.dlqId === entry.dlqId);
    }, "the message back in the DLQ");

    await dev.client.dlq.delete(entry.dlqId);
    const page = await dev.client.dlq.listMessages();
    assert.ok(!page.messages.some((m) => m.dlqId === entry.dlqId));
    assert.equal(page.cursor, undefined);
    await assert.rejects(dev.client.dlq.delete(entry.dlqId),
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
