// Flow control (issue #13) of a real `qraftd --dev`, driven by the official
// @upstash/qstash SDK: publish({flowControl}) holds parallelism and rate,
// and client.flowControl's get, pause, resume, pin, unpin, resetRate and
// getGlobalParallelism do what the SDK documents. An app that records when
// each request began and ended measures what the node really did. Bad
// flow-control input goes through the raw REST API (the SDK would refuse
// some of it before sending).
//
// Through a follower (QRAFT_SDK_VIA=follower) the counts a key's read
// answers (parallelismCount, rateCount, ratePeriodStart) are those of the
// node answering, which need not own the key: they are checked on a --dev
// node only.
//
// QRAFT_BIN names the build's bin directory (it holds qraftd).
import assert from "node:assert/strict";
import { once } from "node:events";
import http from "node:http";
import { describe, test } from "node:test";

import { Waiters, sdkVia, waitFor, withDevNode } from "./harness.mjs";

const { QstashError } = await import("@upstash/qstash");

const countsHere = sdkVia === "dev";

/*
 * An app that holds each request hold(path) ms before it answers 200 and
 * records, per path, every request's start and end (ms) and how many were
 * open at once. A request counts as ended before its answer is written, so
 * the node can never have fewer open than the app counts.
 */
class App {
  #paths = new Map();
  #waiters = new Waiters();
  #server = http.createServer((req, res) => {
    const p = this.#path(req.url.split("?")[0]);
    const r = { start: Date.now(), end: null };
    p.requests.push(r);
    p.open++;
    p.maxOpen = Math.max(p.maxOpen, p.open);
    req.resume();
    req.on("end", () => {
      setTimeout(() => {
        p.open--;
        r.end = Date.now();
        res.writeHead(200, { "Content-Type": "text/plain" });
        res.end("ok");
        this.#waiters.notify();
      }, p.hold());
    });
    this.#waiters.notify();
  });

  #path(name) {
    let p = this.#paths.get(name);
    if (!p) {
      p = { requests: [], open: 0, maxOpen: 0, hold: () => 0 };
      this.#paths.set(name, p);
    }
    return p;
  }

  async start() {
    this.#server.listen(0, "127.0.0.1");
    await once(this.#server, "listening");
    this.base = `http://127.0.0.1:${this.#server.address().port}`;
  }

  async close() {
    if (!this.#server.listening) {
      return;
    }
    this.#server.closeAllConnections();
    this.#server.close();
    await once(this.#server, "close");
  }

  /* Holds each request on name for what fn() returns (ms). */
  holdFor(name, fn) {
    this.#path(name).hold = fn;
  }

  /* { requests: [{start, end}], open, maxOpen } of name. */
  seen(name) {
    return this.#path(name);
  }

  /* Resolves once n requests on name were answered. */
  answered(name, n, timeoutMs) {
    return this.#waiters.until(() => {
      const done = this.#path(name).requests.filter((r) => r.end !== null);
      return done.length >= n ? done : null;
    }, timeoutMs, () => `${n} answered request(s) on ${name} (have ` +
      `${this.#path(name).requests.filter((r) => r.end !== null).length})`);
  }

  /* Resolves once n requests on name began. */
  started(name, n, timeoutMs) {
    return this.#waiters.until(
      () => this.#path(name).requests.length >= n,
      timeoutMs, () => `${n} request(s) on ${name} to begin (have ` +
      `${this.#path(name).requests.length})`);
  }
}

/* The most of rs (with start and end) open at one moment. */
function maxOverlap(rs) {
  const edges = [];
  for (const r of rs) {
    edges.push([r.start, 1], [r.end ?? Infinity, -1]);
  }
  // At the same ms an end comes before a start: the app wrote the answer
  // before the node could begin the next one.
  edges.sort((a, b) => a[0] - b[0] || a[1] - b[1]);
  let open = 0;
  let most = 0;
  for (const [, d] of edges) {
    open += d;
    most = Math.max(most, open);
  }
  return most;
}

/* Rejects unless err is the SDK's error with HTTP status. */
function status(code) {
  return (err) => {
    assert.ok(err instanceof QstashError, String(err));
    assert.equal(err.status, code);
    return true;
  };
}

/*
 * Through a follower: resolves once the cluster's first shard map gave
 * every node its shards. Until then the leader owns them all, and a
 * delivery running when a shard moves is cancelled there and sent again
 * by its new owner (the app sees it twice, one of them abandoned): the
 * counts below assume no shard moves.
 */
async function shardsSettled(dev) {
  if (sdkVia !== "follower") {
    return;
  }
  await waitFor(async () => {
    const s = JSON.parse(await dev.node.cli("status", "--json"));
    return s.nodes?.length === 3 && s.nodes.every((n) => n.shards > 0);
  }, "the first shard map", 30_000);
}

/* Resolves once the node answers 404 for key: a key that holds nothing is
 * gone once its last message is final, which follows the answer soon. */
function keyGoneIn(client) {
  return (key, what) => waitFor(async () => {
    try {
      await client().flowControl.get(key);
      return false;
    } catch (err) {
      return status(404)(err);
    }
  }, what);
}

/* Asserts info is a FlowControlInfo: exactly its fields, of their types. */
function assertInfoShape(info) {
  const types = {
    flowControlKey: "string", waitListSize: "number",
    parallelismMax: "number", parallelismCount: "number", rateMax: "number",
    rateCount: "number", ratePeriod: "number", ratePeriodStart: "number",
    isPaused: "boolean", isPinnedParallelism: "boolean",
    isPinnedRate: "boolean",
  };
  assert.deepEqual(Object.keys(info).sort(), Object.keys(types).sort());
  for (const [name, type] of Object.entries(types)) {
    assert.equal(typeof info[name], type, name);
    if (type === "number") {
      assert.ok(Number.isInteger(info[name]) && info[name] >= 0,
        `${name} ${info[name]}`);
    }
  }
}

describe("flow control with the official SDK", () => {
  const dev = withDevNode({ app: new App(), ready: shardsSettled });
  const { app } = dev;
  const keyGone = keyGoneIn(() => dev.client);

  /* Publishes n messages to path with flowControl fc, in order. */
  async function publish(path, n, fc) {
    for (let i = 0; i < n; i++) {
      await dev.client.publish({
        url: `${app.base}${path}`, body: `m${i}`, flowControl: fc,
      });
    }
  }

  test("parallelism 2 is never exceeded over 50 messages", async () => {
    const key = "fc-par";
    app.holdFor("/par", () => 100 + Math.floor(Math.random() * 100));
    await publish("/par", 50, { key, parallelism: 2 });

    // While they run: the key's and the node's counts.
    if (countsHere) {
      const busy = await waitFor(async () => {
        const g = await dev.client.flowControl.getGlobalParallelism();
        return g.parallelismCount >= 1 ? g : null;
      }, "the node's parallelismCount to show a delivery");
      assert.ok(busy.parallelismMax >= busy.parallelismCount);
    }
    const info = await dev.client.flowControl.get(key);
    assertInfoShape(info);
    assert.equal(info.flowControlKey, key);
    assert.equal(info.parallelismMax, 2);
    assert.equal(info.rateMax, 0);
    assert.ok(info.parallelismCount <= 2, `${info.parallelismCount}`);
    assert.ok(info.waitListSize <= 50, `${info.waitListSize}`);

    await app.answered("/par", 50, 30_000);
    const seen = app.seen("/par");
    assert.equal(seen.maxOpen, 2, "at most 2 at once, and 2 used");
    assert.equal(maxOverlap(seen.requests), 2);

    // Every message final: the key holds nothing and is gone, each
    // message was sent once, and the node has nothing open.
    await keyGone(key, "the idle key to be gone");
    assert.equal(seen.requests.length, 50);
    if (countsHere) {
      await waitFor(async () => (await dev.client.flowControl
        .getGlobalParallelism()).parallelismCount === 0,
      "the node's parallelismCount to fall to 0");
    }
  });

  test("rate 5 per second holds over 10 s", async () => {
    const key = "fc-rate";
    // Published while paused, so that each period's 5 start together.
    await dev.client.flowControl.pause(key);
    await publish("/rate", 50, { key, rate: 5, period: 1 });
    await dev.client.flowControl.resume(key);

    if (countsHere) {
      // A running period, read back while the messages go out.
      const info = await waitFor(async () => {
        const i = await dev.client.flowControl.get(key);
        return i.rateCount > 0 ? i : null;
      }, "a rate period to run");
      assertInfoShape(info);
      assert.equal(info.rateMax, 5);
      assert.equal(info.ratePeriod, 1);
      assert.equal(info.parallelismMax, 0);
      assert.ok(info.rateCount <= 5, `rateCount ${info.rateCount}`);
      const nowS = Date.now() / 1000;
      assert.ok(Math.abs(info.ratePeriodStart - nowS) <= 3,
        `ratePeriodStart ${info.ratePeriodStart}, now ${nowS}`);
    }

    const done = await app.answered("/rate", 50, 25_000);
    const starts = done.map((r) => r.start).sort((a, b) => a - b);
    const rel = starts.map((s) => s - starts[0]);
    // No 6 starts within a period: the 6th after any start comes a period
    // later, less what arrival times vary (the first request also opens a
    // connection).
    for (let i = 0; i + 5 < rel.length; i++) {
      assert.ok(rel[i + 5] - rel[i] >= 900,
        `starts ${i} and ${i + 5} ${rel[i + 5] - rel[i]} ms apart: ` +
        JSON.stringify(rel));
    }
    // Windows of 1 s from (just before) the first start: 5 each, give or
    // take one.
    const windows = [];
    for (const r of rel) {
      const w = Math.floor((r + 100) / 1000);
      windows[w] = (windows[w] ?? 0) + 1;
    }
    for (let w = 0; w < windows.length; w++) {
      assert.ok((windows[w] ?? 0) <= 6,
        `window ${w} saw ${windows[w]} starts: ${JSON.stringify(windows)}`);
    }
    // 50 at 5 per period need 10 periods: the last begins >= 9 s after
    // the first.
    assert.ok(rel[49] >= 8_800, `50 starts over ${rel[49]} ms`);
  });

  test("pause holds the waitlist, resume releases it", async () => {
    const key = "fc-pause";
    // Paused before it has messages: the key exists, paused and empty.
    await dev.client.flowControl.pause(key);
    await dev.client.flowControl.pause(key); // idempotent
    let info = await dev.client.flowControl.get(key);
    assertInfoShape(info);
    assert.equal(info.isPaused, true);
    assert.equal(info.waitListSize, 0);

    // 200 ms each: the key is still there to read after resume.
    app.holdFor("/pause", () => 200);
    await publish("/pause", 5, { key, parallelism: 1 });
    info = await dev.client.flowControl.get(key);
    assert.equal(info.waitListSize, 5);
    assert.equal(info.parallelismMax, 1);
    assert.equal(info.parallelismCount, 0);
    // Nothing goes out while paused: a second (and more) of waiting sees
    // no request.
    await assert.rejects(app.started("/pause", 1, 1_000), /timed out/);
    assert.equal((await dev.client.flowControl.get(key)).waitListSize, 5);

    await dev.client.flowControl.resume(key);
    assert.equal((await dev.client.flowControl.get(key)).isPaused, false);
    await app.answered("/pause", 5, 10_000);
    assert.equal(app.seen("/pause").maxOpen, 1);
    await keyGone(key, "the drained, resumed key to be gone");
  });

  test("a pin overrides the messages' limits; unpin returns them",
    async () => {
      const key = "fc-pin";
      app.holdFor("/pin", () => 250);
      await dev.client.flowControl.pin(key, { parallelism: 1 });
      let info = await dev.client.flowControl.get(key);
      assert.equal(info.isPinnedParallelism, true);
      assert.equal(info.isPinnedRate, false);
      assert.equal(info.parallelismMax, 1);

      await publish("/pin", 10, { key, parallelism: 5 });
      await app.answered("/pin", 3, 10_000);
      info = await dev.client.flowControl.get(key);
      assert.equal(info.parallelismMax, 1, "the pin wins over 5");
      assert.equal(info.isPinnedParallelism, true);

      const unpinAt = Date.now();
      await dev.client.flowControl.unpin(key, { parallelism: true });
      info = await dev.client.flowControl.get(key);
      assert.equal(info.isPinnedParallelism, false);
      assert.equal(info.parallelismMax, 5, "the messages' limit is back");

      await app.answered("/pin", 10, 10_000);
      const rs = app.seen("/pin").requests;
      const pinned = rs.filter((r) => r.start < unpinAt);
      const after = rs.filter((r) => r.start >= unpinAt);
      assert.ok(pinned.length >= 3, `${pinned.length} began pinned`);
      assert.equal(maxOverlap(pinned), 1, "one at a time while pinned");
      assert.ok(maxOverlap(after) >= 2 && maxOverlap(after) <= 5,
        `${maxOverlap(after)} at once after unpin`);

      // A rate pin (period in seconds, as the SDK sends it) and its unpin.
      await dev.client.flowControl.pin(key, { rate: 2, period: 30 });
      info = await dev.client.flowControl.get(key);
      assert.equal(info.isPinnedRate, true);
      assert.equal(info.rateMax, 2);
      assert.equal(info.ratePeriod, 30);
      await dev.client.flowControl.unpin(key, { rate: true });
      await keyGone(key, "the unpinned key with no messages to be gone");
    });

  test("resetRate ends the period: rateCount reads 0", async () => {
    const key = "fc-reset";
    await publish("/reset", 2, { key, rate: 1, period: "60s" });
    const [first] = await app.answered("/reset", 1, 10_000);
    // The second waits for the 60 s period to end.
    await dev.client.flowControl.pause(key);
    // Once the first is final, one waits.
    let info = await waitFor(async () => {
      const i = await dev.client.flowControl.get(key);
      return i.waitListSize === 1 ? i : null;
    }, "a waitlist of 1");
    assertInfoShape(info);
    assert.equal(info.rateMax, 1);
    assert.equal(info.ratePeriod, 60);
    assert.equal(info.waitListSize, 1);
    if (countsHere) {
      assert.equal(info.rateCount, 1);
      assert.ok(info.ratePeriodStart > 0);
    }

    await dev.client.flowControl.resetRate(key);
    info = await dev.client.flowControl.get(key);
    assert.equal(info.rateCount, 0);
    assert.equal(info.waitListSize, 1);

    // Resumed, the second goes now, not at the end of the 60 s.
    await dev.client.flowControl.resume(key);
    const both = await app.answered("/reset", 2, 10_000);
    assert.ok(both[1].start - first.start < 30_000);
  });

  test("getGlobalParallelism and the list of keys", async () => {
    const g = await dev.client.flowControl.getGlobalParallelism();
    assert.ok(Number.isInteger(g.parallelismMax) && g.parallelismMax > 0,
      JSON.stringify(g));
    assert.ok(Number.isInteger(g.parallelismCount) && g.parallelismCount >= 0,
      JSON.stringify(g));

    const key = "fc-list";
    await dev.client.flowControl.pause(key);
    const url = dev.node.env.QSTASH_URL;
    const headers = { Authorization: `Bearer ${dev.node.env.QSTASH_TOKEN}` };
    const res = await fetch(`${url}/v2/flowControl`, { headers });
    assert.equal(res.status, 200);
    const list = await res.json();
    assert.ok(Array.isArray(list));
    const mine = list.find((i) => i.flowControlKey === key);
    assertInfoShape(mine);
    assert.deepEqual(mine, await dev.client.flowControl.get(key));
    await dev.client.flowControl.resume(key);
    await assert.rejects(dev.client.flowControl.get("fc-never-seen"),
      status(404));
  });

  test("bad flow control input answers 400", async () => {
    const url = dev.node.env.QSTASH_URL;
    const auth = `Bearer ${dev.node.env.QSTASH_TOKEN}`;
    const dest = `${app.base}/bad`;

    async function publishRaw(key, value) {
      const headers = { Authorization: auth, "Upstash-Flow-Control-Key": key };
      if (value !== undefined) {
        headers["Upstash-Flow-Control-Value"] = value;
      }
      const res = await fetch(`${url}/v2/publish/${dest}`,
        { method: "POST", headers, body: "x" });
      return { status: res.status, body: await res.json() };
    }

    for (const [value, why] of [
      ["parallelism=-1", /parallelism '-1'/],
      ["rate=abc", /rate 'abc'/],
      ["foo=1", /unknown name 'foo'/],
      ["period=0s, rate=1", /period '0s'/],
      ["parallelism=1, parallelism=2", /repeated 'parallelism'/],
      ["period=10s", /needs parallelism or rate/],
    ]) {
      const got = await publishRaw("fc-bad", value);
      assert.equal(got.status, 400, value);
      assert.match(got.body.error, /Upstash-Flow-Control-Value/, value);
      assert.match(got.body.error, why, value);
    }
    let got = await publishRaw("fc-bad");
    assert.equal(got.status, 400);
    assert.match(got.body.error, /needs a parallelism or a rate/);
    got = await publishRaw("k".repeat(257), "rate=1");
    assert.equal(got.status, 400);
    assert.match(got.body.error, /flow control key .*256 bytes/);
    // 256 bytes is the longest key.
    got = await publishRaw("k".repeat(256), "rate=1");
    assert.equal(got.status, 200, JSON.stringify(got.body));
    await app.answered("/bad", 1, 10_000);

    for (const [query, why] of [
      ["pin?rate=abc", /rate must be a whole number/],
      ["pin?parallelism=0", /parallelism must be a whole number/],
      ["pin", /needs a parallelism or a rate/],
      ["pin?parallelism=2&period=10", /period goes with a rate/],
      ["pin?nope=1", /unknown parameter 'nope'/],
      ["unpin?parallelism=maybe", /true or false/],
      ["unpin", /unpin needs/],
    ]) {
      const res = await fetch(`${url}/v2/flowControl/fc-bad/${query}`,
        { method: "POST", headers: { Authorization: auth } });
      assert.equal(res.status, 400, query);
      assert.match((await res.json()).error, why, query);
    }
    // None of it made the key.
    await assert.rejects(dev.client.flowControl.get("fc-bad"), status(404));
  });

  test("a schedule keeps its flow control", async () => {
    const { scheduleId } = await dev.client.schedules.create({
      destination: `${app.base}/sched`, cron: "*/5 * * * *",
      flowControl: { key: "fc-sched", parallelism: 3, rate: 7, period: "1h" },
    });
    const s = await dev.client.schedules.get(scheduleId);
    assert.equal(s.flowControlKey, "fc-sched");
    assert.equal(s.parallelism, 3);
    assert.equal(s.rate, 7);
    assert.equal(s.period, 3600);
    await dev.client.schedules.delete(scheduleId);
  });
});
