// What tests/ui/*.test.mjs need: a `qraftd --dev` with a known token, an
// HTTP sink whose answers a test scripts, Debian's chromium driven by
// playwright-core (nothing downloaded), deadline waits, and a directory for
// screenshots.
//
// Environment: QRAFT_BIN (the build's bin directory, required),
// QRAFT_UI_ARTIFACTS (where screenshots go; default a temp directory),
// QRAFT_CHROMIUM (the browser; default /usr/bin/chromium).
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { once } from "node:events";
import { existsSync, mkdirSync, mkdtempSync, rmSync } from "node:fs";
import http from "node:http";
import net from "node:net";
import os from "node:os";
import path from "node:path";

import { chromium } from "playwright-core";

import { waitFor } from "../lib/wait.mjs";

export { waitFor };

const bin = process.env.QRAFT_BIN;
assert.ok(bin, "QRAFT_BIN must name the build's bin directory");
const qraftd = path.resolve(bin, "qraftd");
assert.ok(existsSync(qraftd), `${qraftd} not found: build qraft first`);

export const artifacts = process.env.QRAFT_UI_ARTIFACTS ||
  path.join(os.tmpdir(), "qraft-ui-artifacts");
mkdirSync(artifacts, { recursive: true });

async function freePort() {
  const srv = net.createServer().listen(0, "127.0.0.1");
  await once(srv, "listening");
  const { port } = srv.address();
  srv.close();
  await once(srv, "close");
  return port;
}

// One `qraftd --dev` in its own temp directory; url is its HTTP base.
export class DevNode {
  constructor(token) {
    this.token = token;
    this.dir = mkdtempSync(path.join(os.tmpdir(), "qraft-ui-"));
    this.stdout = "";
    this.stderr = "";
    this.exited = null;
  }

  async start() {
    const [rpc, httpPort, raft] = [await freePort(), await freePort(), await freePort()];
    this.url = `http://127.0.0.1:${httpPort}`;
    this.proc = spawn(qraftd, ["--dev", "--token", this.token,
      "--data", path.join(this.dir, "data"), "--rpc", `127.0.0.1:${rpc}`,
      "--http", `127.0.0.1:${httpPort}`, "--raft", `127.0.0.1:${raft}`],
    { cwd: this.dir, stdio: ["ignore", "pipe", "pipe"],
      env: Object.fromEntries(Object.entries(process.env)
        .filter(([k]) => !k.startsWith("QRAFT_") && !k.includes("QSTASH_"))) });
    this.proc.stdout.on("data", (c) => { this.stdout += c; });
    this.proc.stderr.on("data", (c) => { this.stderr = (this.stderr + c).slice(-8192); });
    this.proc.on("exit", (code, signal) => { this.exited = { code, signal }; });
    process.on("exit", () => this.proc.kill("SIGKILL"));
    await waitFor(() => {
      if (this.exited) {
        throw new Error(`qraftd exited while starting: ${JSON.stringify(this.exited)}\n${this.stderr}`);
      }
      return /^QRAFT_ENDPOINTS=/m.test(this.stdout);
    }, "qraftd --dev to print its settings");
  }

  // One REST call with the token; resolves to { status, json }.
  async api(method, pathAndQuery, { body, headers } = {}) {
    const res = await fetch(this.url + pathAndQuery, { method, body,
      headers: { Authorization: `Bearer ${this.token}`, ...(headers || {}) } });
    const text = await res.text();
    return { status: res.status, json: text ? JSON.parse(text) : null };
  }

  // SIGTERM; throws (with the stderr tail) unless it exits 0: a crash or a
  // sanitizer's report fails the suite.
  async stop() {
    if (this.exited === null) {
      const gone = once(this.proc, "exit");
      this.proc.kill("SIGTERM");
      await gone;
    }
    rmSync(this.dir, { recursive: true, force: true });
    if (this.exited.code !== 0) {
      throw new Error(`qraftd exited ${JSON.stringify(this.exited)}\n${this.stderr}`);
    }
  }
}

// A destination: script(path, fn) makes the nth request (from 0) on path
// answer fn(n) (a status); others answer 200. requests on a path are kept.
export class Sink {
  requests = [];
  #scripts = new Map();
  #server = http.createServer((req, res) => {
    req.resume();
    req.on("end", () => {
      const p = req.url.split("?")[0];
      const n = this.on(p).length;
      const script = this.#scripts.get(p);
      const status = script ? script(n) : 200;
      this.requests.push({ path: p, status });
      res.writeHead(status, { "Content-Type": "text/plain" });
      res.end(status === 200 ? "ok" : "no such thing here");
    });
  });

  async start() {
    this.#server.listen(0, "127.0.0.1");
    await once(this.#server, "listening");
    this.base = `http://127.0.0.1:${this.#server.address().port}`;
  }

  script(p, fn) {
    this.#scripts.set(p, fn);
  }

  on(p) {
    return this.requests.filter((r) => r.path === p);
  }

  async close() {
    this.#server.closeAllConnections();
    this.#server.close();
    await once(this.#server, "close");
  }
}

// Debian's chromium, headless, with a fresh profile (playwright takes it
// as the persistent context's directory, its --user-data-dir); nothing is
// downloaded. Resolves to { context, close() }; pages open at 1280x800.
export async function launchBrowser() {
  const profile = mkdtempSync(path.join(os.tmpdir(), "qraft-ui-profile-"));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.QRAFT_CHROMIUM || "/usr/bin/chromium",
    headless: true,
    viewport: { width: 1280, height: 800 },
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
      "--no-first-run", "--disable-background-networking",
      "--disable-component-update", "--disable-sync"],
  });
  return {
    context,
    async close() {
      await context.close();
      rmSync(profile, { recursive: true, force: true });
    },
  };
}

// Saves a screenshot of page as artifacts/<name>.png.
export async function shot(page, name) {
  await page.screenshot({ path: path.join(artifacts, `${name}.png`), fullPage: false });
}
