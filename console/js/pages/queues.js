// Queues (GET /v2/queues): parallelism, paused, lag (messages waiting in
// the queue, not counting the active ones); pause, resume, set parallelism.
import { api } from "../api.js";
import { actionButton, badge, busy, fill, fmtTime, h, notify, table } from "../dom.js";

export async function render(view, _arg, current) {
  const list = await api("GET", "/v2/queues");
  if (!current()) {
    return;
  }
  const reload = () => render(view, _arg, current);
  const enc = (q) => encodeURIComponent(q.name);

  function parallelismForm(q) {
    const id = `par-${q.name}`;
    const input = h("input", { id, type: "number", min: 1, value: q.parallelism, class: "narrow" });
    const form = h("form", { class: "actions" },
      h("label", { for: id, class: "visually-hidden" }, `Parallelism of ${q.name}`), input,
      h("button", { type: "submit" }, "Set"));
    form.addEventListener("submit", (e) => {
      e.preventDefault();
      busy(form.querySelector("button"), async () => {
        await api("POST", "/v2/queues", { body: { queueName: q.name, parallelism: Number(input.value), paused: q.paused } });
        notify(`Parallelism of ${q.name} set to ${input.value}.`, "good");
        await reload();
      });
    });
    return form;
  }

  fill(view,
    h("h1", {}, "Queues"),
    table([
      { title: "Queue", cell: (q) => q.name },
      { title: "State", cell: (q) => q.paused ? badge("paused", "warn") : badge("active", "good") },
      { title: "Lag", class: "num", cell: (q) => String(q.lag) },
      { title: "Parallelism", cell: (q) => parallelismForm(q) },
      { title: "Updated", cell: (q) => fmtTime(q.updatedAt) },
      { title: "Actions", cell: (q) => actionButton(q.paused ? "Resume" : "Pause", async () => {
        await api("POST", `/v2/queues/${enc(q)}/${q.paused ? "resume" : "pause"}`);
        notify(`${q.paused ? "Resumed" : "Paused"} ${q.name}.`, "good");
        await reload();
      }) },
    ], list, { empty: "No queues (a queue is created by the first message enqueued to it)." }));
}
