// Workflow runs (GET /v2/workflows/logs, the SDK's WorkflowRunLog): a list
// filtered by run id, URL and state; a run's page with its steps; cancel a
// running run, resume or restart a failed one from its dead letter.
import { api } from "../api.js";
import { actionButton, badge, busy, confirmDialog, field, fill, fmtTime, formValues, h, notify, selectField, table } from "../dom.js";

const STATES = [["", "any"], ["RUN_STARTED", "running"], ["RUN_SUCCESS", "succeeded"],
  ["RUN_FAILED", "failed"], ["RUN_CANCELED", "cancelled"]];

function stateBadge(s) {
  const kind = { RUN_SUCCESS: "good", RUN_FAILED: "bad", RUN_CANCELED: "warn",
    STEP_SUCCESS: "good", STEP_FAILED: "bad", STEP_RETRY: "warn", STEP_CANCELED: "warn" }[s];
  return badge(s || "?", kind);
}

function runLink(id) {
  return h("a", { href: `#/workflows/${encodeURIComponent(id)}`, class: "mono" }, id);
}

// The run's actions: cancel while running; resume or restart when failed
// with its dead letter still in the DLQ. after() runs once one succeeded.
function runActions(run, after) {
  const id = run.workflowRunId;
  const out = h("div", { class: "actions" });
  if (run.workflowState === "RUN_STARTED") {
    out.appendChild(actionButton("Cancel run", async () => {
      if (!await confirmDialog("Cancel this run?", `${id} stops; its messages not delivered yet are cancelled.`, "Cancel run", { danger: true })) {
        return;
      }
      await api("DELETE", `/v2/workflows/runs/${encodeURIComponent(id)}`);
      notify(`Cancelled ${id}.`, "good");
      await after();
    }, "danger"));
  }
  if (run.workflowState === "RUN_FAILED" && run.dlqId) {
    for (const [action, text, what] of [
      ["resume", "Resume", "delivers the failed step again; the run goes on under the same id."],
      ["restart", "Restart", "cuts the history back to the initial payload and runs it again from the first step."]]) {
      out.appendChild(actionButton(text, async () => {
        if (!await confirmDialog(`${text} this run?`, `${text} ${what}`, text)) {
          return;
        }
        await api("POST", `/v2/workflows/dlq/${action}`, { params: { dlqIds: run.dlqId } });
        notify(`${text}d ${id}.`, "good");
        await after();
      }));
    }
  }
  return out;
}

function steps(run) {
  const rows = [];
  for (const group of run.steps || []) {
    for (const s of group.steps || []) {
      rows.push({ ...s, group: group.type });
    }
  }
  return table([
    { title: "Step", cell: (s) => `${s.stepId ?? ""} ${s.stepName || ""}`.trim() || "(next)" },
    { title: "Type", cell: (s) => [s.stepType || s.callType || "", s.group !== "sequential" ? ` (${s.group})` : ""] },
    { title: "State", cell: (s) => stateBadge(s.state) },
    { title: "Time", cell: (s) => fmtTime(s.createdAt) },
    { title: "Message", cell: (s) => s.messageId ? h("a", { href: `#/message/${encodeURIComponent(s.messageId)}`, class: "mono" }, s.messageId) : "" },
    { title: "Errors", cell: (s) => (s.errors || []).map((e) => h("div", { class: "error" }, `${fmtTime(e.time)} ${e.status || ""} ${e.error || ""}`)) },
  ], rows, { empty: "No steps yet." });
}

async function renderRun(view, id, current) {
  const out = await api("GET", "/v2/workflows/logs", { params: { workflowRunId: id } });
  if (!current()) {
    return;
  }
  const run = (out.runs || [])[0];
  if (!run) {
    fill(view, h("p", {}, h("a", { href: "#/workflows" }, "← Workflow runs")),
      h("p", { class: "error" }, `No run ${id} is stored.`));
    return;
  }
  fill(view,
    h("p", {}, h("a", { href: "#/workflows" }, "← Workflow runs")),
    h("h1", { class: "mono" }, id),
    h("p", {}, stateBadge(run.workflowState)),
    runActions(run, () => renderRun(view, id, current)),
    h("dl", { class: "props" },
      [["URL", run.workflowUrl], ["Created", fmtTime(run.workflowRunCreatedAt)],
        ["Completed", fmtTime(run.workflowRunCompletedAt)], ["Labels", (run.labels || []).join(", ")],
        ["Dead letter", run.dlqId], ["Response", run.workflowRunResponse]]
        .filter(([, v]) => v).map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)])),
    h("h2", {}, "Steps"),
    steps(run));
}

export async function render(view, id, current) {
  if (id) {
    await renderRun(view, id, current);
    return;
  }
  const results = h("div", {});
  let params = {};

  async function load(cursor) {
    const out = await api("GET", "/v2/workflows/logs", { params: { ...params, count: 50, cursor } });
    if (!current()) {
      return;
    }
    fill(results,
      table([
        { title: "Run", cell: (r) => runLink(r.workflowRunId) },
        { title: "State", cell: (r) => stateBadge(r.workflowState) },
        { title: "URL", class: "url", cell: (r) => r.workflowUrl || "" },
        { title: "Created", cell: (r) => fmtTime(r.workflowRunCreatedAt) },
        { title: "Actions", cell: (r) => runActions(r, () => load(cursor)) },
      ], out.runs || [], { empty: "No workflow runs match." }),
      out.cursor ? h("div", { class: "actions" }, h("button", { type: "button",
        onclick: (e) => busy(e.target, () => load(out.cursor)) }, "Next page")) : null);
  }

  const form = h("form", { class: "filters", role: "search" },
    field("Run id", { name: "workflowRunId", spellcheck: "false" }),
    field("Workflow URL (exact)", { name: "workflowUrl", type: "url", spellcheck: "false" }),
    selectField("State", "state", STATES),
    h("button", { type: "submit", class: "primary" }, "Search"),
    h("button", { type: "reset" }, "Clear"));
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    params = formValues(form);
    load().catch((err) => notify(err.message, "bad"));
  });
  fill(view,
    h("h1", {}, "Workflow runs"),
    h("p", { class: "muted" }, "Runs in run-id order (as the store keeps them), with what each step did."),
    form,
    results);
  await load();
}
