// Building the page: elements from data with textContent only (never HTML from data), time
// formatting, status badges and the live region.

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value == null || value === false) continue;
    if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "class") el.className = value;
    else el.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat(Infinity)) {
    if (child == null || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

export function replace(el, ...children) {
  el.replaceChildren(...children.flat(Infinity).filter((c) => c != null && c !== false));
}

const STATUS_MARK = {
  delivered: "✓", failed: "✕", partially_failed: "◐", cancelled: "⊘", expired: "⊗",
  scheduled: "◷", pending: "•", delivering: "→", paused: "‖", unmatched: "∅",
};

// The mark is for the eye only; the words are what a screen reader says.
export function badge(status) {
  return h("span", { class: `badge s-${status}` },
    h("span", { "aria-hidden": "true" }, STATUS_MARK[status] || "•"), ` ${label(status)}`);
}

export function label(status) { return String(status).replaceAll("_", " "); }

// What a destination is, without anything secret (the API never returns secrets anyway).
export function target(d) {
  return d.name ? `${d.type} “${d.name}”` : d.url ? d.url : d.type;
}

export function when(iso) {
  if (!iso) return h("span", { class: "muted" }, "—");
  const at = new Date(iso);
  return h("time", { datetime: iso, title: iso }, at.toLocaleString(), " ",
    h("span", { class: "ago" }, `(${ago(at)})`));
}

// Keeps every shown "… ago" true while the page sits open (rows re-render only on change).
export function refreshAges() {
  for (const span of document.querySelectorAll("time > .ago")) {
    span.textContent = `(${ago(new Date(span.parentElement.getAttribute("datetime")))})`;
  }
}

export function ago(at) {
  const s = Math.round((Date.now() - at.getTime()) / 1000);
  const abs = Math.abs(s);
  const text = abs < 60 ? `${abs} s` : abs < 3600 ? `${Math.round(abs / 60)} min`
    : abs < 86400 ? `${Math.round(abs / 3600)} h` : `${Math.round(abs / 86400)} d`;
  return s >= 0 ? `${text} ago` : `in ${text}`;
}

export function announce(text) {
  const live = document.getElementById("live");
  live.textContent = "";
  // A fresh text node after a tick, so a repeated message is read again.
  setTimeout(() => { live.textContent = text; }, 50);
}

// Calls `tick` now and then every `period_ms` until the returned stop() is called; a tab in
// the background skips ticks. One tick at a time, never overlapping.
export function every(period_ms, tick) {
  let stopped = false;
  let timer = null;
  const run = async () => {
    if (stopped) return;
    if (!document.hidden) {
      try { await tick(); } catch (error) { console.warn("refresh failed", error); }
    }
    if (!stopped) timer = setTimeout(run, period_ms);
  };
  run();
  return () => { stopped = true; clearTimeout(timer); };
}

// datetime-local input value (local time) <-> RFC 3339 in UTC.
export function localToIso(value) { return value ? new Date(value).toISOString() : ""; }
export function isoToLocal(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  const pad = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}`;
}
