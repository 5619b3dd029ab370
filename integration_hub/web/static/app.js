// Progressive enhancement only: every page works without this file.
"use strict";

// Move focus to an error summary so screen readers announce it and keyboard users start there.
document.addEventListener("DOMContentLoaded", () => {
  const summary = document.getElementById("error-summary");
  if (summary) summary.focus();
});

// -- setup screens -------------------------------------------------------------------------------
// A masked secret field (its value is the vault's mask, never the secret): select it all on
// focus, so typing replaces the mask instead of appending to it.
document.addEventListener("DOMContentLoaded", () => {
  for (const input of document.querySelectorAll("input[data-masked]")) {
    input.addEventListener("focus", () => input.select());
  }
});

// The connection test: instead of posting the form and waiting on a blank page, call the API,
// show a progress bar with the seconds (the test answers within 10 s) and the result. If the
// call fails for any reason (no fetch, network, a refusal, an odd answer), post the form after
// all: the page then runs the test itself and shows the answer.
const TEST_DEADLINE_S = 10;

function fillSlots(node, answer, labels) {
  const status = node.querySelector('[data-slot="status"]');
  if (status) status.textContent = labels[answer.status] || answer.status;
  const detail = node.querySelector('[data-slot="detail"]');
  if (detail) detail.textContent = answer.detail || "";
  const elapsed = node.querySelector('[data-slot="elapsed"]');
  if (elapsed) {
    const seconds = (Math.max(0, Number(answer.elapsed_ms) || 0) / 1000).toFixed(1);
    elapsed.textContent = (elapsed.dataset.text || "").replace("{seconds}", seconds);
  }
  // What the target's schema says differs from what the hub sends: shown, never a failure.
  const warnings = node.querySelector('[data-slot="warnings"]');
  const list = warnings && warnings.querySelector("ul");
  if (list && Array.isArray(answer.warnings) && answer.warnings.length) {
    for (const text of answer.warnings) {
      const item = document.createElement("li");
      item.textContent = String(text);
      list.appendChild(item);
    }
    warnings.hidden = false;
  }
}

function setUpConnectionTest(section) {
  const form = section.querySelector("form[data-test-form]");
  const box = section.querySelector("[data-test-progress]");
  const bar = box && box.querySelector("progress");
  const secondsText = section.querySelector("[data-test-seconds]");
  const status = section.querySelector("[data-test-status]");
  const result = section.querySelector("[data-test-result]");
  if (!form || !box || !bar || !status || !result || !window.fetch) return;
  let labels = {};
  try {
    labels = JSON.parse(section.dataset.statusLabels || "{}");
  } catch (error) {
    labels = {};
  }
  let running = false;

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (running) return;
    running = true;
    const button = form.querySelector('button[type="submit"]');
    if (button) button.setAttribute("aria-disabled", "true");
    result.replaceChildren();
    box.hidden = false;
    bar.value = 0;
    status.textContent = section.dataset.testingText || "";
    const started = Date.now();
    const tick = () => {
      const seconds = Math.min(TEST_DEADLINE_S, Math.floor((Date.now() - started) / 1000));
      bar.value = Math.min(TEST_DEADLINE_S, (Date.now() - started) / 1000);
      if (secondsText) {
        secondsText.textContent = (section.dataset.secondsText || "").replace("{seconds}", seconds);
      }
    };
    tick();
    const timer = window.setInterval(tick, 200);
    const controller = new AbortController();
    const abort = window.setTimeout(() => controller.abort(), (TEST_DEADLINE_S + 5) * 1000);
    const stop = () => {
      window.clearInterval(timer);
      window.clearTimeout(abort);
    };
    let answer;
    try {
      const response = await fetch(section.dataset.api, {
        method: "POST",
        headers: { "X-CSRF-Token": section.dataset.csrf || "", Accept: "application/json" },
        credentials: "same-origin",
        signal: controller.signal,
      });
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      answer = await response.json();
      if (typeof answer.ok !== "boolean" || typeof answer.status !== "string") {
        throw new Error("unexpected answer");
      }
    } catch (error) {
      stop();
      form.submit(); // the plain form: the server runs the test and shows the answer
      return;
    }
    stop();
    box.hidden = true;
    running = false;
    if (button) button.removeAttribute("aria-disabled");
    const template = section.querySelector(answer.ok ? "template[data-test-ok]" : "template[data-test-fail]");
    if (!template) {
      form.submit();
      return;
    }
    const node = template.content.cloneNode(true);
    fillSlots(node, answer, labels);
    result.replaceChildren(node);
    // A failure is announced by its role="alert"; a success through the polite status.
    status.textContent = answer.ok ? labels[answer.status] || answer.status : "";
  });
}

document.addEventListener("DOMContentLoaded", () => {
  for (const section of document.querySelectorAll("[data-connection-test]")) {
    setUpConnectionTest(section);
  }
});
