// Queues of a real `qraftd --dev`, driven by the official @upstash/qstash
// SDK: upsert, get, list, pause, resume and delete; and enqueueJSON into a
// parallelism-1 queue whose first message fails once: the app must see the
// messages strictly in order, one at a time, the second only after the
// first succeeded on its retry. Then the same through a follower of a
// 3-node cluster: queue writes are forwarded, reads served locally.
//
// QRAFT_BIN names the build's bin directory (it holds qraftd).
import assert from "node:assert/strict";
import { once } from "node:events";
import http from "node:http";
import { after, before, describe, test } from "node:test";

import { Cluster, Sink, waitFor, withDevNode } from "./harness.mjs";

const { Client, QstashError } = await import("@upstash/qstash");

/*
 * An app that takes 150 ms per request and records when each began and
 * ended (the harness's Sink answers at once and keeps no times). The first
 * request for a path listed in failOnce gets a 500, later ones 200.
 */
class App {
  events = []; // { path, status, start, end }
  failOnce = new Set();
  #server = http.createServer((req, res) => {
    const start = Date.now();
    req.resume();
    req.on("end", () => {
      setTimeout(() => {
        const status = this.failOnce.delete(req.url) ? 500 : 200;
        this.events.push({ path: req.url, status, start, end: Date.now() });
        res.writeHead(status, { "Content-Type": "text/plain" });
        res.end(status === 200 ? "ok" : "try again");
      }, 150);
    });
  });

  async start() {
    this.#server.listen(0, "127.0.0.1");
    await once(this.#server, "listening");
    this.base = `http://127.0.0.1:${this.#server.address().port}`;
  }

  close() {
    this.#server.closeAllConnections?.();
    this.#server.close();
  }

  delivered(prefix) {
    return this.events.filter((e) => e.path.startsWith(prefix) &&
                              e.status === 200);
  }
}

/*
 * Queues are usable once the leader raised the cluster's feature level
 * (right after it starts serving): until then an upsert answers 503.
 */
async function queuesReady(client) {
  const probe = client.queue({ queueName: "sdk-ready" });
  await waitFor(async () => {
    try {
      await probe.upsert({});
      return true;
    } catch (err) {
      if (err.status === 503) {
        return false;
      }
      throw err;
    }
  }, "the queues' feature level");
  await probe.delete();
}

describe("queues with the official SDK", () => {
  const dev = withDevNode({ app: new App(), nodeArgs: ["--max-queues", "5"],
    ready: ({ client }) => queuesReady(client) });
  const { app } = dev;

  test("upsert, get, list, pause, resume and delete", async () => {
    const q = dev.client.queue({ queueName: "sdk-admin" });
    await q.upsert({ parallelism: 3 });
    let got = await q.get();
    assert.equal(got.name, "sdk-admin");
    assert.equal(got.parallelism, 3);
    assert.equal(got.paused, false);
    assert.equal(got.lag, 0);
    assert.ok(got.createdAt > 0 && got.updatedAt >= got.createdAt);

    await q.pause();
    await q.pause(); // idempotent
    assert.equal((await q.get()).paused, true);
    // Paused: it accepts messages and delivers none (lag stays 1).
    const res = await q.enqueueJSON({
      url: `${app.base}/paused`, body: { n: 1 },
    });
    assert.match(res.messageId, /^msg_/);
    got = await q.get();
    assert.equal(got.lag, 1);
    const m = await dev.client.messages.get(res.messageId);
    assert.equal(m.queueName, "sdk-admin");
    assert.equal(app.delivered("/paused").length, 0);

    await q.resume();
    await q.resume();
    await waitFor(() => app.delivered("/paused").length === 1,
      "the paused message after resume");
    await waitFor(async () => (await q.get()).lag === 0, "lag 0");

    await q.upsert({ parallelism: 1, paused: false });
    assert.equal((await q.get()).parallelism, 1);

    const list = await dev.client.queue().list();
    assert.ok(Array.isArray(list));
    assert.deepEqual(list.map((x) => x.name), ["sdk-admin"]);

    await q.delete();
    await assert.rejects(q.get(), (err) => {
      assert.ok(err instanceof QstashError);
      assert.equal(err.status, 404);
      return true;
    });
  });

  test("enqueue auto-creates; limits answer 412", async () => {
    const auto = dev.client.queue({ queueName: "sdk-auto" });
    await auto.enqueueJSON({ url: `${app.base}/auto`, body: { n: 0 } });
    const got = await auto.get();
    assert.equal(got.parallelism, 1);
    await assert.rejects(auto.upsert({ parallelism: 101 }), (err) => {
      assert.equal(err.status, 412);
      return true;
    });
    // --max-queues 5: sdk-auto plus four more fit, a sixth does not.
    for (let i = 0; i < 4; i++) {
      await dev.client.queue({ queueName: `sdk-fill-${i}` }).upsert({});
    }
    await assert.rejects(
      dev.client.queue({ queueName: "sdk-one-too-many" }).upsert({}),
      (err) => { assert.equal(err.status, 412); return true; });
    await assert.rejects(
      dev.client.queue({ queueName: "sdk-one-too-many" }).enqueueJSON({
        url: `${app.base}/never`, body: {},
      }),
      (err) => { assert.equal(err.status, 412); return true; });
    for (let i = 0; i < 4; i++) {
      await dev.client.queue({ queueName: `sdk-fill-${i}` }).delete();
    }
    await auto.delete();
  });

  test("parallelism 1: strict order, the next only after a retried first",
    async () => {
      const q = dev.client.queue({ queueName: "sdk-fifo" });
      await q.upsert({ parallelism: 1 });
      const n = 5;
      app.failOnce.add("/fifo/0");
      for (let i = 0; i < n; i++) {
        await q.enqueueJSON({
          url: `${app.base}/fifo/${i}`, body: { i }, retries: 3,
          retryDelay: "300",
        });
      }
      await waitFor(() => app.delivered("/fifo/").length === n,
        `${n} deliveries`);
      const seen = app.events.filter((e) => e.path.startsWith("/fifo/"));
      assert.deepEqual(seen.map((e) => `${e.path} ${e.status}`), [
        "/fifo/0 500", "/fifo/0 200", "/fifo/1 200", "/fifo/2 200",
        "/fifo/3 200", "/fifo/4 200",
      ]);
      // One at a time: each began after the previous one was answered.
      for (let i = 1; i < seen.length; i++) {
        assert.ok(seen[i].start >= seen[i - 1].end,
          `${seen[i].path} began before ${seen[i - 1].path} was answered`);
      }
      assert.equal((await q.get()).lag, 0);
    });
});

describe("queues through a follower of a 3-node cluster", () => {
  const cluster = new Cluster(3);
  const app = new Sink();
  let client;

  before(async () => {
    await app.start();
    await cluster.start();
    const leader = await cluster.leader();
    const follower = cluster.nodes.find((n) => n !== leader);
    client = new Client({ baseUrl: follower.url, token: cluster.token,
      retry: false });
    await queuesReady(client);
  });

  after(async () => {
    await app.close();
    await cluster.stop();
    cluster.removeDirs();
  });

  test("writes are forwarded, reads served, order kept", async () => {
    const q = client.queue({ queueName: "sdk-follower" });
    await q.upsert({ parallelism: 1, paused: true });
    for (let i = 0; i < 4; i++) {
      await q.enqueueJSON({ url: app.url(`/f/${i}`), body: { i } });
    }
    // Acknowledged through the follower means applied there too.
    assert.equal((await q.get()).lag, 4);
    assert.equal(app.requests.length, 0);
    await q.resume();
    await waitFor(() => app.requests.length === 4, "4 deliveries");
    assert.deepEqual(app.requests.map((r) => r.path),
      ["/f/0", "/f/1", "/f/2", "/f/3"]);
    await q.pause();
    assert.equal((await q.get()).paused, true);
    await q.delete();
    await assert.rejects(q.get(), (err) => err.status === 404);
  });
});
