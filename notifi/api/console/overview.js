// A small overview of a recent window, from GET /api/stats (the caller's own notifications, an
// admin's: everyone's): accepted and per-status counts, what is due within the hour, and the
// slowest destination servers.

import { api, query } from "./api.js";
import { every, h, label, replace, when } from "./dom.js";

const REFRESH_MS = 10000;
const WINDOWS = { "1 hour": 3600, "24 hours": 86400, "7 days": 604800 };
const DUE_SOON_S = 3600;
const SHOWN = ["delivered", "failed", "partially_failed", "expired"];

function tile(name, count) {
  return h("div", { class: "tile" },
    h("div", { class: "count" }, String(count)),
    h("div", { class: "name" }, name));
}

const ms = (value) => `${value.toLocaleString(undefined, { maximumFractionDigits: 1 })} ms`;

function hostsTable(hosts) {
  if (!hosts.length) return h("p", { class: "muted" }, "No attempts in this window.");
  return h("div", { class: "table-wrap" },
    h("table", { class: "hosts" },
      h("caption", { class: "visually-hidden" }, "Slowest destination servers, slowest first"),
      h("thead", {}, h("tr", {},
        ["Server", "Attempts", "Failures", "p50", "p95", "Last failure"]
          .map((c, i) => h("th", { scope: "col", class: i && i < 5 ? "num" : null }, c)))),
      h("tbody", {}, hosts.map((s) => h("tr", {},
        h("th", { scope: "row", class: "mono" }, s.host),
        h("td", { class: "num" }, String(s.attempts)),
        h("td", { class: "num" }, String(s.failures)),
        h("td", { class: "num" }, ms(s.p50_ms)),
        h("td", { class: "num" }, ms(s.p95_ms)),
        h("td", {}, when(s.last_failure_at)))))));
}

export function overviewPage(section, { params }) {
  document.title = "Overview · Notifi";
  const chosen = WINDOWS[params.get("window")] ? params.get("window") : "24 hours";
  const tiles = h("div", { class: "tiles", "aria-live": "polite" });
  const hosts = h("div", { id: "slowest-hosts" });
  const cut = h("p", { class: "note", hidden: true });
  const error = h("p", { class: "error", role: "alert" });
  let shown = "";

  async function refresh() {
    const since = new Date(Date.now() - WINDOWS[chosen] * 1000).toISOString();
    const stats = await api("GET", `/api/stats${query({ since, due_within: DUE_SOON_S })}`);
    error.textContent = "";
    const figures = [
      ["accepted", stats.accepted],
      ...SHOWN.map((status) => [label(status), stats.by_status[status] ?? 0]),
      // A lower bound when the server's bound on due deliveries looked at was reached.
      ["due within an hour", `${stats.due_soon_truncated ? "≥ " : ""}${stats.due_soon}`],
    ];
    // Only what changed is redrawn, so the live region stays quiet when nothing moved.
    const signature = JSON.stringify([figures, stats.slowest_hosts, stats.attempts_truncated]);
    if (signature === shown) return;
    shown = signature;
    replace(tiles, figures.map((f) => tile(...f)));
    replace(hosts, hostsTable(stats.slowest_hosts));
    cut.hidden = !stats.attempts_truncated;
    cut.textContent = `Servers are ranked from the newest ${stats.attempts_read_limit.toLocaleString()} `
      + "attempts, which do not reach back to the window's start.";
  }

  const pick = h("select", { id: "window",
    onchange: (e) => { location.hash = `#/overview?window=${encodeURIComponent(e.target.value)}`; } },
  Object.keys(WINDOWS).map((w) => h("option", { value: w, selected: w === chosen }, w)));

  replace(section,
    h("h1", { id: "page-title" }, "Overview"),
    h("p", {}, h("label", { for: "window" }, "Created in the last "), pick),
    error, tiles,
    h("h2", {}, "Slowest servers"),
    h("p", { class: "note" }, "By the 95th percentile of attempt durations in the window; "
      + "email counts as one server."),
    hosts, cut,
    h("p", { class: "note" }, "Refreshed every 10 seconds."));

  return every(REFRESH_MS, async () => {
    try { await refresh(); } catch (e) { error.textContent = e.message; throw e; }
  });
}
