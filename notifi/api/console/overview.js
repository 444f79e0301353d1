// A small overview of a recent window: accepted, delivered, failed, and what is due soon.
// The API has no count endpoint, so each figure counts one bounded page of the list API
// (its largest page size); "at least" marks a page that was full.

import { api, query } from "./api.js";
import { every, h, label, replace } from "./dom.js";

const REFRESH_MS = 10000;
const WINDOWS = { "1 hour": 3600, "24 hours": 86400, "7 days": 604800 };
const DUE_SOON_S = 3600;

function tile(name, count, full, note) {
  return h("div", { class: "tile" },
    h("div", { class: "count" }, full ? `≥ ${count}` : String(count)),
    h("div", { class: "name" }, name),
    note ? h("div", { class: "muted small" }, note) : null);
}

export function overviewPage(section, { params, meta }) {
  document.title = "Overview · Notifi";
  const chosen = WINDOWS[params.get("window")] ? params.get("window") : "24 hours";
  const tiles = h("div", { class: "tiles", "aria-live": "polite" });
  const error = h("p", { class: "error", role: "alert" });
  const limit = meta.max_page_size;
  let shown = "";

  const count = async (filters) => {
    const page = await api("GET", `/api/notifications${query({ ...filters, limit })}`);
    return { items: page.items, full: Boolean(page.next_cursor) };
  };

  async function refresh() {
    const since = new Date(Date.now() - WINDOWS[chosen] * 1000).toISOString();
    const ended = ["delivered", "failed", "partially_failed"];
    if ((meta.statuses || []).includes("expired")) ended.push("expired");
    const [all, scheduled, ...counts] = await Promise.all([
      count({ created_after: since }),
      count({ status: "scheduled" }),
      ...ended.map((status) => count({ created_after: since, status })),
    ]);
    const horizon = Date.now() + DUE_SOON_S * 1000;
    const dueSoon = scheduled.items.filter((n) => Date.parse(n.scheduled_at) <= horizon).length;
    const figures = [
      ["accepted", all.items.length, all.full],
      ...ended.map((status, i) => [label(status), counts[i].items.length, counts[i].full]),
      ["due within an hour", dueSoon, false,
        scheduled.full ? `among the ${limit} newest scheduled` : "all scheduled counted"],
    ];
    error.textContent = "";
    const signature = JSON.stringify(figures);
    if (signature === shown) return; // unchanged: the live region stays quiet
    shown = signature;
    replace(tiles, figures.map((f) => tile(...f)));
  }

  const pick = h("select", { id: "window",
    onchange: (e) => { location.hash = `#/overview?window=${encodeURIComponent(e.target.value)}`; } },
  Object.keys(WINDOWS).map((w) => h("option", { value: w, selected: w === chosen }, w)));

  replace(section,
    h("h1", { id: "page-title" }, "Overview"),
    h("p", {}, h("label", { for: "window" }, "Created in the last "), pick),
    error, tiles,
    h("p", { class: "note" },
      `Counted from one page of up to ${limit} notifications per figure (the API has no count `,
      "endpoint); “≥” means there are more. Refreshed every 10 seconds."));

  return every(REFRESH_MS, async () => {
    try { await refresh(); } catch (e) { error.textContent = e.message; throw e; }
  });
}
