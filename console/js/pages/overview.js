// Overview: the cluster as the leader sees it (GET /v2/qraft/cluster; a follower forwards it),
// the backlog by state, the DLQ size, and rates from the node's own
// /metrics (two scrapes apart; no token needed there).
import { api } from "../api.js";
import { badge, fill, fmtBytes, h, table } from "../dom.js";

const STATES = [
  ["pending", "Pending"], ["queued", "Queued"], ["retrying", "Retrying"],
  ["delivered", "Delivered (kept)"], ["deadLettered", "Dead-lettered (DLQ)"],
  ["cancelled", "Cancelled (kept)"],
];

// The previous scrape, for rates: { at, values }.
let lastScrape = null;

// Sums of the counters the overview shows, from Prometheus text.
function parseMetrics(text) {
  const v = {};
  for (const line of text.split("\n")) {
    const m = /^([a-z_]+)(\{[^}]*\})? ([0-9.eE+-]+)$/.exec(line);
    if (!m) {
      continue;
    }
    const key = m[1] + (m[2] || "");
    v[key] = Number(m[3]);
  }
  return v;
}

async function rates() {
  let res;
  try {
    res = await fetch("/metrics", { cache: "no-store", credentials: "omit" });
  } catch {
    return null;
  }
  if (!res.ok) {
    return null;
  }
  const now = { at: Date.now(), values: parseMetrics(await res.text()) };
  const prev = lastScrape;
  lastScrape = now;
  if (!prev || now.at - prev.at < 500) {
    return { now, perSec: null };
  }
  const secs = (now.at - prev.at) / 1000;
  const rate = (key) => Math.max(0, ((now.values[key] || 0) - (prev.values[key] || 0)) / secs);
  return {
    now,
    perSec: {
      publishes: rate("qraft_publishes_total"),
      delivered: rate('qraft_deliveries_total{outcome="delivered"}'),
      retries: rate('qraft_deliveries_total{outcome="retry"}'),
      dead: rate('qraft_deliveries_total{outcome="dead"}'),
    },
  };
}

function card(label, value) {
  return h("div", { class: "card" },
    h("div", { class: "label" }, label), h("div", { class: "value" }, value));
}

export async function render(view, _arg, current) {
  const [c, r] = await Promise.all([api("GET", "/v2/qraft/cluster"), rates()]);
  if (!current()) {
    return;
  }
  const m = c.messages || {};
  const leader = c.nodes.find((n) => n.id === c.leaderId);
  fill(view,
    h("h1", {}, "Overview"),
    h("div", { class: "actions" },
      h("button", { type: "button", onclick: () => render(view, _arg, current) }, "Refresh"),
      h("span", { class: "muted" },
        `Node ${c.nodeId} answered: ${c.state}, term ${c.term}, applied ${c.appliedIndex} of ${c.commitIndex} committed.`)),
    c.problem ? h("p", { class: "error", role: "alert" }, c.problem) : null,
    h("div", { class: "cards" },
      card("Leader", leader ? `node ${leader.id}` : c.leaderId ? `node ${c.leaderId}` : "none"),
      card("Feature level", String(c.featureLevel)),
      card("DLQ size", String(m.deadLettered || 0)),
      card("Waiting", String((m.pending || 0) + (m.queued || 0) + (m.retrying || 0))),
      card(`Store used (node ${c.nodeId})`, `${fmtBytes(c.storeUsedBytes)} in a ${fmtBytes(c.storeFileBytes)} file`),
      card(`Memory (node ${c.nodeId})`, fmtBytes(c.rssBytes))),
    h("h2", {}, "Nodes"),
    table([
      { title: "Node", cell: (n) => [String(n.id), n.id === c.leaderId ? " " : "",
        n.id === c.leaderId ? badge("leader", "good") : null] },
      { title: "Role", cell: (n) => n.role },
      { title: "Alive", cell: (n) => n.alive ? badge("alive", "good") : badge("not heard from", "bad") },
      { title: "Applied index", class: "num", cell: (n) => String(n.appliedIndex) },
      { title: "Shards", class: "num", cell: (n) => String(n.shards) },
      { title: "Version / level", cell: (n) => `${n.version || "?"} / ${n.featureLevel || "?"}` },
      { title: "HTTP", cell: (n) => n.http || "" },
      { title: "Problem", cell: (n) => n.problem ? h("span", { class: "error" }, n.problem) : "" },
    ], c.nodes, { empty: "This node knows no members yet." }),
    c.state !== "leader"
      ? h("p", { class: "muted" }, "Liveness and applied indexes of other nodes are known on the leader; open the console on the leader for the full view.")
      : null,
    h("h2", {}, "Messages by state"),
    table([
      { title: "State", cell: (s) => s[1] },
      { title: "Count", class: "num", cell: (s) => String(m[s[0]] || 0) },
    ], STATES),
    h("h2", {}, "Rates on this node"),
    !r ? h("p", { class: "muted" }, "This node's /metrics could not be read.")
      : !r.perSec ? h("p", { class: "muted" }, "Press Refresh in a few seconds to see rates (they are measured between two reads of /metrics).")
        : table([
          { title: "What", cell: (x) => x[0] },
          { title: "Per second", class: "num", cell: (x) => x[1].toFixed(2) },
        ], [["Publishes (as leader)", r.perSec.publishes], ["Delivered", r.perSec.delivered],
          ["Retried", r.perSec.retries], ["Dead-lettered", r.perSec.dead]]));
}
