// Schedules through the official @upstash/qstash SDK against a real
// `qraftd --dev`: create (cron trimmed, a caller-chosen id replaced
// wholesale), get and list with the fields the SDK's Schedule type names,
// pause and resume (the SDK sends PATCH), delete (then 404), and one real
// tick delivered to an app with Upstash-Schedule-Id and a signature the
// SDK's Receiver accepts. A "* * * * *" schedule fires at the next minute,
// so the delivery test waits up to 75 s.
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
import { after, before, test } from "node:test";

for (const name of Object.keys(process.env)) {
  if (name === "QSTASH_DEV" || name === "QSTASH_REGION" ||
      name.endsWith("QSTASH_CURRENT_SIGNING_KEY") ||
      name.endsWith("QSTASH_NEXT_SIGNING_KEY")) {
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
const TICK_TIMEOUT = 75_000; // the next minute, plus delivery

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

/* Polls check() every 50 ms until it returns something truthy. */
async function waitFor(check, timeoutMs, what) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value) {
      return value;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what()}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}

const dir = mkdtempSync(path.join(os.tmpdir(), "qraft-sdk-sched-"));
let proc = null;
let exited = null;
let stdout = "";
let stderr = "";
const env = {};
const requests = [];
const sink = http.createServer((req, res) => {
  const chunks = [];
  req.on("data", (c) => chunks.push(c));
  req.on("end", () => {
    requests.push({ url: req.url, path: req.url.split("?")[0],
      headers: req.headers, body: Buffer.concat(chunks).toString("utf8") });
    res.writeHead(200, { "Content-Type": "text/plain" });
    res.end("ok");
  });
});
let client;
let receiver;

const logHint = () => (stderr ? `\n--- qraftd stderr ---\n${stderr}` : "");
const sinkUrl = (p) => `http://127.0.0.1:${sink.address().port}${p}`;

process.on("exit", () => {
  if (proc && !exited) {
    proc.kill("SIGKILL");
  }
});

before(async () => {
  sink.listen(0, "127.0.0.1");
  await once(sink, "listening");
  const [rpc, httpPort, raft] =
    [await freePort(), await freePort(), await freePort()];
  proc = spawn(qraftd, ["--dev", "--data", path.join(dir, "data"),
    "--rpc", `127.0.0.1:${rpc}`, "--http", `127.0.0.1:${httpPort}`,
    "--raft", `127.0.0.1:${raft}`],
  { cwd: dir, env: childEnv, stdio: ["ignore", "pipe", "pipe"] });
  proc.stdout.setEncoding("utf8");
  proc.stderr.setEncoding("utf8");
  proc.stdout.on("data", (c) => { stdout += c; });
  proc.stderr.on("data", (c) => { stderr = (stderr + c).slice(-8192); });
  proc.on("exit", (code, signal) => { exited = { code, signal }; });
  await waitFor(() => {
    if (exited) {
      throw new Error(`qraftd exited while starting${logHint()}`);
    }
    return /^QRAFT_ENDPOINTS=.+$/m.test(stdout);
  }, START_TIMEOUT, () => `qraftd to print its env lines${logHint()}`);
  for (const line of stdout.split("\n")) {
    const m = /^([A-Z_]+)=(.*)$/.exec(line);
    if (m) {
      env[m[1]] = m[2];
    }
  }
  client = new Client({ baseUrl: env.QSTASH_URL, token: env.QSTASH_TOKEN,
    retry: false });
  receiver = new Receiver({
    currentSigningKey: env.QSTASH_CURRENT_SIGNING_KEY,
    nextSigningKey: env.QSTASH_NEXT_SIGNING_KEY,
  });
});

after(async () => {
  try {
    if (proc && !exited) {
      const gone = once(proc, "exit");
      proc.kill("SIGTERM");
      const timer = setTimeout(() => proc.kill("SIGKILL"), STOP_TIMEOUT);
      await gone;
      clearTimeout(timer);
    }
  } finally {
    sink.closeAllConnections();
    sink.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test("create, get and list: the fields the SDK reads, cron trimmed",
  async () => {
    const before = Date.now();
    const { scheduleId } = await client.schedules.create({
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

    const s = await client.schedules.get("sdk-report");
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
    await client.schedules.create({
      destination: sinkUrl("/report2"),
      cron: "0 4 * * *",
      scheduleId: "sdk-report",
    });
    const r = await client.schedules.get("sdk-report");
    assert.equal(r.destination, sinkUrl("/report2"));
    assert.equal(r.cron, "0 4 * * *");
    assert.equal(r.body, undefined);
    assert.equal(r.delay, undefined);
    assert.equal(r.callback, undefined);
    assert.equal(r.retries, 3, "the default again");
    assert.equal(r.createdAt, s.createdAt, "created once");

    const list = await client.schedules.list();
    assert.ok(Array.isArray(list));
    assert.deepEqual(list.filter((x) => x.scheduleId === "sdk-report"), [r]);
  });

test("pause and resume (PATCH), then delete", async () => {
  const { scheduleId } = await client.schedules.create({
    destination: sinkUrl("/paused"), cron: "0 0 1 1 *",
  });
  assert.match(scheduleId, /^scd_/);
  await client.schedules.pause({ schedule: scheduleId });
  assert.equal((await client.schedules.get(scheduleId)).isPaused, true);
  await client.schedules.resume({ schedule: scheduleId });
  const resumed = await client.schedules.get(scheduleId);
  assert.equal(resumed.isPaused, false);
  assert.ok(resumed.nextScheduleTime > Date.now());

  await client.schedules.delete(scheduleId);
  await assert.rejects(client.schedules.get(scheduleId),
    (err) => err instanceof QstashError && err.status === 404);
  const list = await client.schedules.list();
  assert.ok(!list.some((x) => x.scheduleId === scheduleId));
  await assert.rejects(client.schedules.pause({ schedule: scheduleId }),
    (err) => err instanceof QstashError && err.status === 404);
});

test("a bad cron is refused with a reason", async () => {
  await assert.rejects(client.schedules.create({
    destination: sinkUrl("/never"), cron: "61 * * * *",
  }), (err) => err instanceof QstashError && err.status === 400 &&
    /minute field: 61 is out of range 0-59/.test(err.message));
});

test("a tick is delivered with Upstash-Schedule-Id and a valid signature",
  { timeout: TICK_TIMEOUT + 15_000 }, async () => {
    const { scheduleId } = await client.schedules.create({
      destination: sinkUrl("/tick?src=cron"),
      cron: "* * * * *",
      body: "tick",
    });
    const req = await waitFor(
      () => requests.find((r) => r.path === "/tick"), TICK_TIMEOUT,
      () => `a tick on /tick (got ${requests.length} requests)${logHint()}`);
    assert.equal(req.headers["upstash-schedule-id"], scheduleId);
    assert.equal(req.body, "tick");
    assert.equal(req.url, "/tick?src=cron");
    assert.ok(await receiver.verify({
      signature: req.headers["upstash-signature"],
      body: req.body,
      url: sinkUrl(req.url),
    }));
    const messageId = req.headers["upstash-message-id"];
    const s = await waitFor(async () => {
      const got = await client.schedules.get(scheduleId);
      return got.lastScheduleStates?.[messageId] === "SUCCESS" ? got : null;
    }, 10_000, () => `the tick's state to be SUCCESS`);
    assert.equal(s.lastScheduleTime % 60_000, 0);
    assert.equal(s.nextScheduleTime, s.lastScheduleTime + 60_000);
    await client.schedules.delete(scheduleId);
  });
