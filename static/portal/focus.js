// Keyboard focus across htmx swaps. When a swap replaces the element that had focus (a form redrawn with its
// errors, a list paged, a confirm step shown), the browser drops focus to <body> and a keyboard or screen-reader
// user starts again from the top of the page. Move it into what was swapped in instead: the first field marked
// invalid, else the first alert, else the first heading, else the first status message, else the region itself.
// Swaps that did not take the focus away (polling, a field checked as you type) leave it where it is.
(function () {
  "use strict";
  var lost = null; // the id of the region whose swap is taking the focus with it

  // Looked at when the request starts: by the swap, hx-disabled-elt may have disabled (and so blurred) the button.
  document.addEventListener("htmx:beforeRequest", function (event) {
    var target = event.detail.target;
    var active = document.activeElement;
    lost = null;
    if (target && active && active !== document.body && target.contains(active)) {
      lost = target.id || null;
    }
  });

  document.addEventListener("htmx:afterSettle", function (event) {
    if (lost === null) return;
    var active = document.activeElement;
    var regionId = lost;
    lost = null;
    if (active && active !== document.body && document.contains(active)) return; // it survived the swap
    var region = document.getElementById(regionId) || event.detail.target;
    if (!region || !document.contains(region)) return;
    var goal =
      region.querySelector('[aria-invalid="true"]') ||
      region.querySelector('[role="alert"]') ||
      region.querySelector("h1, h2, h3") ||
      region.querySelector('[role="status"]') ||
      region;
    if (!goal.matches("a[href], button, input, select, textarea, [tabindex]")) {
      goal.setAttribute("tabindex", "-1"); // focusable from script only, not a new Tab stop
    }
    goal.focus();
  });
})();
