// Stored destinations (issue 12) are not in the API yet. This page is where their list, health
// (24 h success rate, last failure), enable/disable, rotate-secret and recover (with the
// dry-run count first) belong once /api/destinations exists.

import { h, replace } from "./dom.js";

export function destinationsPage(section) {
  document.title = "Destinations · Notifi";
  replace(section,
    h("h1", { id: "page-title" }, "Destinations"),
    h("p", { class: "card" },
      "Stored destinations are not available on this server yet. Destinations given inline ",
      "with each notification are shown on the notification's page."));
}
