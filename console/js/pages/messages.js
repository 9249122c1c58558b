// Messages: the log (GET /v2/logs) searched by the shared filters, newest
// first, a page at a time; each entry links to its message's page.
import { api } from "../api.js";
import { badge, fill, fmtTime, h, table } from "../dom.js";
import { filterForm } from "./filters.js";

export function stateBadge(state) {
  const kind = { DELIVERED: "good", FAILED: "bad", ERROR: "bad", RETRY: "warn",
    CANCELLED: "warn", CANCEL_REQUESTED: "warn" }[state];
  return badge(state, kind);
}

export function messageLink(id) {
  return h("a", { href: `#/message/${encodeURIComponent(id)}`, class: "mono" }, id);
}

export async function render(view, _arg, current) {
  const results = h("div", {});
  let params = {};
  let pages = [];

  async function load(cursor) {
    const out = await api("GET", "/v2/logs", { params: { ...params, count: 50, cursor } });
    if (!current()) {
      return;
    }
    pages = cursor ? pages.concat(out.logs) : out.logs;
    fill(results,
      table([
        { title: "Time", cell: (e) => fmtTime(e.time) },
        { title: "Message", cell: (e) => messageLink(e.messageId) },
        { title: "State", cell: (e) => stateBadge(e.state) },
        { title: "URL", class: "url", cell: (e) => e.url || "" },
        { title: "Status", class: "num", cell: (e) => e.responseStatus ? String(e.responseStatus) : "" },
        { title: "Error", cell: (e) => e.error || "" },
      ], pages, { empty: "No log entries match." }),
      out.cursor
        ? h("div", { class: "actions" }, h("button", { type: "button",
          onclick: (e) => { e.target.disabled = true; load(out.cursor).catch(showError); } }, "Older entries"))
        : null);
  }

  function showError(err) {
    fill(results, h("p", { class: "error", role: "alert" }, err.message));
  }

  fill(view,
    h("h1", {}, "Messages"),
    h("p", { class: "muted" }, "Every state change of every message still in the log, newest first. Times are UTC."),
    filterForm({ withState: true }, (p) => {
      params = p;
      load().catch(showError);
    }),
    results);
  await load();
}
