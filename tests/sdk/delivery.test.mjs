// Deliveries made by a real `qraftd --dev` must pass the official
// @upstash/qstash Receiver exactly as an app would call it: the signature
// header, the raw body as received, and the full URL the app was called at.
// A body or URL other than the delivered one must fail with SignatureError.
//
// QRAFT_BIN names the build's bin directory (it holds qraftd and qraft).
import assert from "node:assert/strict";
import { execFile, spawn } from "node:child_process";
import { once } from "node:events";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import http from "node:http";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";

// The Receiver reads these at verify time: QSTASH_DEV would swap the node's
// keys for the SDK's dev-server keys, QSTASH_REGION (and the key variables)
// would bring in keys other than the ones the node printed.
for (const name of Object.keys(process.env)) {
  if (name === "QSTASH_DEV" || name === "QSTASH_REGION" ||
      name.endsWith("QSTASH_CURRENT_SIGNING_KEY") ||
      name.endsWith("QSTASH_NEXT_SIGNING_KEY")) {
    delete process.env[name];
  }
}
const { Receiver, SignatureError } = await import("@upstash/qstash");

const bin = process.env.QRAFT_BIN;
assert.ok(bin, "QRAFT_BIN must name the build's bin directory");
const qraftd = path.resolve(bin, "qraftd");
const qraft = path.resolve(bin, "qraft");
for (const file of [qraftd, qraft]) {
  assert.ok(existsSync(file), `${file} not found: build qraft first`);
}

// Deadlines, in milliseconds.
const START_TIMEOUT = 30_000;
const STOP_TIMEOUT = 10_000;
const CLI_TIMEOUT = 30_000;
const DELIVERY_TIMEOUT = 20_000;

// The developer's QRAFT_* and QSTASH_* settings must not reach the node or
// the CLI.
const childEnv = Object.fromEntries(Object.entries(process.env).filter(
  ([k]) => !k.startsWith("QRAFT_") && !k.includes("QSTASH_")));

const handedOut = new Set();

/* A loopback TCP port nobody listens on now, not handed out before. */
async function freePort() {
  for (let i = 0; i < 100; i++) {
    const srv = net.createServer();
    srv.listen(0, "127.0.0.1");
    await once(srv, "listening");
    const { port } = srv.address();
    srv.close();
    await once(srv, "close");
    if (!handedOut.has(port)) {
      handedOut.add(port);
      return port;
    }
  }
  throw new Error("no free port found");
}

/*
 * Calls check() whenever notify() is called (and once at the start) until it
 * returns something truthy, and resolves to that; rejects at the deadline
 * with `what` (a string or a function returning one).
 */
class Waiters {
  #list = new Set();

  notify() {
    for (const w of this.#list) {
      w.poll();
    }
  }

  until(check, timeoutMs, what) {
    return new Promise((resolve, reject) => {
      const w = {
        poll: () => {
          let value;
          try {
            value = check();
          } catch (err) {
            finish();
            reject(err);
            return;
          }
          if (value) {
            finish();
            resolve(value);
          }
        },
      };
      const timer = setTimeout(() => {
        finish();
        const text = typeof what === "function" ? what() : what;
        reject(new Error(`timed out after ${timeoutMs} ms waiting for ${text}`));
      }, timeoutMs);
      const finish = () => {
        clearTimeout(timer);
        this.#list.delete(w);
      };
      this.#list.add(w);
      w.poll();
    });
  }
}

/* A running `qraftd --dev` on its own ports and temporary data dir. */
class DevNode {
  dir = mkdtempSync(path.join(os.tmpdir(), "qraft-sdk-"));
  env = {};
  proc = null;
  exited = null; // { code, signal } once the process is gone
  #stdout = "";
  #stderr = "";
  #waiters = new Waiters();

  async start() {
    const [rpc, httpPort, raft] =
      [await freePort(), await freePort(), await freePort()];
    this.proc = spawn(qraftd, [
      "--dev", "--data", path.join(this.dir, "data"),
      "--rpc", `127.0.0.1:${rpc}`,
      "--http", `127.0.0.1:${httpPort}`,
      "--raft", `127.0.0.1:${raft}`,
    ], { cwd: this.dir, env: childEnv, stdio: ["ignore", "pipe", "pipe"] });
    this.proc.stdout.setEncoding("utf8");
    this.proc.stderr.setEncoding("utf8");
    this.proc.stdout.on("data", (chunk) => {
      this.#stdout += chunk;
      this.#waiters.notify();
    });
    this.proc.stderr.on("data", (chunk) => {
      // Keep the tail only: enough to explain a failure.
      this.#stderr = (this.#stderr + chunk).slice(-8192);
    });
    this.proc.on("exit", (code, signal) => {
      this.exited = { code, signal };
      this.#waiters.notify();
    });
    this.proc.on("error", (err) => {
      this.exited = { code: null, signal: null, error: err };
      this.#waiters.notify();
    });

    await this.#waiters.until(() => {
      if (this.exited) {
        throw new Error(`qraftd exited while starting ` +
          `(${JSON.stringify(this.exited)})${this.logHint()}`);
      }
      return /^QRAFT_ENDPOINTS=.+$/m.test(this.#stdout);
    }, START_TIMEOUT, () => `qraftd to print QRAFT_ENDPOINTS${this.logHint()}`);

    for (const line of this.#stdout.split("\n")) {
      const m = /^([A-Z_]+)=(.*)$/.exec(line);
      if (m) {
        this.env[m[1]] = m[2];
      }
    }
    for (const key of ["QSTASH_TOKEN", "QSTASH_CURRENT_SIGNING_KEY",
      "QSTASH_NEXT_SIGNING_KEY", "QRAFT_ENDPOINTS"]) {
      assert.ok(this.env[key], `qraftd printed no ${key}:\n${this.#stdout}`);
    }
  }

  /* Runs `qraft --endpoints E --token T args...`; resolves to its stdout. */
  cli(...args) {
    const argv = ["--endpoints", this.env.QRAFT_ENDPOINTS,
      "--token", this.env.QSTASH_TOKEN, ...args];
    return new Promise((resolve, reject) => {
      execFile(qraft, argv, { env: childEnv, timeout: CLI_TIMEOUT },
        (err, stdout, stderr) => {
          if (err) {
            reject(new Error(`qraft ${args.join(" ")} failed ` +
              `(${err.code ?? err.signal}): ${stderr}${this.logHint()}`));
            return;
          }
          resolve(stdout);
        });
    });
  }

  /* SIGTERM, then SIGKILL if it has not exited by the deadline. */
  async stop() {
    if (!this.proc || this.exited) {
      return;
    }
    const gone = once(this.proc, "exit");
    this.proc.kill("SIGTERM");
    let timer;
    const late = new Promise((resolve) => {
      timer = setTimeout(() => resolve("late"), STOP_TIMEOUT);
    });
    if (await Promise.race([gone, late]) === "late") {
      this.proc.kill("SIGKILL");
      await gone;
    }
    clearTimeout(timer);
  }

  /* Last resort from process "exit": nothing asynchronous runs there. */
  killNow() {
    if (this.proc && !this.exited) {
      this.proc.kill("SIGKILL");
    }
  }

  removeDir() {
    rmSync(this.dir, { recursive: true, force: true });
  }

  logHint() {
    return this.#stderr ? `\n--- qraftd stderr (tail) ---\n${this.#stderr}` : "";
  }
}

/*
 * An app on 127.0.0.1 that records every request (method, url, headers,
 * body as a UTF-8 string) and answers the status that script(path, n) names
 * for the n-th request (from 0) on a path; 200 by default.
 */
class Sink {
  requests = [];
  #waiters = new Waiters();
  #scripts = new Map();
  #server = http.createServer((req, res) => {
    const chunks = [];
    req.on("data", (c) => chunks.push(c));
    req.on("end", () => {
      const pathname = req.url.split("?")[0];
      const n = this.requests.filter((r) => r.path === pathname).length;
      const script = this.#scripts.get(pathname);
      const status = script ? script(n) : 200;
      res.writeHead(status, { "Content-Type": "text/plain" });
      res.end(status === 200 ? "ok" : "try again");
      this.requests.push({
        method: req.method,
        url: req.url,
        path: pathname,
        headers: req.headers,
        body: Buffer.concat(chunks).toString("utf8"),
      });
      this.#waiters.notify();
    });
  });

  async start() {
    this.#server.listen(0, "127.0.0.1");
    await once(this.#server, "listening");
    this.port = this.#server.address().port;
  }

  /* The URL an app at path (with its query) is called at. */
  url(pathAndQuery) {
    return `http://127.0.0.1:${this.port}${pathAndQuery}`;
  }

  script(pathname, fn) {
    this.#scripts.set(pathname, fn);
  }

  /* Resolves to the first n requests on pathname once they arrived. */
  received(pathname, n = 1) {
    return this.#waiters.until(() => {
      const got = this.requests.filter((r) => r.path === pathname);
      return got.length >= n ? got.slice(0, n) : null;
    }, DELIVERY_TIMEOUT, () => `${n} request(s) on ${pathname} (have ` +
      `${this.requests.filter((r) => r.path === pathname).length})`);
  }

  async close() {
    if (!this.#server.listening) {
      return;
    }
    this.#server.closeAllConnections();
    this.#server.close();
    await once(this.#server, "close");
  }
}

const node = new DevNode();
const sink = new Sink();
process.on("exit", () => node.killNow());

let receiver;

before(async () => {
  await sink.start();
  await node.start();
  receiver = new Receiver({
    currentSigningKey: node.env.QSTASH_CURRENT_SIGNING_KEY,
    nextSigningKey: node.env.QSTASH_NEXT_SIGNING_KEY,
    devMode: false,
  });
});

after(async () => {
  try {
    await node.stop();
  } finally {
    try {
      await sink.close();
    } finally {
      node.removeDir();
    }
  }
});

/* Publishes body to the sink at pathAndQuery; resolves to the message id. */
async function publish(pathAndQuery, body, ...extra) {
  const out = await node.cli("publish", sink.url(pathAndQuery),
    "--body", body, "--header", "Content-Type: application/json", ...extra);
  const id = out.trim();
  assert.match(id, /^\S+$/, `publish printed no single id: ${out}`);
  return id;
}

/* What an app does with a delivery: verify it as it was received. */
function verify(req, overrides = {}) {
  return receiver.verify({
    signature: req.headers["upstash-signature"],
    body: req.body,
    url: sink.url(req.url),
    ...overrides,
  });
}

function claims(req) {
  const [, payload] = req.headers["upstash-signature"].split(".");
  return JSON.parse(Buffer.from(payload, "base64url").toString("utf8"));
}

async function rejects(promise, pattern) {
  await assert.rejects(promise, (err) => {
    assert.ok(err instanceof SignatureError,
      `want SignatureError, got ${err?.name}: ${err?.message}`);
    assert.match(err.message, pattern);
    return true;
  });
}

describe("deliveries from qraftd pass the official Receiver", () => {
  test("JSON body; message id from publish is Upstash-Message-Id",
    async () => {
      const body = '{"hello":"world","n":[1,2,3]}';
      const id = await publish("/json", body);
      const [req] = await sink.received("/json");

      assert.equal(req.method, "POST");
      assert.equal(req.url, "/json");
      assert.equal(req.body, body);
      assert.equal(req.headers["content-type"], "application/json");
      assert.equal(req.headers["upstash-message-id"], id);
      assert.equal(req.headers["upstash-retried"], "0");
      assert.equal(req.headers["user-agent"], "Upstash-QStash");
      assert.equal(await verify(req), true);
    });

  test("signature claims are Upstash's", async () => {
    const [req] = await sink.received("/json");
    const c = claims(req);
    assert.equal(c.iss, "Upstash");
    assert.equal(c.sub, sink.url("/json"));
    assert.equal(c.nbf, 0);
    assert.equal(c.exp - c.iat, 300);
    assert.ok(Math.abs(c.iat - Date.now() / 1000) < 120,
      `iat ${c.iat} is far from now`);
    assert.equal(typeof c.jti, "string");
    assert.ok(c.jti.length > 0);
  });

  test("unicode body", async () => {
    const body = JSON.stringify({
      text: "h\u00e9llo w\u00f6rld \u4e16\u754c \u{1f680} \u00df\u2603",
    });
    await publish("/unicode", body);
    const [req] = await sink.received("/unicode");
    assert.equal(req.body, body);
    assert.equal(await verify(req), true);
  });

  test("URL with a query string", async () => {
    const target = "/query?a=1&b=x%20y&c=%C3%A9&d=&e=1%2B1";
    await publish(target, '{"q":true}');
    const [req] = await sink.received("/query");
    assert.equal(req.url, target);
    assert.equal(claims(req).sub, sink.url(target));
    assert.equal(await verify(req), true);
  });

  test("retried delivery: both attempts verify, same message id",
    async () => {
      sink.script("/retry", (n) => (n === 0 ? 500 : 200));
      const body = '{"retry":"me"}';
      const id = await publish("/retry", body, "--retry-delay", "200");
      const [first, second] = await sink.received("/retry", 2);

      assert.equal(first.headers["upstash-retried"], "0");
      assert.equal(second.headers["upstash-retried"], "1");
      assert.equal(first.headers["upstash-message-id"], id);
      assert.equal(second.headers["upstash-message-id"], id);
      assert.equal(second.body, body);
      assert.equal(await verify(first), true);
      assert.equal(await verify(second), true);
      assert.notEqual(claims(first).jti, claims(second).jti);
    });

  test("a different body fails verification", async () => {
    const [req] = await sink.received("/json");
    await rejects(verify(req, { body: req.body + " " }),
      /body hash does not match/);
    await rejects(verify(req, { body: '{"hello":"World","n":[1,2,3]}' }),
      /body hash does not match/);
  });

  test("a different URL fails verification", async () => {
    const [req] = await sink.received("/query");
    await rejects(verify(req, { url: sink.url("/query") }),
      /invalid subject/);
    await rejects(verify(req, { url: sink.url("/json") }),
      /invalid subject/);
    await rejects(
      verify(req, { url: `http://localhost:${sink.port}${req.url}` }),
      /invalid subject/);
  });
});
