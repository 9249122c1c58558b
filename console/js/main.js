// The console's shell: log in and out, and hash routing to one module per
// page (pages/*.js, each exporting render(view, params) that fills view).
// Routes: #/overview, #/messages, #/message/<id>, #/dlq, #/schedules,
// #/queues, #/groups, #/flow, #/workflows, #/workflows/<run id>.
import { api, clearToken, setToken, token } from "./api.js";
import { fill, h, notify } from "./dom.js";
import * as dlq from "./pages/dlq.js";
import * as flow from "./pages/flow.js";
import * as groups from "./pages/groups.js";
import * as message from "./pages/message.js";
import * as messages from "./pages/messages.js";
import * as overview from "./pages/overview.js";
import * as queues from "./pages/queues.js";
import * as schedules from "./pages/schedules.js";
import * as workflows from "./pages/workflows.js";

const pages = {
  overview, messages, message, dlq, schedules, queues, groups, flow, workflows,
};

const $ = (id) => document.getElementById(id);

function showLogin(error = "") {
  $("nav").hidden = true;
  $("logout").hidden = true;
  $("login").hidden = false;
  fill($("view"));
  $("login-error").textContent = error;
  $("token").focus();
}

// "#/message/msg_1?x=1" -> { name: "message", arg: "msg_1" }
function parseHash() {
  const path = location.hash.replace(/^#\/?/, "").split("?")[0];
  const [name, ...rest] = path.split("/");
  return { name: pages[name] ? name : "overview", arg: decodeURIComponent(rest.join("/")) };
}

let generation = 0;

// moveFocus: put the focus on the new page's heading (after navigation).
async function route(moveFocus = false) {
  if (!token()) {
    showLogin();
    return;
  }
  $("login").hidden = true;
  $("nav").hidden = false;
  $("logout").hidden = false;
  const { name, arg } = parseHash();
  const nav = name === "message" ? "messages" : name;
  for (const a of $("nav").querySelectorAll("a")) {
    if (a.getAttribute("href") === `#/${nav}`) {
      a.setAttribute("aria-current", "page");
    } else {
      a.removeAttribute("aria-current");
    }
  }
  notify("");
  const mine = ++generation;
  const view = fill($("view"), h("p", { class: "muted" }, "Loading…"));
  try {
    await pages[name].render(view, arg, () => mine === generation);
    // A new page: keyboard and screen-reader users start at its heading.
    const heading = mine === generation ? view.querySelector("h1") : null;
    if (heading && moveFocus) {
      heading.tabIndex = -1;
      heading.focus({ preventScroll: true });
    }
  } catch (err) {
    if (mine !== generation) {
      return;
    }
    if (err.status === 401) {
      clearToken();
      showLogin(err.message);
      return;
    }
    fill(view, h("p", { class: "error", role: "alert" }, err.message));
  }
}

async function login(event) {
  event.preventDefault();
  const value = $("token").value.trim();
  if (!value) {
    return;
  }
  setToken(value);
  try {
    // Any read proves the token; the cluster view is the first page anyway.
    await api("GET", "/v2/qraft/cluster");
  } catch (err) {
    clearToken();
    showLogin(err.status === 403
      ? `${err.message} (the console needs a token with the 'read' scope)`
      : err.message);
    return;
  }
  $("token").value = "";
  if (!location.hash || location.hash === "#/" || location.hash === "#") {
    location.hash = "#/overview";
  }
  await route(true);
}

function logout() {
  clearToken();
  location.hash = "";
  showLogin();
}

$("login-form").addEventListener("submit", login);
$("logout").addEventListener("click", logout);
window.addEventListener("hashchange", () => route(true));
route();
