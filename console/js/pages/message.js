// One message: what it is (GET /v2/messages/{id} while it waits, else
// GET /v2/dlq/{id} when dead-lettered), its attempt timeline from the
// log (GET /v2/logs?messageId=), oldest first, and the callback messages
// it caused (GET /v2/logs?sourceMessageId=); cancel or replay.
import { api } from "../api.js";
import { actionButton, confirmDialog, fill, fmtTime, h, notify, table } from "../dom.js";
import { messageLink, stateBadge } from "./messages.js";

// Base64 to text (bad UTF-8 as U+FFFD), cut to max characters.
function b64text(b64, max = 2000) {
  try {
    const bytes = Uint8Array.from(atob(b64), (ch) => ch.charCodeAt(0));
    const text = new TextDecoder().decode(bytes);
    return text.length > max ? `${text.slice(0, max)}…` : text;
  } catch {
    return "(not base64)";
  }
}

// The message as the API shows it, and where it was found; null when it
// is neither waiting nor dead-lettered (delivered, cancelled, unknown).
async function findMessage(id) {
  const enc = encodeURIComponent(id);
  for (const [where, path] of [["waiting", `/v2/messages/${enc}`], ["dead", `/v2/dlq/${enc}`]]) {
    try {
      return { where, msg: await api("GET", path) };
    } catch (err) {
      if (err.status !== 404) {
        throw err;
      }
    }
  }
  return null;
}

function props(pairs) {
  return h("dl", { class: "props" }, pairs.filter(([, v]) => v !== undefined && v !== "" && v !== null)
    .map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
}

function timeline(entries) {
  if (entries.length === 0) {
    return h("p", { class: "empty" }, "The log holds no entry for this id (unknown, or pruned).");
  }
  return h("ol", { class: "timeline" }, entries.map((e) => {
    const kind = ["FAILED", "ERROR"].includes(e.state) ? "bad" : e.state === "DELIVERED" ? "good" : "";
    return h("li", { class: kind },
      h("div", {}, h("strong", {}, fmtTime(e.time)), " ", stateBadge(e.state),
        e.responseStatus ? ` HTTP ${e.responseStatus}` : ""),
      e.error ? h("div", { class: "error" }, e.error) : null,
      e.nextDeliveryTime ? h("div", { class: "muted" }, `next attempt ${fmtTime(e.nextDeliveryTime)}`) : null,
      e.responseBody ? h("details", {}, h("summary", {}, "Response body (excerpt)"),
        h("pre", { class: "body" }, b64text(e.responseBody))) : null);
  }));
}

// The callback messages of a message, one row each with its latest log
// entry, oldest callback first (entries: theirs, newest first).
function callbacks(entries) {
  const latest = new Map();
  for (const e of entries) {
    if (!latest.has(e.messageId)) {
      latest.set(e.messageId, e);
    }
  }
  const kinds = { callback: "callback", failureCallback: "failure callback" };
  return table([
    { title: "Message", cell: (e) => messageLink(e.messageId) },
    { title: "Kind", cell: (e) => kinds[e.callbackKind] || "" },
    { title: "URL", class: "url", cell: (e) => e.url || "" },
    { title: "State", cell: (e) => stateBadge(e.state) },
    { title: "Since", cell: (e) => fmtTime(e.time) },
  ], [...latest.values()].reverse(), { empty: "None: no callback message in the log for this message." });
}

export async function render(view, id, current) {
  const [found, log] = await Promise.all([
    findMessage(id),
    api("GET", "/v2/logs", { params: { messageId: id, order: "earliestFirst", count: 1000 } }),
  ]);
  const entries = log.logs || [];
  // Its callbacks come after its first entry: the scan stops there.
  const cbLog = await api("GET", "/v2/logs", { params: { sourceMessageId: id, count: 1000,
    fromDate: entries.length ? entries[0].time : undefined } });
  if (!current()) {
    return;
  }
  const last = entries.length ? entries[entries.length - 1] : null;
  const msg = found ? found.msg : last || {};
  const actions = h("div", { class: "actions" });

  if (found && found.where === "waiting") {
    actions.appendChild(actionButton("Cancel message", async () => {
      if (!await confirmDialog("Cancel this message?", `${id} will not be delivered (an attempt already in flight may still arrive).`, "Cancel message", { danger: true })) {
        return;
      }
      await api("DELETE", `/v2/messages/${encodeURIComponent(id)}`);
      notify(`Cancelled ${id}.`, "good");
      await render(view, id, current);
    }, "danger"));
  }
  if (found && found.where === "dead") {
    actions.appendChild(actionButton("Replay", async () => {
      if (!await confirmDialog("Replay this dead letter?", `${id} goes back to pending with a fresh attempt budget.`, "Replay")) {
        return;
      }
      await api("POST", `/v2/dlq/retry/${encodeURIComponent(id)}`);
      notify(`Replayed ${id}.`, "good");
      await render(view, id, current);
    }, "primary"));
  }

  // A message object has body (text) or bodyBase64; a log entry base64.
  let body;
  if (found) {
    body = msg.body !== undefined ? msg.body : msg.bodyBase64 ? b64text(msg.bodyBase64) : undefined;
  } else if (last && last.body) {
    body = b64text(last.body);
  }
  fill(view,
    h("p", {}, h("a", { href: "#/messages" }, "← Messages")),
    h("h1", { class: "mono" }, id),
    h("p", {}, found ? (found.where === "dead" ? "In the dead-letter queue." : "Waiting for delivery.")
      : last ? `Latest state: ${last.state}.` : "Not found."),
    actions,
    props([
      ["URL", msg.url], ["Method", msg.method], ["Queue", msg.queueName],
      ["Schedule", msg.scheduleId], ["URL group", msg.topicName],
      ["Labels", (msg.labels || []).join(", ")], ["Created", fmtTime(msg.createdAt)],
      ["Not before", fmtTime(msg.notBefore)], ["Max retries", msg.maxRetries !== undefined ? String(msg.maxRetries) : ""],
      ["Callback", msg.callback], ["Failure callback", msg.failureCallback],
    ["Callback of", msg.sourceMessageId ? messageLink(msg.sourceMessageId) : ""],
      ["Dead-lettered because", msg.error && found && found.where === "dead" ? msg.error : ""],
      ["Last response status", msg.responseStatus ? String(msg.responseStatus) : ""],
    ]),
    body !== undefined ? [h("h2", {}, "Body"), h("pre", { class: "body" }, body)] : null,
    h("h2", {}, "Timeline"),
    timeline(entries),
    h("h2", {}, "Callback messages"),
    callbacks(cbLog.logs || []));
}
