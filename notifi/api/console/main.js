// The console's entry: learns the auth mode, asks for credentials when needed, and routes
// between pages by the URL's hash (#/notifications, #/n/<id>, #/overview, #/destinations,
// #/d/<id>).

import * as API from "./api.js";
import { h, refreshAges, replace } from "./dom.js";
import { notificationsPage } from "./list.js";
import { notificationPage } from "./detail.js";
import { overviewPage } from "./overview.js";
import { destinationsPage } from "./destinations.js";
import { destinationPage } from "./destination.js";

const $ = (id) => document.getElementById(id);
let stopView = () => {};
let meta = { page_size: 50, max_page_size: 200, statuses: null };

function route() {
  const hash = location.hash || "#/notifications";
  const [path, search = ""] = hash.slice(1).split("?");
  const params = new URLSearchParams(search);
  const one = path.match(/^\/n\/([^/]+)$/);
  if (one) return { page: "notification", render: notificationPage, id: decodeURIComponent(one[1]), params };
  if (path === "/overview") return { page: "overview", render: overviewPage, params };
  if (path === "/destinations") return { page: "destinations", render: destinationsPage, params };
  const stored = path.match(/^\/d\/([^/]+)$/);
  if (stored) return { page: "destination", render: destinationPage, id: decodeURIComponent(stored[1]), params };
  return { page: "notifications", render: notificationsPage, params };
}

function show() {
  stopView();
  stopView = () => {};
  const view = $("view");
  if (API.needsCredentials()) {
    replace(view);
    askForCredentials();
    return;
  }
  $("login").hidden = true;
  $("nav").hidden = false;
  $("sign-out").hidden = !API.usesCredentials();
  const session = API.getMode() === "cloudflare" ? "your Cloudflare Access login" : "";
  $("who").textContent = API.usesCredentials() ? `client ${API.credentials().id}` : session;
  const current = route();
  for (const link of $("nav").querySelectorAll("a")) {
    const page = link.getAttribute("href").slice(2);
    const active = page === current.page || (page === "notifications" && current.page === "notification")
      || (page === "destinations" && current.page === "destination");
    if (active) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  const section = h("section", { "aria-labelledby": "page-title" });
  replace(view, section);
  stopView = current.render(section, { ...current, meta }) || (() => {});
}

function askForCredentials(message = "") {
  stopView();
  stopView = () => {};
  replace($("view"));
  $("nav").hidden = true;
  $("sign-out").hidden = true;
  $("who").textContent = "";
  $("login").hidden = false;
  $("login-error").textContent = message;
  $("client-id").focus();
}

async function signIn(event) {
  event.preventDefault();
  const id = $("client-id").value.trim();
  const secret = $("client-secret").value;
  $("client-secret").value = ""; // not kept in the form, only for this tab's requests
  API.saveCredentials(id, secret);
  try {
    await API.api("GET", "/api/notifications?limit=1");
  } catch (error) {
    if (error.status !== 401) $("login-error").textContent = `The API answered: ${error.message}`;
    return; // a 401 has already brought the form back with its message
  }
  $("login-error").textContent = "";
  show();
  $("main").focus();
}

async function start() {
  const config = await fetch("/console/config.json", { cache: "no-store" }).then((r) => r.json());
  API.setMode(config.auth_mode);
  meta = { ...meta, ...config };
  // The statuses this server knows, from its own API description (public).
  try {
    const doc = await fetch("/api/openapi.json").then((r) => r.json());
    const params = doc.paths["/api/notifications"].get.parameters;
    meta.statuses = params.find((p) => p.name === "status").schema.enum;
  } catch { meta.statuses = null; }
  API.onUnauthorized((problem) => {
    const detail = problem && problem.detail ? ` (${problem.detail})` : "";
    askForCredentials(problem ? `Refused${detail}. Give a service token's id and secret.` : "");
  });
  $("login").addEventListener("submit", signIn);
  $("sign-out").addEventListener("click", () => { API.forgetCredentials(); show(); });
  window.addEventListener("hashchange", () => { show(); $("main").focus(); });
  setInterval(refreshAges, 5000);
  show();
}

start();
