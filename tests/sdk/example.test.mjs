// examples/qstash-app.mjs, an app written for QStash, runs unchanged against
// a real `qraftd --dev` given only the four QSTASH_* lines the node prints:
// it publishes with the SDK's Client and verifies the delivery with its
// Receiver.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { copyFileSync, mkdtempSync, rmSync, symlinkSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { after, before, test } from "node:test";

import { DevNode } from "./harness.mjs";

const here = path.dirname(fileURLToPath(import.meta.url));
const app = path.resolve(here, "../../examples/qstash-app.mjs");

const node = new DevNode();

before(async () => {
  await node.start();
});

after(async () => {
  await node.stop();
  node.removeDir();
});

test("the example app publishes and verifies its delivery", async () => {
  // The example imports @upstash/qstash as an app would: run a copy next
  // to a node_modules that is tests/sdk's.
  const dir = mkdtempSync(path.join(os.tmpdir(), "qraft-example-"));
  copyFileSync(app, path.join(dir, "app.mjs"));
  symlinkSync(path.join(here, "node_modules"), path.join(dir, "node_modules"));
  const env = { PATH: process.env.PATH };
  for (const name of ["QSTASH_URL", "QSTASH_TOKEN",
    "QSTASH_CURRENT_SIGNING_KEY", "QSTASH_NEXT_SIGNING_KEY"]) {
    env[name] = node.env[name];
  }
  const out = await new Promise((resolve, reject) => {
    execFile(process.execPath, [path.join(dir, "app.mjs")],
      { env, timeout: 60_000 },
      (err, stdout, stderr) => {
        if (err) {
          reject(new Error(`the example failed (${err.code}): ${stderr}` +
            `${node.logHint()}`));
          return;
        }
        resolve(stdout);
      });
  });
  rmSync(dir, { recursive: true, force: true });
  assert.match(out, /^verified msg_\S+$/m);
});
