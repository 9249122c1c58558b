// Schedules through the official @upstash/qstash SDK against a real
// `qraftd --dev`: create (cron trimmed, a caller-chosen id replaced
// wholesale), get and list with the fields the SDK's Schedule type names,
// pause and resume (the SDK sends PATCH), delete (then 404), and one real
// tick delivered to an app with Upstash-Schedule-Id and a signature the
// SDK's Receiver accepts. A "* * * * *" schedule fires at the next minute,
// so the delivery test waits up to 75 s.
//
// QRAFT_BIN names the build's bin directory (see harness.mjs).
import assert from "node:assert/strict";
import { test } from "node:test";

import { waitFor, withDevNode } from "./harness.mjs";

const { QstashError } = await import("@upstash/qstash");

const TICK_TIMEOUT = 75_000; // the next minute, plus delivery

const dev = withDevNode();
const { node, app: sink } = dev;
const sinkUrl = (p) => sink.url(p);

test("create, get and list: the fields the SDK reads, cron trimmed",
  async () => {
    const before = Date.now();
    const { scheduleId } = await dev.client.schedules.create({
      destination: sinkUrl("/report"),
      cron: "*/10 * * * * ",
      scheduleId: "sdk-report",
      body: JSON.stringify({ report: "daily" }),
      retries: 2,
      delay: 30,
      retryDelay: "1000 * (1 + retried)",
      callback: sinkUrl("/callback"),
      headers: { "X-Team": "ops" },
    });
    assert.equal(scheduleId, "sdk-report");

    const s = await dev.client.schedules.get("sdk-report");
    assert.equal(s.scheduleId, "sdk-report");
    assert.equal(s.cron, "*/10 * * * *");
    assert.equal(s.destination, sinkUrl("/report"));
    assert.equal(s.method, "POST");
    assert.deepEqual(s.header["Content-Type"], ["application/json"]);
    assert.deepEqual(s.header["X-Team"], ["ops"]);
    assert.equal(s.body, JSON.stringify({ report: "daily" }));
    assert.equal(s.retries, 2);
    assert.equal(s.delay, 30);
    assert.equal(s.retryDelayExpression, "1000 * (1 + retried)");
    assert.equal(s.callback, sinkUrl("/callback"));
    assert.equal(s.failureCallback, undefined);
    assert.equal(s.queueName, undefined);
    assert.equal(s.isPaused, false);
    assert.equal(s.callerIp, "127.0.0.1");
    assert.ok(s.createdAt >= before - 1000 && s.createdAt <= Date.now() + 1000);
    assert.ok(s.nextScheduleTime > Date.now() - 1000);
    assert.equal(s.nextScheduleTime % 600_000, 0, "a */10 minute slot");
    assert.equal(s.lastScheduleTime, undefined);

    // The same id again replaces the schedule wholesale.
    await dev.client.schedules.create({
      destination: sinkUrl("/report2"),
      cron: "0 4 * * *",
      scheduleId: "sdk-report",
    });
    const r = await dev.client.schedules.get("sdk-report");
    assert.equal(r.destination, sinkUrl("/report2"));
    assert.equal(r.cron, "0 4 * * *");
    assert.equal(r.body, undefined);
    assert.equal(r.delay, undefined);
    assert.equal(r.callback, undefined);
    assert.equal(r.retries, 3, "the default again");
    assert.equal(r.createdAt, s.createdAt, "created once");

    const list = await dev.client.schedules.list();
    assert.ok(Array.isArray(list));
    assert.deepEqual(list.filter((x) => x.scheduleId === "sdk-report"), [r]);
  });

test("pause and resume (PATCH), then delete", async () => {
  const { scheduleId } = await dev.client.schedules.create({
    destination: sinkUrl("/paused"), cron: "0 0 1 1 *",
  });
  assert.match(scheduleId, /^scd_/);
  await dev.client.schedules.pause({ schedule: scheduleId });
  assert.equal((await dev.client.schedules.get(scheduleId)).isPaused, true);
  await dev.client.schedules.resume({ schedule: scheduleId });
  const resumed = await dev.client.schedules.get(scheduleId);
  assert.equal(resumed.isPaused, false);
  assert.ok(resumed.nextScheduleTime > Date.now());

  await dev.client.schedules.delete(scheduleId);
  await assert.rejects(dev.client.schedules.get(scheduleId),
    (err) => err instanceof QstashError && err.status === 404);
  const list = await dev.client.schedules.list();
  assert.ok(!list.some((x) => x.scheduleId === scheduleId));
  await assert.rejects(dev.client.schedules.pause({ schedule: scheduleId }),
    (err) => err instanceof QstashError && err.status === 404);
});

test("a bad cron is refused with a reason", async () => {
  await assert.rejects(dev.client.schedules.create({
    destination: sinkUrl("/never"), cron: "61 * * * *",
  }), (err) => err instanceof QstashError && err.status === 400 &&
    /minute field: 61 is out of range 0-59/.test(err.message));
});

test("a tick is delivered with Upstash-Schedule-Id and a valid signature",
  { timeout: TICK_TIMEOUT + 15_000 }, async () => {
    const { scheduleId } = await dev.client.schedules.create({
      destination: sinkUrl("/tick?src=cron"),
      cron: "* * * * *",
      body: "tick",
    });
    // The same minute, to a url group: each tick fans out to its endpoints.
    await dev.client.urlGroups.addEndpoints({ name: "tick-group", endpoints: [
      { name: "one", url: sinkUrl("/group-one") },
      { url: sinkUrl("/group-two") },
    ] });
    const group = await dev.client.schedules.create({
      destination: "tick-group", cron: "* * * * *", body: "fan",
    });
    assert.equal((await dev.client.schedules.get(group.scheduleId)).destination,
      "tick-group");
    const [req] = await sink.received("/tick", 1, TICK_TIMEOUT);
    assert.equal(req.headers["upstash-schedule-id"], scheduleId);
    assert.equal(req.body, "tick");
    assert.equal(req.url, "/tick?src=cron");
    assert.ok(await dev.receiver.verify({
      signature: req.headers["upstash-signature"],
      body: req.body,
      url: sinkUrl(req.url),
    }));
    const messageId = req.headers["upstash-message-id"];
    const s = await waitFor(async () => {
      const got = await dev.client.schedules.get(scheduleId);
      return got.lastScheduleStates?.[messageId] === "SUCCESS" ? got : null;
    }, "the tick's state to be SUCCESS");
    assert.equal(s.lastScheduleTime % 60_000, 0);
    assert.equal(s.nextScheduleTime, s.lastScheduleTime + 60_000);
    await dev.client.schedules.delete(scheduleId);

    for (const path of ["/group-one", "/group-two"]) {
      const [got] = await sink.received(path, 1, TICK_TIMEOUT);
      assert.equal(got.body, "fan");
      assert.equal(got.headers["upstash-schedule-id"], group.scheduleId);
      assert.equal(got.headers["upstash-topic-name"], "tick-group");
    }
    await dev.client.schedules.delete(group.scheduleId);
  });

test("a schedule to an unknown url group is refused", async () => {
  await assert.rejects(dev.client.schedules.create({
    destination: "no-such-group", cron: "* * * * *",
  }), (err) => err instanceof QstashError && err.status === 404);
});
