// The console's only script: it marks that it ran (tests check that the
// page's own script runs while a stored payload does not), and reloads
// pages that ask for it with data-refresh="<seconds>" on <body>.
"use strict";
document.documentElement.dataset.console = "ready";
const refreshSecs = Number(document.body.dataset.refresh);
if (refreshSecs > 0) {
  setTimeout(() => {
    // Not while the user is selecting text to copy.
    if (String(window.getSelection()) === "") location.reload();
  }, refreshSecs * 1000);
}
