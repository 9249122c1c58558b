// Deliveries made by a real `qraftd --dev` must pass the official
// @upstash/qstash Receiver exactly as an app would call it: the signature
// header, the raw body as received, and the full URL the app was called at.
// A body or URL other than the delivered one must fail with SignatureError.
//
// QRAFT_BIN names the build's bin directory (it holds qraftd and qraft).
import assert from "node:assert/strict";
import { describe, test } from "node:test";

import { withDevNode } from "./harness.mjs";

const { SignatureError } = await import("@upstash/qstash");

const dev = withDevNode();
const { node, app: sink } = dev;

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
  return dev.receiver.verify({
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
