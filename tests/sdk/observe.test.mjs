// The logs, the DLQ's filters and bulk forms, and bulk cancel of a real
// `qraftd --dev`, driven by the official @upstash/qstash SDK: client.logs()
// and events() show a delivered message's states in order and end their
// paging without a cursor; dlq.listMessages/retry/delete take filters, ids
// and {all: true}; messages.cancel takes ids and {all: true}.
//
// QRAFT_BIN names the build's bin directory (it holds qraftd).
import assert from "node:assert/strict";
import { describe, test } from "node:test";

import { Sink, waitFor, withDevNode } from "./harness.mjs";

const { QstashError } = await import("@upstash/qstash");

describe("logs, DLQ filters and bulk operations with the official SDK", () => {
  // An app that answers 404 under /missing/, else 200.
  const app = new Sink();
  app.script("/missing/a", () => 404);
  app.script("/missing/b", () => 404);
  const dev = withDevNode({ app });
  const { node } = dev;

  test("logs() and events() show a delivered message's states", async () => {
    const res = await dev.client.publish({ url: `${app.base}/logged`,
      body: "hello" });
    await app.received("/logged");
    const filter = { messageId: res.messageId };
    const logs = await waitFor(async () => {
      const page = await dev.client.logs({ filter });
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
      const page = await dev.client.events({ filter, count: 1, cursor });
      seen.push(...page.events.map((e) => e.state));
      cursor = page.cursor;
      if (cursor === undefined) {
        break;
      }
    }
    assert.equal(cursor, undefined);
    assert.deepEqual(seen.reverse(), ["CREATED", "ACTIVE", "DELIVERED"]);

    const delivered = await dev.client.logs({
      filter: { messageId: res.messageId, state: "DELIVERED" } });
    assert.deepEqual(delivered.logs.map((l) => l.state), ["DELIVERED"]);
  });

  test("dlq: list and retry by filter, delete by ids and all", async () => {
    const a = await dev.client.publish({ url: `${app.base}/missing/a`,
      body: "a", retries: 0 });
    const b = await dev.client.publish({ url: `${app.base}/missing/b`,
      body: "b", retries: 0 });
    await waitFor(async () => {
      const page = await dev.client.dlq.listMessages();
      const ids = page.messages.map((m) => m.dlqId);
      return ids.includes(a.messageId) && ids.includes(b.messageId);
    }, "both messages in the DLQ");

    const onlyA = await dev.client.dlq.listMessages({
      filter: { url: `${app.base}/missing/a` } });
    assert.deepEqual(onlyA.messages.map((m) => m.dlqId), [a.messageId]);
    assert.equal(onlyA.cursor, undefined);
    const byStatus = await dev.client.dlq.listMessages({
      filter: { responseStatus: 404 } });
    assert.equal(byStatus.messages.length, 2);

    const retried = await dev.client.dlq.retry({
      filter: { url: `${app.base}/missing/a` } });
    assert.deepEqual(retried.responses.map((r) => r.messageId),
      [a.messageId]);
    assert.equal(retried.cursor, undefined);
    await app.received("/missing/a", 2);
    await waitFor(async () => {
      const page = await dev.client.dlq.listMessages({ dlqIds: [a.messageId] });
      return page.messages.length === 1;
    }, "the retried message back in the DLQ");

    const one = await dev.client.dlq.delete({ dlqIds: [a.messageId] });
    assert.equal(one.deleted, 1);
    const rest = await dev.client.dlq.delete({ all: true });
    assert.equal(rest.deleted, 1);
    assert.equal(rest.cursor, undefined);
    assert.equal((await dev.client.dlq.listMessages()).messages.length, 0);
  });

  test("messages.cancel takes ids and {all: true}", async () => {
    const ids = [];
    for (let i = 0; i < 5; i++) {
      const res = await dev.client.publish({ url: `${app.base}/later/${i}`,
        body: `m${i}`, delay: 600 });
      ids.push(res.messageId);
    }
    const two = await dev.client.messages.cancel([ids[0], ids[1]]);
    assert.deepEqual(two, { cancelled: 2 });
    await assert.rejects(dev.client.messages.get(ids[0]),
      (err) => err instanceof QstashError && err.status === 404);
    assert.equal((await dev.client.messages.get(ids[2])).messageId, ids[2]);

    const all = await dev.client.messages.cancel({ all: true });
    assert.deepEqual(all, { cancelled: 3 });
    for (const id of ids) {
      await assert.rejects(dev.client.messages.get(id),
        (err) => err instanceof QstashError && err.status === 404);
    }
    const none = await dev.client.messages.cancel({ all: true });
    assert.deepEqual(none, { cancelled: 0 });

    const cancelled = await dev.client.logs({
      filter: { messageId: ids[4], state: "CANCELED" } });
    assert.deepEqual(cancelled.logs.map((l) => l.state), ["CANCELLED"]);
  });

  test("a filter qraft does not know is an error, not ignored",
    async () => {
      await assert.rejects(
        dev.client.dlq.listMessages({ filter: { nosuch: "x" } }),
        (err) => err instanceof QstashError && err.status === 400 &&
          /unknown parameter 'nosuch'/.test(err.message));
      await assert.rejects(
        dev.client.messages.cancel({ filter: { nosuch: "x" } }),
        (err) => err instanceof QstashError && err.status === 400 &&
          /unknown parameter 'nosuch'/.test(err.message));
    });
});
