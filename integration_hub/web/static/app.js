// Progressive enhancement only: every page works without this file.
"use strict";

// Move focus to an error summary so screen readers announce it and keyboard users start there.
document.addEventListener("DOMContentLoaded", () => {
  const summary = document.getElementById("error-summary");
  if (summary) summary.focus();
});
