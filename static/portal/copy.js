// Copy-to-clipboard for buttons with data-copy-target="<input id>": works by keyboard (it is a button)
// and says "Copied" through the aria-live element the button is described by. Delegated from the
// document, so buttons swapped in by htmx work too.
(function () {
  "use strict";
  function announce(button, text) {
    var id = button.getAttribute("aria-describedby");
    var status = id && document.getElementById(id);
    if (status) { status.textContent = ""; window.setTimeout(function () { status.textContent = text; }, 30); }
  }
  function fallbackCopy(input) {
    input.focus();
    input.select();
    try { return document.execCommand("copy"); } catch (e) { return false; }
  }
  document.addEventListener("click", function (event) {
    var button = event.target.closest("[data-copy-target]");
    if (!button) { return; }
    var input = document.getElementById(button.getAttribute("data-copy-target"));
    if (!input) { return; }
    var done = function () { announce(button, "Copied"); };
    var failed = function () {
      if (fallbackCopy(input)) { done(); } else { input.select(); announce(button, "Press Ctrl+C (or ⌘C) to copy the selected key"); }
    };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(input.value).then(done, failed);
    } else {
      failed();
    }
  });
})();
