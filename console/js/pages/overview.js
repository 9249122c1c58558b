// Overview: the cluster as the leader sees it (GET /v2/qraft/cluster; a follower forwards it),
// the backlog by state, the DLQ size, and from the node's own /metrics (no
// token needed there) the oldest overdue message's age, and rates and
// latencies between two scrapes.
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
  if (!prev || now.at - prev.at < 500) {
    // Too close to measure: the earlier scrape stays the base.
    lastScrape = prev || now;
    return { now, perSec: null };
  }
  lastScrape = now;
  const secs = (now.at - prev.at) / 1000;
  const rate = (key) => Math.max(0, ((now.values[key] || 0) - (prev.values[key] || 0)) / secs);
  const latency = (name) => [0.5, 0.99].map((q) => quantile(prev.values, now.values, name, q));
  return {
    now,
    latency: [
      ["Publish (arrival to answer)", latency("qraft_publish_duration_seconds")],
      ["Delivery attempt (send to answer)", latency("qraft_delivery_attempt_duration_seconds")],
    ],
    perSec: {
      publishes: rate("qraft_publishes_total"),
      delivered: rate('qraft_deliveries_total{outcome="delivered"}'),
      retries: rate('qraft_deliveries_total{outcome="retry"}'),
      dead: rate('qraft_deliveries_total{outcome="dead"}'),
    },
  };
}

// The q-quantile of histogram name between two scrapes, as the upper bound
// (seconds) of the bucket it falls in: Infinity past the last bound, null
// when nothing was timed.
function quantile(prev, now, name, q) {
  const count = (now[`${name}_count`] || 0) - (prev[`${name}_count`] || 0);
  if (count <= 0) {
    return null;
  }
  const buckets = Object.keys(now).filter((k) => k.startsWith(`${name}_bucket{le="`))
    .map((k) => [k, Number(/le="([^"]+)"/.exec(k)[1])])
    .sort((a, b) => a[1] - b[1]);
  for (const [key, le] of buckets) {
    if ((now[key] || 0) - (prev[key] || 0) >= q * count) {
      return le;
    }
  }
  return Infinity;
}

function fmtBound(secs) {
  if (secs === null) {
    return "none timed";
  }
  return secs === Infinity ? "over the largest bucket" : `≤ ${+(secs * 1000).toPrecision(3)} ms`;
}

function fmtSeconds(secs) {
  return secs < 90 ? `${Math.round(secs)} s` : secs < 5400 ? `${Math.round(secs / 60)} min`
    : `${(secs / 3600).toFixed(1)} h`;
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
      r ? card(`Oldest overdue (node ${c.nodeId})`,
        fmtSeconds(r.now.values.qraft_oldest_pending_age_seconds || 0)) : null,
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
          ["Retried", r.perSec.retries], ["Dead-lettered", r.perSec.dead]]),
    r && r.perSec ? [h("h2", {}, "Latency on this node"),
      table([
        { title: "What", cell: (x) => x[0] },
        { title: "Median", class: "num", cell: (x) => fmtBound(x[1][0]) },
        { title: "99th percentile", class: "num", cell: (x) => fmtBound(x[1][1]) },
      ], r.latency, { caption: "Between the last two refreshes, from this node's histograms (bucket bounds)." })]
      : null);
}
