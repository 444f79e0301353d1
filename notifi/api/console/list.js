// Notifications, newest first, kept live: every couple of seconds the first page is fetched
// again with the same filters and merged in by id (new ones appear on top, changed statuses
// update in place); older pages come from the keyset cursor on demand.

import { api, query } from "./api.js";
import { announce, badge, every, h, isoToLocal, label, localToIso, replace, target, when } from "./dom.js";

const POLL_MS = 2000;
const DESTINATION_TYPES = ["webhook", "email", "slack", "discord", "teams"];
const FALLBACK_STATUSES = ["scheduled", "pending", "delivering", "paused", "delivered",
  "partially_failed", "failed", "cancelled", "expired", "unmatched"];

function filtersForm(params, statuses) {
  const select = (id, text, options, value) => [
    h("label", { for: id }, text),
    h("select", { id, name: id },
      h("option", { value: "" }, "any"),
      options.map((o) => h("option", { value: o, selected: o === value }, label(o)))),
  ];
  const onsubmit = (event) => {
    event.preventDefault();
    const form = new FormData(event.target);
    const next = new URLSearchParams();
    for (const key of ["status", "type"]) if (form.get(key)) next.set(key, form.get(key));
    for (const key of ["after", "before"]) if (form.get(key)) next.set(key, localToIso(form.get(key)));
    location.hash = `#/notifications${next.size ? `?${next}` : ""}`;
  };
  // Open on a wide screen or when a filter is set; on a phone it starts folded.
  const open = [...params.keys()].length > 0 || matchMedia("(min-width: 641px)").matches;
  return h("details", { class: "filter-box", open }, h("summary", {}, "Filters"),
    h("form", { class: "filters", onsubmit, "aria-label": "Filter notifications" },
    h("div", {}, select("status", "Status", statuses, params.get("status"))),
    h("div", {}, select("type", "Destination type", DESTINATION_TYPES, params.get("type"))),
    h("div", {}, h("label", { for: "after" }, "Created after"),
      h("input", { id: "after", name: "after", type: "datetime-local", value: isoToLocal(params.get("after")) })),
    h("div", {}, h("label", { for: "before" }, "Created before"),
      h("input", { id: "before", name: "before", type: "datetime-local", value: isoToLocal(params.get("before")) })),
    h("div", { class: "buttons" }, h("button", { type: "submit" }, "Apply"),
      h("a", { href: "#/notifications", class: "button quiet" }, "Clear"))));
}

function searchForm() {
  const onsubmit = (event) => {
    event.preventDefault();
    const id = new FormData(event.target).get("id").trim();
    if (id) location.hash = `#/n/${encodeURIComponent(id)}`;
  };
  return h("form", { class: "search", role: "search", onsubmit },
    h("label", { for: "search-id" }, "Find by id"),
    h("input", { id: "search-id", name: "id", placeholder: "0190…", spellcheck: "false", autocomplete: "off" }),
    h("button", { type: "submit" }, "Open"));
}

// Each destination as a small mark with its state, readable by text as well as colour.
export function destinationStates(destinations) {
  return h("ul", { class: "states" }, destinations.map((d) =>
    h("li", { title: `${target(d)}: ${label(d.status)}` }, badge(d.status),
      h("span", { class: "visually-hidden" }, ` ${target(d)}`))));
}

function row(n) {
  return h("tr", { "data-id": n.id },
    h("td", {}, h("a", { href: `#/n/${n.id}` }, n.title || h("span", { class: "muted" }, "(no title)"))),
    h("td", {}, badge(n.status)),
    h("td", {}, destinationStates(n.destinations)),
    h("td", {}, when(n.created_at)),
    h("td", { class: "mono" }, n.id));
}

export function notificationsPage(section, { params, meta }) {
  document.title = "Notifications · Notifi";
  const filters = {
    status: params.get("status") || "",
    destination_type: params.get("type") || "",
    created_after: params.get("after") || "",
    created_before: params.get("before") || "",
  };
  const known = new Map(); // id -> [notification JSON, row]
  const body = h("tbody");
  const error = h("p", { class: "error", role: "alert" });
  const filtered = Object.values(filters).some(Boolean);
  const empty = h("p", { class: "muted" }, filtered ? "No notifications match." : "No notifications yet.");
  const older = h("button", { type: "button", class: "quiet", hidden: true }, "Load older");
  let cursor = null;
  let first = true;

  function merge(items, atEnd) {
    let added = 0;
    for (const n of items) {
      const json = JSON.stringify(n);
      const seen = known.get(n.id);
      if (seen) {
        if (seen[0] !== json) {
          const fresh = row(n);
          seen[1].replaceWith(fresh);
          known.set(n.id, [json, fresh]);
        }
        continue;
      }
      const tr = row(n);
      known.set(n.id, [json, tr]);
      added += 1;
      // Ids are time-ordered (UUIDv7), so string order is age order.
      const after = atEnd ? null : [...body.children].find((r) => r.dataset.id < n.id);
      body.insertBefore(tr, after || null);
    }
    empty.hidden = known.size > 0;
    return added;
  }

  async function refresh() {
    const page = await api("GET", `/api/notifications${query({ ...filters, limit: meta.page_size })}`);
    error.textContent = "";
    const added = merge(page.items, false);
    if (first) {
      cursor = page.next_cursor;
      older.hidden = !cursor;
      first = false;
    } else if (added) {
      announce(`${added} new notification${added === 1 ? "" : "s"}`);
    }
  }

  older.addEventListener("click", async () => {
    try {
      const page = await api("GET", `/api/notifications${query({ ...filters, limit: meta.page_size, cursor })}`);
      merge(page.items, true);
      cursor = page.next_cursor;
      older.hidden = !cursor;
    } catch (e) { error.textContent = e.message; }
  });

  replace(section,
    h("h1", { id: "page-title" }, "Notifications"),
    searchForm(),
    filtersForm(params, meta.statuses || FALLBACK_STATUSES),
    error,
    h("div", { class: "table-wrap" },
      h("table", { class: "list" },
        h("caption", { class: "visually-hidden" }, "Notifications, newest first; updates live"),
        h("thead", {}, h("tr", {},
          ["Title", "Status", "Destinations", "Created", "Id"].map((c) => h("th", { scope: "col" }, c)))),
        body)),
    empty, older);

  return every(POLL_MS, async () => {
    try { await refresh(); } catch (e) { error.textContent = e.message; throw e; }
  });
}
