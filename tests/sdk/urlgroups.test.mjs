// URL groups (QStash "topics") of a real `qraftd --dev`, driven by the
// official @upstash/qstash SDK the way an app calls them: urlGroups
// addEndpoints / get / list / removeEndpoints / delete, publishJSON to a group
// (one delivery per endpoint, each with Upstash-Topic-Name, answered with an
// array), the message metadata messages.get shows (topicName, endpointName,
// labels, callerIP, flow control), and the logs and bulk-cancel filters on
// them.
//
// QRAFT_BIN names the build's bin directory (it holds qraftd).
import assert from "node:assert/strict";
import { describe, test } from "node:test";

import { waitFor, withDevNode } from "./harness.mjs";

const { QstashError, Receiver } = await import("@upstash/qstash");

describe("URL groups with the official SDK", () => {
  // Group commands are feature level 2, which the node reaches at its
  // first tick after it serves.
  const dev = withDevNode({
    ready: ({ node }) => waitFor(async () => JSON.parse(
      await node.cli("status", "--local", "--json")).feature_level >= 2,
    "feature level 2"),
  });
  const { node, app } = dev;

  test("addEndpoints, get, list, removeEndpoints, delete", async () => {
    const endpoints = [
      { name: "first", url: `${app.base}/g1/a` },
      { url: `${app.base}/g1/b` },
    ];
    await dev.client.urlGroups.addEndpoints({ name: "crud", endpoints });
    const got = await dev.client.urlGroups.get("crud");
    assert.equal(got.name, "crud");
    assert.deepEqual(got.endpoints, endpoints);
    assert.equal(typeof got.createdAt, "number");
    assert.ok(got.updatedAt >= got.createdAt);

    // The same URL again replaces it (now named), never duplicates.
    await dev.client.urlGroups.addEndpoints({
      name: "crud",
      endpoints: [{ name: "second", url: `${app.base}/g1/b` },
        { url: `${app.base}/g1/c` }],
    });
    assert.deepEqual((await dev.client.urlGroups.get("crud")).endpoints, [
      { name: "first", url: `${app.base}/g1/a` },
      { name: "second", url: `${app.base}/g1/b` },
      { url: `${app.base}/g1/c` },
    ]);

    await dev.client.urlGroups.addEndpoints({
      name: "other", endpoints: [{ url: `${app.base}/other` }],
    });
    const all = await dev.client.urlGroups.list();
    assert.ok(Array.isArray(all));
    assert.deepEqual(all.map((g) => g.name).filter(
      (n) => n === "crud" || n === "other").sort(), ["crud", "other"]);

    await dev.client.urlGroups.removeEndpoints({
      name: "crud",
      endpoints: [{ name: "first" }, { url: `${app.base}/g1/c` }],
    });
    assert.deepEqual((await dev.client.urlGroups.get("crud")).endpoints,
      [{ name: "second", url: `${app.base}/g1/b` }]);

    // Removing the last endpoint deletes the group.
    await dev.client.urlGroups.removeEndpoints({
      name: "crud", endpoints: [{ name: "second" }],
    });
    await assert.rejects(dev.client.urlGroups.get("crud"),
      (err) => err instanceof QstashError && err.status === 404);

    await dev.client.urlGroups.delete("other");
    await assert.rejects(dev.client.urlGroups.get("other"),
      (err) => err instanceof QstashError && err.status === 404);
    await assert.rejects(dev.client.urlGroups.delete("other"),
      (err) => err instanceof QstashError && err.status === 404);
  });

  test("publishJSON to a group delivers to every endpoint", async () => {
    await dev.client.urlGroups.addEndpoints({
      name: "fanout",
      endpoints: [{ name: "one", url: `${app.base}/fan/one` },
        { url: `${app.base}/fan/two?x=1` }],
    });
    const res = await dev.client.publishJSON({
      urlGroup: "fanout", body: { order: 7 }, label: ["gold", "eu"],
    });
    assert.ok(Array.isArray(res), `want an array, got ${JSON.stringify(res)}`);
    assert.equal(res.length, 2);
    assert.deepEqual(res.map((r) => r.url),
      [`${app.base}/fan/one`, `${app.base}/fan/two?x=1`]);
    assert.notEqual(res[0].messageId, res[1].messageId);

    const receiver = new Receiver({
      currentSigningKey: node.env.QSTASH_CURRENT_SIGNING_KEY,
      nextSigningKey: node.env.QSTASH_NEXT_SIGNING_KEY,
    });
    for (const [i, url] of ["/fan/one", "/fan/two?x=1"].entries()) {
      const [got] = await app.received(url.split("?")[0]);
      assert.equal(got.url, url);
      assert.equal(got.headers["upstash-topic-name"], "fanout");
      assert.equal(got.headers["upstash-message-id"], res[i].messageId);
      assert.deepEqual(JSON.parse(got.body), { order: 7 });
      assert.equal(await receiver.verify({
        signature: got.headers["upstash-signature"], body: got.body,
        url: `${app.base}${url}`,
      }), true);
    }
  });

  test("messages.get shows topicName, endpointName, labels, callerIP",
    async () => {
      await dev.client.urlGroups.addEndpoints({
        name: "meta", endpoints: [{ name: "ep", url: `${app.base}/meta` }],
      });
      const [res] = await dev.client.publish({
        urlGroup: "meta", body: "later", delay: 600, label: "solo",
        flowControl: { key: "tenant-1", parallelism: 2, rate: 10,
          period: "1m" },
      });
      const m = await dev.client.messages.get(res.messageId);
      assert.equal(m.topicName, "meta");
      assert.equal(m.urlGroup, "meta");
      assert.equal(m.endpointName, "ep");
      assert.equal(m.url, `${app.base}/meta`);
      assert.equal(m.label, "solo");
      assert.deepEqual(m.labels, ["solo"]);
      assert.equal(m.callerIP, "127.0.0.1");
      assert.equal(m.flowControlKey, "tenant-1");
      assert.equal(m.parallelism, 2);
      assert.equal(m.rate, 10);
      assert.equal(m.ratePerSecond, 10);
      assert.equal(m.period, 60);
    });

  test("a label round trip on a URL publish", async () => {
    const res = await dev.client.publish({
      url: `${app.base}/labelled`, body: "x", delay: 600,
      label: ["a", "b", "c"],
    });
    const m = await dev.client.messages.get(res.messageId);
    assert.equal(m.label, "a");
    assert.deepEqual(m.labels, ["a", "b", "c"]);
    assert.equal(m.topicName, undefined);
    assert.equal(m.endpointName, undefined);
  });

  test("filters on urlGroup, label and flow-control key", async () => {
    await dev.client.urlGroups.addEndpoints({
      name: "filtered",
      endpoints: [{ url: `${app.base}/flt/1` }, { url: `${app.base}/flt/2` }],
    });
    const group = await dev.client.publish({
      urlGroup: "filtered", body: "g", delay: 600, label: "f-group",
    });
    const plain = await dev.client.publish({
      url: `${app.base}/flt/plain`, body: "p", delay: 600, label: "f-plain",
      flowControl: { key: "f-key", rate: 1 },
    });

    const logs = await dev.client.logs({ filter: { urlGroup: "filtered" } });
    assert.deepEqual(new Set(logs.logs.map((l) => l.messageId)),
      new Set(group.map((m) => m.messageId)));
    assert.ok(logs.logs.every((l) => l.topicName === "filtered" &&
      l.urlGroup === "filtered" && l.label === "f-group"));
    const byLabel = await dev.client.logs({ filter: { label: "f-plain" } });
    assert.deepEqual(byLabel.logs.map((l) => l.messageId), [plain.messageId]);
    const byKey = await dev.client.logs({
      filter: { flowControlKey: "f-key" },
    });
    assert.deepEqual(byKey.logs.map((l) => l.messageId), [plain.messageId]);

    const cancelled = await dev.client.messages.cancel(
      { filter: { urlGroup: "filtered" } });
    assert.equal(cancelled.cancelled, 2);
    assert.equal((await dev.client.messages.get(plain.messageId)).label,
      "f-plain");
    await dev.client.messages.cancel({ filter: { label: "f-plain" } });
    await assert.rejects(dev.client.messages.get(plain.messageId),
      (err) => err instanceof QstashError && err.status === 404);
  });

  test("publishing to an unknown group is a 404", async () => {
    await assert.rejects(
      dev.client.publishJSON({ urlGroup: "no-such-group", body: {} }),
      (err) => err instanceof QstashError && err.status === 404 &&
        /not found/.test(JSON.parse(err.message).error));
  });

  test("batchJSON with a group destination answers an array element",
    async () => {
      await dev.client.urlGroups.addEndpoints({
        name: "batchgroup",
        endpoints: [{ url: `${app.base}/bg/1` }, { url: `${app.base}/bg/2` }],
      });
      const res = await dev.client.batchJSON([
        { urlGroup: "batchgroup", body: { n: 1 } },
        { url: `${app.base}/bg/plain`, body: { n: 2 } },
      ]);
      assert.equal(res.length, 2);
      assert.ok(Array.isArray(res[0]));
      assert.deepEqual(res[0].map((r) => r.url),
        [`${app.base}/bg/1`, `${app.base}/bg/2`]);
      assert.equal(res[1].url, `${app.base}/bg/plain`);
      const [got] = await app.received("/bg/2");
      assert.equal(got.headers["upstash-topic-name"], "batchgroup");
    });
});
