// One notification: its content, each destination's state, the attempt timeline, and the
// actions (retry, delete, reschedule while scheduled). Refreshed every couple of seconds, so a
// retry's new attempt shows up by itself.

import { api, ApiError } from "./api.js";
import { announce, badge, every, h, isoToLocal, label, localToIso, replace, target, when } from "./dom.js";

const POLL_MS = 2000;
const RETRYABLE = new Set(["failed", "cancelled", "expired"]);

function facts(n) {
  const row = (name, value) => [h("dt", {}, name), h("dd", {}, value)];
  return h("dl", { class: "facts" },
    row("Status", badge(n.status)),
    row("Id", h("span", { class: "mono" }, n.id)),
    row("Created", when(n.created_at)),
    row("Scheduled for", n.scheduled_at ? when(n.scheduled_at) : "now"),
    n.expires_at !== undefined ? row("Expires", when(n.expires_at)) : null,
    row("Delivered", when(n.delivered_at)),
    n.deleted_at ? row("Deleted", when(n.deleted_at)) : null);
}

function content(n) {
  return [
    h("h2", {}, "Content"),
    h("pre", { class: "text" }, n.body),
    n.data && Object.keys(n.data).length
      ? [h("h3", {}, "Data"), h("pre", { class: "text" }, JSON.stringify(n.data, null, 2))] : null,
  ];
}

function destinations(n) {
  return h("div", { class: "table-wrap" }, h("table", {},
    h("caption", { class: "visually-hidden" }, "Destinations"),
    h("thead", {}, h("tr", {}, ["#", "Destination", "Status", "Attempts", "Last reply", "Last error", "Next attempt", "Delivered"]
      .map((c) => h("th", { scope: "col" }, c)))),
    h("tbody", {}, n.destinations.map((d) => h("tr", {},
      h("td", {}, d.position),
      h("td", { class: "wrap" }, target(d), d.has_secret ? h("span", { class: "muted" }, " (signed)") : null),
      h("td", {}, badge(d.status)),
      h("td", {}, d.attempts),
      h("td", {}, d.last_status_code ?? "—"),
      h("td", { class: "wrap" }, d.last_error || "—"),
      h("td", {}, when(d.next_attempt_at)),
      h("td", {}, when(d.delivered_at)))))));
}

function timeline(attempts) {
  if (!attempts.length) return h("p", { class: "muted" }, "No attempts yet.");
  const sorted = [...attempts].sort((a, b) => a.started_at.localeCompare(b.started_at));
  return h("ol", { class: "timeline" }, sorted.map((a) => h("li", { class: `o-${a.outcome}` },
    h("div", { class: "line" },
      when(a.started_at),
      h("strong", {}, ` ${label(a.outcome)}`),
      ` · attempt ${a.attempt} · ${target(a.destination)} · ${a.duration_ms} ms`,
      a.status_code != null ? ` · reply ${a.status_code}` : ""),
    a.error ? h("div", { class: "wrap muted" }, a.error) : null)));
}

export function notificationPage(section, { id }) {
  document.title = "Notification · Notifi";
  const path = `/api/notifications/${encodeURIComponent(id)}`;
  const title = h("h1", { id: "page-title" }, "Notification");
  const error = h("p", { class: "error", role: "alert" });
  const summary = h("div");
  const body = h("div");
  const dests = h("div");
  const attemptsBox = h("div");
  let current = null;
  let shown = "";

  const retry = h("button", { type: "button" }, "Retry failed deliveries");
  const del = h("button", { type: "button", class: "danger" }, "Delete");
  const confirmBox = h("span", { class: "confirm", hidden: true },
    "Delete this notification? Undelivered destinations are cancelled. ",
    h("button", { type: "button", class: "danger", onclick: () => act("DELETE", "", undefined, "Deleted.") }, "Yes, delete"),
    h("button", { type: "button", class: "quiet", onclick: () => { confirmBox.hidden = true; del.focus(); } }, "Keep it"));
  del.addEventListener("click", () => { confirmBox.hidden = false; confirmBox.querySelector("button").focus(); });
  retry.addEventListener("click", () => act("POST", "/retry", undefined, "Retry queued."));

  const newTime = h("input", { id: "new-time", type: "datetime-local", required: true });
  const reschedule = h("form", { class: "reschedule", hidden: true,
    onsubmit: (e) => { e.preventDefault(); act("PATCH", "", { scheduled_at: localToIso(newTime.value) }, "Rescheduled."); } },
    h("label", { for: "new-time" }, "New time"), newTime,
    h("button", { type: "submit" }, "Reschedule"),
    h("button", { type: "button", class: "quiet",
      onclick: () => act("PATCH", "", { scheduled_at: null }, "Moved to now.") }, "Send now"));

  async function act(method, suffix, payload, done) {
    error.textContent = "";
    try {
      await api(method, path + suffix, payload);
      confirmBox.hidden = true;
      announce(done);
      await refresh();
    } catch (e) {
      if (e instanceof ApiError && method === "PATCH" && (e.status === 404 || e.status === 405) && current) {
        error.textContent = "This server cannot reschedule yet.";
      } else {
        error.textContent = `${method === "POST" ? "Retry" : method === "DELETE" ? "Delete" : "Reschedule"} refused: ${e.message}`;
      }
    }
  }

  async function refresh() {
    const [n, attempts] = await Promise.all([api("GET", path), api("GET", `${path}/attempts`)]);
    current = n;
    const json = JSON.stringify([n, attempts.items]);
    if (json === shown) return;
    const more = shown && attempts.items.length > JSON.parse(shown)[1].length;
    shown = json;
    title.textContent = n.title || "Notification";
    document.title = `${n.title || "Notification"} · Notifi`;
    replace(summary, facts(n));
    replace(body, content(n));
    replace(dests, destinations(n));
    replace(attemptsBox, timeline(attempts.items));
    retry.disabled = !n.destinations.some((d) => RETRYABLE.has(d.status));
    del.disabled = Boolean(n.deleted_at);
    reschedule.hidden = n.status !== "scheduled";
    if (!reschedule.hidden && !newTime.value) newTime.value = isoToLocal(n.scheduled_at);
    if (more) announce("A new attempt was recorded.");
  }

  replace(section,
    h("p", {}, h("a", { href: "#/notifications" }, "← All notifications")),
    title, error, summary,
    h("div", { class: "actions", role: "group", "aria-label": "Actions" }, retry, del, confirmBox, reschedule),
    body,
    h("h2", {}, "Destinations"), dests,
    h("h2", { id: "timeline-title" }, "Attempts"),
    attemptsBox);

  let gone = false; // a 404 stays a 404: stop asking
  return every(POLL_MS, async () => {
    if (gone) return;
    try { await refresh(); } catch (e) {
      gone = e.status === 404;
      error.textContent = gone ? "No notification has this id." : e.message;
      throw e;
    }
  });
}
