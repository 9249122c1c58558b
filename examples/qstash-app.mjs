// An app written for QStash, unchanged but for its environment: it serves a
// webhook, publishes a JSON message to it with the official SDK's Client,
// and verifies the delivery with the SDK's Receiver before trusting it.
//
// Run it against `qraftd --dev` (which prints these four lines) or a
// cluster (any node's --http address), next to an `npm install
// @upstash/qstash` (tests/sdk/example.test.mjs runs it so):
//
//   QSTASH_URL=http://127.0.0.1:8080 QSTASH_TOKEN=... \
//   QSTASH_CURRENT_SIGNING_KEY=sig_... QSTASH_NEXT_SIGNING_KEY=sig_... \
//   node examples/qstash-app.mjs
//
// It prints "verified <message id>" for the delivery and exits 0, or says
// what went wrong and exits 1.
import http from "node:http";
import { once } from "node:events";

import { Client, Receiver } from "@upstash/qstash";

const env = process.env;
for (const name of ["QSTASH_URL", "QSTASH_TOKEN",
  "QSTASH_CURRENT_SIGNING_KEY", "QSTASH_NEXT_SIGNING_KEY"]) {
  if (!env[name]) {
    console.error(`set ${name} (qraftd --dev prints it)`);
    process.exit(1);
  }
}

const client = new Client({ baseUrl: env.QSTASH_URL, token: env.QSTASH_TOKEN });
const receiver = new Receiver({
  currentSigningKey: env.QSTASH_CURRENT_SIGNING_KEY,
  nextSigningKey: env.QSTASH_NEXT_SIGNING_KEY,
});

// The webhook: answers 200 only to a request whose signature verifies, and
// settles `delivered` with the first one.
let settle;
const delivered = new Promise((resolve, reject) => {
  settle = { resolve, reject };
});
const server = http.createServer(async (req, res) => {
  const chunks = [];
  for await (const chunk of req) {
    chunks.push(chunk);
  }
  const body = Buffer.concat(chunks).toString("utf8");
  try {
    await receiver.verify({
      signature: req.headers["upstash-signature"],
      body,
      url: webhookUrl,
    });
  } catch (err) {
    res.writeHead(401).end();
    settle.reject(new Error(`a request failed verification: ${err.message}`));
    return;
  }
  res.writeHead(200).end("ok");
  settle.resolve({ id: req.headers["upstash-message-id"],
    body: JSON.parse(body) });
});
server.listen(0, "127.0.0.1");
await once(server, "listening");
const webhookUrl = `http://127.0.0.1:${server.address().port}/webhooks/order`;

const { messageId } = await client.publishJSON({
  url: webhookUrl,
  body: { order: 42, action: "send-receipt" },
  retries: 3,
});
const timeout = setTimeout(() => {
  console.error(`no verified delivery of ${messageId} within 30 s`);
  process.exit(1);
}, 30_000);
try {
  const got = await delivered;
  clearTimeout(timeout);
  if (got.id !== messageId || got.body.order !== 42) {
    throw new Error(`unexpected delivery ${JSON.stringify(got)}`);
  }
  console.log(`verified ${messageId}`);
  server.close();
} catch (err) {
  console.error(err.message);
  process.exit(1);
}
