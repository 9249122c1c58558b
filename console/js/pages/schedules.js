// Schedules (GET /v2/schedules): pause, resume, delete, and create one
// from a cron and a destination (POST /v2/schedules/{destination}), with
// a preview of the cron's next fire times (GET /v2/qraft/cron).
import { api } from "../api.js";
import { actionButton, badge, busy, confirmDialog, field, fill, fmtTime, formValues, h, notify, table } from "../dom.js";

// A fire time in UTC, and in the cron's own zone when it names one
// ("2026-12-08 09:00:00 UTC (2026-12-08 04:00 America/New_York)").
function fireTime(ms, zone) {
  if (!zone) {
    return fmtTime(ms);
  }
  try {
    const local = new Intl.DateTimeFormat("sv-SE", { timeZone: zone, dateStyle: "short", timeStyle: "short" })
      .format(new Date(ms));
    return `${fmtTime(ms)} (${local} ${zone})`;
  } catch {
    return fmtTime(ms); // a zone the node knows and this browser does not
  }
}

export async function render(view, _arg, current) {
  const list = await api("GET", "/v2/schedules");
  if (!current()) {
    return;
  }
  const reload = () => render(view, _arg, current);
  const path = (s, tail = "") => `/v2/schedules/${encodeURIComponent(s.scheduleId)}${tail}`;

  const form = h("form", { class: "create", "aria-labelledby": "create-title" },
    field("Destination URL", { name: "destination", type: "url", required: true, placeholder: "https://example.com/hook", spellcheck: "false" }),
    field("Cron (UTC, or CRON_TZ=Zone first)", { name: "cron", required: true, placeholder: "*/5 * * * *", spellcheck: "false" }),
    field("Schedule id (optional)", { name: "id", spellcheck: "false" }),
    field("Queue (optional)", { name: "queue" }),
    h("div", { class: "field wide" },
      h("label", { for: "f-body" }, "Body (optional)"),
      h("textarea", { id: "f-body", name: "body", rows: 3 })),
    h("div", {}, h("button", { type: "submit", class: "primary" }, "Create schedule")));
  // The next five fire times of the cron being typed, from the node's own
  // parser (GET /v2/qraft/cron): what the schedule will really do, its
  // time zone included; or why the node would refuse it.
  const preview = h("div", { class: "field wide muted", id: "cron-preview", "aria-live": "polite" });
  form.insertBefore(preview, form.querySelector("input[name=cron]").parentElement.nextSibling);
  let timer = null;
  let asked = 0;
  form.querySelector("input[name=cron]").addEventListener("input", (e) => {
    clearTimeout(timer);
    const expr = e.target.value.trim();
    timer = setTimeout(async () => {
      const mine = ++asked;
      if (!expr) {
        fill(preview);
        return;
      }
      let text;
      try {
        const out = await api("GET", "/v2/qraft/cron", { params: { cron: expr, count: 5 } });
        const zone = /^(?:CRON_)?TZ=(\S+)\s/.exec(expr)?.[1];
        text = out.next.length
          ? ["Next fires: ", h("ul", {}, out.next.map((ms) => h("li", {}, fireTime(ms, zone))))]
          : ["Never fires within eight years."];
      } catch (err) {
        text = [`Not a valid cron: ${err.message}`];
      }
      if (mine === asked && current()) {
        fill(preview, ...text);
      }
    }, 300);
  });
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const btn = form.querySelector("button[type=submit]");
    busy(btn, async () => {
      const v = formValues(form);
      const headers = { "Upstash-Cron": v.cron };
      if (v.id) {
        headers["Upstash-Schedule-Id"] = v.id;
      }
      if (v.queue) {
        headers["Upstash-Queue-Name"] = v.queue;
      }
      // The destination is the raw rest of the path, as the SDK sends it.
      const out = await api("POST", `/v2/schedules/${v.destination}`, { headers, body: v.body || "" });
      notify(`Created schedule ${out.scheduleId}.`, "good");
      await reload();
    });
  });

  fill(view,
    h("h1", {}, "Schedules"),
    table([
      { title: "Schedule", cell: (s) => h("span", { class: "mono" }, s.scheduleId) },
      { title: "Cron", cell: (s) => h("code", {}, s.cron) },
      { title: "Destination", class: "url", cell: (s) => s.destination },
      { title: "State", cell: (s) => s.isPaused ? badge("paused", "warn") : badge("active", "good") },
      { title: "Next", cell: (s) => s.isPaused ? "" : fmtTime(s.nextScheduleTime) },
      { title: "Last fired", cell: (s) => fmtTime(s.lastScheduleTime) },
      { title: "Actions", cell: (s) => h("div", { class: "actions" },
        s.isPaused
          ? actionButton("Resume", async () => {
            await api("POST", path(s, "/resume"));
            notify(`Resumed ${s.scheduleId}.`, "good");
            await reload();
          })
          : actionButton("Pause", async () => {
            await api("POST", path(s, "/pause"));
            notify(`Paused ${s.scheduleId}.`, "good");
            await reload();
          }),
        actionButton("Delete", async () => {
          if (!await confirmDialog("Delete this schedule?", `${s.scheduleId} (${s.cron}) stops firing; messages it created stay.`, "Delete schedule", { danger: true })) {
            return;
          }
          await api("DELETE", path(s));
          notify(`Deleted ${s.scheduleId}.`, "good");
          await reload();
        }, "danger")) },
    ], list, { empty: "No schedules." }),
    h("h2", { id: "create-title" }, "Create a schedule"),
    form);
}
