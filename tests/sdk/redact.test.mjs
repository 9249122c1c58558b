// Redaction with the official @upstash/qstash SDK against a real
// `qraftd --dev`: the SDK's `redact` option (Upstash-Redact-Fields) hides
// the body and headers from logs(), messages.get() and the DLQ, as the
// SDK's own tests (src/client/client.test.ts, "E2E Redact") expect of
// QStash, while the app receives them as published. A redacted value shows
// as "REDACTED:<sha256 hex>" (QStash docs, "Redact Private Data").
//
// QRAFT_BIN names the build's bin directory (it holds qraftd).
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { describe, test } from "node:test";

import { waitFor, withDevNode } from "./harness.mjs";

const placeholder = (v) =>
  `REDACTED:${createHash("sha256").update(v).digest("hex")}`;

describe("redaction with the official SDK", () => {
  // Redaction is feature level 6, which the node reaches at its first
  // tick after it serves.
  const dev = withDevNode({
    ready: ({ node }) => waitFor(async () => JSON.parse(
      await node.cli("status", "--local", "--json")).feature_level >= 6,
    "feature level 6"),
  });
  const { app } = dev;
  app.script("/dead", () => 500);

  /* Every log entry of id once `state` is among them. */
  async function logsUntil(id, state) {
    return waitFor(async () => {
      const page = await dev.client.logs({ filter: { messageId: id } });
      return page.logs.some((l) => l.state === state) && page.logs;
    }, `${id} ${state} in the logs`);
  }

  test("body and all headers: delivered real, never in logs()", async () => {
    const body = JSON.stringify({ password: "my-password-123" });
    const res = await dev.client.publishJSON({
      url: `${app.base}/all`,
      body: { password: "my-password-123" },
      headers: { "X-Custom-Secret": "header-secret-value" },
      redact: { body: true, header: true },
    });
    const [got] = await app.received("/all");
    assert.equal(got.body, body);
    assert.equal(got.headers["x-custom-secret"], "header-secret-value");
    const logs = await logsUntil(res.messageId, "DELIVERED");
    for (const log of logs) {
      assert.ok(!JSON.stringify(log).includes("my-password-123"), log);
      const values = Object.values(log.header ?? {}).flat().join(",");
      assert.ok(!values.includes("header-secret-value"), log);
    }
    const created = logs.find((l) => l.state === "CREATED");
    assert.deepEqual(created.header["X-Custom-Secret"],
      [placeholder("header-secret-value")]);
  });

  test("one header and the body: messages.get() and the DLQ", async () => {
    const res = await dev.client.publish({
      url: `${app.base}/dead`,
      body: "body-secret",
      headers: { Authorization: "Bearer token-to-redact",
        "X-Public-Header": "should-be-visible" },
      redact: { body: true, header: ["Authorization"] },
      retries: 0,
      delay: 1,
    });
    const msg = await dev.client.messages.get(res.messageId);
    assert.deepEqual(msg.header.Authorization,
      [placeholder("Bearer token-to-redact")]);
    assert.deepEqual(msg.header["X-Public-Header"], ["should-be-visible"]);
    assert.equal(msg.body, placeholder("body-secret"));

    const [got] = await app.received("/dead");
    assert.equal(got.body, "body-secret");
    assert.equal(got.headers.authorization, "Bearer token-to-redact");
    const dlq = await waitFor(async () => {
      const page = await dev.client.dlq.listMessages();
      return page.messages.find((m) => m.messageId === res.messageId);
    }, "the dead letter");
    assert.deepEqual(dlq.header.Authorization,
      [placeholder("Bearer token-to-redact")]);
    assert.equal(dlq.body, placeholder("body-secret"));
    assert.ok(!JSON.stringify(dlq).includes("token-to-redact"));
  });

  test("a bad redact spec is refused", async () => {
    await assert.rejects(dev.client.publish({
      url: `${app.base}/never`, body: "x",
      redact: { header: ["not a name"] },
    }), /Redact/);
    assert.equal(app.on("/never").length, 0);
  });
});
