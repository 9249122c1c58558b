// The dead-letter queue (GET /v2/dlq), searched by the shared filters;
// replay or delete the selected rows (dlqIds) or everything matching the
// filters (paged with the API's cursor), each after a preview count and a
// confirmation, with progress while it runs.
import { api } from "../api.js";
import { busy, confirmDialog, fill, fmtTime, h, notify, table } from "../dom.js";
import { filterForm, hasFilter } from "./filters.js";

const PAGE = 100;
// A preview counts at most this many pages before saying "more than".
const PREVIEW_PAGES = 100;

// How many dead letters match params: { n, more }.
async function countMatching(params) {
  let n = 0;
  let cursor;
  for (let i = 0; i < PREVIEW_PAGES; i++) {
    const out = await api("GET", "/v2/dlq", { params: { ...params, count: PAGE, cursor } });
    n += out.messages.length;
    cursor = out.cursor;
    if (!cursor) {
      return { n, more: false };
    }
  }
  return { n, more: true };
}

// Runs a bulk action over everything matching params, page by page;
// progress(done) after each page; resolves to the total done.
async function bulk(action, params, progress) {
  let done = 0;
  let cursor;
  for (;;) {
    const q = { ...params, count: PAGE, cursor };
    const out = action === "replay"
      ? await api("POST", "/v2/dlq/retry", { params: q })
      : await api("DELETE", "/v2/dlq", { params: q });
    const n = action === "replay" ? (out.responses || []).length : out.deleted || 0;
    done += n;
    progress(done);
    cursor = out.cursor;
    if (!cursor || n === 0) {
      return done;
    }
  }
}

export async function render(view, _arg, current) {
  let params = {};
  let rows = [];
  const selected = new Set();
  const results = h("div", {});
  const progress = h("p", { class: "muted", role: "status", "aria-live": "polite" });
  const selInfo = h("span", { class: "muted" });
  const replaySel = h("button", { type: "button", class: "primary", disabled: true }, "Replay selected");
  const deleteSel = h("button", { type: "button", class: "danger", disabled: true }, "Delete selected");
  const replayAll = h("button", { type: "button" }, "Replay all matching…");
  const deleteAll = h("button", { type: "button", class: "danger" }, "Delete all matching…");

  function updateSelection() {
    selInfo.textContent = `${selected.size} selected`;
    replaySel.disabled = deleteSel.disabled = selected.size === 0;
  }

  function rowBox(m) {
    const box = h("input", { type: "checkbox", "aria-label": `Select ${m.messageId}`, checked: selected.has(m.messageId) });
    box.addEventListener("change", () => {
      if (box.checked) {
        selected.add(m.messageId);
      } else {
        selected.delete(m.messageId);
      }
      updateSelection();
    });
    return box;
  }

  function draw(cursor) {
    const all = h("input", { type: "checkbox", "aria-label": "Select every row shown",
      checked: rows.length > 0 && rows.every((m) => selected.has(m.messageId)) });
    all.addEventListener("change", () => {
      for (const m of rows) {
        if (all.checked) {
          selected.add(m.messageId);
        } else {
          selected.delete(m.messageId);
        }
      }
      draw(cursor);
      updateSelection();
    });
    fill(results,
      rows.length ? h("div", { class: "actions" }, h("label", {}, all, " Select every row shown")) : null,
      table([
        { title: "", cell: (m) => rowBox(m) },
        { title: "Message", cell: (m) => h("a", { href: `#/message/${encodeURIComponent(m.messageId)}`, class: "mono" }, m.messageId) },
        { title: "URL", class: "url", cell: (m) => m.url || m.topicName || "" },
        { title: "Status", class: "num", cell: (m) => m.responseStatus ? String(m.responseStatus) : "" },
        { title: "Why", cell: (m) => m.error || "" },
        { title: "Queue / labels", cell: (m) => [m.queueName, ...(m.labels || [])].filter(Boolean).join(", ") },
        { title: "Created", cell: (m) => fmtTime(m.createdAt) },
      ], rows, { empty: "No dead letters match." }),
      cursor ? h("div", { class: "actions" }, h("button", { type: "button",
        onclick: (e) => busy(e.target, () => load(cursor)) }, "More")) : null);
  }

  async function load(cursor) {
    const out = await api("GET", "/v2/dlq", { params: { ...params, count: PAGE, cursor } });
    if (!current()) {
      return;
    }
    rows = cursor ? rows.concat(out.messages) : out.messages;
    if (!cursor) {
      selected.clear();
      updateSelection();
    }
    draw(out.cursor);
  }

  async function onSelected(action) {
    const ids = [...selected];
    const verb = action === "replay" ? "Replay" : "Delete";
    const ok = await confirmDialog(`${verb} ${ids.length} dead letter${ids.length === 1 ? "" : "s"}?`,
      action === "replay"
        ? "Each goes back to pending with a fresh attempt budget, under the same message id."
        : "They are removed for good; nothing is delivered.",
      `${verb} ${ids.length}`, { danger: action === "delete" });
    if (!ok) {
      return;
    }
    let n;
    if (action === "replay") {
      const out = await api("POST", "/v2/dlq/retry", { params: { dlqIds: ids.join(",") } });
      n = (out.responses || []).length;
    } else {
      n = (await api("DELETE", "/v2/dlq", { params: { dlqIds: ids.join(",") } })).deleted;
    }
    notify(`${action === "replay" ? "Replayed" : "Deleted"} ${n} of ${ids.length} selected.`, "good");
    await load();
  }

  async function onMatching(action) {
    const verb = action === "replay" ? "Replay" : "Delete";
    progress.textContent = "Counting the dead letters that match…";
    const { n, more } = await countMatching(params);
    progress.textContent = "";
    if (n === 0) {
      notify("No dead letters match.", "");
      return;
    }
    const count = more ? `more than ${n}` : String(n);
    const scope = hasFilter(params) ? "that match the filters" : "in the DLQ (no filter: every one)";
    const ok = await confirmDialog(`${verb} ${count} dead letters?`,
      `${verb} every dead letter ${scope}: ${count} now.`,
      `${verb} ${count}`, { danger: action === "delete" });
    if (!ok) {
      return;
    }
    const done = await bulk(action, params, (d) => {
      progress.textContent = `${action === "replay" ? "Replayed" : "Deleted"} ${d} so far…`;
    });
    progress.textContent = "";
    notify(`${action === "replay" ? "Replayed" : "Deleted"} ${done} dead letters.`, "good");
    await load();
  }

  replaySel.addEventListener("click", () => busy(replaySel, () => onSelected("replay")));
  deleteSel.addEventListener("click", () => busy(deleteSel, () => onSelected("delete")));
  replayAll.addEventListener("click", () => busy(replayAll, () => onMatching("replay")));
  deleteAll.addEventListener("click", () => busy(deleteAll, () => onMatching("delete")));

  fill(view,
    h("h1", {}, "Dead-letter queue"),
    h("p", { class: "muted" }, "Messages whose delivery failed for good, oldest dead-lettered first. A replay sends the same message again with a fresh attempt budget."),
    filterForm({ withState: false }, (p) => {
      params = p;
      load().catch((err) => notify(err.message, "bad"));
    }),
    h("div", { class: "actions" }, replaySel, deleteSel, selInfo, replayAll, deleteAll),
    progress,
    results);
  updateSelection();
  await load();
}
