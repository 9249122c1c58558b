// URL groups (QStash's topics, GET /v2/topics): each with its endpoints.
import { api } from "../api.js";
import { fill, fmtTime, h, table } from "../dom.js";

export async function render(view, _arg, current) {
  const list = await api("GET", "/v2/topics");
  if (!current()) {
    return;
  }
  fill(view,
    h("h1", {}, "URL groups"),
    table([
      { title: "Group", cell: (g) => g.name },
      { title: "Endpoints", class: "url", cell: (g) => h("ul", {}, g.endpoints.map((e) =>
        h("li", {}, e.name ? `${e.name}: ` : "", e.url))) },
      { title: "Updated", cell: (g) => fmtTime(g.updatedAt) },
    ], list, { empty: "No URL groups." }));
}
