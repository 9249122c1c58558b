// The console's one way to the node: the REST API (docs/api.md, section 5)
// on the origin that served the console, with the operator's token from
// sessionStorage (this tab only; gone when it closes or on log out).
// Every call either resolves to the parsed JSON answer (null for an empty
// body) or throws an ApiError whose message says what the node answered.

const TOKEN_KEY = "qraft.token";

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

export function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

export function setToken(value) {
  sessionStorage.setItem(TOKEN_KEY, value);
}

export function clearToken() {
  sessionStorage.removeItem(TOKEN_KEY);
}

// What a failed answer means to an operator.
function describe(status, error) {
  if (status === 401) {
    return "401: this node does not accept that token (log out and paste another).";
  }
  if (status === 403) {
    return `403: ${error || "the token lacks the scope this needs"}`;
  }
  return `${status}: ${error || "the node answered an error without a message"}`;
}

// Query from an object: arrays repeat the name; empty values are left out.
export function query(params) {
  const q = new URLSearchParams();
  for (const [name, value] of Object.entries(params || {})) {
    for (const v of Array.isArray(value) ? value : [value]) {
      if (v !== undefined && v !== null && v !== "") {
        q.append(name, String(v));
      }
    }
  }
  const s = q.toString();
  return s ? `?${s}` : "";
}

// method, path (under the origin, e.g. "/v2/dlq"), options: params (query
// object), body (a string, or an object sent as JSON), headers.
export async function api(method, path, { params, body, headers } = {}) {
  const h = { ...(headers || {}) };
  const t = token();
  if (t) {
    h.Authorization = `Bearer ${t}`;
  }
  let payload = body;
  if (body !== undefined && typeof body !== "string") {
    payload = JSON.stringify(body);
    h["Content-Type"] = "application/json";
  }
  let res;
  try {
    res = await fetch(path + query(params), {
      method, headers: h, body: payload, cache: "no-store",
      credentials: "omit",
    });
  } catch (err) {
    throw new ApiError(0, `the node could not be reached: ${err.message}`);
  }
  const text = await res.text();
  let json = null;
  if (text) {
    try {
      json = JSON.parse(text);
    } catch {
      json = null;
    }
  }
  if (!res.ok) {
    const error = json && typeof json.error === "string" ? json.error : text.trim();
    throw new ApiError(res.status, describe(res.status, error));
  }
  return json;
}
