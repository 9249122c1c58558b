// Tokens made by qraft's signer (node/sign.c, through qraft-sign-tool) must
// pass the official @upstash/qstash Receiver, and tokens that do not match
// the key, body, URL or time must fail it with SignatureError.
//
// QRAFT_BIN names the build's bin directory (it holds qraft-sign-tool).
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import path from "node:path";
import { describe, test } from "node:test";

// The Receiver reads these at verify time: QSTASH_DEV would swap our keys
// for the SDK's dev-server keys, QSTASH_REGION (and the key variables) would
// bring in keys other than the ones each test passes.
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
const tool = path.resolve(bin, "qraft-sign-tool");
assert.ok(existsSync(tool), `${tool} not found: build target qraft_sign_tool`);

function run(args, input) {
  const r = spawnSync(tool, args, { input, timeout: 10_000 });
  assert.equal(r.status, 0,
    `qraft-sign-tool ${args.join(" ")} failed: ${r.stderr}`);
  return r.stdout.toString("utf8").trimEnd();
}

function newKey() {
  return run(["--new-key"], Buffer.alloc(0));
}

/* A token from our signer for key, url and body (a string, sent as UTF-8). */
function sign(key, url, body, nowS = Math.floor(Date.now() / 1000)) {
  return run([key, url, String(nowS)], Buffer.from(body, "utf8"));
}

const current = newKey();
const next = newKey();
const receiver = new Receiver({
  currentSigningKey: current,
  nextSigningKey: next,
  devMode: false,
});
const url = "https://sink.example/hook?attempt=1&name=a%20b";

async function rejects(promise, pattern) {
  await assert.rejects(promise, (err) => {
    assert.ok(err instanceof SignatureError,
      `want SignatureError, got ${err?.name}: ${err?.message}`);
    if (pattern) {
      assert.match(err.message, pattern);
    }
    return true;
  });
}

describe("Receiver.verify accepts qraft signatures", () => {
  test("keys look like Upstash's", () => {
    assert.match(current, /^sig_[1-9A-HJ-NP-Za-km-z]{28}$/);
    assert.notEqual(current, next);
  });

  test("signed with the current key", async () => {
    const body = '{"hello":"world"}';
    const signature = sign(current, url, body);
    assert.equal(await receiver.verify({ signature, body, url }), true);
  });

  test("signed with the next key (after a rotation)", async () => {
    const body = "rotated";
    const signature = sign(next, url, body);
    assert.equal(await receiver.verify({ signature, body, url }), true);
  });

  test("empty body", async () => {
    const signature = sign(current, url, "");
    assert.equal(await receiver.verify({ signature, body: "", url }), true);
  });

  test("unicode body is hashed as UTF-8", async () => {
    const body = "h\u00e9llo \u4e16\u754c \u{1f680} nul:\u0000 end";
    const signature = sign(current, url, body);
    assert.equal(await receiver.verify({ signature, body, url }), true);
  });

  test("large body", async () => {
    const body = "x".repeat(1 << 20);
    const signature = sign(current, url, body);
    assert.equal(await receiver.verify({ signature, body, url }), true);
  });

  test("URL with characters that JSON escapes", async () => {
    const odd = 'http://127.0.0.1:9/p?q="quoted"&b=back\\slash&u=\u00e9';
    const signature = sign(current, odd, "x");
    assert.equal(
      await receiver.verify({ signature, body: "x", url: odd }), true);
  });

  test("without a url the subject is not checked", async () => {
    const signature = sign(current, url, "x");
    assert.equal(await receiver.verify({ signature, body: "x" }), true);
  });

  test("nbf is 0: a receiver whose clock lags still accepts", async () => {
    const nowS = Math.floor(Date.now() / 1000);
    const signature = sign(current, url, "x", nowS + 120);
    assert.equal(await receiver.verify({ signature, body: "x", url }), true);
  });
});

describe("Receiver.verify rejects what does not match", () => {
  test("signed with an unrelated key", async () => {
    const signature = sign(newKey(), url, "x");
    await rejects(receiver.verify({ signature, body: "x", url }),
      /signature verification failed/);
  });

  test("body differs", async () => {
    const signature = sign(current, url, "x");
    await rejects(receiver.verify({ signature, body: "y", url }),
      /body hash does not match/);
  });

  test("url differs (query left out)", async () => {
    const signature = sign(current, url, "x");
    const other = url.slice(0, url.indexOf("?"));
    await rejects(receiver.verify({ signature, body: "x", url: other }),
      /invalid subject/);
  });

  test("expired: exp is iat + 300", async () => {
    // Both keys the same, so the error reported (from the second try) names
    // the cause instead of the next key's signature mismatch.
    const single = new Receiver({
      currentSigningKey: current,
      nextSigningKey: current,
      devMode: false,
    });
    const nowS = Math.floor(Date.now() / 1000);
    const signature = sign(current, url, "x", nowS - 301);
    await rejects(single.verify({ signature, body: "x", url }),
      /"exp" claim timestamp check failed/);
  });

  test("still valid well inside the 300 s window", async () => {
    const nowS = Math.floor(Date.now() / 1000);
    const signature = sign(current, url, "x", nowS - 200);
    assert.equal(await receiver.verify({ signature, body: "x", url }), true);
  });
});
