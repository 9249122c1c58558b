// URL groups (QStash's topics, GET /v2/topics): each with its endpoints;
// add endpoints (which creates a group: POST /v2/topics/{name}/endpoints),
// remove one (DELETE .../endpoints; the last one deletes the group) and
// delete a group (DELETE /v2/topics/{name}).
import { api } from "../api.js";
import { actionButton, busy, confirmDialog, field, fill, fmtTime, formValues, h, notify, table } from "../dom.js";

export async function render(view, _arg, current) {
  const list = await api("GET", "/v2/topics");
  if (!current()) {
    return;
  }
  const reload = () => render(view, _arg, current);
  const path = (name, tail = "") => `/v2/topics/${encodeURIComponent(name)}${tail}`;

  // One endpoint: removing it (by url, or by name when it has one).
  const endpoint = (g, e) => h("li", {},
    e.name ? `${e.name}: ` : "", e.url, " ",
    actionButton("Remove", async () => {
      const last = g.endpoints.length === 1;
      if (!await confirmDialog("Remove this endpoint?",
        `${e.url} stops receiving what is published to ${g.name}${last ? "; it is the last one, so the group goes too" : ""}.`,
        "Remove endpoint", { danger: true })) {
        return;
      }
      await api("DELETE", path(g.name, "/endpoints"),
        { body: { endpoints: [e.name ? { name: e.name } : { url: e.url }] } });
      notify(`Removed ${e.url} from ${g.name}.`, "good");
      await reload();
    }, "danger small"));

  fill(view,
    h("h1", {}, "URL groups"),
    table([
      { title: "Group", cell: (g) => g.name },
      { title: "Endpoints", class: "url", cell: (g) => h("ul", {}, g.endpoints.map((e) => endpoint(g, e))) },
      { title: "Updated", cell: (g) => fmtTime(g.updatedAt) },
      { title: "Actions", cell: (g) => actionButton("Delete", async () => {
        if (!await confirmDialog("Delete this URL group?",
          `${g.name} and its ${g.endpoints.length} endpoints go; messages already published to it are not affected.`,
          "Delete group", { danger: true })) {
          return;
        }
        await api("DELETE", path(g.name));
        notify(`Deleted ${g.name}.`, "good");
        await reload();
      }, "danger") },
    ], list, { empty: "No URL groups." }),
    h("h2", { id: "add-endpoint" }, "Add an endpoint"),
    addForm());

  function addForm() {
    const form = h("form", { class: "create", "aria-labelledby": "add-endpoint" },
      field("Group (new or existing)", { name: "group", required: true, pattern: "[A-Za-z0-9._-]+", spellcheck: "false" }),
      field("Endpoint URL", { name: "url", type: "url", required: true, placeholder: "https://example.com/hook", spellcheck: "false" }),
      field("Endpoint name (optional)", { name: "name", spellcheck: "false" }),
      h("div", {}, h("button", { type: "submit", class: "primary" }, "Add endpoint")));
    form.addEventListener("submit", (e) => {
      e.preventDefault();
      busy(form.querySelector("button[type=submit]"), async () => {
        const v = formValues(form);
        const ep = v.name ? { name: v.name, url: v.url } : { url: v.url };
        await api("POST", path(v.group, "/endpoints"), { body: { endpoints: [ep] } });
        notify(`Added ${v.url} to ${v.group}.`, "good");
        await reload();
      });
    });
    return form;
  }
}
