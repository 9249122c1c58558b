// Flow-control keys (GET /v2/flowControl): each key's waitlist, its
// parallelism and rate (in use / most, pinned or not), paused; pause,
// resume, reset the rate period, pin and unpin (admin scope).
import { api } from "../api.js";
import { actionButton as button, badge, busy, fill, h, notify, table } from "../dom.js";

export async function render(view, _arg, current) {
  const keys = await api("GET", "/v2/flowControl");
  if (!current()) {
    return;
  }
  const reload = () => render(view, _arg, current);
  const path = (k, action) => `/v2/flowControl/${encodeURIComponent(k.flowControlKey)}/${action}`;
  const act = (k, action, done, params) => async () => {
    await api("POST", path(k, action), { params });
    notify(`${done} ${k.flowControlKey}.`, "good");
    await reload();
  };

  // The pin form for one key: parallelism and/or rate per period.
  function pinForm(k) {
    const id = (n) => `pin-${n}-${k.flowControlKey}`;
    const form = h("form", { class: "actions" },
      h("label", { for: id("p"), class: "visually-hidden" }, `Pinned parallelism of ${k.flowControlKey}`),
      h("input", { id: id("p"), name: "parallelism", type: "number", min: 1, placeholder: "parallelism", class: "narrow" }),
      h("label", { for: id("r"), class: "visually-hidden" }, `Pinned rate of ${k.flowControlKey}`),
      h("input", { id: id("r"), name: "rate", type: "number", min: 1, placeholder: "rate", class: "narrow" }),
      h("label", { for: id("d"), class: "visually-hidden" }, `Rate period of ${k.flowControlKey}`),
      h("input", { id: id("d"), name: "period", placeholder: "per 1s", class: "narrow" }),
      h("button", { type: "submit" }, "Pin"));
    form.addEventListener("submit", (e) => {
      e.preventDefault();
      const v = Object.fromEntries(new FormData(form).entries());
      busy(form.querySelector("button"), act(k, "pin", "Pinned", {
        parallelism: v.parallelism, rate: v.rate, period: v.rate ? v.period : "" }));
    });
    return form;
  }

  fill(view,
    h("h1", {}, "Flow-control keys"),
    h("p", { class: "muted" }, "Keys with messages, a pause or a pin. Counts are those of the node that owns the key's shard."),
    table([
      { title: "Key", cell: (k) => h("span", { class: "mono" }, k.flowControlKey) },
      { title: "State", cell: (k) => k.isPaused ? badge("paused", "warn") : badge("running", "good") },
      { title: "Waiting", class: "num", cell: (k) => String(k.waitListSize) },
      { title: "Parallelism", cell: (k) => [`${k.parallelismCount} / ${k.parallelismMax || "∞"}`,
        k.isPinnedParallelism ? " " : "", k.isPinnedParallelism ? badge("pinned") : null] },
      { title: "Rate", cell: (k) => [k.rateMax ? `${k.rateCount} / ${k.rateMax} per ${k.ratePeriod} s` : "none",
        k.isPinnedRate ? " " : "", k.isPinnedRate ? badge("pinned") : null] },
      { title: "Actions", cell: (k) => h("div", { class: "actions" },
        k.isPaused ? button("Resume", act(k, "resume", "Resumed")) : button("Pause", act(k, "pause", "Paused")),
        button("Reset rate", act(k, "resetRate", "Reset the rate period of")),
        (k.isPinnedParallelism || k.isPinnedRate)
          ? button("Unpin", act(k, "unpin", "Unpinned", {
            parallelism: k.isPinnedParallelism ? "true" : "", rate: k.isPinnedRate ? "true" : "" }))
          : null,
        pinForm(k)) },
    ], keys, { empty: "No flow-control keys." }));
}
