// One stored destination (#/d/<id>): its fields (never a secret: the API returns none but a
// rotation's), 24 h health, and the actions: disable/enable, rotate the webhook secret (shown
// once), recover a window of failed deliveries (dry-run count first), delete. Also the pieces
// the list shares: what a destination points at, its state, its health, and the toggle.

import { api } from "./api.js";
import { announce, every, h, isoToLocal, localToIso, replace, when } from "./dom.js";

const POLL_MS = 5000;
const DAY_MS = 24 * 3600 * 1000;
export const PATH = "/api/destinations";
export const RESUME_NOTE = "Enabling a destination resumes its paused deliveries, oldest first.";

export function destinationPath(id) { return `${PATH}/${encodeURIComponent(id)}`; }

export function displayName(d) { return d.name || d.id; }

// Where it delivers: a URL, or the recipients. Header values and secrets are never returned.
export function targetText(d) {
  if (d.url) return d.url;
  if (Array.isArray(d.to)) return d.to.join(", ");
  return d.to || "—";
}

export function topicsText(d) {
  if (!d.topics.length) return "no topics";
  return d.topics.includes("*") ? "* (every topic)" : d.topics.join(", ");
}

export function rateText(d) { return d.rate_limit == null ? "no rate limit" : `${d.rate_limit}/s`; }

// Enabled or disabled in words (and a mark), with why and since when.
export function stateBadge(d) {
  const on = d.enabled;
  return h("span", { class: `badge s-${on ? "enabled" : "disabled"}` },
    h("span", { "aria-hidden": "true" }, on ? "●" : "‖"), on ? " enabled" : " disabled");
}

export function stateDetail(d) {
  if (d.enabled) return null;
  return h("div", { class: "small muted wrap" },
    d.disabled_reason || "no reason given", d.disabled_at ? [" · since ", when(d.disabled_at)] : null);
}

export function successRate(stats) {
  if (!stats.attempts_24h) return null;
  return Math.round((1000 * stats.successes_24h) / stats.attempts_24h) / 10;
}

// The 24 h health in text: attempts and success rate, then the last success and failure.
export function healthSummary(stats) {
  const rate = successRate(stats);
  if (rate == null) return h("span", { class: "muted" }, "no attempts in 24 h");
  const level = rate >= 99 ? "good" : rate >= 90 ? "fair" : "poor";
  return h("span", { class: `health h-${level}` },
    `${rate}% ok`, h("span", { class: "muted" }, ` of ${stats.attempts_24h} attempt${stats.attempts_24h === 1 ? "" : "s"}`));
}

// PATCH {"enabled": …}; answers the updated resource.
export async function setEnabled(d, enabled) {
  const updated = await api("PATCH", destinationPath(d.id), { enabled });
  announce(enabled ? `${displayName(d)} enabled: its paused deliveries resume, oldest first.`
    : `${displayName(d)} disabled: its deliveries wait as paused until it is enabled.`);
  return updated;
}

export function toggleButton(d, onclick) {
  return h("button", {
    type: "button", class: d.enabled ? "quiet" : "", "data-action": "toggle", onclick,
    "aria-label": `${d.enabled ? "Disable" : "Enable"} ${displayName(d)}`,
  }, d.enabled ? "Disable" : "Enable");
}

// A problem document's words for a refused action (a read-only client's 403 says so itself).
export function refused(what, e) { return `${what} refused: ${e.message}`; }

function facts(d) {
  const row = (name, value) => [h("dt", {}, name), h("dd", {}, value)];
  return h("dl", { class: "facts" },
    row("State", [stateBadge(d), stateDetail(d)]),
    row("Id", h("span", { class: "mono" }, d.id)),
    row("Type", d.type),
    row("Target", h("span", { class: "wrap" }, targetText(d))),
    d.subject ? row("Subject", d.subject) : null,
    d.header_names && d.header_names.length ? row("Headers", `${d.header_names.join(", ")} (values not shown)`) : null,
    d.type === "webhook" ? row("Signed", d.has_secret ? "yes (the secret is never shown again)" : "no") : null,
    row("Topics", topicsText(d)),
    row("Rate limit", rateText(d)),
    d.description ? row("Description", d.description) : null,
    row("Created", when(d.created_at)),
    row("Updated", when(d.updated_at)));
}

function health(stats) {
  const tile = (count, text) => h("div", { class: "tile" }, h("div", { class: "count" }, count), text);
  const rate = successRate(stats);
  return [
    h("div", { class: "tiles" },
      tile(stats.attempts_24h, "attempts"),
      tile(stats.successes_24h, "succeeded"),
      tile(stats.failures_24h, "failed"),
      tile(rate == null ? "—" : `${rate}%`, "success rate")),
    h("dl", { class: "facts health-times" },
      h("dt", {}, "Last success"), h("dd", {}, when(stats.last_success_at)),
      h("dt", {}, "Last failure"), h("dd", {}, when(stats.last_failure_at))),
  ];
}

// Rotation: the new secret is shown here once, never fetched again (a reload shows nothing).
function rotation(d) {
  const error = h("p", { class: "error", role: "alert" }); // shown where it happened
  const box = h("div", { class: "card secret-box", hidden: true, role: "region", "aria-label": "New secret" });
  const ask = h("button", { type: "button", "data-action": "rotate" }, "Rotate secret");
  const confirm = h("span", { class: "confirm", hidden: true },
    "Make a new signing secret? ",
    h("button", { type: "button", onclick: rotate }, "Yes, rotate"),
    h("button", { type: "button", class: "quiet", onclick: () => { confirm.hidden = true; ask.focus(); } }, "Keep it"));
  ask.addEventListener("click", () => { confirm.hidden = false; confirm.querySelector("button").focus(); });

  async function rotate() {
    error.textContent = "";
    try {
      const answer = await api("POST", `${destinationPath(d.id)}/rotate-secret`);
      confirm.hidden = true;
      showSecret(answer);
    } catch (e) { error.textContent = refused("Rotation", e); }
  }

  function showSecret({ secret, previous_secret_expires_at: until }) {
    const field = h("input", { id: "new-secret", class: "mono", readonly: true, value: secret, spellcheck: "false" });
    const copied = h("span", { class: "note", role: "status" });
    const copy = async () => {
      try { await navigator.clipboard.writeText(secret); } catch {
        field.select(); document.execCommand("copy"); // older browsers, or no clipboard access
      }
      copied.textContent = "Copied.";
    };
    replace(box,
      h("h3", {}, "New signing secret"),
      h("p", {}, h("strong", {}, "Shown once: "), "copy it now; the console cannot show it again."),
      h("label", { for: "new-secret" }, "Secret"),
      h("div", { class: "secret-line" }, field,
        h("button", { type: "button", onclick: copy }, "Copy"), copied),
      h("p", { class: "note" }, until
        ? ["The old secret keeps signing alongside the new one until ", when(until),
          ", so receivers verifying with either pass while they switch over."]
        : "The old secret keeps signing alongside the new one for the overlap, so receivers verifying with either pass."),
      h("button", { type: "button", class: "quiet", onclick: () => { replace(box); box.hidden = true; ask.focus(); } },
        "I have stored it: hide"));
    box.hidden = false;
    field.focus();
    field.select();
    announce("New secret made; it is shown once.");
  }

  return [h("div", { class: "actions" }, ask, confirm), error, box];
}

// Recover: the window's count first (dry run), then the same window for real.
function recovery(d) {
  const error = h("p", { class: "error", role: "alert" });
  const since = h("input", { id: "recover-since", name: "since", type: "datetime-local", required: true,
    value: isoToLocal(new Date(Date.now() - DAY_MS).toISOString()) });
  const until = h("input", { id: "recover-until", name: "until", type: "datetime-local" });
  const result = h("p", { class: "recover-result", role: "status" });
  const go = h("button", { type: "button", hidden: true }, "Send them again");
  const cancel = h("button", { type: "button", class: "quiet", hidden: true }, "Cancel");
  let counted = null; // what the dry run counted, sent again as it was

  const reset = () => { counted = null; go.hidden = cancel.hidden = true; };
  since.addEventListener("input", () => { reset(); replace(result); });
  until.addEventListener("input", () => { reset(); replace(result); });
  cancel.addEventListener("click", () => { reset(); replace(result); since.focus(); });

  async function count(event) {
    event.preventDefault();
    error.textContent = "";
    reset();
    replace(result);
    // "Until" left empty is fixed at now, so the real run covers exactly what was counted.
    const body = { since: localToIso(since.value), until: until.value ? localToIso(until.value) : new Date().toISOString() };
    try {
      const { count: n } = await api("POST", `${destinationPath(d.id)}/recover?dry_run=true`, body);
      replace(result, `${n} failed deliver${n === 1 ? "y" : "ies"} would be sent again.`);
      if (n > 0) { counted = body; go.hidden = cancel.hidden = false; go.focus(); }
    } catch (e) { error.textContent = refused("Recover", e); }
  }

  go.addEventListener("click", async () => {
    error.textContent = "";
    try {
      const { count: n } = await api("POST", `${destinationPath(d.id)}/recover`, counted);
      reset();
      replace(result, `${n} failed deliver${n === 1 ? "y was" : "ies were"} sent again.`);
    } catch (e) { error.textContent = refused("Recover", e); }
  });

  return h("form", { class: "recover", onsubmit: count, "aria-labelledby": "recover-title" },
    h("h2", { id: "recover-title" }, "Recover failed deliveries"),
    h("p", { class: "note" }, "Sends every delivery to this destination that ended failed in the window once more ",
      "(at most 14 days back). The count comes first; nothing is sent until you confirm."),
    h("div", { class: "filters" },
      h("div", {}, h("label", { for: "recover-since" }, "Failed since"), since),
      h("div", {}, h("label", { for: "recover-until" }, "Until (empty: now)"), until),
      h("div", { class: "buttons" }, h("button", { type: "submit" }, "Count failed deliveries"))),
    error, result, h("div", { class: "actions" }, go, cancel));
}

export function destinationPage(section, { id }) {
  document.title = "Destination · Notifi";
  const path = destinationPath(id);
  const title = h("h1", { id: "page-title" }, "Destination");
  const error = h("p", { class: "error", role: "alert" });
  const summary = h("div");
  const healthBox = h("div");
  const toggleBox = h("span");
  const tools = h("div");
  let current = null;
  let shown = "";

  const del = h("button", { type: "button", class: "danger", "data-action": "delete" }, "Delete");
  const confirmDelete = h("span", { class: "confirm", hidden: true },
    "Delete this destination? What is still undelivered to it (pending, scheduled, delivering or paused) is cancelled. ",
    h("button", { type: "button", class: "danger", onclick: remove }, "Yes, delete"),
    h("button", { type: "button", class: "quiet", onclick: () => { confirmDelete.hidden = true; del.focus(); } }, "Keep it"));
  del.addEventListener("click", () => { confirmDelete.hidden = false; confirmDelete.querySelector("button").focus(); });

  async function remove() {
    error.textContent = "";
    try {
      await api("DELETE", path);
      announce(`${displayName(current)} deleted; its undelivered deliveries were cancelled.`);
      location.hash = "#/destinations";
    } catch (e) { error.textContent = refused("Delete", e); }
  }

  async function toggle() {
    error.textContent = "";
    try {
      show(await setEnabled(current, !current.enabled));
      toggleBox.querySelector("button").focus();
    } catch (e) { error.textContent = refused(current.enabled ? "Disable" : "Enable", e); }
  }

  function show(d) {
    const first = current == null;
    current = d;
    const json = JSON.stringify(d);
    if (json === shown) return;
    shown = json;
    title.textContent = displayName(d);
    document.title = `${displayName(d)} · Notifi`;
    replace(summary, facts(d));
    replace(healthBox, health(d.stats));
    replace(toggleBox, toggleButton(d, toggle));
    // Built once: a refresh must not wipe a secret being shown or a recover under way.
    if (first) replace(tools, d.type === "webhook" ? [h("h2", {}, "Signing secret"), rotation(d)] : null, recovery(d));
  }

  replace(section,
    h("p", {}, h("a", { href: "#/destinations" }, "← All destinations")),
    title, error, summary,
    h("div", { class: "actions", role: "group", "aria-label": "Actions" }, toggleBox, del, confirmDelete),
    h("p", { class: "note" }, RESUME_NOTE),
    h("h2", {}, "Health, last 24 h"), healthBox,
    tools);

  let gone = false; // a 404 stays a 404: stop asking
  return every(POLL_MS, async () => {
    if (gone) return;
    try { show(await api("GET", path)); } catch (e) {
      gone = e.status === 404;
      error.textContent = gone ? "No destination has this id." : e.message;
      throw e;
    }
  });
}
