// DOM building without innerHTML: everything shown goes in as text
// (message bodies, URLs and errors come from outside and are never markup).

// h("a", {href: "#/x", class: "c", onclick: fn}, "text", child, ...):
// attributes set with setAttribute (on* as listeners; booleans present or
// not), children appended as nodes or text; null/false children skipped.
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) {
      continue;
    }
    if (name.startsWith("on") && typeof value === "function") {
      el.addEventListener(name.slice(2), value);
    } else if (value === true) {
      el.setAttribute(name, "");
    } else {
      el.setAttribute(name, String(value));
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children) {
    if (c === null || c === undefined || c === false) {
      continue;
    }
    if (Array.isArray(c)) {
      append(el, c);
    } else if (c instanceof Node) {
      el.appendChild(c);
    } else {
      el.appendChild(document.createTextNode(String(c)));
    }
  }
}

// Replaces el's children.
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

// "2026-12-07 06:30:12 UTC" for unix ms; "" for none.
export function fmtTime(ms) {
  if (!ms) {
    return "";
  }
  return new Date(Number(ms)).toISOString().replace("T", " ").replace(/\.\d+Z$/, " UTC");
}

// "3 s", "4 min", "2 h", "5 d" ago/ahead of now.
export function fmtAge(ms) {
  if (!ms) {
    return "";
  }
  const d = Math.abs(Date.now() - Number(ms)) / 1000;
  const unit = d < 90 ? `${Math.round(d)} s` : d < 5400 ? `${Math.round(d / 60)} min`
    : d < 172800 ? `${Math.round(d / 3600)} h` : `${Math.round(d / 86400)} d`;
  return Number(ms) > Date.now() ? `in ${unit}` : `${unit} ago`;
}

export function fmtBytes(n) {
  if (!n) {
    return "0 B";
  }
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  let v = Number(n);
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v.toFixed(i === 0 ? 0 : 1)} ${units[i]}`;
}

// A table: columns [{title, cell(row) -> node|text, class?}], rows.
export function table(columns, rows, { empty = "Nothing to show.", caption } = {}) {
  if (rows.length === 0) {
    return h("p", { class: "empty" }, empty);
  }
  return h("div", { class: "table-wrap" },
    h("table", {},
      caption ? h("caption", { class: "muted" }, caption) : null,
      h("thead", {}, h("tr", {}, columns.map((c) =>
        h("th", { scope: "col", class: c.class }, c.title)))),
      h("tbody", {}, rows.map((r) => h("tr", {}, columns.map((c) =>
        h("td", { class: c.class }, c.cell(r))))))));
}

// A labelled input inside a .field; attrs go to the input.
export function field(labelText, attrs) {
  const id = attrs.id || `f-${attrs.name}`;
  return h("div", { class: "field" },
    h("label", { for: id }, labelText),
    h("input", { ...attrs, id }));
}

// A labelled select; options [[value, text], ...].
export function selectField(labelText, name, options, value = "") {
  const id = `f-${name}`;
  return h("div", { class: "field" },
    h("label", { for: id }, labelText),
    h("select", { id, name }, options.map(([v, t]) =>
      h("option", { value: v, selected: v === value }, t))));
}

// The form's non-empty values as an object.
export function formValues(form) {
  const out = {};
  for (const [k, v] of new FormData(form).entries()) {
    const s = String(v).trim();
    if (s !== "") {
      out[k] = s;
    }
  }
  return out;
}

// "datetime-local" value (taken as UTC) to unix ms, or undefined.
export function utcInputToMs(value) {
  if (!value) {
    return undefined;
  }
  const ms = Date.parse(`${value}Z`);
  return Number.isNaN(ms) ? undefined : ms;
}

export function badge(text, kind) {
  return h("span", { class: `badge ${kind || ""}` }, text);
}

// Shows a line in the notice bar (kind: "good" or "bad"); "" clears it.
export function notify(text, kind = "") {
  const el = document.getElementById("notice");
  el.className = kind;
  el.textContent = text;
}

// A modal confirmation: resolves true when the operator confirms.
// confirmText names the action on its button ("Replay 3").
export function confirmDialog(title, text, confirmText, { danger = false } = {}) {
  return new Promise((resolve) => {
    const dlg = h("dialog", { "aria-labelledby": "dlg-title" },
      h("h2", { id: "dlg-title" }, title),
      h("p", {}, text),
      h("form", { method: "dialog", class: "actions" },
        h("button", { value: "cancel", type: "submit" }, "Cancel"),
        h("button", { value: "ok", type: "submit", class: danger ? "danger" : "primary" },
          confirmText)));
    dlg.addEventListener("close", () => {
      resolve(dlg.returnValue === "ok");
      dlg.remove();
    });
    document.body.appendChild(dlg);
    dlg.showModal();
  });
}

// A button that runs fn (async) while disabled; errors go to the notice
// bar.
export function actionButton(text, fn, cls = "") {
  return h("button", { type: "button", class: cls, onclick: (e) => busy(e.target, fn) }, text);
}

// Runs fn with btn disabled; errors go to the notice bar.
export async function busy(btn, fn) {
  btn.disabled = true;
  try {
    return await fn();
  } catch (err) {
    notify(err.message, "bad");
    return undefined;
  } finally {
    btn.disabled = false;
  }
}
