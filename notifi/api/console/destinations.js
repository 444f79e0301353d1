// The client's stored destinations (issue 12), newest first, paged like the notifications list
// (keyset cursor on demand) and refreshed every few seconds for their 24 h health. Filters are
// the API's (topic, enabled); each row can be disabled or enabled in place, and links to the
// destination's page for rotation, recovery and deletion.

import { api, query } from "./api.js";
import { every, h, replace, when } from "./dom.js";
import {
  displayName, healthSummary, PATH, rateText, refused, RESUME_NOTE, setEnabled, stateBadge,
  stateDetail, targetText, toggleButton, topicsText,
} from "./destination.js";

const POLL_MS = 5000;

function filtersForm(params) {
  const onsubmit = (event) => {
    event.preventDefault();
    const form = new FormData(event.target);
    const next = new URLSearchParams();
    for (const key of ["topic", "enabled"]) {
      const value = String(form.get(key) || "").trim();
      if (value) next.set(key, value);
    }
    location.hash = `#/destinations${next.size ? `?${next}` : ""}`;
  };
  const enabled = params.get("enabled") || "";
  return h("form", { class: "filters", onsubmit, "aria-label": "Filter destinations" },
    h("div", {}, h("label", { for: "d-topic" }, "Topic"),
      h("input", { id: "d-topic", name: "topic", value: params.get("topic") || "", placeholder: "deploys",
        spellcheck: "false", autocomplete: "off" })),
    h("div", {}, h("label", { for: "d-enabled" }, "State"),
      h("select", { id: "d-enabled", name: "enabled" },
        [["", "any"], ["true", "enabled"], ["false", "disabled"]].map(([value, text]) =>
          h("option", { value, selected: value === enabled }, text)))),
    h("div", { class: "buttons" }, h("button", { type: "submit" }, "Apply"),
      h("a", { href: "#/destinations", class: "button quiet" }, "Clear")));
}

function row(d, onToggle) {
  const stats = d.stats;
  return h("tr", { "data-id": d.id, class: d.enabled ? null : "is-disabled" },
    h("td", { class: "wrap" }, h("a", { href: `#/d/${d.id}` }, displayName(d)),
      d.name ? h("div", { class: "mono small muted" }, d.id) : null),
    h("td", {}, d.type),
    h("td", { class: "wrap" }, targetText(d)),
    h("td", { class: "wrap" }, topicsText(d)),
    h("td", {}, stateBadge(d), stateDetail(d)),
    h("td", {}, rateText(d)),
    h("td", { class: "health-cell" }, healthSummary(stats),
      h("div", { class: "small" }, "last success ", when(stats.last_success_at)),
      h("div", { class: "small" }, "last failure ", when(stats.last_failure_at))),
    h("td", {}, toggleButton(d, () => onToggle(d))));
}

export function destinationsPage(section, { params, meta }) {
  document.title = "Destinations · Notifi";
  const filters = { topic: params.get("topic") || "", enabled: params.get("enabled") || "" };
  const known = new Map(); // id -> [destination JSON, row]
  const body = h("tbody");
  const error = h("p", { class: "error", role: "alert" }); // an action's refusal, kept until the next action
  const stale = h("p", { class: "error", role: "alert" }); // the refresh's own, cleared when it works
  const filtered = Object.values(filters).some(Boolean);
  const empty = h("p", { class: "muted", hidden: true }, filtered ? "No destinations match."
    : "No stored destinations yet. Create them through the API (POST /api/destinations).");
  const more = h("button", { type: "button", class: "quiet", hidden: true }, "Load more");
  let cursor = null;
  let first = true;

  // A changed row is rebuilt; if the keyboard was on it, it stays on the same control.
  function put(d) {
    const seen = known.get(d.id);
    const json = JSON.stringify(d);
    if (seen && seen[0] === json) return;
    const fresh = row(d, toggle);
    if (seen) {
      const focused = seen[1].contains(document.activeElement) && document.activeElement.dataset.action;
      seen[1].replaceWith(fresh);
      if (focused) fresh.querySelector(`[data-action="${focused}"]`)?.focus();
    } else {
      // Ids are time-ordered (UUIDv7) and the list is newest first.
      const after = [...body.children].find((r) => r.dataset.id < d.id);
      body.insertBefore(fresh, after || null);
    }
    known.set(d.id, [json, fresh]);
  }

  function drop(id) {
    const seen = known.get(id);
    if (seen) { seen[1].remove(); known.delete(id); }
  }

  async function toggle(d) {
    error.textContent = "";
    try {
      const updated = await setEnabled(d, !d.enabled);
      const state = updated.enabled ? "true" : "false";
      if (filters.enabled && filters.enabled !== state) drop(updated.id); // left the filter
      else put(updated);
      empty.hidden = known.size > 0;
    } catch (e) { error.textContent = refused(d.enabled ? "Disable" : "Enable", e); }
  }

  async function refresh() {
    const page = await api("GET", `${PATH}${query({ ...filters, limit: meta.page_size })}`);
    stale.textContent = "";
    for (const d of page.items) put(d);
    // Gone from the first page's range (deleted elsewhere, or out of the filter): dropped.
    const ids = new Set(page.items.map((d) => d.id));
    const lowest = page.next_cursor ? page.items.at(-1).id : "";
    for (const id of [...known.keys()]) if (id >= lowest && !ids.has(id)) drop(id);
    if (first) {
      cursor = page.next_cursor;
      more.hidden = !cursor;
      first = false;
    }
    empty.hidden = known.size > 0;
  }

  more.addEventListener("click", async () => {
    try {
      const page = await api("GET", `${PATH}${query({ ...filters, limit: meta.page_size, cursor })}`);
      for (const d of page.items) put(d);
      cursor = page.next_cursor;
      more.hidden = !cursor;
    } catch (e) { error.textContent = e.message; }
  });

  replace(section,
    h("h1", { id: "page-title" }, "Destinations"),
    filtersForm(params),
    h("p", { class: "note" }, RESUME_NOTE, " Disabled ones keep their deliveries waiting as paused; nothing is dropped."),
    error, stale,
    h("div", { class: "table-wrap" },
      h("table", { class: "list destinations" },
        h("caption", { class: "visually-hidden" }, "Stored destinations, newest first, with their health over the last 24 hours"),
        h("thead", {}, h("tr", {},
          ["Destination", "Type", "Target", "Topics", "State", "Rate limit", "Health, 24 h", "Action"]
            .map((c) => h("th", { scope: "col" }, c)))),
        body)),
    empty, more);

  return every(POLL_MS, async () => {
    try { await refresh(); } catch (e) { stale.textContent = e.message; throw e; }
  });
}
