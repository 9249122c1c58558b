// What every tests/sdk/*.test.mjs needs around the official SDK: real
// qraftd processes (a `--dev` node, or an N-node cluster), an app that
// records the deliveries it gets, free ports and deadline waits.
//
// Importing this module first also removes the QSTASH_* variables that would
// make the SDK ignore the configured base URL, token and signing keys
// (QSTASH_DEV swaps in Upstash's dev server and keys, QSTASH_REGION other
// keys), so test files import the SDK dynamically after it:
//
//   import { DevNode, Sink } from "./harness.mjs";
//   const { Client, Receiver } = await import("@upstash/qstash");
//
// (withDevNode, below, imports it the same way, after the clean-up.)
//
// QRAFT_BIN names the build's bin directory (qraftd and qraft).
import assert from "node:assert/strict";
import { execFile, spawn } from "node:child_process";
import { once } from "node:events";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import http from "node:http";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { after, before } from "node:test";

import { waitFor } from "../lib/wait.mjs";

for (const name of Object.keys(process.env)) {
  if (name === "QSTASH_DEV" || name === "QSTASH_REGION" ||
      name === "QSTASH_URL" || name === "QSTASH_TOKEN" ||
      name.endsWith("QSTASH_CURRENT_SIGNING_KEY") ||
      name.endsWith("QSTASH_NEXT_SIGNING_KEY")) {
    delete process.env[name];
  }
}

const { Client, Receiver } = await import("@upstash/qstash");

const bin = process.env.QRAFT_BIN;
assert.ok(bin, "QRAFT_BIN must name the build's bin directory");
export const qraftd = path.resolve(bin, "qraftd");
export const qraft = path.resolve(bin, "qraft");
for (const file of [qraftd, qraft]) {
  assert.ok(existsSync(file), `${file} not found: build qraft first`);
}

// Deadlines, in milliseconds.
export const START_TIMEOUT = 30_000;
export const STOP_TIMEOUT = 10_000;
export const CLI_TIMEOUT = 30_000;
export const WAIT_TIMEOUT = 20_000;

// The developer's QRAFT_* and QSTASH_* settings must not reach the node or
// the CLI.
export const childEnv = Object.fromEntries(Object.entries(process.env).filter(
  ([k]) => !k.startsWith("QRAFT_") && !k.includes("QSTASH_")));

const handedOut = new Set();

/* A loopback TCP port nobody listens on now, not handed out before. */
export async function freePort() {
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

// waitFor(check, what, timeoutMs = WAIT_TIMEOUT): polls until check() is
// truthy (tests/lib/wait.mjs).
export { waitFor };

/*
 * Calls check() whenever notify() is called (and once at the start) until it
 * returns something truthy, and resolves to that; rejects at the deadline
 * with `what` (a string or a function returning one).
 */
export class Waiters {
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

/* Runs `qraft --endpoints E --token T args...`; resolves to its stdout. */
function runCli(endpoints, token, args, hint) {
  const argv = ["--endpoints", endpoints, "--token", token, ...args];
  return new Promise((resolve, reject) => {
    execFile(qraft, argv, { env: childEnv, timeout: CLI_TIMEOUT },
      (err, stdout, stderr) => {
        if (err) {
          reject(new Error(`qraft ${args.join(" ")} failed ` +
            `(${err.code ?? err.signal}): ${stderr}${hint()}`));
          return;
        }
        resolve(stdout);
      });
  });
}

/*
 * One qraftd process with its own ports and data dir. Subclasses give the
 * command line (args()) and say when it serves (started()).
 */
class Process {
  dir = mkdtempSync(path.join(os.tmpdir(), "qraft-sdk-"));
  proc = null;
  exited = null; // { code, signal } once the process is gone
  stdout = "";
  #stderr = "";
  waiters = new Waiters();

  async ports() {
    if (!this.rpcAddr) {
      this.rpcAddr = `127.0.0.1:${await freePort()}`;
      this.httpAddr = `127.0.0.1:${await freePort()}`;
      this.raftAddr = `127.0.0.1:${await freePort()}`;
    }
  }

  spawn(args) {
    this.exited = null;
    this.stdout = "";
    this.proc = spawn(qraftd, args,
      { cwd: this.dir, env: childEnv, stdio: ["ignore", "pipe", "pipe"] });
    this.proc.stdout.setEncoding("utf8");
    this.proc.stderr.setEncoding("utf8");
    this.proc.stdout.on("data", (chunk) => {
      this.stdout += chunk;
      this.waiters.notify();
    });
    this.proc.stderr.on("data", (chunk) => {
      // Keep the tail only: enough to explain a failure.
      this.#stderr = (this.#stderr + chunk).slice(-8192);
    });
    this.proc.on("exit", (code, signal) => {
      this.exited = { code, signal };
      this.waiters.notify();
    });
    this.proc.on("error", (err) => {
      this.exited = { code: null, signal: null, error: err };
      this.waiters.notify();
    });
    process.on("exit", () => this.killNow());
  }

  get running() {
    return this.proc !== null && this.exited === null;
  }

  /* SIGTERM, then SIGKILL if it has not exited by the deadline. */
  async stop() {
    if (!this.running) {
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

  async kill9() {
    if (!this.running) {
      return;
    }
    const gone = once(this.proc, "exit");
    this.proc.kill("SIGKILL");
    await gone;
  }

  /* Last resort from process "exit": nothing asynchronous runs there. */
  killNow() {
    if (this.running) {
      this.proc.kill("SIGKILL");
    }
  }

  removeDir() {
    rmSync(this.dir, { recursive: true, force: true });
  }

  /* The stderr tail and, once it is gone, how the process ended (a crash
   * logs nothing: its signal says it). */
  logHint() {
    const tail = this.#stderr
      ? `\n--- qraftd stderr (tail) ---\n${this.#stderr}` : "";
    const exit = this.exited
      ? `\n--- qraftd exited: ${JSON.stringify(this.exited)} ---` : "";
    return tail + exit;
  }
}

/* A running `qraftd --dev`; env holds the QSTASH_* and QRAFT_* lines it
 * printed for the developer's env file. */
export class DevNode extends Process {
  env = {};

  /* extraArgs: more qraftd flags (e.g. limits); token: the API token
   * (--token) instead of the one --dev generates. */
  constructor(extraArgs = [], { token } = {}) {
    super();
    this.extraArgs = token ? ["--token", token, ...extraArgs] : extraArgs;
  }

  async start() {
    await this.ports();
    this.spawn(["--dev", "--data", path.join(this.dir, "data"),
      "--rpc", this.rpcAddr, "--http", this.httpAddr,
      "--raft", this.raftAddr, ...this.extraArgs]);
    await this.waiters.until(() => {
      if (this.exited) {
        throw new Error(`qraftd exited while starting ` +
          `(${JSON.stringify(this.exited)})${this.logHint()}`);
      }
      return /^QRAFT_ENDPOINTS=.+$/m.test(this.stdout);
    }, START_TIMEOUT, () => `qraftd to print QRAFT_ENDPOINTS${this.logHint()}`);

    for (const line of this.stdout.split("\n")) {
      const m = /^([A-Z_]+)=(.*)$/.exec(line);
      if (m) {
        this.env[m[1]] = m[2];
      }
    }
    for (const key of ["QSTASH_URL", "QSTASH_TOKEN",
      "QSTASH_CURRENT_SIGNING_KEY", "QSTASH_NEXT_SIGNING_KEY",
      "QRAFT_ENDPOINTS"]) {
      assert.ok(this.env[key], `qraftd printed no ${key}:\n${this.stdout}`);
    }
  }

  cli(...args) {
    return runCli(this.env.QRAFT_ENDPOINTS, this.env.QSTASH_TOKEN, args,
      () => this.logHint());
  }
}

/* One member of a Cluster: `qraftd --id N --peers ...`. */
export class ClusterNode extends Process {
  constructor(id, cluster) {
    super();
    this.id = id;
    this.cluster = cluster;
  }

  get url() {
    return `http://${this.httpAddr}`;
  }

  start() {
    this.spawn(["--id", String(this.id), "--peers", this.cluster.peers,
      "--data", path.join(this.dir, "data"), "--raft", this.raftAddr,
      "--rpc", this.rpcAddr, "--http", this.httpAddr,
      "--token", this.cluster.token, ...this.cluster.extraArgs]);
  }

  /* Resolves once GET /readyz answers 200: a leader is known, this node
   * has applied what is committed, and it has the signing keys. */
  async serving() {
    await waitFor(async () => {
      if (this.exited) {
        throw new Error(`node ${this.id} exited ` +
          `(${JSON.stringify(this.exited)})${this.logHint()}`);
      }
      try {
        return (await fetch(`${this.url}/readyz`)).status === 200;
      } catch {
        return false;
      }
    }, () => `node ${this.id} to serve${this.logHint()}`, START_TIMEOUT);
  }

  /* This node's own `qraft status --local --json`. */
  async status() {
    return JSON.parse(await runCli(this.rpcAddr, this.cluster.token,
      ["status", "--local", "--json"], () => this.logHint()));
  }
}

/* n ClusterNodes (ids 1..n) on loopback sharing one token. */
export class Cluster {
  /* extraArgs: more qraftd flags, for every node; token: the API token
   * they share (a made-up one by default). */
  constructor(n = 3, extraArgs = [], { token } = {}) {
    this.extraArgs = extraArgs;
    this.token = token ?? `sdk-cluster-token-${process.pid}`;
    this.nodes = Array.from({ length: n }, (_, i) => new ClusterNode(i + 1,
      this));
  }

  get peers() {
    return this.nodes.map((n) => `${n.id}@${n.raftAddr}`).join(",");
  }

  get endpoints() {
    return this.nodes.map((n) => n.rpcAddr).join(",");
  }

  /* Starts every node at once (an election needs a majority), then waits
   * until each serves. */
  async start() {
    for (const n of this.nodes) {
      await n.ports();
    }
    for (const n of this.nodes) {
      n.start();
    }
    for (const n of this.nodes) {
      await n.serving();
    }
  }

  /* Resolves to the node every live node names as leader, once they agree
   * and it says it leads. */
  async leader() {
    return waitFor(async () => {
      const live = this.nodes.filter((n) => n.running);
      let statuses;
      try {
        statuses = await Promise.all(live.map((n) => n.status()));
      } catch {
        return null;
      }
      const ids = new Set(statuses.map((s) => s.leader_id));
      if (ids.size !== 1) {
        return null;
      }
      const id = [...ids][0];
      const i = live.findIndex((n) => n.id === id);
      return i >= 0 && statuses[i].state === "leader" ? live[i] : null;
    }, "the live nodes to agree on a leader", START_TIMEOUT);
  }

  cli(...args) {
    return runCli(this.endpoints, this.token, args, () => "");
  }

  async stop() {
    await Promise.all(this.nodes.map((n) => n.stop()));
  }

  removeDirs() {
    for (const n of this.nodes) {
      n.removeDir();
    }
  }
}

/*
 * A follower of a 3-node cluster dressed as a DevNode: env holds what a
 * `--dev` node prints (QSTASH_URL is the follower's HTTP API, the signing
 * keys come from its GET /v2/keys, QRAFT_ENDPOINTS is its RPC address
 * alone) and cli() talks to that follower only. withDevNode uses it when
 * QRAFT_SDK_VIA=follower, so every suite written for one node runs through
 * a node that forwards its writes, with no retries around reads-after-
 * writes (reads are linearizable on every node).
 */
export class FollowerNode {
  env = {};

  constructor(extraArgs = [], options = {}) {
    this.cluster = new Cluster(3, extraArgs, options);
  }

  async start() {
    await this.cluster.start();
    const leader = await this.cluster.leader();
    this.node = this.cluster.nodes.find((n) => n !== leader);
    // A --dev node is at its full feature level once it serves; a cluster
    // once the leader has seen every member's level (its next tick).
    await waitFor(async () => {
      const s = await leader.status();
      const levels = (s.nodes ?? []).map((n) => n.feature_level);
      return levels.length === this.cluster.nodes.length &&
        levels.every((l) => l > 0) && s.feature_level >= Math.min(...levels);
    }, "the cluster's feature level to rise", START_TIMEOUT);
    const res = await fetch(`${this.node.url}/v2/keys`, {
      headers: { Authorization: `Bearer ${this.cluster.token}` },
    });
    assert.equal(res.status, 200, "GET /v2/keys on the follower");
    const keys = await res.json();
    this.env = {
      QSTASH_URL: this.node.url,
      QSTASH_TOKEN: this.cluster.token,
      QSTASH_CURRENT_SIGNING_KEY: keys.current,
      QSTASH_NEXT_SIGNING_KEY: keys.next,
      QRAFT_ENDPOINTS: this.node.rpcAddr,
    };
  }

  cli(...args) {
    return runCli(this.node.rpcAddr, this.cluster.token, args,
      () => this.logHint());
  }

  async stop() {
    await this.cluster.stop();
  }

  removeDir() {
    this.cluster.removeDirs();
  }

  logHint() {
    return this.cluster.nodes.map((n) => n.logHint()).join("");
  }
}

/* Where withDevNode's suites run: "follower" (QRAFT_SDK_VIA=follower) or
 * "dev" (the default). */
export const sdkVia = process.env.QRAFT_SDK_VIA === "follower"
  ? "follower" : "dev";

/*
 * An app on 127.0.0.1 that records every request (method, url, path,
 * headers, body as a UTF-8 string) and answers what script(path)(n) names
 * for the n-th request (from 0) on a path: a status (body "ok" for 200,
 * else "try again") or {status, body}; 200 by default.
 */
export class Sink {
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
      const answer = script ? script(n) : 200;
      const { status, body } = typeof answer === "number"
        ? { status: answer, body: answer === 200 ? "ok" : "try again" }
        : answer;
      res.writeHead(status, { "Content-Type": "text/plain" });
      res.end(body);
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
    this.base = this.url("");
  }

  /* The URL an app at path (with its query) is called at. */
  url(pathAndQuery) {
    return `http://127.0.0.1:${this.port}${pathAndQuery}`;
  }

  script(pathname, fn) {
    this.#scripts.set(pathname, fn);
  }

  /* The requests on pathname so far. */
  on(pathname) {
    return this.requests.filter((r) => r.path === pathname);
  }

  /* Resolves to the first n requests on pathname once they arrived. */
  received(pathname, n = 1, timeoutMs = WAIT_TIMEOUT) {
    return this.#waiters.until(() => {
      const got = this.on(pathname);
      return got.length >= n ? got.slice(0, n) : null;
    }, timeoutMs, () => `${n} request(s) on ${pathname} (have ` +
      `${this.on(pathname).length})`);
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

/*
 * The setup an SDK test file against one `qraftd --dev` (or, with
 * QRAFT_SDK_VIA=follower, a follower of a 3-node cluster) shares. Registers
 * node:test before/after hooks where it is called (at file level, or in a
 * describe for that suite) and returns dev = { node, app, client, receiver }:
 * node and app at once, client and receiver once the before hook ran.
 *
 * before: starts the node (nodeArgs: more qraftd flags; token: its API
 * token, e.g. the base64 JSON {"UserID"} that the workflow SDK's
 * createWebhook reads, instead of a generated one), then the app (any
 * object with start() and close(); a new Sink by default), sets dev.client
 * (an SDK Client for the node's QSTASH_URL and token, SDK retries off) and
 * dev.receiver (a Receiver with the node's signing keys, dev mode off), then
 * awaits ready(dev) when given (e.g. a wait for a feature level).
 * after: stops the node, closes the app, removes the node's directory; each
 * step runs even if the one before it failed.
 */
export function withDevNode({ app = new Sink(), nodeArgs = [], token,
  ready } = {}) {
  const node = sdkVia === "follower" ? new FollowerNode(nodeArgs, { token })
    : new DevNode(nodeArgs, { token });
  const dev = { node, app, client: null, receiver: null };
  before(async () => {
    await dev.node.start();
    await app.start();
    dev.client = new Client({ baseUrl: dev.node.env.QSTASH_URL,
      token: dev.node.env.QSTASH_TOKEN, retry: false });
    dev.receiver = new Receiver({
      currentSigningKey: dev.node.env.QSTASH_CURRENT_SIGNING_KEY,
      nextSigningKey: dev.node.env.QSTASH_NEXT_SIGNING_KEY,
      devMode: false,
    });
    if (ready) {
      await ready(dev);
    }
  });
  after(async () => {
    try {
      await dev.node.stop();
    } finally {
      try {
        await app.close();
      } finally {
        dev.node.removeDir();
      }
    }
  });
  return dev;
}
