// An app pointed at a FOLLOWER of a 3-node cluster, with the official SDK:
// writes (publish, batch, cancel, DLQ retry and delete) are forwarded to the
// leader, reads are served by the follower and see every acknowledged write
// at once (no retry around a read-after-write), deliveries verify with the keys
// the follower hands out, and after the leader is killed the same client
// keeps working once a new leader is elected.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import { Cluster, Sink, waitFor } from "./harness.mjs";

const { Client, QstashError, Receiver } = await import("@upstash/qstash");

describe("the SDK against a follower of a 3-node cluster", () => {
  const cluster = new Cluster(3);
  const app = new Sink();
  app.script("/missing", () => ({ status: 404, body: "no such page" }));
  let follower;
  let client;
  let receiver;

  before(async () => {
    await app.start();
    await cluster.start();
    const leader = await cluster.leader();
    follower = cluster.nodes.find((n) => n !== leader);
    // The env an app gets: QSTASH_URL is the follower, keys from the API.
    client = new Client({ baseUrl: follower.url, token: cluster.token,
      retry: false });
    const res = await fetch(`${follower.url}/v2/keys`, {
      headers: { Authorization: `Bearer ${cluster.token}` },
    });
    assert.equal(res.status, 200);
    const keys = await res.json();
    receiver = new Receiver({ currentSigningKey: keys.current,
      nextSigningKey: keys.next });
  });

  after(async () => {
    await app.close();
    await cluster.stop();
    cluster.removeDirs();
  });

  test("publishJSON through the follower is delivered and verifies",
    async () => {
      const url = app.url("/hook?via=follower");
      const res = await client.publishJSON({ url, body: { n: 1 } });
      assert.match(res.messageId, /^msg_/);
      const [got] = await app.received("/hook");
      assert.equal(got.headers["upstash-message-id"], res.messageId);
      assert.equal(await receiver.verify({
        signature: got.headers["upstash-signature"], body: got.body, url,
      }), true);
    });

  test("messages.get on the follower, cancel forwarded", async () => {
    const res = await client.publish({ url: app.url("/later"), body: "x",
      delay: 600 });
    // Acknowledged through the follower means applied there too.
    const m = await client.messages.get(res.messageId);
    assert.equal(m.body, "x");
    await client.messages.cancel(res.messageId);
    await assert.rejects(client.messages.get(res.messageId),
      (err) => err instanceof QstashError && err.status === 404);
  });

  test("dedup and batch through the follower", async () => {
    const opts = { url: app.url("/once"), body: "1", deduplicationId: "c-1",
      delay: 600 };
    const first = await client.publish(opts);
    const second = await client.publish(opts);
    assert.equal(second.messageId, first.messageId);
    assert.equal(second.deduplicated, true);

    const res = await client.batchJSON([
      { url: app.url("/b1"), body: { b: 1 } },
      { url: app.url("/b2"), body: { b: 2 } },
    ]);
    assert.equal(res.length, 2);
    await app.received("/b1");
    await app.received("/b2");
  });

  test("DLQ list on the follower, retry and delete forwarded", async () => {
    const res = await client.publish({ url: app.url("/missing"), body: "d",
      retries: 0 });
    const entry = await waitFor(async () => {
      const page = await client.dlq.listMessages();
      return page.messages.find((m) => m.messageId === res.messageId);
    }, "the dead letter on the follower");
    assert.equal(entry.responseStatus, 404);
    await client.dlq.retry({ dlqIds: [entry.dlqId] });
    await app.received("/missing", 2);
    await waitFor(async () => {
      const page = await client.dlq.listMessages();
      return page.messages.some((m) => m.dlqId === entry.dlqId);
    }, "the retried message back in the DLQ");
    await client.dlq.delete(entry.dlqId);
    const page = await client.dlq.listMessages();
    assert.ok(!page.messages.some((m) => m.dlqId === entry.dlqId));
  });

  test("the leader dies: the same client publishes again once a new " +
    "leader is elected", async () => {
    let victim = await cluster.leader();
    if (victim === follower) {
      // An election since before() moved the leadership here: kill another
      // node, so the client still goes through a node that must forward.
      victim = cluster.nodes.find((n) => n !== follower);
    }
    await victim.kill9();
    const res = await waitFor(() => client.publishJSON({
      url: app.url("/after-failover"), body: { n: 2 },
    }).catch((err) => {
      // No leader for a moment: the app sees 503 and tries again.
      if (err instanceof QstashError && err.status === 503) {
        return null;
      }
      throw err;
    }), "a publish through the follower after the failover", 30_000);
    const [got] = await app.received("/after-failover");
    assert.equal(got.headers["upstash-message-id"], res.messageId);
  });
});
