// The official SDK over https: a `qraftd --dev` serving its HTTP API with a
// certificate from a private CA (made here with the openssl CLI), and the
// SDK's Client in a Node.js process that trusts that CA through
// NODE_EXTRA_CA_CERTS (read once, at process start: hence a child process).
// Without the CA the same publish fails on the certificate.
import assert from "node:assert/strict";
import { execFile, execFileSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { after, before, test } from "node:test";

import { childEnv, DevNode, Sink } from "./harness.mjs";

const here = path.dirname(fileURLToPath(import.meta.url));
const certs = mkdtempSync(path.join(os.tmpdir(), "qraft-sdk-tls-"));

function openssl(...args) {
  execFileSync("openssl", args, { cwd: certs, stdio: "pipe" });
}

/* ca.pem signs node.pem, a certificate for IP:127.0.0.1. */
function makeCerts() {
  openssl("req", "-x509", "-newkey", "ec", "-pkeyopt",
    "ec_paramgen_curve:P-256", "-nodes", "-keyout", "ca.key", "-out",
    "ca.pem", "-days", "2", "-subj", "/CN=qraft-sdk-test-ca");
  openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
    "-nodes", "-keyout", "node.key", "-out", "node.csr", "-subj", "/CN=node");
  writeFileSync(path.join(certs, "node.ext"),
    "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n");
  openssl("x509", "-req", "-in", "node.csr", "-CA", "ca.pem", "-CAkey",
    "ca.key", "-set_serial", "1", "-days", "2", "-extfile", "node.ext",
    "-out", "node.pem");
}

makeCerts();
const node = new DevNode(["--tls-cert", path.join(certs, "node.pem"),
  "--tls-key", path.join(certs, "node.key")]);
const app = new Sink();

before(async () => {
  await node.start();
  await app.start();
});

after(async () => {
  try {
    await node.stop();
  } finally {
    await app.close();
    node.removeDir();
    rmSync(certs, { recursive: true, force: true });
  }
});

// Publishes { hello: "tls" } to url with the SDK in a child process; resolves
// to { code, stdout, stderr }.
function publishFromChild(url, extraEnv) {
  const script = `
    const { Client } = await import("@upstash/qstash");
    const client = new Client({ baseUrl: process.env.QSTASH_URL,
      token: process.env.QSTASH_TOKEN, retry: false });
    const res = await client.publishJSON({ url: ${JSON.stringify(url)},
      body: { hello: "tls" } });
    console.log(res.messageId);
  `;
  const env = {
    ...childEnv,
    QSTASH_URL: node.env.QSTASH_URL,
    QSTASH_TOKEN: node.env.QSTASH_TOKEN,
    ...extraEnv,
  };
  return new Promise((resolve) => {
    execFile(process.execPath, ["--input-type=module", "-e", script],
      { cwd: here, env, timeout: 60_000 },
      (err, stdout, stderr) => {
        resolve({ code: err ? (err.code ?? err.signal) : 0, stdout, stderr });
      });
  });
}

test("the node announces an https QSTASH_URL", () => {
  assert.equal(node.env.QSTASH_URL, `https://${node.httpAddr}`);
});

test("the SDK publishes over https, trusting the CA via NODE_EXTRA_CA_CERTS",
  async () => {
    const res = await publishFromChild(app.url("/tls"),
      { NODE_EXTRA_CA_CERTS: path.join(certs, "ca.pem") });
    assert.equal(res.code, 0, `${res.stderr}${node.logHint()}`);
    assert.match(res.stdout, /^msg_\S+$/m);
    const [req] = await app.received("/tls");
    assert.deepEqual(JSON.parse(req.body), { hello: "tls" });
  });

test("without the CA the SDK refuses the node's certificate", async () => {
  const res = await publishFromChild(app.url("/untrusted"), {});
  assert.notEqual(res.code, 0);
  assert.match(res.stderr, /certificate|UNABLE_TO_VERIFY|SELF_SIGNED/i);
  assert.equal(app.on("/untrusted").length, 0);
});
