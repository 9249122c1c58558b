// The operator console in a real browser (Debian's chromium through
// playwright-core) against a real `qraftd --dev`: log in (a wrong token is
// refused visibly), find a dead-lettered message in the DLQ page, replay it
// by clicking (through the confirmation) and see the sink receive it, pause
// a schedule by clicking and check through the API that it is paused, and
// save a screenshot of every page at 1280x800 and a few at phone width;
// bulk replay by filter, a hostile body shown as text, a flow-control key
// paused, a workflow run cancelled, and a message's callback messages.
// The tests run in order on one page: the one that logs in leaves the tab
// logged in for the ones after it.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import { DevNode, Sink, launchBrowser, shot, waitFor } from "./harness.mjs";

const TOKEN = "ui-test-token-0123456789";
const node = new DevNode(TOKEN);
const sink = new Sink();
let browser;
let page;

before(async () => {
  await sink.start();
  await node.start();
  browser = await launchBrowser();
  page = await browser.context.newPage();
  page.setDefaultTimeout(15_000);
});

after(async () => {
  await browser?.close();
  await sink.close();
  await node.stop();
});

async function publish(pathOnSink, headers = {}) {
  const { status, json } = await node.api("POST", `/v2/publish/${sink.base}${pathOnSink}`,
    { body: "hello from the ui test", headers: { "Content-Type": "text/plain", ...headers } });
  assert.equal(status, 200, JSON.stringify(json));
  return json.messageId;
}

test("a wrong token is refused with the node's answer", async () => {
  await page.goto(`${node.url}/`);
  await page.getByLabel("API token").fill("not-the-token");
  await page.getByRole("button", { name: "Log in" }).click();
  await page.getByText("401").waitFor();
  assert.equal(await page.getByRole("navigation", { name: "Pages" }).isVisible(), false);
  await shot(page, "login-refused");
});

test("log in, find a dead letter, replay it by clicking; the sink gets it", async () => {
  // The first delivery is refused for good (404: client error), the
  // replay's is accepted.
  sink.script("/orders", (n) => (n === 0 ? 404 : 200));
  const id = await publish("/orders", { "Upstash-Retries": "0", "Upstash-Label": "ui-test" });
  await waitFor(async () => (await node.api("GET", `/v2/dlq/${id}`)).status === 200,
    `${id} to be dead-lettered`);

  await page.goto(`${node.url}/console/`);
  // By keyboard: type the token, Enter.
  await page.getByLabel("API token").fill(TOKEN);
  await page.getByLabel("API token").press("Enter");
  await page.getByRole("heading", { name: "Overview" }).waitFor();
  await page.getByText("DLQ size").waitFor();
  await page.getByText(/^Oldest overdue/).waitFor();
  // Latencies need two reads of /metrics half a second apart, and
  // something timed between them.
  // Refresh is pressed at most every 600 ms, so that one render is done
  // before the next starts.
  await publish("/timed");
  const publishRow = page.getByRole("row").filter({ hasText: "Publish (arrival to answer)" });
  let pressed = 0;
  await waitFor(async () => {
    if (await publishRow.getByText(/≤ [0-9.]+ ms/).count() > 0) {
      return true;
    }
    if (Date.now() - pressed > 600) {
      pressed = Date.now();
      await page.getByRole("button", { name: "Refresh" }).click();
    }
    return false;
  }, "the publish latency after a refresh");
  await shot(page, "overview");

  await page.getByRole("link", { name: "DLQ" }).click();
  await page.getByRole("heading", { name: "Dead-letter queue" }).waitFor();
  // The new page's heading has the focus.
  await page.waitForFunction(() => document.activeElement?.textContent === "Dead-letter queue");
  await page.getByRole("link", { name: id }).waitFor();
  await shot(page, "dlq");

  await page.getByRole("checkbox", { name: `Select ${id}` }).check();
  // Escape cancels the confirmation: nothing is replayed.
  await page.getByRole("button", { name: "Replay selected" }).click();
  const dialog = page.getByRole("dialog");
  await dialog.getByText("Replay 1 dead letter?").waitFor();
  await page.keyboard.press("Escape");
  await dialog.waitFor({ state: "detached" });
  assert.equal((await node.api("GET", `/v2/dlq/${id}`)).status, 200);

  await page.getByRole("button", { name: "Replay selected" }).click();
  await dialog.getByText("Replay 1 dead letter?").waitFor();
  await shot(page, "dlq-confirm");
  await dialog.getByRole("button", { name: "Replay 1" }).click();
  await page.getByText("Replayed 1 of 1 selected.").waitFor();

  await waitFor(() => sink.on("/orders").some((r) => r.status === 200),
    "the replayed message at the sink");
  assert.equal((await node.api("GET", `/v2/dlq/${id}`)).status, 404);

  // Its page tells the story: refused, then delivered.
  await page.getByRole("link", { name: "Messages" }).click();
  await page.getByRole("heading", { name: "Messages" }).waitFor();
  await page.getByRole("link", { name: id }).first().waitFor();
  await shot(page, "messages");
  await page.getByRole("link", { name: id }).first().click();
  await page.getByRole("heading", { name: "Timeline" }).waitFor();
  await waitFor(async () => {
    await page.reload();
    await page.getByRole("heading", { name: "Timeline" }).waitFor();
    return await page.getByText("DELIVERED", { exact: true }).count() > 0;
  }, "the message page to show the delivery");
  await page.getByText("FAILED", { exact: true }).first().waitFor();
  await shot(page, "message");
});

test("replay everything matching a filter, after a preview count", async () => {
  // Two letters labelled "batch" and one other; only the two are replayed.
  sink.script("/batch", (n) => (n < 2 ? 404 : 200));
  sink.script("/other", () => 404);
  const ids = [await publish("/batch", { "Upstash-Retries": "0", "Upstash-Label": "batch" }),
    await publish("/batch", { "Upstash-Retries": "0", "Upstash-Label": "batch" })];
  const other = await publish("/other", { "Upstash-Retries": "0" });
  for (const id of [...ids, other]) {
    await waitFor(async () => (await node.api("GET", `/v2/dlq/${id}`)).status === 200,
      `${id} to be dead-lettered`);
  }

  await page.getByRole("link", { name: "DLQ" }).click();
  await page.getByLabel("Label").fill("batch");
  await page.getByRole("button", { name: "Search" }).click();
  await page.getByRole("link", { name: other }).waitFor({ state: "detached" });
  await page.getByRole("button", { name: "Replay all matching…" }).click();
  const dialog = page.getByRole("dialog");
  await dialog.getByText("Replay 2 dead letters?").waitFor();
  await dialog.getByRole("button", { name: "Replay 2" }).click();
  await page.getByText("Replayed 2 dead letters.").waitFor();
  await waitFor(() => sink.on("/batch").filter((r) => r.status === 200).length === 2,
    "both replayed letters at the sink");
  assert.equal((await node.api("GET", `/v2/dlq/${other}`)).status, 200);
});

test("a hostile body is shown as text, never run; replay from its page", async () => {
  const hostile = "<img src=x onerror=\"window.pwned=1\"><script>window.pwned=2</script>";
  sink.script("/gone", () => 404);
  const { json } = await node.api("POST", `/v2/publish/${sink.base}/gone`,
    { body: hostile, headers: { "Content-Type": "text/html", "Upstash-Retries": "0" } });
  await waitFor(async () => (await node.api("GET", `/v2/dlq/${json.messageId}`)).status === 200,
    "the hostile message to be dead-lettered");
  await page.goto(`${node.url}/console/#/message/${json.messageId}`);
  await page.getByRole("heading", { name: "Body" }).waitFor();
  assert.equal(await page.locator("pre.body").first().textContent(), hostile);
  assert.equal(await page.evaluate(() => window.pwned), undefined);
  assert.equal(await page.locator("main img").count(), 0);

  // Its page replays it too.
  await page.getByRole("button", { name: "Replay" }).click();
  await page.getByRole("dialog").getByRole("button", { name: "Replay" }).click();
  await page.getByText(`Replayed ${json.messageId}.`).waitFor();
  await waitFor(() => sink.on("/gone").length === 2, "the replay at the sink");
});

test("a message's page lists its callback messages, which link back", async () => {
  const id = await publish("/with-callback", { "Upstash-Callback": `${sink.base}/callback` });
  let callback;
  await waitFor(async () => {
    const { json } = await node.api("GET", `/v2/logs?sourceMessageId=${id}&state=DELIVERED`);
    callback = json.logs?.[0]?.messageId;
    return callback !== undefined;
  }, "the callback message to be delivered");

  await page.goto(`${node.url}/console/#/message/${id}`);
  await page.getByRole("heading", { name: "Callback messages" }).waitFor();
  const row = page.getByRole("row").filter({ hasText: callback });
  await row.getByText("DELIVERED", { exact: true }).waitFor();
  await row.getByText(`${sink.base}/callback`).waitFor();
  await shot(page, "message-callbacks");
  await row.getByRole("link", { name: callback }).click();
  await page.getByRole("heading", { name: callback }).waitFor();
  await page.getByRole("link", { name: id }).click();
  await page.getByRole("heading", { name: id }).waitFor();
});

test("pause a schedule and create one by clicking; the API agrees", async () => {
  const { status, json } = await node.api("POST", `/v2/schedules/${sink.base}/nightly`,
    { headers: { "Upstash-Cron": "0 3 * * *", "Upstash-Schedule-Id": "nightly-report" } });
  assert.equal(status, 200, JSON.stringify(json));

  await page.getByRole("link", { name: "Schedules" }).click();
  await page.getByRole("heading", { name: "Schedules" }).waitFor();
  const row = page.getByRole("row").filter({ hasText: "nightly-report" });
  await row.getByRole("button", { name: "Pause" }).click();
  await row.getByRole("button", { name: "Resume" }).waitFor();
  const after = await node.api("GET", "/v2/schedules/nightly-report");
  assert.equal(after.json.isPaused, true);

  // And one created from the form.
  await page.getByLabel("Destination URL").fill(`${sink.base}/hourly`);
  // A bad cron says why before anything is created; a good one shows its
  // next five fire times, on the hour.
  await page.getByLabel(/^Cron/).fill("61 * * * *");
  await page.locator("#cron-preview").getByText(/Not a valid cron: 400: .*minute/).waitFor();
  await page.getByLabel(/^Cron/).fill("0 * * * *");
  const fires = page.locator("#cron-preview li");
  await fires.nth(4).waitFor();
  assert.equal(await fires.count(), 5);
  for (const text of await fires.allTextContents()) {
    assert.match(text, /^\d{4}-\d\d-\d\d \d\d:00:00 UTC$/);
  }
  // A cron in a zone shows its times there too.
  await page.getByLabel(/^Cron/).fill("CRON_TZ=America/New_York 0 4 * * *");
  await fires.first().getByText(/^\d{4}-\d\d-\d\d \d\d:00:00 UTC \(\d{4}-\d\d-\d\d 04:00 America\/New_York\)$/).waitFor();
  await page.getByLabel(/^Cron/).fill("0 * * * *");
  await fires.nth(4).getByText(/:00:00 UTC$/).waitFor();
  await page.getByLabel("Schedule id (optional)").fill("hourly-sync");
  await page.getByRole("button", { name: "Create schedule" }).click();
  await page.getByRole("row").filter({ hasText: "hourly-sync" }).waitFor();
  const made = await node.api("GET", "/v2/schedules/hourly-sync");
  assert.equal(made.status, 200);
  assert.equal(made.json.cron, "0 * * * *");
  assert.equal(made.json.destination, `${sink.base}/hourly`);
  await shot(page, "schedules");
});

test("pause a flow-control key and cancel a workflow run by clicking", async () => {
  // A delayed message keeps its key listed; a trigger the sink accepts
  // (no workflow SDK behind it) leaves its run running.
  await publish("/tenant", { "Upstash-Flow-Control-Key": "tenant-a",
    "Upstash-Flow-Control-Value": "parallelism=2", "Upstash-Delay": "1h" });
  await publish("/wf", { "Upstash-Workflow-RunId": "wfr_ui_1", "Upstash-Workflow-Init": "true" });

  await page.getByRole("link", { name: "Flow control" }).click();
  const key = page.getByRole("row").filter({ hasText: "tenant-a" });
  await key.getByRole("button", { name: "Pause" }).click();
  await key.getByRole("button", { name: "Resume" }).waitFor();
  assert.equal((await node.api("GET", "/v2/flowControl/tenant-a")).json.isPaused, true);
  await shot(page, "flow");

  await page.getByRole("link", { name: "Workflows" }).click();
  await page.getByRole("link", { name: "wfr_ui_1" }).click();
  await page.getByRole("heading", { name: "Steps" }).waitFor();
  await page.getByRole("button", { name: "Cancel run" }).click();
  await page.getByRole("dialog").getByRole("button", { name: "Cancel run" }).click();
  await page.getByText("RUN_CANCELED").waitFor();
  const runs = (await node.api("GET", "/v2/workflows/logs?workflowRunId=wfr_ui_1")).json.runs;
  assert.equal(runs[0].workflowState, "RUN_CANCELED");
  await shot(page, "workflow-run");
});

test("queues and URL groups pages; the console at phone width", async () => {
  assert.equal((await node.api("POST", "/v2/queues", {
    body: JSON.stringify({ queueName: "emails", parallelism: 2 }),
    headers: { "Content-Type": "application/json" } })).status, 200);
  assert.equal((await node.api("POST", "/v2/topics/fanout/endpoints", {
    body: JSON.stringify({ endpoints: [{ name: "a", url: `${sink.base}/a` }] }),
    headers: { "Content-Type": "application/json" } })).status, 200);

  await page.getByRole("link", { name: "Queues" }).click();
  await page.getByRole("cell", { name: "emails", exact: true }).waitFor();
  // A queue created and deleted by clicking; the API agrees each time.
  await page.getByLabel("Queue name").fill("reports");
  await page.getByLabel("Parallelism", { exact: true }).fill("3");
  await page.getByRole("button", { name: "Create queue" }).click();
  const reports = page.getByRole("row").filter({ hasText: "reports" });
  await reports.waitFor();
  assert.equal((await node.api("GET", "/v2/queues/reports")).json.parallelism, 3);
  await shot(page, "queues");
  await reports.getByRole("button", { name: "Delete" }).click();
  await page.getByRole("dialog").getByRole("button", { name: "Delete queue" }).click();
  await reports.waitFor({ state: "detached" });
  assert.equal((await node.api("GET", "/v2/queues/reports")).status, 404);

  await page.getByRole("link", { name: "URL groups" }).click();
  await page.getByRole("cell", { name: "fanout", exact: true }).waitFor();
  // An endpoint added to the group, then the first one removed.
  await page.getByLabel("Group (new or existing)").fill("fanout");
  await page.getByLabel("Endpoint URL").fill(`${sink.base}/b`);
  await page.getByRole("button", { name: "Add endpoint" }).click();
  await page.getByRole("listitem").filter({ hasText: `${sink.base}/b` }).waitFor();
  let group = (await node.api("GET", "/v2/topics/fanout")).json;
  assert.deepEqual(group.endpoints.map((e) => e.url).sort(), [`${sink.base}/a`, `${sink.base}/b`]);
  await shot(page, "groups");
  await page.getByRole("listitem").filter({ hasText: `${sink.base}/a` })
    .getByRole("button", { name: "Remove" }).click();
  await page.getByRole("dialog").getByRole("button", { name: "Remove endpoint" }).click();
  await page.getByRole("listitem").filter({ hasText: `${sink.base}/a` })
    .waitFor({ state: "detached" });
  group = (await node.api("GET", "/v2/topics/fanout")).json;
  assert.deepEqual(group.endpoints.map((e) => e.url), [`${sink.base}/b`]);

  await page.setViewportSize({ width: 390, height: 844 });
  for (const [link, heading, name] of [["Overview", "Overview", "phone-overview"],
    ["DLQ", "Dead-letter queue", "phone-dlq"], ["Schedules", "Schedules", "phone-schedules"]]) {
    await page.getByRole("link", { name: link }).click();
    await page.getByRole("heading", { name: heading }).waitFor();
    await shot(page, name);
  }
  // Nothing wider than the phone's screen but the tables' own scrollers.
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth);
  assert.ok(overflow <= 390, `the page is ${overflow} px wide at 390`);

  // Log out: the token is gone from the tab.
  await page.getByRole("button", { name: "Log out" }).click();
  await page.getByLabel("API token").waitFor();
  assert.equal(await page.evaluate(() => sessionStorage.getItem("qraft.token")), null);
});
