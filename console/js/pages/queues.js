// Queues (GET /v2/queues): parallelism, paused, lag (messages waiting in
// the queue, not counting the active ones); pause, resume, set parallelism,
// create (POST /v2/queues) and delete (DELETE /v2/queues/{queue}).
import { api } from "../api.js";
import { actionButton, badge, busy, confirmDialog, field, fill, fmtTime, formValues, h, notify, table } from "../dom.js";

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
      { title: "Actions", cell: (q) => h("div", { class: "actions" },
        actionButton(q.paused ? "Resume" : "Pause", async () => {
          await api("POST", `/v2/queues/${enc(q)}/${q.paused ? "resume" : "pause"}`);
          notify(`${q.paused ? "Resumed" : "Paused"} ${q.name}.`, "good");
          await reload();
        }),
        actionButton("Delete", async () => {
          if (!await confirmDialog("Delete this queue?",
            `${q.name} goes, and the ${q.lag} messages waiting in it are cancelled (not delivered).`,
            "Delete queue", { danger: true })) {
            return;
          }
          await api("DELETE", `/v2/queues/${enc(q)}`);
          notify(`Deleted ${q.name}.`, "good");
          await reload();
        }, "danger")) },
    ], list, { empty: "No queues (a queue is created here or by the first message enqueued to it)." }),
    h("h2", { id: "create-queue" }, "Create a queue"),
    createForm());

  function createForm() {
    const form = h("form", { class: "create", "aria-labelledby": "create-queue" },
      field("Queue name", { name: "name", required: true, pattern: "[A-Za-z0-9._-]+", spellcheck: "false" }),
      field("Parallelism", { name: "parallelism", type: "number", min: 1, value: 1 }),
      h("div", {}, h("button", { type: "submit", class: "primary" }, "Create queue")));
    form.addEventListener("submit", (e) => {
      e.preventDefault();
      busy(form.querySelector("button[type=submit]"), async () => {
        const v = formValues(form);
        await api("POST", "/v2/queues", { body: { queueName: v.name, parallelism: Number(v.parallelism || 1) } });
        notify(`Created queue ${v.name}.`, "good");
        await reload();
      });
    });
    return form;
  }
}
