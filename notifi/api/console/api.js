// The public API, called with the caller's own credentials. In `tokens` mode the service-token
// pair lives in sessionStorage (this tab only) and goes out as the Cloudflare Access headers;
// in `cloudflare` mode the browser's Access session is enough: Cloudflare adds its JWT and the
// API takes the person as client `user:<email>`; only when that is refused (401) is a service
// token asked for instead (Access turns those headers into a JWT too); in `none` mode nothing
// is needed.

const KEY = "notifi.console.credentials";
let mode = "none";
let unauthorized = () => {};

export class ApiError extends Error {
  constructor(status, problem) {
    super((problem && (problem.detail || problem.title)) || `HTTP ${status}`);
    this.status = status;
    this.problem = problem;
  }
}

export function setMode(value) { mode = value; }
export function getMode() { return mode; }
export function onUnauthorized(callback) { unauthorized = callback; }

export function credentials() {
  try { return JSON.parse(sessionStorage.getItem(KEY)); } catch { return null; }
}
export function saveCredentials(id, secret) {
  sessionStorage.setItem(KEY, JSON.stringify({ id, secret }));
}
export function forgetCredentials() { sessionStorage.removeItem(KEY); }
export function needsCredentials() { return mode === "tokens" && !credentials(); }
export function usesCredentials() { return mode !== "none" && Boolean(credentials()); }

export async function api(method, path, body) {
  const headers = { Accept: "application/json" };
  const given = mode === "none" ? null : credentials();
  if (needsCredentials()) {
    unauthorized(null);
    throw new ApiError(401, { detail: "No credentials given." });
  }
  if (given) {
    headers["CF-Access-Client-Id"] = given.id;
    headers["CF-Access-Client-Secret"] = given.secret;
  }
  const init = { method, headers, credentials: "same-origin", cache: "no-store" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  const text = await response.text();
  let doc = null;
  try { doc = text ? JSON.parse(text) : null; } catch { doc = { detail: text.slice(0, 200) }; }
  // Refused credentials are forgotten and asked for again. A 403 is not a refusal of who
  // the caller is (a read-only client writing, say): it is shown where it happened.
  if (response.status === 401) {
    forgetCredentials();
    unauthorized(doc);
  }
  if (!response.ok) throw new ApiError(response.status, doc);
  return doc;
}

// A query string from an object, leaving out empty values.
export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== "" && v != null) q.set(k, v);
  const s = q.toString();
  return s ? `?${s}` : "";
}
