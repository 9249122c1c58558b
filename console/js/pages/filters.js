// The filter form the messages and DLQ pages share (docs/api.md 5.5): its
// fields, and the query parameters a submitted form becomes.
import { field, formValues, h, selectField, utcInputToMs } from "../dom.js";

const LOG_STATES = [
  ["", "any"], ["CREATED", "created"], ["ACTIVE", "active"], ["RETRY", "retry"],
  ["ERROR", "error"], ["DELIVERED", "delivered"], ["FAILED", "failed (dead-lettered)"],
  ["CANCEL_REQUESTED", "cancel requested"], ["CANCELLED", "cancelled"],
];

// withState: the logs' state select (the DLQ has none).
export function filterFields({ withState }) {
  return [
    field("Message id", { name: "messageId", spellcheck: "false" }),
    withState ? selectField("State", "state", LOG_STATES) : null,
    field("URL (exact)", { name: "url", type: "url", spellcheck: "false" }),
    field("Label", { name: "label" }),
    field("Queue", { name: "queueName" }),
    field("Schedule id", { name: "scheduleId", spellcheck: "false" }),
    field("Response status", { name: "responseStatus", inputmode: "numeric" }),
    field("From (UTC)", { name: "from", type: "datetime-local", step: "1" }),
    field("To (UTC)", { name: "to", type: "datetime-local", step: "1" }),
  ];
}

// The form's filters as query parameters.
export function filterParams(form) {
  const v = formValues(form);
  const p = { ...v, fromDate: utcInputToMs(v.from), toDate: utcInputToMs(v.to) };
  delete p.from;
  delete p.to;
  return p;
}

// Whether params hold any filter.
export function hasFilter(params) {
  return Object.values(params).some((x) => x !== undefined && x !== "");
}

export function filterForm(opts, onSubmit) {
  const form = h("form", { class: "filters", role: "search" },
    filterFields(opts),
    h("button", { type: "submit", class: "primary" }, "Search"),
    h("button", { type: "reset" }, "Clear"));
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    onSubmit(filterParams(form));
  });
  return form;
}
