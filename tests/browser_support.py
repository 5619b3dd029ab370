"""Browser tests' tools: Debian's Chromium driven by Playwright for Python, a live server for the
admin web app, signing in, and the vendored axe-core accessibility check.

Playwright's own browser download is never used (and is blocked on the build machines): the
tests launch ``/usr/bin/chromium`` (``INTEGRATIONS_CHROMIUM`` overrides), which
``scripts/ensure-chromium.sh`` (``make chromium``, part of ``make test``) installs.

When chromium is missing the browser tests skip, unless the browser is required: when
``INTEGRATIONS_REQUIRE_BROWSER`` is 1/true/yes, or, with that variable unset, when
``INTEGRATIONS_REQUIRE_POSTGRES`` is (CI sets it), in which case they fail. The install script
applies the same rule.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

CHROMIUM = Path(os.environ.get("INTEGRATIONS_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    # Without these Chromium reaches for Google's hosts at start, which a closed network refuses.
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
AXE_JS = Path(__file__).parent / "vendor" / "axe-core" / "axe.min.js"
BLOCKING_IMPACTS = {"serious", "critical"}
TIMEOUT_MS = 10_000
"""Longest wait for any one thing in a page; the app answers in milliseconds on 127.0.0.1."""


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes"}


def browser_required() -> bool:
    """INTEGRATIONS_REQUIRE_BROWSER decides; unset, it follows INTEGRATIONS_REQUIRE_POSTGRES."""
    if "INTEGRATIONS_REQUIRE_BROWSER" in os.environ:
        return _truthy(os.environ["INTEGRATIONS_REQUIRE_BROWSER"])
    return _truthy(os.environ.get("INTEGRATIONS_REQUIRE_POSTGRES"))


def chromium_missing() -> str | None:
    """Why the browser tests cannot run here, or None when they can."""
    if not os.access(CHROMIUM, os.X_OK):
        return (
            f"Chromium not found at {CHROMIUM}; run `make chromium` "
            "(scripts/ensure-chromium.sh) or set INTEGRATIONS_CHROMIUM"
        )
    return None


def launch_chromium(playwright: Any) -> Any:
    """Debian's chromium, headless, with the flags that keep it off the network."""
    return playwright.chromium.launch(
        executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
    )


# -- pages -------------------------------------------------------------------------------------
@dataclass
class BrowserProblems:
    """What a page said on its console or threw: CSP refusals show up here, and so does any
    sub-resource (script, style, image) that failed. A page answered with a deliberate 4xx
    (a form refused with 409/422, an error page) is not a problem of its own: Chromium logs
    "Failed to load resource" for it, which is left out for those documents' URLs."""

    _console: list[tuple[str, str, str]] = field(default_factory=list)
    _failed: list[str] = field(default_factory=list)
    _documents: set[str] = field(default_factory=set)

    def watch(self, page: Any) -> None:
        page.on("console", self._on_console)
        page.on("pageerror", lambda error: self._failed.append(f"page error: {error}"))
        page.on("response", self._on_response)

    def _on_console(self, message: Any) -> None:
        if message.type in {"error", "warning"}:
            url = (message.location or {}).get("url", "")
            self._console.append((message.type, message.text, url))

    def _on_response(self, response: Any) -> None:
        if response.status < 400:
            return
        if response.request.resource_type == "document":
            self._documents.add(response.url)
        else:
            self._failed.append(f"HTTP {response.status} for {response.url}")

    @property
    def messages(self) -> list[str]:
        found = list(self._failed)
        for kind, text, url in self._console:
            if text.startswith("Failed to load resource") and url in self._documents:
                continue
            found.append(f"console {kind}: {text} ({url})")
        return found


@contextmanager
def open_page(browser: Any, base_url: str, *, bypass_csp: bool = False) -> Iterator[Any]:
    """A page in a fresh context (own cookies); ``problems`` lists console errors and warnings.

    Only the accessibility pass bypasses the Content-Security-Policy (axe is injected inline);
    every other test runs under the app's real policy so that a page breaking it shows.
    """
    context = browser.new_context(
        base_url=base_url,
        bypass_csp=bypass_csp,
        locale="nb-NO",
        viewport={"width": 1280, "height": 900},
    )
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    problems = BrowserProblems()
    problems.watch(page)
    page.problems = problems
    try:
        yield page
    finally:
        context.close()


def set_language(page: Any, base_url: str, language: str) -> None:
    """The language cookie the app reads before anyone signs in (the UI defaults to bokmål)."""
    page.context.add_cookies([{"name": "ih_lang", "value": language, "url": base_url}])


def sign_in(page: Any, base_url: str, email: str, password: str, language: str = "en") -> None:
    """Sign in through the form, as a person does; English by default (stable selectors).

    The session cookie is ``Secure``; Chromium keeps it on http://127.0.0.1, which counts as a
    secure context, so no test-only switch is needed.
    """
    set_language(page, base_url, language)
    page.goto("/sign-in")
    page.locator("#field-email").fill(email)
    page.locator("#field-password").fill(password)
    page.locator("main form button[type=submit]").click()
    page.wait_for_url(lambda url: "/sign-in" not in url)
    cookies = {cookie["name"]: cookie for cookie in page.context.cookies()}
    assert "ih_session" in cookies, f"no session cookie after signing in as {email}"


# -- accessibility -----------------------------------------------------------------------------
@cache
def axe_source() -> str:
    return AXE_JS.read_text(encoding="utf-8")


def axe_violations(page: Any) -> list[dict[str, Any]]:
    """axe-core's violations on the page as it is now (needs a context with ``bypass_csp``)."""
    if not page.evaluate("() => typeof window.axe !== 'undefined'"):
        page.add_script_tag(content=axe_source())
    result = page.evaluate("async () => await axe.run(document, {resultTypes: ['violations']})")
    return list(result["violations"])


def describe(violations: list[dict[str, Any]]) -> str:
    lines = []
    for violation in violations:
        targets = [json.dumps(node["target"]) for node in violation["nodes"]][:5]
        lines.append(
            f"  [{violation['impact']}] {violation['id']}: {violation['help']} "
            f"({len(violation['nodes'])} element(s): {', '.join(targets)})"
        )
        for node in violation["nodes"][:3]:
            summary = (node.get("failureSummary") or "").replace("\n", " ")
            lines.append(f"      {node['html'][:160]} -- {summary[:240]}")
    return "\n".join(lines)


def assert_accessible(page: Any, label: str) -> list[dict[str, Any]]:
    """No serious or critical axe violation on the page; the milder ones are printed."""
    violations = axe_violations(page)
    blocking = [v for v in violations if v["impact"] in BLOCKING_IMPACTS]
    milder = [v for v in violations if v["impact"] not in BLOCKING_IMPACTS]
    if milder:
        print(f"\naxe, {label} ({page.url}): minor/moderate findings\n{describe(milder)}")
    assert not blocking, (
        f"axe found serious/critical violations on {label} ({page.url}):\n{describe(blocking)}"
    )
    return violations
